// File: clock.h
// -----------------------------------------------------------------------------
// The time source every sluice bucket runs on: nanoseconds on the host-wide
// monotonic clock (CLOCK_MONOTONIC), so that readings taken in different
// processes on one host compare. A coarse variant (CLOCK_MONOTONIC_COARSE)
// costs a few nanoseconds instead of ~20 to read but lags true time by up to
// one kernel tick; the TSC clock (sluice/tsc.h) reads the CPU's time-stamp
// counter converted to CLOCK_MONOTONIC's nanoseconds, for about half the cost,
// where the CPU and kernel make that safe; a fake clock makes tests exact.
//
// Thread safety: a Clock is an immutable value and safe to use from any number
// of threads. A FakeClock is safe for concurrent use; its time only moves when
// a test moves it (or when a caller sleeps on it, see SleepUntil).
//
// Example:
//   sluice::Clock clock = sluice::Clock::Monotonic();
//   int64_t start = clock.Now();

#ifndef SLUICE_CLOCK_H_
#define SLUICE_CLOCK_H_

#include <time.h>

#include <atomic>
#include <cstdint>

#include "sluice/tsc.h"

namespace sluice {

class FakeClock;

// Clock
//
// A small value type naming a time source. Now() is a switch over four cases,
// inlined, with no virtual dispatch: it sits on the acquire hot path.
class Clock {
 public:
  enum class Kind : uint8_t { kMonotonic, kMonotonicCoarse, kTsc, kFake };

  // The precise host-wide clock (CLOCK_MONOTONIC).
  static Clock Monotonic() { return Clock(Kind::kMonotonic); }

  // The coarse host-wide clock (CLOCK_MONOTONIC_COARSE). Its readings share
  // CLOCK_MONOTONIC's origin but advance once per kernel tick, so they lag
  // true time by less than CoarseResolutionNanos(). A bucket read with it sees
  // time slightly in the past: its cumulative admissions never exceed what the
  // precise clock would admit, while any single window of true time may see the
  // admissions of up to one extra tick (see token_bucket.h for the bound).
  static Clock Coarse() { return Clock(Kind::kMonotonicCoarse); }

  // The TSC clock on this process's own calibration (calibrated over 1 ms on
  // the first call, then refined at every check) where TscUsable() says the
  // TSC is safe; CLOCK_MONOTONIC otherwise (kind() tells which, TscUsable()
  // why). Its readings are CLOCK_MONOTONIC's within 1 ms, so they compare with
  // other processes' readings of either clock to that precision; processes
  // that must agree to the nanosecond share a calibration (TscOn, or a
  // segment's, Segment::TscClock).
  static Clock Tsc();

  // The TSC clock converting with `calibration`, which may live in shared
  // memory. REQUIRES: calibration->ready(), TscUsable().ok(), and
  // `calibration` outlives every copy.
  static Clock TscOn(TscCalibration* calibration) { return Clock(Kind::kTsc, calibration); }

  // A clock that reads `fake`. REQUIRES: `fake` outlives every copy.
  static Clock Fake(FakeClock* fake) { return Clock(Kind::kFake, fake); }

  Kind kind() const { return kind_; }
  // The TSC calibration of a kTsc clock; nullptr for the others.
  TscCalibration* tsc_calibration() const { return kind_ == Kind::kTsc ? tsc_ : nullptr; }
  // "monotonic", "coarse", "tsc" or "fake".
  const char* name() const;

  // Nanoseconds since the host's monotonic origin (boot, for the real clocks).
  int64_t Now() const;

  // Blocks the calling thread until Now() >= deadline_ns, with one sleep on
  // the real clocks (clock_nanosleep with an absolute deadline, so it never
  // drifts or polls). On a fake clock it advances the fake time to the
  // deadline instead and records the sleep, so tests stay instantaneous.
  void SleepUntil(int64_t deadline_ns) const;

  // Reads of the two real clocks, exposed for benchmarks and tests.
  static int64_t MonotonicNanos() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  }
  static int64_t CoarseNanos() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  }

  // The coarse clock's step in nanoseconds (clock_getres): the most it can lag.
  static int64_t CoarseResolutionNanos();

 private:
  explicit Clock(Kind kind) : kind_(kind), fake_(nullptr) {}
  Clock(Kind kind, FakeClock* fake) : kind_(kind), fake_(fake) {}
  Clock(Kind kind, TscCalibration* tsc) : kind_(kind), tsc_(tsc) {}

  Kind kind_;
  union {
    FakeClock* fake_;      // kFake
    TscCalibration* tsc_;  // kTsc
  };
};

// FakeClock
//
// Test time: starts where it is told and moves only by Set/Advance, or by a
// SleepUntil through a Clock::Fake that jumps it to the sleeper's deadline.
class FakeClock {
 public:
  explicit FakeClock(int64_t start_ns = 0) : now_ns_(start_ns) {}

  int64_t Now() const { return now_ns_.load(std::memory_order_acquire); }
  // Moves time to `now_ns`; a value in the past is ignored, as on a real
  // monotonic clock.
  void Set(int64_t now_ns);
  void Advance(int64_t delta_ns) { Set(Now() + delta_ns); }

  // How many times a caller slept on this clock, and the last deadline.
  int64_t sleeps() const { return sleeps_.load(std::memory_order_acquire); }
  int64_t last_sleep_deadline() const { return last_deadline_.load(std::memory_order_acquire); }

 private:
  friend class Clock;
  void RecordSleep(int64_t deadline_ns);

  std::atomic<int64_t> now_ns_;
  std::atomic<int64_t> sleeps_{0};
  std::atomic<int64_t> last_deadline_{0};
};

// Implementation details follow.

inline int64_t Clock::Now() const {
  switch (kind_) {
    case Kind::kMonotonic:
      return MonotonicNanos();
    case Kind::kMonotonicCoarse:
      return CoarseNanos();
    case Kind::kTsc:
      return tsc_->Now();
    case Kind::kFake:
      break;
  }
  return fake_->Now();
}

}  // namespace sluice

#endif  // SLUICE_CLOCK_H_
