// EffectiveLimits: every owner of a config with its buckets (key, rate,
// burst), budgets, cap and models, in the documented order; lookups; and the
// route of a request as the policy reserves it.
#include "sluice/effective_limits.h"

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "sluice/bucket_key.h"
#include "sluice/limits.h"
#include "sluice/rate.h"

namespace sluice {
namespace {

constexpr char kConfig[] = R"(
headroom = 0.5
[providers.openai]
requests_per_minute = 100
[providers.anthropic]
requests_per_minute = 1000
tokens_per_day = 2400000
[providers.anthropic.models.opus]
match = ["claude-opus-*", "claude-3-opus"]
input_tokens_per_minute = 20000
[scopes.global]
requests_per_minute = 600
max_concurrency = 3
usd_per_month = 40
[scopes."team:marketing"]
usd_per_day = 5
requests_per_minute = 100
[scopes.empty]
)";

class EffectiveLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto config = ParseLimitsConfig(kConfig, "test.toml");
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *std::move(config);
  }
  LimitsConfig config_;
};

std::vector<std::string> Names(const std::vector<const OwnerLimits*>& owners) {
  std::vector<std::string> names;
  for (const OwnerLimits* owner : owners) names.push_back(owner->name);
  return names;
}

TEST_F(EffectiveLimitsTest, EveryOwnerInOrderWithItsBuckets) {
  const EffectiveLimits limits(config_);
  std::vector<std::string> names;
  for (const OwnerLimits& owner : limits.owners()) names.push_back(owner.name);
  // Providers by name, default class first; then scopes by name.
  EXPECT_EQ(names,
            (std::vector<std::string>{"anthropic/default", "anthropic/opus", "openai/default",
                                      "empty", "global", "team:marketing"}));

  const OwnerLimits& anthropic = limits.owners()[0];
  EXPECT_EQ(anthropic.type, BucketKey::Owner::kProvider);
  EXPECT_EQ(anthropic.provider, &config_.providers.at("anthropic"));
  EXPECT_EQ(anthropic.model_class, nullptr);
  EXPECT_TRUE(anthropic.models.empty());
  ASSERT_EQ(anthropic.buckets.size(), 2u);
  EXPECT_EQ(anthropic.buckets[0].key, "provider:anthropic:default:rpm");
  EXPECT_EQ(anthropic.buckets[0].config.rate, Rate::PerMinute(500));  // headroom 0.5
  EXPECT_EQ(anthropic.buckets[0].config.capacity, 50u);               // 6 s of 500/min
  EXPECT_EQ(anthropic.buckets[1].key, "provider:anthropic:default:tpd");
  EXPECT_EQ(anthropic.buckets[1].config.rate, Rate::PerDay(1'200'000));
  EXPECT_EQ(anthropic.buckets[1].config.capacity, 50'000u);  // 1 h of 1.2M/day
  EXPECT_TRUE(anthropic.budgets.empty());
  EXPECT_FALSE(anthropic.concurrency.has_value());

  const OwnerLimits& opus = limits.owners()[1];
  EXPECT_EQ(opus.model_class, &config_.providers.at("anthropic").models.at(0));
  EXPECT_EQ(opus.models, (std::vector<std::string>{"claude-opus-*", "claude-3-opus"}));
  std::vector<std::string> keys;
  for (const BucketSpec& spec : opus.buckets) keys.push_back(spec.key);
  // The class's own ITPM, and the provider's limits it does not override.
  EXPECT_EQ(keys,
            (std::vector<std::string>{"provider:anthropic:opus:rpm", "provider:anthropic:opus:itpm",
                                      "provider:anthropic:opus:tpd"}));

  const OwnerLimits& global = limits.owners()[4];
  EXPECT_EQ(global.type, BucketKey::Owner::kScope);
  EXPECT_EQ(global.scope, &config_.scopes.at("global"));
  ASSERT_EQ(global.buckets.size(), 1u);
  EXPECT_EQ(global.buckets[0].config.rate, Rate::PerMinute(600));  // scopes: no headroom
  ASSERT_EQ(global.budgets.size(), 1u);
  EXPECT_EQ(global.budgets[0].key, "scope:global:usd_month");
  EXPECT_EQ(global.budgets[0].limit_micro_usd, 40'000'000u);
  ASSERT_TRUE(global.concurrency.has_value());
  EXPECT_EQ(global.concurrency->key, "scope:global:concurrency");
  EXPECT_EQ(global.concurrency->max_in_flight, 3u);

  const OwnerLimits& empty = limits.owners()[3];
  EXPECT_TRUE(empty.buckets.empty() && empty.budgets.empty() && !empty.concurrency);
}

TEST_F(EffectiveLimitsTest, EveryKeyParsesBackToItsOwner) {
  const EffectiveLimits limits(config_);
  for (const OwnerLimits& owner : limits.owners()) {
    std::vector<std::string> keys;
    for (const BucketSpec& spec : owner.buckets) {
      keys.push_back(spec.key);
      EXPECT_EQ(spec.owner, owner.name);
      const absl::StatusOr<BucketKey> key = BucketKey::Parse(spec.key);
      ASSERT_TRUE(key.ok()) << key.status();
      EXPECT_EQ(key->limit_kind(), spec.kind);
    }
    for (const BudgetSpec& spec : owner.budgets) keys.push_back(spec.key);
    if (owner.concurrency) keys.push_back(owner.concurrency->key);
    for (const std::string& text : keys) {
      const absl::StatusOr<BucketKey> key = BucketKey::Parse(text);
      ASSERT_TRUE(key.ok()) << key.status();
      EXPECT_EQ(key->OwnerName(), owner.name);
      EXPECT_EQ(key->owner(), owner.type);
    }
  }
}

TEST_F(EffectiveLimitsTest, FindsOwnersByName) {
  const EffectiveLimits limits(config_);
  ASSERT_NE(limits.FindScope("team:marketing"), nullptr);
  EXPECT_EQ(limits.FindScope("team:marketing")->name, "team:marketing");
  EXPECT_EQ(limits.FindScope("team:nobody"), nullptr);
  const ProviderLimits& anthropic = config_.providers.at("anthropic");
  ASSERT_NE(limits.FindProviderClass("anthropic", nullptr), nullptr);
  EXPECT_EQ(limits.FindProviderClass("anthropic", nullptr)->name, "anthropic/default");
  EXPECT_EQ(limits.FindProviderClass("anthropic", &anthropic.models[0])->name, "anthropic/opus");
  EXPECT_EQ(limits.FindProviderClass("mistral", nullptr), nullptr);
}

TEST_F(EffectiveLimitsTest, ARouteIsItsScopePathThenItsModelClass) {
  const EffectiveLimits limits(config_);
  RouteLimits route = limits.Route("team:marketing", "anthropic", "claude-opus-4");
  EXPECT_EQ(Names(route.owners),
            (std::vector<std::string>{"team:marketing", "global", "anthropic/opus"}));
  ASSERT_NE(route.model_class, nullptr);
  EXPECT_EQ(route.model_class->name, "anthropic/opus");
  EXPECT_FALSE(route.path.fell_back);

  // An unknown scope falls back; an unconfigured provider adds nothing.
  route = limits.Route("team:marketing:campaign-7", "mistral", "large");
  EXPECT_TRUE(route.path.fell_back);
  EXPECT_EQ(Names(route.owners), (std::vector<std::string>{"team:marketing", "global"}));
  EXPECT_EQ(route.model_class, nullptr);

  // Any other model of a configured provider: the default class.
  route = limits.Route("global", "openai", "gpt-4o");
  EXPECT_EQ(Names(route.owners), (std::vector<std::string>{"global", "openai/default"}));
}

TEST(EffectiveLimitsImplicitGlobalTest, AConfigWithoutGlobalRoutesToTheProviderOnly) {
  auto config = ParseLimitsConfig("[providers.anthropic]\nrequests_per_minute = 10\n", "t.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  const EffectiveLimits limits(*config);
  const RouteLimits route = limits.Route("team:x", "anthropic", "m");
  ASSERT_EQ(route.path.scopes.size(), 1u);
  EXPECT_EQ(route.path.scopes[0]->name, "global");  // implicit: no limits, no owner
  EXPECT_EQ(Names(route.owners), (std::vector<std::string>{"anthropic/default"}));
}

}  // namespace
}  // namespace sluice
