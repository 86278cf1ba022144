// File: refiller.h
// -----------------------------------------------------------------------------
// The host's refiller for a FleetStore (sluice/fleet_store.h): keeps each
// registered pool above its watermark with host leases from Redis, gives
// idle pools back, and goes by on_redis_down while Redis is away. One round
// is Step(now); the thread runs a round every tick.
//
// It also carries limits learned from the provider across the fleet: about
// once a second it shares what this host's store learned (Store::Learn and
// LearnBurst, by any process on the host) through Redis, takes in what other
// hosts learned, and leases from Redis at the bucket's learned limit, so
// every host sends Redis the same bucket. A learned rate is the provider's
// latest word (a change on this host is shared; otherwise a change in Redis
// is taken in); a learned burst only grows, the largest known on any host.
//
// Thread safety: every method may be called from any thread; rounds and
// registrations are serialized by one mutex (held across the round's Redis
// calls, which wait at most the link's timeout).

#ifndef SLUICE_SRC_CLUSTER_REFILLER_H_
#define SLUICE_SRC_CLUSTER_REFILLER_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/time/time.h"
#include "sluice/fleet_store.h"
#include "sluice/redis_buckets.h"
#include "sluice/store.h"

namespace sluice {
namespace internal_cluster {

class Refiller {
 public:
  Refiller(Store* local, FleetOptions options, std::unique_ptr<RedisBuckets> redis);
  ~Refiller();

  void Start();
  // Stops the thread; the host's refiller gives every pool back.
  void Stop();
  // Tracks the pool of the fleet's bucket `key` (again: its new config).
  void Register(absl::string_view key, const BucketConfig& config, const BucketRef& pool);
  // The next lease of `key` asks for at least `permits`.
  void Want(absl::string_view key, uint64_t permits);
  void Step(int64_t now_ns);
  FleetStats Stats() const;

 private:
  struct Tracked {
    std::string key;
    BucketConfig configured;  // as the limits file says
    BucketConfig config;      // what the fleet's bucket runs at: learned limits applied
    BucketCell* cell;
    int64_t last_level = 0;
    int64_t last_ns = -1;
    int64_t last_active_ns = 0;
    int64_t retry_at_ns = 0;
    double demand = 0;  // permits per second
    uint64_t lease_size = 0;
    absl::Duration backoff;  // the plan's, after a partial grant
    uint64_t wanted = 0;     // a waiting caller's request, until the next lease
    uint64_t leased = 0, returned = 0, fleet_available = 0;
    // Credited while Redis was away, to be debited once it answers.
    uint64_t outage_credited = 0;
    double outage_accrued = 0;
    int64_t outage_last_ns = -1;
    // The learned rate this host's store held after the last sharing.
    std::optional<Rate> local_rate_seen;
    bool shared_once = false;
  };

  bool ElectLocked(int64_t now_ns);
  void MeasureLocked(Tracked& t, int64_t level, int64_t now_ns);
  void LeaseLocked(std::vector<Tracked*>& asking, std::vector<LeaseAsk>& asks, int64_t now_ns);
  void GiveBackLocked(std::vector<LeaseAsk>& gives);
  void HeartbeatLocked(int64_t now_ns);
  void RedisAnsweredLocked(uint32_t hosts_alive);
  void OutageLocked(int64_t now_ns);
  void GiveEverythingBackLocked();
  void ShareLearnedLocked(int64_t now_ns);
  void ShareLearnedLocked(Tracked& t, const LearnedLimits& fleet);
  void Run();

  Store* const local_;
  const FleetOptions options_;
  const std::unique_ptr<RedisBuckets> redis_;

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Tracked>> tracked_;  // guarded by mu_
  std::optional<StoredLeases> election_;           // guarded by mu_
  int32_t elected_ = -1;                           // our election lease, or -1; guarded by mu_
  int64_t next_election_ns_ = 0;                   // guarded by mu_
  bool redis_up_ = false;                          // guarded by mu_
  bool ever_up_ = false;                           // guarded by mu_
  uint32_t hosts_alive_ = 0;                       // guarded by mu_
  int64_t next_heartbeat_ns_ = 0;                  // guarded by mu_
  int64_t next_share_ns_ = 0;                      // guarded by mu_
  absl::Duration rtt_ = absl::ZeroDuration();      // guarded by mu_
  absl::BitGen rng_;                               // guarded by mu_

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // guarded by stop_mu_
  std::thread thread_;
};

}  // namespace internal_cluster
}  // namespace sluice

#endif  // SLUICE_SRC_CLUSTER_REFILLER_H_
