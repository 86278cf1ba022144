// Real time: the process-wide TSC clock against CLOCK_MONOTONIC over several
// seconds of readings, bursts and pauses. Labelled "realtime": it reads the
// real clocks (with margins wide enough for a loaded machine).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <thread>

#include "gtest/gtest.h"
#include "sluice/clock.h"
#include "sluice/tsc.h"

namespace sluice {
namespace {

// How far `reading` lies outside [before, after], in ns (0 inside).
int64_t Outside(int64_t before, int64_t reading, int64_t after) {
  if (reading < before) return before - reading;
  return reading > after ? reading - after : 0;
}

TEST(TscRealTimeTest, StaysWithinAMillisecondOfMonotonicForSeconds) {
  if (!TscUsable().ok()) GTEST_SKIP() << TscUsable();
  const Clock clock = Clock::Tsc();
  ASSERT_EQ(clock.kind(), Clock::Kind::kTsc);
  const uint64_t generation = clock.tsc_calibration()->generation();
  int64_t worst = 0, last = 0, readings = 0;
  const int64_t end = Clock::MonotonicNanos() + 6'000'000'000;
  for (int burst = 0; Clock::MonotonicNanos() < end; ++burst) {
    for (int i = 0; i < 1000; ++i, ++readings) {
      const int64_t before = Clock::MonotonicNanos();
      const int64_t now = clock.Now();
      const int64_t after = Clock::MonotonicNanos();
      ASSERT_GE(now, last);
      last = now;
      worst = std::max(worst, Outside(before, now, after));
    }
    // Pauses of up to 0.4 s, so some readings come after a check point was
    // long passed (the clock must catch up at once, not drift).
    std::this_thread::sleep_for(std::chrono::microseconds(burst % 7 == 0 ? 400'000 : 300));
  }
  std::printf(
      "TSC clock: %lld readings, largest offset from CLOCK_MONOTONIC %lld ns, %llu "
      "recalibrations\n",
      static_cast<long long>(readings), static_cast<long long>(worst),
      static_cast<unsigned long long>(clock.tsc_calibration()->generation() - generation));
  EXPECT_LT(worst, 1'000'000);
  EXPECT_GT(clock.tsc_calibration()->generation(), generation + 10);
}

TEST(TscRealTimeTest, SleepUntilWakesAtTheTscDeadline) {
  const Clock clock = Clock::Tsc();
  for (int i = 0; i < 20; ++i) {
    const int64_t deadline = clock.Now() + 500'000;
    clock.SleepUntil(deadline);
    ASSERT_GE(clock.Now(), deadline);
  }
}

}  // namespace
}  // namespace sluice
