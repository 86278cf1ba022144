#include "sluice/limits.h"

#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/rate.h"
#include "sluice/segment.h"
#include "src/policy/limit_specs.h"

namespace sluice {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

constexpr char kSeedPath[] = SLUICE_SOURCE_DIR "/examples/seed-limits.toml";

LimitsConfig MustParse(const std::string& toml) {
  absl::StatusOr<LimitsConfig> config = ParseLimitsConfig(toml, "t.toml");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *std::move(config) : LimitsConfig{};
}

// The error a document gets, as "message" for a readable failure.
std::string ErrorOf(const std::string& toml) {
  absl::StatusOr<LimitsConfig> config = ParseLimitsConfig(toml, "t.toml");
  if (config.ok()) return "(parsed without error)";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  return std::string(config.status().message());
}

// Checks "t.toml:LINE:COLUMN: KEY: " and the message's gist.
void ExpectError(const std::string& toml, const std::string& where_and_key,
                 const std::string& gist) {
  const std::string error = ErrorOf(toml);
  EXPECT_THAT(error, StartsWith(absl::StrCat("t.toml:", where_and_key, ": "))) << toml;
  EXPECT_THAT(error, HasSubstr(gist)) << toml;
}

struct Bucket {
  std::string key;
  std::string owner;
  LimitKind kind;
  uint64_t limit;
  Rate rate;
  uint64_t burst;
};

void ExpectBuckets(const std::vector<BucketSpec>& specs, const std::vector<Bucket>& expected) {
  ASSERT_EQ(specs.size(), expected.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(expected[i].key);
    EXPECT_EQ(specs[i].key, expected[i].key);
    EXPECT_EQ(specs[i].owner, expected[i].owner);
    EXPECT_EQ(specs[i].kind, expected[i].kind);
    EXPECT_EQ(specs[i].limit, expected[i].limit);
    EXPECT_EQ(specs[i].config.rate, expected[i].rate);
    EXPECT_EQ(specs[i].config.capacity, expected[i].burst);
    EXPECT_TRUE(ValidateBucketConfig(specs[i].config).ok());
  }
}

std::vector<std::string> Names(const ScopePath& path) {
  std::vector<std::string> names;
  for (const ScopeLimits* scope : path.scopes) names.push_back(scope->name);
  return names;
}

// The seed file -------------------------------------------------------------------

class SeedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<LimitsConfig> config = LoadLimitsConfig(kSeedPath);
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *std::move(config);
  }
  const ScopeLimits& Scope(const std::string& name) { return config_.scopes.at(name); }

  LimitsConfig config_;
};

TEST_F(SeedTest, ReadsTheReferenceDesign) {
  EXPECT_EQ(config_.source, kSeedPath);
  EXPECT_EQ(config_.headroom, 0.8);
  EXPECT_EQ(config_.minute_burst, absl::Seconds(6));
  EXPECT_EQ(config_.day_burst, absl::Hours(1));
  ASSERT_EQ(config_.providers.size(), 2u);
  const ProviderLimits& anthropic = config_.providers.at("anthropic");
  EXPECT_EQ(anthropic.output_precharge, OutputPrecharge::kMaxTokens);
  EXPECT_FALSE(anthropic.count_cache_reads);
  EXPECT_THAT(anthropic.models, IsEmpty());
  EXPECT_EQ(anthropic.where.line, 40);
  EXPECT_EQ(anthropic.where.column, 12);
  ASSERT_EQ(config_.scopes.size(), 4u);
  EXPECT_EQ(Scope("global").parent, "");
  EXPECT_EQ(Scope("team:marketing").parent, "global");
  EXPECT_EQ(Scope("team:engineering").parent, "global");
  EXPECT_EQ(Scope("workflow:nightly-batch").parent, "team:engineering");
}

// A rehearsal at 60x: every bucket refills 60 times faster on the real clock
// and keeps its burst in permits; budgets and caps are not rates.
TEST_F(SeedTest, TimeScaledBucketsRefillFasterAndKeepTheirBursts) {
  const LimitsConfig scaled = TimeScaled(config_, 60);
  ExpectBuckets(ProviderBuckets(scaled, scaled.providers.at("anthropic"), nullptr),
                {
                    {"provider:anthropic:default:rpm", "anthropic/default",
                     LimitKind::kRequestsPerMinute, 48'000, Rate::PerMinute(48'000), 80},
                    {"provider:anthropic:default:tpm", "anthropic/default",
                     LimitKind::kTokensPerMinute, 4'800'000, Rate::PerMinute(4'800'000), 8'000},
                    {"provider:anthropic:default:tpd", "anthropic/default",
                     LimitKind::kTokensPerDay, 120'000'000, Rate::PerDay(120'000'000), 83'333},
                });
  ExpectBuckets(ScopeBuckets(scaled, scaled.scopes.at("workflow:nightly-batch")),
                {
                    {"scope:workflow:nightly-batch:rpm", "workflow:nightly-batch",
                     LimitKind::kRequestsPerMinute, 3'000, Rate::PerMinute(3'000), 5},
                });
  // The proxy's count_tokens limit is a rate too; nothing else in [proxy] is.
  LimitsConfig with_proxy = config_;
  with_proxy.proxy.count_tokens_requests_per_minute = 100;
  with_proxy.proxy.retry_upstream = true;
  const LimitsConfig scaled_proxy = TimeScaled(with_proxy, 60);
  EXPECT_EQ(scaled_proxy.proxy.count_tokens_requests_per_minute, 6'000u);
  EXPECT_TRUE(scaled_proxy.proxy.retry_upstream);
  EXPECT_FALSE(scaled.proxy.count_tokens_requests_per_minute.has_value());
  // Scale 1 changes nothing.
  const LimitsConfig same = TimeScaled(config_, 1);
  EXPECT_EQ(ProviderBuckets(same, same.providers.at("openai"), nullptr)[0].limit, 400u);
  EXPECT_EQ(same.minute_burst, config_.minute_burst);
}

TEST_F(SeedTest, ProviderBucketsAreScaledByHeadroom) {
  const ProviderLimits& anthropic = config_.providers.at("anthropic");
  ExpectBuckets(ProviderBuckets(config_, anthropic, nullptr),
                {
                    {"provider:anthropic:default:rpm", "anthropic/default",
                     LimitKind::kRequestsPerMinute, 800, Rate::PerMinute(800), 80},
                    {"provider:anthropic:default:tpm", "anthropic/default",
                     LimitKind::kTokensPerMinute, 80'000, Rate::PerMinute(80'000), 8'000},
                    {"provider:anthropic:default:tpd", "anthropic/default",
                     LimitKind::kTokensPerDay, 2'000'000, Rate::PerDay(2'000'000), 83'333},
                });
  const ProviderLimits& openai = config_.providers.at("openai");
  ExpectBuckets(ProviderBuckets(config_, openai, nullptr),
                {
                    {"provider:openai:default:rpm", "openai/default", LimitKind::kRequestsPerMinute,
                     400, Rate::PerMinute(400), 40},
                    {"provider:openai:default:tpm", "openai/default", LimitKind::kTokensPerMinute,
                     160'000, Rate::PerMinute(160'000), 16'000},
                });
}

TEST_F(SeedTest, ScopeBucketsAreExact) {
  ExpectBuckets(ScopeBuckets(config_, Scope("global")),
                {{"scope:global:rpm", "global", LimitKind::kRequestsPerMinute, 800,
                  Rate::PerMinute(800), 80}});
  ExpectBuckets(ScopeBuckets(config_, Scope("team:marketing")),
                {{"scope:team:marketing:rpm", "team:marketing", LimitKind::kRequestsPerMinute, 100,
                  Rate::PerMinute(100), 10}});
  ExpectBuckets(ScopeBuckets(config_, Scope("team:engineering")),
                {{"scope:team:engineering:rpm", "team:engineering", LimitKind::kRequestsPerMinute,
                  300, Rate::PerMinute(300), 30}});
  ExpectBuckets(ScopeBuckets(config_, Scope("workflow:nightly-batch")),
                {{"scope:workflow:nightly-batch:rpm", "workflow:nightly-batch",
                  LimitKind::kRequestsPerMinute, 50, Rate::PerMinute(50), 5}});
  for (const auto& [name, scope] : config_.scopes) {
    EXPECT_THAT(ScopeBudgets(scope), IsEmpty()) << name;
    EXPECT_FALSE(ScopeConcurrency(scope).has_value()) << name;
  }
}

TEST_F(SeedTest, NightlyBatchPathEndsAtGlobal) {
  const ScopePath path = ResolveScope(config_, "workflow:nightly-batch");
  EXPECT_THAT(Names(path), ElementsAre("workflow:nightly-batch", "team:engineering", "global"));
  EXPECT_FALSE(path.fell_back);
}

TEST_F(SeedTest, PricesMatchByLongestPrefix) {
  const Price* sonnet = FindPrice(config_, "claude-sonnet-4-20250514");
  ASSERT_NE(sonnet, nullptr);
  EXPECT_EQ(sonnet->input, 3.0);
  EXPECT_EQ(sonnet->output, 15.0);
  EXPECT_EQ(sonnet->cache_write, 3.75);
  EXPECT_EQ(sonnet->cache_read, 0.30);
  const Price* mini = FindPrice(config_, "gpt-4o-mini-2024-07-18");
  ASSERT_NE(mini, nullptr);
  EXPECT_EQ(mini->input, 0.15);
  const Price* gpt4o = FindPrice(config_, "gpt-4o-2024-08-06");
  ASSERT_NE(gpt4o, nullptr);
  EXPECT_EQ(gpt4o->input, 2.50);
  EXPECT_EQ(gpt4o->cache_write, 2.50);  // unpriced: charged as input
  EXPECT_EQ(FindPrice(config_, "claude-3-haiku"), nullptr);
}

// Parsing --------------------------------------------------------------------------

TEST(LimitsParseTest, EmptyDocumentHasTheDefaults) {
  const LimitsConfig config = MustParse("");
  EXPECT_EQ(config.source, "t.toml");
  EXPECT_EQ(config.headroom, 0.8);
  EXPECT_EQ(config.minute_burst, absl::Seconds(6));
  EXPECT_EQ(config.day_burst, absl::Hours(1));
  EXPECT_THAT(config.providers, IsEmpty());
  EXPECT_THAT(config.scopes, IsEmpty());
  EXPECT_THAT(config.prices, IsEmpty());
}

TEST(LimitsParseTest, LimitKindNames) {
  EXPECT_EQ(LimitKindKey(LimitKind::kInputTokensPerMinute), "input_tokens_per_minute");
  EXPECT_EQ(LimitKindKey(LimitKind::kOutputTokensPerMinute), "output_tokens_per_minute");
  EXPECT_EQ(LimitKindSuffix(LimitKind::kInputTokensPerMinute), "itpm");
  EXPECT_EQ(LimitKindSuffix(LimitKind::kOutputTokensPerMinute), "otpm");
  EXPECT_EQ((SourceLocation{"f.toml", 3, 7}.ToString()), "f.toml:3:7");
}

TEST(LimitsParseTest, ScopesWithoutParentHangFromGlobal) {
  const LimitsConfig config = MustParse(R"(
[scopes.global]
requests_per_minute = 10
[scopes."team:a"]
requests_per_minute = 5
)");
  EXPECT_EQ(config.scopes.at("team:a").parent, "global");
  EXPECT_EQ(config.scopes.at("global").parent, "");
  // Without a "global" scope, a scope without a parent is a root.
  EXPECT_EQ(MustParse("[scopes.solo]\nrequests_per_minute = 1\n").scopes.at("solo").parent, "");
}

TEST(LimitsParseTest, HeadroomRoundsDownToWholePermitsButNotBelowOne) {
  const LimitsConfig config = MustParse(R"(
headroom = 0.29
[providers.p]
requests_per_minute = 1000
tokens_per_minute = 3
tokens_per_day = 1
)");
  // 1000 * 0.29 is 289.99999999999997 in doubles; the file means 290.
  ExpectBuckets(
      ProviderBuckets(config, config.providers.at("p"), nullptr),
      {
          {"provider:p:default:rpm", "p/default", LimitKind::kRequestsPerMinute, 290,
           Rate::PerMinute(290), 29},
          {"provider:p:default:tpm", "p/default", LimitKind::kTokensPerMinute, 1,
           Rate::PerMinute(1), 1},
          {"provider:p:default:tpd", "p/default", LimitKind::kTokensPerDay, 1, Rate::PerDay(1), 1},
      });
  // An integer headroom is a number like any other.
  EXPECT_EQ(MustParse("headroom = 1").headroom, 1.0);
}

TEST(LimitsParseTest, BurstDurationsAndExplicitBursts) {
  const LimitsConfig config = MustParse(R"(
headroom = 0.5
minute_burst = "15s"
day_burst = "30m"
[providers.p]
requests_per_minute = 240
input_tokens_per_minute = 1000
tokens_per_day = 4800
[providers.p.burst]
input_tokens_per_minute = 7
[scopes.s]
output_tokens_per_minute = 60
[scopes.s.burst]
output_tokens_per_minute = 60
)");
  ExpectBuckets(ProviderBuckets(config, config.providers.at("p"), nullptr),
                {
                    {"provider:p:default:rpm", "p/default", LimitKind::kRequestsPerMinute, 120,
                     Rate::PerMinute(120), 30},
                    // Explicit bursts are permits as written, not scaled.
                    {"provider:p:default:itpm", "p/default", LimitKind::kInputTokensPerMinute, 500,
                     Rate::PerMinute(500), 7},
                    {"provider:p:default:tpd", "p/default", LimitKind::kTokensPerDay, 2400,
                     Rate::PerDay(2400), 50},
                });
  // A scope's burst may be its whole limit (scopes are not scaled).
  ExpectBuckets(
      ScopeBuckets(config, config.scopes.at("s")),
      {{"scope:s:otpm", "s", LimitKind::kOutputTokensPerMinute, 60, Rate::PerMinute(60), 60}});
}

TEST(LimitsParseTest, DerivedBurstOfAHugeLimitDoesNotOverflow) {
  // 9e11 tokens * 6e9 ns overflows 64 bits; the burst is still exact.
  const LimitsConfig config = MustParse(R"(
headroom = 1
[providers.p]
tokens_per_minute = 900000000000
)");
  const std::vector<BucketSpec> specs = ProviderBuckets(config, config.providers.at("p"), nullptr);
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].limit, 900'000'000'000u);
  EXPECT_EQ(specs[0].config.capacity, 90'000'000'000u);
}

TEST(LimitsParseTest, ModelClassesOverrideTheProviderPerKind) {
  const LimitsConfig config = MustParse(R"(
headroom = 0.8
[providers.anthropic]
requests_per_minute = 1000
input_tokens_per_minute = 100000
output_precharge = "none"
count_cache_reads = false
[providers.anthropic.burst]
requests_per_minute = 20
[providers.anthropic.models.opus]
match = ["claude-opus-4*", "claude-3-opus-20240229"]
requests_per_minute = 50
count_cache_reads = true
[providers.anthropic.models.haiku]
match = ["claude-3-5-haiku*"]
output_tokens_per_minute = 8000
[providers.anthropic.models.haiku.burst]
requests_per_minute = 10
)");
  const ProviderLimits& anthropic = config.providers.at("anthropic");
  EXPECT_EQ(anthropic.output_precharge, OutputPrecharge::kNone);
  ASSERT_EQ(anthropic.models.size(), 2u);  // in key order
  const ModelClass& haiku = anthropic.models[0];
  const ModelClass& opus = anthropic.models[1];
  EXPECT_EQ(opus.name, "opus");
  EXPECT_THAT(opus.match, ElementsAre("claude-opus-4*", "claude-3-opus-20240229"));
  EXPECT_EQ(opus.count_cache_reads, true);
  EXPECT_EQ(haiku.count_cache_reads, std::nullopt);
  EXPECT_EQ(opus.where.line, 10);
  EXPECT_EQ(opus.where.column, 29);

  ExpectBuckets(ProviderBuckets(config, anthropic, nullptr),
                {
                    {"provider:anthropic:default:rpm", "anthropic/default",
                     LimitKind::kRequestsPerMinute, 800, Rate::PerMinute(800), 20},
                    {"provider:anthropic:default:itpm", "anthropic/default",
                     LimitKind::kInputTokensPerMinute, 80'000, Rate::PerMinute(80'000), 8'000},
                });
  // opus sets its own rpm: the provider's explicit burst of 20 was sized for
  // 800/min, so opus gets the derived one (40 * 6s / 1m = 4).
  ExpectBuckets(ProviderBuckets(config, anthropic, &opus),
                {
                    {"provider:anthropic:opus:rpm", "anthropic/opus", LimitKind::kRequestsPerMinute,
                     40, Rate::PerMinute(40), 4},
                    {"provider:anthropic:opus:itpm", "anthropic/opus",
                     LimitKind::kInputTokensPerMinute, 80'000, Rate::PerMinute(80'000), 8'000},
                });
  // haiku keeps the provider's rpm with its own burst, and adds otpm.
  ExpectBuckets(ProviderBuckets(config, anthropic, &haiku),
                {
                    {"provider:anthropic:haiku:rpm", "anthropic/haiku",
                     LimitKind::kRequestsPerMinute, 800, Rate::PerMinute(800), 10},
                    {"provider:anthropic:haiku:itpm", "anthropic/haiku",
                     LimitKind::kInputTokensPerMinute, 80'000, Rate::PerMinute(80'000), 8'000},
                    {"provider:anthropic:haiku:otpm", "anthropic/haiku",
                     LimitKind::kOutputTokensPerMinute, 6'400, Rate::PerMinute(6'400), 640},
                });
}

TEST(LimitsParseTest, BudgetsAreMicroDollars) {
  const LimitsConfig config = MustParse(R"(
[scopes."team:marketing"]
usd_per_day = 25.0
usd_per_month = 500
[scopes.tiny]
usd_per_day = 0.1234567
)");
  const std::vector<BudgetSpec> budgets = ScopeBudgets(config.scopes.at("team:marketing"));
  ASSERT_EQ(budgets.size(), 2u);
  EXPECT_EQ(budgets[0].key, "scope:team:marketing:usd_day");
  EXPECT_EQ(budgets[0].scope, "team:marketing");
  EXPECT_EQ(budgets[0].period, BudgetPeriod::kDay);
  EXPECT_EQ(budgets[0].limit_micro_usd, 25'000'000u);
  EXPECT_EQ(budgets[1].key, "scope:team:marketing:usd_month");
  EXPECT_EQ(budgets[1].period, BudgetPeriod::kMonth);
  EXPECT_EQ(budgets[1].limit_micro_usd, 500'000'000u);
  const std::vector<BudgetSpec> tiny = ScopeBudgets(config.scopes.at("tiny"));
  ASSERT_EQ(tiny.size(), 1u);
  EXPECT_EQ(tiny[0].limit_micro_usd, 123'457u);  // rounded to the nearest
  EXPECT_THAT(ScopeBuckets(config, config.scopes.at("tiny")), IsEmpty());
}

TEST(LimitsParseTest, ConcurrencySpec) {
  const LimitsConfig config = MustParse(R"(
[scopes."team:marketing"]
max_concurrency = 10
[scopes.wide]
max_concurrency = 65535
)");
  const std::optional<ConcurrencySpec> spec = ScopeConcurrency(config.scopes.at("team:marketing"));
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->key, "scope:team:marketing:concurrency");
  EXPECT_EQ(spec->scope, "team:marketing");
  EXPECT_EQ(spec->max_in_flight, 10u);
  EXPECT_EQ(ScopeConcurrency(config.scopes.at("wide"))->max_in_flight, 65535u);
}

TEST(LimitsParseTest, LoadNamesTheFileInErrors) {
  char path[] = "/tmp/sluice-limits-test-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  const std::string text = "headroom = 0.8\nheadroom_ = 1\n";
  ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);
  absl::StatusOr<LimitsConfig> config = LoadLimitsConfig(path);
  unlink(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(),
            absl::StrCat(path, ":2:1: headroom_: unknown key; did you mean headroom?"));
}

TEST(LimitsParseTest, LoadOfAMissingFileOrADirectoryIsNotFound) {
  EXPECT_EQ(LoadLimitsConfig("/nonexistent/limits.toml").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadLimitsConfig("/tmp").status().code(), absl::StatusCode::kNotFound);
}

// Errors: each names file:line:column and the key -------------------------------

TEST(LimitsErrorTest, SyntaxErrorsCarryTomlsPosition) {
  const std::string error = ErrorOf("headroom = 0.8\nminute_burst = = 1\n");
  EXPECT_THAT(error, StartsWith("t.toml:2:16: "));
  // A table defined twice.
  EXPECT_THAT(ErrorOf("[scopes.a]\n[scopes.a]\n"), StartsWith("t.toml:2:"));
}

TEST(LimitsErrorTest, UnknownKeysSuggestTheClosestKnownOne) {
  EXPECT_EQ(ErrorOf("headroom = 0.8\n[providers.anthropic]\ntokens_per_minut = 100000\n"),
            "t.toml:3:1: providers.anthropic.tokens_per_minut: unknown key; did you mean "
            "tokens_per_minute?");
  EXPECT_EQ(ErrorOf("headrom = 0.8\n"), "t.toml:1:1: headrom: unknown key; did you mean headroom?");
  // Far from every known key: no suggestion.
  EXPECT_EQ(ErrorOf("colour = 1\n"), "t.toml:1:1: colour: unknown key");
  // A bucket suffix for the key it stands for.
  ExpectError("[scopes.\"team:marketing\"]\nrpm = 100\n", "2:1: scopes.\"team:marketing\".rpm",
              "unknown key; did you mean requests_per_minute?");
  ExpectError("[providers.p.burst]\nrequests_per_minite = 1\n",
              "2:1: providers.p.burst.requests_per_minite", "did you mean requests_per_minute?");
  ExpectError("[providers.p.models.c]\nmatch = [\"x\"]\nmach = 1\n",
              "3:1: providers.p.models.c.mach", "did you mean match?");
  ExpectError("[prices.\"gpt-4o\"]\ninput = 1\noutput = 2\ncache_reads = 1\n",
              "4:1: prices.gpt-4o.cache_reads", "did you mean cache_read?");
  ExpectError("[scopes.s]\nparnet = \"global\"\n", "2:1: scopes.s.parnet", "did you mean parent?");
}

TEST(LimitsErrorTest, WrongTypes) {
  ExpectError("[providers.p]\nrequests_per_minute = \"1000\"\n",
              "2:23: providers.p.requests_per_minute", "must be a positive integer, not a string");
  ExpectError("[providers.p]\nrequests_per_minute = 1000.0\n",
              "2:23: providers.p.requests_per_minute", "must be a positive integer, not a float");
  ExpectError("providers = 5\n", "1:13: providers", "must be a table, not an integer");
  ExpectError("[providers]\np = 5\n", "2:5: providers.p", "must be a table, not an integer");
  ExpectError("headroom = \"0.8\"\n", "1:12: headroom", "must be a number, not a string");
  ExpectError("[providers.p]\ncount_cache_reads = \"yes\"\n", "2:21: providers.p.count_cache_reads",
              "must be true or false, not a string");
  ExpectError("[scopes.s]\nparent = 5\n", "2:10: scopes.s.parent", "must be a string");
  ExpectError("[providers.p.models.c]\nmatch = \"claude*\"\n", "2:9: providers.p.models.c.match",
              "must be a non-empty array of model names, not a string");
  ExpectError("[providers.p.models.c]\nmatch = []\n", "2:9: providers.p.models.c.match",
              "not an empty array");
  ExpectError("[providers.p.models.c]\nmatch = [\"a\", 7]\n", "2:15: providers.p.models.c.match[1]",
              "must be a string, not an integer");
  ExpectError("[providers.p]\nburst = 5\n", "2:9: providers.p.burst", "must be a table");
  ExpectError("[prices.x]\ninput = \"free\"\noutput = 1\n", "2:9: prices.x.input",
              "must be a number, not a string");
  ExpectError("minute_burst = 6\n", "1:16: minute_burst", "must be a string, not an integer");
}

TEST(LimitsErrorTest, NonPositiveAndOutOfRangeValues) {
  ExpectError("[providers.p]\nrequests_per_minute = 0\n", "2:23: providers.p.requests_per_minute",
              "must be a positive integer, got 0");
  ExpectError("[scopes.\"team:a\"]\ntokens_per_day = -5\n",
              "2:18: scopes.\"team:a\".tokens_per_day", "must be a positive integer, got -5");
  ExpectError("[scopes.s]\nmax_concurrency = 0\n", "2:19: scopes.s.max_concurrency",
              "must be a positive integer, got 0");
  ExpectError("[scopes.s]\nmax_concurrency = 70000\n", "2:19: scopes.s.max_concurrency",
              "must be 1 to 65535, got 70000");
  ExpectError("[scopes.s]\nusd_per_day = 0\n", "2:15: scopes.s.usd_per_day",
              "must be a positive amount");
  ExpectError("[scopes.s]\nusd_per_month = -1.5\n", "2:17: scopes.s.usd_per_month",
              "must be a positive amount");
  ExpectError("[scopes.s]\nusd_per_day = 1e-9\n", "2:15: scopes.s.usd_per_day", "one micro-dollar");
  ExpectError("[scopes.s]\nusd_per_day = inf\n", "2:15: scopes.s.usd_per_day",
              "must be a finite number");
  // A budget counter holds 2^43 - 1 micro-dollars a window: a budget above it
  // would carry into the window bits and stop being enforced.
  ExpectError("[scopes.s]\nusd_per_month = 10000000\n", "2:17: scopes.s.usd_per_month",
              "must be at most 8796093.022207 USD");
  EXPECT_TRUE(ParseLimitsConfig("[scopes.s]\nusd_per_month = 8796093.022207\n", "t").ok());
  ExpectError("[prices.x]\ninput = 1\noutput = -0.5\n", "3:10: prices.x.output",
              "must not be negative");
  // 1e12 per minute is faster than a bucket can go (16e9/s).
  ExpectError("headroom = 1\n[providers.p]\ntokens_per_minute = 1000000000000\n",
              "3:21: providers.p.tokens_per_minute", "faster than the fastest bucket");
}

TEST(LimitsErrorTest, HeadroomOutsideZeroToOne) {
  ExpectError("headroom = 0\n", "1:12: headroom", "must be more than 0 and at most 1, got 0");
  ExpectError("headroom = 1.5\n", "1:12: headroom", "got 1.5");
  ExpectError("headroom = nan\n", "1:12: headroom", "must be a finite number");
}

TEST(LimitsErrorTest, BurstDurationsOfAPeriodOrMore) {
  ExpectError("minute_burst = \"1m\"\n", "1:16: minute_burst",
              "must be more than 0 and less than 1m, got 1m");
  ExpectError("minute_burst = \"0s\"\n", "1:16: minute_burst", "got 0");
  ExpectError("minute_burst = \"soon\"\n", "1:16: minute_burst",
              "\"soon\" is not a duration such as \"6s\"");
  ExpectError("day_burst = \"24h\"\n", "1:13: day_burst", "less than 24h, got 24h");
}

TEST(LimitsErrorTest, ExplicitBursts) {
  ExpectError(
      "[providers.p]\nrequests_per_minute = 10\n[providers.p.burst]\nrequests_per_minute = 0\n",
      "4:23: providers.p.burst.requests_per_minute", "must be a positive integer, got 0");
  // 1000/min after a headroom of 0.8 is 800/min: a burst of 900 is more than
  // a minute's worth.
  ExpectError(R"([providers.anthropic]
requests_per_minute = 1000
[providers.anthropic.burst]
requests_per_minute = 900
)",
              "4:23: providers.anthropic.burst.requests_per_minute",
              "burst 900 is more than the limit's whole minute (800/min after headroom)");
  ExpectError("[scopes.s]\ntokens_per_day = 100\nburst = { tokens_per_day = 101 }\n",
              "3:28: scopes.s.burst.tokens_per_day",
              "burst 101 is more than the limit's whole day (100/day)");
  ExpectError("[scopes.s]\nrequests_per_minute = 10\n[scopes.s.burst]\ntokens_per_day = 5\n",
              "4:18: scopes.s.burst.tokens_per_day",
              "burst for tokens_per_day, which has no limit here");
  // A class's burst is checked against the class's own limit.
  ExpectError(R"([providers.p]
requests_per_minute = 1000
[providers.p.models.small]
match = ["s"]
requests_per_minute = 10
burst = { requests_per_minute = 20 }
)",
              "6:33: providers.p.models.small.burst.requests_per_minute", "(8/min after headroom)");
}

TEST(LimitsErrorTest, ParentsMustExist) {
  ExpectError("[scopes.global]\n[scopes.\"team:a\"]\nparent = \"globl\"\n",
              "3:10: scopes.\"team:a\".parent", "no scope named \"globl\"; did you mean global?");
  ExpectError("[scopes.s]\nparent = \"\"\n", "2:10: scopes.s.parent", "must name a scope");
}

TEST(LimitsErrorTest, CyclesOfParents) {
  ExpectError("[scopes.a]\nparent = \"b\"\n[scopes.b]\nparent = \"a\"\n", "2:10: scopes.a.parent",
              "cycle of parents: a -> b -> a");
  ExpectError("[scopes.a]\nparent = \"a\"\n", "2:10: scopes.a.parent", "cycle of parents: a -> a");
  // With "global" defined, every other scope hangs from it, so a cycle is the
  // only way a path could miss it; a scope leading into one is not blamed.
  ExpectError(R"([scopes.global]
[scopes.x]
parent = "y"
[scopes.y]
parent = "z"
[scopes.z]
parent = "y"
)",
              "5:10: scopes.y.parent", "cycle of parents: y -> z -> y");
}

TEST(LimitsErrorTest, GlobalHasNoParent) {
  ExpectError("[scopes.global]\nparent = \"team\"\n[scopes.team]\n", "2:10: scopes.global.parent",
              "\"global\" is the root of every path");
}

TEST(LimitsErrorTest, AMatchPatternBelongsToOneClass) {
  ExpectError(R"([providers.anthropic.models.big]
match = ["claude-opus-4*"]
[providers.anthropic.models.opus]
match = ["claude-3-opus", "claude-opus-4*"]
)",
              "4:27: providers.anthropic.models.opus.match[1]",
              "pattern \"claude-opus-4*\" is already matched by class big");
  ExpectError("[providers.p.models.c]\nmatch = [\"a\", \"a\"]\n",
              "2:15: providers.p.models.c.match[1]", "pattern \"a\" is listed twice");
  // The same pattern at two providers is fine.
  MustParse("[providers.p.models.c]\nmatch = [\"a\"]\n[providers.q.models.c]\nmatch = [\"a\"]\n");
}

TEST(LimitsErrorTest, PatternsOnlyEndInAStar) {
  ExpectError("[providers.p.models.c]\nmatch = [\"claude-*-opus\"]\n",
              "2:10: providers.p.models.c.match[0]", "only a trailing '*'");
  ExpectError("[providers.p.models.c]\nmatch = [\"\"]\n", "2:10: providers.p.models.c.match[0]",
              "pattern is empty");
  ExpectError("[prices.\"gpt*4\"]\ninput = 1\noutput = 1\n", "1:9: prices.\"gpt*4\"",
              "only a trailing '*'");
}

TEST(LimitsErrorTest, MissingRequiredKeys) {
  ExpectError("[providers.p.models.opus]\nrequests_per_minute = 5\n",
              "1:21: providers.p.models.opus", "missing key match");
  ExpectError("[prices.\"gpt-4o\"]\noutput = 10\n", "1:9: prices.gpt-4o", "missing key input");
  ExpectError("[prices.m]\ninput = 1\n", "1:9: prices.m", "missing key output");
}

TEST(LimitsErrorTest, BadNames) {
  ExpectError("[providers.\"open:ai\"]\n", "1:12: providers.\"open:ai\"",
              "provider name must not hold ':'");
  ExpectError("[providers.p.models.default]\nmatch = [\"x\"]\n", "1:21: providers.p.models.default",
              "\"default\" is reserved");
  ExpectError("[providers.p.models.\"a b\"]\nmatch = [\"x\"]\n", "1:21: providers.p.models.\"a b\"",
              "model class name must not hold");
  ExpectError("[scopes.\"team::x\"]\n", "1:9: scopes.\"team::x\"", "empty ':'-separated part");
  ExpectError("[scopes.\"team:\"]\n", "1:9: scopes.\"team:\"", "empty ':'-separated part");
  ExpectError("[scopes.\"\"]\n", "1:9: scopes.\"\"", "scope name is empty");
  ExpectError("[scopes.\"a\\tb\"]\n", "1:9: scopes.\"a\\u0009b\"", "spaces or control characters");
}

TEST(LimitsErrorTest, OutputPrechargeValues) {
  ExpectError("[providers.p]\noutput_precharge = \"sometimes\"\n",
              "2:20: providers.p.output_precharge",
              "must be \"max_tokens\" or \"none\", got \"sometimes\"");
}

TEST(LimitsErrorTest, NamesThatMakeKeysTooLong) {
  // "scope:" + name + ":rpm" is the name's length + 10.
  const std::string longest(kMaxBucketNameLength - 10, 's');
  MustParse(absl::StrCat("[scopes.", longest, "]\nrequests_per_minute = 1\n"));
  const std::string too_long = longest + "s";
  ExpectError(absl::StrCat("[scopes.", too_long, "]\nrequests_per_minute = 1\n"),
              absl::StrCat("1:9: scopes.", too_long),
              absl::StrCat("the name makes bucket key \"scope:", too_long, ":rpm\" ",
                           kMaxBucketNameLength + 1, " bytes long; keys are at most ",
                           kMaxBucketNameLength, " bytes"));
  // The concurrency key is the longest a scope has.
  ExpectError(absl::StrCat("[scopes.", longest, "]\nmax_concurrency = 1\n"),
              absl::StrCat("1:9: scopes.", longest), ":concurrency\"");
  // "provider:" + provider + ":default:rpm" is the provider's length + 21; a
  // class with a longer name than "default" makes a longer key.
  const std::string provider(kMaxBucketNameLength - 21, 'p');
  MustParse(absl::StrCat("[providers.", provider, "]\nrequests_per_minute = 1\n"));
  ExpectError(absl::StrCat("[providers.", provider, "a]\nrequests_per_minute = 1\n"),
              absl::StrCat("1:12: providers.", provider, "a"), ":default:rpm\"");
  ExpectError(
      absl::StrCat("[providers.", provider, "]\nrequests_per_minute = 1\n[providers.", provider,
                   ".models.long-class]\nmatch = [\"m\"]\n"),
      absl::StrCat("3:", 12 + provider.size() + 8, ": providers.", provider, ".models.long-class"),
      ":long-class:rpm\"");
}

// Resolution and matching ----------------------------------------------------------

constexpr char kScopes[] = R"(
[scopes.global]
[scopes.team]
[scopes."team:marketing"]
requests_per_minute = 100
)";

TEST(ResolveScopeTest, ExactNameFollowsParentsToTheRoot) {
  const LimitsConfig config = MustParse(kScopes);
  ScopePath path = ResolveScope(config, "team:marketing");
  EXPECT_THAT(Names(path), ElementsAre("team:marketing", "global"));
  EXPECT_FALSE(path.fell_back);
  path = ResolveScope(config, "global");
  EXPECT_THAT(Names(path), ElementsAre("global"));
  EXPECT_FALSE(path.fell_back);
}

TEST(ResolveScopeTest, UnknownNameFallsBackToItsLongestConfiguredPrefix) {
  const LimitsConfig config = MustParse(kScopes);
  ScopePath path = ResolveScope(config, "team:marketing:campaign-7");
  EXPECT_THAT(Names(path), ElementsAre("team:marketing", "global"));
  EXPECT_TRUE(path.fell_back);
  EXPECT_THAT(Names(ResolveScope(config, "team:marketing:campaign-7:run-3")),
              ElementsAre("team:marketing", "global"));
  EXPECT_THAT(Names(ResolveScope(config, "team:sales:q3")), ElementsAre("team", "global"));
  // A prefix counts only when it ends right before a ':'.
  EXPECT_THAT(Names(ResolveScope(config, "team:marketing-eu")), ElementsAre("team", "global"));
  EXPECT_THAT(Names(ResolveScope(config, "teams:x")), ElementsAre("global"));
}

TEST(ResolveScopeTest, NoPrefixFallsBackToGlobal) {
  const LimitsConfig config = MustParse(kScopes);
  const ScopePath path = ResolveScope(config, "batch");
  EXPECT_THAT(Names(path), ElementsAre("global"));
  EXPECT_TRUE(path.fell_back);
  EXPECT_THAT(Names(ResolveScope(config, ":odd:")), ElementsAre("global"));
  EXPECT_THAT(Names(ResolveScope(config, "")), ElementsAre("global"));
}

// Without a configured "global", what matches nothing runs under an implicit
// "global" that limits nothing (a file of provider limits alone must work).
TEST(ResolveScopeTest, WithoutGlobalTheRootIsAnImplicitUnlimitedGlobal) {
  const LimitsConfig config = MustParse("[scopes.team]\n[scopes.\"team:a\"]\nparent = \"team\"\n");
  EXPECT_THAT(Names(ResolveScope(config, "team:a:b")), ElementsAre("team:a", "team"));
  const ScopePath path = ResolveScope(config, "other");
  EXPECT_THAT(Names(path), ElementsAre("global"));
  EXPECT_TRUE(path.fell_back);
  EXPECT_TRUE(path.scopes[0]->limits.per_period.empty());
  EXPECT_FALSE(path.scopes[0]->max_concurrency.has_value());
  EXPECT_FALSE(ResolveScope(config, "global").fell_back);
}

TEST(ResolveScopeTest, AHandBuiltCycleStillEnds) {
  LimitsConfig config;
  config.scopes["a"].name = "a";
  config.scopes["a"].parent = "b";
  config.scopes["b"].name = "b";
  config.scopes["b"].parent = "a";
  EXPECT_LE(ResolveScope(config, "a").scopes.size(), 3u);
}

TEST(FindModelClassTest, ExactBeatsPrefixAndLongerPrefixBeatsShorter) {
  const LimitsConfig config = MustParse(R"(
[providers.anthropic.models.claude]
match = ["claude-*"]
[providers.anthropic.models.opus]
match = ["claude-opus-*"]
[providers.anthropic.models.pinned]
match = ["claude-opus-4-20250514"]
)");
  const ProviderLimits& anthropic = config.providers.at("anthropic");
  auto class_of = [&](absl::string_view model) -> std::string {
    const ModelClass* c = FindModelClass(anthropic, model);
    return c == nullptr ? "default" : c->name;
  };
  EXPECT_EQ(class_of("claude-opus-4-20250514"), "pinned");
  EXPECT_EQ(class_of("claude-opus-4-1"), "opus");
  EXPECT_EQ(class_of("claude-sonnet-4"), "claude");
  EXPECT_EQ(class_of("claude-"), "claude");
  EXPECT_EQ(class_of("claude"), "default");
  EXPECT_EQ(class_of("gpt-4o"), "default");
}

TEST(FindModelClassTest, AStarAloneMatchesEverything) {
  const LimitsConfig config = MustParse(R"(
[providers.p.models.rest]
match = ["*"]
[providers.p.models.exact]
match = ["m"]
)");
  const ProviderLimits& p = config.providers.at("p");
  EXPECT_EQ(FindModelClass(p, "m")->name, "exact");
  EXPECT_EQ(FindModelClass(p, "anything")->name, "rest");
}

TEST(FindPriceTest, ExactBeatsPrefix) {
  const LimitsConfig config = MustParse(R"(
[prices."gpt-4o*"]
input = 2.5
output = 10
[prices."gpt-4o"]
input = 5
output = 15
cache_read = 0
)");
  ASSERT_NE(FindPrice(config, "gpt-4o"), nullptr);
  EXPECT_EQ(FindPrice(config, "gpt-4o")->input, 5);
  EXPECT_EQ(FindPrice(config, "gpt-4o")->cache_read, 0);
  EXPECT_EQ(FindPrice(config, "gpt-4o")->cache_write, 5);
  EXPECT_EQ(FindPrice(config, "gpt-4o-2024-08-06")->input, 2.5);
  EXPECT_EQ(FindPrice(config, "gpt-4"), nullptr);
}

}  // namespace
}  // namespace sluice
