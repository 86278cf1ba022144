// File: fleet_store.h
// -----------------------------------------------------------------------------
// The same limits across a fleet of hosts: a Store whose buckets live in one
// Redis (sluice/redis_buckets.h), in one of two modes.
//
// Exact mode (FleetMode::kExact): every decision is one round trip, all of a
// request's buckets in one Lua script on Redis's clock (remote_buckets(),
// sluice/store.h). The StoredBuckets it hands out are this host's share of
// each bucket (rate and capacity ÷ the hosts seen alive, or expected_hosts
// before Redis was ever reached), cells in the local store that decide only
// while Redis is away under kLocalShare; what they admit then is debited
// from the fleet's buckets when Redis answers again. kFailClosed refuses
// while Redis is away, kFailOpen admits without the fleet's buckets. The
// refiller runs only to mark the host alive: nothing is leased.
//
// Lease mode (the default): the StoredBuckets are pools (sluice/pool.h) in
// this host's store (its shared segment, or process memory), topped up by
// host leases from the fleet's buckets.
//
// Admitting is what it is on one host: the policy's BucketRef on a cell in
// the segment, one load and one CAS, no lock, no virtual call, no round trip.
// What changes is where permits come from: a pool never refills by itself;
// the host's one refiller (one thread, in whichever process on the host wins
// the segment's "fleet:refiller" lease; another takes over if it dies) keeps
// every pool above its watermark by leasing from Redis in the background, a
// lease sized by PlanLease (sluice/lease_sizing.h) from the host's demand,
// the round trip and the hosts alive. Every lease is a real debit of the
// fleet's bucket, so the fleet together never takes more than C + R·t from
// it in any window; what leasing costs is permits leased but not used, at
// most about one lease per host. A pool unused for `idle_return` gives its
// permits back, and so does every pool when its refiller stops.
//
// Three kinds of lease, named apart: a concurrency lease is one call in
// flight (sluice/store.h StoredLeases); a host lease is permits this host
// took from the fleet (here); a thread's permit cache is cell v2's.
//
// When Redis is down (on_redis_down), in lease mode:
//   * kLocalShare (default): each pool goes on at the host's share of the
//     bucket's rate, the rate ÷ the hosts seen alive at the last lease (or
//     expected_hosts when this host never reached Redis), never holding more
//     than its share of the capacity. So during an outage the fleet admits
//     at most C + R·t plus one pool per host, as long as no new host joins
//     (a new host adds its share). Risk: hosts that join during the outage,
//     or hosts counted alive that are gone (the others do not take their
//     share: under-admission).
//   * kFailClosed: nothing more is admitted than the pools hold. Risk: an
//     outage stops the fleet once pools are spent.
//   * kFailOpen: pools are kept full: no limit at all. Risk: the provider's
//     429s, and budgets overrun.
// Whatever was credited during an outage is debited from the fleet's
// buckets when Redis answers again, so the fleet's buckets account for it.
// No admit ever waits on Redis; the refiller waits at most the timeout.
// While Redis is away the refiller probes it every 100 ms, its link backing
// off at most 200 ms between connects, so a host sees Redis again within
// about 0.35 s of its return (a backoff, a probe's interval, a timeout).
//
// Concurrency caps are the fleet's: one cap in Redis for every host, each
// lease (one call in flight) with a time to live its holder refreshes, so a
// dead host's leases expire (src/cluster/redis_leases.h). While Redis is
// down: kLocalShare, a local cap of the host's share (count ÷ hosts seen
// alive); kFailClosed, no new call; kFailOpen, no cap.
//
// Limits and bursts learned from provider headers are the fleet's too: the
// host's refiller shares them through Redis about once a second and leases
// at them (src/cluster/refiller.h).
//
// Budgets (window counters) are the fleet's: one counter in Redis for every
// host, each operation a round trip (a budget is charged once per request,
// not per permit), on Redis's clock: WallTime() is this host's clock
// corrected to Redis's TIME, so every host is in the same UTC day or month
// whatever its own clock says. While Redis is away a host spends, by
// on_redis_down, up to its share of what the budget had left (the share
// counted in the host's own cell of the budget, across its processes), or
// nothing, or without limit; refunds and debits are kept too, and each
// process sends what it spent once Redis answers again, exactly once (a
// call whose answer was lost after Redis ran it is not counted twice).
//
// Thread safety: a FleetStore is safe for concurrent use; its handles are as
// safe as their cells.

#ifndef SLUICE_FLEET_STORE_H_
#define SLUICE_FLEET_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sluice/redis_buckets.h"
#include "sluice/store.h"

namespace sluice {

namespace internal_cluster {
class Refiller;
class ExactBuckets;
class RedisLeases;
class RedisCounters;
}  // namespace internal_cluster

enum class RedisDown : uint8_t { kLocalShare, kFailClosed, kFailOpen };

// Lease (host leases into pools) or exact (a round trip per decision).
enum class FleetMode : uint8_t { kLease, kExact };

struct FleetOptions {
  RedisBucketsOptions redis;
  FleetMode mode = FleetMode::kLease;
  RedisDown on_redis_down = RedisDown::kLocalShare;
  // The hosts a host assumes share the fleet when it never reached Redis.
  uint32_t expected_hosts = 1;
  // This host's name in the fleet's set of hosts; empty: hostname and pid.
  std::string host;
  // A pool with no admits for this long gives its permits back.
  absl::Duration idle_return = absl::Seconds(1);
  // How often the refiller looks at the pools.
  absl::Duration tick = absl::Milliseconds(1);
  // false: no refiller thread; the owner calls RefillOnce (tests, on a fake
  // clock; one-shot commands).
  bool start_refiller = true;
  // Whether the host's refiller gives every pool back when it stops (false:
  // what is left stays in the pools, for the host's next process).
  bool give_back_at_stop = true;
  // How long a concurrency lease (one call in flight) lives in Redis unless
  // its holder refreshes it (every third of it): how long a dead host's
  // calls keep counting against the fleet's caps.
  absl::Duration concurrency_lease_ttl = absl::Seconds(10);
  // This host's wall clock, which WallTime() corrects to Redis's (tests
  // skew it); empty: absl::Now.
  std::function<absl::Time()> wall_clock;
};

struct FleetBucketStats {
  std::string key;
  uint64_t capacity = 0;
  int64_t pool = 0;              // permits in this host's pool
  uint64_t fleet_available = 0;  // in Redis, at the last answer
  uint64_t leased = 0;           // host leases taken
  uint64_t returned = 0;         // given back
  uint64_t outage_credited = 0;  // credited while Redis was away, not yet debited
  double demand_per_second = 0;
  uint64_t lease_size = 0;  // the plan's lease now
};

struct FleetStats {
  bool refiller = false;  // this process is the host's refiller
  bool redis_up = false;
  uint32_t hosts_alive = 0;
  absl::Duration round_trip;
  uint64_t commands = 0;
  // Concurrency leases this process holds in Redis, and those it lost: found
  // gone at a refresh (it stalled past their time to live, or Redis lost
  // them), so another host may have taken them.
  uint32_t concurrency_leases_held = 0;
  uint64_t concurrency_leases_lost = 0;
  std::vector<FleetBucketStats> buckets;
  // Budgets: whether this process's last budget call reached Redis, and how
  // many (budget, window) entries of what it spent while Redis was away it
  // has not yet sent.
  bool budgets_redis_up = false;
  uint64_t budget_entries_owed = 0;
};

class FleetStore final : public Store {
 public:
  // Over `local` (REQUIRES: it outlives the FleetStore). Connects lazily: a
  // host starts while Redis is down (and goes by on_redis_down).
  static absl::StatusOr<std::unique_ptr<FleetStore>> Create(Store* local, FleetOptions options);
  // Stops the refiller and, if this process was the host's refiller, gives
  // every pool's permits back to the fleet.
  ~FleetStore() override;

  // Lease mode: the pool of the fleet's bucket `key`, registered with the
  // refiller. Exact mode: this host's share of it (see above).
  // InvalidArgument also for a bucket Redis cannot hold exactly
  // (RedisBuckets::Validate).
  absl::StatusOr<StoredBucket> Bucket(absl::string_view key, const BucketConfig& config) override;
  absl::StatusOr<StoredBucket> Pool(absl::string_view key, const BucketConfig& config) override {
    return Bucket(key, config);
  }
  absl::Status Learn(absl::string_view key, std::optional<Rate> learned) override;
  absl::Status LearnBurst(absl::string_view key, uint64_t burst) override;
  // The fleet's counter `key` in Redis (its backend), with this host's cell
  // of it (the local store's) for what the host spends while Redis is away.
  absl::StatusOr<StoredCounter> Counter(absl::string_view key) override;
  // The fleet's concurrency cap `key` of `count` leases, in Redis (one cap
  // for every host; the count is the configuration's, sent with every
  // lease). A lease lives concurrency_lease_ttl unless this process, which
  // refreshes every lease it holds, is alive. While Redis is down, caps go
  // by on_redis_down (see src/cluster/redis_leases.h). InvalidArgument for a
  // count of 0 or over 2^20 - 1. Its handles are valid while this store is.
  absl::StatusOr<StoredLeases> Leases(absl::string_view key, uint32_t count) override;
  Clock clock() const override;
  // UTC on Redis's clock: this host's wall clock corrected by the offset to
  // Redis's TIME measured on the last budget round trip (asking Redis when
  // none came for 10 s; at most the timeout). This host's own clock until
  // Redis first answers.
  absl::Time WallTime() const override;

  // One round of the refiller at `now_ns` (the local store's clock): what
  // the thread does every tick. For tests with start_refiller = false.
  void RefillOnce(int64_t now_ns);
  // A caller waits for `permits` of bucket `key`: the next lease asks for
  // at least that many (demand alone would not know a request's size).
  void Want(absl::string_view key, uint64_t permits) override;
  FleetStats Stats() const;
  // Exact mode: the fleet's buckets in Redis; lease mode: nullptr.
  RemoteBuckets* remote_buckets() override;
  // For tests, exact mode: Redis decides at `at_ns` (ns since the Unix
  // epoch, whole microseconds; RedisBuckets::SetTimeForTesting).
  void SetTimeForTesting(int64_t at_ns);

 private:
  FleetStore(Store* local, std::unique_ptr<internal_cluster::Refiller> refiller,
             std::unique_ptr<internal_cluster::ExactBuckets> exact,
             std::shared_ptr<internal_cluster::RedisLeases> caps,
             std::unique_ptr<internal_cluster::RedisCounters> counters);
  Store* const local_;
  std::unique_ptr<internal_cluster::Refiller> refiller_;
  std::unique_ptr<internal_cluster::ExactBuckets> exact_;  // exact mode only
  std::shared_ptr<internal_cluster::RedisLeases> caps_;
  const std::unique_ptr<internal_cluster::RedisCounters> counters_;
};

}  // namespace sluice

#endif  // SLUICE_FLEET_STORE_H_
