// The request path: all-or-nothing reservation over every bucket on a
// request's route, bottlenecks, settling by each provider's counting rules,
// budgets, concurrency caps and scope fallback. Every test runs over both
// stores (process memory and a shared segment) on a fake clock.
#include "sluice/policy.h"

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/segment.h"
#include "tests/store/segment_test_util.h"

namespace sluice {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int64_t kSec = 1'000'000'000;

// Exact numbers: headroom 1, explicit bursts everywhere.
constexpr char kConfig[] = R"(
headroom = 1.0

[providers.anthropic]
requests_per_minute = 600
input_tokens_per_minute = 60000
output_tokens_per_minute = 12000
tokens_per_day = 1000000
[providers.anthropic.burst]
requests_per_minute = 10
input_tokens_per_minute = 10000
output_tokens_per_minute = 2000
tokens_per_day = 100000

[providers.anthropic.models.legacy]
match = ["claude-2*"]
count_cache_reads = true

[providers.openai]
requests_per_minute = 600
tokens_per_minute = 60000
[providers.openai.burst]
requests_per_minute = 10
tokens_per_minute = 10000

[scopes.global]
requests_per_minute = 600
[scopes.global.burst]
requests_per_minute = 8

[scopes."team:eng"]
parent = "global"
requests_per_minute = 300
tokens_per_minute = 30000
max_concurrency = 2
[scopes."team:eng".burst]
requests_per_minute = 5
tokens_per_minute = 5000

[scopes."workflow:nightly"]
parent = "team:eng"
requests_per_minute = 60
usd_per_day = 1.0
[scopes."workflow:nightly".burst]
requests_per_minute = 3

[prices."claude-sonnet-4*"]
input = 3.0
output = 15.0
cache_write = 3.75
cache_read = 0.30
)";

enum class StoreKind { kLocal, kSegment };

class PolicyTest : public ::testing::TestWithParam<StoreKind> {
 protected:
  void SetUp() override { Build(kConfig); }

  // A policy for `toml` over this test's kind of store.
  void Build(const char* toml) {
    auto config = ParseLimitsConfig(toml, "policy_test.toml");
    ASSERT_TRUE(config.ok()) << config.status();
    policy_.reset();
    store_.reset();
    segment_.reset();
    unlink(scratch_.path().c_str());
    if (GetParam() == StoreKind::kLocal) {
      store_ = NewLocalStore(Clock::Fake(&clock_));
    } else {
      SegmentOptions options;
      options.clock = Clock::Fake(&clock_);
      auto segment = Segment::Open(scratch_.path(), options);
      ASSERT_TRUE(segment.ok()) << segment.status();
      segment_ = *std::move(segment);
      store_ = NewSegmentStore(segment_.get());
    }
    PolicyOptions options;
    options.wall_clock = [this] { return wall_; };
    auto policy = Policy::Create(*config, store_.get(), options);
    ASSERT_TRUE(policy.ok()) << policy.status();
    policy_ = *std::move(policy);
  }

  const Route& RouteOf(const std::string& scope, const std::string& provider = "anthropic",
                       const std::string& model = "claude-sonnet-4") {
    auto route = policy_->Resolve(scope, provider, model);
    EXPECT_TRUE(route.ok()) << route.status();
    return **route;
  }

  absl::StatusOr<Permit> Reserve(const Route& route, uint64_t in, uint64_t out,
                                 absl::Duration wait = absl::ZeroDuration()) {
    return policy_->Reserve(route, in, out, wait, clock_.Now());
  }

  // Available permits of every bucket, and spend of every budget, by key.
  std::map<std::string, int64_t> Levels() {
    std::map<std::string, int64_t> levels;
    const PolicyStats stats = policy_->Stats();
    for (const auto& b : stats.buckets) levels[b.key] = b.available;
    for (const auto& b : stats.budgets) levels[b.key] = static_cast<int64_t>(b.spent_micro_usd);
    for (const auto& c : stats.concurrency) levels[c.key] = c.in_flight;
    return levels;
  }

  FakeClock clock_{1'000 * kSec};
  absl::Time wall_ =
      absl::FromCivil(absl::CivilSecond(2026, 11, 28, 12, 0, 0), absl::UTCTimeZone());
  ScratchSegment scratch_;
  std::unique_ptr<Segment> segment_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Policy> policy_;
};

TEST_P(PolicyTest, ARequestPaysEveryBucketOnItsPath) {
  const Route& route = RouteOf("workflow:nightly");
  EXPECT_EQ(route.path(), (std::vector<std::string>{"workflow:nightly", "team:eng", "global"}));
  const auto before = Levels();
  auto permit = Reserve(route, 1000, 500);
  ASSERT_TRUE(permit.ok()) << permit.status();
  EXPECT_EQ(permit->wait_ns(), 0);
  EXPECT_EQ(permit->bottleneck(), "");
  auto after = Levels();
  EXPECT_EQ(before.at("scope:workflow:nightly:rpm") - after.at("scope:workflow:nightly:rpm"), 1);
  EXPECT_EQ(before.at("scope:team:eng:rpm") - after.at("scope:team:eng:rpm"), 1);
  EXPECT_EQ(before.at("scope:team:eng:tpm") - after.at("scope:team:eng:tpm"), 1500);
  EXPECT_EQ(before.at("scope:global:rpm") - after.at("scope:global:rpm"), 1);
  EXPECT_EQ(
      before.at("provider:anthropic:default:rpm") - after.at("provider:anthropic:default:rpm"), 1);
  EXPECT_EQ(
      before.at("provider:anthropic:default:itpm") - after.at("provider:anthropic:default:itpm"),
      1000);
  EXPECT_EQ(
      before.at("provider:anthropic:default:otpm") - after.at("provider:anthropic:default:otpm"),
      500);  // max_tokens pre-charged
  EXPECT_EQ(
      before.at("provider:anthropic:default:tpd") - after.at("provider:anthropic:default:tpd"),
      1500);
  // Worst case: 1000 input at the cache-write price 3.75 + 500 output at 15.
  EXPECT_EQ(after.at("scope:workflow:nightly:usd_day"), 1000 * 375 / 100 + 500 * 15);
  EXPECT_EQ(after.at("scope:team:eng:concurrency"), 1);
  permit->Cancel();
  EXPECT_EQ(Levels(), before);
}

TEST_P(PolicyTest, AllOrNothingRollsBackExactlyAndNamesTheRefusingBucket) {
  const Route& nightly = RouteOf("workflow:nightly");
  const Route& team = RouteOf("team:eng");
  // Spend team:eng's request burst (5) through its own route.
  for (int i = 0; i < 5; ++i) {
    auto p = Reserve(team, 10, 10);
    ASSERT_TRUE(p.ok()) << p.status();
    p->Settle({.input_tokens = 10, .output_tokens = 10});
  }
  const auto before = Levels();
  auto refused = Reserve(nightly, 100, 100);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(refused.status().message(),
              AllOf(HasSubstr("scope:team:eng:rpm"), HasSubstr("would make the request wait")));
  EXPECT_EQ(Levels(), before);  // workflow's charges went back, exactly
  const PolicyStats stats = policy_->Stats();
  EXPECT_EQ(stats.rollbacks, 1u);
  for (const auto& b : stats.buckets) {
    if (b.key == "scope:team:eng:rpm") {
      EXPECT_EQ(b.bottlenecks, 1u);
    }
  }
}

TEST_P(PolicyTest, TheWaitIsTheLongestAndItsBucketIsTheBottleneck) {
  const Route& route = RouteOf("workflow:nightly");
  // workflow:nightly allows 3 at once, then one a second (60/min).
  for (int i = 0; i < 3; ++i) {
    auto p = Reserve(route, 10, 10);
    ASSERT_TRUE(p.ok());
    p->Settle({.input_tokens = 10, .output_tokens = 10});
  }
  auto waiting = Reserve(route, 10, 10, absl::Seconds(5));
  ASSERT_TRUE(waiting.ok()) << waiting.status();
  EXPECT_EQ(waiting->wait_ns(), kSec);
  EXPECT_EQ(waiting->wait(), absl::Seconds(1));
  EXPECT_EQ(waiting->ready_at_ns(), clock_.Now() + kSec);
  EXPECT_EQ(waiting->bottleneck(), "scope:workflow:nightly:rpm");
  waiting->Cancel();
  // The blocking form sleeps once, until then.
  auto acquired = policy_->Acquire({.scope = "workflow:nightly",
                                    .provider = "anthropic",
                                    .model = "claude-sonnet-4",
                                    .input_tokens = 10,
                                    .max_output_tokens = 10},
                                   absl::Seconds(5));
  ASSERT_TRUE(acquired.ok()) << acquired.status();
  EXPECT_EQ(clock_.sleeps(), 1);
  EXPECT_EQ(clock_.Now(), 1'001 * kSec);
}

TEST_P(PolicyTest, ARequestThatCanNeverFitFailsAtOnceNamingTheBucket) {
  const auto before = Levels();
  auto permit = Reserve(RouteOf("global"), 20'000, 10, absl::Hours(1));
  EXPECT_EQ(permit.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(permit.status().message(),
              AllOf(HasSubstr("provider:anthropic:default:itpm"), HasSubstr("20000 tokens"),
                    HasSubstr("at most 10000"), HasSubstr("never fit")));
  EXPECT_EQ(Levels(), before);
  EXPECT_EQ(policy_->Stats().never_fits, 1u);
}

TEST_P(PolicyTest, SettlingFollowsAnthropicsCountingRules) {
  const Route& route = RouteOf("global");
  const auto before = Levels();
  auto permit = Reserve(route, 1000, 2000);
  ASSERT_TRUE(permit.ok());
  // Input counts input + cache writes, not cache reads; output is settled to
  // what was produced.
  permit->Settle({.input_tokens = 700,
                  .output_tokens = 300,
                  .cache_creation_input_tokens = 200,
                  .cache_read_input_tokens = 5000});
  const auto after = Levels();
  EXPECT_EQ(
      before.at("provider:anthropic:default:itpm") - after.at("provider:anthropic:default:itpm"),
      900);
  EXPECT_EQ(
      before.at("provider:anthropic:default:otpm") - after.at("provider:anthropic:default:otpm"),
      300);
  EXPECT_EQ(
      before.at("provider:anthropic:default:tpd") - after.at("provider:anthropic:default:tpd"),
      1200);
  EXPECT_EQ(before.at("scope:global:rpm") - after.at("scope:global:rpm"), 1);

  // A model class flagged count_cache_reads counts them.
  const Route& legacy = RouteOf("global", "anthropic", "claude-2.1");
  const auto legacy_before = Levels();
  auto old = Reserve(legacy, 1000, 100);
  ASSERT_TRUE(old.ok()) << old.status();
  old->Settle({.input_tokens = 100, .output_tokens = 50, .cache_read_input_tokens = 400});
  const auto legacy_after = Levels();
  EXPECT_EQ(legacy_before.at("provider:anthropic:legacy:itpm") -
                legacy_after.at("provider:anthropic:legacy:itpm"),
            500);
}

TEST_P(PolicyTest, SettlingFollowsOpenAisCountingRules) {
  const Route& route = RouteOf("global", "openai", "gpt-4o");
  const auto before = Levels();
  auto permit = Reserve(route, 300, 1000);
  ASSERT_TRUE(permit.ok()) << permit.status();
  // Pre-charged max(max_tokens, prompt estimate).
  EXPECT_EQ(before.at("provider:openai:default:tpm") - Levels().at("provider:openai:default:tpm"),
            1000);
  // Settled to every prompt token (cached ones too) plus the completion.
  permit->Settle({.input_tokens = 200, .output_tokens = 150, .cache_read_input_tokens = 100});
  EXPECT_EQ(before.at("provider:openai:default:tpm") - Levels().at("provider:openai:default:tpm"),
            450);
}

TEST_P(PolicyTest, BudgetsReserveTheWorstCaseAndSettleToTheActualCost) {
  const Route& route = RouteOf("workflow:nightly");
  auto permit = Reserve(route, 1000, 500);
  ASSERT_TRUE(permit.ok());
  permit->Settle({.input_tokens = 800, .output_tokens = 200});
  EXPECT_EQ(Levels().at("scope:workflow:nightly:usd_day"), 800 * 3 + 200 * 15);  // 5,400
}

TEST_P(PolicyTest, ABudgetRefusesWhatCouldOverrunItUntilTheNextUtcDay) {
  Build(R"(
[scopes.global]
requests_per_minute = 6000
usd_per_day = 1.0
[prices."m"]
input = 3.0
output = 15.0
)");
  const Route& route = RouteOf("global", "anthropic", "m");
  // 1 USD is 1,000,000 micro-dollars. A request that may cost 1.05 USD can
  // never fit; one that may cost 0.9 USD fits once, then the day is spent.
  auto huge = Reserve(route, 0, 70'000);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(huge.status().message(),
              AllOf(HasSubstr("scope:global:usd_day"), HasSubstr("1.050000 USD")));
  auto big = Reserve(route, 0, 60'000);
  ASSERT_TRUE(big.ok()) << big.status();
  auto refused = Reserve(route, 0, 10'000);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(),
              AllOf(HasSubstr("scope:global:usd_day"), HasSubstr("0.900000 USD of 1.000000 USD"),
                    HasSubstr("spent this UTC day"), HasSubstr("resets in 12h")));
  // Settling to less than the worst case frees the difference at once.
  big->Settle({.output_tokens = 40'000});
  EXPECT_TRUE(Reserve(route, 0, 10'000).ok());
  // The next UTC day starts from zero.
  wall_ += absl::Hours(12);
  EXPECT_EQ(Levels().at("scope:global:usd_day"), 0);
  EXPECT_TRUE(Reserve(route, 0, 60'000).ok());
}

TEST_P(PolicyTest, ABudgetNeedsAPrice) {
  auto route = policy_->Resolve("workflow:nightly", "anthropic", "mystery-model");
  EXPECT_EQ(route.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(route.status().message(), AllOf(HasSubstr("mystery-model"), HasSubstr("[prices]")));
  EXPECT_TRUE(policy_->Resolve("team:eng", "anthropic", "mystery-model").ok());
}

TEST_P(PolicyTest, UnknownScopesFallBackAndStatsSaySo) {
  const Route& adhoc = RouteOf("team:eng:adhoc");
  EXPECT_TRUE(adhoc.fell_back());
  EXPECT_EQ(adhoc.path(), (std::vector<std::string>{"team:eng", "global"}));
  const Route& stranger = RouteOf("workflow:unknown");
  EXPECT_EQ(stranger.path(), (std::vector<std::string>{"global"}));
  ASSERT_TRUE(Reserve(adhoc, 1, 1).ok());
  ASSERT_TRUE(Reserve(adhoc, 1, 1).ok());
  ASSERT_TRUE(Reserve(stranger, 1, 1).ok());
  const PolicyStats stats = policy_->Stats();
  EXPECT_EQ(stats.fallbacks.at("team:eng:adhoc -> team:eng"), 2u);
  EXPECT_EQ(stats.fallbacks.at("workflow:unknown -> global"), 1u);
  EXPECT_EQ(stats.fallbacks.size(), 2u);
}

TEST_P(PolicyTest, ConcurrencyCapsHoldLeasesUntilSettledOrDropped) {
  const Route& route = RouteOf("team:eng");
  auto a = Reserve(route, 1, 1);
  auto b = Reserve(route, 1, 1);
  ASSERT_TRUE(a.ok() && b.ok());
  const auto before = Levels();
  auto c = Reserve(route, 1, 1);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(c.status().message(), HasSubstr("scope:team:eng:concurrency"));
  EXPECT_TRUE(IsConcurrencyFull(c.status()));
  EXPECT_FALSE(IsConcurrencyFull(Reserve(RouteOf("global"), 20'000, 1).status()));
  EXPECT_EQ(Levels(), before);  // a refusal takes nothing
  a->Settle({.input_tokens = 1, .output_tokens = 1});
  auto d = Reserve(route, 1, 1);
  ASSERT_TRUE(d.ok()) << d.status();
  {
    Permit dropped = *std::move(b);  // never settled
  }
  EXPECT_EQ(Levels().at("scope:team:eng:concurrency"), 1);
  // a, b (dropped unsettled) and d each paid their request.
  EXPECT_EQ(Levels().at("scope:team:eng:rpm"), 5 - 3);
}

TEST_P(PolicyTest, OutputPrechargeNoneChargesOutputOnlyWhenSettled) {
  auto config = ParseLimitsConfig(R"(
headroom = 1.0
[providers.anthropic]
output_tokens_per_minute = 6000
output_precharge = "none"
[providers.anthropic.burst]
output_tokens_per_minute = 1000
[scopes.global]
requests_per_minute = 60
)",
                                  "none.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  auto store = NewLocalStore(Clock::Fake(&clock_));
  auto policy = Policy::Create(*config, store.get());
  ASSERT_TRUE(policy.ok()) << policy.status();
  auto route = (*policy)->Resolve("global", "anthropic", "claude-sonnet-4");
  ASSERT_TRUE(route.ok());
  auto permit = (*policy)->Reserve(**route, 10, 5000, absl::ZeroDuration(), clock_.Now());
  ASSERT_TRUE(permit.ok()) << permit.status();  // 5000 > burst, but nothing pre-charged
  permit->Settle({.input_tokens = 10, .output_tokens = 400});
  EXPECT_EQ((*policy)->Stats().buckets[0].available, 600);
}

TEST_P(PolicyTest, ProviderFeedbackClampsAndHoldsOnlyProviderBuckets) {
  const Route& route = RouteOf("global");
  const auto before = Levels();
  policy_->ClampProvider(route, LimitKind::kRequestsPerMinute, 3, clock_.Now());
  policy_->ClampProvider(route, LimitKind::kInputTokensPerMinute, 50'000, clock_.Now());
  auto after = Levels();
  EXPECT_EQ(after.at("provider:anthropic:default:rpm"), 3);
  EXPECT_EQ(after.at("provider:anthropic:default:itpm"), 10'000);  // held less already
  EXPECT_EQ(after.at("scope:global:rpm"), before.at("scope:global:rpm"));

  // A quota 429 asked for 5 s: nothing goes to the provider before then, for
  // everyone on the store; the scope's own bucket is untouched.
  policy_->HoldProvider(route, clock_.Now() + 5 * kSec, clock_.Now());
  EXPECT_EQ(Levels().at("provider:anthropic:default:rpm"), 0);
  EXPECT_EQ(Levels().at("provider:anthropic:default:itpm"), 10'000);
  auto refused = Reserve(route, 1, 1);
  EXPECT_THAT(refused.status().message(), HasSubstr("provider:anthropic:default:rpm"));
  auto waits = Reserve(route, 1, 1, absl::Seconds(10));
  ASSERT_TRUE(waits.ok()) << waits.status();
  EXPECT_EQ(waits->wait_ns(), 5 * kSec);
}

// Provider accounts (one API key's buckets): the provider's limits, apart
// from the account-less buckets and every other account's; the scopes shared.
TEST_P(PolicyTest, AProviderAccountDrawsFromItsOwnProviderBucketsAndSharedScopes) {
  const auto before = Levels();
  EXPECT_FALSE(before.contains("provider:anthropic@aaaa:default:rpm"));  // opened lazily
  auto a = policy_->Resolve("team:eng", "anthropic", "claude-sonnet-4", "aaaa");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*policy_->Resolve("team:eng", "anthropic", "claude-sonnet-4", "aaaa"), *a);  // cached
  auto permit = Reserve(**a, 100, 50);
  ASSERT_TRUE(permit.ok()) << permit.status();
  const auto after = Levels();
  // The account's buckets: configured as the provider's, charged as it would be.
  EXPECT_EQ(after.at("provider:anthropic@aaaa:default:rpm"), 10 - 1);
  EXPECT_EQ(after.at("provider:anthropic@aaaa:default:itpm"), 10'000 - 100);
  EXPECT_EQ(after.at("provider:anthropic@aaaa:default:otpm"), 2'000 - 50);
  EXPECT_EQ(after.at("provider:anthropic@aaaa:default:tpd"), 100'000 - 150);
  // The account-less provider buckets are untouched; the scopes pay as always.
  for (const char* key : {"provider:anthropic:default:rpm", "provider:anthropic:default:itpm"}) {
    EXPECT_EQ(after.at(key), before.at(key)) << key;
  }
  EXPECT_EQ(after.at("scope:team:eng:rpm"), before.at("scope:team:eng:rpm") - 1);
  EXPECT_EQ(after.at("scope:global:rpm"), before.at("scope:global:rpm") - 1);
  EXPECT_EQ(after.at("scope:team:eng:concurrency"), 1);
  permit->Settle({.input_tokens = 40, .output_tokens = 10});
  EXPECT_EQ(Levels().at("provider:anthropic@aaaa:default:itpm"), 10'000 - 40);

  // Another model class of the same account has buckets of its own too.
  auto legacy = policy_->Resolve("global", "anthropic", "claude-2.1", "aaaa");
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  ASSERT_TRUE(Reserve(**legacy, 1, 1).ok());
  EXPECT_EQ(Levels().at("provider:anthropic@aaaa:legacy:rpm"), 10 - 1);

  // The stats list them under the account's owner.
  bool listed = false;
  for (const PolicyStats::Bucket& b : policy_->Stats().buckets) {
    if (b.key != "provider:anthropic@aaaa:default:itpm") continue;
    listed = true;
    EXPECT_EQ(b.owner, "anthropic@aaaa/default");
    EXPECT_EQ(b.kind, LimitKind::kInputTokensPerMinute);
    EXPECT_EQ(b.limit, 60'000u);
    EXPECT_EQ(b.capacity, 10'000);
  }
  EXPECT_TRUE(listed);
}

TEST_P(PolicyTest, FeedbackForOneAccountNeverTouchesAnotherOrTheSharedBuckets) {
  auto a = policy_->Resolve("global", "anthropic", "claude-sonnet-4", "aaaa");
  auto b = policy_->Resolve("global", "anthropic", "claude-sonnet-4", "bbbb");
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  const PolicyStats stats_before = policy_->Stats();
  auto capacity = [](const PolicyStats& stats, absl::string_view key) -> int64_t {
    for (const auto& bucket : stats.buckets) {
      if (bucket.key == key) return bucket.capacity;
    }
    return -1;
  };
  const auto before = Levels();
  policy_->ClampProvider(**a, LimitKind::kRequestsPerMinute, 2, clock_.Now());
  policy_->ClampProvider(**a, LimitKind::kInputTokensPerMinute, 1'000, clock_.Now());
  policy_->LearnProviderRate(**a, LimitKind::kRequestsPerMinute, 60);
  policy_->LearnProviderRate(**a, LimitKind::kInputTokensPerMinute, 6'000);
  policy_->HoldProvider(**a, clock_.Now() + 5 * kSec, clock_.Now());
  const auto after = Levels();
  EXPECT_EQ(after.at("provider:anthropic@aaaa:default:rpm"), 0);  // held
  EXPECT_LE(after.at("provider:anthropic@aaaa:default:itpm"), 1'000);
  const PolicyStats stats_after = policy_->Stats();
  EXPECT_LT(capacity(stats_after, "provider:anthropic@aaaa:default:itpm"),
            capacity(stats_before, "provider:anthropic@aaaa:default:itpm"));  // learned
  for (const auto& [key, level] : before) {
    if (absl::StrContains(key, "@aaaa:")) continue;
    EXPECT_EQ(after.at(key), level) << key;
    EXPECT_EQ(capacity(stats_after, key), capacity(stats_before, key)) << key;
  }
  auto refused = Reserve(**a, 1, 1);
  EXPECT_THAT(refused.status().message(), HasSubstr("provider:anthropic@aaaa:default:rpm"));
  EXPECT_TRUE(Reserve(**b, 1, 1).ok());
  EXPECT_TRUE(Reserve(RouteOf("global"), 1, 1).ok());
}

TEST_P(PolicyTest, AnAccountIsShortLowercaseAlphanumeric) {
  for (const char* bad : {"ABC", "a-b", "a:b", "a@b", "0123456789abcdef0123456789abcdef0"}) {
    auto route = policy_->Resolve("global", "anthropic", "claude-sonnet-4", bad);
    EXPECT_EQ(route.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(route.status().message(), HasSubstr("account name must be 1 to 32")) << bad;
  }
  // An unconfigured provider has no buckets to keep per account.
  auto other = policy_->Resolve("global", "mistral", "m", "abc");
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_TRUE(Reserve(**other, 1, 1).ok());
  for (const auto& [key, level] : Levels()) EXPECT_FALSE(absl::StrContains(key, "@")) << key;
}

INSTANTIATE_TEST_SUITE_P(Stores, PolicyTest,
                         ::testing::Values(StoreKind::kLocal, StoreKind::kSegment),
                         [](const auto& info) {
                           return info.param == StoreKind::kLocal ? "Local" : "Segment";
                         });

// A segment's slots are bounded: an account whose buckets do not fit gets
// the store's error, naming the segment, and nothing crashes.
TEST(PolicyAccountsTest, AnAccountThatDoesNotFitInTheSegmentIsRefused) {
  ScratchSegment scratch;
  FakeClock clock{1'000 * kSec};
  SegmentOptions options;
  options.clock = Clock::Fake(&clock);
  options.slots = 6;  // the config's 4 buckets, and room for one account's rpm and itpm only
  auto segment = Segment::Open(scratch.path(), options);
  ASSERT_TRUE(segment.ok()) << segment.status();
  auto store = NewSegmentStore(segment->get());
  auto config = ParseLimitsConfig(R"(
[providers.anthropic]
requests_per_minute = 60
input_tokens_per_minute = 6000
[scopes.global]
requests_per_minute = 60
tokens_per_minute = 6000
)",
                                  "t.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  auto policy = Policy::Create(*config, store.get());
  ASSERT_TRUE(policy.ok()) << policy.status();
  ASSERT_TRUE((*policy)->Resolve("global", "anthropic", "m", "one").ok());
  auto full = (*policy)->Resolve("global", "anthropic", "m", "two");
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
  EXPECT_THAT(full.status().message(), HasSubstr(scratch.path()));
  // What fitted still works.
  auto one = (*policy)->Resolve("global", "anthropic", "m", "one");
  ASSERT_TRUE(one.ok());
  EXPECT_TRUE((*policy)->Reserve(**one, 1, 1, absl::ZeroDuration(), clock.Now()).ok());
}

TEST(CharacterEstimatorTest, IsTheDocumentedHeuristic) {
  const CharacterEstimator estimator;
  EXPECT_EQ(estimator.EstimateInputTokens("anthropic", "m", std::string(70, 'x')), 20u + 8u);
  EXPECT_EQ(estimator.EstimateInputTokens("anthropic", "m", std::string(71, 'x')), 21u + 8u);
  EXPECT_EQ(estimator.EstimateInputTokens("openai", "m", std::string(80, 'x')), 20u + 8u);
  EXPECT_EQ(estimator.EstimateInputTokens("openai", "m", ""), 8u);
}

}  // namespace
}  // namespace sluice
