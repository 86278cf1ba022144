#include "sluice/lease_set.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "sluice/clock.h"

namespace sluice {
namespace {

void FutexWait(std::atomic<uint32_t>* word, uint32_t seen, int64_t timeout_ns) {
  timespec ts{static_cast<time_t>(timeout_ns / 1'000'000'000),
              static_cast<long>(timeout_ns % 1'000'000'000)};
  // Not FUTEX_PRIVATE_FLAG: the word may be shared between processes.
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, seen, &ts, nullptr, 0);
}

void FutexWake(std::atomic<uint32_t>* word, int waiters) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, waiters, nullptr, nullptr, 0);
}

}  // namespace

int32_t LeaseSetRef::TryAcquire(uint64_t tag, uint32_t hint) const {
  for (uint32_t i = 0; i < count_; ++i) {
    const uint32_t index = (hint + i) % count_;
    uint64_t expected = 0;
    if (leases_[index].load(std::memory_order_relaxed) == 0 &&
        leases_[index].compare_exchange_strong(expected, tag, std::memory_order_acq_rel)) {
      return static_cast<int32_t>(index);
    }
  }
  return -1;
}

absl::StatusOr<uint32_t> LeaseSetRef::Acquire(uint64_t tag, absl::Duration timeout, uint32_t hint,
                                              const std::function<bool(uint64_t)>& is_dead) const {
  const int64_t start = Clock::MonotonicNanos();
  const int64_t deadline =
      start + absl::ToInt64Nanoseconds(std::max(timeout, absl::ZeroDuration()));
  const int64_t reclaim_every = absl::ToInt64Nanoseconds(kReclaimInterval);
  int64_t next_reclaim = start;
  for (;;) {
    // Read the generation before trying, so a release between the try and
    // the wait changes it and the wait returns at once.
    const uint32_t seen = Generation();
    if (const int32_t index = TryAcquire(tag, hint); index >= 0) {
      return static_cast<uint32_t>(index);
    }
    // A dead holder never releases, so no wake comes for its lease: look for
    // one now and then while waiting.
    const int64_t now = Clock::MonotonicNanos();
    if (now >= next_reclaim) {
      next_reclaim = now + reclaim_every;
      if (Reclaim(is_dead) > 0) continue;
    }
    if (now >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("all ", count_, " concurrency leases are held; none was returned within ",
                       absl::FormatDuration(timeout)));
    }
    WaitForRelease(seen, std::min(deadline, next_reclaim) - now);
  }
}

uint32_t LeaseSetRef::Generation() const {
  return generation_->load(std::memory_order_acquire) & ~kWaiters;
}

void LeaseSetRef::WaitForRelease(uint32_t seen, int64_t timeout_ns) const {
  if (timeout_ns <= 0) return;
  // Announce a sleeper, so that releases know to wake. If a release came
  // since `seen`, return instead of sleeping.
  const uint32_t flagged = generation_->fetch_or(kWaiters, std::memory_order_acq_rel);
  if ((flagged & ~kWaiters) != (seen & ~kWaiters)) return;
  FutexWait(generation_, flagged | kWaiters, timeout_ns);
}

void LeaseSetRef::Release(uint32_t index, uint64_t tag) const {
  if (index >= count_) return;
  uint64_t expected = tag;
  if (leases_[index].compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) Bump();
}

void LeaseSetRef::Bump() const {
  // A new generation; the system call only when someone sleeps. Every sleeper
  // wakes (the flag is cleared for all of them) and those still without a
  // lease set it again before they sleep.
  const uint32_t before = generation_->fetch_add(kGenerationStep, std::memory_order_acq_rel);
  if ((before & kWaiters) == 0) return;
  generation_->fetch_and(~kWaiters, std::memory_order_acq_rel);
  FutexWake(generation_, std::numeric_limits<int>::max());
}

uint32_t LeaseSetRef::InFlight() const {
  uint32_t held = 0;
  for (uint32_t i = 0; i < count_; ++i) held += leases_[i].load(std::memory_order_relaxed) != 0;
  return held;
}

uint32_t LeaseSetRef::Reclaim(const std::function<bool(uint64_t)>& is_dead) const {
  uint32_t taken = 0;
  for (uint32_t i = 0; i < count_; ++i) {
    uint64_t holder = leases_[i].load(std::memory_order_acquire);
    if (holder == 0 || !is_dead(holder)) continue;
    if (leases_[i].compare_exchange_strong(holder, 0, std::memory_order_acq_rel)) ++taken;
  }
  if (taken > 0) Bump();
  return taken;
}

}  // namespace sluice
