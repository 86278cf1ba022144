// File: redis_leases.h
// -----------------------------------------------------------------------------
// A fleet's concurrency caps in Redis, for a FleetStore (sluice/fleet_store.h):
// one cap of N leases (calls in flight) for every host, where a host's store
// alone would give each host its own N.
//
// A lease is a member of the cap's sorted set in Redis (lease_scripts.h)
// that expires `concurrency_lease_ttl` after it was last refreshed. One
// keeper thread per RedisLeases (started with the first lease, stopped in
// the destructor) refreshes every lease this process holds every ttl / 3,
// in one command for all of them, on a connection of its own; a host that dies stops refreshing,
// and its leases free themselves within the time to live. A holder that stalls past its time to
// live (or whose leases Redis lost in a restart) has lost them: another host may hold them now. The
// keeper finds that, counts it (lost()) and stops refreshing them; the caller's Release of such a
// lease then touches nothing in Redis. It cannot stop the call that runs: for that long the cap is
// exceeded by one.
//
// Waiting (Acquire with a timeout) polls Redis with a jittered backoff of
// 1 to 10 ms until the deadline; a release on another host is not
// signalled. WaitForRelease wakes on this process's releases only (a
// spurious return, as its contract allows, at most every poll interval),
// so an event loop sees other hosts' releases at its own retry tick.
//
// While Redis cannot be reached (each command waits at most the timeout,
// and after a failure Redis is left alone for 100 ms but for the keeper's
// probe), a cap goes by on_redis_down:
//   * kLocalShare: a local cap in the host's store, "fleet:cap-down:<key>/<share>",
//     of max(1, N ÷ the hosts seen alive in the fleet's hosts' set at the
//     last answer, or expected_hosts when Redis never answered). Leases
//     taken this way are not in Redis: when it returns, the fleet may run
//     up to N plus the host's share until they are released.
//   * kFailClosed: no new lease (TryAcquire -1; Acquire DeadlineExceeded,
//     saying Redis is down).
//   * kFailOpen: every lease granted, without a limit.
// Indexes tell the three apart (high bits), so a lease taken during an
// outage goes back where it came from.
//
// Thread safety: a RedisLeases and its caps are safe for concurrent use.

#ifndef SLUICE_SRC_CLUSTER_REDIS_LEASES_H_
#define SLUICE_SRC_CLUSTER_REDIS_LEASES_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/fleet_store.h"
#include "sluice/store.h"
#include "src/cluster/redis_link.h"

namespace sluice {
namespace internal_cluster {

class RedisCap;

class RedisLeases : public std::enable_shared_from_this<RedisLeases> {
 public:
  // Caps in the Redis of `options`, connecting lazily; `local` holds the
  // caps used while Redis is down. REQUIRES: `local` outlives this and
  // every handle it gives.
  static std::shared_ptr<RedisLeases> Create(Store* local, const FleetOptions& options);
  // Stops the keeper and gives back in Redis whatever leases are still
  // held (best effort: unreturned ones expire).
  ~RedisLeases();
  RedisLeases(const RedisLeases&) = delete;
  RedisLeases& operator=(const RedisLeases&) = delete;

  // The fleet's cap `key` of `count` leases; the same handle's backend for
  // the same key and count while one is alive. InvalidArgument for a count
  // of 0 or above kMaxCount.
  absl::StatusOr<StoredLeases> Cap(absl::string_view key, uint32_t count);
  static constexpr uint32_t kMaxCount = (1u << 20) - 1;

  // Leases this process holds in Redis now, and how many it lost (found
  // gone or expired at a refresh).
  uint32_t held() const;
  uint64_t lost() const;

 private:
  friend class RedisCap;
  struct Held {
    std::string cap;     // its Redis key
    std::string member;  // its name in the cap's set
    bool used = false;
    bool lost = false;
  };

  RedisLeases(Store* local, const FleetOptions& options);
  // One lease of cap `redis_key` in Redis: its index, -1 when all are
  // held, Unavailable when Redis is down (or was, less than the probe
  // interval ago).
  absl::StatusOr<int32_t> TryRedis(const std::string& redis_key, uint32_t count);
  void ReleaseRedis(uint32_t index);
  // The leases of `redis_key` this process holds in Redis.
  uint32_t HeldOf(const std::string& redis_key) const;
  absl::StatusOr<int64_t> RunOn(const std::string& script, const std::string& redis_key);
  bool Skipping() const;
  void MarkDown();
  void Answered(int64_t hosts);
  // The hosts a cap is shared by while Redis is down.
  uint32_t Hosts() const;
  void NotifyReleased();
  void WaitForRelease(const std::atomic<uint32_t>& generation, uint32_t seen,
                      absl::Duration timeout);
  void Keep();
  void RefreshOnce(std::unique_lock<std::mutex>& lock);
  void GiveBackAll();

  Store* const local_;
  const FleetOptions options_;
  const std::unique_ptr<RedisLink> link_;
  // The keeper's own, so that a refresh never queues a caller behind it.
  const std::unique_ptr<RedisLink> keeper_link_;
  const std::string token_;  // this process's (and this object's) holder name
  std::atomic<uint64_t> serial_{0};
  std::atomic<int64_t> skip_until_ns_{0};  // monotonic ns; Redis was down
  std::atomic<uint32_t> hosts_seen_{0};    // 0: none seen yet

  mutable std::mutex mu_;
  std::condition_variable released_;  // any release; with mu_
  std::condition_variable keeper_cv_;
  std::vector<Held> held_;                                          // guarded by mu_
  std::vector<uint32_t> free_;                                      // guarded by mu_
  uint64_t lost_ = 0;                                               // guarded by mu_
  absl::flat_hash_map<std::string, std::weak_ptr<RedisCap>> caps_;  // guarded by mu_
  bool stopping_ = false;                                           // guarded by mu_
  std::thread keeper_;                                              // started under mu_
};

}  // namespace internal_cluster
}  // namespace sluice

#endif  // SLUICE_SRC_CLUSTER_REDIS_LEASES_H_
