// What the bucket promises where other layers meet it: a refund returns the
// share of the capacity that was taken, whatever reconfigured the bucket in
// between; holds survive refunds and reconfigurations; a cell whose
// parameters are zero never grants and never crashes.
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <utility>

#include "gtest/gtest.h"
#include "sluice/token_bucket.h"

namespace sluice {
namespace {

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kT0 = 1'000 * kSec;

std::unique_ptr<TokenBucket> MakeBucket(BucketConfig config, FakeClock* clock) {
  auto bucket = TokenBucket::Create(config, Clock::Fake(clock));
  EXPECT_TRUE(bucket.ok()) << bucket.status();
  return *std::move(bucket);
}

double Fill(const BucketRef& b, int64_t now) {
  return static_cast<double>(b.Available(now)) / static_cast<double>(b.Capacity());
}

// The case header feedback produces: permits reserved at the configured rate,
// the rate lowered by what the provider's headers say, then the unused
// output pre-charge refunded. 80,000/min at 50% full, reserve 4,096, lower to
// 7,200/min, refund 3,896: the bucket ends near 49.8% full, as it would
// without the reconfiguration (it used to end at 99.0%).
TEST(RefundTest, ReturnsTheShareTakenAcrossAReconfiguration) {
  const BucketConfig high{Rate::PerMinute(80'000), 80'000};
  const BucketConfig low{Rate::PerMinute(7'200), 7'200};
  FakeClock clock(kT0);
  for (const bool reconfigure : {false, true}) {
    auto b = MakeBucket(high, &clock);
    ASSERT_TRUE(b->TryAcquire(40'000, kT0).granted());
    const Decision d = b->Reserve(4'096, 0, kT0);
    ASSERT_TRUE(d.granted());
    if (reconfigure) {
      ASSERT_TRUE(b->Reconfigure(low, kT0).ok());
    }
    b->Refund(3'896, d.terms, kT0);
    EXPECT_NEAR(Fill(b->ref(), kT0), 0.4975, 0.0005) << "reconfigured: " << reconfigure;
  }
}

// Whatever chain of reconfigurations comes between a take and its refund, the
// bucket never ends fuller than exact arithmetic says it would be had the
// permits never been taken: a reconfiguration keeps the fraction of the span
// that is owed, so a bucket that had `before` of `cap0` permits taken holds
// floor(cap * (cap0 - before) / cap0) of its final capacity `cap`.
TEST(RefundTest, NeverReturnsMoreThanWasTakenWhateverReconfiguredInBetween) {
  std::mt19937_64 rng(11);
  const BucketConfig configs[] = {
      {Rate::PerMinute(80'000), 80'000}, {Rate::PerMinute(7'200), 7'200},
      {Rate::PerSecond(7), 3},           {Rate::PerSecond(1'000'000), 50'000},
      {Rate::PerHour(10), 10},           {Rate::PerMinute(1'000), 100},
  };
  FakeClock clock(kT0);
  int lossless = 0;
  for (int round = 0; round < 5'000; ++round) {
    const BucketConfig* last = &configs[rng() % std::size(configs)];
    auto b = MakeBucket(*last, &clock);
    const uint64_t cap0 = last->capacity;
    const uint64_t before = rng() % cap0;
    if (before > 0) {
      ASSERT_TRUE(b->TryAcquire(before, kT0).granted());
    }
    const uint64_t n = 1 + rng() % cap0;
    const Decision d = b->Reserve(n, std::numeric_limits<int64_t>::max() / 4, kT0);
    ASSERT_TRUE(d.granted());
    for (int k = static_cast<int>(rng() % 4); k > 0; --k) {
      last = &configs[rng() % std::size(configs)];
      ASSERT_TRUE(b->Reconfigure(*last, kT0).ok());
    }
    b->Refund(n, d.terms, kT0);
    const int64_t exact = static_cast<int64_t>(static_cast<unsigned __int128>(last->capacity) *
                                               (cap0 - before) / cap0);
    EXPECT_LE(b->Available(kT0), exact) << "round " << round;
    // Rescaling rounds debt up, so a refund may come back a permit short.
    EXPECT_GE(b->Available(kT0) + 1, exact) << "round " << round;
    lossless += b->Available(kT0) == exact;
  }
  EXPECT_GT(lossless, 4'000);
}

// A quota 429's hold is followed by the failed request's settle, which
// refunds its unused pre-charge: the refund must not end the hold early.
TEST(HoldTest, ARefundDoesNotShortenAHold) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerMinute(60'000), 60'000}, &clock);
  const Decision d = b->Reserve(20'000, 0, kT0);
  ASSERT_TRUE(d.granted());
  b->HoldUntil(kT0 + 30 * kSec, kT0);
  b->Refund(20'000, d.terms, kT0 + kSec);
  EXPECT_EQ(b->Available(kT0 + kSec), 0);
  EXPECT_EQ(b->Available(kT0 + 30 * kSec - 1), 0);
  EXPECT_EQ(b->TryAcquire(1, kT0 + kSec).wait_ns, 29 * kSec);
  EXPECT_GT(b->Available(kT0 + 30 * kSec), 0);
  // Once the hold has passed, refunds work as before.
  const Decision later = b->Reserve(500, 0, kT0 + 40 * kSec);
  ASSERT_TRUE(later.granted());
  const int64_t after_take = b->Available(kT0 + 40 * kSec);
  b->Refund(500, later.terms, kT0 + 40 * kSec);
  EXPECT_EQ(b->Available(kT0 + 40 * kSec), after_take + 500);
}

// A reconfiguration keeps a hold's deadline, neither shortening nor
// stretching it, whichever way the span changes.
TEST(HoldTest, AReconfigurationKeepsAHoldsDeadline) {
  const BucketConfig small{Rate::PerMinute(1'000), 100};
  const BucketConfig large{Rate::PerMinute(60'000), 60'000};
  FakeClock clock(kT0);
  for (const auto& [from, to] : {std::pair{small, large}, std::pair{large, small}}) {
    auto b = MakeBucket(from, &clock);
    b->HoldUntil(kT0 + 20 * kSec, kT0);
    ASSERT_TRUE(b->Reconfigure(to, kT0 + kSec).ok());
    EXPECT_EQ(b->Available(kT0 + 20 * kSec - 1), 0);
    EXPECT_EQ(b->Available(kT0 + 20 * kSec), 1);
  }
}

// "No hold" must be before every clock reading, negative ones included (a
// cell whose "no hold" was 0 silently dropped every refund before time 0).
TEST(HoldTest, NoHoldMeansNoHoldAtNegativeTimes) {
  BucketCell cell;
  ASSERT_TRUE(BucketRef::Init(&cell, {Rate::PerSecond(1), 10}, -kSec).ok());
  const BucketRef b(&cell, Clock::Monotonic());
  const Decision d = b.TryAcquire(10, -kSec);
  ASSERT_TRUE(d.granted());
  b.Refund(10, d.terms, -kSec);
  EXPECT_EQ(b.Available(-kSec), 10);
}

TEST(HoldTest, AHoldThatHasEndedChangesNothing) {
  FakeClock clock(kT0);
  auto b = MakeBucket({Rate::PerSecond(1), 5}, &clock);
  b->HoldUntil(kT0, kT0);
  b->HoldUntil(kT0 - kSec, kT0);
  EXPECT_EQ(b->Available(kT0), 5);
}

// A cell that was never initialized, or that something wiped, has zero
// parameters: it must refuse everything and answer every read without
// dividing by zero.
TEST(ZeroCellTest, NeverGrantsAndNeverCrashes) {
  BucketCell cell;
  std::memset(static_cast<void*>(&cell), 0, sizeof(cell));
  const BucketRef b(&cell, Clock::Monotonic());
  for (const int64_t now : {int64_t{0}, kT0, std::numeric_limits<int64_t>::max()}) {
    for (const uint64_t n : {uint64_t{1}, uint64_t{1000}, std::numeric_limits<uint64_t>::max()}) {
      EXPECT_FALSE(b.TryAcquire(n, now).granted());
      EXPECT_FALSE(b.Reserve(n, std::numeric_limits<int64_t>::max(), now).granted());
    }
    EXPECT_EQ(b.Available(now), 0);
    EXPECT_EQ(b.Capacity(), 0);
    EXPECT_EQ(b.GetPressure(now), Pressure::kHigh);
    b.Refund(5, Terms{10}, now);
    b.Refund(5, Terms{}, now);
    b.Debit(5, now);
    (void)b.FullForNanos(now);
    EXPECT_FALSE(b.TryAcquire(1, now).granted());
  }
  EXPECT_FALSE(BucketRef::Validate(cell, {Rate::PerSecond(1), 1}).ok());
  BucketCell held;
  std::memset(static_cast<void*>(&held), 0, sizeof(held));
  const BucketRef h(&held, Clock::Monotonic());
  h.HoldUntil(kT0 + kSec, kT0);
  EXPECT_FALSE(h.TryAcquire(1, kT0 + 2 * kSec).granted());
  // Reconfiguring a zero cell makes it a working, full bucket.
  ASSERT_TRUE(BucketRef::Reconfigure(&cell, {Rate::PerSecond(1), 3}, kT0).ok());
  EXPECT_EQ(b.Available(kT0), 3);
}

}  // namespace
}  // namespace sluice
