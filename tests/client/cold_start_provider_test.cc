// The cold start end to end, in real time: the client against the simulated
// provider on 127.0.0.1, whose buckets hold one second of its 1,000 requests
// a minute (time scale 2: a simulated minute is 30 s), as on the launch day.
//   * With the launch day's limits file (the provider's three limits,
//     headroom 0.98, the default 6 s bursts): no 429 at all, at 0.97 of the
//     provider's limit or more.
//   * With no provider limits in the file: the limits come from the first
//     response's headers, and no 429 follows it.
//   * And without the cold start, the launch day's 429s.
// Each takes 3 to 4 s. The margins: sluice's learned burst is half the
// headroom's share of the provider's bucket (7 of 16 requests), so a request
// held up in this process or in the provider's for 200 ms (a loaded machine)
// still finds room when it arrives, and the provider gains 2% of its rate on
// sluice every second.
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

constexpr double kTimeScale = 2;
constexpr double kProviderRpm = 1000;

struct Measured {
  int succeeded = 0;
  uint64_t rate_limited = 0;  // 429s the provider answered
  double per_minute = 0;      // requests sent per simulated minute, first to last
  double paced = 0;           // the same from the 17th on (past the first burst)
};

// Requests per simulated minute from starts[from] to the last start.
double PerMinute(const std::vector<absl::Time>& starts, size_t from) {
  if (starts.size() < from + 2) return 0;
  const double minutes = absl::ToDoubleMinutes(starts.back() - starts[from]) * kTimeScale;
  return static_cast<double>(starts.size() - 1 - from) / minutes;
}

// Sends `n` requests (64 at a time at most) through a client under `toml`
// to a fresh simulated provider whose buckets hold one second.
// `learn_first`: one request goes, and comes back, before the `n`.
Measured SendAll(absl::string_view toml, int n, bool cold_start = true, bool learn_first = false) {
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

  if (learn_first) {
    // The first request alone: what the provider's headers teach comes back
    // with it.
    const CallResult first = (*client)->Call(CallRequest::Simple("claude-sonnet-4", "hi", 4));
    EXPECT_TRUE(first.status.ok()) << first.status;
  }
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

// The figures, for the README.
void Print(absl::string_view what, int n, const Measured& m) {
  std::printf(
      "%.*s: %d requests, %llu 429s, %.0f a minute (%.3f of the limit), %.0f (%.3f) "
      "from the 17th on\n",
      static_cast<int>(what.size()), what.data(), n,
      static_cast<unsigned long long>(m.rate_limited), m.per_minute, m.per_minute / kProviderRpm,
      m.paced, m.paced / kProviderRpm);
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
  const Measured m = SendAll(kLaunchDay, 120);
  EXPECT_EQ(m.succeeded, 120);
  EXPECT_EQ(m.rate_limited, 0u);
  EXPECT_GE(m.per_minute, 0.97 * kProviderRpm);
  Print("launch-day file, default bursts", 120, m);
}

// What the test above guards against: the same without the cold start.
TEST(ColdStartProviderTest, WithoutTheColdStartTheDefaultBurstDraws429s) {
  const Measured m = SendAll(kLaunchDay, 120, /*cold_start=*/false);
  EXPECT_GE(m.rate_limited, 10u);
  Print("launch-day file without the cold start", 120, m);
}

TEST(ColdStartProviderTest, WithoutProviderLimitsTheyAreLearnedFromTheFirstResponse) {
  // The defaults (headroom 0.8); one request answered, then 80.
  const Measured m = SendAll("", 80, /*cold_start=*/true, /*learn_first=*/true);
  EXPECT_EQ(m.succeeded, 80);
  EXPECT_EQ(m.rate_limited, 0u);
  // Learned at the provider's limit times the default headroom (0.8).
  EXPECT_GE(m.per_minute, 0.77 * kProviderRpm);
  Print("no provider limits", 80, m);
}

}  // namespace
}  // namespace sluice
