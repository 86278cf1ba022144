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

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
    StartLimited(toml, std::move(options), std::move(provider_options));
  }

  // The same with the provider's limits as given.
  void StartLimited(const std::string& toml, ProxyOptions options,
                    FakeProviderOptions provider_options) {
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

  // Destroyed bottom up: the proxy first (it logs as it drains), then what
  // it uses.
  std::mutex log_mu_;
  std::vector<std::string> log_;
  std::unique_ptr<FakeProvider> provider_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Proxy> proxy_;
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

// Sends a whole request on a new connection and returns the socket, open.
int SendRaw(int port, const std::string& path, const std::string& body) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string request = absl::StrCat(
      "POST ", path, " HTTP/1.1\r\nHost: x\r\nx-api-key: ", kKey,
      "\r\ncontent-type: application/json\r\ncontent-length: ", body.size(), "\r\n\r\n", body);
  EXPECT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  return fd;
}

// Polls `done` for up to 10 s.
bool Eventually(const std::function<bool()>& done) {
  for (int i = 0; i < 2000; ++i) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return done();
}

TEST_F(ProxyTest, AClientThatGoesAwayGivesItsReservationBack) {
  ProxyOptions options;
  options.queue_timeout = absl::Seconds(90);  // more than one minute's wait, less than two
  Start("[scopes.global]\nrequests_per_minute = 1\n", options);
  ASSERT_EQ(Post("/v1/messages", kMessage)->status, 200);
  // The second reserves the next minute's permit and waits for it; then its
  // caller hangs up.
  const int fd = SendRaw(proxy_->port(), "/v1/messages", kMessage);
  ASSERT_TRUE(Eventually([&] { return proxy_->stats().queued_now == 1; }));
  close(fd);
  ASSERT_TRUE(Eventually([&] { return proxy_->stats().queued_now == 0; }));
  EXPECT_EQ(proxy_->stats().client_gone, 1u);
  // Had the permit not come back, a third would wait two minutes, past the
  // queue timeout, and get a 429 at once. It waits one: it is queued.
  std::thread third([this] { Post("/v1/messages", kMessage); });
  EXPECT_TRUE(Eventually([&] { return proxy_->stats().queued_now == 1; }));
  EXPECT_EQ(proxy_->stats().rejected_timeout, 0u);
  proxy_->Shutdown(absl::ZeroDuration());
  third.join();
  EXPECT_EQ(provider_->stats().totals.requests, 1u);
}

// The priority each request was logged with, in the order they finished.
std::vector<std::string> Priorities(const std::vector<std::string>& lines) {
  std::vector<std::string> out;
  for (const std::string& line : lines) {
    const size_t at = line.find("priority=");
    out.push_back(at == std::string::npos ? "" : line.substr(at + 9, line.find(' ', at) - at - 9));
  }
  return out;
}

TEST_F(ProxyTest, AHighRequestOvertakesLowOnesWaitingAndFifoWithin) {
  // One request every 200 ms, no burst beyond one.
  Start(
      "[scopes.global]\nrequests_per_minute = 300\n[scopes.global.burst]\n"
      "requests_per_minute = 1\n");
  ASSERT_EQ(Post("/v1/messages", kMessage)->status, 200);
  std::vector<std::thread> callers;
  for (int i = 0; i < 3; ++i) {
    callers.emplace_back([this] {
      Post("/v1/messages", kMessage, {{"x-api-key", kKey}, {"x-sluice-priority", "low"}});
    });
    ASSERT_TRUE(
        Eventually([&] { return proxy_->stats().queued_now == static_cast<size_t>(i + 1); }));
  }
  callers.emplace_back([this] {
    Post("/v1/messages", kMessage, {{"x-api-key", kKey}, {"x-sluice-priority", "high"}});
  });
  for (std::thread& t : callers) t.join();
  const std::vector<std::string> order = Priorities(Log(5));
  ASSERT_EQ(order.size(), 5u);
  // The first low may have started before the high one came; the other two
  // had not, and the high one went before them.
  EXPECT_EQ(order[0], "normal");
  EXPECT_TRUE(order[1] == "high" || order[2] == "high") << absl::StrJoin(order, ",");
  EXPECT_EQ(order[3], "low");
  EXPECT_EQ(order[4], "low");
}

TEST_F(ProxyTest, ScopeFromTheHeaderOrFromTheKeysHash) {
  ProxyOptions options;
  options.queue_timeout = absl::Milliseconds(300);
  const std::string other = "sk-test-OTHER-KEY";
  Start(absl::StrCat("[scopes.\"team:a\"]\nrequests_per_minute = 1\n[proxy.keys]\n\"",
                     KeyFingerprint(other), "\" = \"team:a\"\n"),
        options);
  httplib::Result by_header =
      Post("/v1/messages", kMessage, {{"x-api-key", kKey}, {"x-sluice-scope", "team:a"}});
  ASSERT_TRUE(by_header);
  EXPECT_EQ(by_header->status, 200);
  // The other key is mapped to team:a, whose one request a minute is spent.
  httplib::Result by_key = Post("/v1/messages", kMessage, {{"x-api-key", other}});
  ASSERT_TRUE(by_key);
  EXPECT_EQ(by_key->status, 429);
  // Without either, global: not limited.
  EXPECT_EQ(Post("/v1/messages", kMessage)->status, 200);
  const std::vector<std::string> lines = Log(3);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_THAT(lines[0], HasSubstr("scope=team:a"));
  EXPECT_THAT(lines[1], HasSubstr("scope=team:a"));
  EXPECT_THAT(lines[2], HasSubstr("scope=global"));
  for (const std::string& line : lines)
    EXPECT_THAT(line, AllOf(Not(HasSubstr(kKey)), Not(HasSubstr(other))));
}

TEST_F(ProxyTest, EachKeyHasItsOwnProviderBuckets) {
  ProxyOptions options;
  options.queue_timeout = absl::Milliseconds(300);
  Start("headroom = 1.0\n[providers.anthropic]\nrequests_per_minute = 1\n", options);
  EXPECT_EQ(Post("/v1/messages", kMessage)->status, 200);
  EXPECT_EQ(Post("/v1/messages", kMessage, {{"x-api-key", "sk-test-SECOND"}})->status, 200);
  EXPECT_EQ(Post("/v1/messages", kMessage)->status, 429);  // the first key's minute is spent
}

TEST_F(ProxyTest, ReloadServesNewRequestsUnderTheNewLimits) {
  ProxyOptions options;
  options.queue_timeout = absl::Milliseconds(300);
  Start("[scopes.global]\nrequests_per_minute = 1\n", options);
  EXPECT_EQ(Post("/v1/messages", kMessage)->status, 200);
  EXPECT_EQ(Post("/v1/messages", kMessage)->status, 429);
  ASSERT_TRUE(proxy_->Reload(Limits("[scopes.global]\nrequests_per_minute = 60000\n")).ok());
  EXPECT_TRUE(Eventually([&] { return Post("/v1/messages", kMessage)->status == 200; }));
  EXPECT_EQ(proxy_->stats().reloads, 1u);
}

TEST_F(ProxyTest, ReloadReservesTheWaitingRequestsAgainUnderTheNewLimits) {
  Start("[scopes.global]\nrequests_per_minute = 1\n");
  ASSERT_EQ(Post("/v1/messages", kMessage)->status, 200);
  // The second is reserved for the next minute's permit, the third queued
  // behind it.
  std::atomic<int> ok{0};
  std::vector<std::thread> waiting;
  for (int i = 0; i < 2; ++i) {
    waiting.emplace_back([&] {
      httplib::Result r = Post("/v1/messages", kMessage);
      if (r && r->status == 200) ok++;
    });
  }
  ASSERT_TRUE(Eventually([&] { return proxy_->stats().queued_now == 2; }));
  const absl::Time reloaded = absl::Now();
  ASSERT_TRUE(proxy_->Reload(Limits("[scopes.global]\nrequests_per_minute = 60000\n")).ok());
  for (std::thread& t : waiting) t.join();
  EXPECT_EQ(ok, 2);
  // Not a minute, as under the old limits.
  EXPECT_LT(absl::Now() - reloaded, absl::Seconds(20));
  EXPECT_EQ(provider_->stats().totals.requests, 3u);
}

TEST_F(ProxyTest, CountTokensIsNotChargedToTheMessagesBucketsButHasItsOwn) {
  ProxyOptions options;
  options.queue_timeout = absl::Milliseconds(300);
  Start("[scopes.global]\nrequests_per_minute = 1\n[proxy]\ncount_tokens_requests_per_minute = 1\n",
        options);
  constexpr char kCount[] =
      R"({"model":"claude-sonnet-4","messages":[{"role":"user","content":"hi"}]})";
  httplib::Result counted = Post("/v1/messages/count_tokens", kCount);
  ASSERT_TRUE(counted);
  EXPECT_EQ(counted->status, 200) << counted->body;
  EXPECT_GT(nlohmann::json::parse(counted->body)["input_tokens"].get<int>(), 0);
  // Its own bucket: one a minute.
  EXPECT_EQ(Post("/v1/messages/count_tokens", kCount)->status, 429);
  // The Messages bucket was not touched: its one request is still there.
  EXPECT_EQ(Post("/v1/messages", kMessage)->status, 200);
  EXPECT_EQ(Post("/v1/messages", kMessage)->status, 429);
}

TEST_F(ProxyTest, OtherPathsPassThroughAndMetricsAreServed) {
  Start();
  httplib::Client client("127.0.0.1", proxy_->port());
  httplib::Result models = client.Get("/v1/models", {{"x-api-key", kKey}});
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 404);  // the simulated provider's answer, passed on
  EXPECT_EQ(nlohmann::json::parse(models->body)["type"], "error");
  httplib::Result metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_THAT(metrics->body, HasSubstr("sluice_proxy_requests_total 2"));
}

// The event names and the text of a server-sent-events body, in order.
struct Stream {
  std::vector<std::string> events;
  std::string text;
};

Stream ReadStream(const std::string& body) {
  Stream out;
  size_t at = 0;
  while (at < body.size()) {
    size_t end = body.find("\n\n", at);
    if (end == std::string::npos) end = body.size();
    const std::string event = body.substr(at, end - at);
    at = end + 2;
    std::string name, data;
    for (size_t line = 0; line < event.size();) {
      size_t eol = event.find('\n', line);
      if (eol == std::string::npos) eol = event.size();
      const std::string l = event.substr(line, eol - line);
      if (l.rfind("event: ", 0) == 0) name = l.substr(7);
      if (l.rfind("data: ", 0) == 0) data = l.substr(6);
      line = eol + 1;
    }
    if (data.empty()) continue;
    if (data == "[DONE]") {
      out.events.push_back("[DONE]");
      continue;
    }
    nlohmann::json json = nlohmann::json::parse(data);
    out.events.push_back(name.empty() ? json.value("object", "") : name);
    if (json.contains("delta") && json["delta"].is_object()) {
      out.text += json["delta"].value("text", "");
    }
    if (json.contains("choices") && !json["choices"].empty()) {
      out.text += json["choices"][0]["delta"].value("content", "");
    }
  }
  return out;
}

// A streamed reply through the proxy is the one the provider sends directly
// (same events, same text: the simulated provider is seeded), passed on as
// an event stream, and settled with the usage in its events.
TEST_F(ProxyTest, StreamsPassThroughUnchangedForBothApis) {
  struct Case {
    std::string path;
    std::string body;
    httplib::Headers headers;
  };
  const std::vector<Case> cases = {
      {"/v1/messages",
       R"({"model":"claude-sonnet-4","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hello there"}]})",
       {{"x-api-key", kKey}, {"anthropic-version", "2023-06-01"}}},
      {"/v1/chat/completions",
       R"({"model":"gpt-4o","max_tokens":64,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]})",
       {{"Authorization", absl::StrCat("Bearer ", kKey)}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.path);
    FakeProviderOptions direct_options;
    direct_options.unlimited = true;
    auto direct = FakeProvider::Start(direct_options);
    ASSERT_TRUE(direct.ok());
    httplib::Client to_direct((*direct)->base_url());
    httplib::Result expected =
        to_direct.Post(c.path.c_str(), c.headers, c.body, "application/json");
    ASSERT_TRUE(expected);
    ASSERT_EQ(expected->status, 200) << expected->body;

    log_.clear();
    Start();  // a fresh provider, seeded alike, behind the proxy
    httplib::Result proxied = Post(c.path, c.body, c.headers);
    ASSERT_TRUE(proxied);
    ASSERT_EQ(proxied->status, 200) << proxied->body;
    EXPECT_EQ(proxied->get_header_value("content-type"), "text/event-stream");
    const Stream want = ReadStream(expected->body);
    const Stream got = ReadStream(proxied->body);
    EXPECT_EQ(got.events, want.events);
    EXPECT_EQ(got.text, want.text);
    EXPECT_FALSE(got.text.empty());
    const std::vector<std::string> lines = Log(1);
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_THAT(lines[0], AllOf(HasSubstr("status=200"), Not(HasSubstr(" in=0 ")),
                                Not(HasSubstr(" out=0 "))));
    proxy_.reset();
  }
}

// A provider's 429 passes through as it is, and is not retried on the
// caller's behalf (no request is charged twice unseen).
TEST_F(ProxyTest, AProviders429PassesThroughUntouchedAndUnretried) {
  FakeProviderOptions provider_options;
  provider_options.spend_limit_rate = 1.0;  // every request: the month's spend is used up
  StartLimited("", {}, provider_options);
  httplib::Result limited = Post("/v1/messages", kMessage);
  ASSERT_TRUE(limited);
  EXPECT_EQ(limited->status, 429);
  const nlohmann::json body = nlohmann::json::parse(limited->body);
  EXPECT_EQ(body["error"]["type"], "rate_limit_error");
  EXPECT_EQ(body["error"]["details"]["error_code"], "enforced_spend_limit_reached");
  EXPECT_TRUE(limited->has_header("request-id"));
  EXPECT_EQ(provider_->stats().totals.requests, 1u);
  EXPECT_EQ(proxy_->stats().upstream_rate_limited, 1u);
}

// The provider's rate-limit headers feed the key's buckets: with a limit
// the proxy was never told (one a minute at the provider), the second
// request waits in the proxy rather than drawing the provider's 429.
TEST_F(ProxyTest, TheProvidersHeadersHoldTheKeysBuckets) {
  FakeProviderOptions provider_options;
  provider_options.rpm = 1;
  ProxyOptions options;
  options.queue_timeout = absl::Milliseconds(300);
  StartLimited("headroom = 1.0\n[providers.anthropic]\nrequests_per_minute = 100\n", options,
               provider_options);
  EXPECT_EQ(Post("/v1/messages", kMessage)->status, 200);
  httplib::Result held = Post("/v1/messages", kMessage);
  ASSERT_TRUE(held);
  EXPECT_EQ(held->status, 429);
  EXPECT_THAT(held->body, HasSubstr("sluice proxy"));
  EXPECT_EQ(provider_->stats().totals.requests, 1u);
  EXPECT_EQ(provider_->stats().totals.rate_limited, 0u);
}

// A proxy started with no limits at all learns the provider's from the
// headers of its first answer (and the size of its bucket): the requests
// after it wait in the proxy instead of drawing the provider's 429s.
TEST_F(ProxyTest, WithNoLimitsItLearnsTheProvidersFromTheFirstAnswer) {
  FakeProviderOptions provider_options;
  provider_options.rpm = 600;  // 10 a second, a bucket of one second: 10
  provider_options.bucket_span = absl::Seconds(1);
  provider_options.itpm = provider_options.otpm = provider_options.tpm = 100000000;
  StartLimited("", {}, provider_options);
  ASSERT_EQ(Post("/v1/messages", kMessage)->status, 200);
  std::vector<std::thread> callers;
  std::vector<int> statuses(16, 0);
  for (int i = 0; i < 16; ++i) {
    callers.emplace_back([&, i] {
      httplib::Result r = Post("/v1/messages", kMessage);
      statuses[i] = r ? r->status : -1;
    });
  }
  for (std::thread& t : callers) t.join();
  for (int status : statuses) EXPECT_EQ(status, 200);
  EXPECT_EQ(provider_->stats().totals.rate_limited, 0u);
  EXPECT_EQ(provider_->stats().totals.requests, 17u);
}

}  // namespace
}  // namespace sluice
