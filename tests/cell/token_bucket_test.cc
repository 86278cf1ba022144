// Exact admission counts for the GCRA token bucket, on explicit and fake time.
#include "sluice/token_bucket.h"

#include <cstdint>
#include <limits>
#include <type_traits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kT0 = 1'000 * kSec;  // an arbitrary clock reading to start at

std::unique_ptr<TokenBucket> MakeBucket(BucketConfig config, FakeClock* clock) {
  auto bucket = TokenBucket::Create(config, Clock::Fake(clock));
  EXPECT_TRUE(bucket.ok()) << bucket.status();
  return *std::move(bucket);
}

// Takes single permits at `now` until refused; returns how many were granted.
int64_t Drain(const BucketRef& b, int64_t now) {
  int64_t n = 0;
  while (b.TryAcquire(1, now).granted()) ++n;
  return n;
}

// Whoever holds a BucketRef (a TokenBucket's ref(), a SharedBucket's) may
// admit through it but cannot reconfigure it: reconfiguring goes through the
// owner, which serializes it (TokenBucket's mutex, the segment lock). These
// fail to compile if a reconfiguration path around the owner comes back.
template <typename Ref>
concept ReconfigurableThrough = requires(Ref ref, const BucketConfig& config) {
  ref.Reconfigure(config, int64_t{0});
};
static_assert(!ReconfigurableThrough<const BucketRef&>);
static_assert(!ReconfigurableThrough<BucketRef&>);
static_assert(ReconfigurableThrough<TokenBucket&>);
static_assert(!std::is_base_of_v<BucketRef, TokenBucket>,
              "a TokenBucket holds its BucketRef; it is not one");

TEST(TokenBucketTest, NewBucketIsFullAndAdmitsExactlyItsCapacity) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerMinute(1000), 50}, &clock);
  EXPECT_EQ(b->Available(kT0), 50);
  EXPECT_EQ(b->Capacity(), 50);
  EXPECT_EQ(Drain(b->ref(), kT0), 50);
  const Decision d = b->TryAcquire(1, kT0);
  EXPECT_EQ(d.outcome, Outcome::kRefused);
  EXPECT_EQ(d.wait_ns, 60 * kMs);  // 60 s / 1000
}

TEST(TokenBucketTest, RefillsExactlyOnePermitPerInterval) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerMinute(1000), 5}, &clock);
  ASSERT_EQ(Drain(b->ref(), kT0), 5);
  EXPECT_EQ(b->TryAcquire(1, kT0 + 60 * kMs - 1).wait_ns, 1);
  EXPECT_TRUE(b->TryAcquire(1, kT0 + 60 * kMs).granted());
  EXPECT_FALSE(b->TryAcquire(1, kT0 + 60 * kMs).granted());
  // Three intervals later, exactly three more.
  EXPECT_EQ(Drain(b->ref(), kT0 + 4 * 60 * kMs), 3);
}

TEST(TokenBucketTest, PartialRefillReportsTheRemainingWait) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(10), 10}, &clock);
  ASSERT_EQ(Drain(b->ref(), kT0), 10);
  EXPECT_EQ(b->Available(kT0 + 30 * kMs), 0);
  EXPECT_EQ(b->TryAcquire(1, kT0 + 30 * kMs).wait_ns, 70 * kMs);
  EXPECT_EQ(b->TryAcquire(3, kT0 + 30 * kMs).wait_ns, 270 * kMs);
  EXPECT_EQ(b->Available(kT0 + 450 * kMs), 4);
  EXPECT_EQ(b->Available(kT0 + 10 * kSec), 10);  // never more than capacity
}

TEST(TokenBucketTest, MultiPermitRequests) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(1), 10}, &clock);
  EXPECT_TRUE(b->TryAcquire(7, kT0).granted());
  const Decision d = b->TryAcquire(4, kT0);
  EXPECT_EQ(d.outcome, Outcome::kRefused);
  EXPECT_EQ(d.wait_ns, kSec);
  EXPECT_TRUE(b->TryAcquire(3, kT0).granted());
  EXPECT_EQ(b->Available(kT0), 0);
  EXPECT_TRUE(b->TryAcquire(4, kT0 + 4 * kSec).granted());
}

TEST(TokenBucketTest, RequestLargerThanCapacityCanNeverFit) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerMinute(1000), 50}, &clock);
  EXPECT_EQ(b->TryAcquire(51, kT0).outcome, Outcome::kNeverFits);
  EXPECT_EQ(b->Reserve(51, std::numeric_limits<int64_t>::max(), kT0).outcome, Outcome::kNeverFits);
  EXPECT_EQ(b->TryAcquire(std::numeric_limits<uint64_t>::max(), kT0).outcome, Outcome::kNeverFits);
  const absl::Status s = b->Acquire(51, absl::Hours(1));
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(s.message(), HasSubstr("can never fit"));
  EXPECT_THAT(s.message(), HasSubstr("capacity 50"));
  EXPECT_EQ(clock.sleeps(), 0);      // failed at once
  EXPECT_EQ(b->Available(kT0), 50);  // and took nothing
  EXPECT_TRUE(b->TryAcquire(50, kT0).granted());
}

TEST(TokenBucketTest, RefusalChangesNoState) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(1), 3}, &clock);
  ASSERT_TRUE(b->TryAcquire(2, kT0).granted());
  for (int i = 0; i < 100; ++i) {
    ASSERT_FALSE(b->TryAcquire(2, kT0).granted());
    ASSERT_FALSE(b->Reserve(3, kSec, kT0).granted());
  }
  EXPECT_EQ(b->Available(kT0), 1);
  EXPECT_EQ(b->TryAcquire(2, kT0).wait_ns, kSec);
  EXPECT_TRUE(b->TryAcquire(1, kT0).granted());
}

TEST(TokenBucketTest, DebtIsRepaidAtTheRefillRate) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(1), 10}, &clock);
  b->Debit(25, kT0);  // 15 permits of debt
  EXPECT_EQ(b->Available(kT0), 0);
  EXPECT_EQ(b->GetPressure(kT0), Pressure::kHigh);
  EXPECT_EQ(b->TryAcquire(1, kT0).wait_ns, 16 * kSec);
  EXPECT_EQ(b->Available(kT0 + 15 * kSec), 0);
  EXPECT_EQ(b->Available(kT0 + 16 * kSec), 1);
  EXPECT_EQ(b->Available(kT0 + 25 * kSec), 10);
  EXPECT_EQ(b->Available(kT0 + 99 * kSec), 10);
}

TEST(TokenBucketTest, RefundReturnsExactlyWhatWasTakenUpToCapacity) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(1), 10}, &clock);
  const Decision all = b->TryAcquire(10, kT0);
  ASSERT_TRUE(all.granted());
  b->Refund(4, all.terms, kT0);
  EXPECT_EQ(b->Available(kT0), 4);
  b->Refund(100, all.terms, kT0);
  EXPECT_EQ(b->Available(kT0), 10);  // never more than it holds
  EXPECT_EQ(Drain(b->ref(), kT0), 10);
  // A reservation into debt, refunded, leaves the bucket as before it.
  const Decision r = b->Reserve(5, 10 * kSec, kT0);
  ASSERT_TRUE(r.granted());
  EXPECT_EQ(r.wait_ns, 5 * kSec);
  b->Refund(5, r.terms, kT0);
  EXPECT_EQ(b->TryAcquire(1, kT0).wait_ns, kSec);
  // Refunding into a bucket that is already full changes nothing.
  b->Refund(3, r.terms, kT0 + 60 * kSec);
  EXPECT_EQ(Drain(b->ref(), kT0 + 60 * kSec), 10);
}

TEST(TokenBucketTest, ReservationsAreServedInOrder) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(1), 1}, &clock);
  ASSERT_TRUE(b->TryAcquire(1, kT0).granted());
  for (int64_t i = 1; i <= 3; ++i) {
    const Decision d = b->Reserve(1, 10 * kSec, kT0);
    ASSERT_TRUE(d.granted());
    EXPECT_EQ(d.wait_ns, i * kSec);
  }
  const Decision late = b->Reserve(1, 3 * kSec + kSec / 2, kT0);
  EXPECT_EQ(late.outcome, Outcome::kRefused);
  EXPECT_EQ(late.wait_ns, 4 * kSec);
  EXPECT_EQ(b->Reserve(1, 4 * kSec, kT0).wait_ns, 4 * kSec);  // the refusal took nothing
}

TEST(TokenBucketTest, BlockingAcquireSleepsOnceUntilItsTurn) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(1), 2}, &clock);
  EXPECT_TRUE(b->Acquire(2, absl::ZeroDuration()).ok());
  EXPECT_EQ(clock.sleeps(), 0);
  EXPECT_TRUE(b->Acquire(1, absl::Seconds(5)).ok());
  EXPECT_EQ(clock.sleeps(), 1);
  EXPECT_EQ(clock.last_sleep_deadline(), kT0 + kSec);
  EXPECT_EQ(clock.Now(), kT0 + kSec);
}

TEST(TokenBucketTest, BlockingAcquireFailsAtOnceWhenTheWaitExceedsTheTimeout) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(1), 1}, &clock);
  ASSERT_TRUE(b->Acquire(1, absl::ZeroDuration()).ok());
  const absl::Status s = b->Acquire(1, absl::Milliseconds(500));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(s.message(), HasSubstr("available in 1s"));
  EXPECT_THAT(s.message(), HasSubstr("timeout of 500ms"));
  EXPECT_EQ(clock.sleeps(), 0);
  EXPECT_EQ(clock.Now(), kT0);
  EXPECT_TRUE(b->Acquire(1, absl::InfiniteDuration()).ok());
  EXPECT_EQ(clock.Now(), kT0 + kSec);
}

TEST(TokenBucketTest, StaleNowNeverRewindsTheBucket) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(1), 5}, &clock);
  const int64_t later = kT0 + 100 * kSec;
  ASSERT_EQ(Drain(b->ref(), later), 5);
  EXPECT_FALSE(b->TryAcquire(1, kT0).granted());
  EXPECT_EQ(b->Available(kT0), 0);
  EXPECT_TRUE(b->TryAcquire(1, later + kSec).granted());
  EXPECT_FALSE(b->TryAcquire(1, later).granted());
  EXPECT_FALSE(b->TryAcquire(1, std::numeric_limits<int64_t>::min()).granted());
  EXPECT_EQ(b->TryAcquire(1, later + kSec).wait_ns, kSec);
}

TEST(TokenBucketTest, ReconfigureKeepsTheFillRatio) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(100), 100}, &clock);
  ASSERT_TRUE(b->TryAcquire(60, kT0).granted());  // 40% left
  EXPECT_EQ(b->GetPressure(kT0), Pressure::kMedium);
  ASSERT_TRUE(b->Reconfigure({Rate::PerSecond(200), 200}, kT0).ok());
  EXPECT_EQ(b->Capacity(), 200);
  EXPECT_EQ(b->Available(kT0), 80);
  EXPECT_EQ(b->config().rate, Rate::PerSecond(200));
  // The new rate applies: 120 missing permits refill in 0.6 s at 200/s.
  EXPECT_EQ(b->Available(kT0 + 600 * kMs), 200);
  ASSERT_TRUE(b->Reconfigure({Rate::PerSecond(10), 10}, kT0 + 600 * kMs).ok());
  EXPECT_EQ(b->Available(kT0 + 600 * kMs), 10);
}

TEST(TokenBucketTest, ReconfigureScalesDebt) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(100), 100}, &clock);
  b->Debit(150, kT0);  // 50% of capacity owed
  ASSERT_TRUE(b->Reconfigure({Rate::PerSecond(1000), 200}, kT0).ok());
  // 300 permits of span ahead at 1 ms each; one more permit is 301 - 200 ms away.
  EXPECT_EQ(b->TryAcquire(1, kT0).wait_ns, 101 * kMs);
}

TEST(TokenBucketTest, ReconfigureRejectsBadConfigAndChangesNothing) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(10), 10}, &clock);
  ASSERT_TRUE(b->TryAcquire(4, kT0).granted());
  const absl::Status s = b->Reconfigure({Rate::PerSecond(10), 0}, kT0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("capacity"));
  EXPECT_EQ(b->Available(kT0), 6);
  EXPECT_EQ(b->config().capacity, 10u);
}

TEST(TokenBucketTest, PressureThresholdsFollowTheReferenceDesign) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerDay(1), 10}, &clock);
  const Pressure expected[] = {Pressure::kLow,    Pressure::kLow,    Pressure::kLow,
                               Pressure::kLow,    Pressure::kLow,    Pressure::kMedium,
                               Pressure::kMedium, Pressure::kMedium, Pressure::kHigh,
                               Pressure::kHigh,   Pressure::kHigh};
  for (int available = 10; available >= 0; --available) {
    EXPECT_EQ(b->GetPressure(kT0), expected[10 - available]) << available << " available";
    if (available > 0) {
      ASSERT_TRUE(b->TryAcquire(1, kT0).granted());
    }
  }
  EXPECT_STREQ(PressureName(Pressure::kLow), "low");
  EXPECT_STREQ(PressureName(Pressure::kMedium), "medium");
  EXPECT_STREQ(PressureName(Pressure::kHigh), "high");
}

TEST(TokenBucketTest, ExtremeRatesAreExact) {
  FakeClock clock(kT0);
  constexpr uint64_t k2to32 = uint64_t{1} << 32;
  auto fast = MakeBucket({Rate::PerSecond(1'000'000'000), k2to32}, &clock);
  EXPECT_TRUE(fast->TryAcquire(k2to32, kT0).granted());
  EXPECT_EQ(fast->TryAcquire(1, kT0).wait_ns, 1);
  EXPECT_EQ(fast->TryAcquire(k2to32, kT0).wait_ns, static_cast<int64_t>(k2to32));
  EXPECT_EQ(fast->TryAcquire(k2to32 + 1, kT0).outcome, Outcome::kNeverFits);

  auto slow = MakeBucket({Rate::PerDay(1), 1}, &clock);
  EXPECT_TRUE(slow->TryAcquire(1, kT0).granted());
  EXPECT_EQ(slow->TryAcquire(1, kT0).wait_ns, 86'400 * kSec);
  EXPECT_TRUE(slow->TryAcquire(1, kT0 + 86'400 * kSec).granted());

  auto daily = MakeBucket({Rate::PerDay(2'500'000), 2'500'000}, &clock);
  EXPECT_TRUE(daily->TryAcquire(2'500'000, kT0).granted());
  EXPECT_EQ(daily->Available(kT0 + 86'400 * kSec - 1), 2'499'999);
  EXPECT_EQ(daily->Available(kT0 + 86'400 * kSec), 2'500'000);
}

TEST(TokenBucketTest, IntervalsThatAreNoWholeNanosecondAreExact) {
  FakeClock clock(kT0);
  // 1 s / 7 is 142,857,142.857... ns: the cell counts in 1/7 ns, where it is
  // a whole 1e9 units, so seven permits come back exactly one second later.
  auto b = MakeBucket({Rate::PerSecond(7), 7}, &clock);
  ASSERT_EQ(Drain(b->ref(), kT0), 7);
  EXPECT_EQ(b->Available(kT0 + kSec - 1), 6);
  EXPECT_EQ(b->Available(kT0 + kSec), 7);
  // Saturated for a day, permit by permit, it still admits exactly 7 a
  // second: nothing accumulates. (With the interval rounded up by a
  // fraction of a unit, the 604,800th permit would come late.)
  int64_t now = kT0 + kSec;
  ASSERT_EQ(Drain(b->ref(), now), 7);
  int64_t admitted = 0;
  for (int64_t second = 1; second <= 86'400; ++second) {
    now = kT0 + kSec + second * kSec;
    admitted += Drain(b->ref(), now);
  }
  EXPECT_EQ(admitted, 7 * 86'400);
  EXPECT_EQ(b->TryAcquire(1, now).wait_ns, 142'857'143);  // 1/7 s, rounded up to a whole ns
}

TEST(TokenBucketTest, OverflowEdgesSaturate) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(1'000'000'000), 1000}, &clock);
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr uint64_t kAll = std::numeric_limits<uint64_t>::max();
  const Decision one = b->TryAcquire(1, kT0);
  ASSERT_TRUE(one.granted());
  // 2^64 - 1 permits of debt, about 585 years at 1e9/s: owed exactly.
  b->Debit(kAll, kT0);
  EXPECT_EQ(b->Available(kT0), 0);
  const Decision d = b->Reserve(1, kMax, kT0);
  EXPECT_EQ(d.outcome, Outcome::kRefused);
  EXPECT_GT(d.wait_ns, 0);
  b->Refund(kAll, one.terms, kT0);
  EXPECT_EQ(b->Available(kT0), 999);  // the first permit is still taken
  // A slow bucket debited past any clock's range saturates, and never wraps
  // into a full bucket.
  auto slow = MakeBucket({Rate::PerDay(1), 1}, &clock);
  for (int i = 0; i < 40'000; ++i) slow->Debit(kAll, kT0);
  EXPECT_EQ(slow->Available(kMax), 0);
  EXPECT_EQ(slow->TryAcquire(1, kMax).outcome, Outcome::kRefused);
  EXPECT_TRUE(BucketRef::Validate(*slow->ref().cell(), {Rate::PerDay(1), 1}).ok());
  slow->Refund(kAll, one.terms, kMax);
  EXPECT_EQ(slow->Available(kMax), 0);
  // The last clock reading there is still counts exactly.
  EXPECT_EQ(b->Available(kMax), 1000);
  EXPECT_TRUE(b->TryAcquire(1000, kMax).granted());
  EXPECT_FALSE(b->TryAcquire(1, kMax).granted());
}

TEST(TokenBucketTest, BucketsKeepCountingForCenturiesWithoutAReconfiguration) {
  constexpr int64_t kYear = 365 * 86'400 * kSec;
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerHour(1), 2}, &clock);
  for (const int64_t age : {3 * kYear, 6 * kYear, 100 * kYear, 290 * kYear}) {
    ASSERT_TRUE(b->TryAcquire(2, kT0 + age).granted()) << age;
    EXPECT_EQ(b->Available(kT0 + age), 0);
    EXPECT_EQ(b->TryAcquire(1, kT0 + age).wait_ns, 3600 * kSec);
    EXPECT_EQ(b->Available(kT0 + age + 3600 * kSec - 1), 0);
    EXPECT_EQ(b->Available(kT0 + age + 3600 * kSec), 1);
  }
}

TEST(TokenBucketTest, HoldUntilEmptiesTheBucketUntilThenAndRefillsAfter) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(1), 5}, &clock);
  b->HoldUntil(kT0 + 10 * kSec, kT0);
  EXPECT_EQ(b->Available(kT0), 0);
  EXPECT_EQ(b->TryAcquire(1, kT0).wait_ns, 10 * kSec);
  EXPECT_EQ(b->Available(kT0 + 10 * kSec - 1), 0);
  EXPECT_EQ(b->Available(kT0 + 10 * kSec), 1);
  EXPECT_EQ(b->Available(kT0 + 14 * kSec), 5);
  // A shorter hold than the current one changes nothing.
  b->HoldUntil(kT0 + 20 * kSec, kT0 + 14 * kSec);
  b->HoldUntil(kT0 + 15 * kSec, kT0 + 14 * kSec);
  EXPECT_EQ(b->TryAcquire(1, kT0 + 14 * kSec).wait_ns, 6 * kSec);
}

TEST(TokenBucketTest, ZeroPermitsAreAlwaysGrantedOnAHealthyBucket) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(1), 1}, &clock);
  EXPECT_TRUE(b->TryAcquire(0, kT0).granted());
  EXPECT_EQ(b->Available(kT0), 1);
}

TEST(BucketConfigTest, RejectsEachInvalidFieldByName) {
  EXPECT_THAT(ValidateBucketConfig({Rate::PerSecond(1), 0}).message(), HasSubstr("capacity"));
  EXPECT_THAT(ValidateBucketConfig({Rate::PerSecond(0), 1}).message(), HasSubstr("permits"));
  EXPECT_THAT(ValidateBucketConfig({Rate(1, absl::ZeroDuration()), 1}).message(),
              HasSubstr("period"));
  EXPECT_THAT(ValidateBucketConfig({Rate::PerSecond(17'000'000'000), 1}).message(),
              HasSubstr("faster"));
  // 1000 days of burst at 1/day is past the ~2.28-year limit; 800 days is not.
  EXPECT_THAT(ValidateBucketConfig({Rate::PerDay(1), 1000}).message(), HasSubstr("longest burst"));
  EXPECT_TRUE(ValidateBucketConfig({Rate::PerDay(1), 800}).ok());
  EXPECT_TRUE(ValidateBucketConfig({Rate::PerSecond(1'000'000'000), uint64_t{1} << 32}).ok());
  EXPECT_FALSE(TokenBucket::Create({Rate::PerSecond(1), 0}).ok());
}

TEST(BucketCellTest, WorksOnACellItDoesNotOwn) {
  BucketCell cell;
  FakeClock clock(kT0);
  ASSERT_TRUE(BucketRef::Init(&cell, {Rate::PerSecond(2), 4}, kT0).ok());
  const BucketRef a(&cell, Clock::Fake(&clock));
  const BucketRef b(&cell, Clock::Fake(&clock));
  EXPECT_TRUE(a.TryAcquire(3).granted());
  EXPECT_EQ(b.Available(), 1);
  EXPECT_TRUE(b.TryAcquire(1).granted());
  EXPECT_FALSE(a.TryAcquire(1).granted());
  EXPECT_FALSE(BucketRef::Init(&cell, {Rate::PerSecond(2), 0}, kT0).ok());
}

}  // namespace
}  // namespace sluice
