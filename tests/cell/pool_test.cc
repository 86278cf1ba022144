// A host's pool of leased permits (a BucketCell whose time stands still):
// exact counts on explicit time, every BucketRef operation on a pool, and
// threads admitting, crediting, draining and reconfiguring at once, with the
// permits accounted for exactly (run under ThreadSanitizer in CI).
#include "sluice/pool.h"

#include <atomic>
#include <cstdint>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/token_bucket.h"
#include "src/cell/bucket_params.h"
#include "tests/cell/stress_duration.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kT0 = 1'000 * kSec;
constexpr int64_t kTenYears = int64_t{10} * 365 * 24 * 3600 * kSec;
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr uint64_t kAll = std::numeric_limits<uint64_t>::max();

// Clock readings a pool must not tell apart: negative, zero, now, far ahead.
const int64_t kNows[] = {kMin, -kSec, -1, 0, 1, kT0, kT0 + kTenYears, kMax};

// A fleet bucket of 1,000 permits/s with a burst of 100: 1 ms per permit.
const BucketConfig kFleet{Rate::PerSecond(1000), 100};

// Takes single permits at `now` until refused; returns how many were granted.
int64_t TakeAll(const BucketRef& b, int64_t now) {
  int64_t n = 0;
  while (b.TryAcquire(1, now).granted()) ++n;
  return n;
}

// A new, empty pool of the fleet bucket kFleet.
class PoolTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(PoolRef::Init(&cell, kFleet).ok()); }

  BucketCell cell;
  const PoolRef pool{&cell};
};

TEST(PoolCellTest, NoClockReadingRefillsOrDrainsAPool) {
  BucketCell cell;
  ASSERT_TRUE(PoolRef::Init(&cell, kFleet).ok());
  const PoolRef pool(&cell);
  ASSERT_EQ(pool.Credit(7), 7u);
  for (int64_t now : kNows) {
    EXPECT_EQ(pool.ref().Available(now), 7) << now;
    EXPECT_EQ(pool.ref().FullForNanos(now), 0) << now;
  }
  ASSERT_TRUE(pool.ref().TryAcquire(7, kNows[0]).granted());
  for (int64_t now : kNows) EXPECT_FALSE(pool.ref().TryAcquire(1, now).granted()) << now;
}

TEST_F(PoolTest, NewPoolIsEmptyAtEveryNow) {
  EXPECT_TRUE(PoolRef::IsPool(cell));
  EXPECT_EQ(pool.Available(), 0);
  EXPECT_EQ(pool.Capacity(), 100);
  EXPECT_EQ(pool.Debt(), 0);
  for (int64_t now : kNows) {
    EXPECT_EQ(pool.ref().Available(now), 0) << now;
    const Decision d = pool.ref().TryAcquire(1, now);
    EXPECT_EQ(d.outcome, Outcome::kRefused) << now;
    EXPECT_EQ(d.wait_ns, 1 * kMs) << now;  // the shortfall at the fleet's rate
    EXPECT_EQ(pool.ref().GetPressure(now), Pressure::kHigh);
    EXPECT_EQ(pool.ref().FullForNanos(now), 0);
  }
  // A pool validates against the fleet bucket's config like a bucket does.
  EXPECT_TRUE(BucketRef::Validate(cell, kFleet).ok());
  EXPECT_TRUE(BucketRef::ValidateParamSlot(cell, BucketRef::ParamSlot(cell), kFleet).ok());
}

TEST(PoolCellTest, BucketIsNotAPool) {
  BucketCell cell;
  ASSERT_TRUE(BucketRef::Init(&cell, kFleet, kT0).ok());
  EXPECT_FALSE(PoolRef::IsPool(cell));
  const absl::StatusOr<uint64_t> r = PoolRef::Reconfigure(&cell, kFleet);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(PoolTest, InitRefusesABadConfigAndLeavesTheCell) {
  ASSERT_EQ(pool.Credit(7), 7u);
  const absl::Status s = PoolRef::Init(&cell, {Rate::PerSecond(1000), 0});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("capacity"));
  EXPECT_EQ(pool.Available(), 7);
}

TEST_F(PoolTest, AdmitsExactlyWhatWasCreditedWhateverTheClockSays) {
  EXPECT_EQ(pool.Credit(5), 5u);
  // Time running forward, backward and to the ends refills nothing.
  int64_t admitted = 0;
  for (int64_t now : kNows) admitted += TakeAll(pool.ref(), now);
  EXPECT_EQ(admitted, 5);
  for (int64_t now : kNows) EXPECT_EQ(pool.ref().Available(now), 0) << now;

  EXPECT_EQ(pool.Credit(8), 8u);
  EXPECT_TRUE(pool.ref().TryAcquire(3, kMin).granted());
  EXPECT_TRUE(pool.ref().TryAcquire(3, kT0 + kTenYears).granted());
  const Decision short_by_one = pool.ref().TryAcquire(3, kMax);
  EXPECT_EQ(short_by_one.outcome, Outcome::kRefused);
  EXPECT_EQ(short_by_one.wait_ns, 1 * kMs);
  EXPECT_TRUE(pool.ref().TryAcquire(2, -1).granted());
  EXPECT_EQ(pool.Available(), 0);
}

TEST_F(PoolTest, MoreThanTheFleetCapacityNeverFits) {
  ASSERT_EQ(pool.Credit(kAll), 100u);
  EXPECT_EQ(pool.ref().TryAcquire(101, kT0).outcome, Outcome::kNeverFits);
  EXPECT_EQ(pool.ref().Reserve(101, kMax, kT0).outcome, Outcome::kNeverFits);
  EXPECT_EQ(pool.Available(), 100);
}

TEST_F(PoolTest, CreditStopsAtTheCapacity) {
  EXPECT_EQ(pool.Credit(0), 0u);
  EXPECT_EQ(pool.Credit(70), 70u);
  EXPECT_EQ(pool.Credit(50), 30u);  // the caller gives the other 20 back
  EXPECT_EQ(pool.Available(), 100);
  EXPECT_EQ(pool.Credit(1), 0u);
  EXPECT_EQ(pool.ref().GetPressure(kT0), Pressure::kLow);
  EXPECT_EQ(pool.ref().FullForNanos(kT0 + kTenYears), 0);  // never reclaimed as idle
  EXPECT_TRUE(BucketRef::Validate(cell, kFleet).ok());
}

TEST_F(PoolTest, DrainTakesWhatIsHeldAndNeverGoesIntoDebt) {
  EXPECT_EQ(pool.Drain(5), 0u);
  ASSERT_EQ(pool.Credit(10), 10u);
  EXPECT_EQ(pool.Drain(4), 4u);
  EXPECT_EQ(pool.Available(), 6);
  EXPECT_EQ(pool.Drain(kAll), 6u);
  EXPECT_EQ(pool.Available(), 0);
  EXPECT_EQ(pool.Debt(), 0);
  EXPECT_EQ(pool.Drain(1), 0u);
  EXPECT_TRUE(BucketRef::Validate(cell, kFleet).ok());
}

TEST_F(PoolTest, CreditPaysDebtFirst) {
  ASSERT_EQ(pool.Credit(3), 3u);
  pool.ref().Debit(5, kT0);  // the estimate was 2 short of the usage
  EXPECT_EQ(pool.Available(), 0);
  EXPECT_EQ(pool.Debt(), 2);
  EXPECT_EQ(pool.Drain(kAll), 0u);
  EXPECT_EQ(pool.Credit(1), 1u);
  EXPECT_EQ(pool.Debt(), 1);
  EXPECT_EQ(pool.Available(), 0);
  EXPECT_FALSE(pool.ref().TryAcquire(1, kT0).granted());
  // Room for the debt and the whole capacity.
  EXPECT_EQ(pool.Credit(kAll), 101u);
  EXPECT_EQ(pool.Debt(), 0);
  EXPECT_EQ(pool.Available(), 100);
}

TEST_F(PoolTest, DebitOfEveryPermitIsOwedInFullAndCreditPaysIt) {
  pool.ref().Debit(kAll, kT0);
  // 2^64 - 1 permits owed: reported saturated, owed exactly.
  EXPECT_EQ(pool.Debt(), std::numeric_limits<int64_t>::max());
  EXPECT_TRUE(BucketRef::Validate(cell, kFleet).ok());
  EXPECT_EQ(pool.Credit(kAll - 1), kAll - 1);
  EXPECT_EQ(pool.Debt(), 1);
  EXPECT_EQ(pool.Credit(kAll), 101u);
  EXPECT_EQ(pool.Debt(), 0);
  EXPECT_EQ(pool.Available(), 100);
}

TEST_F(PoolTest, RefundReturnsExactlyWhatWasTakenUpToTheCapacity) {
  ASSERT_EQ(pool.Credit(10), 10u);
  const Decision d = pool.ref().TryAcquire(4, kT0);
  ASSERT_TRUE(d.granted());
  pool.ref().Refund(3, d.terms, kT0 + kTenYears);
  EXPECT_EQ(pool.Available(), 9);
  pool.ref().Refund(1, d.terms, kMin);
  EXPECT_EQ(pool.Available(), 10);

  // Filled up while the permits were out, the pool takes back only what fits.
  const Decision again = pool.ref().TryAcquire(4, kT0);
  ASSERT_TRUE(again.granted());
  ASSERT_EQ(pool.Credit(kAll), 94u);
  pool.ref().Refund(4, again.terms, kT0);
  EXPECT_EQ(pool.Available(), 100);
  EXPECT_TRUE(BucketRef::Validate(cell, kFleet).ok());
}

TEST_F(PoolTest, RefundCountsPermitsAcrossAReconfiguration) {
  ASSERT_EQ(pool.Credit(50), 50u);
  const Decision d = pool.ref().TryAcquire(10, kT0);
  ASSERT_TRUE(d.granted());
  // Twice the capacity: a bucket would give back twice the permits (the same
  // share); a pool gives back the 10 it lent, no more.
  ASSERT_TRUE(PoolRef::Reconfigure(&cell, {Rate::PerSecond(2000), 200}).ok());
  EXPECT_EQ(pool.Available(), 40);
  pool.ref().Refund(10, d.terms, kT0);
  EXPECT_EQ(pool.Available(), 50);
  // Half the capacity: still the 10 permits, not half of them.
  const Decision e = pool.ref().TryAcquire(10, kT0);
  ASSERT_TRUE(e.granted());
  ASSERT_TRUE(PoolRef::Reconfigure(&cell, {Rate::PerSecond(1000), 100}).ok());
  pool.ref().Refund(10, e.terms, kT0);
  EXPECT_EQ(pool.Available(), 50);
}

TEST_F(PoolTest, ReserveWithAWaitGoesIntoDebt) {
  // Callers pass max_wait = 0 for pools; this pins what a wait does anyway.
  ASSERT_EQ(pool.Credit(3), 3u);
  const Decision refused = pool.ref().Reserve(5, 0, kT0);
  EXPECT_EQ(refused.outcome, Outcome::kRefused);
  EXPECT_EQ(refused.wait_ns, 2 * kMs);
  EXPECT_EQ(pool.Available(), 3);
  const Decision d = pool.ref().Reserve(5, kSec, kT0);
  ASSERT_TRUE(d.granted());
  EXPECT_EQ(d.wait_ns, 2 * kMs);  // no time brings the permits: the pool owes them
  EXPECT_EQ(pool.Debt(), 2);
  // Waiting it out changes nothing; a credit pays the debt.
  EXPECT_EQ(pool.ref().Available(kT0 + d.wait_ns + kTenYears), 0);
  EXPECT_EQ(pool.Debt(), 2);
  EXPECT_EQ(pool.Credit(3), 3u);
  EXPECT_EQ(pool.Available(), 1);
}

TEST_F(PoolTest, AcquireOnAPoolNeverWaits) {
  FakeClock clock(kT0);
  const BucketRef ref(&cell, Clock::Fake(&clock));
  ASSERT_EQ(pool.Credit(2), 2u);
  EXPECT_EQ(ref.Acquire(3, absl::Seconds(10)).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ref.Acquire(3, absl::InfiniteDuration()).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(pool.Debt(), 0);
  EXPECT_EQ(pool.Available(), 2);
  EXPECT_TRUE(ref.Acquire(2, absl::Seconds(10)).ok());
  EXPECT_EQ(ref.Acquire(101, absl::Seconds(10)).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(clock.sleeps(), 0);
}

TEST_F(PoolTest, HoldUntilLeavesAPoolAlone) {
  ASSERT_EQ(pool.Credit(10), 10u);
  pool.ref().HoldUntil(kT0 + 3600 * kSec, kT0);
  EXPECT_EQ(pool.Available(), 10);
  // Nor does a refund or a reconfiguration later see a hold.
  const Decision d = pool.ref().TryAcquire(10, kT0);
  ASSERT_TRUE(d.granted());
  pool.ref().Refund(10, d.terms, kT0);
  EXPECT_EQ(pool.Available(), 10);
  ASSERT_TRUE(BucketRef::Reconfigure(&cell, kFleet, kT0).ok());
  EXPECT_EQ(pool.Available(), 10);
}

TEST_F(PoolTest, ReconfigureKeepsTheCountAndReportsWhatNoLongerFits) {
  ASSERT_EQ(pool.Credit(40), 40u);
  const int slot = BucketRef::ParamSlot(cell);
  // Ten times the capacity: a bucket would stay 40% full (400); a pool keeps 40.
  const BucketConfig larger{Rate::PerSecond(10'000), 1000};
  ASSERT_TRUE(BucketRef::Reconfigure(&cell, larger, kT0).ok());
  EXPECT_TRUE(PoolRef::IsPool(cell));
  EXPECT_NE(BucketRef::ParamSlot(cell), slot);
  EXPECT_TRUE(BucketRef::Validate(cell, larger).ok());
  EXPECT_EQ(pool.Available(), 40);
  EXPECT_EQ(pool.Capacity(), 1000);
  for (int64_t now : kNows) EXPECT_EQ(pool.ref().Available(now), 40);

  // Down to 30: ten permits no longer fit and go back to the caller.
  const BucketConfig smaller{Rate::PerMinute(60), 30};
  absl::StatusOr<uint64_t> excess = PoolRef::Reconfigure(&cell, smaller);
  ASSERT_TRUE(excess.ok()) << excess.status();
  EXPECT_EQ(*excess, 10u);
  EXPECT_EQ(pool.Available(), 30);
  EXPECT_TRUE(PoolRef::IsPool(cell));
  EXPECT_TRUE(BucketRef::Validate(cell, smaller).ok());

  // Debt is a count too.
  pool.ref().Debit(35, kT0);
  ASSERT_EQ(pool.Debt(), 5);
  excess = PoolRef::Reconfigure(&cell, kFleet);
  ASSERT_TRUE(excess.ok());
  EXPECT_EQ(*excess, 0u);
  EXPECT_EQ(pool.Debt(), 5);
  EXPECT_EQ(pool.Credit(kAll), 105u);

  // A bad config changes nothing.
  const int before = BucketRef::ParamSlot(cell);
  EXPECT_EQ(PoolRef::Reconfigure(&cell, {Rate::PerSecond(1000), 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BucketRef::ParamSlot(cell), before);
  EXPECT_EQ(pool.Available(), 100);
}

// Threads admitting (and refunding, and now and then debiting) while one
// thread credits in small leases, another drains, and another reconfigures
// between two configurations, all at real clock readings: whatever the
// interleaving, every permit credited is admitted, drained, reported as
// excess or still held, exactly, and admits never exceed the credits.
TEST(PoolStressTest, EveryCreditedPermitIsAccountedForExactly) {
  constexpr int kAdmitters = 3;
  const int64_t run_ns = StressNanos(300'000'000);
  // Capacities far above the watermark, so no credit or refund is clamped.
  const BucketConfig a{Rate::PerSecond(1'000'000), 1'000'000};
  const BucketConfig b{Rate::PerSecond(3'000'000), 2'000'000};
  BucketCell cell;
  ASSERT_TRUE(PoolRef::Init(&cell, a).ok());
  const PoolRef pool(&cell);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> credited{0}, drained{0}, excess{0}, kept{0}, debited{0};
  std::thread crediter([&] {
    std::mt19937_64 rng(1);
    while (!stop.load(std::memory_order_relaxed)) {
      if (pool.Available() < 500) credited.fetch_add(pool.Credit(1 + rng() % 8));
    }
  });
  std::thread drainer([&] {
    std::mt19937_64 rng(2);
    while (!stop.load(std::memory_order_relaxed)) drained.fetch_add(pool.Drain(rng() % 3));
  });
  std::thread reconfigurer([&] {
    for (bool big = true; !stop.load(std::memory_order_relaxed); big = !big) {
      absl::StatusOr<uint64_t> r = PoolRef::Reconfigure(&cell, big ? b : a);
      ASSERT_TRUE(r.ok()) << r.status();
      excess.fetch_add(static_cast<int64_t>(*r));
    }
  });
  std::vector<std::thread> admitters;
  const int64_t deadline = Clock::MonotonicNanos() + run_ns;
  for (int t = 0; t < kAdmitters; ++t) {
    admitters.emplace_back([&, t] {
      std::mt19937_64 rng(t + 11);
      int64_t mine = 0, forced = 0;
      for (int64_t now = Clock::MonotonicNanos(); now < deadline; now = Clock::MonotonicNanos()) {
        const uint64_t n = 1 + rng() % 4;
        const Decision d = pool.ref().Reserve(n, 0, now);
        if (!d.granted()) continue;
        const uint64_t back = rng() % 3 == 0 ? rng() % (n + 1) : 0;
        pool.ref().Refund(back, d.terms, now);
        mine += static_cast<int64_t>(n - back);
        if (rng() % 1000 == 0) {
          pool.ref().Debit(2, now);
          forced += 2;
        }
      }
      kept.fetch_add(mine);
      debited.fetch_add(forced);
    });
  }
  for (std::thread& t : admitters) t.join();
  stop.store(true);
  crediter.join();
  drainer.join();
  reconfigurer.join();
  const int64_t held = pool.Available() - pool.Debt();
  EXPECT_GT(credited.load(), 0);
  EXPECT_GT(kept.load(), 0);
  EXPECT_EQ(excess.load(), 0);
  EXPECT_EQ(kept.load() + debited.load() + drained.load() + excess.load() + held, credited.load());
  // Admits only ever took what had been credited; only a Debit owes.
  EXPECT_LE(kept.load() + drained.load(), credited.load());
  EXPECT_LE(pool.Debt(), debited.load());
}

}  // namespace
}  // namespace sluice
