// File: pool.h
// -----------------------------------------------------------------------------
// A host's pool of permits leased from a fleet's bucket: a BucketCell whose
// time stands still.
//
// In lease mode each host takes leases of permits from the fleet's bucket (in
// Redis) into a local pool and admits from the pool in nanoseconds. The pool
// must never refill by itself: a local bucket refilling at its own rate would
// admit past the leases. So a pool is a BucketCell whose parameter slots count
// 0 units per ns of clock: every clock reading, negative ones included, is 0
// units, so `now` never moves for the pool and nothing refills. Its permits
// change only by admits (BucketRef::TryAcquire, Reserve, Debit), by refunds,
// and by the pool operations here (Credit, Drain).
//
// The pool takes its interval and span from the fleet bucket's BucketConfig,
// so it holds at most the fleet bucket's capacity, and a request larger than
// that still answers kNeverFits ("can never fit"). It starts empty.
//
// Admitting goes through BucketRef over the same cell, unchanged: one load and
// one CAS, no lock, no virtual call. What a pool means for each operation:
//   - TryAcquire(n): granted when the pool holds n permits, whatever `now`.
//     kRefused's wait_ns is the shortfall priced at the fleet's rate (how long
//     the fleet bucket takes to refill it), a hint for when a lease could
//     cover it, not a time after which the pool will have it.
//   - Reserve(n, max_wait): callers pass max_wait = 0. A larger max_wait
//     grants into debt (the pool owes the permits: see Debt) with a wait_ns
//     that means nothing, since waiting brings no permits into a pool.
//     Acquire never waits on a pool for that reason.
//   - Debit(n): takes n unconditionally, into debt if need be (settling an
//     estimate that was too low). The refiller leases the debt (Debt), and
//     Credit pays it before anything becomes available.
//   - Refund(n, terms): all n permits come back (a pool counts permits, not
//     shares of its capacity), up to the capacity. What a refund cannot put
//     back because the pool is full is lost to the fleet: it under-admits,
//     never over-admits. A refiller that keeps the pool below its capacity
//     (a watermark) makes that rare.
//   - HoldUntil: does nothing (a hold would only throw leased permits away).
//     A provider's retry-after belongs on the fleet's bucket.
//   - Available(now) and GetPressure(now): the permits held, and the pressure
//     they make against the fleet bucket's capacity, the same at every now.
//   - FullForNanos: always 0 (a pool is never "full for a while"). A store
//     that reclaims idle buckets should still skip pools by IsPool: a pool
//     may hold leased permits, which are lost to the fleet with it.
//   - Validate / ValidateParamSlot: a pool passes against the fleet bucket's
//     config like a bucket does; IsPool tells the two apart.
//   - BucketRef::Reconfigure: keeps the pool a pool and its permits a count;
//     what no longer fits is dropped. PoolRef::Reconfigure reports it instead.
//
// Thread safety: Credit, Drain, Debt, Available and every BucketRef admit on
// a pool are safe from any number of threads and processes at once.
// Reconfigure REQUIRES that reconfigurations of one cell be serialized by the
// caller, as BucketRef::Reconfigure does.
//
// Example (the refiller, holding a lease of `got` permits from Redis):
//   sluice::PoolRef pool(cell);
//   const uint64_t credited = pool.Credit(got);
//   GiveBackToTheFleet(got - credited);  // the pool was full
//   // At idle or exit:
//   GiveBackToTheFleet(pool.Drain(UINT64_MAX));

#ifndef SLUICE_POOL_H_
#define SLUICE_POOL_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sluice/token_bucket.h"

namespace sluice {

// PoolRef
//
// The pool operations on a BucketCell that the PoolRef does not own, and a
// BucketRef over the same cell for admitting.
class PoolRef {
 public:
  // REQUIRES: `cell` outlives this PoolRef and was initialized with Init.
  explicit PoolRef(BucketCell* cell) : cell_(cell), ref_(cell, Clock::Monotonic()) {}

  // Initializes `cell` as an empty pool of a fleet bucket with `config`.
  // Returns InvalidArgument (see ValidateBucketConfig) and leaves the cell
  // untouched on bad input. REQUIRES: no other thread uses the cell yet.
  static absl::Status Init(BucketCell* cell, const BucketConfig& config);

  // Whether `cell` is a pool (set up by Init) rather than a bucket.
  static bool IsPool(const BucketCell& cell);

  // Changes the pool's configuration to the fleet bucket's new `config`,
  // keeping the number of permits it holds (or owes) rather than its fill
  // ratio. Returns the permits that no longer fit under the new capacity,
  // taken out of the pool for the caller to give back to the fleet;
  // InvalidArgument on a bad config and FailedPrecondition when `cell` is
  // not a pool, changing nothing. REQUIRES: reconfigurations of this cell are
  // serialized by the caller.
  static absl::StatusOr<uint64_t> Reconfigure(BucketCell* cell, const BucketConfig& config);

  // Adds up to n leased permits: pays any debt first, then fills the pool up
  // to its capacity. Returns how many were credited (debt paid included);
  // the caller gives the rest back to the fleet.
  [[nodiscard]] uint64_t Credit(uint64_t n) const;

  // Takes up to n of the permits the pool holds, for the caller to give back
  // to the fleet (at idle or exit). Returns how many; never goes into debt.
  [[nodiscard]] uint64_t Drain(uint64_t n) const;

  // The permits the pool owes (admitted into debt by Debit or Reserve), 0
  // when it owes none: what the refiller must lease before any permit
  // becomes available again.
  // Reported up to INT64_MAX permits; Credit pays the whole debt however
  // large.
  int64_t Debt() const;

  // The permits the pool holds, and the most it can hold (the fleet bucket's
  // capacity).
  int64_t Available() const { return ref_.Available(0); }
  int64_t Capacity() const { return ref_.Capacity(); }

  // The pool as a BucketRef, for admitting (TryAcquire, Refund, Debit...).
  const BucketRef& ref() const { return ref_; }

 private:
  // Moves up to n permits into the pool (Credit) or out of it (Drain);
  // returns how many moved.
  uint64_t Move(uint64_t n, bool into) const;

  BucketCell* cell_;
  BucketRef ref_;
};

}  // namespace sluice

#endif  // SLUICE_POOL_H_
