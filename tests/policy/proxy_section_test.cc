// The limits file's [proxy] table and scope priorities: read, and refused at
// file:line:column with the key named.

#include <string>

#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/limits.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kHashA[] = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

std::string ErrorOf(const std::string& toml) {
  absl::StatusOr<LimitsConfig> config = ParseLimitsConfig(toml, "t.toml");
  if (config.ok()) return "(parsed without error)";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  return std::string(config.status().message());
}

TEST(ProxySectionTest, DefaultsWithoutTheTable) {
  absl::StatusOr<LimitsConfig> config = ParseLimitsConfig("[scopes.global]\n", "t.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->proxy.key_scopes.empty());
  EXPECT_FALSE(config->proxy.count_tokens_requests_per_minute.has_value());
  EXPECT_FALSE(config->proxy.retry_upstream);
  EXPECT_FALSE(config->scopes.at("global").priority.has_value());
}

TEST(ProxySectionTest, ReadsKeysCountTokensRetryAndPriorities) {
  const std::string toml = std::string(R"(
[scopes."team:batch"]
priority = "low"
[scopes."team:live"]
priority = "high"
[proxy]
count_tokens_requests_per_minute = 100
retry_upstream = true
[proxy.keys]
")") + kHashA + R"(" = "team:live"
)";
  absl::StatusOr<LimitsConfig> config = ParseLimitsConfig(toml, "t.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->scopes.at("team:batch").priority, Priority::kLow);
  EXPECT_EQ(config->scopes.at("team:live").priority, Priority::kHigh);
  EXPECT_EQ(config->proxy.count_tokens_requests_per_minute, 100u);
  EXPECT_TRUE(config->proxy.retry_upstream);
  ASSERT_EQ(config->proxy.key_scopes.size(), 1u);
  EXPECT_EQ(config->proxy.key_scopes.at(kHashA), "team:live");
}

TEST(ProxySectionTest, TheExampleFileParses) {
  absl::StatusOr<LimitsConfig> config =
      LoadLimitsConfig(SLUICE_SOURCE_DIR "/examples/proxy/limits.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->scopes.at("team:live").priority, Priority::kHigh);
  EXPECT_EQ(config->proxy.key_scopes.at(kHashA), "workflow:nightly-batch");
  EXPECT_EQ(config->proxy.count_tokens_requests_per_minute, 100u);
}

TEST(ProxySectionTest, PriorityNamesRoundTrip) {
  for (Priority p : {Priority::kHigh, Priority::kNormal, Priority::kLow}) {
    EXPECT_EQ(ParsePriority(PriorityName(p)), p);
  }
  EXPECT_FALSE(ParsePriority("urgent").has_value());
  EXPECT_FALSE(ParsePriority("HIGH").has_value());
}

TEST(ProxySectionTest, ErrorsNameTheKeyAndWhere) {
  EXPECT_EQ(ErrorOf("[scopes.a]\npriority = \"urgent\"\n"),
            "t.toml:2:12: scopes.a.priority: must be \"high\", \"normal\" or \"low\", got "
            "\"urgent\"");
  EXPECT_THAT(ErrorOf("[proxy]\nretry_upstrem = true\n"),
              StartsWith("t.toml:2:1: proxy.retry_upstrem: unknown key; did you mean "
                         "retry_upstream?"));
  EXPECT_THAT(ErrorOf("[proxy]\ncount_tokens_requests_per_minute = 0\n"),
              StartsWith("t.toml:2:36: proxy.count_tokens_requests_per_minute: "));
  EXPECT_THAT(ErrorOf("[proxy]\nretry_upstream = 1\n"),
              StartsWith("t.toml:2:18: proxy.retry_upstream: "));
  // A key written in clear is refused, and the message does not repeat it.
  const std::string clear = ErrorOf("[proxy.keys]\n\"sk-ant-secret\" = \"team:a\"\n");
  EXPECT_THAT(clear, StartsWith("t.toml:2:1: proxy.keys: a name is not the lowercase hex SHA-256"));
  EXPECT_THAT(clear, Not(HasSubstr("sk-ant-secret")));
  EXPECT_THAT(ErrorOf(std::string("[proxy.keys]\n\"") + kHashA + "\" = \"bad scope\"\n"),
              HasSubstr("scope name must not hold spaces"));
  EXPECT_THAT(ErrorOf(std::string("[proxy.keys]\n\"") + kHashA + "\" = 3\n"),
              HasSubstr("proxy.keys." + std::string(kHashA) + ": "));
}

}  // namespace
}  // namespace sluice
