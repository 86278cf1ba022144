// File: gcra_script.h
// -----------------------------------------------------------------------------
// The Lua scripts that keep a fleet's buckets in Redis: the same GCRA as the
// bucket cell (sluice/token_bucket.h), in the same units (1/16 ns), with the
// same rounding, so that a trace decides the same in Redis as in process
// memory.
//
// Lua numbers in Redis are doubles, exact for integers below 2^53 only; the
// reference design keeps `now` as seconds in a double and misjudges by up to
// 0.11 permits at 1e6/s. Here every quantity stays an integer below 2^53:
//   * time is Redis's TIME (one clock for every host), counted from a base
//     second kept with each bucket and moved forward once it is a day old,
//     so `now` stays under 1.4e15 units;
//   * a bucket's span (tau) and any wait are at most kMaxRedisSpanUnits
//     (2^51 units: about 1.63 days), checked by the caller, so the TAT stays
//     under 2^53 too.
//
// Each bucket is one string, "TAT BASE INTERVAL TAU": the TAT in units since
// the base, the base in TIME seconds, and the interval and span it was last
// written with (a bucket whose configuration changed keeps its fraction of
// capacity in use, as BucketRef::Reconfigure does, rounded toward less
// available). It expires a minute after the bucket would be full again: a
// full bucket and a missing one are the same.
//
// Every script takes ARGV[1], ARGV[2] = the time to act at (seconds and
// microseconds); empty strings mean Redis's TIME (what production passes).
// Tests pass times to replay a trace at chosen instants and ages. Every
// script returns the seconds and microseconds it acted at, so a caller can
// replay its decisions elsewhere.
//
// Thread safety: constants.

#ifndef SLUICE_SRC_CLUSTER_GCRA_SCRIPT_H_
#define SLUICE_SRC_CLUSTER_GCRA_SCRIPT_H_

#include <cstdint>
#include <string>

namespace sluice {
namespace internal_cluster {

inline constexpr int64_t kMaxRedisSpanUnits = int64_t{1} << 51;

// KEYS: the buckets. ARGV: s, us, max_wait_ns, then per key interval, tau,
// cost. All or nothing: every bucket grants within max_wait or none is
// written. Returns {outcome (1 granted, 0 refused, -1 never fits), the
// bottleneck's 1-based index (0: none), wait_ns, s, us}: for a grant the
// longest wait and the key that set it; for a refusal the first refusing key
// and its wait.
const std::string& ReserveScript();

// KEYS: the buckets, then the hosts' set. ARGV: s, us, host, then per key
// interval, tau, want, held (what the host's pool holds now). Takes up to
// `want` permits from each bucket, no debt (a host lease), and marks `host`
// alive. Permits out in pools count against their bucket: the bucket never
// holds more than its capacity less what the pools hold (as hosts reported
// it, a host unseen for a minute counting nothing), so that permits kept in
// pools across a refill cannot add to a burst. Returns {s, us, hosts alive
// in the last minute, then per key granted, wait_ns until the rest would be
// available (0 when all were granted), available after}.
const std::string& LeaseScript();

// KEYS: the buckets. ARGV: s, us, host, then per key interval, tau, n, mode,
// held: mode "return" gives n permits back (never above capacity, never
// ending a hold early) and records that `host`'s pool holds `held` now (""
// host: no pool to record), "debit" takes n unconditionally (into debt,
// saturating), "clamp" takes whatever leaves at most n available (as
// BucketRef::Debit of the excess), "hold" holds the bucket empty for n ns
// (as BucketRef::HoldUntil). Returns {s, us, then per key the permits
// available after}.
const std::string& AdjustScript();

}  // namespace internal_cluster
}  // namespace sluice

#endif  // SLUICE_SRC_CLUSTER_GCRA_SCRIPT_H_
