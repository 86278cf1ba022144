// The proxy's threads together (its server loop, the clients' loops, callers
// on threads of their own), for ThreadSanitizer: callers of three
// priorities, some hanging up while they wait, a reload in the middle, and
// a shutdown with requests still queued. The upstream is a bare HttpServer
// answering like Anthropic (this test builds without the simulated
// provider, as CI's TSan stage does).

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "curl/curl.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/http_server.h"
#include "sluice/proxy.h"
#include "sluice/store.h"

namespace sluice {
namespace {

constexpr char kMessage[] =
    R"({"model":"claude-sonnet-4","max_tokens":8,"messages":[{"role":"user","content":"hi"}]})";
constexpr char kReply[] =
    R"({"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text",)"
    R"("text":"hello"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}})";

LimitsConfig Limits(const std::string& toml) {
  absl::StatusOr<LimitsConfig> config = ParseLimitsConfig(toml, "test.toml");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *std::move(config) : LimitsConfig{};
}

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

// One POST from a thread of its own; the HTTP status, or 0 when the
// connection ended without one. `give_up` > 0: hang up after that long.
long Post(const std::string& url, const std::string& priority, long give_up_ms) {
  CURL* easy = curl_easy_init();
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "x-api-key: sk-test-threads");
  headers = curl_slist_append(headers, "content-type: application/json");
  headers = curl_slist_append(headers, absl::StrCat("x-sluice-priority: ", priority).c_str());
  curl_easy_setopt(easy, CURLOPT_URL, (url + "/v1/messages").c_str());
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, kMessage);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Discard);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, give_up_ms > 0 ? give_up_ms : 60'000L);
  long status = 0;
  if (curl_easy_perform(easy) == CURLE_OK) {
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(easy);
  return status;
}

TEST(ProxyThreadsTest, CallersReloadAndShutdownTogether) {
  curl_global_init(CURL_GLOBAL_ALL);
  std::atomic<int> upstream_requests{0};
  auto upstream = HttpServer::Start({}, [&](std::shared_ptr<HttpExchange> x) {
    upstream_requests++;
    x->Respond(200, {{"content-type", "application/json"}, {"request-id", "req_1"}}, kReply);
  });
  ASSERT_TRUE(upstream.ok()) << upstream.status();
  std::unique_ptr<Store> store = NewLocalStore();
  ProxyOptions options;
  options.port = 0;
  options.anthropic_url = (*upstream)->base_url();
  options.openai_url = options.anthropic_url;
  options.queue_timeout = absl::Seconds(30);
  std::atomic<int> logged{0};
  options.log = [&](absl::string_view) { logged++; };
  // 50 requests a second, a burst of 5: the callers queue.
  auto proxy = Proxy::Start(options,
                            Limits("[scopes.global]\nrequests_per_minute = 3000\n"
                                   "[scopes.global.burst]\nrequests_per_minute = 5\n"),
                            store.get());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  const std::string url = (*proxy)->base_url();

  constexpr int kCallers = 24;
  std::vector<long> statuses(kCallers, -1);
  std::vector<std::thread> callers;
  const char* kPriorities[] = {"high", "normal", "low"};
  for (int i = 0; i < kCallers; ++i) {
    // Every fourth caller hangs up after 30 ms, most likely while queued.
    callers.emplace_back(
        [&, i] { statuses[i] = Post(url, kPriorities[i % 3], i % 4 == 3 ? 30 : 0); });
  }
  absl::SleepFor(absl::Milliseconds(50));
  ASSERT_TRUE((*proxy)
                  ->Reload(Limits("[scopes.global]\nrequests_per_minute = 6000\n"
                                  "[scopes.global.burst]\nrequests_per_minute = 5\n"))
                  .ok());
  for (std::thread& t : callers) t.join();
  int served = 0;
  for (int i = 0; i < kCallers; ++i) {
    if (i % 4 == 3) continue;  // may or may not have been served before hanging up
    EXPECT_EQ(statuses[i], 200) << "caller " << i;
    served += statuses[i] == 200;
  }
  EXPECT_EQ(served, kCallers - kCallers / 4);
  EXPECT_GE(upstream_requests.load(), served);

  // A shutdown with callers still queued: it returns, and they see the end.
  ASSERT_TRUE((*proxy)->Reload(Limits("[scopes.global]\nrequests_per_minute = 1\n")).ok());
  std::vector<std::thread> late;
  for (int i = 0; i < 6; ++i) late.emplace_back([&] { Post(url, "normal", 0); });
  absl::SleepFor(absl::Milliseconds(100));
  (*proxy)->Shutdown(absl::Milliseconds(50));
  for (std::thread& t : late) t.join();
  EXPECT_GE((*proxy)->stats().requests, static_cast<uint64_t>(kCallers));
  (*upstream)->Stop(absl::ZeroDuration());
}

}  // namespace
}  // namespace sluice
