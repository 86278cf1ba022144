// File: counter_script.h
// -----------------------------------------------------------------------------
// The Lua script that keeps a fleet's window counters (USD budgets) in Redis
// with the window counter cell's semantics (sluice/window_counter.h), and
// brings in what a client spent while Redis was away, exactly once.
//
// A counter is one string, "WINDOW USED", at "{<prefix>}budget:<key>", in
// micro-dollars; it expires kCounterTtlMs after its last write (longer than
// any calendar month: a counter nobody touched that long is in no window
// anyone still uses).
//
// A client (one process's RedisCounters) keeps a ledger while Redis is away:
// per (counter, window), the net amount it meant to add (`total`, signed,
// cumulative over its life) and how much of that Redis confirmed (`base`).
// Redis keeps, per client, a hash "{<prefix>}budget-client:<id>" of what it
// applied of each total, so a ledger sent twice (a reply lost) is applied
// once: the script applies total - applied. The hash also records the last
// counter operation the client ran ("op" = "SEQ DELTA"), so that an
// operation whose reply was lost (a timeout after Redis ran it) is credited
// to the ledger instead of counted twice, once the client names it
// (pending). The hash expires two days after the client's last call; a
// client sends its `base` along, which stands in for a forgotten hash.
//
// Lua numbers are doubles: every amount is an integer below 2^53 (a window
// holds at most 2^43 - 1 micro-dollars; totals are clamped by the caller to
// 2^52 either way).
//
// Thread safety: constants.

#ifndef SLUICE_SRC_CLUSTER_COUNTER_SCRIPT_H_
#define SLUICE_SRC_CLUSTER_COUNTER_SCRIPT_H_

#include <cstdint>
#include <string>

namespace sluice {
namespace internal_cluster {

inline constexpr int64_t kCounterTtlMs = int64_t{35} * 86'400'000;
inline constexpr int64_t kLedgerTtlMs = int64_t{2} * 86'400'000;

// KEYS: 1 the client's hash, 2 the hosts' set ("{<prefix>}hosts", read
// only), 3.. the counters.
// ARGV: 1 seq (this call's, > 0),
//   2 op ("add", "refund", "debit", "read" or "none"), 3 its counter (a KEYS
//   index; 0 for "none"), 4 window, 5 amount, 6 limit,
//   7 the pending seq ("0": none), 8 its counter (KEYS index), 9 its
//   window, 10 that ledger entry's base,
//   11 the number of ledger entries, then per entry: counter (KEYS index),
//   window, total, base.
// The script acts at Redis's TIME.
// First credits the pending operation if Redis ran it, then applies the
// ledger (a positive remainder as a debit, a negative one as a refund), then
// runs the op. Returns {TIME's s and us, hosts alive in the last minute, ok (1, or 0
// for an "add" refused), the op counter's window, its used, then per ledger
// entry its counter's window and used}.
const std::string& CounterScript();

}  // namespace internal_cluster
}  // namespace sluice

#endif  // SLUICE_SRC_CLUSTER_COUNTER_SCRIPT_H_
