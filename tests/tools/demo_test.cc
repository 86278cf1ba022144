// `sluice demo`: the launch-day story end to end, on this machine, against
// the simulated provider. The floors are the issue's: through sluice no 429s
// and a goodput of at least 97% of the provider's limit; straight through,
// the 429s the story is about.
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tools/cli_runner.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

TEST(DemoTest, ThroughSluiceNo429sAndGoodputNearTheLimit) {
  // 6 simulated minutes (the provider's full bucket covers the excess of
  // the first 5) at 40x: about 20 s of real time for both runs, at 800
  // requests a second offered, which ASan builds sustain on 2 cores.
  const CliResult r = RunCli({"demo", "--json", "--duration=6m", "--time_scale=40"});
  ASSERT_EQ(r.status, 0) << testing::PrintToString(r);
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  for (const char* run : {"unthrottled", "sluice"}) {
    SCOPED_TRACE(run);
    ASSERT_TRUE(doc.contains(run));
    for (const char* field :
         {"rate_limit_errors", "goodput_rpm", "provider_rpm_limit", "goodput_ratio"}) {
      EXPECT_TRUE(doc[run].contains(field)) << field;
    }
    EXPECT_EQ(doc[run]["offered"], 7200);
    EXPECT_EQ(doc[run]["provider_rpm_limit"], 1000);
    EXPECT_EQ(doc[run]["succeeded"].get<int>() + doc[run]["failed"].get<int>(), 7200);
  }
  const nlohmann::json& sluice = doc["sluice"];
  EXPECT_EQ(sluice["rate_limit_errors"], 0);
  EXPECT_EQ(sluice["failed"], 0);
  EXPECT_GE(sluice["goodput_ratio"].get<double>(), 0.97) << sluice.dump();
  EXPECT_NEAR(sluice["goodput_rpm"].get<double>(), 1000 * sluice["goodput_ratio"].get<double>(),
              1e-6);
  // 1,200 a minute for 6 minutes against 1,000 a minute and a bucket of
  // 1,000: about 200 of the 7,200 cannot get through, each a failed answer.
  const nlohmann::json& plain = doc["unthrottled"];
  EXPECT_GT(plain["rate_limit_errors"].get<int>(), 100) << plain.dump();
  EXPECT_EQ(plain["failed"], plain["rate_limit_errors"]);
}

TEST(DemoTest, TheBuiltInConfigIsTheExampleFile) {
  const CliResult r = RunCli({"demo", "--print_config"});
  ASSERT_EQ(r.status, 0) << testing::PrintToString(r);
  std::ifstream file(SLUICE_SOURCE_DIR "/examples/demo-limits.toml");
  std::stringstream text;
  text << file.rdbuf();
  EXPECT_EQ(r.out, text.str());
}

TEST(DemoTest, BadParametersAreUsageErrors) {
  CliResult r = RunCli({"demo", "--duration=0s"});
  EXPECT_EQ(r.status, 64);
  EXPECT_THAT(r.err, HasSubstr("--duration"));
  r = RunCli({"demo", "--time_scale=-1"});
  EXPECT_EQ(r.status, 64);
  EXPECT_THAT(r.err, HasSubstr("--time-scale"));
  r = RunCli({"demo", "--offered_rpm=0"});
  EXPECT_EQ(r.status, 64);
  EXPECT_THAT(r.err, HasSubstr("--offered-rpm"));
  r = RunCli({"demo", "--config=/nonexistent/limits.toml"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("/nonexistent/limits.toml"));
}

}  // namespace
}  // namespace sluice
