// sluice stats with a [cluster] table, run as the built binary
// (SLUICE_CLI_PATH) against a private redis-server: the fleet's hosts and
// each bucket's level in Redis beside this host's pool, as text and JSON;
// Redis down (the error, the rest of the report, exit 0); --redis and its
// password; and nothing of it without a [cluster] table.

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sluice/clock.h"
#include "sluice/effective_limits.h"
#include "sluice/fleet_store.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/pool.h"
#include "sluice/redis_buckets.h"
#include "sluice/segment.h"
#include "tests/store/segment_test_util.h"
#include "tests/tools/cli_runner.h"
#include "tests/tools/redis_server.h"

namespace sluice {
namespace {

using ::testing::AllOf;
using ::testing::AnyOf;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kKey[] = "scope:team:fleet:tpd";
constexpr char kPasswordEnv[] = "SLUICE_STATS_TEST_REDIS_PASSWORD";

// 100,000 tokens a day refill about one a second: levels stay put for the
// length of a test.
constexpr char kLimits[] = R"(
[scopes."team:fleet"]
tokens_per_day = 100000
)";

// Writes a limits file under the test's temporary directory; returns its path.
std::string WriteLimits(absl::string_view text) {
  static int files = 0;
  const std::string path =
      absl::StrCat(testing::TempDir(), "stats-limits-", getpid(), "-", files++, ".toml");
  FILE* f = std::fopen(path.c_str(), "w");
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
  return path;
}

class StatsClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(redis_.ok());
    absl::StatusOr<LimitsConfig> config = ParseLimitsConfig(kLimits, "fleet.toml");
    ASSERT_TRUE(config.ok()) << config.status();
    const EffectiveLimits limits(*config);
    for (const OwnerLimits& owner : limits.owners()) {
      for (const BucketSpec& b : owner.buckets) {
        if (b.key == kKey) bucket_ = b.config;
      }
    }
    ASSERT_GT(bucket_.capacity, 1000u);
    SegmentOptions options;
    options.clock = Clock::Fake(&clock_);
    absl::StatusOr<std::unique_ptr<Segment>> segment = Segment::Open(scratch_.path(), options);
    ASSERT_TRUE(segment.ok()) << segment.status();
    segment_ = *std::move(segment);
    // This host's pool: 5 leased permits, at any clock reading.
    absl::StatusOr<SharedBucket> pool = segment_->OpenPool(kKey, bucket_);
    ASSERT_TRUE(pool.ok()) << pool.status();
    ASSERT_EQ(PoolRef(pool->ref().cell()).Credit(5), 5u);
  }

  // The limits file with a [cluster] table naming the private Redis.
  std::string LimitsFile(absl::string_view extra = "") {
    return WriteLimits(absl::StrCat(kLimits, "[cluster]\nredis = \"redis://127.0.0.1:",
                                    redis_.port(), "/0\"\ntimeout = \"2s\"\n", extra));
  }

  CliResult Stats(std::vector<std::string> args) {
    args.insert(args.begin(), {"stats", "--segment", scratch_.path()});
    return RunCli(args);
  }

  // Marks `host` alive and takes `permits` from the fleet's bucket, as a
  // host's refiller would.
  void Lease(const std::string& host, uint64_t permits, const std::string& password = "") {
    absl::StatusOr<std::unique_ptr<RedisBuckets>> redis = RedisBuckets::Connect(
        {.port = redis_.port(), .db = 0, .password = password, .timeout = absl::Seconds(2)});
    ASSERT_TRUE(redis.ok()) << redis.status();
    absl::StatusOr<LeaseResult> lease = (*redis)->Lease({{kKey, bucket_, permits}}, host);
    ASSERT_TRUE(lease.ok()) << lease.status();
    ASSERT_EQ(lease->grants[0].granted, permits);
  }

  // The fleet's bucket after `leased` permits left it: a second's refill is
  // about one permit; a slow machine gets a minute.
  void ExpectGlobalAfter(const nlohmann::json& global, uint64_t leased) {
    ASSERT_TRUE(global.is_number_unsigned()) << global;
    EXPECT_GE(global.get<uint64_t>(), bucket_.capacity - leased);
    EXPECT_LE(global.get<uint64_t>(), bucket_.capacity - leased + 70);
  }

  RedisServer redis_;
  ScratchSegment scratch_;
  // Ahead of the host's clock: the binary sees the pool exactly as left.
  FakeClock clock_{Clock::MonotonicNanos() + absl::ToInt64Nanoseconds(absl::Hours(1))};
  std::unique_ptr<Segment> segment_;
  BucketConfig bucket_;
};

TEST_F(StatsClusterTest, TextShowsTheHostsAndEachBucketsGlobalLevelBesideThePool) {
  Lease("host-a", 1000);
  Lease("host-b", 0);
  const CliResult r = Stats({"--config", LimitsFile()});
  ASSERT_EQ(r.status, 0) << ::testing::PrintToString(r);
  EXPECT_EQ(r.err, "");
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("\ncluster    redis://127.0.0.1:", redis_.port(),
                                            "/0, lease mode, key prefix sluice:\n")));
  EXPECT_THAT(r.out, ContainsRegex("\nhosts      2 seen in the last minute: "
                                   "host-[ab] \\([0-9]+s ago\\), host-[ab] \\([0-9]+s ago\\)\n"));
  EXPECT_THAT(
      r.out,
      ContainsRegex("\nFLEET BUCKET +BURST +GLOBAL +IN POOLS \\(HOSTS\\) +THIS HOST'S POOL\n"));
  // host-a's lease is out in its pool; host-b holds nothing.
  EXPECT_THAT(r.out, ContainsRegex(absl::StrCat("\nscope:team:fleet:tpd +", bucket_.capacity,
                                                " +3[0-9]{3} +1000 \\(1\\) +5\n")));
  // The segment's own tables are still there.
  EXPECT_THAT(r.out, ContainsRegex("\nscope team:fleet +tpd "));
}

TEST_F(StatsClusterTest, JsonShowsTheSameFleet) {
  Lease("host-a", 1000);
  const CliResult r = Stats({"--config", LimitsFile(), "--json"});
  ASSERT_EQ(r.status, 0) << ::testing::PrintToString(r);
  const nlohmann::json c = nlohmann::json::parse(r.out)["cluster"];
  EXPECT_EQ(c["redis"], absl::StrCat("redis://127.0.0.1:", redis_.port(), "/0"));
  EXPECT_EQ(c["mode"], "lease");
  EXPECT_EQ(c["key_prefix"], "sluice:");
  EXPECT_TRUE(c["error"].is_null());
  EXPECT_EQ(c["hosts_alive"], 1);
  ASSERT_EQ(c["hosts"].size(), 1u);
  EXPECT_EQ(c["hosts"][0]["name"], "host-a");
  EXPECT_GE(c["hosts"][0]["seconds_since_seen"].get<int64_t>(), 0);
  EXPECT_LE(c["hosts"][0]["seconds_since_seen"].get<int64_t>(), 60);
  ASSERT_EQ(c["buckets"].size(), 1u);
  EXPECT_EQ(c["buckets"][0]["key"], kKey);
  EXPECT_EQ(c["buckets"][0]["capacity"], bucket_.capacity);
  ExpectGlobalAfter(c["buckets"][0]["global"], 1000);
  EXPECT_EQ(c["buckets"][0]["pool"], 5);
  EXPECT_EQ(c["buckets"][0]["in_pools"], 1000);
  EXPECT_EQ(c["buckets"][0]["hosts_holding"], 1);

  // Looking took nothing and marked nobody: a second look sees the same.
  const CliResult again = Stats({"--config", LimitsFile(), "--json"});
  ASSERT_EQ(again.status, 0) << ::testing::PrintToString(again);
  const nlohmann::json c2 = nlohmann::json::parse(again.out)["cluster"];
  EXPECT_EQ(c2["hosts_alive"], 1);
  ExpectGlobalAfter(c2["buckets"][0]["global"], 1000);
  EXPECT_GE(c2["buckets"][0]["global"], c["buckets"][0]["global"]);
}

// A host's policy over the fleet spends a budget and holds calls in flight:
// the stats show the fleet's figures from Redis, not the segment's.
TEST_F(StatsClusterTest, ShowsTheFleetsBudgetsAndCapsFromRedis) {
  constexpr char kBudgetAndCap[] = R"(
[scopes."team:fleet"]
usd_per_day = 2.5
max_concurrency = 3
[prices."m"]
input = 3.0
output = 15.0
)";
  absl::StatusOr<LimitsConfig> config = ParseLimitsConfig(kBudgetAndCap, "fleet.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  auto local = NewLocalStore();
  FleetOptions o;
  o.redis.port = redis_.port();
  o.redis.timeout = absl::Seconds(2);
  o.host = "host-a";
  o.start_refiller = false;
  auto fleet = FleetStore::Create(local.get(), o);
  ASSERT_TRUE(fleet.ok()) << fleet.status();
  auto policy = Policy::Create(*config, fleet->get());
  ASSERT_TRUE(policy.ok()) << policy.status();
  auto route = (*policy)->Resolve("team:fleet", "anthropic", "m");
  ASSERT_TRUE(route.ok()) << route.status();
  // Each call reserves 1,000 input tokens at $3/M and 100 output at $15/M:
  // 4,500 micro-dollars.
  std::vector<Permit> held;
  for (int i = 0; i < 2; ++i) {
    auto p = (*policy)->Reserve(**route, 1000, 100, absl::ZeroDuration(), (*fleet)->clock().Now());
    ASSERT_TRUE(p.ok()) << p.status();
    held.push_back(*std::move(p));
  }
  const std::string limits = WriteLimits(
      absl::StrCat(kBudgetAndCap, "[cluster]\nredis = \"redis://127.0.0.1:", redis_.port(),
                   "/0\"\ntimeout = \"2s\"\n"));
  const CliResult json = Stats({"--config", limits, "--json"});
  ASSERT_EQ(json.status, 0) << ::testing::PrintToString(json);
  const nlohmann::json c = nlohmann::json::parse(json.out)["cluster"];
  ASSERT_EQ(c["budgets"].size(), 1u) << c;
  EXPECT_EQ(c["budgets"][0]["key"], "scope:team:fleet:usd_day");
  EXPECT_EQ(c["budgets"][0]["period"], "day");
  EXPECT_EQ(c["budgets"][0]["spent_micro_usd"], 9'000);
  EXPECT_EQ(c["budgets"][0]["limit_micro_usd"], 2'500'000);
  EXPECT_THAT(c["budgets"][0]["window"].get<std::string>(),
              ContainsRegex("^20[0-9]{2}-[01][0-9]-[0-3][0-9]$"));
  ASSERT_EQ(c["caps"].size(), 1u) << c;
  EXPECT_EQ(c["caps"][0]["key"], "scope:team:fleet:concurrency");
  EXPECT_EQ(c["caps"][0]["in_flight"], 2);
  EXPECT_EQ(c["caps"][0]["max_in_flight"], 3);

  // One call settles for less and ends: the fleet's figures follow.
  held[0].Settle({.input_tokens = 1000, .output_tokens = 0});
  const CliResult text = Stats({"--config", limits});
  ASSERT_EQ(text.status, 0) << ::testing::PrintToString(text);
  EXPECT_THAT(text.out, ContainsRegex("\nFLEET BUDGET +WINDOW +SPENT +LIMIT\n"
                                      "scope:team:fleet:usd_day +20[0-9-]+ +0\\.007500 +"
                                      "2\\.500000\n"));
  EXPECT_THAT(text.out, ContainsRegex("\nFLEET CAP +IN FLIGHT +MAX\n"
                                      "scope:team:fleet:concurrency +1 +3\n"));
}

TEST_F(StatsClusterTest, ExactModeHasNoPools) {
  const CliResult r = Stats({"--config", LimitsFile("mode = \"exact\"\n"), "--json"});
  ASSERT_EQ(r.status, 0) << ::testing::PrintToString(r);
  const nlohmann::json c = nlohmann::json::parse(r.out)["cluster"];
  EXPECT_EQ(c["mode"], "exact");
  EXPECT_EQ(c["buckets"][0]["global"], bucket_.capacity);
  EXPECT_TRUE(c["buckets"][0]["pool"].is_null());
  EXPECT_TRUE(c["buckets"][0]["in_pools"].is_null());
}

TEST_F(StatsClusterTest, RedisDownShowsTheErrorAndTheRestAndExits0) {
  const std::string limits = LimitsFile();
  redis_.Kill();
  const absl::Time start = absl::Now();
  const CliResult text = Stats({"--config", limits});
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));  // never hangs on Redis
  ASSERT_EQ(text.status, 0) << ::testing::PrintToString(text);
  EXPECT_EQ(text.err, "");
  EXPECT_THAT(text.out, ContainsRegex(absl::StrCat("\nredis      error: [^\n]*127\\.0\\.0\\.1:",
                                                   redis_.port(), "[^\n]*\n")));
  EXPECT_THAT(text.out, Not(HasSubstr("\nhosts ")));
  EXPECT_THAT(text.out, ContainsRegex(absl::StrCat("\nscope:team:fleet:tpd +", bucket_.capacity,
                                                   " +- +- +5\n")));
  EXPECT_THAT(text.out, ContainsRegex("\nscope team:fleet +tpd "));

  const CliResult json = Stats({"--config", limits, "--json"});
  ASSERT_EQ(json.status, 0) << ::testing::PrintToString(json);
  const nlohmann::json c = nlohmann::json::parse(json.out)["cluster"];
  EXPECT_THAT(c["error"].get<std::string>(), HasSubstr(absl::StrCat("127.0.0.1:", redis_.port())));
  EXPECT_TRUE(c["hosts_alive"].is_null());
  EXPECT_TRUE(c["hosts"].empty());
  EXPECT_TRUE(c["buckets"][0]["global"].is_null());
  EXPECT_TRUE(c["buckets"][0]["in_pools"].is_null());
  EXPECT_EQ(c["buckets"][0]["pool"], 5);
  EXPECT_TRUE(c["budgets"].empty());  // the file has none
}

TEST_F(StatsClusterTest, RedisFlagNamesTheFleetWithoutAClusterTable) {
  Lease("host-a", 1000);
  const std::string path = WriteLimits(kLimits);
  const CliResult r = Stats({"--config", path, "--json", "--redis",
                             absl::StrCat("redis://127.0.0.1:", redis_.port()), "--mode", "lease"});
  ASSERT_EQ(r.status, 0) << ::testing::PrintToString(r);
  const nlohmann::json c = nlohmann::json::parse(r.out)["cluster"];
  EXPECT_EQ(c["hosts"][0]["name"], "host-a");
  ExpectGlobalAfter(c["buckets"][0]["global"], 1000);

  // Without --redis or a [cluster] table: no fleet.
  const CliResult plain = Stats({"--config", path, "--json"});
  ASSERT_EQ(plain.status, 0) << ::testing::PrintToString(plain);
  EXPECT_TRUE(nlohmann::json::parse(plain.out)["cluster"].is_null());
  EXPECT_THAT(Stats({"--config", path}).out, Not(HasSubstr("\ncluster ")));

  EXPECT_EQ(Stats({"--mode", "exact"}).status, 64);
  EXPECT_EQ(Stats({"--redis", "redis://127.0.0.1:1", "--mode", "both"}).status, 64);
  EXPECT_EQ(Stats({"--redis", "rediss://127.0.0.1:1"}).status, 64);
}

TEST(StatsClusterPasswordTest, ThePasswordComesFromTheVariableAndIsNeverPrinted) {
  const std::string password = "s3cret-stats-pw";
  RedisServer redis(password);
  ASSERT_TRUE(redis.ok());
  ScratchSegment scratch;
  ASSERT_TRUE(Segment::Open(scratch.path()).ok());
  const std::string path =
      WriteLimits(absl::StrCat(kLimits, "[cluster]\nredis = \"redis://127.0.0.1:", redis.port(),
                               "\"\ntimeout = \"2s\"\npassword_env = \"", kPasswordEnv, "\"\n"));

  unsetenv(kPasswordEnv);
  CliResult r = RunCli({"stats", "--segment", scratch.path(), "--config", path});
  ASSERT_EQ(r.status, 0) << ::testing::PrintToString(r);
  EXPECT_THAT(r.out, ContainsRegex(absl::StrCat("\nredis      error: [^\n]*", kPasswordEnv)));

  setenv(kPasswordEnv, password.c_str(), 1);
  for (const char* format : {"--json=false", "--json"}) {
    r = RunCli({"stats", "--segment", scratch.path(), "--config", path, format});
    ASSERT_EQ(r.status, 0) << ::testing::PrintToString(r);
    EXPECT_THAT(r.out, AllOf(Not(HasSubstr(password)), Not(HasSubstr("error: "))));
    EXPECT_THAT(r.out, AnyOf(HasSubstr("hosts      0 seen"), HasSubstr("\"hosts_alive\": 0")));
  }
  setenv(kPasswordEnv, "wrong", 1);
  r = RunCli({"stats", "--segment", scratch.path(), "--config", path, "--json"});
  ASSERT_EQ(r.status, 0) << ::testing::PrintToString(r);
  EXPECT_FALSE(nlohmann::json::parse(r.out)["cluster"]["error"].is_null());
  EXPECT_THAT(r.out + r.err, AllOf(Not(HasSubstr(password)), Not(HasSubstr("wrong"))));
  unsetenv(kPasswordEnv);
}

}  // namespace
}  // namespace sluice
