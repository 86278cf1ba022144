// The limits file's [cluster] table: every key and its default, each refusal
// at file:line:column with the key named, the names of the modes, and the
// password, which is read from the environment and never repeated.

#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/cluster_settings.h"
#include "sluice/limits.h"

namespace sluice {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kRedis[] = "redis = \"redis://127.0.0.1:6379/0\"\n";

// The [cluster] table with `lines` after its redis key.
std::string ClusterTable(absl::string_view lines) {
  return absl::StrCat("[cluster]\n", kRedis, lines);
}

ClusterSettings ClusterOf(const std::string& toml) {
  absl::StatusOr<LimitsConfig> config = ParseLimitsConfig(toml, "t.toml");
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok() || !config->cluster.has_value()) {
    ADD_FAILURE() << "no [cluster] in " << toml;
    return {};
  }
  return *config->cluster;
}

std::string ErrorOf(const std::string& toml) {
  absl::StatusOr<LimitsConfig> config = ParseLimitsConfig(toml, "t.toml");
  if (config.ok()) return "(parsed without error)";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  return std::string(config.status().message());
}

TEST(ClusterSectionTest, WithoutTheTableAHostIsOnItsOwn) {
  absl::StatusOr<LimitsConfig> config = ParseLimitsConfig("[scopes.global]\n", "t.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->cluster.has_value());
}

TEST(ClusterSectionTest, DefaultsBesideTheRequiredRedis) {
  const ClusterSettings cluster = ClusterOf(ClusterTable(""));
  EXPECT_EQ(cluster.redis_url, "redis://127.0.0.1:6379/0");
  EXPECT_EQ(cluster.redis, (RedisEndpoint{.host = "127.0.0.1", .port = 6379, .db = 0}));
  EXPECT_EQ(cluster.key_prefix, "sluice:");
  EXPECT_EQ(cluster.mode, ClusterMode::kLease);
  EXPECT_EQ(cluster.on_redis_down, RedisDownPolicy::kLocalShare);
  EXPECT_EQ(cluster.password_env, "");
  EXPECT_EQ(cluster.timeout, absl::Milliseconds(50));
  EXPECT_EQ(cluster.expected_hosts, 1u);
  EXPECT_EQ(cluster.concurrency_lease_ttl, absl::Seconds(10));
}

TEST(ClusterSectionTest, ReadsEveryKey) {
  const ClusterSettings cluster = ClusterOf(R"(
[scopes.global]
requests_per_minute = 100
[cluster]
redis = "redis://[::1]:6380/3"
key_prefix = "prod.eu-1_sluice:"
mode = "exact"
on_redis_down = "fail_closed"
password_env = "SLUICE_REDIS_PASSWORD"
timeout = "250ms"
expected_hosts = 12
concurrency_lease_ttl = "1m30s"
)");
  EXPECT_EQ(cluster.redis_url, "redis://[::1]:6380/3");
  EXPECT_EQ(cluster.redis, (RedisEndpoint{.host = "::1", .port = 6380, .db = 3}));
  EXPECT_EQ(cluster.key_prefix, "prod.eu-1_sluice:");
  EXPECT_EQ(cluster.mode, ClusterMode::kExact);
  EXPECT_EQ(cluster.on_redis_down, RedisDownPolicy::kFailClosed);
  EXPECT_EQ(cluster.password_env, "SLUICE_REDIS_PASSWORD");
  EXPECT_EQ(cluster.timeout, absl::Milliseconds(250));
  EXPECT_EQ(cluster.expected_hosts, 12u);
  EXPECT_EQ(cluster.concurrency_lease_ttl, absl::Seconds(90));
  // An inline table is the same table.
  EXPECT_EQ(ClusterOf("cluster = { redis = \"redis://h\", on_redis_down = \"fail_open\" }\n")
                .on_redis_down,
            RedisDownPolicy::kFailOpen);
}

TEST(ClusterSectionTest, BoundsAreInclusive) {
  const ClusterSettings most = ClusterOf(ClusterTable(absl::StrCat(
      "key_prefix = \"", std::string(32, 'k'),
      "\"\ntimeout = \"10s\"\nexpected_hosts = 100000\nconcurrency_lease_ttl = \"1h\"\n")));
  EXPECT_EQ(most.key_prefix, std::string(32, 'k'));
  EXPECT_EQ(most.timeout, kMaxRedisTimeout);
  EXPECT_EQ(most.expected_hosts, kMaxExpectedHosts);
  EXPECT_EQ(most.concurrency_lease_ttl, kMaxConcurrencyLeaseTtl);
  const ClusterSettings least =
      ClusterOf(ClusterTable("key_prefix = \":\"\ntimeout = \"1ns\"\nexpected_hosts = "
                             "1\nconcurrency_lease_ttl = \"1ms\"\n"));
  EXPECT_EQ(least.key_prefix, ":");
  EXPECT_EQ(least.timeout, absl::Nanoseconds(1));
  EXPECT_EQ(least.concurrency_lease_ttl, absl::Milliseconds(1));
}

TEST(ClusterSectionTest, TheTableAndItsRedisAreRequiredAsSuch) {
  EXPECT_EQ(ErrorOf("cluster = 3\n"), "t.toml:1:11: cluster: must be a table, not an integer");
  EXPECT_THAT(ErrorOf("[cluster]\nmode = \"exact\"\n"),
              StartsWith("t.toml:1:1: cluster: missing key redis (the fleet's Redis, e.g. "
                         "\"redis://127.0.0.1:6379/0\")"));
  EXPECT_EQ(ErrorOf(ClusterTable("modee = \"exact\"\n")),
            "t.toml:3:1: cluster.modee: unknown key; did you mean mode?");
  EXPECT_EQ(ErrorOf("[cluster]\nredis = 6379\n"),
            "t.toml:2:9: cluster.redis: must be a string, not an integer");
  EXPECT_EQ(ErrorOf("[cluster]\nredis = \"redis://h:0/0\"\n"),
            "t.toml:2:9: cluster.redis: redis URL \"redis://h:0/0\": the port must be 1 to "
            "65535, got 0");
  EXPECT_THAT(ErrorOf("[cluster]\nredis = \"rediss://h/0\"\n"),
              StartsWith("t.toml:2:9: cluster.redis: redis URL \"rediss://h/0\": TLS"));
  EXPECT_THAT(ErrorOf("[cluster]\nredis = \"redis://h/0?password=x\"\n"),
              StartsWith("t.toml:2:9: cluster.redis: "));
}

TEST(ClusterSectionTest, APasswordInTheUrlIsRefusedAndNotRepeated) {
  const std::string error =
      ErrorOf("[cluster]\nredis = \"redis://default:Tr0ub4dor-3@cache:6379/0\"\n");
  EXPECT_THAT(error, AllOf(StartsWith("t.toml:2:9: cluster.redis: redis URL "
                                      "\"redis://cache:6379/0\": holds a user or a password"),
                           HasSubstr("set password_env"), Not(HasSubstr("Tr0ub4dor"))));
  const std::string unparsed = ErrorOf("[cluster]\nredis = \"redis://:Tr0ub4dor@3@cache\"\n");
  EXPECT_THAT(unparsed, AllOf(StartsWith("t.toml:2:9: cluster.redis: the redis URL (not "
                                         "repeated: it may hold a password)"),
                              Not(HasSubstr("Tr0ub4dor"))));
}

TEST(ClusterSectionTest, RefusesBadWordsAndNames) {
  EXPECT_EQ(ErrorOf(ClusterTable("mode = \"fast\"\n")),
            "t.toml:3:8: cluster.mode: must be \"lease\" or \"exact\", got \"fast\"");
  EXPECT_EQ(ErrorOf(ClusterTable("mode = 1\n")),
            "t.toml:3:8: cluster.mode: must be a string, not an integer");
  EXPECT_EQ(ErrorOf(ClusterTable("on_redis_down = \"retry\"\n")),
            "t.toml:3:17: cluster.on_redis_down: must be \"local_share\", \"fail_closed\" or "
            "\"fail_open\", got \"retry\"");
  for (const std::string& prefix : {std::string(), std::string(33, 'k'), std::string("a{b}:"),
                                    std::string("a b"), std::string("é")}) {
    EXPECT_THAT(ErrorOf(ClusterTable(absl::StrCat("key_prefix = \"", prefix, "\"\n"))),
                StartsWith("t.toml:3:14: cluster.key_prefix: must be 1 to 32 of A-Z a-z 0-9 : _ "
                           ". - (no braces: a hash tag follows it), got \""))
        << prefix;
  }
  // A password written where its variable's name belongs is not repeated.
  for (absl::string_view env : {"", "1PASSWORD", "MY-VAR", "hunter2 secret!", "A=B"}) {
    const std::string error = ErrorOf(ClusterTable(absl::StrCat("password_env = \"", env, "\"\n")));
    EXPECT_THAT(error, StartsWith("t.toml:3:16: cluster.password_env: must name an environment "
                                  "variable ([A-Za-z_][A-Za-z0-9_]*), not hold the password"))
        << env;
    if (!env.empty()) {
      EXPECT_THAT(error, Not(HasSubstr(env)));
    }
  }
  EXPECT_EQ(ClusterOf(ClusterTable("password_env = \"_x9\"\n")).password_env, "_x9");
}

TEST(ClusterSectionTest, RefusesDurationsAndCountsOutOfRange) {
  EXPECT_EQ(ErrorOf(ClusterTable("timeout = \"0s\"\n")),
            "t.toml:3:11: cluster.timeout: must be more than 0 and at most 10s, got 0");
  EXPECT_EQ(ErrorOf(ClusterTable("timeout = \"10.001s\"\n")),
            "t.toml:3:11: cluster.timeout: must be more than 0 and at most 10s, got 10.001s");
  EXPECT_EQ(ErrorOf(ClusterTable("timeout = \"-5ms\"\n")),
            "t.toml:3:11: cluster.timeout: must be more than 0 and at most 10s, got -5ms");
  EXPECT_EQ(ErrorOf(ClusterTable("timeout = \"soon\"\n")),
            "t.toml:3:11: cluster.timeout: \"soon\" is not a duration such as \"6s\"");
  EXPECT_EQ(ErrorOf(ClusterTable("timeout = 50\n")),
            "t.toml:3:11: cluster.timeout: must be a string, not an integer");
  EXPECT_EQ(
      ErrorOf(ClusterTable("concurrency_lease_ttl = \"0s\"\n")),
      "t.toml:3:25: cluster.concurrency_lease_ttl: must be more than 0 and at most 1h, got 0");
  EXPECT_EQ(
      ErrorOf(ClusterTable("concurrency_lease_ttl = \"1h0m1s\"\n")),
      "t.toml:3:25: cluster.concurrency_lease_ttl: must be more than 0 and at most 1h, got 1h1s");
  EXPECT_EQ(
      ErrorOf(ClusterTable("concurrency_lease_ttl = \"inf\"\n")),
      "t.toml:3:25: cluster.concurrency_lease_ttl: must be more than 0 and at most 1h, got inf");
  EXPECT_EQ(ErrorOf(ClusterTable("expected_hosts = 0\n")),
            "t.toml:3:18: cluster.expected_hosts: must be a positive integer, got 0");
  EXPECT_EQ(ErrorOf(ClusterTable("expected_hosts = 100001\n")),
            "t.toml:3:18: cluster.expected_hosts: must be 1 to 100000, got 100001");
  EXPECT_EQ(ErrorOf(ClusterTable("expected_hosts = \"3\"\n")),
            "t.toml:3:18: cluster.expected_hosts: must be a positive integer, not a string");
}

TEST(ClusterSectionTest, BurstDurationsKeepTheirMessages) {
  EXPECT_EQ(ErrorOf("minute_burst = \"1m\"\n"),
            "t.toml:1:16: minute_burst: must be more than 0 and less than 1m, got 1m");
}

TEST(ClusterSectionTest, NamesRoundTrip) {
  for (ClusterMode mode : kAllClusterModes)
    EXPECT_EQ(ParseClusterMode(ClusterModeName(mode)), mode);
  for (RedisDownPolicy policy : kAllRedisDownPolicies) {
    EXPECT_EQ(ParseRedisDownPolicy(RedisDownPolicyName(policy)), policy);
  }
  EXPECT_EQ(ClusterModeName(ClusterMode::kLease), "lease");
  EXPECT_EQ(ClusterModeName(ClusterMode::kExact), "exact");
  EXPECT_EQ(RedisDownPolicyName(RedisDownPolicy::kLocalShare), "local_share");
  EXPECT_EQ(RedisDownPolicyName(RedisDownPolicy::kFailClosed), "fail_closed");
  EXPECT_EQ(RedisDownPolicyName(RedisDownPolicy::kFailOpen), "fail_open");
  EXPECT_FALSE(ParseClusterMode("LEASE").has_value());
  EXPECT_FALSE(ParseClusterMode("").has_value());
  EXPECT_FALSE(ParseRedisDownPolicy("fail-open").has_value());
}

TEST(ClusterSectionTest, ThePasswordComesFromTheNamedVariable) {
  constexpr char kVariable[] = "SLUICE_CLUSTER_SECTION_TEST_PASSWORD";
  constexpr char kSecret[] = "c0rrect-h0rse-battery";
  ClusterSettings settings;
  absl::StatusOr<std::string> none = ClusterPassword(settings);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, "");

  settings.password_env = kVariable;
  unsetenv(kVariable);
  absl::StatusOr<std::string> unset = ClusterPassword(settings);
  EXPECT_EQ(unset.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(unset.status().message(),
              AllOf(HasSubstr(kVariable), HasSubstr("password_env"), HasSubstr("is not set")));

  ASSERT_EQ(setenv(kVariable, "", 1), 0);
  absl::StatusOr<std::string> empty = ClusterPassword(settings);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(empty.status().message(), AllOf(HasSubstr(kVariable), HasSubstr("is empty")));

  ASSERT_EQ(setenv(kVariable, kSecret, 1), 0);
  absl::StatusOr<std::string> password = ClusterPassword(settings);
  ASSERT_TRUE(password.ok()) << password.status();
  EXPECT_EQ(*password, kSecret);
  // The file names the variable; nothing parsed from it holds the value, and
  // no refusal repeats it.
  const ClusterSettings parsed =
      ClusterOf(ClusterTable(absl::StrCat("password_env = \"", kVariable, "\"\n")));
  EXPECT_EQ(parsed.password_env, kVariable);
  EXPECT_THAT(parsed.redis_url + parsed.key_prefix, Not(HasSubstr(kSecret)));
  EXPECT_THAT(
      ErrorOf(ClusterTable(absl::StrCat("password_env = \"", kVariable, "\"\nmode = \"fast\"\n"))),
      Not(HasSubstr(kSecret)));
  unsetenv(kVariable);
}

TEST(ClusterSectionTest, TimeScaledLeavesTheClusterAsItIs) {
  absl::StatusOr<LimitsConfig> config = ParseLimitsConfig(
      ClusterTable("timeout = \"20ms\"\nconcurrency_lease_ttl = \"5s\"\nexpected_hosts = 4\n"),
      "t.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  const LimitsConfig scaled = TimeScaled(*config, 60);
  ASSERT_TRUE(scaled.cluster.has_value());
  EXPECT_EQ(scaled.cluster->timeout, absl::Milliseconds(20));
  EXPECT_EQ(scaled.cluster->concurrency_lease_ttl, absl::Seconds(5));
  EXPECT_EQ(scaled.cluster->expected_hosts, 4u);
  EXPECT_EQ(scaled.cluster->redis, config->cluster->redis);
}

TEST(ClusterSectionTest, FleetOptionsCarryTheTable) {
  const ClusterSettings settings = ClusterOf(
      ClusterTable("on_redis_down = \"fail_open\"\ntimeout = \"20ms\"\nexpected_hosts = 4\n"
                   "concurrency_lease_ttl = \"1m30s\"\n"));
  absl::StatusOr<FleetOptions> options = FleetOptionsFor(settings);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->on_redis_down, RedisDown::kFailOpen);
  EXPECT_EQ(options->redis.timeout, absl::Milliseconds(20));
  EXPECT_EQ(options->expected_hosts, 4u);
  EXPECT_EQ(options->concurrency_lease_ttl, absl::Seconds(90));
  EXPECT_EQ(FleetOptionsFor(ClusterOf(ClusterTable(""))).value().concurrency_lease_ttl,
            kDefaultConcurrencyLeaseTtl);
}

}  // namespace
}  // namespace sluice
