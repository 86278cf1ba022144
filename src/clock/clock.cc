#include "sluice/clock.h"

#include <cerrno>

namespace sluice {
namespace {

void SleepOnMonotonic(int64_t deadline_ns) {
  timespec deadline;
  deadline.tv_sec = deadline_ns / 1'000'000'000;
  deadline.tv_nsec = deadline_ns % 1'000'000'000;
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, nullptr) == EINTR) {
    // A signal interrupted the sleep; the deadline is absolute, so resuming
    // neither drifts nor polls.
  }
}

}  // namespace

void FakeClock::Set(int64_t now_ns) {
  int64_t seen = now_ns_.load(std::memory_order_relaxed);
  while (seen < now_ns && !now_ns_.compare_exchange_weak(seen, now_ns, std::memory_order_acq_rel)) {
  }
}

void FakeClock::RecordSleep(int64_t deadline_ns) {
  sleeps_.fetch_add(1, std::memory_order_acq_rel);
  last_deadline_.store(deadline_ns, std::memory_order_release);
  Set(deadline_ns);
}

void Clock::SleepUntil(int64_t deadline_ns) const {
  if (kind_ == Kind::kFake) {
    fake_->RecordSleep(deadline_ns);
    return;
  }
  if (deadline_ns <= 0) return;  // already past: the monotonic clock starts at 0
  // The coarse clock shares CLOCK_MONOTONIC's origin, so both sleep on the
  // precise clock: waking a little early by the coarse clock's reading is
  // impossible, since the coarse reading never runs ahead of the precise one.
  SleepOnMonotonic(deadline_ns);
  // The TSC clock may lag CLOCK_MONOTONIC (by under 1 ms): sleep the rest.
  for (int64_t now = Now(); kind_ == Kind::kTsc && now < deadline_ns; now = Now()) {
    SleepOnMonotonic(MonotonicNanos() + (deadline_ns - now));
  }
}

Clock Clock::Tsc() {
  static const Clock clock = [] {
    if (!TscUsable().ok()) return Monotonic();
    static auto* const calibration = new TscCalibration();
    calibration->Calibrate();
    return TscOn(calibration);
  }();
  return clock;
}

const char* Clock::name() const {
  switch (kind_) {
    case Kind::kMonotonic:
      return "monotonic";
    case Kind::kMonotonicCoarse:
      return "coarse";
    case Kind::kTsc:
      return "tsc";
    case Kind::kFake:
      break;
  }
  return "fake";
}

int64_t Clock::CoarseResolutionNanos() {
  timespec res;
  clock_getres(CLOCK_MONOTONIC_COARSE, &res);
  return int64_t{res.tv_sec} * 1'000'000'000 + res.tv_nsec;
}

}  // namespace sluice
