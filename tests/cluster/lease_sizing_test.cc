// The lease sizing rule: a lease lasts the horizon at the host's demand, is
// capped by the host's share of the capacity, and the watermark is half; the
// horizon grows with the hosts alive; the backoff after a partial grant is
// half the horizon, capped by the time the bucket takes to fill.

#include "sluice/lease_sizing.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace sluice {
namespace {

TEST(LeaseSizingTest, LeaseLastsTheHorizonAtTheHostsDemand) {
  // 100,000/s for 20 ms: the minimum horizon, since 8 round trips of 100 us
  // are less.
  LeasePlan plan = PlanLease({.capacity = 600'000,
                              .demand_per_second = 100'000,
                              .round_trip = absl::Microseconds(100),
                              .hosts_alive = 4});
  EXPECT_EQ(plan.lease, 2'000u);
  EXPECT_EQ(plan.watermark, 1'000u);
  // A slow link stretches the horizon to 8 round trips.
  plan = PlanLease({.capacity = 600'000,
                    .demand_per_second = 100'000,
                    .round_trip = absl::Milliseconds(5),
                    .hosts_alive = 4});
  EXPECT_EQ(plan.lease, 4'000u);
}

TEST(LeaseSizingTest, CappedByTheHostsShareOfTheCapacity) {
  LeasePlan plan = PlanLease({.capacity = 1'000,
                              .demand_per_second = 1e6,
                              .round_trip = absl::Milliseconds(1),
                              .hosts_alive = 10});
  EXPECT_EQ(plan.lease, 50u);  // 1,000 / (2 * 10)
  EXPECT_EQ(plan.watermark, 25u);
  // More hosts than half the capacity: still one permit each.
  plan = PlanLease({.capacity = 10, .demand_per_second = 1e6, .hosts_alive = 1'000});
  EXPECT_EQ(plan.lease, 1u);
  EXPECT_EQ(plan.watermark, 1u);
}

TEST(LeaseSizingTest, IdleOrNonsenseDemandLeasesOnePermit) {
  for (double demand : {0.0, -5.0, std::nan(""), -std::numeric_limits<double>::infinity()}) {
    LeasePlan plan = PlanLease({.capacity = 1'000, .demand_per_second = demand});
    EXPECT_EQ(plan.lease, 1u) << demand;
    EXPECT_EQ(plan.watermark, 1u) << demand;
  }
  LeasePlan plan =
      PlanLease({.capacity = 1'000, .demand_per_second = std::numeric_limits<double>::infinity()});
  EXPECT_EQ(plan.lease, 500u);
  plan = PlanLease({.capacity = 1'000, .demand_per_second = 10, .hosts_alive = 0});
  EXPECT_EQ(plan.lease, 1u);  // ceil(10 * 0.02)
}

TEST(LeaseSizingTest, HorizonGrowsWithTheHostsAlive) {
  // 1,000 hosts at 120/s each: each lease lasts a second, so the fleet makes
  // about kFleetLeaseCallsPerSecond calls a second.
  LeasePlan plan = PlanLease({.capacity = 600'000,
                              .demand_per_second = 120,
                              .round_trip = absl::Milliseconds(1),
                              .hosts_alive = 1'000});
  EXPECT_EQ(plan.lease, 120u);
  EXPECT_EQ(plan.watermark, 60u);
  EXPECT_EQ(plan.backoff, absl::Milliseconds(500));
  // 100 hosts: 100 ms.
  plan = PlanLease({.capacity = 600'000,
                    .demand_per_second = 1'200,
                    .round_trip = absl::Milliseconds(1),
                    .hosts_alive = 100});
  EXPECT_EQ(plan.lease, 120u);
  // 10 hosts: the 20 ms minimum.
  plan = PlanLease({.capacity = 600'000,
                    .demand_per_second = 12'000,
                    .round_trip = absl::Milliseconds(1),
                    .hosts_alive = 10});
  EXPECT_EQ(plan.lease, 240u);
  EXPECT_EQ(plan.backoff, absl::Milliseconds(10));
}

TEST(LeaseSizingTest, BackoffIsHalfTheHorizonAtMostAQuarterOfTheFillTime) {
  LeaseInputs in = {.capacity = 600'000,
                    .demand_per_second = 100'000,
                    .round_trip = absl::Microseconds(100),
                    .hosts_alive = 4,
                    .rate_per_second = 100'000};
  EXPECT_EQ(PlanLease(in).backoff, absl::Milliseconds(10));  // 6 s / 4 is more
  in.capacity = 1'000;                                       // fills in 10 ms
  EXPECT_EQ(PlanLease(in).backoff, absl::Microseconds(2'500));
  for (double rate : {0.0, -1.0, std::nan("")}) {
    in.rate_per_second = rate;  // unknown: half the horizon
    EXPECT_EQ(PlanLease(in).backoff, absl::Milliseconds(10)) << rate;
  }
}

TEST(LeaseSizingTest, AbsurdRoundTripsAreClampedToTheLongestHorizon) {
  const LeasePlan plan = PlanLease({.capacity = 1'000,
                                    .demand_per_second = 1,
                                    .round_trip = absl::InfiniteDuration(),
                                    .hosts_alive = 1});
  EXPECT_EQ(plan.lease, 60u);  // a minute of 1/s
  EXPECT_EQ(plan.backoff, absl::Seconds(30));
}

}  // namespace
}  // namespace sluice
