// What the scheduler's tests share: a client over a scripted transport on a
// fake clock (optionally through a policy on that clock), scripted provider
// replies, and the limits most tests run under.
#ifndef SLUICE_TESTS_CLIENT_SCHEDULER_RIG_H_
#define SLUICE_TESTS_CLIENT_SCHEDULER_RIG_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sluice/client.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/store.h"
#include "tests/client/scripted_transport.h"

namespace sluice {
namespace scheduler_rig {

constexpr int64_t kStart = 1'000'000'000'000;  // fake ns; 0 would mean "at once"
constexpr int64_t kMs = 1'000'000;
constexpr char kSecret[] = "sk-test-SECRET-4242-do-not-print";

inline ScriptedReply AnthropicOk(absl::Duration latency = absl::Milliseconds(1)) {
  ScriptedReply r;
  r.latency = latency;
  r.headers.Set("request-id", "req_ok");
  r.chunks = {R"({"id":"msg_1","type":"message","role":"assistant","model":"m",)",
              R"("content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn",)",
              R"("usage":{"input_tokens":3,"output_tokens":2}})"};
  return r;
}

inline ScriptedReply OpenAiOk() {
  ScriptedReply r;
  r.chunks = {R"({"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,)",
              R"("message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],)",
              R"("usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}})"};
  return r;
}

inline ScriptedReply AnthropicError(int status, absl::string_view type, Headers headers = {}) {
  ScriptedReply r;
  r.http_status = status;
  r.headers = std::move(headers);
  r.chunks = {
      absl::StrCat(R"({"type":"error","error":{"type":")", type, R"(","message":"scripted"}})")};
  return r;
}

inline ClientOptions Options(Provider provider = Provider::kAnthropic) {
  ClientOptions options;
  options.provider = provider;
  options.base_url = "http://scripted.invalid";
  options.api_key = kSecret;
  options.retry.base = absl::Milliseconds(2);
  options.retry.cap = absl::Milliseconds(20);
  options.seed = 7;
  return options;
}

// Options without the cold start (ClientOptions::cold_start), for tests of
// other things whose timing assumes the configured bursts from the first
// request on (cold_start_test.cc tests the cold start).
inline ClientOptions WarmOptions(Provider provider = Provider::kAnthropic) {
  ClientOptions options = Options(provider);
  options.cold_start = false;
  return options;
}

inline std::unique_ptr<Policy> MakePolicy(absl::string_view toml, Store* store) {
  auto config = ParseLimitsConfig(toml, "test.toml");
  EXPECT_TRUE(config.ok()) << config.status();
  auto policy = Policy::Create(*config, store);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return policy.ok() ? *std::move(policy) : nullptr;
}

// One request a second, no burst.
constexpr char kOneASecond[] = R"(
[scopes.global]
requests_per_minute = 60
[scopes.global.burst]
requests_per_minute = 1
)";

// A client over a scripted transport, on a fake clock; with `limits`, through
// a policy on that clock.
struct Rig {
  FakeClock clock{kStart};
  std::unique_ptr<Store> store;
  std::unique_ptr<Policy> policy;
  ScriptedTransport* transport = nullptr;  // owned by the client
  std::unique_ptr<Client> client;

  explicit Rig(ScriptedTransport::Script script, ClientOptions options = Options(),
               absl::string_view limits = "") {
    if (!limits.empty()) {
      store = NewLocalStore(Clock::Fake(&clock));
      policy = MakePolicy(limits, store.get());
    }
    auto owned = std::make_unique<ScriptedTransport>(&clock, std::move(script));
    transport = owned.get();
    auto created = Client::Create(options, policy.get(), std::move(owned), Clock::Fake(&clock));
    EXPECT_TRUE(created.ok()) << created.status();
    if (created.ok()) client = *std::move(created);
  }
};

// Runs `requests` at once (all pulled before any starts), results by index.
inline std::vector<CallResult> RunAll(Rig& rig, std::vector<CallRequest> requests) {
  std::vector<CallResult> results(requests.size());
  size_t n = 0;
  rig.client->Run(
      [&](CallRequest* r) {
        if (n == requests.size()) return false;
        *r = std::move(requests[n++]);
        return true;
      },
      static_cast<int>(requests.size()),
      [&](size_t i, CallResult r) { results[i] = std::move(r); });
  return results;
}

// Available permits of every bucket of the rig's policy, by key.
inline std::map<std::string, int64_t> Levels(const Rig& rig) {
  std::map<std::string, int64_t> levels;
  for (const PolicyStats::Bucket& b : rig.policy->Stats().buckets) levels[b.key] = b.available;
  return levels;
}

// The provider's requests: 10 at once, then 10 a second.
constexpr char kProviderTenAtOnce[] = R"(
headroom = 1.0
[providers.anthropic]
requests_per_minute = 600
[providers.anthropic.burst]
requests_per_minute = 10
)";

}  // namespace scheduler_rig
}  // namespace sluice

#endif  // SLUICE_TESTS_CLIENT_SCHEDULER_RIG_H_
