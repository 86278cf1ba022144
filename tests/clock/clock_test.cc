#include "sluice/clock.h"

#include "gtest/gtest.h"

namespace sluice {
namespace {

TEST(ClockTest, MonotonicNeverGoesBackwards) {
  int64_t last = Clock::MonotonicNanos();
  for (int i = 0; i < 100'000; ++i) {
    const int64_t now = Clock::Monotonic().Now();
    ASSERT_GE(now, last);
    last = now;
  }
}

// The coarse clock's guarantee sluice relies on: it shares CLOCK_MONOTONIC's
// origin and never runs ahead of it, so a bucket read with it only sees the
// past. How far it lags is the kernel's business (one tick nominally; tickless
// kernels can skip ticks), so only "same origin" is checked for the lag.
TEST(ClockTest, CoarseNeverRunsAheadOfThePreciseClock) {
  ASSERT_GT(Clock::CoarseResolutionNanos(), 0);
  for (int i = 0; i < 10'000; ++i) {
    const int64_t before = Clock::MonotonicNanos();
    const int64_t coarse = Clock::Coarse().Now();
    const int64_t after = Clock::MonotonicNanos();
    ASSERT_LE(coarse, after) << "the coarse clock ran ahead of the precise one";
    ASSERT_GE(coarse, before - 1'000'000'000) << "the coarse clock has another origin";
  }
}

TEST(ClockTest, SleepUntilReturnsAtOrAfterTheDeadline) {
  const Clock clock = Clock::Monotonic();
  const int64_t deadline = clock.Now() + 2'000'000;
  clock.SleepUntil(deadline);
  EXPECT_GE(clock.Now(), deadline);
  clock.SleepUntil(0);  // a past deadline returns at once
}

TEST(FakeClockTest, MovesOnlyWhenToldAndNeverBackwards) {
  FakeClock fake(100);
  const Clock clock = Clock::Fake(&fake);
  EXPECT_EQ(clock.kind(), Clock::Kind::kFake);
  EXPECT_EQ(clock.Now(), 100);
  fake.Advance(50);
  EXPECT_EQ(clock.Now(), 150);
  fake.Set(120);
  EXPECT_EQ(clock.Now(), 150);
  fake.Set(1000);
  EXPECT_EQ(clock.Now(), 1000);
}

TEST(FakeClockTest, SleepingJumpsToTheDeadlineAndIsCounted) {
  FakeClock fake(0);
  const Clock clock = Clock::Fake(&fake);
  clock.SleepUntil(5000);
  EXPECT_EQ(fake.sleeps(), 1);
  EXPECT_EQ(fake.last_sleep_deadline(), 5000);
  EXPECT_EQ(clock.Now(), 5000);
}

}  // namespace
}  // namespace sluice
