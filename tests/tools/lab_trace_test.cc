// The lab on a replayed trace: small traces whose outcome is worked out by
// hand, requests of several permits, a user's own limiter joining the run,
// and `sluice lab --trace` as a user runs it.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sluice/lab/trace.h"
#include "tests/tools/cli_runner.h"
#include "tools/lab/lab.h"

namespace sluice::lab {
namespace {

using ::testing::ContainsRegex;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000'000'000;

// `n` arrivals of one permit, `gap_ns` apart from 0, each from client "c".
TrafficTrace Evenly(int n, int64_t gap_ns) {
  TrafficTrace trace{.arrivals = {}, .clients = {"c"}};
  for (int i = 0; i < n; ++i) trace.arrivals.push_back({i * gap_ns, 1, 0});
  return trace;
}

// 10 per second, a bucket of 10.
LabConfig TenPerSecond() {
  LabConfig config;
  config.limit = Rate(10, absl::Seconds(1));
  config.max_wait = absl::Seconds(30);
  return config;
}

// The metrics of a run of one limiter (a copy: `results` may be a temporary).
Metrics OnlyMetrics(const absl::StatusOr<std::vector<LabResult>>& results) {
  if (!results.ok() || results->size() != 1) {
    ADD_FAILURE() << "expected one result: " << results.status();
    return {};
  }
  return results->front().metrics;
}

TEST(LabTraceTest, AtExactlyTheLimitTheTokenBucketAdmitsEverythingAtOnce) {
  // 10/s for 5 s, evenly: each arrival finds a permit.
  const auto results = RunLabOnTrace(TenPerSecond(), Evenly(50, 100 * kMs),
                                     BuiltinLimiters({Algorithm::kTokenBucket}));
  const Metrics m = OnlyMetrics(results);
  EXPECT_EQ(m.offered, 50);
  EXPECT_EQ(m.admitted, 50);
  EXPECT_EQ(m.unserved, 0);
  EXPECT_EQ(m.provider_429s, 0);
  EXPECT_EQ(m.wait_max_ns, 0);
  EXPECT_EQ(m.max_in_window, 10);
  EXPECT_EQ(results->front().workload, Workload::kTrace);
  EXPECT_EQ(results->front().name, "token-bucket");
}

TEST(LabTraceTest, ABurstOverTheBucketWaitsOrGivesUp) {
  // 25 at once against a bucket of 10: 10 now, then one each 100 ms, the
  // last at 1.5 s.
  const TrafficTrace burst = Evenly(25, 0);
  const Metrics waited =
      OnlyMetrics(RunLabOnTrace(TenPerSecond(), burst, BuiltinLimiters({Algorithm::kTokenBucket})));
  EXPECT_EQ(waited.admitted, 25);
  EXPECT_EQ(waited.wait_max_ns, 1500 * kMs);
  EXPECT_EQ(waited.max_in_window, 19);  // 10 at 0, then 100 ms .. 900 ms
  EXPECT_EQ(waited.provider_429s, 0);   // the provider's bucket is the same one

  LabConfig impatient = TenPerSecond();
  impatient.max_wait = absl::ZeroDuration();
  const Metrics gave_up =
      OnlyMetrics(RunLabOnTrace(impatient, burst, BuiltinLimiters({Algorithm::kTokenBucket})));
  EXPECT_EQ(gave_up.admitted, 10);
  EXPECT_EQ(gave_up.unserved, 15);
}

TEST(LabTraceTest, RequestsTakeTheirPermitsAndOneThatCanNeverFitIsDropped) {
  TrafficTrace trace{.arrivals = {{0, 6, 0}, {0, 11, 0}, {0, 4, 1}, {0, 1, 1}},
                     .clients = {"big", "small"}};
  const auto results =
      RunLabOnTrace(TenPerSecond(), trace, BuiltinLimiters({Algorithm::kTokenBucket}));
  const Metrics m = OnlyMetrics(results);
  // 6 and 4 fill the bucket at once; 11 never fits and does not hold up the
  // queue; the last permit comes 100 ms later.
  EXPECT_EQ(m.admitted, 3);
  EXPECT_EQ(m.unserved, 1);
  EXPECT_EQ(m.max_in_window, 11);
  EXPECT_EQ(m.wait_max_ns, 100 * kMs);
  EXPECT_EQ(results->front().per_bin[0], 11);  // permits, not requests
}

TEST(LabTraceTest, TheRunLastsUntilTheLastArrivalCanHaveGivenUp) {
  LabConfig config = TenPerSecond();
  const TrafficTrace trace = Evenly(3, 2 * kSec);  // the last at 4 s
  const LabConfig ran = TraceLabConfig(config, trace, /*keep_duration=*/false);
  EXPECT_EQ(ran.duration, absl::Seconds(35));  // 4 s + 1 ns + 30 s, to a whole 1 s bin
  EXPECT_EQ(ran.clients, 1u);
  config.duration = absl::Seconds(3);
  const LabConfig kept = TraceLabConfig(config, trace, /*keep_duration=*/true);
  EXPECT_EQ(kept.duration, absl::Seconds(3));
  // Arrivals from the end on are not offered.
  EXPECT_EQ(TraceRequests(trace, kept).size(), 2u);
}

// A user's own algorithm: admits the first `n` permits ever, then nothing.
class FirstN : public Limiter {
 public:
  explicit FirstN(uint64_t n) : left_(n) {}
  Admission TryAcquire(uint64_t n, int64_t) override {
    if (n > left_) return {Outcome::kRefused, kWaitForRelease};
    left_ -= n;
    return {Outcome::kGranted, 0};
  }
  Algorithm algorithm() const override { return Algorithm::kCustom; }

 private:
  uint64_t left_;
};

TEST(LabTraceTest, AUsersOwnLimiterJoinsTheRun) {
  std::vector<LabLimiter> limiters = BuiltinLimiters({Algorithm::kTokenBucket});
  uint64_t seen_permits = 0;
  limiters.push_back({"first-3", [&](const LimiterConfig& c) {
                        seen_permits = c.rate.permits();
                        return absl::StatusOr<std::unique_ptr<Limiter>>(
                            std::make_unique<FirstN>(3));
                      }});
  const auto results = RunLabOnTrace(TenPerSecond(), Evenly(8, 100 * kMs), limiters);
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 2u);
  EXPECT_EQ(seen_permits, 10u);  // the run's limit, as every algorithm gets it
  const LabResult& mine = (*results)[1];
  EXPECT_EQ(mine.name, "first-3");
  EXPECT_EQ(mine.algorithm, Algorithm::kCustom);
  EXPECT_EQ(mine.metrics.admitted, 3);
  EXPECT_EQ(mine.metrics.unserved, 5);
  EXPECT_EQ((*results)[0].metrics.admitted, 8);
  EXPECT_THAT(SummaryRows(*results)[2],
              ElementsAre("trace", "first-3", "8", "3", "5", "0", "3", "0.30x", ::testing::_,
                          "0.00s", "0.00s", "1.000"));
  EXPECT_EQ(ToJson(TenPerSecond(), *results)["results"][1]["algorithm"], "first-3");
  EXPECT_THAT(RenderSvg(Workload::kTrace, TenPerSecond(), *results), HasSubstr(">first-3<"));
  // The same limiter joins the generated workloads too.
  const auto generated = RunLab(TenPerSecond(), std::vector<Workload>{Workload::kSteady},
                                absl::MakeConstSpan(limiters));
  ASSERT_TRUE(generated.ok()) << generated.status();
  EXPECT_EQ((*generated)[1].metrics.admitted, 3);
}

TEST(LabTraceTest, AFactoryThatFailsIsNamed) {
  const std::vector<LabLimiter> limiters = {
      {"mine", [](const LimiterConfig&) -> absl::StatusOr<std::unique_ptr<Limiter>> {
         return absl::InvalidArgumentError("rate too high");
       }}};
  EXPECT_EQ(RunLabOnTrace(TenPerSecond(), Evenly(1, 0), limiters).status().message(),
            "mine: rate too high");
  EXPECT_EQ(Limiter::Create({.algorithm = Algorithm::kCustom}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// sluice lab --trace -----------------------------------------------------------

std::string WriteTemp(absl::string_view name, absl::string_view text) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/lab_trace_", getpid(), "_", name);
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return path;
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
  return path;
}

TEST(LabTraceCliTest, ReplaysACsvTrace) {
  // 20 at once against 10/s: the token bucket admits 10 now and 10 over the
  // next second; the fixed window admits the second 10 at 1 s.
  std::string csv = "t,permits,client\n";
  for (int i = 0; i < 20; ++i) absl::StrAppend(&csv, "0,1,", i % 2 ? "a" : "b", "\n");
  const std::string path = WriteTemp("burst.csv", csv);
  const CliResult r = RunCli({"lab", "--trace", path, "--lab_rate=10/s",
                              "--lab_algorithms=token-bucket,fixed-window", "--json"});
  unlink(path.c_str());
  ASSERT_EQ(r.status, 0) << r.err;
  const auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["config"]["trace"], path);
  EXPECT_EQ(doc["config"]["clients"], 2);
  EXPECT_EQ(doc["config"]["duration_ns"], 31 * kSec);  // 1 ns + 30 s, to a whole second
  ASSERT_EQ(doc["results"].size(), 2u);
  EXPECT_EQ(doc["results"][0]["workload"], "trace");
  EXPECT_EQ(doc["results"][0]["admitted"], 20);
  EXPECT_EQ(doc["results"][0]["wait_ns"]["max"], kSec);
  EXPECT_EQ(doc["results"][1]["algorithm"], "fixed-window");
  EXPECT_EQ(doc["results"][1]["wait_ns"]["max"], kSec);
}

TEST(LabTraceCliTest, PrintsTheTable) {
  const std::string path = WriteTemp("steady.jsonl",
                                     "{\"t\": \"2026-11-30T12:00:00Z\", \"permits\": 1}\n"
                                     "{\"t\": \"2026-11-30T12:00:00.5Z\", \"permits\": 1}\n");
  const CliResult r = RunCli({"lab", "--trace", path, "--lab_rate=2/s", "--lab_algorithms=pacer"});
  unlink(path.c_str());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("; 31s of simulated time for 2 arrivals from ", path,
                                            ", 1 clients, seed 1")));
  EXPECT_THAT(r.out, ContainsRegex("trace +pacer +2 +2 +0 +0 +2 +1.00x"));
}

TEST(LabTraceCliTest, BadTracesAndWorkloadsAreRefused) {
  const std::string path = WriteTemp("bad.csv", "0,1\n5,1\n7,zero\n");
  const CliResult bad = RunCli({"lab", "--trace", path});
  unlink(path.c_str());
  EXPECT_EQ(bad.status, 1);
  EXPECT_THAT(bad.err, HasSubstr(absl::StrCat(
                           "sluice lab: ", path,
                           ":3: permits \"zero\" is not an integer from 1 to 4294967296")));
  const std::string good = WriteTemp("good.csv", "0,1\n");
  const CliResult latency = RunCli({"lab", "--trace", good, "--lab_latency=0"});
  unlink(good.c_str());
  EXPECT_EQ(latency.status, 64);
  EXPECT_THAT(latency.err, HasSubstr("latency 0 must be positive"));
  const CliResult missing = RunCli({"lab", "--trace", path});
  EXPECT_EQ(missing.status, 1);
  EXPECT_THAT(missing.err, HasSubstr(": No such file or directory"));
  const CliResult both = RunCli({"lab", "steady", "--trace", path});
  EXPECT_EQ(both.status, 64);
  EXPECT_THAT(both.err, HasSubstr("--trace replays its file in place of the workloads"));
}

}  // namespace
}  // namespace sluice::lab
