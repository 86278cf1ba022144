// The algorithm lab: its metrics on hand-checked traces, its workloads'
// determinism, the simulation on tiny cases worked out by hand, the
// properties its runs must show, and `sluice lab` as a user runs it.
#include "tools/lab/lab.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tools/cli_runner.h"

namespace sluice::lab {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kSec = 1'000'000'000;

// Metrics on hand-checked traces ------------------------------------------------

TEST(LabMetricsTest, MaxInWindowCountsHalfOpenWindows) {
  const std::vector<int64_t> times = {0, 10, 20, 30, 100};
  EXPECT_EQ(MaxInWindow(times, 25), 3);  // 0, 10, 20
  EXPECT_EQ(MaxInWindow(times, 31), 4);  // 0 .. 30
  EXPECT_EQ(MaxInWindow(times, 30), 3);  // [0, 30) leaves 30 out
  EXPECT_EQ(MaxInWindow(std::vector<int64_t>{5, 5, 5}, 1), 3);
  EXPECT_EQ(MaxInWindow({}, 10), 0);
}

TEST(LabMetricsTest, PercentilesAreNearestRank) {
  const std::vector<int64_t> sorted = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(Percentile(sorted, 0.5), 5);
  EXPECT_EQ(Percentile(sorted, 0.9), 9);
  EXPECT_EQ(Percentile(sorted, 0.91), 10);
  EXPECT_EQ(Percentile(sorted, 1.0), 10);
  EXPECT_EQ(Percentile(std::vector<int64_t>{7}, 0.01), 7);
  EXPECT_EQ(Percentile({}, 0.5), 0);
}

TEST(LabMetricsTest, JainIndex) {
  EXPECT_DOUBLE_EQ(JainIndex(std::vector<double>{1, 1, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(JainIndex(std::vector<double>{1, 0, 0, 0}), 0.25);
  EXPECT_DOUBLE_EQ(JainIndex(std::vector<double>{1, 0.5}), 0.9);  // 1.5^2 / (2 * 1.25)
  EXPECT_DOUBLE_EQ(JainIndex(std::vector<double>{0, 0}), 1.0);
  EXPECT_DOUBLE_EQ(JainIndex({}), 1.0);
}

TEST(LabMetricsTest, MeasureATinyTrace) {
  LabConfig config;
  config.limit = Rate(3, absl::Seconds(10));
  config.duration = absl::Seconds(20);
  config.clients = 2;
  Trace trace;
  trace.offered = 5;
  trace.offered_per_client = {3, 2};
  trace.admitted = {{0, 0, 0, false},
                    {1 * kSec, 2 * kSec, 1, false},
                    {2 * kSec, 2 * kSec, 0, true},
                    {9 * kSec, 11 * kSec, 0, false}};
  const Metrics m = Measure(trace, config);
  EXPECT_EQ(m.offered, 5);
  EXPECT_EQ(m.admitted, 4);
  EXPECT_EQ(m.unserved, 1);
  EXPECT_EQ(m.provider_429s, 1);
  EXPECT_EQ(m.max_in_window, 3);  // 0, 2 s, 2 s in [0, 10 s)
  EXPECT_DOUBLE_EQ(m.overshoot, 1.0);
  EXPECT_DOUBLE_EQ(m.utilization, 4.0 / 6.0);  // the limit allows 3 per 10 s for 20 s
  // Waits 0, 1 s, 0, 2 s: sorted 0, 0, 1 s, 2 s.
  EXPECT_EQ(m.wait_p50_ns, 0);
  EXPECT_EQ(m.wait_p90_ns, 2 * kSec);
  EXPECT_EQ(m.wait_p99_ns, 2 * kSec);
  EXPECT_EQ(m.wait_max_ns, 2 * kSec);
  EXPECT_DOUBLE_EQ(m.fairness, 0.9);  // shares 3/3 and 1/2
}

TEST(LabMetricsTest, TheProviderIsAContinuousTokenBucket) {
  ProviderModel provider(Rate(2, absl::Seconds(1)));
  EXPECT_TRUE(provider.Accept(0));
  EXPECT_TRUE(provider.Accept(0));
  EXPECT_FALSE(provider.Accept(0));
  EXPECT_TRUE(provider.Accept(kSec / 2));
  EXPECT_FALSE(provider.Accept(kSec / 2));
}

// The simulation on tiny cases ------------------------------------------------------

struct Tiny {
  LabConfig config;
  std::vector<Request> requests;
};

Tiny FourRequests() {
  Tiny t;
  t.config.limit = Rate(2, absl::Seconds(10));
  t.config.duration = absl::Seconds(30);
  t.config.clients = 4;
  t.requests = {{0, 0, kSec}, {1 * kSec, 1, kSec}, {2 * kSec, 2, kSec}, {3 * kSec, 3, kSec}};
  return t;
}

std::vector<int64_t> AdmittedAt(const Trace& trace) {
  std::vector<int64_t> times;
  for (const Admitted& a : trace.admitted) times.push_back(a.admitted_ns);
  return times;
}

TEST(LabSimulateTest, WaitersAreAdmittedWhenTheFixedWindowTurns) {
  Tiny t = FourRequests();
  auto limiter = Limiter::Create(LabLimiterConfig(Algorithm::kFixedWindow, t.config), 0);
  ASSERT_TRUE(limiter.ok());
  const Trace trace = Simulate(**limiter, t.requests, t.config);
  EXPECT_THAT(AdmittedAt(trace), ElementsAre(0, 1 * kSec, 10 * kSec, 10 * kSec));
  for (const Admitted& a : trace.admitted) EXPECT_FALSE(a.rate_limited);
}

TEST(LabSimulateTest, ARequestWaitingPastMaxWaitGivesUp) {
  Tiny t = FourRequests();
  t.config.max_wait = absl::Seconds(7);  // the one from 2 s would wait 8 s
  auto limiter = Limiter::Create(LabLimiterConfig(Algorithm::kFixedWindow, t.config), 0);
  ASSERT_TRUE(limiter.ok());
  const Trace trace = Simulate(**limiter, t.requests, t.config);
  EXPECT_THAT(AdmittedAt(trace), ElementsAre(0, 1 * kSec, 10 * kSec));
  EXPECT_EQ(trace.admitted.back().client, 3u);
  EXPECT_EQ(Measure(trace, t.config).unserved, 1);
}

TEST(LabSimulateTest, ThePacerSpacesAQueueEvenly) {
  Tiny t = FourRequests();
  for (Request& r : t.requests) r.arrival_ns = 0;
  auto limiter = Limiter::Create(LabLimiterConfig(Algorithm::kPacer, t.config), 0);
  ASSERT_TRUE(limiter.ok());
  const Trace trace = Simulate(**limiter, t.requests, t.config);
  EXPECT_THAT(AdmittedAt(trace), ElementsAre(0, 5 * kSec, 10 * kSec, 15 * kSec));
}

TEST(LabSimulateTest, TheConcurrencyLimiterAdmitsWhenACallFinishes) {
  Tiny t = FourRequests();
  t.config.latency = absl::Seconds(5);  // Little's law: 2 per 10 s for 5 s = 1 in flight
  ASSERT_EQ(LabLimiterConfig(Algorithm::kConcurrency, t.config).max_in_flight, 1u);
  t.requests = {{0, 0, 1 * kSec}, {0, 1, 1 * kSec}, {0, 2, 1 * kSec}, {0, 3, 1 * kSec}};
  auto limiter = Limiter::Create(LabLimiterConfig(Algorithm::kConcurrency, t.config), 0);
  ASSERT_TRUE(limiter.ok());
  const Trace trace = Simulate(**limiter, t.requests, t.config);
  // One at a time, each when the last finishes; the provider's bucket (2 per
  // 10 s, capacity 2) has room for two, and a 429 comes back at once, so the
  // fourth goes out right after the third.
  EXPECT_THAT(AdmittedAt(trace), ElementsAre(0, 1 * kSec, 2 * kSec, 2 * kSec));
  ASSERT_EQ(trace.admitted.size(), 4u);
  EXPECT_FALSE(trace.admitted[0].rate_limited);
  EXPECT_FALSE(trace.admitted[1].rate_limited);
  EXPECT_TRUE(trace.admitted[2].rate_limited);
  EXPECT_TRUE(trace.admitted[3].rate_limited);
}

// Workloads ------------------------------------------------------------------------

TEST(LabWorkloadTest, SameSeedSameRequestsOtherSeedOthers) {
  LabConfig config;
  for (Workload w : {Workload::kPoisson, Workload::kBursty, Workload::kLaunchSpike}) {
    SCOPED_TRACE(WorkloadName(w));
    const auto a = GenerateWorkload(w, config);
    const auto b = GenerateWorkload(w, config);
    config.seed = 2;
    const auto c = GenerateWorkload(w, config);
    config.seed = 1;
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    ASSERT_EQ(a->size(), b->size());
    bool same = true, differs = a->size() != c->size();
    for (size_t i = 0; i < a->size(); ++i) {
      same &= (*a)[i].arrival_ns == (*b)[i].arrival_ns && (*a)[i].client == (*b)[i].client &&
              (*a)[i].latency_ns == (*b)[i].latency_ns;
      if (i < c->size()) differs |= (*a)[i].arrival_ns != (*c)[i].arrival_ns;
    }
    EXPECT_TRUE(same);
    EXPECT_TRUE(differs);
  }
}

TEST(LabWorkloadTest, ShapesOfferWhatTheyPromise) {
  LabConfig config;  // 1000/min for 10 min, 8 clients
  const auto steady = GenerateWorkload(Workload::kSteady, config);
  ASSERT_TRUE(steady.ok());
  ASSERT_EQ(steady->size(), 10'000u);
  EXPECT_EQ((*steady)[1].arrival_ns, 60'000'000);  // 60 ms apart
  EXPECT_EQ((*steady)[9].client, 1u);              // round robin
  // Poisson counts: mean m, within 5 standard deviations (sqrt m).
  const auto poisson = GenerateWorkload(Workload::kPoisson, config);
  const auto spike = GenerateWorkload(Workload::kLaunchSpike, config);
  const auto bursty = GenerateWorkload(Workload::kBursty, config);
  ASSERT_TRUE(poisson.ok() && spike.ok() && bursty.ok());
  EXPECT_NEAR(static_cast<double>(poisson->size()), 9'000, 5 * 95);
  EXPECT_NEAR(static_cast<double>(spike->size()), 12'000, 5 * 110);
  EXPECT_NEAR(static_cast<double>(bursty->size()), 10'000, 5 * 100);
  for (const Request& r : *spike) {
    ASSERT_GE(r.latency_ns, kSec);  // uniform in [1 s, 3 s)
    ASSERT_LT(r.latency_ns, 3 * kSec);
  }
  // Boundary: 1000 in [55 s, 60 s), 1000 in [60 s, 65 s), and so on every
  // other minute (at 1, 3, 5, 7 and 9 min).
  const auto boundary = GenerateWorkload(Workload::kBoundary, config);
  ASSERT_TRUE(boundary.ok());
  ASSERT_EQ(boundary->size(), 10'000u);
  EXPECT_EQ(boundary->front().arrival_ns, 55 * kSec);
  EXPECT_EQ((*boundary)[1999].arrival_ns, 65 * kSec - 5'000'000);
  EXPECT_EQ((*boundary)[2000].arrival_ns, 175 * kSec);
}

TEST(LabWorkloadTest, BadInputIsAClearError) {
  EXPECT_THAT(ParseWorkload("spiky").status().message(),
              HasSubstr("unknown workload 'spiky'; workloads are steady, poisson, bursty, "
                        "launch-spike, boundary"));
  LabConfig config;
  config.clients = 0;
  EXPECT_THAT(ValidateLabConfig(config).message(), HasSubstr("clients 0 must be from 1"));
  config = LabConfig();
  config.duration = absl::ZeroDuration();
  EXPECT_THAT(ValidateLabConfig(config).message(), HasSubstr("duration 0 must be positive"));
  config = LabConfig();
  config.limit = Rate(0, absl::Minutes(1));
  EXPECT_THAT(GenerateWorkload(Workload::kSteady, config).status().message(),
              HasSubstr("permits must be >= 1"));
  config.limit = Rate(5, absl::Minutes(-1));
  EXPECT_THAT(ValidateLabConfig(config).message(), HasSubstr("period must be positive"));
  config.limit = Rate::PerSecond(1'000'000);
  EXPECT_THAT(ValidateLabConfig(config).message(), HasSubstr("the lab simulates at most"));
  config = LabConfig();
  config.limit = Rate::PerDay(2'000'000);
  const auto results = RunLab(config, {Workload::kSteady}, {Algorithm::kSlidingLog});
  EXPECT_EQ(results.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(results.status().message(),
              HasSubstr("sliding-log: limit 2000000 must be from 1 to 1048576"));
}

// What the runs must show ------------------------------------------------------------

const LabResult& Find(const std::vector<LabResult>& results, Algorithm a) {
  for (const LabResult& r : results) {
    if (r.algorithm == a) return r;
  }
  ADD_FAILURE() << "no result for " << AlgorithmName(a);
  return results.front();
}

TEST(LabRunTest, SteadyTrafficAtTheLimitPassesUntouched) {
  LabConfig config;
  config.duration = absl::Minutes(3);
  const auto results = RunLab(config, {Workload::kSteady},
                              {Algorithm::kTokenBucket, Algorithm::kPacer, Algorithm::kFixedWindow,
                               Algorithm::kSlidingLog});
  ASSERT_TRUE(results.ok()) << results.status();
  for (const LabResult& r : *results) {
    SCOPED_TRACE(AlgorithmName(r.algorithm));
    EXPECT_EQ(r.metrics.admitted, 3000);
    EXPECT_EQ(r.metrics.wait_max_ns, 0);
    EXPECT_EQ(r.metrics.provider_429s, 0);
    EXPECT_EQ(r.metrics.max_in_window, 1000);
    EXPECT_DOUBLE_EQ(r.metrics.utilization, 1.0);
    EXPECT_DOUBLE_EQ(r.metrics.fairness, 1.0);
    ASSERT_EQ(r.per_bin.size(), 180u);
    EXPECT_EQ(r.trailing[59], 1000);  // [0, 60 s)
  }
}

TEST(LabRunTest, AtTheBoundaryTheFixedWindowLetsTwiceTheLimitThrough) {
  LabConfig config;
  config.duration = absl::Minutes(2);  // one boundary burst, at 1 min
  const auto results = RunLab(config, {Workload::kBoundary}, kAllAlgorithms);
  ASSERT_TRUE(results.ok()) << results.status();
  const Metrics& fixed = Find(*results, Algorithm::kFixedWindow).metrics;
  EXPECT_EQ(fixed.admitted, 2000);
  EXPECT_EQ(fixed.max_in_window, 2000);
  EXPECT_DOUBLE_EQ(fixed.overshoot, 2.0);
  // The provider can take at most its capacity plus 10 s of refill of the
  // 2000 sent within [55 s, 65 s): 1000 + 166.7.
  EXPECT_GE(fixed.provider_429s, 834);
  EXPECT_EQ(Find(*results, Algorithm::kFixedWindow).per_bin[60], 200);  // 1000 over 5 s
  // The exact sliding log never exceeds the limit in any minute; the token
  // bucket, which is the provider's own bucket, draws no 429 at all.
  EXPECT_EQ(Find(*results, Algorithm::kSlidingLog).metrics.max_in_window, 1000);
  EXPECT_EQ(Find(*results, Algorithm::kSlidingLog).metrics.provider_429s, 0);
  EXPECT_EQ(Find(*results, Algorithm::kTokenBucket).metrics.provider_429s, 0);
  EXPECT_EQ(Find(*results, Algorithm::kPacer).metrics.provider_429s, 0);
}

TEST(LabRunTest, UnderALaunchSpikeTheAdaptiveLimiterBacksOffAndTheBucketDrawsNo429s) {
  LabConfig config;
  const auto results =
      RunLab(config, {Workload::kLaunchSpike},
             {Algorithm::kTokenBucket, Algorithm::kSlidingLog, Algorithm::kAdaptive});
  ASSERT_TRUE(results.ok()) << results.status();
  const Metrics& bucket = Find(*results, Algorithm::kTokenBucket).metrics;
  EXPECT_EQ(bucket.provider_429s, 0);
  // Never over-admit: over the 10 minutes at most capacity + rate * 10 min.
  EXPECT_LE(bucket.admitted, 1000 + 10'000);
  EXPECT_EQ(Find(*results, Algorithm::kSlidingLog).metrics.provider_429s, 0);
  // The adaptive limiter probes above the limit, so it draws 429s, and
  // halving at each keeps it from drawing many.
  const Metrics& adaptive = Find(*results, Algorithm::kAdaptive).metrics;
  EXPECT_GT(adaptive.provider_429s, 0);
  EXPECT_LT(adaptive.provider_429s, adaptive.admitted / 10);
}

// Output ----------------------------------------------------------------------------

TEST(LabOutputTest, TableJsonAndSvg) {
  LabConfig config;
  config.duration = absl::Minutes(2);
  const auto results =
      RunLab(config, {Workload::kBoundary}, {Algorithm::kTokenBucket, Algorithm::kFixedWindow});
  ASSERT_TRUE(results.ok());
  const auto rows = SummaryRows(*results);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0][7], "overshoot");
  EXPECT_EQ(rows[2][1], "fixed-window");
  EXPECT_EQ(rows[2][7], "2.00x");

  const nlohmann::ordered_json doc = ToJson(config, *results);
  EXPECT_EQ(doc["config"]["limit"], "1000/min");
  ASSERT_EQ(doc["results"].size(), 2u);
  EXPECT_EQ(doc["results"][1]["algorithm"], "fixed-window");
  EXPECT_EQ(doc["results"][1]["max_in_window"], 2000);
  EXPECT_EQ(doc["results"][1]["wait_ns"]["p50"], 0);

  const std::string svg = RenderSvg(Workload::kBoundary, config, *results);
  EXPECT_TRUE(absl::StartsWith(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_TRUE(absl::EndsWith(svg, "</svg>\n"));
  EXPECT_THAT(svg, HasSubstr("most in any 1m: 2000 (2.00x the limit)"));
  size_t polylines = 0;
  for (size_t at = svg.find("<polyline"); at != std::string::npos;
       at = svg.find("<polyline", at + 1)) {
    ++polylines;
  }
  EXPECT_EQ(polylines, 2u);
}

// The CLI ----------------------------------------------------------------------------

// `sluice lab args...`.
CliResult RunLabVerb(std::vector<std::string> args) {
  args.insert(args.begin(), "lab");
  return RunCli(args);
}

TEST(LabCliTest, PrintsTheTableAndWritesPlots) {
  char dir_template[] = "/tmp/sluice-lab-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const CliResult r =
      RunLabVerb({"boundary", "steady", "--lab_duration=2m",
                  "--lab_algorithms=fixed-window,sliding-log", "--lab_plot_dir", dir});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("limit 1000/min"));
  EXPECT_THAT(r.out, HasSubstr("overshoot"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex("boundary +fixed-window +2000 +2000 +0 +[0-9]+ +2000 "
                                              "+2.00x"));
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("plot: ", dir, "/boundary.svg")));
  std::ifstream file(absl::StrCat(dir, "/boundary.svg"));
  std::stringstream svg;
  svg << file.rdbuf();
  EXPECT_THAT(svg.str(), HasSubstr("sluice lab: boundary"));
  EXPECT_THAT(svg.str(), HasSubstr("sliding-log"));
  unlink(absl::StrCat(dir, "/boundary.svg").c_str());
  unlink(absl::StrCat(dir, "/steady.svg").c_str());
  rmdir(dir.c_str());
}

TEST(LabCliTest, JsonIsTheSameForTheSameSeed) {
  const std::vector<std::string> args = {"poisson", "--lab_duration=1m", "--json", "--seed=9",
                                         "--lab_algorithms=token-bucket,pacer"};
  const CliResult a = RunLabVerb(args);
  const CliResult b = RunLabVerb(args);
  ASSERT_EQ(a.status, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  const auto doc = nlohmann::json::parse(a.out);
  EXPECT_EQ(doc["config"]["seed"], 9);
  ASSERT_EQ(doc["results"].size(), 2u);
  EXPECT_EQ(doc["results"][0]["workload"], "poisson");
  EXPECT_EQ(doc["results"][1]["algorithm"], "pacer");
}

TEST(LabCliTest, BadParametersAreUsageErrors) {
  const CliResult zero = RunLabVerb({"--lab_rate=0/min"});
  EXPECT_EQ(zero.status, 64);
  EXPECT_THAT(zero.err, HasSubstr("sluice lab: --lab-rate: rate '0/min': '0' is not a positive"));
  const CliResult negative = RunLabVerb({"--lab_rate=-5/min"});
  EXPECT_EQ(negative.status, 64);
  EXPECT_THAT(negative.err, HasSubstr("'-5' is not a positive whole number"));
  const CliResult algorithm = RunLabVerb({"--lab_algorithms=token-bucket,leaky"});
  EXPECT_EQ(algorithm.status, 64);
  EXPECT_THAT(algorithm.err, HasSubstr("unknown algorithm 'leaky'; algorithms are token-bucket"));
  const CliResult workload = RunLabVerb({"steady", "rush-hour"});
  EXPECT_EQ(workload.status, 64);
  EXPECT_THAT(workload.err, HasSubstr("unknown workload 'rush-hour'; workloads are steady"));
  const CliResult clients = RunLabVerb({"--lab_clients=0"});
  EXPECT_EQ(clients.status, 64);
  EXPECT_THAT(clients.err, HasSubstr("clients 0 must be from 1"));
}

}  // namespace
}  // namespace sluice::lab
