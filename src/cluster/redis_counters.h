// File: redis_counters.h
// -----------------------------------------------------------------------------
// A fleet's window counters (USD budgets) in one Redis, for FleetStore
// (sluice/fleet_store.h): one counter for every host, each operation one
// round trip running counter_script.h, with the window counter cell's
// semantics (sluice/window_counter.h). The counter at "{<prefix>}budget:<key>"
// is the fleet's; the host's own cell of the same key (in its segment, shared
// by its processes) holds only what the host spends while Redis is away.
//
// The clock: every answer carries Redis's TIME, and WallTime() is this
// host's clock corrected by the offset measured on the last round trip
// (within half a round trip), asking Redis (with no counter operation) when
// no answer came for `refresh`. So hosts whose own clocks disagree by
// minutes agree on a budget's window, to within a round trip of its
// boundary (and an older window counts against the newer, so a late host
// can only be stricter).
//
// While Redis is away (a call failed, or timed out), each operation is done
// locally and written in a ledger, and Redis is asked again at most every
// `probe_interval`, carrying the ledger; what the ledger holds reaches Redis
// exactly once when it answers (counter_script.h: the ledger is cumulative,
// and an operation whose answer was lost is credited, not counted twice).
// What an "add" does locally is on_redis_down's:
//   * kLocalShare: up to this host's share of what the budget had left at the
//     last answer (the limit less the fleet's spending then, divided by the
//     hosts leasing from the fleet in the last minute; by expected_hosts when
//     none did or Redis never answered), counted in the host's cell;
//   * kFailClosed: refused;
//   * kFailOpen: allowed.
// Refunds and debits are kept in every mode, so the fleet's counter ends up
// with what was really spent. What a process that dies during an outage
// spent is lost to the fleet's counter (it stays in the host's cell until
// the window ends).
//
// No operation waits on Redis longer than the timeout, but the one that
// finds Redis back after an outage, which waits for two round trips (the
// ledger, then its own).
//
// Thread safety: safe for concurrent use; operations are serialized (as they
// are on the one connection anyway).

#ifndef SLUICE_SRC_CLUSTER_REDIS_COUNTERS_H_
#define SLUICE_SRC_CLUSTER_REDIS_COUNTERS_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/fleet_store.h"
#include "sluice/store.h"
#include "sluice/window_counter.h"

namespace sluice {
namespace internal_cluster {

class RedisLink;

struct RedisCountersOptions {
  RedisBucketsOptions redis;
  RedisDown on_redis_down = RedisDown::kLocalShare;
  uint32_t expected_hosts = 1;
  // This host's wall clock (tests skew it); empty: absl::Now.
  std::function<absl::Time()> wall_clock;
  // While Redis is away, how often an operation asks it again.
  absl::Duration probe_interval = absl::Milliseconds(100);
  // How old the last answer may be before WallTime asks Redis's clock.
  absl::Duration refresh = absl::Seconds(10);
};

class RedisCounters {
 public:
  // Connects at the first operation (a host may start while Redis is down).
  explicit RedisCounters(RedisCountersOptions options);
  ~RedisCounters();
  RedisCounters(const RedisCounters&) = delete;
  RedisCounters& operator=(const RedisCounters&) = delete;

  // The fleet's counter `key`, spending from `local` (this host's cell of it)
  // while Redis is away. The backend lives as long as this object; opening
  // a key again returns the same one.
  CounterBackend* Open(absl::string_view key, WindowCounterRef local);

  // UTC on Redis's clock, as this host reckons it (see above); this host's
  // own clock until Redis first answers.
  absl::Time WallTime();

  // If Redis is due a try, sends what this process spent while it was away.
  // Whether nothing is owed any more.
  bool Flush();

  // Whether the last call reached Redis; how many ledger entries it has not
  // confirmed.
  bool redis_up() const;
  size_t owed() const;

  // The Redis key of counter `key`.
  std::string RedisKey(absl::string_view key) const;

 private:
  class Counter;
  enum class Op : uint8_t { kNone, kRead, kAdd, kRefund, kDebit };
  struct Ask {
    Op op = Op::kNone;
    int64_t window = 0;
    int64_t amount = 0;
    int64_t limit = 0;
  };
  struct Answer {
    bool ok = false;
    WindowCounterRef::Reading reading{0, 0};
  };
  // Per (counter index, window): what this process meant to add while Redis
  // was away (cumulative), what Redis confirmed of it, and what of it sits
  // in the host's cell.
  using EntryKey = std::pair<size_t, int64_t>;
  struct Entry {
    int64_t total = 0;
    int64_t base = 0;
    int64_t local_in = 0;
  };
  // The mutating call whose answer was lost.
  struct Pending {
    uint64_t seq;
    EntryKey entry;
  };
  using Steady = std::chrono::steady_clock;

  Answer Run(Counter& c, Ask ask);
  absl::StatusOr<Answer> CallLocked(Counter* c, const Ask& ask);
  // The script's arguments for `ask` and the ledger; the entries sent.
  std::vector<EntryKey> ArgsLocked(Counter* c, const Ask& ask, uint64_t seq,
                                   std::vector<std::string>* keys, std::vector<std::string>* args);
  void ConfirmedLocked(const std::vector<EntryKey>& sent, const std::vector<int64_t>& readings);
  Answer LocalLocked(Counter& c, const Ask& ask);
  bool LocalAddLocked(Counter& c, const Ask& ask);
  int64_t ShareLocked(const Counter& c, int64_t window, int64_t limit) const;
  WindowCounterRef::Reading LocalReadingLocked(const Counter& c) const;
  bool DueLocked() const;
  void DownLocked();
  bool OwesLocked() const;
  absl::Time Local() const;

  const RedisCountersOptions options_;
  const std::unique_ptr<RedisLink> link_;
  const std::string ledger_key_;
  const std::string hosts_key_;

  // Held across the round trip: the ledger and the pending call must not
  // change while a call carries them.
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Counter>> counters_;   // guarded by mu_
  absl::flat_hash_map<std::string, size_t> by_key_;  // guarded by mu_
  std::map<EntryKey, Entry> ledger_;                 // guarded by mu_
  std::optional<Pending> pending_;                   // guarded by mu_
  uint64_t seq_ = 0;                                 // guarded by mu_
  bool up_ = true;                                   // guarded by mu_
  bool answered_ = false;                            // guarded by mu_
  Steady::time_point next_probe_{};                  // guarded by mu_
  Steady::time_point last_answer_{};                 // guarded by mu_
  uint32_t hosts_ = 0;                               // guarded by mu_
  absl::Duration offset_ = absl::ZeroDuration();     // Redis's clock - ours; guarded by mu_
};

}  // namespace internal_cluster
}  // namespace sluice

#endif  // SLUICE_SRC_CLUSTER_REDIS_COUNTERS_H_
