// The client's cold start on a fake clock and a scripted provider: until the
// provider's rate-limit headers have been seen for a route's provider
// buckets, the first request goes alone; its headers size the buckets' burst
// (kept in the store for every process); a provider missing from the limits
// file gets its buckets from its `*-limit` headers.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/client.h"
#include "sluice/policy.h"
#include "sluice/segment.h"
#include "sluice/store.h"
#include "tests/client/scheduler_rig.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;
using namespace scheduler_rig;

// A provider whose request bucket holds `capacity` permits and refills at
// `rpm` a minute (continuously), saying so in Anthropic's headers.
// Independent of sluice's cells: plain arithmetic on the fake clock.
class ShortBucketProvider {
 public:
  ShortBucketProvider(const FakeClock* clock, double rpm, double capacity,
                      absl::Duration latency = absl::Milliseconds(50))
      : clock_(clock), rpm_(rpm), capacity_(capacity), tokens_(capacity), latency_(latency) {}

  ScriptedReply Answer() {
    const int64_t now = clock_->Now();
    tokens_ = std::min(capacity_, tokens_ + static_cast<double>(now - last_) * rpm_ / 60e9);
    last_ = now;
    const bool admitted = tokens_ >= 1;
    if (admitted) tokens_ -= 1;
    ScriptedReply reply =
        admitted ? AnthropicOk(latency_) : AnthropicError(429, "rate_limit_error");
    reply.latency = latency_;
    reply.headers.Set("anthropic-ratelimit-requests-limit", absl::StrCat(std::lround(rpm_)));
    reply.headers.Set("anthropic-ratelimit-requests-remaining",
                      absl::StrCat(static_cast<int64_t>(std::floor(tokens_))));
    if (!admitted) {
      ++limited_;
      reply.headers.Set("retry-after", "1");
    }
    return reply;
  }
  int limited() const { return limited_; }

 private:
  const FakeClock* clock_;
  const double rpm_;
  const double capacity_;
  double tokens_;
  const absl::Duration latency_;
  int64_t last_ = kStart;
  int limited_ = 0;
};

// 600 a minute, 540 after headroom, with sluice's default burst of 6 s (54
// requests), against a provider whose bucket holds one second (10).
constexpr char kSixHundred[] = R"(
headroom = 0.9
[providers.anthropic]
requests_per_minute = 600
)";

constexpr char kRpmKey[] = "provider:anthropic:default:rpm";

std::optional<PolicyStats::Bucket> FindBucket(const Policy& policy, absl::string_view key) {
  for (const PolicyStats::Bucket& b : policy.Stats().buckets) {
    if (b.key == key) return b;
  }
  return std::nullopt;
}

// Runs `n` requests at once through `rig` against `provider`.
std::vector<CallResult> RunMany(Rig& rig, int n) {
  std::vector<CallRequest> requests(n, CallRequest::Simple("m", "hi", 4));
  return RunAll(rig, std::move(requests));
}

TEST(ColdStartTest, TheFirstRequestGoesAloneAndItsHeadersSizeTheBurst) {
  std::optional<ShortBucketProvider> provider;
  ClientOptions options = Options();
  options.retry.max_attempts = 10;
  Rig rig([&](const TransportRequest&) { return provider->Answer(); }, options, kSixHundred);
  provider.emplace(&rig.clock, 600, 10);
  const std::vector<CallResult> results = RunMany(rig, 40);
  for (const CallResult& r : results) EXPECT_TRUE(r.status.ok()) << r.status;
  const auto& sent = rig.transport->sent();
  ASSERT_EQ(sent.size(), 40u);
  EXPECT_EQ(sent[0].at_ns, kStart);
  // Nothing else went before the first response (50 ms) came back.
  EXPECT_EQ(sent[1].at_ns, kStart + 50 * kMs);
  // 9 remained after the first request: the provider's bucket holds 10, and
  // sluice's 4 (half the headroom's share, floor(10 * 0.9 / 2)).
  const std::optional<PolicyStats::Bucket> rpm = FindBucket(*rig.policy, kRpmKey);
  ASSERT_TRUE(rpm.has_value());
  EXPECT_EQ(rpm->capacity, 4);
  EXPECT_EQ(provider->limited(), 0);
}

// The same without the cold start: the configured burst of 54 meets a
// bucket of 10 (what the test above guards against).
TEST(ColdStartTest, WithoutItTheConfiguredBurstDraws429s) {
  std::optional<ShortBucketProvider> provider;
  ClientOptions options = Options();
  options.retry.max_attempts = 10;
  options.cold_start = false;
  Rig rig([&](const TransportRequest&) { return provider->Answer(); }, options, kSixHundred);
  provider.emplace(&rig.clock, 600, 10);
  RunMany(rig, 40);
  EXPECT_GE(provider->limited(), 20);
}

// A burst the file states is the user's word on the provider's bucket: no
// probe, and the headers do not shrink it.
TEST(ColdStartTest, AnExplicitBurstIsTrustedAsWritten) {
  std::optional<ShortBucketProvider> provider;
  ClientOptions options = Options();
  options.retry.max_attempts = 10;
  Rig rig([&](const TransportRequest&) { return provider->Answer(); }, options, R"(
headroom = 0.9
[providers.anthropic]
requests_per_minute = 600
[providers.anthropic.burst]
requests_per_minute = 10
)");
  provider.emplace(&rig.clock, 600, 10);
  RunMany(rig, 10);
  const auto& sent = rig.transport->sent();
  ASSERT_EQ(sent.size(), 10u);
  EXPECT_EQ(sent[9].at_ns, kStart) << "the ten went at once, none waited for a probe";
  const std::optional<PolicyStats::Bucket> rpm = FindBucket(*rig.policy, kRpmKey);
  ASSERT_TRUE(rpm.has_value());
  EXPECT_EQ(rpm->capacity, 10);
  EXPECT_EQ(provider->limited(), 0);
}

// Half the headroom's share of the provider's bucket, and a larger
// remaining seen later raises the learned burst, never above the
// configured one.
TEST(ColdStartTest, TheBurstIsTheHeadroomsShareAndOnlyRisesOnEvidence) {
  const LimitsConfig config = *ParseLimitsConfig(R"(
headroom = 0.5
[providers.anthropic]
requests_per_minute = 1200
)",
                                                 "test.toml");
  FakeClock clock(kStart);
  auto store = NewLocalStore(Clock::Fake(&clock));
  auto policy = *Policy::Create(config, store.get());
  const Route* route = *policy->Resolve("global", "anthropic", "m");
  EXPECT_TRUE(policy->ProviderCold(*route));
  EXPECT_EQ(FindBucket(*policy, kRpmKey)->capacity, 60);  // 600 a minute, 6 s
  policy->LearnProviderBurst(*route, LimitKind::kRequestsPerMinute, 19, 1);
  EXPECT_FALSE(policy->ProviderCold(*route));
  EXPECT_EQ(FindBucket(*policy, kRpmKey)->capacity, 5);  // 20 * 0.5 / 2
  policy->LearnProviderBurst(*route, LimitKind::kRequestsPerMinute, 3, 1);
  EXPECT_EQ(FindBucket(*policy, kRpmKey)->capacity, 5);  // a lower bound: no news
  policy->LearnProviderBurst(*route, LimitKind::kRequestsPerMinute, 0, 0);
  EXPECT_EQ(FindBucket(*policy, kRpmKey)->capacity, 5);  // a refusal says nothing
  policy->LearnProviderBurst(*route, LimitKind::kRequestsPerMinute, 39, 1);
  EXPECT_EQ(FindBucket(*policy, kRpmKey)->capacity, 10);
  // A request the provider just took fits again, whatever the rest says.
  policy->LearnProviderBurst(*route, LimitKind::kRequestsPerMinute, 0, 12);
  EXPECT_EQ(FindBucket(*policy, kRpmKey)->capacity, 12);
  policy->LearnProviderBurst(*route, LimitKind::kRequestsPerMinute, 999, 1);
  EXPECT_EQ(FindBucket(*policy, kRpmKey)->capacity, 60);  // never above the configuration
  policy->LearnProviderBurst(*route, LimitKind::kRequestsPerMinute, -1, 1);  // unknown
  EXPECT_EQ(FindBucket(*policy, kRpmKey)->capacity, 60);
}

// A second process (a second Segment and Policy on the same file) finds the
// learned burst: it runs with it from its first request, sends no probe,
// and opening with its configuration does not raise it.
TEST(ColdStartTest, TheLearnedBurstIsSharedThroughTheSegment) {
  const std::string path = absl::StrCat("/dev/shm/sluice-cold-start-test-", getpid());
  FakeClock clock(kStart);
  SegmentOptions segment_options;
  segment_options.clock = Clock::Fake(&clock);
  const LimitsConfig config = *ParseLimitsConfig(kSixHundred, "test.toml");
  {
    auto segment = *Segment::Open(path, segment_options);
    auto store = NewSegmentStore(segment.get());
    auto policy = *Policy::Create(config, store.get());
    const Route* route = *policy->Resolve("global", "anthropic", "m");
    policy->LearnProviderBurst(*route, LimitKind::kRequestsPerMinute, 9, 1);
    EXPECT_EQ(FindBucket(*policy, kRpmKey)->capacity, 4);
  }
  auto segment = *Segment::Open(path, segment_options);
  auto store = NewSegmentStore(segment.get());
  std::optional<ShortBucketProvider> provider;
  ClientOptions options = Options();
  options.retry.max_attempts = 10;
  auto policy = *Policy::Create(config, store.get());
  EXPECT_EQ(FindBucket(*policy, kRpmKey)->capacity, 4);
  EXPECT_FALSE(policy->ProviderCold(**policy->Resolve("global", "anthropic", "m")));
  auto owned = std::make_unique<ScriptedTransport>(
      &clock, [&](const TransportRequest&) { return provider->Answer(); });
  ScriptedTransport* transport = owned.get();
  auto client = *Client::Create(options, policy.get(), std::move(owned), Clock::Fake(&clock));
  provider.emplace(&clock, 600, 10);
  int n = 0;
  client->Run(
      [&](CallRequest* r) {
        *r = CallRequest::Simple("m", "hi", 4);
        return n++ < 30;
      },
      30, [](size_t, CallResult r) { EXPECT_TRUE(r.status.ok()) << r.status; });
  ASSERT_EQ(transport->sent().size(), 30u);
  EXPECT_EQ(transport->sent()[3].at_ns, kStart) << "the known burst goes at once";
  EXPECT_GT(transport->sent()[4].at_ns, kStart);
  EXPECT_EQ(provider->limited(), 0);
  EXPECT_TRUE(segment->Unlink().ok());
}

// No provider limits in the file: the first response's `*-limit` headers
// make the provider's buckets (limit times headroom, the burst its
// `remaining` shows), and what follows draws no 429s. Until then nothing is
// held back: a configuration of scopes alone keeps its concurrency.
TEST(ColdStartTest, AnUnconfiguredProvidersLimitsAreLearnedFromItsFirstResponse) {
  std::optional<ShortBucketProvider> provider;
  ClientOptions options = Options();
  options.retry.max_attempts = 10;
  Rig rig([&](const TransportRequest&) { return provider->Answer(); }, options, "headroom = 0.9\n");
  provider.emplace(&rig.clock, 600, 10);
  EXPECT_FALSE(FindBucket(*rig.policy, kRpmKey).has_value());
  EXPECT_TRUE(rig.client->Call(CallRequest::Simple("m", "hi", 4)).status.ok());
  const std::optional<PolicyStats::Bucket> rpm = FindBucket(*rig.policy, kRpmKey);
  ASSERT_TRUE(rpm.has_value());
  EXPECT_EQ(rpm->limit, 540u);  // 600 * 0.9
  EXPECT_EQ(rpm->capacity, 4);  // floor(10 * 0.9 / 2)
  const std::vector<CallResult> results = RunMany(rig, 40);
  for (const CallResult& r : results) EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(provider->limited(), 0);

  // Without learning, nothing stands between the 40 and a bucket of 10.
  std::optional<ShortBucketProvider> unguarded;
  options.learn_provider_rate = false;
  Rig blind([&](const TransportRequest&) { return unguarded->Answer(); }, options,
            "headroom = 0.9\n");
  unguarded.emplace(&blind.clock, 600, 10);
  EXPECT_TRUE(blind.client->Call(CallRequest::Simple("m", "hi", 4)).status.ok());
  RunMany(blind, 40);
  EXPECT_GE(unguarded->limited(), 20);
}

// Before that first response, a route without provider buckets is not
// held back: the first requests go together.
TEST(ColdStartTest, ScopesAloneKeepTheirConcurrency) {
  Rig rig([](const TransportRequest&) { return AnthropicOk(absl::Milliseconds(50)); }, Options(),
          "[scopes.global]\nmax_concurrency = 2\n");
  RunMany(rig, 2);
  ASSERT_EQ(rig.transport->sent().size(), 2u);
  EXPECT_EQ(rig.transport->sent()[1].at_ns, kStart);
}

// Provider accounts are cold on their own: each one's first request probes
// it, at the same time.
TEST(ColdStartTest, EachProviderAccountProbesOnItsOwn) {
  Rig rig([](const TransportRequest&) { return AnthropicOk(absl::Milliseconds(50)); }, Options(),
          kSixHundred);
  std::vector<CallRequest> requests(4, CallRequest::Simple("m", "hi", 4));
  requests[0].account = requests[1].account = "a1";
  requests[2].account = requests[3].account = "b2";
  RunAll(rig, requests);
  const auto& sent = rig.transport->sent();
  ASSERT_EQ(sent.size(), 4u);
  EXPECT_EQ(sent[0].at_ns, kStart);
  EXPECT_EQ(sent[1].at_ns, kStart) << "another account's probe";
  EXPECT_EQ(sent[2].at_ns, kStart + 50 * kMs);
  EXPECT_EQ(sent[3].at_ns, kStart + 50 * kMs);
}

// A probe that got no response (a connection error) lets the next request
// probe; one without rate-limit headers ends the cold start as it is.
TEST(ColdStartTest, AProbeWithoutAResponseHandsOverToTheNext) {
  int answered = 0;
  Rig rig(
      [&](const TransportRequest&) {
        if (answered++ == 0) {
          ScriptedReply failed;
          failed.latency = absl::Milliseconds(10);
          failed.error = absl::UnavailableError("connection refused");
          return failed;
        }
        return AnthropicOk(absl::Milliseconds(50));
      },
      Options(), kSixHundred);
  std::vector<CallResult> results = RunMany(rig, 4);
  const auto& sent = rig.transport->sent();
  ASSERT_GE(sent.size(), 5u);  // the failed attempt was retried
  EXPECT_EQ(sent[0].at_ns, kStart);
  EXPECT_EQ(sent[1].at_ns, kStart + 10 * kMs) << "the next probe, alone";
  // Its response (with no headers) ends the cold start: the rest go at once.
  EXPECT_EQ(sent[2].at_ns, kStart + 60 * kMs);
  EXPECT_EQ(sent[3].at_ns, kStart + 60 * kMs);
  for (const CallResult& r : results) EXPECT_TRUE(r.status.ok()) << r.status;
}

// Waiting for a probe counts against the throttle timeout, and says why.
TEST(ColdStartTest, AWaitForTheProbeEndsAtTheThrottleTimeout) {
  ClientOptions options = Options();
  options.throttle_timeout = absl::Seconds(1);
  Rig rig([](const TransportRequest&) { return AnthropicOk(absl::Seconds(5)); }, options,
          kSixHundred);
  const std::vector<CallResult> results = RunMany(rig, 2);
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_EQ(results[1].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(results[1].status.message(),
              AllOf(HasSubstr("anthropic/default"), HasSubstr("cold start"), HasSubstr("1s")));
}

}  // namespace
}  // namespace sluice
