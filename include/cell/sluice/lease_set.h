// File: lease_set.h
// -----------------------------------------------------------------------------
// A concurrency cap that survives crashes: N lease words, each either free
// (0) or holding the nonzero tag of the process that took it (the store uses
// pid and start time). Taking a lease is one CAS of a free word to the caller's tag;
// returning it is one CAS back. A process killed at any instruction either
// holds a lease under its own tag or does not, so whoever finds a lease whose
// holder is dead can take it back: nothing leaks and nothing is counted twice.
//
// Waiting for a lease sleeps on a futex word that every release bumps (shared
// memory works across processes), so a blocked caller wakes when a lease is
// returned, not on a timer. The word's low bit says someone sleeps: a release
// that finds it clear makes no system call.
//
// Thread safety: all operations are safe from any number of threads and
// processes; the words may live in shared memory.

#ifndef SLUICE_LEASE_SET_H_
#define SLUICE_LEASE_SET_H_

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace sluice {

class LeaseSetRef {
 public:
  // `leases` points to `count` words; `generation` is bumped on every release
  // (its low bit flags sleepers).
  // REQUIRES: both outlive this LeaseSetRef.
  LeaseSetRef(std::atomic<uint64_t>* leases, uint32_t count, std::atomic<uint32_t>* generation)
      : leases_(leases), count_(count), generation_(generation) {}

  // Takes a free lease for `tag` without waiting: its index, or -1 when all
  // are held. `hint` spreads callers over the words.
  int32_t TryAcquire(uint64_t tag, uint32_t hint) const;

  // Takes a lease, waiting at most `timeout` for one to be returned. Leases
  // whose holder `is_dead` are taken back before waiting and again at least
  // every kReclaimInterval while waiting, so a holder that dies (and so
  // never releases) is noticed within that time. DeadlineExceeded when none
  // came back in time.
  absl::StatusOr<uint32_t> Acquire(uint64_t tag, absl::Duration timeout, uint32_t hint,
                                   const std::function<bool(uint64_t)>& is_dead) const;
  static constexpr absl::Duration kReclaimInterval = absl::Milliseconds(250);

  // For waiters that cannot block in Acquire (an event loop): the generation
  // word, which every release changes, and a wait of at most `timeout_ns`
  // until it differs from `seen` (returns at once if it already does).
  // Spurious returns are possible; the caller tries again.
  uint32_t Generation() const;
  void WaitForRelease(uint32_t seen, int64_t timeout_ns) const;

  // Returns lease `index` if `tag` holds it, and wakes the waiters, if any.
  void Release(uint32_t index, uint64_t tag) const;

  // Leases held now (a scan, for statistics).
  uint32_t InFlight() const;

  // Takes back every lease whose holder `is_dead`; returns how many.
  uint32_t Reclaim(const std::function<bool(uint64_t)>& is_dead) const;

  uint32_t capacity() const { return count_; }

 private:
  static constexpr uint32_t kWaiters = 1;         // the generation's sleeper flag
  static constexpr uint32_t kGenerationStep = 2;  // a release, above the flag
  void Bump() const;                              // a new generation, waking sleepers if any

  std::atomic<uint64_t>* leases_;
  uint32_t count_;
  std::atomic<uint32_t>* generation_;
};

}  // namespace sluice

#endif  // SLUICE_LEASE_SET_H_
