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
//   * horizon = max(kMinLeaseHorizon, kLeaseRoundTrips * round trip,
//     hosts alive / kFleetLeaseCallsPerSecond), at most kMaxLeaseHorizon:
//     the time a lease should last at the host's demand. Each host calls
//     about once per horizon, so the last term keeps the whole fleet's lease
//     calls on one bucket near kFleetLeaseCallsPerSecond at steady demand
//     however many hosts share it. Chosen from `sluice lab --fleet` (100,000/s,
//     capacity 600,000, 1 ms round trips, the fleet offering 1.2x the rate
//     for a minute): without the term 1,000 hosts made 155,000 calls a
//     second (1,417 per 1,000 admits). With it, at 1,000 calls/s per fleet,
//     they make 1,354 (12.4 per 1,000), hold at most 136,000 permits (1.4 s
//     of the rate) in their pools and use 0.994 of C + R t; at 4,000 calls/s,
//     44.9 per 1,000 and 1.000; at 250, 5.3 per 1,000 but 0.967, with 318,000
//     permits in pools;
//   * lease = ceil(demand * horizon), at least 1, and at most the host's fair
//     share of the bucket's capacity, capacity / (2 * hosts alive), so that
//     every host alive can hold a lease and half the capacity is never in
//     pools (at least 1);
//   * watermark = ceil(lease / 2): a refill is asked for while half a lease
//     is left, which lasts half the horizon, at least four round trips;
//   * backoff = horizon / 2, and at most capacity / (4 * rate) when the rate
//     is known: after Redis granted less than was asked (the bucket is dry:
//     the fleet wants more than the rate), the refiller asks again after a
//     uniform draw from [backoff, 2 * backoff), and never before Redis said
//     the rest would be there nor within a round trip. A dry bucket refills
//     at the rate for everyone; asking sooner only splits it into smaller
//     grants, one call each. The draw keeps hosts refused together from
//     asking together again (the first would take all, the rest nothing),
//     and the cap makes some host ask before the bucket fills and overflows:
//     with a capacity of 10 ms of the rate, one hot host among 3 idle got
//     0.916 of the limit with a backoff of horizon / 2 alone, and 100
//     saturating hosts asking in step got 0.24 of it.
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
  // The shared bucket's rate, permits per second; 0 (or anything not
  // positive) when unknown: the backoff is then horizon / 2 alone.
  double rate_per_second = 0;
};

struct LeasePlan {
  uint64_t lease = 1;      // permits to ask for in one lease
  uint64_t watermark = 1;  // refill while the pool holds fewer than this
  // After a grant smaller than asked, wait a uniform draw from
  // [backoff, 2 * backoff) before the next LEASE.
  absl::Duration backoff = absl::ZeroDuration();
};

inline constexpr absl::Duration kMinLeaseHorizon = absl::Milliseconds(20);
inline constexpr int kLeaseRoundTrips = 8;
inline constexpr absl::Duration kMaxLeaseHorizon = absl::Minutes(1);
inline constexpr int kFleetLeaseCallsPerSecond = 1'000;

LeasePlan PlanLease(const LeaseInputs& in);

}  // namespace sluice

#endif  // SLUICE_LEASE_SIZING_H_
