// File: tools/lab/fleet_redis.h
// -----------------------------------------------------------------------------
// The Redis of the fleet lab (tools/lab/fleet.h): one bucket shared by every
// host, answering LEASE and RETURN, and counting the hosts alive.
//
// The bucket is an ExactBucket (tools/judge/exact_bucket.h): exact integer
// arithmetic, sharing no code with sluice's cells. LEASE(want) grants
// min(want, whole permits available) with no debt and, when that is less
// than the want, says when the rest would be there. RETURN(n) adds n back,
// never above the capacity. Each call marks its caller alive; hosts alive are
// the callers seen in the last minute.
//
// Callers are identities: a host that restarts comes back as a new one, and
// the old one is forgotten a minute after its last call.
//
// Capping by what is out (`cap_outstanding`). A lease moves permits from the
// bucket into a pool, and the bucket then refills behind it: a bucket full
// again while pools still hold permits lets the fleet admit more than C + R W
// in a window of length W (`sluice lab --fleet` finds it with a capacity of
// 10 ms of the rate and bursty hosts). With the cap, each caller reports
// with every call how many permits it admitted since its last one, Redis
// keeps per caller the permits out (granted - returned - reported used, an
// upper bound of what its pool holds), and never lets the bucket's level
// reach C - (all permits out): bucket + pools stay below C, as one bucket
// would. A caller forgotten after a minute (a crashed host) gives its permits
// out back to the cap.
//
// Thread safety: none; the simulation is single-threaded.

#ifndef SLUICE_TOOLS_LAB_FLEET_REDIS_H_
#define SLUICE_TOOLS_LAB_FLEET_REDIS_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "tools/judge/exact_bucket.h"

namespace sluice::lab {

class FleetRedis {
 public:
  // REQUIRES: bucket is not null.
  FleetRedis(std::unique_ptr<ExactBucket> bucket, bool cap_outstanding);

  struct Grant {
    uint64_t granted = 0;
    int64_t rest_at_ns = 0;  // when the rest of the want will be there; 0 when all granted
    uint32_t hosts_alive = 0;
  };

  // LEASE from `caller`, who admitted `used` permits since its last call.
  // REQUIRES: 1 <= want <= capacity; now_ns never goes back.
  Grant Lease(uint64_t caller, uint64_t want, uint64_t used, int64_t now_ns);

  // RETURN of n permits from `caller`, who admitted `used` since its last call.
  void Return(uint64_t caller, uint64_t n, uint64_t used, int64_t now_ns);

  // Permits out in pools as Redis counts them (0 without the cap).
  int64_t Outstanding() const { return outstanding_; }

 private:
  struct Caller {
    int64_t last_call_ns = -1;
    int64_t out = 0;
  };

  // Marks `caller` alive, forgets callers silent for a minute; returns it.
  Caller& Touch(uint64_t caller, int64_t now_ns);
  // C - outstanding_, at least 0.
  uint64_t Cap() const;
  // Keeps the level below Cap() (with the cap).
  void Trim(int64_t now_ns);

  std::unique_ptr<ExactBucket> bucket_;
  const bool cap_outstanding_;
  absl::flat_hash_map<uint64_t, Caller> callers_;
  std::deque<std::pair<int64_t, uint64_t>> calls_;  // every call, in order
  uint32_t alive_ = 0;
  int64_t outstanding_ = 0;
};

}  // namespace sluice::lab

#endif  // SLUICE_TOOLS_LAB_FLEET_REDIS_H_
