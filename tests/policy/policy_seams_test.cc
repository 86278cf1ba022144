// The policy's promises where it meets the store, feedback and other
// processes: a dead process's leases come back on the client's path
// (Reserve), refunds after a learned limit return the share taken, a learned
// limit survives processes that start later, a quota hold survives the
// failure settle that follows it, and a file without a "global" scope works.
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/policy.h"
#include "sluice/segment.h"
#include "tests/store/segment_test_util.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kSec = 1'000'000'000;

LimitsConfig MustParse(const char* toml) {
  auto config = ParseLimitsConfig(toml, "policy_seams_test.toml");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *std::move(config) : LimitsConfig{};
}

// A policy over a segment at `path`, as one process would hold it.
struct Attached {
  std::unique_ptr<Segment> segment;
  std::unique_ptr<Store> store;
  std::unique_ptr<Policy> policy;
};

absl::StatusOr<Attached> Attach(const std::string& path, const LimitsConfig& config,
                                FakeClock* clock) {
  Attached a;
  SegmentOptions options;
  if (clock != nullptr) options.clock = Clock::Fake(clock);
  absl::StatusOr<std::unique_ptr<Segment>> segment = Segment::Open(path, options);
  if (!segment.ok()) return segment.status();
  a.segment = *std::move(segment);
  a.store = NewSegmentStore(a.segment.get());
  absl::StatusOr<std::unique_ptr<Policy>> policy = Policy::Create(config, a.store.get());
  if (!policy.ok()) return policy.status();
  a.policy = *std::move(policy);
  return a;
}

// A policy over process memory on `clock`, and the route of an Anthropic
// request in the global scope (null route when either fails).
struct LocalRoute {
  std::unique_ptr<Store> store;
  std::unique_ptr<Policy> policy;
  const Route* route = nullptr;
};

LocalRoute MakeLocalRoute(const LimitsConfig& config, FakeClock* clock) {
  LocalRoute local;
  local.store = NewLocalStore(Clock::Fake(clock));
  absl::StatusOr<std::unique_ptr<Policy>> policy = Policy::Create(config, local.store.get());
  EXPECT_TRUE(policy.ok()) << policy.status();
  if (!policy.ok()) return local;
  local.policy = *std::move(policy);
  absl::StatusOr<const Route*> route =
      local.policy->Resolve("global", "anthropic", "claude-sonnet-4");
  EXPECT_TRUE(route.ok()) << route.status();
  if (route.ok()) local.route = *route;
  return local;
}

// A copy: the stats are usually a temporary.
std::optional<PolicyStats::Bucket> FindBucket(const PolicyStats& stats, absl::string_view key) {
  for (const auto& b : stats.buckets) {
    if (b.key == key) return b;
  }
  return std::nullopt;
}

// `sluice batch` killed while holding both leases of a cap of 2: the next
// process's Reserve (the client's path) takes them back instead of refusing
// every request. (Only Acquire used to reclaim.)
TEST(PolicySeamsTest, ReserveTakesBackTheLeasesOfAKilledProcess) {
  ScratchSegment scratch;
  const LimitsConfig config = MustParse("[scopes.global]\nmax_concurrency = 2\n");
  auto parent = Attach(scratch.path(), config, nullptr);
  ASSERT_TRUE(parent.ok()) << parent.status();
  EXPECT_EQ(InChild([&] {
              auto child = Attach(scratch.path(), config, nullptr);
              if (!child.ok()) return 1;
              auto route = child->policy->Resolve("global", "anthropic", "m");
              if (!route.ok()) return 2;
              auto a = child->policy->Reserve(**route, 1, 1, absl::ZeroDuration(), 0);
              auto b = child->policy->Reserve(**route, 1, 1, absl::ZeroDuration(), 0);
              if (!a.ok() || !b.ok()) return 3;
              raise(SIGKILL);
              return 4;
            }),
            128 + SIGKILL);
  EXPECT_EQ(parent->policy->Stats().concurrency[0].in_flight, 2u);  // the dead child's
  auto route = parent->policy->Resolve("global", "anthropic", "m");
  ASSERT_TRUE(route.ok());
  for (int i = 0; i < 2; ++i) {
    auto permit = parent->policy->Reserve(**route, 1, 1, absl::ZeroDuration(), 0);
    ASSERT_TRUE(permit.ok()) << "lease " << i << ": " << permit.status();
    permit->Cancel();
  }
  EXPECT_EQ(parent->policy->Stats().concurrency[0].in_flight, 0u);
}

// A process that starts after one died holding leases cleans up after it at
// once, whether or not the cap is ever full again.
TEST(PolicySeamsTest, ANewPolicyTakesBackTheLeasesOfDeadProcesses) {
  ScratchSegment scratch;
  const LimitsConfig config = MustParse("[scopes.global]\nmax_concurrency = 5\n");
  EXPECT_EQ(InChild([&] {
              auto child = Attach(scratch.path(), config, nullptr);
              if (!child.ok()) return 1;
              auto route = child->policy->Resolve("global", "anthropic", "m");
              auto a = child->policy->Reserve(**route, 1, 1, absl::ZeroDuration(), 0);
              if (!a.ok()) return 2;
              raise(SIGKILL);
              return 3;
            }),
            128 + SIGKILL);
  auto later = Attach(scratch.path(), config, nullptr);
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(later->policy->Stats().concurrency[0].in_flight, 0u);
}

// Header feedback lowers the output bucket while a request is in flight; its
// settle then refunds the unused pre-charge. The refund returns the share of
// the bucket that was taken, not the permits at the new, slower rate.
TEST(PolicySeamsTest, ASettleAfterALearnedLimitReturnsTheShareTaken) {
  const LimitsConfig config = MustParse(R"(
headroom = 1.0
[providers.anthropic]
output_tokens_per_minute = 80000
[providers.anthropic.burst]
output_tokens_per_minute = 80000
)");
  FakeClock clock(1'000 * kSec);
  LocalRoute local = MakeLocalRoute(config, &clock);
  ASSERT_NE(local.route, nullptr);
  Policy* policy = local.policy.get();
  const Route& route = *local.route;
  auto half = policy->Reserve(route, 0, 40'000, absl::ZeroDuration(), clock.Now());
  ASSERT_TRUE(half.ok()) << half.status();
  auto permit = policy->Reserve(route, 0, 4'096, absl::ZeroDuration(), clock.Now());
  ASSERT_TRUE(permit.ok()) << permit.status();
  policy->LearnProviderRate(route, LimitKind::kOutputTokensPerMinute, 7'200);
  permit->Settle({.input_tokens = 0, .output_tokens = 200});
  const std::optional<PolicyStats::Bucket> otpm =
      FindBucket(policy->Stats(), "provider:anthropic:default:otpm");
  ASSERT_TRUE(otpm.has_value());
  EXPECT_EQ(otpm->capacity, 7'200);
  EXPECT_NEAR(otpm->percent_available, 49.75, 0.05);  // it used to be 99.0
}

// Processes that start after a limit was learned neither raise it nor forget
// it. (Every Policy::Create used to reconfigure the bucket to the file's rate.)
TEST(PolicySeamsTest, ALearnedLimitSurvivesProcessesThatStartLater) {
  ScratchSegment scratch;
  const LimitsConfig config = MustParse(R"(
headroom = 1.0
[providers.anthropic]
requests_per_minute = 1000
[providers.anthropic.burst]
requests_per_minute = 100
)");
  FakeClock clock(1'000 * kSec);
  auto first = Attach(scratch.path(), config, &clock);
  ASSERT_TRUE(first.ok()) << first.status();
  auto route = first->policy->Resolve("global", "anthropic", "m");
  ASSERT_TRUE(route.ok());
  first->policy->LearnProviderRate(**route, LimitKind::kRequestsPerMinute, 100);
  const std::string key = "provider:anthropic:default:rpm";
  EXPECT_EQ(FindBucket(first->policy->Stats(), key)->capacity, 10);

  auto later = Attach(scratch.path(), config, &clock);  // a `sluice call` starting now
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(FindBucket(later->policy->Stats(), key)->capacity, 10);
  EXPECT_EQ(FindBucket(first->policy->Stats(), key)->capacity, 10);
  EXPECT_EQ(InChild([&] {
              auto child = Attach(scratch.path(), config, &clock);
              return child.ok() ? 0 : 1;
            }),
            0);
  EXPECT_EQ(FindBucket(first->policy->Stats(), key)->capacity, 10);

  // New evidence from the provider, seen by the later process, is shared too.
  auto later_route = later->policy->Resolve("global", "anthropic", "m");
  ASSERT_TRUE(later_route.ok());
  later->policy->LearnProviderRate(**later_route, LimitKind::kRequestsPerMinute, 1000);
  EXPECT_EQ(FindBucket(first->policy->Stats(), key)->capacity, 100);
}

// On a route without a provider requests bucket a quota 429 holds the token
// buckets; the failure settle that follows refunds the output pre-charge,
// which used to shorten the hold.
TEST(PolicySeamsTest, AFailureSettleDoesNotShortenAQuotaHold) {
  const LimitsConfig config = MustParse(R"(
headroom = 1.0
[providers.anthropic]
input_tokens_per_minute = 60000
output_tokens_per_minute = 60000
[providers.anthropic.burst]
input_tokens_per_minute = 60000
output_tokens_per_minute = 60000
)");
  FakeClock clock(1'000 * kSec);
  LocalRoute local = MakeLocalRoute(config, &clock);
  ASSERT_NE(local.route, nullptr);
  Policy* policy = local.policy.get();
  const Route& route = *local.route;
  auto permit = policy->Reserve(route, 1'000, 30'000, absl::ZeroDuration(), clock.Now());
  ASSERT_TRUE(permit.ok()) << permit.status();
  policy->HoldProvider(route, clock.Now() + 20 * kSec, clock.Now());
  permit->Settle({.input_tokens = 1'000});  // the request failed: no output came
  auto next = policy->Reserve(route, 1, 1, absl::Seconds(60), clock.Now());
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_GE(next->wait_ns(), 20 * kSec);
}

// A file with only provider limits: every request runs under an implicit,
// unlimited "global" scope. (It used to fail every request.)
TEST(PolicySeamsTest, AFileWithoutScopesHasAnImplicitGlobal) {
  const LimitsConfig config = MustParse(R"(
[providers.anthropic]
requests_per_minute = 1000
)");
  auto store = NewLocalStore();
  auto policy = Policy::Create(config, store.get());
  ASSERT_TRUE(policy.ok()) << policy.status();
  for (const char* scope : {"global", "team:marketing"}) {
    auto route = (*policy)->Resolve(scope, "anthropic", "claude-sonnet-4");
    ASSERT_TRUE(route.ok()) << scope << ": " << route.status();
    EXPECT_EQ((*route)->path(), std::vector<std::string>{"global"});
    auto permit =
        (*policy)->Reserve(**route, 10, 10, absl::ZeroDuration(), Clock::MonotonicNanos());
    EXPECT_TRUE(permit.ok()) << permit.status();
  }
  // A budget without a price is still a configuration problem, named as such.
  const LimitsConfig budget = MustParse("[scopes.global]\nusd_per_day = 5.0\n");
  auto store2 = NewLocalStore();
  auto policy2 = Policy::Create(budget, store2.get());
  ASSERT_TRUE(policy2.ok());
  auto route = (*policy2)->Resolve("global", "anthropic", "unpriced-model");
  EXPECT_EQ(route.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(route.status().message(), HasSubstr("[prices]"));
}

}  // namespace
}  // namespace sluice
