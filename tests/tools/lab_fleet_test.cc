// The fleet lab: its judge on hand-checked traces, its Redis on calls worked
// out by hand, the properties its runs must show (no over-admission on any
// workload, crashes included; saturation used; a hot host among idle ones
// served; pools bounded by a lease; Redis calls bounded), that the judge
// fails a broken refiller, determinism, and `sluice lab --fleet`.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sluice/lease_sizing.h"
#include "tests/tools/cli_runner.h"
#include "tools/judge/exact_bucket.h"
#include "tools/lab/fleet.h"
#include "tools/lab/fleet_measure.h"
#include "tools/lab/fleet_redis.h"

namespace sluice::lab {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000'000'000;

// A small fleet config for tests: R = 100,000/s, C = one second of it, 10 s,
// the fleet offering 1.2x the rate (so it saturates: 1.2 M > C + R t = 1.1 M).
FleetConfig TestConfig(uint32_t hosts) {
  FleetConfig config;
  config.hosts = hosts;
  config.limit = Rate::PerSecond(100'000);
  config.capacity = 100'000;
  config.duration = absl::Seconds(10);
  return config;
}

FleetMetrics Simulate(const FleetConfig& config, FleetWorkload workload) {
  absl::StatusOr<FleetResult> r = SimulateFleet(config, workload);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->metrics : FleetMetrics{};
}

// The judge --------------------------------------------------------------------------

TEST(FleetJudgeTest, AllowedIsCapacityPlusRateTimesTimeRoundedDown) {
  FleetConfig config;
  config.limit = Rate(3, absl::Seconds(2));  // 1.5 per second
  config.capacity = 10;
  EXPECT_EQ(AllowedBy(config, 0), 10);
  EXPECT_EQ(AllowedBy(config, kSec), 11);  // 11.5
  EXPECT_EQ(AllowedBy(config, 2 * kSec), 13);
  EXPECT_EQ(AllowedBy(config, -kSec), 10);
}

TEST(FleetJudgeTest, CountsEveryWindowOverItsBound) {
  const std::vector<int64_t> times = {0, 1, 2, 10, 11, 12, 13};
  FleetWindow w = JudgeWindow(times, 5, 3);
  EXPECT_EQ(w.most, 4);  // 10 .. 13
  EXPECT_EQ(w.over, 1);  // only the window ending at 13 holds 4
  w = JudgeWindow(times, 5, 4);
  EXPECT_EQ(w.over, 0);
  w = JudgeWindow(times, 100, 5);
  EXPECT_EQ(w.most, 7);
  EXPECT_EQ(w.over, 2);  // windows ending at 12 (6) and 13 (7)
  EXPECT_EQ(JudgeWindow({}, 5, 0).most, 0);
}

TEST(FleetJudgeTest, ATracePastTheBucketIsOverAdmitted) {
  FleetConfig config;
  config.limit = Rate::PerSecond(10);
  config.capacity = 5;
  config.duration = absl::Seconds(2);
  FleetTrace trace;
  trace.duration_ns = 2 * kSec;
  trace.hosts = {{.offered = 20, .admitted = 16, .hot = true}};
  for (int i = 0; i < 16; ++i) trace.admitted_ns.push_back(i * 60 * kMs);  // 16 in 0.9 s
  trace.waits_ns.assign(16, 0);
  trace.granted = 16;
  FleetMetrics m = JudgeFleet(config, trace);
  EXPECT_EQ(m.allowed, 25);
  EXPECT_GT(m.over_admissions, 0);  // 16 > 5 + 10 * 0.9
  // One every 100 ms: at most C + R t by every time t, and 10 in a second.
  trace.admitted_ns.clear();
  for (int i = 0; i < 15; ++i) trace.admitted_ns.push_back(i * 100 * kMs);
  trace.waits_ns.assign(15, 0);
  trace.granted = 15;
  trace.hosts[0].admitted = 15;
  m = JudgeFleet(config, trace);
  EXPECT_EQ(m.over_admissions, 0);
  EXPECT_DOUBLE_EQ(m.utilization, 15.0 / 25);
  EXPECT_EQ(m.windows.size(), 3u);  // 10 ms, 1 s, the run
  EXPECT_EQ(m.windows[1].most, 10);
  EXPECT_EQ(m.windows[1].bound, 15);
}

TEST(FleetJudgeTest, AdmittingMoreThanWasGrantedIsCaught) {
  FleetConfig config;
  config.limit = Rate::PerSecond(1'000);
  config.capacity = 1'000;
  FleetTrace trace;
  trace.duration_ns = 10 * kSec;
  trace.admitted_ns = {kSec, 2 * kSec, 3 * kSec};
  trace.waits_ns = {0, 0, 0};
  trace.granted = 2;  // three admitted from two permits: a pool grew by itself
  EXPECT_EQ(JudgeFleet(config, trace).over_admissions, 1);
  trace.granted = 3;
  EXPECT_EQ(JudgeFleet(config, trace).over_admissions, 0);
}

// Redis ------------------------------------------------------------------------------

std::unique_ptr<ExactBucket> Bucket(uint64_t per_second, uint64_t capacity) {
  return *ExactBucket::Create({.permits = per_second, .period_ns = kSec, .capacity = capacity}, 0);
}

TEST(FleetRedisTest, GrantsWhatIsThereAndSaysWhenTheRestWillBe) {
  FleetRedis redis(Bucket(1'000, 100), /*cap_outstanding=*/false);
  FleetRedis::Grant g = redis.Lease(1, 60, 0, 0);
  EXPECT_EQ(g.granted, 60u);
  EXPECT_EQ(g.rest_at_ns, 0);
  EXPECT_EQ(g.hosts_alive, 1u);
  g = redis.Lease(2, 60, 0, 0);
  EXPECT_EQ(g.granted, 40u);
  EXPECT_EQ(g.rest_at_ns, 20 * kMs);  // 20 more at 1,000/s
  EXPECT_EQ(g.hosts_alive, 2u);
  // A return is added back, never above the capacity.
  redis.Return(1, 60, 0, 50 * kMs);  // 50 refilled + 60 > 100
  EXPECT_EQ(redis.Lease(1, 100, 0, 50 * kMs).granted, 100u);
}

TEST(FleetRedisTest, HostsAliveAreTheCallersOfTheLastMinute) {
  FleetRedis redis(Bucket(1'000, 100), false);
  redis.Lease(1, 1, 0, 0);
  redis.Lease(2, 1, 0, 30 * kSec);
  EXPECT_EQ(redis.Lease(2, 1, 0, 59 * kSec).hosts_alive, 2u);
  EXPECT_EQ(redis.Lease(2, 1, 0, 61 * kSec).hosts_alive, 1u);  // 1 last called at 0
  EXPECT_EQ(redis.Lease(1, 1, 0, 62 * kSec).hosts_alive, 2u);
}

TEST(FleetRedisTest, TheCapKeepsBucketAndPoolsBelowTheCapacity) {
  FleetRedis redis(Bucket(1'000, 100), /*cap_outstanding=*/true);
  EXPECT_EQ(redis.Lease(1, 30, 0, 0).granted, 30u);
  EXPECT_EQ(redis.Outstanding(), 30);
  // A second later the bucket would be full again; with 30 out it holds 69.
  EXPECT_EQ(redis.Lease(2, 100, 0, kSec).granted, 69u);
  EXPECT_EQ(redis.Outstanding(), 99);
  // Host 1 used 10 and returns 20: 69 out; the bucket refills up to 30.
  redis.Return(1, 20, 10, kSec);
  EXPECT_EQ(redis.Outstanding(), 69);
  EXPECT_EQ(redis.Lease(1, 100, 0, 2 * kSec).granted, 30u);
  // A caller silent for a minute is forgotten, and its permits out with it.
  redis.Lease(2, 1, 69, 61 * kSec);  // host 2 used its 69: keeps 0 out (+ what it gets)
  const int64_t out_of_2 = redis.Outstanding() - 30;
  redis.Lease(3, 1, 0, 63 * kSec);  // host 1 last called at 2 s: forgotten
  EXPECT_EQ(redis.Outstanding(), out_of_2 + 1);
}

// Runs -------------------------------------------------------------------------------

// Also: pools hold at most a lease each. pool_breaches counts grants that
// left a pool above lease + watermark + what its queue needed.
TEST(FleetLabTest, NoOverAdmissionOnAnyWorkloadCrashesIncluded) {
  for (uint32_t hosts : {4u, 100u}) {
    const FleetConfig config = TestConfig(hosts);
    const LeasePlan most =
        PlanLease({.capacity = config.capacity, .demand_per_second = 1e18, .hosts_alive = 1});
    for (FleetWorkload w : kAllFleetWorkloads) {
      const FleetMetrics m = Simulate(config, w);
      EXPECT_EQ(m.over_admissions, 0) << hosts << " " << FleetWorkloadName(w);
      EXPECT_EQ(m.pool_breaches, 0) << hosts << " " << FleetWorkloadName(w);
      EXPECT_LE(m.most_pooled, int64_t{hosts} * static_cast<int64_t>(most.lease) +
                                   static_cast<int64_t>(config.capacity));
      EXPECT_GT(m.admitted, 0);
      EXPECT_LE(m.admitted, m.allowed);
      if (w == FleetWorkload::kCrash) {
        EXPECT_GT(m.lost_in_crashes + m.lost_queued, 0);
      }
    }
  }
}

TEST(FleetLabTest, NoOverAdmissionWithASmallCapacityAndBurstyHosts) {
  // 10 ms of the rate as capacity: pools are large against it.
  FleetConfig config = TestConfig(10);
  config.capacity = 1'000;
  for (FleetWorkload w : kAllFleetWorkloads) {
    EXPECT_EQ(Simulate(config, w).over_admissions, 0) << FleetWorkloadName(w);
  }
}

TEST(FleetLabTest, SaturatingHostsUseTheLimit) {
  for (uint32_t hosts : {4u, 100u}) {
    const FleetMetrics m = Simulate(TestConfig(hosts), FleetWorkload::kSteady);
    EXPECT_GE(m.utilization, 0.97) << hosts;
    EXPECT_GE(m.fairness, 0.95) << hosts;
  }
}

TEST(FleetLabTest, AHotHostAmongThreeIdleGetsMostOfTheLimit) {
  const FleetMetrics m = Simulate(TestConfig(4), FleetWorkload::kSkewed);
  EXPECT_GE(m.hot_share, 0.9);
}

TEST(FleetLabTest, RedisCallsStayFewPerThousandAdmits) {
  // The goal at 100,000/s: at most 10 calls per 1,000 admits.
  FleetConfig config = TestConfig(4);
  config.load = 0.8;
  EXPECT_LE(Simulate(config, FleetWorkload::kSteady).commands_per_1000, 10);
  // 1,000 hosts: the horizon grows with the hosts, so calls stay bounded
  // (with six seconds of the rate as capacity, so that the hosts' shares of
  // it do not cap their leases).
  config.hosts = 1'000;
  config.load = 1.2;
  config.capacity = 600'000;
  EXPECT_LE(Simulate(config, FleetWorkload::kSteady).commands_per_1000, 20);
}

TEST(FleetLabTest, BelowTheLimitRequestsBarelyWait) {
  FleetConfig config = TestConfig(10);
  config.load = 0.8;
  const FleetMetrics m = Simulate(config, FleetWorkload::kSteady);
  EXPECT_EQ(m.gave_up, 0);
  EXPECT_LE(m.wait_p99_ns, 2 * absl::ToInt64Nanoseconds(config.round_trip));
}

TEST(FleetLabTest, TheJudgeFailsAPoolThatRefillsByItself) {
  FleetConfig config = TestConfig(4);
  config.fault = FleetFault::kPoolRefillsItself;
  const FleetMetrics m = Simulate(config, FleetWorkload::kSteady);
  EXPECT_GT(m.over_admissions, 0);
  EXPECT_GT(m.pool_breaches, 0);
  EXPECT_GT(m.admitted, m.allowed);
}

TEST(FleetLabTest, WithoutTheCapPoolsOutlivingARefillAdmitPastTheWindowBound) {
  // The plain protocol: a host's pool survives while the bucket fills again
  // behind it, and a burst then takes both. The judge sees it.
  FleetConfig config = TestConfig(10);
  config.capacity = 1'000;
  config.duration = absl::Seconds(20);
  config.cap_outstanding = false;
  const FleetMetrics m = Simulate(config, FleetWorkload::kBursty);
  EXPECT_GT(m.over_admissions, 0);
  config.cap_outstanding = true;
  EXPECT_EQ(Simulate(config, FleetWorkload::kBursty).over_admissions, 0);
}

TEST(FleetLabTest, SameSeedSameNumbers) {
  const FleetConfig config = TestConfig(20);
  for (FleetWorkload w : {FleetWorkload::kBursty, FleetWorkload::kCrash}) {
    absl::StatusOr<FleetResult> a = SimulateFleet(config, w);
    absl::StatusOr<FleetResult> b = SimulateFleet(config, w);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(FleetToJson(config, {*a}).dump(), FleetToJson(config, {*b}).dump());
    FleetConfig other = config;
    other.seed = 2;
    absl::StatusOr<FleetResult> c = SimulateFleet(other, w);
    ASSERT_TRUE(c.ok());
    EXPECT_NE(a->metrics.admitted, c->metrics.admitted);
  }
}

TEST(FleetLabTest, RejectsABadConfig) {
  FleetConfig config = TestConfig(0);
  EXPECT_THAT(ValidateFleetConfig(config).message(), HasSubstr("hosts"));
  config = TestConfig(4);
  config.load = -1;
  EXPECT_THAT(ValidateFleetConfig(config).message(), HasSubstr("load"));
  config = TestConfig(4);
  config.duration = absl::Hours(20);
  EXPECT_THAT(ValidateFleetConfig(config).message(), HasSubstr("100 million"));
  EXPECT_FALSE(ParseFleetWorkload("spiky").ok());
  EXPECT_EQ(*ParseFleetWorkload("crash"), FleetWorkload::kCrash);
}

// The CLI ----------------------------------------------------------------------------

TEST(FleetCliTest, PrintsJsonForEachFleetAndWorkload) {
  const CliResult r = RunCli({"lab", "--fleet", "--fleet_hosts=3,7",
                              "--fleet_workloads=steady,crash", "--lab_duration=5s", "--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  ASSERT_EQ(doc["results"].size(), 4u);
  EXPECT_EQ(doc["results"][1]["hosts"], 3);
  EXPECT_EQ(doc["results"][1]["workload"], "crash");
  EXPECT_EQ(doc["results"][2]["hosts"], 7);
  EXPECT_EQ(doc["config"]["capacity"], 600'000);  // six seconds of the default 100,000/s
  for (const auto& result : doc["results"]) EXPECT_EQ(result["over_admissions"], 0);
}

TEST(FleetCliTest, PrintsTheTable) {
  const CliResult r = RunCli(
      {"lab", "--fleet", "--fleet_hosts=5", "--fleet_workloads=skewed", "--lab_duration=3s"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("hot share"));
  EXPECT_THAT(r.out, HasSubstr("skewed"));
}

TEST(FleetCliTest, RejectsBadFlags) {
  CliResult r = RunCli({"lab", "--fleet", "--fleet_hosts=0"});
  EXPECT_EQ(r.status, 64);
  EXPECT_THAT(r.err, HasSubstr("--fleet-hosts"));
  r = RunCli({"lab", "--fleet", "--fleet_workloads=spiky"});
  EXPECT_EQ(r.status, 64);
  r = RunCli({"lab", "--fleet", "steady"});
  EXPECT_EQ(r.status, 64);
}

}  // namespace
}  // namespace sluice::lab
