// Starts the simulated provider in-process on a free loopback port and talks
// to it over real HTTP with httplib::Client, as the sluice client will. The
// CLI verb is run once as a separate program (SLUICE_CLI_PATH).
#include "tools/fake_provider/fake_provider.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace sluice {
namespace {

using Json = nlohmann::json;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::Ge;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Le;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::StartsWith;

constexpr char kAnthropicKey[] = "sk-ant-api03-not-a-real-key-0001";
constexpr char kOpenAiKey[] = "sk-proj-not-a-real-key-0002";

// "Be brief." (9 bytes) + "Hello, world" (12): ceil(21 / 4) + 4 * 1 message.
constexpr uint64_t kAnthropicInputTokens = 10;
// "You are terse." (14) + "What is 2+2?" (12): ceil(26 / 4) + 4 * 2 messages.
constexpr uint64_t kOpenAiInputTokens = 15;

constexpr char kRfc3339[] = R"([0-9]{4}-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]Z)";
// Go's time.Duration.String(), as OpenAI's reset headers carry it.
constexpr char kGoDuration[] =
    R"(0s|[0-9]+(\.[0-9]+)?(ns|µs|ms)|([0-9]+h)?([0-9]+m)?[0-9]+(\.[0-9]+)?s)";

Json AnthropicBody(uint64_t max_tokens = 100) {
  return {{"model", "claude-sonnet-4"},
          {"max_tokens", max_tokens},
          {"system", "Be brief."},
          {"messages", {{{"role", "user"}, {"content", "Hello, world"}}}}};
}

Json OpenAiBody(std::optional<uint64_t> max_tokens = 100) {
  Json body = {{"model", "gpt-4o"},
               {"messages",
                {{{"role", "system"}, {"content", "You are terse."}},
                 {{"role", "user"}, {"content", "What is 2+2?"}}}}};
  if (max_tokens) body["max_tokens"] = *max_tokens;
  return body;
}

httplib::Headers AnthropicHeaders(const std::string& key = kAnthropicKey) {
  return {{"x-api-key", key}, {"anthropic-version", "2023-06-01"}};
}

httplib::Headers OpenAiHeaders(const std::string& key = kOpenAiKey) {
  return {{"Authorization", "Bearer " + key}};
}

// One HTTP exchange, flattened for assertions.
struct Reply {
  httplib::Error error = httplib::Error::Success;
  int status = 0;
  httplib::Headers headers;
  std::string body;

  bool ok() const { return error == httplib::Error::Success; }
  std::string header(const std::string& name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  bool has_header(const std::string& name) const { return headers.count(name) > 0; }
  Json json() const { return Json::parse(body, nullptr, /*allow_exceptions=*/false); }
};

Reply ToReply(const httplib::Result& result) {
  Reply reply;
  reply.error = result.error();
  if (result) {
    reply.status = result->status;
    reply.headers = result->headers;
    reply.body = result->body;
  }
  return reply;
}

class FakeProviderTest : public ::testing::Test {
 protected:
  void Start(FakeProviderOptions options = {}) {
    absl::StatusOr<std::unique_ptr<FakeProvider>> provider = FakeProvider::Start(options);
    ASSERT_TRUE(provider.ok()) << provider.status();
    provider_ = *std::move(provider);
    client_ = std::make_unique<httplib::Client>(provider_->base_url());
    client_->set_read_timeout(5, 0);
  }

  Reply Post(const std::string& path, const httplib::Headers& headers, const std::string& body) {
    return ToReply(client_->Post(path, headers, body, "application/json"));
  }
  Reply Anthropic(const Json& body, const httplib::Headers& headers = AnthropicHeaders()) {
    return Post("/v1/messages", headers, body.dump());
  }
  Reply OpenAi(const Json& body, const httplib::Headers& headers = OpenAiHeaders()) {
    return Post("/v1/chat/completions", headers, body.dump());
  }
  Json Stats() {
    const Reply r = ToReply(client_->Get("/stats"));
    EXPECT_EQ(r.status, 200);
    return r.json();
  }

  std::unique_ptr<FakeProvider> provider_;
  std::unique_ptr<httplib::Client> client_;
};

int WordCount(const std::string& text) {
  return static_cast<int>(std::vector<std::string>(absl::StrSplit(text, ' ')).size());
}

// Shapes and usage -------------------------------------------------------------

TEST_F(FakeProviderTest, AnthropicMessageHasTheApiShapeAndExactInputTokens) {
  Start();
  const Reply r = Anthropic(AnthropicBody(/*max_tokens=*/50));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.header("request-id"), StartsWith("req_"));
  EXPECT_THAT(r.header("Content-Type"), StartsWith("application/json"));
  const Json j = r.json();
  ASSERT_TRUE(j.is_object()) << r.body;
  EXPECT_THAT(j["id"].get<std::string>(), StartsWith("msg_"));
  EXPECT_EQ(j["type"], "message");
  EXPECT_EQ(j["role"], "assistant");
  EXPECT_EQ(j["model"], "claude-sonnet-4");
  EXPECT_TRUE(j["stop_sequence"].is_null());
  const Json& usage = j["usage"];
  EXPECT_EQ(usage["input_tokens"], kAnthropicInputTokens);
  EXPECT_EQ(usage["cache_creation_input_tokens"], 0);
  EXPECT_EQ(usage["cache_read_input_tokens"], 0);
  const uint64_t out = usage["output_tokens"].get<uint64_t>();
  EXPECT_THAT(out, AllOf(Ge(1u), Le(50u)));
  ASSERT_THAT(j["content"], SizeIs(1));
  EXPECT_EQ(j["content"][0]["type"], "text");
  EXPECT_EQ(WordCount(j["content"][0]["text"].get<std::string>()), static_cast<int>(out));
  EXPECT_EQ(j["stop_reason"], out == 50 ? "max_tokens" : "end_turn");
}

TEST_F(FakeProviderTest, AnthropicCountsTextPartsAndSystemBlocks) {
  Start();
  Json body = AnthropicBody();
  // 4 + 8 + 9 bytes of text; the image counts nothing: ceil(21 / 4) + 4.
  body["system"] = {{{"type", "text"}, {"text", "Be brief."}}};
  body["messages"][0]["content"] = {{{"type", "text"}, {"text", "abcd"}},
                                    {{"type", "image"}, {"source", {{"type", "base64"}}}},
                                    {{"type", "text"}, {"text", "efghijkl"}}};
  const Reply r = Anthropic(body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["usage"]["input_tokens"], kAnthropicInputTokens);

  // Multi-byte UTF-8 counts bytes: "héllo" is 6 bytes, "€" 3; no system.
  body.erase("system");
  body["messages"] = {{{"role", "user"}, {"content", "h\u00e9llo"}},
                      {{"role", "assistant"}, {"content", "\u20ac"}}};
  const Reply utf8 = Anthropic(body);
  ASSERT_EQ(utf8.status, 200) << utf8.body;
  EXPECT_EQ(utf8.json()["usage"]["input_tokens"], 3 + 4 * 2);  // ceil(9 / 4) + 8
}

TEST_F(FakeProviderTest, CountTokensAnswersTheSameCount) {
  Start();
  Json body = AnthropicBody();
  body.erase("max_tokens");
  const Reply r = Post("/v1/messages/count_tokens", AnthropicHeaders(), body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json(), Json({{"input_tokens", kAnthropicInputTokens}}));
}

TEST_F(FakeProviderTest, OpenAiCompletionHasTheApiShapeAndExactPromptTokens) {
  Start();
  const Reply r = OpenAi(OpenAiBody(/*max_tokens=*/40));
  ASSERT_TRUE(r.ok()) << r.error;
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.header("x-request-id"), Not(IsEmpty()));
  const Json j = r.json();
  EXPECT_THAT(j["id"].get<std::string>(), StartsWith("chatcmpl-"));
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "gpt-4o");
  EXPECT_NEAR(j["created"].get<double>(), absl::ToUnixSeconds(absl::Now()), 5);
  ASSERT_THAT(j["choices"], SizeIs(1));
  const Json& choice = j["choices"][0];
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["message"]["role"], "assistant");
  const Json& usage = j["usage"];
  EXPECT_EQ(usage["prompt_tokens"], kOpenAiInputTokens);
  const uint64_t out = usage["completion_tokens"].get<uint64_t>();
  EXPECT_THAT(out, AllOf(Ge(1u), Le(40u)));
  EXPECT_EQ(usage["total_tokens"], kOpenAiInputTokens + out);
  EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_EQ(WordCount(choice["message"]["content"].get<std::string>()), static_cast<int>(out));
  EXPECT_EQ(choice["finish_reason"], out == 40 ? "length" : "stop");
}

TEST_F(FakeProviderTest, OpenAiAcceptsMaxCompletionTokensOrNone) {
  FakeProviderOptions options;
  options.default_max_tokens = 3;
  Start(options);
  Json body = OpenAiBody(std::nullopt);
  body["max_completion_tokens"] = 2;
  const Reply r = OpenAi(body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.json()["usage"]["completion_tokens"].get<int>(), AllOf(Ge(1), Le(2)));
  const Reply none = OpenAi(OpenAiBody(std::nullopt));
  ASSERT_EQ(none.status, 200) << none.body;
  EXPECT_THAT(none.json()["usage"]["completion_tokens"].get<int>(), AllOf(Ge(1), Le(3)));
}

TEST_F(FakeProviderTest, OutputsAreDeterministicForASeed) {
  const auto run = [this](uint64_t seed) {
    FakeProviderOptions options;
    options.seed = seed;
    Start(options);
    std::vector<uint64_t> outputs;
    for (int i = 0; i < 10; ++i) {
      outputs.push_back(Anthropic(AnthropicBody(1000)).json()["usage"]["output_tokens"]);
      outputs.push_back(OpenAi(OpenAiBody(1000)).json()["usage"]["completion_tokens"]);
    }
    return outputs;
  };
  const std::vector<uint64_t> first = run(7);
  EXPECT_EQ(run(7), first);
  EXPECT_NE(run(8), first);
}

// Authentication and validation ------------------------------------------------

TEST_F(FakeProviderTest, AnthropicAuthFailures) {
  FakeProviderOptions options;
  options.api_keys = {kAnthropicKey};
  Start(options);
  const Reply no_key = Anthropic(AnthropicBody(), {{"anthropic-version", "2023-06-01"}});
  EXPECT_EQ(no_key.status, 401);
  EXPECT_THAT(no_key.header("request-id"), StartsWith("req_"));
  const Json j = no_key.json();
  EXPECT_EQ(j["type"], "error");
  EXPECT_EQ(j["error"]["type"], "authentication_error");
  EXPECT_THAT(j["request_id"].get<std::string>(), StartsWith("req_"));

  const Reply wrong_key = Anthropic(AnthropicBody(), AnthropicHeaders("sk-ant-wrong"));
  EXPECT_EQ(wrong_key.status, 401);
  EXPECT_EQ(wrong_key.json()["error"]["type"], "authentication_error");

  const Reply no_version = Anthropic(AnthropicBody(), {{"x-api-key", kAnthropicKey}});
  EXPECT_EQ(no_version.status, 400);
  EXPECT_EQ(no_version.json()["error"]["type"], "invalid_request_error");
  EXPECT_THAT(no_version.json()["error"]["message"].get<std::string>(),
              HasSubstr("anthropic-version"));
}

// The official TypeScript SDK's headers: a Bearer key and a newer version.
httplib::Headers AnthropicBearerHeaders(const std::string& key = kAnthropicKey) {
  return {{"Authorization", "Bearer " + key}, {"anthropic-version", "2026-10-21"}};
}

TEST_F(FakeProviderTest, AnthropicAcceptsABearerKeyWithTheSameLimitsAndStats) {
  FakeProviderOptions options;
  options.rpm = 2;
  Start(options);
  const Reply bearer = Anthropic(AnthropicBody(), AnthropicBearerHeaders());
  ASSERT_EQ(bearer.status, 200) << bearer.body;
  EXPECT_EQ(bearer.json()["type"], "message");
  EXPECT_EQ(bearer.header("anthropic-ratelimit-requests-remaining"), "1");
  // The same key in x-api-key draws from the same bucket...
  const Reply x_api_key = Anthropic(AnthropicBody());
  ASSERT_EQ(x_api_key.status, 200) << x_api_key.body;
  EXPECT_EQ(x_api_key.header("anthropic-ratelimit-requests-remaining"), "0");
  EXPECT_EQ(Anthropic(AnthropicBody(), AnthropicBearerHeaders()).status, 429);
  // ...and counts as the same key.
  const FakeProviderStats stats = provider_->stats();
  ASSERT_THAT(stats.keys, SizeIs(1));
  const FakeProviderStats::Counts key = stats.ForKey(FakeApi::kAnthropic, kAnthropicKey);
  EXPECT_EQ(key.requests, 3u);
  EXPECT_EQ(key.admitted, 2u);
  EXPECT_EQ(key.rate_limited, 1u);
}

TEST_F(FakeProviderTest, AnthropicPrefersXApiKeyWhenBothCredentialsArePresent) {
  FakeProviderOptions options;
  options.api_keys = {kAnthropicKey};
  Start(options);
  httplib::Headers both = AnthropicHeaders();
  both.emplace("Authorization", "Bearer sk-ant-not-allowed");
  EXPECT_EQ(Anthropic(AnthropicBody(), both).status, 200);
  httplib::Headers swapped = AnthropicBearerHeaders();
  swapped.emplace("x-api-key", "sk-ant-not-allowed");
  const Reply refused = Anthropic(AnthropicBody(), swapped);
  EXPECT_EQ(refused.status, 401);
  EXPECT_EQ(refused.json()["error"]["type"], "authentication_error");
  const FakeProviderStats stats = provider_->stats();
  ASSERT_THAT(stats.keys, SizeIs(1));
  EXPECT_EQ(stats.ForKey(FakeApi::kAnthropic, kAnthropicKey).requests, 1u);

  const Reply none = Anthropic(AnthropicBody(), {{"anthropic-version", "2026-10-21"}});
  EXPECT_EQ(none.status, 401);
  EXPECT_THAT(none.json()["error"]["message"].get<std::string>(),
              AllOf(HasSubstr("x-api-key"), HasSubstr("Authorization: Bearer")));
}

TEST_F(FakeProviderTest, OpenAiAuthFailures) {
  FakeProviderOptions options;
  options.api_keys = {kOpenAiKey};
  Start(options);
  for (const httplib::Headers& headers :
       {httplib::Headers{}, httplib::Headers{{"Authorization", kOpenAiKey}},
        httplib::Headers{{"Authorization", "Bearer "}}}) {
    const Reply r = OpenAi(OpenAiBody(), headers);
    EXPECT_EQ(r.status, 401);
    const Json j = r.json();
    EXPECT_EQ(j["error"]["type"], "invalid_request_error") << r.body;
    EXPECT_TRUE(j["error"]["param"].is_null());
    EXPECT_TRUE(j["error"].contains("code"));
  }
  const Reply wrong = OpenAi(OpenAiBody(), OpenAiHeaders("sk-wrong"));
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(wrong.json()["error"]["code"], "invalid_api_key");
}

TEST_F(FakeProviderTest, BadAnthropicBodiesAre400sNamingTheField) {
  Start();
  const auto message_of = [this](const std::string& body) {
    const Reply r = Post("/v1/messages", AnthropicHeaders(), body);
    EXPECT_EQ(r.status, 400) << body;
    const Json j = r.json();
    EXPECT_EQ(j["type"], "error") << r.body;
    EXPECT_EQ(j["error"]["type"], "invalid_request_error") << r.body;
    return j["error"]["message"].get<std::string>();
  };
  const auto without = [](const char* field) {
    Json body = AnthropicBody();
    body.erase(field);
    return body.dump();
  };
  const auto with = [](const char* field, Json value) {
    Json body = AnthropicBody();
    body[field] = std::move(value);
    return body.dump();
  };
  EXPECT_THAT(message_of("not json"), HasSubstr("JSON"));
  EXPECT_THAT(message_of(""), HasSubstr("JSON"));
  EXPECT_THAT(message_of("[1, 2]"), HasSubstr("object"));
  EXPECT_THAT(message_of(without("model")), StartsWith("model:"));
  EXPECT_THAT(message_of(with("model", 7)), StartsWith("model:"));
  EXPECT_THAT(message_of(without("max_tokens")), StartsWith("max_tokens:"));
  EXPECT_THAT(message_of(with("max_tokens", 0)), StartsWith("max_tokens:"));
  EXPECT_THAT(message_of(with("max_tokens", -3)), StartsWith("max_tokens:"));
  EXPECT_THAT(message_of(with("max_tokens", "5")), StartsWith("max_tokens:"));
  EXPECT_THAT(message_of(with("max_tokens", 2.5)), StartsWith("max_tokens:"));
  EXPECT_THAT(message_of(with("max_tokens", nullptr)), StartsWith("max_tokens:"));
  EXPECT_THAT(message_of(with("max_tokens", 1000000)), StartsWith("max_tokens:"));
  EXPECT_THAT(message_of(without("messages")), StartsWith("messages:"));
  EXPECT_THAT(message_of(with("messages", "hi")), StartsWith("messages:"));
  EXPECT_THAT(message_of(with("messages", Json::array())), StartsWith("messages:"));
  EXPECT_THAT(message_of(with("messages", {{{"role", "user"}}})), StartsWith("messages.0.content"));
  EXPECT_THAT(message_of(with("messages", {{{"content", "x"}}})), StartsWith("messages.0.role"));
  EXPECT_THAT(message_of(with("messages", {7})), StartsWith("messages.0"));
  EXPECT_THAT(message_of(with("messages", {{{"role", "user"}, {"content", {{{"text", 3}}}}}})),
              StartsWith("messages.0.content.0.text"));
  EXPECT_THAT(message_of(with("system", 3)), StartsWith("system:"));
  EXPECT_THAT(message_of(with("stream", "yes")), StartsWith("stream:"));
}

TEST_F(FakeProviderTest, BadOpenAiBodiesAre400sNamingTheParam) {
  Start();
  const auto error_of = [this](const Json& body) {
    const Reply r = OpenAi(body);
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_EQ(r.json()["error"]["type"], "invalid_request_error") << r.body;
    return r.json()["error"];
  };
  Json body = OpenAiBody();
  body.erase("messages");
  const Json missing = error_of(body);
  EXPECT_EQ(missing["param"], "messages");
  EXPECT_EQ(missing["code"], "missing_required_parameter");
  EXPECT_THAT(missing["message"].get<std::string>(), HasSubstr("'messages'"));

  body = OpenAiBody();
  body["max_tokens"] = "many";
  EXPECT_EQ(error_of(body)["param"], "max_tokens");
  body = OpenAiBody();
  body["max_completion_tokens"] = 0;
  EXPECT_EQ(error_of(body)["param"], "max_completion_tokens");

  const Reply garbage = Post("/v1/chat/completions", OpenAiHeaders(), "{\"model\":");
  EXPECT_EQ(garbage.status, 400);
  EXPECT_TRUE(garbage.json()["error"]["param"].is_null()) << garbage.body;
}

TEST_F(FakeProviderTest, OversizedBodiesAndUnknownPathsGetJsonErrors) {
  FakeProviderOptions options;
  options.max_body_bytes = 4096;
  Start(options);
  const std::string huge(10000, 'x');
  const Reply anthropic = Post("/v1/messages", AnthropicHeaders(), huge);
  EXPECT_EQ(anthropic.status, 413);
  EXPECT_EQ(anthropic.json()["error"]["type"], "request_too_large") << anthropic.body;
  const Reply openai = Post("/v1/chat/completions", OpenAiHeaders(), huge);
  EXPECT_EQ(openai.status, 413);
  EXPECT_EQ(openai.json()["error"]["type"], "invalid_request_error") << openai.body;

  // Deep nesting under the size cap is refused without building the tree.
  const Reply deep = Post("/v1/messages", AnthropicHeaders(), std::string(4000, '['));
  EXPECT_EQ(deep.status, 400);
  EXPECT_THAT(deep.json()["error"]["message"].get<std::string>(), HasSubstr("nested"));

  const Reply missing = Post("/v1/complete", AnthropicHeaders(), "{}");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.json()["error"]["type"], "not_found_error") << missing.body;
  const Reply get = ToReply(client_->Get("/v1/chat/completions"));
  EXPECT_EQ(get.status, 404);
  EXPECT_TRUE(get.json()["error"].is_object()) << get.body;
}

TEST_F(FakeProviderTest, RandomBodiesNeverCrashAndAlwaysGetJson) {
  Start();
  std::mt19937_64 rng(42);
  const std::vector<std::string> seeds = {
      AnthropicBody().dump(), OpenAiBody().dump(), "{}", "[]", "null", "\"\"",
      "{\"messages\":[{}]}"};
  for (int i = 0; i < 200; ++i) {
    std::string body = seeds[rng() % seeds.size()];
    // Flip, cut or insert a few bytes, including invalid UTF-8.
    for (int edits = 1 + rng() % 4; edits > 0 && !body.empty(); --edits) {
      const size_t at = rng() % body.size();
      switch (rng() % 3) {
        case 0:
          body[at] = static_cast<char>(rng());
          break;
        case 1:
          body.resize(at);
          break;
        default:
          body.insert(at, 1, static_cast<char>(rng()));
      }
    }
    const bool anthropic = i % 2 == 0;
    const Reply r = anthropic ? Post("/v1/messages", AnthropicHeaders(), body)
                              : Post("/v1/chat/completions", OpenAiHeaders(), body);
    ASSERT_TRUE(r.ok()) << r.error << " for " << body;
    EXPECT_THAT(r.status, ::testing::AnyOf(200, 400)) << body;
    EXPECT_FALSE(r.json().is_discarded()) << r.body;
  }
}

// Streaming -------------------------------------------------------------------------

// A streamed reply: the pieces as httplib received them, and the events
// parsed from their concatenation.
struct Streamed {
  httplib::Error error = httplib::Error::Success;
  int status = 0;
  httplib::Headers headers;
  std::vector<std::string> chunks;
  struct Event {
    std::string name;  // "" for data-only events
    std::string data;
  };
  std::vector<Event> events;

  std::string header(const std::string& name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const Event& e : events) out.push_back(e.name);
    return out;
  }
  // The data of every event, parsed, skipping OpenAI's "[DONE]".
  std::vector<Json> data() const {
    std::vector<Json> out;
    for (const Event& e : events) {
      if (e.data != "[DONE]") out.push_back(Json::parse(e.data, nullptr, false));
    }
    return out;
  }
};

Streamed PostStream(const std::string& base_url, const std::string& path,
                    const httplib::Headers& headers, const Json& body) {
  Streamed out;
  httplib::Client client(base_url);
  client.set_read_timeout(5, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.headers = headers;
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.response_handler = [&](const httplib::Response& res) {
    out.status = res.status;
    out.headers = res.headers;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    out.chunks.emplace_back(data, n);
    return true;
  };
  out.error = client.send(req).error();
  std::string all;
  for (const std::string& c : out.chunks) all += c;
  for (absl::string_view event : absl::StrSplit(all, "\n\n", absl::SkipEmpty())) {
    Streamed::Event e;
    for (absl::string_view line : absl::StrSplit(event, '\n')) {
      if (absl::ConsumePrefix(&line, "event: ")) e.name = std::string(line);
      if (absl::ConsumePrefix(&line, "data: ")) e.data = std::string(line);
    }
    out.events.push_back(std::move(e));
  }
  return out;
}

Json Streaming(Json body) {
  body["stream"] = true;
  return body;
}

TEST_F(FakeProviderTest, AnthropicStreamsTheMessageEventsEachFlushedOnItsOwn) {
  FakeProviderOptions options;
  options.seed = 7;
  Start(options);
  const Streamed s = PostStream(provider_->base_url(), "/v1/messages", AnthropicBearerHeaders(),
                                Streaming(AnthropicBody(/*max_tokens=*/1000)));
  ASSERT_EQ(s.error, httplib::Error::Success);
  ASSERT_EQ(s.status, 200);
  EXPECT_THAT(s.header("Content-Type"), StartsWith("text/event-stream"));
  EXPECT_THAT(s.header("request-id"), StartsWith("req_"));
  EXPECT_EQ(s.header("anthropic-ratelimit-requests-remaining"), "999");
  // Chunked: the events go out as they are written, not as one body.
  EXPECT_EQ(s.header("Transfer-Encoding"), "chunked");
  const std::vector<std::string> names = s.names();
  ASSERT_GE(names.size(), 8u);
  EXPECT_THAT(std::vector<std::string>(names.begin(), names.begin() + 3),
              ElementsAre("message_start", "content_block_start", "ping"));
  EXPECT_THAT(std::vector<std::string>(names.end() - 3, names.end()),
              ElementsAre("content_block_stop", "message_delta", "message_stop"));
  const std::vector<Json> data = s.data();
  const Json& message = data[0]["message"];
  EXPECT_THAT(message["id"].get<std::string>(), StartsWith("msg_"));
  EXPECT_EQ(message["model"], "claude-sonnet-4");
  EXPECT_EQ(message["role"], "assistant");
  EXPECT_EQ(message["content"], Json::array());
  EXPECT_EQ(message["usage"]["input_tokens"], kAnthropicInputTokens);
  EXPECT_EQ(message["usage"]["cache_read_input_tokens"], 0);
  std::string text;
  int deltas = 0;
  for (size_t i = 3; i + 3 < data.size(); ++i) {
    EXPECT_EQ(names[i], "content_block_delta");
    EXPECT_EQ(data[i]["delta"]["type"], "text_delta");
    text += data[i]["delta"]["text"].get<std::string>();
    ++deltas;
  }
  const uint64_t out = data[data.size() - 2]["usage"]["output_tokens"];
  EXPECT_EQ(WordCount(text), static_cast<int>(out));
  EXPECT_EQ(deltas, static_cast<int>((out + 3) / 4));  // a few words each
  EXPECT_EQ(data[data.size() - 2]["delta"]["stop_reason"], out == 1000 ? "max_tokens" : "end_turn");
  EXPECT_EQ(provider_->stats().ForKey(FakeApi::kAnthropic, kAnthropicKey).output_tokens, out);

  // The same seed and request order unstreamed: the same reply.
  Start(options);
  const Reply whole = Anthropic(AnthropicBody(/*max_tokens=*/1000));
  ASSERT_EQ(whole.status, 200);
  EXPECT_EQ(whole.json()["content"][0]["text"], text);
  EXPECT_EQ(whole.json()["usage"]["output_tokens"], out);
}

TEST_F(FakeProviderTest, OpenAiStreamsChunksThenUsageWhenAskedThenDone) {
  FakeProviderOptions options;
  options.seed = 7;
  Start(options);
  Json body = Streaming(OpenAiBody(/*max_tokens=*/1000));
  body["stream_options"] = {{"include_usage", true}};
  const Streamed s =
      PostStream(provider_->base_url(), "/v1/chat/completions", OpenAiHeaders(), body);
  ASSERT_EQ(s.error, httplib::Error::Success);
  ASSERT_EQ(s.status, 200);
  EXPECT_THAT(s.header("Content-Type"), StartsWith("text/event-stream"));
  EXPECT_EQ(s.header("Transfer-Encoding"), "chunked");
  ASSERT_GE(s.events.size(), 5u);
  EXPECT_EQ(s.events.back().data, "[DONE]");
  const std::vector<Json> data = s.data();
  const std::string id = data[0]["id"];
  EXPECT_THAT(id, StartsWith("chatcmpl-"));
  for (const Json& chunk : data) {
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    EXPECT_EQ(chunk["id"], id);
    EXPECT_EQ(chunk["model"], "gpt-4o");
  }
  EXPECT_EQ(data[0]["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (size_t i = 1; i + 2 < data.size(); ++i) {
    EXPECT_TRUE(data[i]["choices"][0]["finish_reason"].is_null());
    text += data[i]["choices"][0]["delta"]["content"].get<std::string>();
  }
  const Json& usage = data.back()["usage"];
  EXPECT_EQ(data.back()["choices"], Json::array());
  EXPECT_EQ(usage["prompt_tokens"], kOpenAiInputTokens);
  const uint64_t out = usage["completion_tokens"];
  EXPECT_EQ(usage["total_tokens"], kOpenAiInputTokens + out);
  EXPECT_EQ(WordCount(text), static_cast<int>(out));
  EXPECT_EQ(data[data.size() - 2]["choices"][0]["finish_reason"], out == 1000 ? "length" : "stop");

  Start(options);
  const Reply whole = OpenAi(OpenAiBody(/*max_tokens=*/1000));
  EXPECT_EQ(whole.json()["choices"][0]["message"]["content"], text);

  // Without include_usage: no usage chunk.
  const Streamed plain = PostStream(provider_->base_url(), "/v1/chat/completions", OpenAiHeaders(),
                                    Streaming(OpenAiBody(/*max_tokens=*/3)));
  ASSERT_EQ(plain.status, 200);
  for (const Json& chunk : plain.data()) {
    EXPECT_FALSE(chunk.contains("usage"));
    EXPECT_THAT(chunk["choices"], SizeIs(1));
  }
}

// Usage streamed is charged and settled as unstreamed: the TPM bucket holds
// exactly the limit less the total the usage chunk reports.
TEST_F(FakeProviderTest, StreamsChargeAndSettleAsUnstreamed) {
  FakeProviderOptions options;
  options.tpm = 1000;
  options.otpm = 8000;
  options.time_scale = 0.001;
  Start(options);
  Json body = Streaming(OpenAiBody(/*max_tokens=*/600));
  body["stream_options"] = {{"include_usage", true}};
  const Streamed openai =
      PostStream(provider_->base_url(), "/v1/chat/completions", OpenAiHeaders(), body);
  ASSERT_EQ(openai.status, 200);
  const uint64_t total = openai.data().back()["usage"]["total_tokens"];
  const Reply next = OpenAi(OpenAiBody(/*max_tokens=*/1));
  ASSERT_EQ(next.status, 200) << next.body;
  EXPECT_EQ(next.header("x-ratelimit-remaining-tokens"),
            absl::StrCat(1000 - total - next.json()["usage"]["total_tokens"].get<uint64_t>()));

  const Streamed anthropic = PostStream(provider_->base_url(), "/v1/messages", AnthropicHeaders(),
                                        Streaming(AnthropicBody(/*max_tokens=*/4000)));
  ASSERT_EQ(anthropic.status, 200);
  const uint64_t out = anthropic.data()[anthropic.data().size() - 2]["usage"]["output_tokens"];
  const Reply after = Anthropic(AnthropicBody(/*max_tokens=*/1));
  ASSERT_EQ(after.status, 200);
  EXPECT_EQ(after.header("anthropic-ratelimit-output-tokens-remaining"),
            absl::StrCat((8000 - out - 1 + 500) / 1000 * 1000));
  const FakeProviderStats stats = provider_->stats();
  EXPECT_EQ(stats.ForKey(FakeApi::kOpenAi, kOpenAiKey).admitted, 2u);
  EXPECT_EQ(stats.ForKey(FakeApi::kAnthropic, kAnthropicKey).output_tokens, out + 1);
}

TEST_F(FakeProviderTest, StreamedRequestsGetPlainJsonErrors) {
  FakeProviderOptions options;
  options.rpm = 1;
  Start(options);
  ASSERT_EQ(Anthropic(Streaming(AnthropicBody())).status, 200);
  const Reply limited = Anthropic(Streaming(AnthropicBody()));
  EXPECT_EQ(limited.status, 429);
  EXPECT_THAT(limited.header("Content-Type"), StartsWith("application/json"));
  EXPECT_EQ(limited.json()["error"]["type"], "rate_limit_error");
  const Reply no_key = Anthropic(Streaming(AnthropicBody()), {{"anthropic-version", "2023-06-01"}});
  EXPECT_EQ(no_key.status, 401);
  EXPECT_EQ(no_key.json()["error"]["type"], "authentication_error");
  Json bad = Streaming(OpenAiBody());
  bad["stream_options"] = {{"include_usage", "yes"}};
  const Reply bad_options = OpenAi(bad);
  EXPECT_EQ(bad_options.status, 400);
  EXPECT_EQ(bad_options.json()["error"]["param"], "stream_options.include_usage");
}

TEST_F(FakeProviderTest, TruncatedStreamStopsHalfwayAndSlowStreamArrivesWhole) {
  FakeProviderOptions options;
  options.truncated_body_rate = 1;
  Start(options);
  const Streamed cut = PostStream(provider_->base_url(), "/v1/messages", AnthropicHeaders(),
                                  Streaming(AnthropicBody(/*max_tokens=*/100)));
  EXPECT_NE(cut.error, httplib::Error::Success);  // the chunked body never ends
  ASSERT_FALSE(cut.events.empty());
  EXPECT_EQ(cut.events[0].name, "message_start");
  EXPECT_THAT(cut.names(), Not(Contains("message_stop")));

  options.truncated_body_rate = 0;
  options.slow_body_rate = 1;
  Start(options);
  const absl::Time start = absl::Now();
  const Streamed slow = PostStream(provider_->base_url(), "/v1/chat/completions", OpenAiHeaders(),
                                   Streaming(OpenAiBody()));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  ASSERT_EQ(slow.error, httplib::Error::Success);
  EXPECT_EQ(slow.events.back().data, "[DONE]");
}

// OpenAI's Responses and Embeddings ----------------------------------------------------

TEST_F(FakeProviderTest, ResponsesAnswersTextWithUsage) {
  FakeProviderOptions options;
  options.seed = 7;
  Start(options);
  // "You are terse." (14) + "What is 2+2?" (12): ceil(26 / 4) + 4 * 1 message.
  const Json body = {{"model", "gpt-4o"},
                     {"instructions", "You are terse."},
                     {"input", "What is 2+2?"},
                     {"max_output_tokens", 1000}};
  const Reply r = Post("/v1/responses", OpenAiHeaders(), body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.header("x-request-id"), Not(IsEmpty()));
  EXPECT_EQ(r.header("x-ratelimit-remaining-requests"), "999");
  const Json j = r.json();
  EXPECT_THAT(j["id"].get<std::string>(), StartsWith("resp_"));
  EXPECT_EQ(j["object"], "response");
  EXPECT_EQ(j["model"], "gpt-4o");
  const uint64_t out = j["usage"]["output_tokens"];
  EXPECT_EQ(j["status"], out == 1000 ? "incomplete" : "completed");
  EXPECT_EQ(j["usage"]["input_tokens"], 7 + 4);
  EXPECT_EQ(j["usage"]["total_tokens"], 11 + out);
  ASSERT_THAT(j["output"], SizeIs(1));
  EXPECT_EQ(j["output"][0]["role"], "assistant");
  const std::string text = j["output"][0]["content"][0]["text"];
  EXPECT_EQ(j["output"][0]["content"][0]["type"], "output_text");
  EXPECT_EQ(WordCount(text), static_cast<int>(out));

  // Streamed: created, the text in deltas, completed with the same usage.
  Start(options);
  Json streamed = body;
  streamed["stream"] = true;
  const Streamed s = PostStream(provider_->base_url(), "/v1/responses", OpenAiHeaders(), streamed);
  ASSERT_EQ(s.status, 200);
  EXPECT_THAT(s.header("Content-Type"), StartsWith("text/event-stream"));
  const std::vector<Json> data = s.data();
  ASSERT_GE(data.size(), 3u);
  EXPECT_EQ(s.events.front().name, "response.created");
  EXPECT_EQ(s.events.back().name, "response.completed");
  std::string joined;
  for (size_t i = 1; i + 1 < data.size(); ++i) {
    EXPECT_EQ(data[i]["type"], "response.output_text.delta");
    EXPECT_EQ(data[i]["sequence_number"], i);
    joined += data[i]["delta"].get<std::string>();
  }
  EXPECT_EQ(joined, text);
  EXPECT_EQ(data.back()["response"]["usage"], j["usage"]);

  // A list of messages, and a bad body naming its param.
  const Json messages = {
      {"model", "gpt-4o"},
      {"input",
       {{{"role", "user"}, {"content", "abcd"}},
        {{"role", "user"}, {"content", {{{"type", "input_text"}, {"text", "efgh"}}}}}}}};
  const Reply listed = Post("/v1/responses", OpenAiHeaders(), messages.dump());
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_EQ(listed.json()["usage"]["input_tokens"], 2 + 4 * 2);
  const Reply bad = Post("/v1/responses", OpenAiHeaders(), R"({"model":"gpt-4o"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.json()["error"]["param"], "input");
}

TEST_F(FakeProviderTest, EmbeddingsAnswersVectorsAndChargesTheInputTokens) {
  FakeProviderOptions options;
  options.tpm = 1000;
  options.time_scale = 0.001;
  Start(options);
  // ceil(5 / 4) + ceil(12 / 4): each input counted on its own.
  const Json body = {{"model", "text-embedding-3-small"}, {"input", {"hello", "how are you?"}}};
  const Reply r = Post("/v1/embeddings", OpenAiHeaders(), body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = r.json();
  EXPECT_EQ(j["object"], "list");
  ASSERT_THAT(j["data"], SizeIs(2));
  EXPECT_EQ(j["data"][1]["object"], "embedding");
  EXPECT_EQ(j["data"][1]["index"], 1);
  EXPECT_THAT(j["data"][1]["embedding"], Not(IsEmpty()));
  EXPECT_EQ(j["usage"], Json({{"prompt_tokens", 5}, {"total_tokens", 5}}));
  EXPECT_EQ(r.header("x-ratelimit-remaining-tokens"), "995");
  EXPECT_EQ(provider_->stats().ForKey(FakeApi::kOpenAi, kOpenAiKey).input_tokens, 5u);

  const Reply bad = Post("/v1/embeddings", OpenAiHeaders(), R"({"model":"m","input":[1]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.json()["error"]["param"], "input.0");
  const Reply no_key = Post("/v1/embeddings", {}, body.dump());
  EXPECT_EQ(no_key.status, 401);
}

TEST_F(FakeProviderTest, OpenAiEndpointsShareTheKeysLimits) {
  FakeProviderOptions options;
  options.rpm = 2;
  Start(options);
  EXPECT_EQ(OpenAi(OpenAiBody()).status, 200);
  EXPECT_EQ(Post("/v1/embeddings", OpenAiHeaders(), R"({"model":"m","input":"x"})").status, 200);
  const Reply limited = Post("/v1/responses", OpenAiHeaders(), R"({"model":"gpt-4o","input":"x"})");
  EXPECT_EQ(limited.status, 429);
  EXPECT_EQ(limited.json()["error"]["code"], "rate_limit_exceeded");
  EXPECT_EQ(provider_->stats().ForKey(FakeApi::kOpenAi, kOpenAiKey).requests, 3u);
  const Reply get = ToReply(client_->Get("/v1/responses"));
  EXPECT_EQ(get.status, 404);
  EXPECT_THAT(get.json()["error"]["message"].get<std::string>(), HasSubstr("Invalid URL"));
}

// Rate limits -----------------------------------------------------------------------

TEST_F(FakeProviderTest, AnthropicRpmRefusesTheSixthOfABurstOfFive) {
  FakeProviderOptions options;
  options.rpm = 5;
  Start(options);
  for (int i = 0; i < 5; ++i) {
    const Reply r = Anthropic(AnthropicBody());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("anthropic-ratelimit-requests-limit"), "5");
    EXPECT_EQ(r.header("anthropic-ratelimit-requests-remaining"), absl::StrCat(4 - i));
    EXPECT_FALSE(r.has_header("retry-after"));
  }
  const Reply r = Anthropic(AnthropicBody());
  EXPECT_EQ(r.status, 429);
  const Json j = r.json();
  ASSERT_TRUE(j.is_object()) << r.body;
  EXPECT_EQ(j["type"], "error");
  EXPECT_EQ(j["error"]["type"], "rate_limit_error");
  EXPECT_THAT(j["error"]["message"].get<std::string>(), HasSubstr("5 requests per minute"));
  EXPECT_FALSE(j["error"].contains("details"));
  EXPECT_EQ(j["request_id"], r.header("request-id"));
  // One permit comes back every 12 s.
  int retry_after = 0;
  ASSERT_TRUE(absl::SimpleAtoi(r.header("retry-after"), &retry_after)) << r.header("retry-after");
  EXPECT_THAT(retry_after, AllOf(Ge(11), Le(12)));
  EXPECT_EQ(r.header("anthropic-ratelimit-requests-remaining"), "0");
  EXPECT_THAT(r.header("anthropic-ratelimit-requests-reset"), MatchesRegex(kRfc3339));
  // The refused request took nothing from the token buckets.
  EXPECT_EQ(r.header("anthropic-ratelimit-input-tokens-remaining"), "100000");
}

TEST_F(FakeProviderTest, AnthropicHeadersDescribeEveryLimit) {
  FakeProviderOptions options;
  options.itpm = 20000;
  options.otpm = 8000;
  Start(options);
  const Reply r = Anthropic(AnthropicBody(/*max_tokens=*/4000));
  ASSERT_EQ(r.status, 200) << r.body;
  const uint64_t out = r.json()["usage"]["output_tokens"];
  for (const char* kind : {"requests", "tokens", "input-tokens", "output-tokens"}) {
    const std::string prefix = absl::StrCat("anthropic-ratelimit-", kind);
    EXPECT_THAT(r.header(prefix + "-limit"), MatchesRegex(R"([0-9]+)")) << kind;
    EXPECT_THAT(r.header(prefix + "-remaining"), MatchesRegex(R"([0-9]+)")) << kind;
    EXPECT_THAT(r.header(prefix + "-reset"), MatchesRegex(kRfc3339)) << kind;
  }
  EXPECT_EQ(r.header("anthropic-ratelimit-input-tokens-limit"), "20000");
  EXPECT_EQ(r.header("anthropic-ratelimit-input-tokens-remaining"), "20000");  // 19990, rounded
  // Output was pre-charged 4000 and settled to `out`; remaining is rounded
  // to the nearest thousand.
  EXPECT_EQ(r.header("anthropic-ratelimit-output-tokens-remaining"),
            absl::StrCat((8000 - out + 500) / 1000 * 1000));
  // "tokens" is the tighter of the two: output here.
  EXPECT_EQ(r.header("anthropic-ratelimit-tokens-limit"), "8000");
  // The reset is when the bucket is full again: within the minute.
  absl::Time reset;
  std::string err;
  ASSERT_TRUE(absl::ParseTime("%Y-%m-%dT%H:%M:%SZ",
                              r.header("anthropic-ratelimit-output-tokens-reset"),
                              absl::UTCTimeZone(), &reset, &err))
      << err;
  EXPECT_GE(reset, absl::Now() - absl::Seconds(1));
  EXPECT_LE(reset, absl::Now() + absl::Seconds(61));
}

TEST_F(FakeProviderTest, AnthropicRequestLargerThanALimitNeverFits) {
  FakeProviderOptions options;
  options.otpm = 100;
  Start(options);
  const Reply r = Anthropic(AnthropicBody(/*max_tokens=*/101));
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.json()["error"]["type"], "rate_limit_error");
  EXPECT_THAT(r.json()["error"]["message"].get<std::string>(), HasSubstr("output tokens"));
  EXPECT_FALSE(r.has_header("retry-after"));
}

TEST_F(FakeProviderTest, OpenAiRpmRefusesWithTryAgainIn) {
  FakeProviderOptions options;
  options.rpm = 5;
  Start(options);
  for (int i = 0; i < 5; ++i) {
    const Reply r = OpenAi(OpenAiBody());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-ratelimit-limit-requests"), "5");
    EXPECT_EQ(r.header("x-ratelimit-remaining-requests"), absl::StrCat(4 - i));
    EXPECT_THAT(r.header("x-ratelimit-reset-requests"), MatchesRegex(kGoDuration));
    EXPECT_THAT(r.header("x-ratelimit-reset-tokens"), MatchesRegex(kGoDuration));
  }
  const Reply r = OpenAi(OpenAiBody());
  EXPECT_EQ(r.status, 429);
  const Json j = r.json();
  ASSERT_TRUE(j.is_object()) << r.body;
  EXPECT_EQ(j["error"]["code"], "rate_limit_exceeded");
  EXPECT_EQ(j["error"]["type"], "requests");
  EXPECT_TRUE(j["error"]["param"].is_null());
  EXPECT_THAT(j["error"]["message"].get<std::string>(),
              AllOf(StartsWith("Rate limit reached for gpt-4o"), HasSubstr("Limit 5, Used 5"),
                    MatchesRegex(R"(.*Please try again in 1[12](\.[0-9]+)?s\..*)")));
  EXPECT_EQ(r.header("x-ratelimit-remaining-requests"), "0");
  // 5 permits at 12 s each: full in a minute at most.
  EXPECT_THAT(r.header("x-ratelimit-reset-requests"), MatchesRegex(R"((59|60)(\.[0-9]+)?s|1m0s)"));
}

TEST_F(FakeProviderTest, OpenAiTpmPrechargesMaxTokensAndSettles) {
  FakeProviderOptions options;
  options.tpm = 1000;
  options.time_scale = 0.001;  // refill ~0.02 tokens/s: the counts below are exact
  Start(options);
  const Reply first = OpenAi(OpenAiBody(/*max_tokens=*/600));
  ASSERT_EQ(first.status, 200) << first.body;
  const uint64_t used = first.json()["usage"]["total_tokens"];
  EXPECT_EQ(first.header("x-ratelimit-remaining-tokens"), absl::StrCat(1000 - used));

  // Charged max(600, 15) up front: does not fit until enough comes back.
  const Reply second = OpenAi(OpenAiBody(/*max_tokens=*/1000 - used + 1));
  EXPECT_EQ(second.status, 429);
  EXPECT_EQ(second.json()["error"]["type"], "tokens") << second.body;
  EXPECT_EQ(second.json()["error"]["code"], "rate_limit_exceeded");

  const Reply too_large = OpenAi(OpenAiBody(/*max_tokens=*/1001));
  EXPECT_EQ(too_large.status, 429);
  EXPECT_THAT(too_large.json()["error"]["message"].get<std::string>(),
              StartsWith("Request too large"));
}

TEST_F(FakeProviderTest, TimeScaleRefillsAMinuteInASecond) {
  FakeProviderOptions options;
  options.rpm = 3;
  options.time_scale = 60;  // 3 per second of real time
  Start(options);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(OpenAi(OpenAiBody()).status, 200);
  const Reply refused = OpenAi(OpenAiBody());
  ASSERT_EQ(refused.status, 429);
  // A permit every 333 ms; the bucket is full again within a second.
  EXPECT_THAT(refused.json()["error"]["message"].get<std::string>(),
              MatchesRegex(R"(.*try again in [0-9]{1,3}ms\..*)"));
  EXPECT_THAT(refused.header("x-ratelimit-reset-requests"), MatchesRegex(R"([0-9]{1,3}ms|1s)"));
  const Reply anthropic = Anthropic(AnthropicBody());
  ASSERT_EQ(anthropic.status, 200);
  for (int i = 0; i < 2; ++i) ASSERT_EQ(Anthropic(AnthropicBody()).status, 200);
  const Reply anthropic_refused = Anthropic(AnthropicBody());
  ASSERT_EQ(anthropic_refused.status, 429);
  EXPECT_EQ(anthropic_refused.header("retry-after"), "1");  // ceil(0.333 s)

  absl::SleepFor(absl::Milliseconds(1050));
  const Reply again = OpenAi(OpenAiBody());
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.header("x-ratelimit-remaining-requests"), "2");
}

TEST_F(FakeProviderTest, ConcurrentBurstAdmitsExactlyTheLimit) {
  FakeProviderOptions options;
  options.rpm = 20;  // one more every 3 s: none during the burst
  Start(options);
  std::atomic<int> ok{0}, limited{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      httplib::Client client(provider_->base_url());
      for (int i = 0; i < 5; ++i) {
        const Reply r = ToReply(client.Post("/v1/messages", AnthropicHeaders(),
                                            AnthropicBody().dump(), "application/json"));
        (r.status == 200 ? ok : r.status == 429 ? limited : other)++;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(ok.load(), 20);
  EXPECT_EQ(limited.load(), 20);
  const FakeProviderStats stats = provider_->stats();
  const FakeProviderStats::Counts key = stats.ForKey(FakeApi::kAnthropic, kAnthropicKey);
  EXPECT_EQ(key.requests, 40u);
  EXPECT_EQ(key.admitted, 20u);
  EXPECT_EQ(key.rate_limited, 20u);
}

// The limit stays per minute; the span says how much of it one bucket holds.
// time_scale 0.01 slows refill to a permit per 100 s, so nothing comes back
// during a burst however slowly the test runs.
TEST_F(FakeProviderTest, BucketSpanBoundsTheBurst) {
  FakeProviderOptions options;
  options.rpm = 60;
  options.time_scale = 0.01;
  options.bucket_span = absl::Seconds(1);  // 60 * 1 s / 1 min: capacity 1
  Start(options);
  const Reply first = Anthropic(AnthropicBody());
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.header("anthropic-ratelimit-requests-limit"), "60");
  EXPECT_EQ(first.header("anthropic-ratelimit-requests-remaining"), "0");
  for (int i = 0; i < 5; ++i) {
    const Reply r = Anthropic(AnthropicBody());
    EXPECT_EQ(r.status, 429) << r.body;
    EXPECT_EQ(r.header("retry-after"), "100");  // one permit: 1 s simulated, 100 s real
  }

  // The default span holds the whole minute: 60 admitted, then 429s.
  options.bucket_span = FakeProviderOptions().bucket_span;
  Start(options);
  for (int i = 0; i < 60; ++i) ASSERT_EQ(OpenAi(OpenAiBody()).status, 200) << "request " << i;
  EXPECT_EQ(OpenAi(OpenAiBody()).status, 429);

  // A span that does not divide the limit rounds down: 1000 * 1 s / 1 min
  // holds 16 permits.
  options.rpm = 1000;
  options.bucket_span = absl::Seconds(1);
  Start(options);
  const Reply r = OpenAi(OpenAiBody());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-ratelimit-limit-requests"), "1000");
  EXPECT_EQ(r.header("x-ratelimit-remaining-requests"), "15");
}

// Every limit, not only RPM, holds limit * span / 1 min: with a 1 s span,
// 6000 per minute is a bucket of 100. A charge of exactly the capacity fits
// a full bucket; one more can never fit (a 429 without retry-after).
Json AnthropicBodyOfInputTokens(uint64_t tokens, uint64_t max_tokens = 1) {
  Json body = AnthropicBody(max_tokens);
  body.erase("system");
  // One message: ceil(B / 4) + 4 tokens.
  body["messages"][0]["content"] = std::string(4 * (tokens - 4), 'x');
  return body;
}

TEST_F(FakeProviderTest, BucketSpanBoundsTheInputTokensBurst) {
  FakeProviderOptions options;
  options.itpm = 6000;
  options.time_scale = 0.01;
  options.bucket_span = absl::Seconds(1);
  Start(options);
  const Reply never = Anthropic(AnthropicBodyOfInputTokens(101));
  EXPECT_EQ(never.status, 429);
  EXPECT_THAT(never.json()["error"]["message"].get<std::string>(), HasSubstr("input tokens"));
  EXPECT_FALSE(never.has_header("retry-after"));
  const Reply half = Anthropic(AnthropicBodyOfInputTokens(50));
  ASSERT_EQ(half.status, 200) << half.body;
  EXPECT_EQ(half.json()["usage"]["input_tokens"], 50);
  EXPECT_EQ(Anthropic(AnthropicBodyOfInputTokens(50)).status, 200);
  const Reply empty = Anthropic(AnthropicBodyOfInputTokens(5));
  EXPECT_EQ(empty.status, 429);
  EXPECT_TRUE(empty.has_header("retry-after"));  // it fits once the bucket refills

  Start(options);  // a fresh bucket holds exactly 100
  EXPECT_EQ(Anthropic(AnthropicBodyOfInputTokens(100)).status, 200);
}

TEST_F(FakeProviderTest, BucketSpanBoundsTheOutputTokensBurst) {
  FakeProviderOptions options;
  options.otpm = 6000;
  options.time_scale = 0.01;
  options.bucket_span = absl::Seconds(1);
  Start(options);
  const Reply never = Anthropic(AnthropicBody(/*max_tokens=*/101));
  EXPECT_EQ(never.status, 429);
  EXPECT_THAT(never.json()["error"]["message"].get<std::string>(), HasSubstr("output tokens"));
  EXPECT_FALSE(never.has_header("retry-after"));
  const Reply full = Anthropic(AnthropicBody(/*max_tokens=*/100));
  ASSERT_EQ(full.status, 200) << full.body;
  // Pre-charged 100 and settled to the output: what is left is 100 - out.
  const uint64_t out = full.json()["usage"]["output_tokens"];
  const Reply rest = Anthropic(AnthropicBody(/*max_tokens=*/100 - out + 1));
  EXPECT_EQ(rest.status, 429);
  EXPECT_TRUE(rest.has_header("retry-after"));
}

TEST_F(FakeProviderTest, BucketSpanBoundsTheTokensBurst) {
  FakeProviderOptions options;
  options.tpm = 6000;
  options.time_scale = 0.01;
  options.bucket_span = absl::Seconds(1);
  Start(options);
  const Reply never = OpenAi(OpenAiBody(/*max_tokens=*/101));
  EXPECT_EQ(never.status, 429);
  EXPECT_THAT(never.json()["error"]["message"].get<std::string>(),
              AllOf(StartsWith("Request too large"), HasSubstr("Limit 6000, Requested 101")));
  const Reply full = OpenAi(OpenAiBody(/*max_tokens=*/100));
  ASSERT_EQ(full.status, 200) << full.body;
  EXPECT_EQ(full.header("x-ratelimit-limit-tokens"), "6000");
  EXPECT_EQ(full.header("x-ratelimit-remaining-tokens"),
            absl::StrCat(100 - full.json()["usage"]["total_tokens"].get<uint64_t>()));
}

TEST_F(FakeProviderTest, BucketSpanBoundsTheRequestsBurstOfBothApis) {
  FakeProviderOptions options;
  options.rpm = 120;
  options.time_scale = 0.01;
  options.bucket_span = absl::Seconds(1);  // 2 requests
  Start(options);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(Anthropic(AnthropicBody()).status, 200);
    EXPECT_EQ(OpenAi(OpenAiBody()).status, 200);
  }
  EXPECT_EQ(Anthropic(AnthropicBody()).status, 429);
  EXPECT_EQ(OpenAi(OpenAiBody()).status, 429);
}

TEST_F(FakeProviderTest, KeepAliveConnectionsServeManyRequests) {
  Start();
  client_->set_keep_alive(true);
  client_->set_tcp_nodelay(true);
  const absl::Time start = absl::Now();
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(i % 2 == 0 ? Anthropic(AnthropicBody()).status : OpenAi(OpenAiBody()).status, 200);
  }
  EXPECT_TRUE(client_->is_socket_open());
  // No Nagle stalls (40 ms each) on the reused connection.
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(400));
}

TEST_F(FakeProviderTest, KeysHaveSeparateLimits) {
  FakeProviderOptions options;
  options.rpm = 1;
  Start(options);
  EXPECT_EQ(Anthropic(AnthropicBody()).status, 200);
  EXPECT_EQ(Anthropic(AnthropicBody()).status, 429);
  EXPECT_EQ(Anthropic(AnthropicBody(), AnthropicHeaders("sk-ant-other")).status, 200);
  EXPECT_EQ(OpenAi(OpenAiBody(), OpenAiHeaders(kAnthropicKey)).status, 200);  // another API
}

TEST_F(FakeProviderTest, UnlimitedNeverRefusesAndSendsNoLimitHeaders) {
  FakeProviderOptions options;
  options.rpm = 1;
  options.unlimited = true;
  Start(options);
  for (int i = 0; i < 5; ++i) {
    const Reply r = Anthropic(AnthropicBody());
    ASSERT_EQ(r.status, 200);
    EXPECT_FALSE(r.has_header("anthropic-ratelimit-requests-limit"));
  }
}

// Faults ---------------------------------------------------------------------------

TEST_F(FakeProviderTest, OverloadedIs529And503WithoutRetryAfter) {
  FakeProviderOptions options;
  options.overloaded_rate = 1;
  Start(options);
  const Reply a = Anthropic(AnthropicBody());
  EXPECT_EQ(a.status, 529);
  EXPECT_EQ(a.json()["error"]["type"], "overloaded_error");
  EXPECT_FALSE(a.has_header("retry-after"));
  const Reply o = OpenAi(OpenAiBody());
  EXPECT_EQ(o.status, 503);
  EXPECT_EQ(o.json()["error"]["type"], "server_error") << o.body;
  EXPECT_EQ(provider_->stats().totals.faults, 2u);
}

TEST_F(FakeProviderTest, ServerErrorIs500) {
  FakeProviderOptions options;
  options.server_error_rate = 1;
  Start(options);
  const Reply a = Anthropic(AnthropicBody());
  EXPECT_EQ(a.status, 500);
  EXPECT_EQ(a.json()["error"]["type"], "api_error");
  EXPECT_EQ(OpenAi(OpenAiBody()).status, 500);
}

TEST_F(FakeProviderTest, InsufficientQuotaIsOpenAis429) {
  FakeProviderOptions options;
  options.insufficient_quota_rate = 1;
  Start(options);
  const Reply r = OpenAi(OpenAiBody());
  EXPECT_EQ(r.status, 429);
  const Json error = r.json()["error"];
  EXPECT_EQ(error["type"], "insufficient_quota");
  EXPECT_EQ(error["code"], "insufficient_quota");
  EXPECT_TRUE(error["param"].is_null());
  EXPECT_THAT(error["message"].get<std::string>(), StartsWith("You exceeded your current quota"));
  EXPECT_FALSE(r.has_header("retry-after"));
}

TEST_F(FakeProviderTest, SpendLimitIsAnthropics429WithoutRetryAfter) {
  FakeProviderOptions options;
  options.spend_limit_rate = 1;
  Start(options);
  const Reply r = Anthropic(AnthropicBody());
  EXPECT_EQ(r.status, 429);
  const Json j = r.json();
  EXPECT_EQ(j["error"]["type"], "rate_limit_error");
  EXPECT_EQ(j["error"]["details"]["error_code"], "enforced_spend_limit_reached");
  EXPECT_FALSE(r.has_header("retry-after"));
  // Not counted as a rate limit: it is a fault, and no bucket was touched.
  const FakeProviderStats::Counts key =
      provider_->stats().ForKey(FakeApi::kAnthropic, kAnthropicKey);
  EXPECT_EQ(key.rate_limited, 0u);
  EXPECT_EQ(key.faults, 1u);
  EXPECT_EQ(r.header("anthropic-ratelimit-requests-remaining"), "1000");
}

TEST_F(FakeProviderTest, MalformedJsonIsA200ThatDoesNotParse) {
  FakeProviderOptions options;
  options.malformed_json_rate = 1;
  Start(options);
  for (const Reply& r : {Anthropic(AnthropicBody()), OpenAi(OpenAiBody())}) {
    EXPECT_EQ(r.status, 200);
    EXPECT_THAT(r.body, Not(IsEmpty()));
    EXPECT_TRUE(r.json().is_discarded()) << r.body;
  }
  // The request was admitted and charged all the same.
  EXPECT_EQ(provider_->stats().totals.admitted, 2u);
}

TEST_F(FakeProviderTest, TruncatedBodyIsAReadErrorOrShortBody) {
  FakeProviderOptions options;
  options.truncated_body_rate = 1;
  Start(options);
  for (int i = 0; i < 2; ++i) {
    const Reply r = i == 0 ? Anthropic(AnthropicBody()) : OpenAi(OpenAiBody());
    if (r.ok()) {
      EXPECT_TRUE(r.json().is_discarded()) << r.body;
    } else {
      EXPECT_EQ(r.error, httplib::Error::Read);
    }
  }
  // A closer look: a Content-Length that is not honored.
  size_t received = 0;
  uint64_t promised = 0;
  httplib::Client streaming(provider_->base_url());
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/messages";
  req.headers = AnthropicHeaders();
  req.body = AnthropicBody().dump();
  req.set_header("Content-Type", "application/json");
  req.response_handler = [&](const httplib::Response& res) {
    promised = res.get_header_value<uint64_t>("Content-Length");
    return true;
  };
  req.content_receiver = [&](const char*, size_t n, uint64_t, uint64_t) {
    received += n;
    return true;
  };
  const httplib::Result streamed = streaming.send(req);
  EXPECT_FALSE(streamed);
  EXPECT_GT(promised, 0u);
  EXPECT_LT(received, promised);
}

TEST_F(FakeProviderTest, ResetDropsTheConnectionWithoutAResponse) {
  FakeProviderOptions options;
  options.reset_rate = 1;
  Start(options);
  const Reply a = Anthropic(AnthropicBody());
  EXPECT_FALSE(a.ok());
  EXPECT_EQ(a.status, 0);
  const Reply o = OpenAi(OpenAiBody());
  EXPECT_FALSE(o.ok());
  // The server survives and counts them: admitted, then lost.
  const Json stats = Stats();
  EXPECT_EQ(stats["totals"]["admitted"], 2);
  EXPECT_EQ(stats["totals"]["faults"], 2);
}

TEST_F(FakeProviderTest, SlowBodyArrivesWholeButLate) {
  FakeProviderOptions options;
  options.slow_body_rate = 1;
  Start(options);
  const absl::Time start = absl::Now();
  const Reply r = Anthropic(AnthropicBody());
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.json()["type"], "message") << r.body;
  EXPECT_GE(took, absl::Milliseconds(300));
  EXPECT_LT(took, absl::Seconds(2));
}

TEST_F(FakeProviderTest, LatencyDelaysAdmittedRepliesAndStopCutsItShort) {
  FakeProviderOptions options;
  options.latency_mean = absl::Milliseconds(150);
  options.latency_jitter = absl::Milliseconds(50);
  Start(options);
  absl::Time start = absl::Now();
  EXPECT_EQ(Anthropic(AnthropicBody()).status, 200);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));

  options.latency_mean = absl::Seconds(30);
  Start(options);
  std::thread caller([this] { Anthropic(AnthropicBody()); });
  absl::SleepFor(absl::Milliseconds(100));
  start = absl::Now();
  provider_->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  caller.join();
}

// Stats ----------------------------------------------------------------------------

TEST_F(FakeProviderTest, StatsCountPerKeyAndNeverShowTheKey) {
  FakeProviderOptions options;
  options.rpm = 2;
  options.server_error_rate = 0;
  Start(options);
  uint64_t output = 0;
  for (int i = 0; i < 3; ++i) {
    const Reply r = Anthropic(AnthropicBody());
    if (r.status == 200) output += r.json()["usage"]["output_tokens"].get<uint64_t>();
  }
  ASSERT_EQ(OpenAi(OpenAiBody()).status, 200);
  Anthropic(AnthropicBody(), {{"anthropic-version", "2023-06-01"}});  // no key: 401

  const Reply raw = ToReply(client_->Get("/stats"));
  ASSERT_EQ(raw.status, 200);
  EXPECT_THAT(raw.body, Not(HasSubstr(kAnthropicKey)));
  EXPECT_THAT(raw.body, Not(HasSubstr(kOpenAiKey)));
  EXPECT_THAT(raw.body, Not(HasSubstr("not-a-real-key")));
  const Json stats = raw.json();
  EXPECT_EQ(stats["totals"]["requests"], 5);
  EXPECT_EQ(stats["totals"]["admitted"], 3);
  EXPECT_EQ(stats["totals"]["rate_limited"], 1);
  ASSERT_THAT(stats["keys"], SizeIs(2));
  const Json& anthropic = stats["keys"][0];
  EXPECT_EQ(anthropic["api"], "anthropic");
  EXPECT_EQ(anthropic["key"], FakeProvider::KeyLabel(kAnthropicKey));
  EXPECT_EQ(anthropic["requests"], 3);
  EXPECT_EQ(anthropic["admitted"], 2);
  EXPECT_EQ(anthropic["rate_limited"], 1);
  EXPECT_EQ(anthropic["input_tokens"], 2 * kAnthropicInputTokens);
  EXPECT_EQ(anthropic["output_tokens"], output);
  EXPECT_EQ(anthropic["faults"], 0);
  EXPECT_EQ(stats["keys"][1]["api"], "openai");
  EXPECT_EQ(stats["keys"][1]["input_tokens"], kOpenAiInputTokens);

  const FakeProviderStats s = provider_->stats();
  EXPECT_EQ(s.ForKey(FakeApi::kAnthropic, kAnthropicKey).output_tokens, output);
  EXPECT_EQ(s.ForKey(FakeApi::kOpenAi, kAnthropicKey).requests, 0u);
}

// Many connections -------------------------------------------------------------------

// Lets this process open as many descriptors as it is allowed to (each
// connection takes two here: the client's and the server's).
void RaiseDescriptorLimit() {
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
}

// One transfer of a libcurl multi: its request, and what came back.
struct Transfer {
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::string body;
  std::string response;
  std::string request_id;  // the response's request-id header
  long status = 0;
};

size_t AppendBody(char* data, size_t size, size_t n, void* transfer) {
  static_cast<Transfer*>(transfer)->response.append(data, size * n);
  return size * n;
}

size_t ReadRequestId(char* data, size_t size, size_t n, void* transfer) {
  absl::string_view line(data, size * n);
  if (absl::ConsumePrefix(&line, "request-id: ")) {
    static_cast<Transfer*>(transfer)->request_id =
        std::string(absl::StripTrailingAsciiWhitespace(line));
  }
  return size * n;
}

// The issue's launch day: 1,300 requests sent at once, each on a keep-alive
// connection of its own, against a provider allowing 1,200 a minute with a
// bucket of one minute. A thread per connection answered them in 61 s and
// refused none; every one must be answered promptly, and exactly the last
// 100 the provider handled refused. time_scale 0.001 makes the refill during
// the burst (0.02 permits a second) too small to admit a 1,201st.
TEST(FakeProviderManyConnectionsTest, ThirteenHundredAtOnceAreAnsweredAndTheLast100Refused) {
  constexpr int kRequests = 1300;
  RaiseDescriptorLimit();
  FakeProviderOptions options;
  options.rpm = 1200;
  options.time_scale = 0.001;
  absl::StatusOr<std::unique_ptr<FakeProvider>> provider = FakeProvider::Start(options);
  ASSERT_TRUE(provider.ok()) << provider.status();
  const std::string url = (*provider)->base_url() + "/v1/messages";

  ASSERT_EQ(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
  CURLM* multi = curl_multi_init();
  std::vector<Transfer> transfers(kRequests);
  for (Transfer& t : transfers) {
    t.easy = curl_easy_init();
    t.body = AnthropicBody(/*max_tokens=*/10).dump();
    t.headers = curl_slist_append(t.headers, "content-type: application/json");
    t.headers = curl_slist_append(t.headers, "anthropic-version: 2023-06-01");
    t.headers = curl_slist_append(t.headers, absl::StrCat("x-api-key: ", kAnthropicKey).c_str());
    curl_easy_setopt(t.easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(t.easy, CURLOPT_HTTPHEADER, t.headers);
    curl_easy_setopt(t.easy, CURLOPT_POSTFIELDS, t.body.c_str());
    curl_easy_setopt(t.easy, CURLOPT_WRITEFUNCTION, AppendBody);
    curl_easy_setopt(t.easy, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(t.easy, CURLOPT_HEADERFUNCTION, ReadRequestId);
    curl_easy_setopt(t.easy, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(t.easy, CURLOPT_TIMEOUT, 120L);
    curl_multi_add_handle(multi, t.easy);
  }
  const absl::Time start = absl::Now();
  int running = kRequests;
  while (running > 0) {
    ASSERT_EQ(curl_multi_perform(multi, &running), CURLM_OK);
    if (running > 0) {
      ASSERT_EQ(curl_multi_poll(multi, nullptr, 0, 100, nullptr), CURLM_OK);
    }
  }
  const absl::Duration took = absl::Now() - start;

  long connections = 0;
  std::vector<const Transfer*> answered;
  int ok = 0, limited = 0, failed = 0;
  for (Transfer& t : transfers) {
    long connects = 0;
    curl_easy_getinfo(t.easy, CURLINFO_NUM_CONNECTS, &connects);
    connections += connects;
    curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &t.status);
    (t.status == 200 ? ok : t.status == 429 ? limited : failed)++;
    answered.push_back(&t);
  }
  EXPECT_EQ(connections, kRequests);  // one connection each, all open at once
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(ok, 1200);
  EXPECT_EQ(limited, 100);
  EXPECT_LT(took, absl::Seconds(20));
  // Request ids count up in the order the provider handled the requests:
  // the refused are the last 100 of them.
  std::sort(answered.begin(), answered.end(),
            [](const Transfer* a, const Transfer* b) { return a->request_id < b->request_id; });
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_EQ(answered[i]->status, i < 1200 ? 200 : 429)
        << "request " << i << " (" << answered[i]->request_id << ")";
  }
  const FakeProviderStats::Counts key =
      (*provider)->stats().ForKey(FakeApi::kAnthropic, kAnthropicKey);
  EXPECT_EQ(key.admitted, 1200u);
  EXPECT_EQ(key.rate_limited, 100u);

  for (Transfer& t : transfers) {
    curl_multi_remove_handle(multi, t.easy);
    curl_easy_cleanup(t.easy);
    curl_slist_free_all(t.headers);
  }
  curl_multi_cleanup(multi);
  // Stop does not wait out the 1,300 idle keep-alive connections.
  const absl::Time stop = absl::Now();
  (*provider)->Stop();
  EXPECT_LT(absl::Now() - stop, absl::Seconds(2));
}

TEST(KeyLabelTest, IsShortStableAndDistinct) {
  EXPECT_THAT(FakeProvider::KeyLabel("sk-ant-secret"), MatchesRegex("key_[0-9a-f]{8}"));
  EXPECT_EQ(FakeProvider::KeyLabel("a"), FakeProvider::KeyLabel("a"));
  EXPECT_NE(FakeProvider::KeyLabel("a"), FakeProvider::KeyLabel("b"));
}

// Options and formats ------------------------------------------------------------

TEST(FakeProviderOptionsTest, BadOptionsAreInvalidArgumentNamingTheOption) {
  const auto error_for = [](void (*set)(FakeProviderOptions&)) {
    FakeProviderOptions options;
    set(options);
    absl::StatusOr<std::unique_ptr<FakeProvider>> p = FakeProvider::Start(options);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(p.status().message());
  };
  EXPECT_THAT(error_for([](FakeProviderOptions& o) { o.rpm = 0; }), HasSubstr("rpm"));
  EXPECT_THAT(error_for([](FakeProviderOptions& o) { o.time_scale = 0; }), HasSubstr("time_scale"));
  EXPECT_THAT(error_for([](FakeProviderOptions& o) { o.time_scale = 1e-9; }), HasSubstr("rpm"));
  EXPECT_THAT(error_for([](FakeProviderOptions& o) { o.reset_rate = 1.5; }),
              HasSubstr("reset_rate"));
  EXPECT_THAT(error_for([](FakeProviderOptions& o) { o.port = 70000; }), HasSubstr("port"));
  EXPECT_THAT(error_for([](FakeProviderOptions& o) { o.threads = 0; }), HasSubstr("threads"));
  EXPECT_THAT(error_for([](FakeProviderOptions& o) { o.bucket_span = absl::ZeroDuration(); }),
              HasSubstr("bucket_span"));
  EXPECT_THAT(error_for([](FakeProviderOptions& o) { o.bucket_span = absl::Minutes(2); }),
              HasSubstr("bucket_span"));
}

TEST(FakeProviderOptionsTest, BusyPortIsUnavailable) {
  absl::StatusOr<std::unique_ptr<FakeProvider>> first = FakeProvider::Start({});
  ASSERT_TRUE(first.ok()) << first.status();
  FakeProviderOptions options;
  options.port = (*first)->port();
  EXPECT_EQ(FakeProvider::Start(options).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*first)->base_url(), absl::StrCat("http://127.0.0.1:", (*first)->port()));
}

TEST(FormatGoDurationTest, MatchesGo) {
  EXPECT_EQ(FormatGoDuration(absl::ZeroDuration()), "0s");
  EXPECT_EQ(FormatGoDuration(absl::Nanoseconds(100)), "100ns");
  EXPECT_EQ(FormatGoDuration(absl::Nanoseconds(1500)), "1.5µs");
  EXPECT_EQ(FormatGoDuration(absl::Milliseconds(12)), "12ms");
  EXPECT_EQ(FormatGoDuration(absl::Microseconds(644500)), "644.5ms");
  EXPECT_EQ(FormatGoDuration(absl::Seconds(1)), "1s");
  EXPECT_EQ(FormatGoDuration(absl::Milliseconds(1500)), "1.5s");
  EXPECT_EQ(FormatGoDuration(absl::Minutes(6)), "6m0s");
  EXPECT_EQ(FormatGoDuration(absl::Minutes(4) + absl::Milliseconds(12172)), "4m12.172s");
  EXPECT_EQ(FormatGoDuration(absl::Hours(23) + absl::Minutes(18) + absl::Milliseconds(29144)),
            "23h18m29.144s");
  EXPECT_EQ(FormatGoDuration(absl::Hours(1)), "1h0m0s");
  EXPECT_EQ(FormatGoDuration(-absl::Milliseconds(1500)), "-1.5s");
}

// The CLI verb ----------------------------------------------------------------------

// A `sluice` process, killed and reaped on destruction unless it was waited
// for, so that a failed assertion never leaves a server running.
class CliProcess {
 public:
  // Starts `sluice args...` with stdout on a pipe (see ReadLine) and stderr
  // discarded.
  explicit CliProcess(std::vector<std::string> args) {
    args.insert(args.begin(), SLUICE_CLI_PATH);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out[2];
    if (pipe(out) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    stdout_ = out[0];
  }
  ~CliProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_ >= 0) close(stdout_);
  }

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  // The next line of its stdout, waiting at most 10 s for it.
  std::string ReadLine() {
    std::string line;
    pollfd p = {.fd = stdout_, .events = POLLIN, .revents = 0};
    char c;
    while (poll(&p, 1, 10000) == 1 && read(stdout_, &c, 1) == 1 && c != '\n') line.push_back(c);
    return line;
  }

  // Waits for it to exit: its exit code, or 128 + the signal that killed it.
  int Wait() {
    int status = 0;
    if (waitpid(pid_, &status, 0) != pid_) return -1;
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
  int stdout_ = -1;
};

// Runs `sluice fake-provider --port 0`, reads its first line, talks to it,
// then stops it with SIGTERM: it must exit 0.
TEST(FakeProviderCliTest, ServesUntilSigtermThenExitsZero) {
  CliProcess cli({"fake-provider", "--port", "0", "--rpm", "1"});
  ASSERT_TRUE(cli.started());
  const std::string line = cli.ReadLine();
  const std::string prefix = "fake-provider listening on http://127.0.0.1:";
  ASSERT_THAT(line, StartsWith(prefix));
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(line.substr(prefix.size()), &port)) << line;

  httplib::Client client("127.0.0.1", port);
  const Reply first = ToReply(
      client.Post("/v1/messages", AnthropicHeaders(), AnthropicBody().dump(), "application/json"));
  EXPECT_EQ(first.status, 200) << first.error;
  const Reply second = ToReply(
      client.Post("/v1/messages", AnthropicHeaders(), AnthropicBody().dump(), "application/json"));
  EXPECT_EQ(second.status, 429) << second.error;  // --rpm 1 took effect

  ASSERT_EQ(kill(cli.pid(), SIGTERM), 0);
  EXPECT_EQ(cli.Wait(), 0);
}

TEST(FakeProviderCliTest, BucketSpanFlagSetsTheBurst) {
  CliProcess cli({"fake-provider", "--port", "0", "--rpm", "60", "--bucket_span", "1s"});
  ASSERT_TRUE(cli.started());
  const std::string line = cli.ReadLine();
  const std::string prefix = "fake-provider listening on http://127.0.0.1:";
  ASSERT_THAT(line, StartsWith(prefix));
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(line.substr(prefix.size()), &port)) << line;
  httplib::Client client("127.0.0.1", port);
  const auto post = [&client] {
    return ToReply(client.Post("/v1/chat/completions", OpenAiHeaders(), OpenAiBody().dump(),
                               "application/json"));
  };
  EXPECT_EQ(post().status, 200);
  EXPECT_EQ(post().status, 429);  // capacity 1, not 60
  ASSERT_EQ(kill(cli.pid(), SIGTERM), 0);
  EXPECT_EQ(cli.Wait(), 0);
}

TEST(FakeProviderCliTest, BadFlagValuesAreUsageErrors) {
  EXPECT_EQ(CliProcess({"fake-provider", "--port", "0", "--reset_rate", "2"}).Wait(), 64);
  EXPECT_EQ(CliProcess({"fake-provider", "--rpm", "5"}).Wait(), 64);  // --port is required
  EXPECT_EQ(CliProcess({"fake-provider", "--port", "0", "--time_scale", "fast"}).Wait(), 64);
  EXPECT_EQ(CliProcess({"fake-provider", "--port", "0", "--threads", "0"}).Wait(), 64);
  EXPECT_EQ(CliProcess({"fake-provider", "--port", "0", "--bucket_span", "0s"}).Wait(), 64);
}

}  // namespace
}  // namespace sluice
