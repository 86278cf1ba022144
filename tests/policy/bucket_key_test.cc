// BucketKey: every key the factories make formats as the policy has always
// written it and parses back equal; every malformed key is refused with a
// message that quotes it and says what is wrong.
#include "sluice/bucket_key.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/limits.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

TEST(BucketKeyTest, FormatsTheKeysThePolicyWrites) {
  EXPECT_EQ(
      BucketKey::ProviderLimit("anthropic", "default", LimitKind::kRequestsPerMinute).ToString(),
      "provider:anthropic:default:rpm");
  EXPECT_EQ(BucketKey::ProviderLimit("anthropic", "claude-opus", LimitKind::kInputTokensPerMinute)
                .ToString(),
            "provider:anthropic:claude-opus:itpm");
  EXPECT_EQ(BucketKey::ScopeLimit("team:marketing", LimitKind::kTokensPerDay).ToString(),
            "scope:team:marketing:tpd");
  EXPECT_EQ(BucketKey::ScopeBudget("team:marketing", BudgetPeriod::kDay).ToString(),
            "scope:team:marketing:usd_day");
  EXPECT_EQ(BucketKey::ScopeBudget("global", BudgetPeriod::kMonth).ToString(),
            "scope:global:usd_month");
  EXPECT_EQ(BucketKey::ScopeConcurrency("workflow:nightly-batch").ToString(),
            "scope:workflow:nightly-batch:concurrency");
}

TEST(BucketKeyTest, EveryKindRoundTrips) {
  std::vector<BucketKey> keys;
  for (LimitKind kind : kAllLimitKinds) {
    keys.push_back(BucketKey::ProviderLimit("openai", "gpt-4o", kind));
    keys.push_back(BucketKey::ScopeLimit("team:eng:x", kind));
  }
  keys.push_back(BucketKey::ScopeBudget("global", BudgetPeriod::kDay));
  keys.push_back(BucketKey::ScopeBudget("a:b", BudgetPeriod::kMonth));
  keys.push_back(BucketKey::ScopeConcurrency("a:b:c"));
  for (const BucketKey& key : keys) {
    const absl::StatusOr<BucketKey> parsed = BucketKey::Parse(key.ToString());
    ASSERT_TRUE(parsed.ok()) << key.ToString() << ": " << parsed.status();
    EXPECT_EQ(*parsed, key) << key.ToString();
    EXPECT_EQ(parsed->ToString(), key.ToString());
  }
}

TEST(BucketKeyTest, PartsOfAParsedKey) {
  const absl::StatusOr<BucketKey> provider = BucketKey::Parse("provider:anthropic:opus:otpm");
  ASSERT_TRUE(provider.ok()) << provider.status();
  EXPECT_EQ(provider->owner(), BucketKey::Owner::kProvider);
  EXPECT_EQ(provider->provider(), "anthropic");
  EXPECT_EQ(provider->model_class(), "opus");
  EXPECT_EQ(provider->scope(), "");
  EXPECT_EQ(provider->OwnerName(), "anthropic/opus");
  EXPECT_EQ(provider->limit_kind(), LimitKind::kOutputTokensPerMinute);
  EXPECT_EQ(provider->budget_period(), std::nullopt);
  EXPECT_FALSE(provider->is_concurrency());
  EXPECT_EQ(provider->suffix(), "otpm");

  // A scope name holds ':'; the kind is the part after the last one.
  const absl::StatusOr<BucketKey> budget = BucketKey::Parse("scope:team:marketing:usd_month");
  ASSERT_TRUE(budget.ok()) << budget.status();
  EXPECT_EQ(budget->owner(), BucketKey::Owner::kScope);
  EXPECT_EQ(budget->scope(), "team:marketing");
  EXPECT_EQ(budget->OwnerName(), "team:marketing");
  EXPECT_EQ(budget->limit_kind(), std::nullopt);
  EXPECT_EQ(budget->budget_period(), BudgetPeriod::kMonth);
  EXPECT_FALSE(budget->is_concurrency());

  const absl::StatusOr<BucketKey> cap = BucketKey::Parse("scope:global:concurrency");
  ASSERT_TRUE(cap.ok()) << cap.status();
  EXPECT_TRUE(cap->is_concurrency());
  EXPECT_EQ(cap->suffix(), "concurrency");
}

TEST(BucketKeyTest, ParseErrorsQuoteTheKeyAndSayWhatIsWrong) {
  const struct {
    const char* key;
    const char* why;
  } kCases[] = {
      {"anthropic:itpm", "does not start with \"provider:\" or \"scope:\""},
      {"", "does not start with"},
      {"provider:anthropic:rpm", "has 3 parts after \"provider:\""},
      {"provider:anthropic:a:b:rpm", "this one has 4"},
      {"provider::default:rpm", "provider name is empty"},
      {"provider:anthropic::rpm", "model class name is empty"},
      {"provider:an thropic:default:rpm", "provider name must not hold ':', spaces"},
      {"provider:anthropic:default:usd_day", "unknown kind \"usd_day\" for a provider key"},
      {"provider:anthropic:default:", "unknown kind \"\""},
      {"scope:global", "has no kind"},
      {"scope::rpm", "scope name is empty"},
      {"scope:team::x:rpm", "scope name has an empty ':'-separated part"},
      {"scope::team:rpm", "scope name has an empty ':'-separated part"},
      {"scope:team\tx:rpm", "scope name must not hold spaces or control characters"},
      {"scope:global:weird", "unknown kind \"weird\" for a scope key"},
      {"scope:global:", "unknown kind \"\""},
  };
  for (const auto& c : kCases) {
    const absl::StatusOr<BucketKey> parsed = BucketKey::Parse(c.key);
    ASSERT_FALSE(parsed.ok()) << c.key;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << c.key;
    EXPECT_THAT(parsed.status().message(),
                HasSubstr(std::string("bucket key \"") + c.key + "\": "));
    EXPECT_THAT(parsed.status().message(), HasSubstr(c.why)) << c.key;
  }
}

TEST(BucketKeyTest, ValidateNameIsTheLimitsFilesRule) {
  using Part = BucketKey::Part;
  EXPECT_TRUE(BucketKey::ValidateName(Part::kProvider, "anthropic").ok());
  EXPECT_TRUE(BucketKey::ValidateName(Part::kModelClass, "claude-opus-4").ok());
  EXPECT_TRUE(BucketKey::ValidateName(Part::kScope, "team:marketing:campaign-7").ok());
  EXPECT_EQ(BucketKey::ValidateName(Part::kProvider, "").message(), "provider name is empty");
  EXPECT_EQ(BucketKey::ValidateName(Part::kModelClass, "a:b").message(),
            "model class name must not hold ':', spaces or control characters");
  EXPECT_EQ(BucketKey::ValidateName(Part::kScope, "team:").message(),
            "scope name has an empty ':'-separated part");
  EXPECT_EQ(BucketKey::ValidateName(Part::kScope, "a\x01").message(),
            "scope name must not hold spaces or control characters");

  // What the limits file refuses, it refuses in the same words.
  const absl::StatusOr<LimitsConfig> config =
      ParseLimitsConfig("[scopes.\"team::x\"]\nrequests_per_minute = 1\n", "t.toml");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("scope name has an empty ':'-separated part"));
}

TEST(BucketKeyTest, AProviderAccountKeyRoundTrips) {
  const BucketKey key = BucketKey::ProviderLimit(
      "anthropic", "default", LimitKind::kInputTokensPerMinute, "3f2a9c0d1e4b5a68");
  EXPECT_EQ(key.ToString(), "provider:anthropic@3f2a9c0d1e4b5a68:default:itpm");
  EXPECT_EQ(key.OwnerName(), "anthropic@3f2a9c0d1e4b5a68/default");
  const absl::StatusOr<BucketKey> parsed = BucketKey::Parse(key.ToString());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, key);
  EXPECT_EQ(parsed->provider(), "anthropic");
  EXPECT_EQ(parsed->account(), "3f2a9c0d1e4b5a68");
  EXPECT_EQ(parsed->model_class(), "default");
  EXPECT_EQ(parsed->limit_kind(), LimitKind::kInputTokensPerMinute);
  // Without an account, the key and its parts are as before.
  const BucketKey shared =
      BucketKey::ProviderLimit("anthropic", "default", LimitKind::kInputTokensPerMinute);
  EXPECT_NE(shared, key);
  EXPECT_EQ(shared.ToString(), "provider:anthropic:default:itpm");
  EXPECT_EQ(BucketKey::Parse(shared.ToString())->account(), "");
  for (LimitKind kind : kAllLimitKinds) {
    const BucketKey k = BucketKey::ProviderLimit("openai", "gpt-4o", kind, "a1");
    EXPECT_EQ(BucketKey::Parse(k.ToString()).value(), k) << k.ToString();
  }
}

TEST(BucketKeyTest, AccountsAreShortLowercaseAlphanumericAndProvidersHoldNoAt) {
  using Part = BucketKey::Part;
  EXPECT_TRUE(BucketKey::ValidateName(Part::kAccount, "0123456789abcdef").ok());
  EXPECT_TRUE(BucketKey::ValidateName(Part::kAccount, std::string(32, 'z')).ok());
  EXPECT_EQ(BucketKey::ValidateName(Part::kAccount, "").message(), "account name is empty");
  for (const std::string& bad : {std::string(33, 'a'), std::string("ABC"), std::string("a-b"),
                                 std::string("a:b"), std::string("a@b"), std::string("a b")}) {
    EXPECT_EQ(BucketKey::ValidateName(Part::kAccount, bad).message(),
              "account name must be 1 to 32 characters of [0-9a-z]")
        << bad;
  }
  EXPECT_THAT(BucketKey::ValidateName(Part::kProvider, "open@ai").message(),
              HasSubstr("provider name must not hold '@'"));
  const struct {
    const char* key;
    const char* why;
  } kCases[] = {
      {"provider:anthropic@:default:rpm", "account name is empty"},
      {"provider:anthropic@A:default:rpm", "account name must be 1 to 32"},
      {"provider:anthropic@a@b:default:rpm", "account name must be 1 to 32"},
      {"provider:@a:default:rpm", "provider name is empty"},
  };
  for (const auto& c : kCases) {
    const absl::StatusOr<BucketKey> parsed = BucketKey::Parse(c.key);
    ASSERT_FALSE(parsed.ok()) << c.key;
    EXPECT_THAT(parsed.status().message(), HasSubstr(c.why)) << c.key;
  }
  // The limits file refuses such a provider in the same words.
  const absl::StatusOr<LimitsConfig> config =
      ParseLimitsConfig("[providers.\"open@ai\"]\nrequests_per_minute = 1\n", "t.toml");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("provider name must not hold '@'"));
}

}  // namespace
}  // namespace sluice
