// The proxy end to end: a caller on 127.0.0.1 -> sluice::Proxy -> the
// simulated provider, over real sockets. Shapes and pass-through, the
// proxy's own errors in each provider's shape, queueing (timeout, full,
// disconnect, priority), reload, metrics and logs. Real time with wide
// margins: the waits here are the throttle's, tens of milliseconds.

#include "sluice/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "sluice/client.h"
#include "sluice/store.h"
#include "tools/fake_provider/fake_provider.h"

namespace sluice {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kKey[] = "sk-test-PROXY-SECRET-7";
constexpr char kMessage[] =
    R"({"model":"claude-sonnet-4","max_tokens":16,"messages":[{"role":"user","content":"hi"}]})";
constexpr char kChat[] =
    R"({"model":"gpt-4o","max_tokens":16,"messages":[{"role":"user","content":"hi"}]})";

LimitsConfig Limits(const std::string& toml) {
  absl::StatusOr<LimitsConfig> config = ParseLimitsConfig(toml, "test.toml");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *std::move(config) : LimitsConfig{};
}

// A simulated provider, a local store and a proxy in front of them, with
// the proxy's log lines kept.
class ProxyTest : public ::testing::Test {
 protected:
  void Start(const std::string& toml = "", ProxyOptions options = {},
             FakeProviderOptions provider_options = {}) {
    provider_options.unlimited = true;
    auto provider = FakeProvider::Start(provider_options);
    ASSERT_TRUE(provider.ok()) << provider.status();
    provider_ = *std::move(provider);
    store_ = NewLocalStore();
    options.port = 0;
    options.anthropic_url = provider_->base_url();
    options.openai_url = provider_->base_url();
    options.log = [this](absl::string_view line) {
      std::lock_guard<std::mutex> lock(log_mu_);
      log_.emplace_back(line);
    };
    auto proxy = Proxy::Start(options, Limits(toml), store_.get());
    ASSERT_TRUE(proxy.ok()) << proxy.status();
    proxy_ = *std::move(proxy);
  }

  httplib::Result Post(const std::string& path, const std::string& body,
                       httplib::Headers headers = {{"x-api-key", kKey}}) {
    httplib::Client client("127.0.0.1", proxy_->port());
    client.set_read_timeout(30, 0);
    return client.Post(path.c_str(), headers, body, "application/json");
  }

  // The log lines once there are `count` of them (a request's line follows
  // its answer), or what there is after 10 s.
  std::vector<std::string> Log(size_t count = 1) {
    for (int i = 0; i < 2000; ++i) {
      {
        std::lock_guard<std::mutex> lock(log_mu_);
        if (log_.size() >= count) return log_;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    std::lock_guard<std::mutex> lock(log_mu_);
    return log_;
  }

  std::unique_ptr<FakeProvider> provider_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Proxy> proxy_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

TEST_F(ProxyTest, AnthropicMessagesPassThroughWithTheCallersKey) {
  Start();
  httplib::Result r = Post("/v1/messages", kMessage);
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200) << r->body;
  nlohmann::json body = nlohmann::json::parse(r->body);
  EXPECT_EQ(body["type"], "message");
  EXPECT_GE(body["usage"]["output_tokens"].get<int>(), 1);
  EXPECT_TRUE(r->has_header("request-id"));
  EXPECT_EQ(provider_->stats().ForKey(FakeApi::kAnthropic, kKey).requests, 1u);
  ASSERT_EQ(Log().size(), 1u);
  EXPECT_THAT(Log()[0], AllOf(HasSubstr("POST /v1/messages anthropic"), HasSubstr("scope=global"),
                              HasSubstr("status=200"), Not(HasSubstr(kKey))));
}

TEST_F(ProxyTest, OpenAiChatCompletionsWithABearerKey) {
  Start();
  httplib::Result r =
      Post("/v1/chat/completions", kChat, {{"Authorization", absl::StrCat("Bearer ", kKey)}});
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(nlohmann::json::parse(r->body)["object"], "chat.completion");
  EXPECT_EQ(provider_->stats().ForKey(FakeApi::kOpenAi, kKey).requests, 1u);
}

TEST_F(ProxyTest, ErrorsOfItsOwnInTheProvidersShape) {
  ProxyOptions options;
  options.max_body_bytes = 1024;
  Start("", options);
  httplib::Result no_key = Post("/v1/messages", kMessage, {});
  ASSERT_TRUE(no_key);
  EXPECT_EQ(no_key->status, 401);
  EXPECT_EQ(nlohmann::json::parse(no_key->body)["error"]["type"], "authentication_error");

  httplib::Result not_json =
      Post("/v1/chat/completions", "{not json", {{"Authorization", absl::StrCat("Bearer ", kKey)}});
  ASSERT_TRUE(not_json);
  EXPECT_EQ(not_json->status, 400);
  EXPECT_EQ(nlohmann::json::parse(not_json->body)["error"]["type"], "invalid_request_error");

  httplib::Result too_large = Post("/v1/messages", std::string(4096, ' '));
  ASSERT_TRUE(too_large);
  EXPECT_EQ(too_large->status, 413);
  EXPECT_EQ(nlohmann::json::parse(too_large->body)["error"]["type"], "request_too_large");

  httplib::Result bad_priority =
      Post("/v1/messages", kMessage, {{"x-api-key", kKey}, {"x-sluice-priority", "urgent"}});
  ASSERT_TRUE(bad_priority);
  EXPECT_EQ(bad_priority->status, 400);
  EXPECT_THAT(bad_priority->body, HasSubstr("x-sluice-priority"));
  // None of them reached the provider.
  EXPECT_EQ(provider_->stats().totals.requests, 0u);
  EXPECT_EQ(proxy_->stats().bad_requests, 4u);
}

TEST_F(ProxyTest, UnreachableUpstreamIsA502InTheProvidersShape) {
  // A port that was free a moment ago: nothing listens there.
  int port;
  {
    auto probe = FakeProvider::Start({});
    ASSERT_TRUE(probe.ok());
    port = (*probe)->port();
  }
  store_ = NewLocalStore();
  ProxyOptions options;
  options.port = 0;
  options.anthropic_url = absl::StrCat("http://127.0.0.1:", port);
  options.openai_url = options.anthropic_url;
  auto proxy = Proxy::Start(options, Limits(""), store_.get());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  proxy_ = *std::move(proxy);
  httplib::Result r = Post("/v1/messages", kMessage);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 502);
  EXPECT_EQ(nlohmann::json::parse(r->body)["error"]["type"], "api_error");
  EXPECT_THAT(r->body, Not(HasSubstr(kKey)));
}

TEST_F(ProxyTest, ARequestNotServedInTimeGetsTheProviders429) {
  ProxyOptions options;
  options.queue_timeout = absl::Milliseconds(300);
  // One request a minute, a burst of one: the second would wait a minute.
  Start("[scopes.global]\nrequests_per_minute = 1\n", options);
  httplib::Result first = Post("/v1/messages", kMessage);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200);
  const absl::Time before = absl::Now();
  httplib::Result second = Post("/v1/messages", kMessage);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 429);
  EXPECT_LT(absl::Now() - before, absl::Seconds(20));
  nlohmann::json error = nlohmann::json::parse(second->body);
  EXPECT_EQ(error["type"], "error");
  EXPECT_EQ(error["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(second->has_header("retry-after"));
  EXPECT_EQ(provider_->stats().totals.requests, 1u);
}

TEST_F(ProxyTest, AFullQueueAnswers429AtOnce) {
  ProxyOptions options;
  options.max_queue = 2;
  options.queue_timeout = absl::Seconds(120);  // longer than the minute they would wait
  Start("[scopes.global]\nrequests_per_minute = 1\n", options);
  ASSERT_EQ(Post("/v1/messages", kMessage)->status, 200);
  // The second is being reserved (it would wait a minute), the third queued.
  std::vector<std::thread> waiting;
  for (int i = 0; i < 2; ++i) {
    waiting.emplace_back([this] { Post("/v1/messages", kMessage); });
  }
  for (int i = 0; i < 400 && proxy_->stats().queued_now < 2; ++i)
    absl::SleepFor(absl::Milliseconds(5));
  ASSERT_EQ(proxy_->stats().queued_now, 2u);
  httplib::Result full =
      Post("/v1/chat/completions", kChat, {{"Authorization", absl::StrCat("Bearer ", kKey)}});
  ASSERT_TRUE(full);
  EXPECT_EQ(full->status, 429);
  EXPECT_EQ(nlohmann::json::parse(full->body)["error"]["code"], "rate_limit_exceeded");
  EXPECT_EQ(proxy_->stats().rejected_queue_full, 1u);
  proxy_->Shutdown(absl::ZeroDuration());  // cuts the two waiting ones
  for (std::thread& t : waiting) t.join();
}

}  // namespace
}  // namespace sluice
