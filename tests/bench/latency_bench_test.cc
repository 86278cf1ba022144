// sluice_latency (bench/latency_bench.cc) runs briefly and prints well-formed
// output: every path at every thread count, percentiles in order. Nothing
// here asserts on speed.
#include <set>
#include <string>
#include <utility>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tools/cli_runner.h"

namespace sluice {
namespace {

TEST(LatencyBenchTest, JsonHasEveryPathAndOrderedPercentiles) {
  const CliResult r = RunCli({"--calls=3000", "--threads=1,2", "--repetitions=3", "--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json out = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(out.is_discarded()) << r.out;
  EXPECT_EQ(out.at("calls_per_thread"), 3000);
  EXPECT_EQ(out.at("repetitions"), 3);
  EXPECT_GT(out.at("tsc_ticks_per_ns").get<double>(), 0);
  std::set<std::pair<std::string, int>> seen;
  for (const auto& run : out.at("runs")) {
    seen.insert({run.at("path").get<std::string>(), run.at("threads").get<int>()});
    const auto& ns = run.at("ns");
    const double p50 = ns.at("p50"), p99 = ns.at("p99"), p999 = ns.at("p99.9"),
                 p9999 = ns.at("p99.99"), max = ns.at("max");
    EXPECT_GE(p50, 0) << run;
    EXPECT_LE(p50, p99) << run;
    EXPECT_LE(p99, p999) << run;
    EXPECT_LE(p999, p9999) << run;
    EXPECT_LE(p9999, max) << run;
  }
  std::set<std::pair<std::string, int>> want;
  for (const char* path : {"timer", "word", "mutex", "leased", "growing"}) {
    for (int threads : {1, 2}) want.insert({path, threads});
  }
  EXPECT_EQ(seen, want);
}

TEST(LatencyBenchTest, TablePrintsOneRowPerPath) {
  const CliResult r = RunCli({"--calls=2000", "--threads=3", "--batch=8", "--max-batch=512"});
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* row : {"\ntimer ", "\nword ", "\nmutex ", "\nleased ", "\ngrowing "}) {
    EXPECT_NE(r.out.find(row), std::string::npos) << row << " missing:\n" << r.out;
  }
  EXPECT_NE(r.out.find("p99.99"), std::string::npos) << r.out;
}

TEST(LatencyBenchTest, BadFlagsAreRefused) {
  EXPECT_EQ(RunCli({"--threads=0"}).status, 2);
  EXPECT_EQ(RunCli({"--threads=two"}).status, 2);
  EXPECT_EQ(RunCli({"--calls=0"}).status, 2);
  EXPECT_EQ(RunCli({"--repetitions=0"}).status, 2);
  EXPECT_EQ(RunCli({"--batch=64", "--max-batch=63"}).status, 2);
  EXPECT_EQ(RunCli({"--max_batch=2000000000"}).status, 2);
}

}  // namespace
}  // namespace sluice
