// File: lease_sizing.h
// -----------------------------------------------------------------------------
// How many permits a host leases at a time from a bucket that a fleet of
// hosts shares on Redis, and when it asks for more.
//
// A host lease is a real debit of the fleet's bucket: the host takes permits
// out of the shared bucket into a pool of its own and admits from that pool
// locally, in nanoseconds, with no round trip. (Not to be confused with a
// concurrency lease, one call in flight, or with a thread's permit cache.)
// The pool never refills on its own; the host's refiller tops it up with a
// new lease whenever it falls below the watermark, so a lease must be large
// enough to last while the next one is on its way, and small enough that
// permits leased but never used (what leasing costs: at most one lease per
// host) stay a small share of the bucket.
//
// The rule, a pure function so that the refiller and the fleet simulator
// (`sluice lab --fleet`) run the same one:
//   * horizon = max(kMinHorizon, kRoundTrips * round trip): the time a lease
//     should last at the host's demand;
//   * lease = ceil(demand * horizon), at least 1, and at most the host's fair
//     share of the bucket's capacity, capacity / (2 * hosts alive), so that
//     every host alive can hold a lease and half the capacity is never in
//     pools (at least 1);
//   * watermark = ceil(lease / 2): a refill is asked for while half a lease
//     is left, which lasts half the horizon, at least two round trips.
// Demand is what the host's callers asked for (admitted and refused), so a
// host whose pool runs dry still asks for what it needs: a busy host among
// idle ones leases most of the bucket, idle hosts lease little.
//
// Thread safety: pure functions.

#ifndef SLUICE_LEASE_SIZING_H_
#define SLUICE_LEASE_SIZING_H_

#include <cstdint>

#include "absl/time/time.h"

namespace sluice {

struct LeaseInputs {
  // The shared bucket's capacity (its burst), in permits; >= 1.
  uint64_t capacity = 1;
  // The host's demand on the bucket, permits per second (smoothed).
  double demand_per_second = 0;
  // The round trip to Redis, as measured.
  absl::Duration round_trip = absl::ZeroDuration();
  // Hosts seen alive on the bucket (this one included); 0 reads as 1.
  uint32_t hosts_alive = 1;
};

struct LeasePlan {
  uint64_t lease = 1;      // permits to ask for in one lease
  uint64_t watermark = 1;  // refill while the pool holds fewer than this
};

inline constexpr absl::Duration kMinLeaseHorizon = absl::Milliseconds(20);
inline constexpr int kLeaseRoundTrips = 8;

LeasePlan PlanLease(const LeaseInputs& in);

}  // namespace sluice

#endif  // SLUICE_LEASE_SIZING_H_
