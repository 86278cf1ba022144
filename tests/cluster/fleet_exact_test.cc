// Exact mode through the policy: a Policy over a FleetStore in exact mode
// decides every route's token buckets in Redis, in one round trip each.
//   * the seam: one trace of Reserve/Settle/Cancel decides alike through a
//     Policy over Redis (at fixed instants) and through a Policy over a local
//     store on the fake clock: the same grants, waits and bottlenecks;
//   * two hosts (two FleetStores, two Policies) share every bucket of a
//     route: together they admit at most C + R·t;
//   * Redis stopped: each on_redis_down does what it promises, and what a
//     host admitted on its share is debited once Redis is back;
//   * provider feedback (clamp, hold) and stats act on Redis's buckets.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/clock.h"
#include "sluice/fleet_store.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/redis_buckets.h"
#include "sluice/store.h"
#include "tests/tools/redis_server.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000 * kMs;
// Redis's fixed instants: a whole second of the Unix epoch, plus the trace's.
constexpr int64_t kEpochNs = int64_t{1'800'000'000} * kSec;

// Scope and provider buckets on one route, with different rates and bursts
// so that either may be the bottleneck.
constexpr char kConfig[] = R"(
headroom = 1.0

[providers.anthropic]
requests_per_minute = 600
input_tokens_per_minute = 60000
[providers.anthropic.burst]
requests_per_minute = 10
input_tokens_per_minute = 3000

[scopes.global]
requests_per_minute = 120
[scopes.global.burst]
requests_per_minute = 4
)";

class FleetExactTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(redis_.ok());
    auto config = ParseLimitsConfig(kConfig, "fleet_exact_test.toml");
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *std::move(config);
  }

  FleetOptions Options(const std::string& host, RedisDown down = RedisDown::kLocalShare) {
    FleetOptions o;
    o.redis = {.port = redis_.port(), .timeout = absl::Seconds(2)};
    o.mode = FleetMode::kExact;
    o.on_redis_down = down;
    o.host = host;
    o.start_refiller = false;
    return o;
  }

  struct Host {
    std::unique_ptr<Store> local;
    std::unique_ptr<FleetStore> fleet;
    std::unique_ptr<Policy> policy;
  };

  Host NewHost(const std::string& name, RedisDown down = RedisDown::kLocalShare,
               uint32_t expected_hosts = 1) {
    Host h;
    h.local = NewLocalStore(Clock::Fake(&clock_));
    FleetOptions options = Options(name, down);
    options.expected_hosts = expected_hosts;
    auto fleet = FleetStore::Create(h.local.get(), options);
    EXPECT_TRUE(fleet.ok()) << fleet.status();
    h.fleet = *std::move(fleet);
    h.fleet->SetTimeForTesting(kEpochNs + clock_.Now());
    auto policy = Policy::Create(config_, h.fleet.get());
    EXPECT_TRUE(policy.ok()) << policy.status();
    h.policy = *std::move(policy);
    return h;
  }

  // The fleet's level of bucket `key` of `config` in Redis, at the trace's
  // instant.
  int64_t FleetLevel(const std::string& key, const BucketConfig& config) {
    auto b = RedisBuckets::Connect({.port = redis_.port(), .timeout = absl::Seconds(2)});
    EXPECT_TRUE(b.ok()) << b.status();
    if (!b.ok()) return -1;
    (*b)->SetTimeForTesting(kEpochNs + clock_.Now());
    auto l = (*b)->Available({{key, config, 0}});
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() ? static_cast<int64_t>((*l)[0]) : -1;
  }

  static int64_t Level(const Policy& policy, const std::string& key) {
    for (const auto& b : policy.Stats().buckets) {
      if (b.key == key) return b.available;
    }
    return -1;
  }

  RedisServer redis_;
  LimitsConfig config_;
  FakeClock clock_{1'000 * kMs};
};

const char kScopeRpm[] = "scope:global:rpm";
const char kProviderItpm[] = "provider:anthropic:default:itpm";

TEST_F(FleetExactTest, EveryBucketOfTheConfigurationIsDecidedInRedis) {
  const Host h = NewHost("a");
  ASSERT_NE(h.fleet->remote_buckets(), nullptr);
  std::vector<std::string> keys;
  for (const auto& b : h.policy->Stats().buckets) keys.push_back(b.key);
  EXPECT_THAT(keys, ::testing::Contains(kScopeRpm));
  EXPECT_THAT(keys, ::testing::Contains(kProviderItpm));
}

// One step of the trace: at `at_ms`, reserve (in, out) waiting at most
// `wait_ms`, then settle to `settle_in` input tokens (-1: keep; -2: cancel).
struct Step {
  int64_t at_ms;
  uint64_t in;
  int64_t wait_ms;
  int64_t settle_in;
};

struct Answer {
  absl::StatusCode code;
  int64_t wait_ns;
  std::string bottleneck;
  bool operator==(const Answer&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Answer& o) {
  return os << "{" << absl::StatusCodeToString(o.code) << ", " << o.wait_ns << ", '" << o.bottleneck
            << "'}";
}

TEST_F(FleetExactTest, DecidesAsTheLocalPolicyOnTheFakeClock) {
  const std::vector<Step> trace = {
      {0, 100, 0, -1},     {0, 100, 0, 50},    {1, 100, 0, -2},   {2, 100, 0, 400},
      {3, 1000, 0, -1},    {3, 1000, 0, -1},   {4, 900, 0, -1},   {4, 900, 2000, -1},
      {5, 50, 0, -1},      {6, 50, 10000, -2}, {700, 10, 0, -1},  {701, 10, 0, 3000},
      {702, 10, 600, -1},  {900, 4000, 0, -1}, {1500, 10, 0, -1}, {1501, 10, 0, -1},
      {1502, 10, 0, -1},   {1503, 10, 0, -1},  {1504, 10, 0, -1}, {1505, 10, 499, -1},
      {1506, 10, 501, -2}, {4000, 2500, 0, 0}, {4001, 10, 0, -1}, {9000, 10, 0, -1},
  };
  FakeClock local_clock(1'000 * kMs);
  auto local_store = NewLocalStore(Clock::Fake(&local_clock));
  auto local = Policy::Create(config_, local_store.get());
  ASSERT_TRUE(local.ok());
  Host fleet = NewHost("seam");
  auto route_of = [](Policy& p) { return *p.Resolve("global", "anthropic", "claude-sonnet-4"); };
  const Route* local_route = route_of(**local);
  const Route* fleet_route = route_of(*fleet.policy);
  int granted = 0, refused = 0, waited = 0;
  for (const Step& s : trace) {
    const int64_t now = 1'000 * kMs + s.at_ms * kMs;
    local_clock.Set(now);
    clock_.Set(now);
    fleet.fleet->SetTimeForTesting(kEpochNs + now);
    std::vector<Answer> outcomes;
    for (Policy* p : {local->get(), fleet.policy.get()}) {
      const Route* route = p == local->get() ? local_route : fleet_route;
      auto permit = p->Reserve(*route, s.in, 0, absl::Milliseconds(s.wait_ms), now);
      if (!permit.ok()) {
        outcomes.push_back({permit.status().code(), 0, ""});
        continue;
      }
      outcomes.push_back(
          {absl::StatusCode::kOk, permit->wait_ns(), std::string(permit->bottleneck())});
      if (s.settle_in == -2) permit->Cancel();
      if (s.settle_in >= 0) permit->Settle({.input_tokens = static_cast<uint64_t>(s.settle_in)});
    }
    ASSERT_EQ(outcomes[0], outcomes[1]) << "at " << s.at_ms << " ms";
    granted += outcomes[0].code == absl::StatusCode::kOk;
    refused += outcomes[0].code != absl::StatusCode::kOk;
    waited += outcomes[0].wait_ns > 0;
    // And the buckets hold the same after each step.
    for (const char* key : {kScopeRpm, kProviderItpm}) {
      ASSERT_EQ(Level(**local, key), Level(*fleet.policy, key)) << key << " at " << s.at_ms;
    }
  }
  // The trace exercises every kind of outcome.
  EXPECT_GT(granted, 5);
  EXPECT_GT(refused, 3);
  EXPECT_GT(waited, 1);
}

TEST_F(FleetExactTest, TwoHostsShareEveryBucketOfARoute) {
  Host a = NewHost("a"), b = NewHost("b");
  const Route* ra = *a.policy->Resolve("global", "anthropic", "claude-sonnet-4");
  const Route* rb = *b.policy->Resolve("global", "anthropic", "claude-sonnet-4");
  // The scope's 120/min with a burst of 4 is the tightest bucket for
  // requests; 10 tokens a request keeps the token bucket out of the way.
  int64_t admitted = 0;
  const int64_t start = clock_.Now();
  const int64_t span_ms = 10'000;
  for (int64_t t = 0; t <= span_ms; t += 50) {
    const int64_t now = start + t * kMs;
    clock_.Set(now);
    for (Host* h : {&a, &b}) {
      h->fleet->SetTimeForTesting(kEpochNs + now);
      for (int i = 0; i < 3; ++i) {
        auto permit = h->policy->Reserve(h == &a ? *ra : *rb, 10, 0, absl::ZeroDuration(), now);
        if (permit.ok()) ++admitted;
      }
    }
  }
  // C + R·t: 4 + 2/s over 10 s.
  const int64_t bound = 4 + 2 * span_ms / 1000;
  EXPECT_LE(admitted, bound);
  EXPECT_GE(admitted, bound * 97 / 100);
}

TEST_F(FleetExactTest, ClampHoldAndStatsActOnRedis) {
  Host a = NewHost("a"), b = NewHost("b");
  const Route* ra = *a.policy->Resolve("global", "anthropic", "claude-sonnet-4");
  const BucketConfig itpm{Rate::PerMinute(60000), 3000};
  a.policy->ClampProvider(*ra, LimitKind::kInputTokensPerMinute, 1000, clock_.Now());
  EXPECT_EQ(FleetLevel(kProviderItpm, itpm), 1000);
  EXPECT_EQ(Level(*b.policy, kProviderItpm), 1000);  // the other host sees it
  // Held for a second: nothing in the provider's request bucket until then.
  a.policy->HoldProvider(*ra, clock_.Now() + kSec, clock_.Now());
  const BucketConfig rpm{Rate::PerMinute(600), 10};
  EXPECT_EQ(FleetLevel("provider:anthropic:default:rpm", rpm), 0);
  const Route* rb = *b.policy->Resolve("global", "anthropic", "claude-sonnet-4");
  auto refused = b.policy->Reserve(*rb, 1, 0, absl::ZeroDuration(), clock_.Now());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(refused.status().message(), HasSubstr("provider:anthropic:default:rpm"));
  clock_.Advance(kSec);
  for (Host* h : {&a, &b}) h->fleet->SetTimeForTesting(kEpochNs + clock_.Now());
  EXPECT_EQ(FleetLevel("provider:anthropic:default:rpm", rpm), 1);
  EXPECT_TRUE(b.policy->Reserve(*rb, 1, 0, absl::ZeroDuration(), clock_.Now()).ok());
}

TEST_F(FleetExactTest, ABudgetRefusalGivesTheBucketsNothingToUndo) {
  // Budgets stay on the host's store; a refusal there takes nothing from
  // Redis (budgets are taken before the round trip).
  std::string toml = kConfig;
  const std::string scope = "[scopes.global]\n";
  toml.insert(toml.find(scope) + scope.size(), "usd_per_day = 0.001\n");
  toml += "[prices.\"claude-sonnet-4*\"]\ninput = 3.0\noutput = 15.0\n";
  auto config = ParseLimitsConfig(toml, "budget.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  config_ = *config;
  Host a = NewHost("a");
  const Route* r = *a.policy->Resolve("global", "anthropic", "claude-sonnet-4");
  auto refused = a.policy->Reserve(*r, 1000, 0, absl::ZeroDuration(), clock_.Now());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kOutOfRange) << refused.status();
  EXPECT_EQ(FleetLevel(kScopeRpm, {Rate::PerMinute(120), 4}), 4);
  EXPECT_EQ(FleetLevel(kProviderItpm, {Rate::PerMinute(60000), 3000}), 3000);
  EXPECT_EQ(a.policy->Stats().rollbacks, 1u);
}

// Redis stopped: each on_redis_down, then Redis back (empty, on the same
// port) and what the host admitted on its share debited from it.
class FleetExactOutageTest : public FleetExactTest,
                             public ::testing::WithParamInterface<RedisDown> {};

TEST_P(FleetExactOutageTest, GoesByOnRedisDown) {
  // Two hosts alive: this host's share is half of every bucket.
  {
    auto marker = RedisBuckets::Connect({.port = redis_.port(), .timeout = absl::Seconds(2)});
    ASSERT_TRUE(marker.ok());
    (*marker)->SetTimeForTesting(kEpochNs + clock_.Now());
    ASSERT_TRUE((*marker)->Lease({}, "a").ok());
    ASSERT_TRUE((*marker)->Lease({}, "b").ok());
  }
  Host a = NewHost("a", GetParam());
  const Route* r = *a.policy->Resolve("global", "anthropic", "claude-sonnet-4");
  ASSERT_TRUE(a.policy->Reserve(*r, 10, 0, absl::ZeroDuration(), clock_.Now()).ok());
  redis_.Stop();
  clock_.Advance(kMs);
  a.fleet->SetTimeForTesting(kEpochNs + clock_.Now());
  // During the outage: a permit cancelled, one settled above its estimate
  // (30 input tokens for 10), then as many as go.
  const absl::Time start = absl::Now();
  auto cancelled = a.policy->Reserve(*r, 10, 0, absl::ZeroDuration(), clock_.Now());
  if (cancelled.ok()) cancelled->Cancel();
  auto settled = a.policy->Reserve(*r, 10, 0, absl::ZeroDuration(), clock_.Now());
  if (settled.ok()) settled->Settle({.input_tokens = 30});
  int admitted = settled.ok() ? 1 : 0;
  absl::Status last = settled.status();
  for (int i = 0; i < 10; ++i) {
    auto permit = a.policy->Reserve(*r, 10, 0, absl::ZeroDuration(), clock_.Now());
    if (permit.ok()) ++admitted;
    if (!permit.ok()) last = permit.status();
  }
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));  // never waits on Redis past its timeout
  switch (GetParam()) {
    case RedisDown::kLocalShare:
      EXPECT_TRUE(cancelled.ok()) << cancelled.status();
      EXPECT_EQ(admitted, 2);  // half the scope's burst of 4
      EXPECT_EQ(last.code(), absl::StatusCode::kDeadlineExceeded) << last;
      break;
    case RedisDown::kFailClosed:
      EXPECT_EQ(admitted, 0);
      EXPECT_EQ(last.code(), absl::StatusCode::kUnavailable);
      EXPECT_THAT(last.message(), HasSubstr(absl::StrCat("Redis at 127.0.0.1:", redis_.port())));
      EXPECT_THAT(last.message(), HasSubstr("fail_closed"));
      break;
    case RedisDown::kFailOpen:
      EXPECT_EQ(admitted, 11);
      break;
  }
  ASSERT_TRUE(redis_.Restart());
  // The next call Redis answers pays what the share admitted first (the
  // link may back off for a moment after the restart).
  int64_t level = -1;
  for (int i = 0; i < 100 && level != 4 - (GetParam() == RedisDown::kLocalShare ? 2 : 0); ++i) {
    a.policy->Stats();
    level = FleetLevel(kScopeRpm, {Rate::PerMinute(120), 4});
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(level, GetParam() == RedisDown::kLocalShare ? 2 : 4);
  EXPECT_EQ(FleetLevel(kProviderItpm, {Rate::PerMinute(60000), 3000}),
            GetParam() == RedisDown::kLocalShare ? 3000 - 30 - 10 : 3000);
  // And decisions are Redis's again.
  EXPECT_TRUE(a.policy->Reserve(*r, 10, 0, absl::ZeroDuration(), clock_.Now()).ok());
  EXPECT_EQ(FleetLevel(kScopeRpm, {Rate::PerMinute(120), 4}),
            GetParam() == RedisDown::kLocalShare ? 1 : 3);
}

INSTANTIATE_TEST_SUITE_P(Modes, FleetExactOutageTest,
                         ::testing::Values(RedisDown::kLocalShare, RedisDown::kFailClosed,
                                           RedisDown::kFailOpen));

}  // namespace
}  // namespace sluice
