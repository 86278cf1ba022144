// The cold start end to end, in real time: the client against the simulated
// provider on 127.0.0.1, whose buckets hold one second of its 1,000 requests
// a minute (time scale 5: a simulated minute is 12 s), as on the launch day.
//   * With the launch day's limits file (the provider's three limits,
//     headroom 0.98, the default 6 s bursts): no 429 at all, at 0.97 of the
//     provider's limit or more.
//   * With no provider limits in the file: the limits come from the first
//     response's headers, and no 429 follows.
// And without the cold start, the launch day's 429s. Each takes about 3 s. The margins: sluice's
// burst is the headroom's share of the provider's (15 of 16 requests), and the provider gains 2% of
// its rate on sluice every second; a request held up in this process for tens of milliseconds (a
// loaded machine) only reaches the provider later.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sluice/client.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/store.h"
#include "tools/fake_provider/fake_provider.h"

namespace sluice {
namespace {

constexpr double kTimeScale = 5;
constexpr double kProviderRpm = 1000;

struct Measured {
  int succeeded = 0;
  uint64_t rate_limited = 0;  // 429s the provider answered
  double per_minute = 0;      // requests sent per simulated minute, first to last
  double paced = 0;           // the same from the 17th on (after a 1 s burst)
};

// Requests per simulated minute from starts[from] to the last start.
double PerMinute(const std::vector<absl::Time>& starts, size_t from) {
  if (starts.size() < from + 2) return 0;
  const double minutes = absl::ToDoubleMinutes(starts.back() - starts[from]) * kTimeScale;
  return static_cast<double>(starts.size() - 1 - from) / minutes;
}

// Sends `n` requests (64 at a time at most) through a client under `toml`
// to a fresh simulated provider whose buckets hold one second.
Measured SendAll(absl::string_view toml, int n, bool cold_start = true) {
  Measured m;
  FakeProviderOptions provider_options;
  provider_options.rpm = static_cast<uint64_t>(kProviderRpm);
  provider_options.bucket_span = absl::Seconds(1);
  provider_options.time_scale = kTimeScale;
  auto provider = FakeProvider::Start(provider_options);
  EXPECT_TRUE(provider.ok()) << provider.status();
  if (!provider.ok()) return m;
  auto config = ParseLimitsConfig(toml, "launch.toml");
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return m;
  auto store = NewLocalStore();
  auto policy = Policy::Create(TimeScaled(*config, kTimeScale), store.get());
  EXPECT_TRUE(policy.ok()) << policy.status();
  if (!policy.ok()) return m;
  ClientOptions options;
  options.provider = Provider::kAnthropic;
  options.base_url = (*provider)->base_url();
  options.api_key = "sk-test-cold-start";
  options.provider_time_scale = kTimeScale;
  options.seed = 7;
  options.cold_start = cold_start;
  auto client = Client::Create(options, policy->get());
  EXPECT_TRUE(client.ok()) << client.status();
  if (!client.ok()) return m;

  std::vector<absl::Time> starts;
  int pulled = 0;
  (*client)->Run(
      [&](CallRequest* r) {
        if (pulled++ == n) return false;
        *r = CallRequest::Simple("claude-sonnet-4", "hi", 4);
        r->on_start = [&starts] { starts.push_back(absl::Now()); };
        return true;
      },
      64, [&](size_t, CallResult r) { m.succeeded += r.status.ok(); });
  m.rate_limited = (*provider)->stats().totals.rate_limited;
  std::sort(starts.begin(), starts.end());
  m.per_minute = PerMinute(starts, 0);
  m.paced = PerMinute(starts, 16);
  return m;
}

// The launch day's limits file: the provider's three limits, headroom 0.98,
// the default bursts.
constexpr char kLaunchDay[] = R"(
headroom = 0.98
[providers.anthropic]
requests_per_minute = 1000
input_tokens_per_minute = 100000
output_tokens_per_minute = 100000
)";

TEST(ColdStartProviderTest, TheLaunchDayFileDrawsNo429sAtTheLimit) {
  const Measured m = SendAll(kLaunchDay, 300);
  EXPECT_EQ(m.succeeded, 300);
  EXPECT_EQ(m.rate_limited, 0u);
  EXPECT_GE(m.per_minute, 0.97 * kProviderRpm);
  std::printf(
      "launch-day file, default bursts: 300 requests, %llu 429s, %.0f a minute (%.3f), "
      "%.0f after the first second's burst (%.3f)\n",
      static_cast<unsigned long long>(m.rate_limited), m.per_minute, m.per_minute / kProviderRpm,
      m.paced, m.paced / kProviderRpm);
}

// What the test above guards against: the same without the cold start.
TEST(ColdStartProviderTest, WithoutTheColdStartTheDefaultBurstDraws429s) {
  const Measured m = SendAll(kLaunchDay, 300, /*cold_start=*/false);
  EXPECT_GE(m.rate_limited, 10u);
  std::printf("launch-day file without the cold start: %llu 429s\n",
              static_cast<unsigned long long>(m.rate_limited));
}

TEST(ColdStartProviderTest, WithoutProviderLimitsTheyAreLearnedFromTheFirstResponse) {
  const Measured m = SendAll("", 200);  // the defaults: headroom 0.8
  EXPECT_EQ(m.succeeded, 200);
  EXPECT_EQ(m.rate_limited, 0u);
  // Learned at the provider's limit times the default headroom (0.8).
  EXPECT_GE(m.per_minute, 0.77 * kProviderRpm);
  std::printf(
      "no provider limits: 200 requests, %llu 429s, %.0f a minute (%.3f), %.0f after the "
      "burst (%.3f)\n",
      static_cast<unsigned long long>(m.rate_limited), m.per_minute, m.per_minute / kProviderRpm,
      m.paced, m.paced / kProviderRpm);
}

}  // namespace
}  // namespace sluice
