// File: redis_buckets.h
// -----------------------------------------------------------------------------
// Buckets a fleet of hosts shares in one Redis: the same GCRA as the bucket
// cell (sluice/token_bucket.h), in integers, by a Lua script per operation
// (one round trip), on Redis's clock (TIME), so that every host decides on
// one clock and a trace decides exactly as it does in process memory.
//
// Two ways to use them:
//   * exact: every decision is Reserve (or TryAcquire): one round trip, all
//     the buckets of a request at once, all or nothing;
//   * leased: a host takes permits in bulk with Lease into a pool of its
//     own, admits from the pool locally, and gives back what it did not use
//     with Return. A lease is a real debit: the fleet together never takes
//     more than C + R·t from a bucket in any window.
//
// Keys: every bucket lives at "{<prefix>}<bucket key>" (a Redis string), so
// that all of a fleet's keys share one hash tag and one script may touch any
// of them, on a single Redis or a Redis Cluster alike. Hosts mark themselves
// alive in "{<prefix>}hosts" with every lease.
//
// Limits: a bucket's burst span (capacity × interval) may be at most about
// 1.63 days (2^51 units of 1/16 ns; Lua numbers are doubles, exact below
// 2^53), and waits are capped at the same; Validate says so for a config.
//
// No call waits on Redis longer than the timeout; while Redis is unreachable
// calls fail at once with Unavailable (reconnecting with backoff).
//
// Thread safety: safe for concurrent use (calls share one connection and
// are serialized on it).

#ifndef SLUICE_REDIS_BUCKETS_H_
#define SLUICE_REDIS_BUCKETS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "sluice/token_bucket.h"

namespace sluice {

namespace internal_cluster {
class RedisLink;
}  // namespace internal_cluster

struct RedisBucketsOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 6379;
  uint32_t db = 0;
  std::string password = {};  // empty: none; never printed
  // The longest any call waits on Redis (connect included).
  absl::Duration timeout = absl::Milliseconds(50);
  std::string key_prefix = "sluice:";
  // While Redis is unreachable the link tries again after a backoff, full
  // jitter from 10 ms doubling up to this cap: how long after Redis returns
  // a caller may still be told Unavailable.
  absl::Duration reconnect_backoff_max = absl::Seconds(1);
};

// One bucket of a request: its key, configuration and cost.
struct RedisCharge {
  std::string key;
  BucketConfig config;
  uint64_t cost = 1;
};

struct RedisDecision {
  Outcome outcome = Outcome::kRefused;
  // As Decision::wait_ns: for a grant, the longest wait among the buckets;
  // for a refusal, the refusing bucket's wait until it could grant.
  int64_t wait_ns = 0;
  // The bucket that set the wait or refused (index into the charges), or -1.
  int bottleneck = -1;
  // Redis's clock when it decided, in ns since the Unix epoch.
  int64_t redis_now_ns = 0;

  bool granted() const { return outcome == Outcome::kGranted; }
};

// A host's ask for permits from one bucket (or, to Return and Debit, the
// permits it gives or owes).
struct LeaseAsk {
  std::string key;
  BucketConfig config;
  uint64_t want = 0;
  // What the host's pool holds: before this lease, or after this return.
  // Redis counts every host's pool against the bucket, so that the bucket
  // and the pools together never hold more than its capacity.
  uint64_t held = 0;
};

// What RedisBuckets::Change does to one bucket, with its `want`: give that
// many permits back (as Return, for no pool) or take them (as Debit); clamp
// it to at most that many available (taking the excess, as BucketRef::Debit
// does); hold it empty for that many ns (as BucketRef::HoldUntil: nothing
// becomes available before then, and no return ends the hold early).
enum class BucketOp : uint8_t { kReturn, kDebit, kClamp, kHold };

struct BucketChange {
  LeaseAsk bucket;
  BucketOp op = BucketOp::kReturn;
};

struct LeaseGrant {
  uint64_t granted = 0;
  // When not all were granted: ns until the rest would be available (0
  // otherwise).
  int64_t wait_ns = 0;
  // What the bucket held after the lease.
  uint64_t available = 0;
};

// A host of the fleet, as the hosts' set in Redis records it.
struct FleetHost {
  std::string name;
  // How long ago it last leased, by Redis's clock (whole seconds: the set
  // keeps the second of each lease).
  absl::Duration since_seen;
};

// What hosts learned about a fleet's bucket from the provider's headers
// (Store::Learn, Store::LearnBurst), as the fleet shares it.
struct LearnedLimits {
  std::optional<Rate> rate;  // the limit the provider states; nullopt: none
  uint64_t burst = 0;        // the burst its bucket was seen to hold; 0: none
};

// What a fleet's budgets and concurrency caps hold in Redis, read by
// RedisBuckets::ReadBudgetsAndCaps.
struct FleetBudgetReading {
  int64_t window = -1;  // the window its counter is in (BudgetWindowId); -1: none yet
  int64_t used = 0;     // micro-dollars spent in that window
};
struct FleetReadings {
  int64_t redis_now_ns = 0;
  std::vector<FleetBudgetReading> budgets;  // one per budget key
  std::vector<uint32_t> in_flight;          // one per cap key: leases alive now
};

// The permits out in hosts' pools of one bucket, as Redis counts them.
struct PoolsHeld {
  uint64_t permits = 0;  // in all pools of hosts seen in the last minute
  uint32_t hosts = 0;    // hosts holding any
};

struct LeaseResult {
  std::vector<LeaseGrant> grants;  // one per ask
  uint32_t hosts_alive = 0;        // hosts that leased in the last minute
  int64_t redis_now_ns = 0;
};

class RedisBuckets {
 public:
  // Connects now: Unavailable when Redis cannot be reached within the
  // timeout.
  static absl::StatusOr<std::unique_ptr<RedisBuckets>> Connect(RedisBucketsOptions options);
  // Connects at the first call (a host may start while Redis is down).
  static std::unique_ptr<RedisBuckets> Lazy(RedisBucketsOptions options);
  ~RedisBuckets();

  // OK when `config` can live in Redis: a valid bucket (ValidateBucketConfig)
  // whose burst span is at most about 1.63 days; InvalidArgument otherwise.
  static absl::Status Validate(const BucketConfig& config);

  // Takes every charge's cost from its bucket if each can grant within
  // `max_wait` (capped at about 1.63 days), else takes nothing. kNeverFits
  // when a cost exceeds its bucket's capacity. InvalidArgument for a bad
  // config or no charges; Unavailable when Redis is.
  absl::StatusOr<RedisDecision> Reserve(absl::Span<const RedisCharge> charges,
                                        absl::Duration max_wait);
  absl::StatusOr<RedisDecision> TryAcquire(const RedisCharge& charge) {
    return Reserve(absl::MakeConstSpan(&charge, 1), absl::ZeroDuration());
  }

  // A host lease: up to `want` from each bucket, never into debt, and
  // `host` marked alive ("" leaves the hosts' set alone).
  absl::StatusOr<LeaseResult> Lease(absl::Span<const LeaseAsk> asks, absl::string_view host);
  // Gives unused permits back (never above a bucket's capacity), recording
  // what `host`'s pools hold after ("" records nothing); returns what each
  // bucket holds after.
  absl::StatusOr<std::vector<uint64_t>> Return(absl::Span<const LeaseAsk> permits,
                                               absl::string_view host = "");
  // Takes permits unconditionally (usage that exceeded an estimate, or what
  // a host admitted while Redis was away); into debt, saturating.
  absl::StatusOr<std::vector<uint64_t>> Debit(absl::Span<const LeaseAsk> permits);
  // Several changes in one round trip; what each bucket holds after.
  absl::StatusOr<std::vector<uint64_t>> Change(absl::Span<const BucketChange> changes);
  // What each bucket holds now (reads only).
  absl::StatusOr<std::vector<uint64_t>> Available(absl::Span<const LeaseAsk> buckets);

  // The hosts that leased in the last minute (the hosts counted alive, as
  // LeaseResult::hosts_alive counts them), most recently seen first, ties by
  // name. Reads only: two plain commands (TIME, then ZRANGEBYSCORE ...
  // WITHSCORES on "{<prefix>}hosts"), no script; hosts older than a minute
  // that no lease has pruned yet are left out. Unavailable when Redis is.
  absl::StatusOr<std::vector<FleetHost>> Hosts();

  // What hosts' pools hold of each bucket (reads only: TIME, then HGETALL
  // of each bucket's pools; a host unseen for a minute counts nothing, as
  // in the lease script). Unavailable when Redis is.
  absl::StatusOr<std::vector<PoolsHeld>> Pools(absl::Span<const std::string> keys);
  // The fleet's budget counters ("{<prefix>}budget:<key>", "WINDOW USED")
  // and the leases alive in its concurrency caps ("{<prefix>}cap:<key>",
  // members scored by their expiry in ms on Redis's clock), as FleetStore
  // keeps them (reads only: TIME, then a GET or ZCOUNT per key).
  absl::StatusOr<FleetReadings> ReadBudgetsAndCaps(absl::Span<const std::string> budgets,
                                                   absl::Span<const std::string> caps);

  // Limits learned from the provider, shared with every host in the hash
  // "{<prefix>}learned": a learned rate is the provider's latest word, so
  // the last one shared wins (nullopt clears it); a learned burst is a lower
  // bound of the provider's bucket, so the largest shared stays (at most
  // 2^32 - 1, as a segment keeps). Learned reads them for `keys`; what is
  // not a valid rate there reads as none.
  absl::Status ShareLearnedRate(absl::string_view key, std::optional<Rate> rate);
  absl::Status ShareLearnedBurst(absl::string_view key, uint64_t burst);
  absl::StatusOr<std::vector<LearnedLimits>> Learned(absl::Span<const std::string> keys);

  // The Redis key a bucket lives at.
  std::string RedisKey(absl::string_view key) const;
  // Commands sent so far (script loads included).
  uint64_t commands() const;
  const RedisBucketsOptions& options() const { return options_; }

  // For tests: act at `at` (ns since the Unix epoch, whole microseconds)
  // instead of Redis's clock, to replay a trace at chosen instants.
  void SetTimeForTesting(int64_t at_ns) { fixed_now_ns_ = at_ns; }

 private:
  RedisBuckets(RedisBucketsOptions options, std::unique_ptr<internal_cluster::RedisLink> link);
  std::vector<std::string> TimeArgs() const;
  // Redis's clock in ns since the Unix epoch (or the time set for testing).
  absl::StatusOr<int64_t> NowNanos();
  absl::Status AddBucket(absl::string_view key, const BucketConfig& config,
                         std::vector<std::string>* keys, std::vector<std::string>* args) const;
  absl::StatusOr<std::vector<uint64_t>> Adjust(absl::Span<const LeaseAsk> asks,
                                               absl::string_view mode, absl::string_view host);
  // As Adjust, with a mode per ask.
  absl::StatusOr<std::vector<uint64_t>> AdjustEach(absl::Span<const LeaseAsk> asks,
                                                   absl::Span<const absl::string_view> modes,
                                                   absl::string_view host);

  RedisBucketsOptions options_;
  std::unique_ptr<internal_cluster::RedisLink> link_;
  int64_t fixed_now_ns_ = -1;
};

}  // namespace sluice

#endif  // SLUICE_REDIS_BUCKETS_H_
