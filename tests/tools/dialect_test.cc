// The simulated provider's dialects on their own, with no server: what each
// API reads from a request and the exact replies, errors and rate-limit
// headers it renders.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/fake_provider/anthropic_dialect.h"
#include "tools/fake_provider/openai_dialect.h"

namespace sluice::fake_provider_internal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

using Map = std::map<std::string, std::string>;

// A HeaderLookup over a map, as any server would provide one.
auto Headers(const Map& headers) {
  return [&headers](absl::string_view name) {
    const auto it = headers.find(std::string(name));
    return it == headers.end() ? std::string() : it->second;
  };
}

nlohmann::json Body(const Reply& reply) { return nlohmann::json::parse(reply.body); }

Map HeaderMap(const std::vector<std::pair<std::string, std::string>>& headers) {
  return Map(headers.begin(), headers.end());
}

constexpr char kRequestId[] = "req_000000000000000000000007";
const absl::Time kNow = absl::FromUnixSeconds(1736723541);  // 2025-01-12T23:12:21Z

// Anthropic --------------------------------------------------------------------

TEST(AnthropicDialectTest, ReadsTheKeyAndRefusesWithoutOne) {
  const AnthropicDialect anthropic;
  std::string key;
  const Map with_key = {{"x-api-key", "sk-ant-1"}, {"anthropic-version", "2023-06-01"}};
  EXPECT_EQ(anthropic.ReadApiKey(Headers(with_key), kRequestId, &key), std::nullopt);
  EXPECT_EQ(key, "sk-ant-1");
  EXPECT_EQ(anthropic.CheckHeaders(Headers(with_key), kRequestId), std::nullopt);

  const std::optional<Reply> none = anthropic.ReadApiKey(Headers({}), kRequestId, &key);
  ASSERT_TRUE(none.has_value());
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(none->body, R"({"type":"error","error":{"type":"authentication_error","message":)"
                        R"("x-api-key header or Authorization: Bearer header is required"},)"
                        R"("request_id":"req_000000000000000000000007"})");
  EXPECT_EQ(Body(anthropic.UnknownKey(kRequestId))["error"]["message"], "invalid x-api-key");

  const std::optional<Reply> no_version =
      anthropic.CheckHeaders(Headers({{"x-api-key", "k"}}), kRequestId);
  ASSERT_TRUE(no_version.has_value());
  EXPECT_EQ(no_version->status, 400);
  EXPECT_EQ(Body(*no_version)["error"]["message"], "anthropic-version: header is required");
}

// The official TypeScript SDK sends its key as a Bearer token and a newer
// anthropic-version; x-api-key wins when both credentials are present.
TEST(AnthropicDialectTest, ReadsABearerKeyAndAnyVersionAndPrefersXApiKey) {
  const AnthropicDialect anthropic;
  std::string key;
  const Map bearer = {{"Authorization", "Bearer sk-ant-2"}, {"anthropic-version", "2026-10-21"}};
  EXPECT_EQ(anthropic.ReadApiKey(Headers(bearer), kRequestId, &key), std::nullopt);
  EXPECT_EQ(key, "sk-ant-2");
  EXPECT_EQ(anthropic.CheckHeaders(Headers(bearer), kRequestId), std::nullopt);

  const Map both = {{"x-api-key", "sk-ant-1"}, {"Authorization", "Bearer sk-ant-2"}};
  EXPECT_EQ(anthropic.ReadApiKey(Headers(both), kRequestId, &key), std::nullopt);
  EXPECT_EQ(key, "sk-ant-1");

  for (const Map& refused : {Map{{"Authorization", "sk-ant-2"}}, Map{{"Authorization", "Bearer "}},
                             Map{{"Authorization", "Basic c2stYW50LTI="}}}) {
    const std::optional<Reply> r = anthropic.ReadApiKey(Headers(refused), kRequestId, &key);
    ASSERT_TRUE(r.has_value()) << refused.begin()->second;
    EXPECT_EQ(r->status, 401);
  }
}

TEST(AnthropicDialectTest, ParsesAndCountsABodyOrNamesTheField) {
  const AnthropicDialect anthropic;
  ChatRequest chat;
  // "Be brief." (9 bytes) + "Hello, world" (12): ceil(21 / 4) + 4 * 1 message.
  EXPECT_EQ(anthropic.ParseBody(R"({"model":"claude-sonnet-4","max_tokens":100,"system":"Be brief.",
                                   "messages":[{"role":"user","content":"Hello, world"}]})",
                                {}, kRequestId, &chat),
            std::nullopt);
  EXPECT_EQ(chat.model, "claude-sonnet-4");
  EXPECT_EQ(chat.max_tokens, 100u);
  EXPECT_EQ(chat.input_tokens, 10u);

  const std::optional<Reply> bad =
      anthropic.ParseBody(R"({"model":"m","messages":[]})", {}, kRequestId, &chat);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(Body(*bad)["error"]["type"], "invalid_request_error");
  EXPECT_EQ(Body(*bad)["error"]["message"], "max_tokens: Field required");
  // count_tokens takes the same body without max_tokens.
  EXPECT_EQ(
      anthropic.ParseCountTokensBody(
          R"({"model":"m","messages":[{"role":"user","content":"abcd"}]})", {}, kRequestId, &chat),
      std::nullopt);
  EXPECT_EQ(anthropic.CountTokensBody(chat), R"({"input_tokens":5})");
}

TEST(AnthropicDialectTest, ChargesRequestsInputAndMaxTokensAndSettlesTheOutput) {
  const AnthropicDialect anthropic;
  const ChatRequest chat{.model = "m", .max_tokens = 100, .input_tokens = 10};
  const std::vector<Charge> charges = anthropic.Charges(chat);
  ASSERT_EQ(charges.size(), 3u);
  EXPECT_EQ(charges[0].dimension, Dimension::kRequests);
  EXPECT_EQ(charges[0].n, 1u);
  EXPECT_EQ(charges[1].dimension, Dimension::kInputTokens);
  EXPECT_EQ(charges[1].n, 10u);
  EXPECT_EQ(charges[2].dimension, Dimension::kOutputTokens);
  EXPECT_EQ(charges[2].n, 100u);
  const Settlement settled = anthropic.Settle(chat, 37);
  EXPECT_EQ(settled.dimension, Dimension::kOutputTokens);
  EXPECT_EQ(settled.charged, 100u);
  EXPECT_EQ(settled.used, 37u);
}

TEST(AnthropicDialectTest, RateLimitedSaysRetryAfterInWholeSecondsUnlessItNeverFits) {
  const AnthropicDialect anthropic;
  const ChatRequest chat{.model = "m", .max_tokens = 100, .input_tokens = 10};
  Refusal refusal{.dimension = Dimension::kInputTokens,
                  .per_minute = 4000,
                  .requested = 10,
                  .used = 3995,
                  .wait = absl::Milliseconds(1200)};
  const Reply later = anthropic.RateLimited(refusal, chat, kRequestId);
  EXPECT_EQ(later.status, 429);
  EXPECT_EQ(later.header("retry-after"), "2");
  EXPECT_EQ(Body(later)["error"]["type"], "rate_limit_error");
  EXPECT_THAT(Body(later)["error"]["message"].get<std::string>(),
              HasSubstr("rate limit of 4000 input tokens per minute. For details"));
  EXPECT_EQ(Body(later)["request_id"], kRequestId);
  refusal.wait = absl::Milliseconds(10);
  EXPECT_EQ(anthropic.RateLimited(refusal, chat, kRequestId).header("retry-after"), "1");

  refusal.wait = std::nullopt;
  refusal.requested = 5000;
  const Reply never = anthropic.RateLimited(refusal, chat, kRequestId);
  EXPECT_EQ(never.status, 429);
  EXPECT_THAT(never.headers, IsEmpty());
  EXPECT_THAT(Body(never)["error"]["message"].get<std::string>(),
              HasSubstr("per minute on its own (it needs 5000); it cannot succeed"));
}

TEST(AnthropicDialectTest, FailuresAndServerRefusalsHaveTheProvidersShapes) {
  const AnthropicDialect anthropic;
  const Reply overloaded = anthropic.FailureReply(Failure::kOverloaded, kRequestId);
  EXPECT_EQ(overloaded.status, 529);
  EXPECT_EQ(Body(overloaded)["error"]["type"], "overloaded_error");
  const Reply broke = anthropic.FailureReply(Failure::kOutOfMoney, kRequestId);
  EXPECT_EQ(broke.status, 429);
  EXPECT_THAT(broke.headers, IsEmpty());  // no retry-after: retrying cannot succeed
  EXPECT_EQ(Body(broke)["error"]["details"]["error_code"], "enforced_spend_limit_reached");
  EXPECT_EQ(anthropic.FailureReply(Failure::kServerError, kRequestId).status, 500);
  EXPECT_EQ(Body(anthropic.FailureReply(Failure::kShuttingDown, kRequestId))["error"]["type"],
            "api_error");

  const Reply too_large = anthropic.Refused({413, "POST", "/v1/messages", 4096}, kRequestId);
  EXPECT_EQ(too_large.status, 413);
  EXPECT_EQ(Body(too_large)["error"]["type"], "request_too_large");
  EXPECT_THAT(Body(too_large)["error"]["message"].get<std::string>(), HasSubstr("(4096)"));
  const Reply missing = anthropic.Refused({404, "GET", "/v1/nothing", 4096}, kRequestId);
  EXPECT_EQ(Body(missing)["error"]["type"], "not_found_error");
  EXPECT_EQ(Body(missing)["error"]["message"], "Not found: GET /v1/nothing");
}

TEST(AnthropicDialectTest, ReplyHasTheMessageShape) {
  const AnthropicDialect anthropic;
  const ChatRequest chat{.model = "claude-sonnet-4", .max_tokens = 3, .input_tokens = 10};
  const nlohmann::json full = nlohmann::json::parse(anthropic.ReplyBody(chat, 3, "msg_1", kNow));
  EXPECT_EQ(full["id"], "msg_1");
  EXPECT_EQ(full["type"], "message");
  EXPECT_EQ(full["content"][0]["text"], "tok tok tok");
  EXPECT_EQ(full["stop_reason"], "max_tokens");
  EXPECT_EQ(full["usage"]["input_tokens"], 10);
  EXPECT_EQ(full["usage"]["output_tokens"], 3);
  EXPECT_EQ(full["usage"]["cache_read_input_tokens"], 0);
  const nlohmann::json shorter = nlohmann::json::parse(anthropic.ReplyBody(chat, 2, "m", kNow));
  EXPECT_EQ(shorter["stop_reason"], "end_turn");
}

// A stream's events as (name, data): the name is "" for OpenAI's data-only
// events. Every event must end in a blank line.
std::vector<std::pair<std::string, std::string>> Events(const std::vector<std::string>& events) {
  std::vector<std::pair<std::string, std::string>> parsed;
  for (const std::string& e : events) {
    EXPECT_TRUE(absl::EndsWith(e, "\n\n")) << e;
    std::string name, data;
    for (absl::string_view line : absl::StrSplit(absl::StripSuffix(e, "\n\n"), '\n')) {
      if (absl::ConsumePrefix(&line, "event: ")) name = std::string(line);
      if (absl::ConsumePrefix(&line, "data: ")) data = std::string(line);
    }
    parsed.emplace_back(name, data);
  }
  return parsed;
}

TEST(AnthropicDialectTest, StreamHasTheMessageEventsWithTheSameTextAndUsage) {
  const AnthropicDialect anthropic;
  const ChatRequest chat{.model = "claude-sonnet-4", .max_tokens = 9, .input_tokens = 10};
  const auto events = Events(anthropic.StreamEvents(chat, 9, "msg_1", kNow));
  std::vector<std::string> names;
  for (const auto& [name, data] : events) names.push_back(name);
  EXPECT_THAT(names,
              ElementsAre("message_start", "content_block_start", "ping", "content_block_delta",
                          "content_block_delta", "content_block_delta", "content_block_stop",
                          "message_delta", "message_stop"));
  EXPECT_EQ(events[0].second,
            R"({"type":"message_start","message":{"id":"msg_1","type":"message","role":)"
            R"("assistant","model":"claude-sonnet-4","content":[],"stop_reason":null,)"
            R"("stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":0,)"
            R"("cache_read_input_tokens":0,"output_tokens":1}}})");
  EXPECT_EQ(
      events[1].second,
      R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})");
  EXPECT_EQ(events[3].second,
            R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta",)"
            R"("text":"tok tok tok tok"}})");
  std::string text;
  for (int i = 3; i < 6; ++i) {
    text += nlohmann::json::parse(events[i].second)["delta"]["text"].get<std::string>();
  }
  const nlohmann::json whole = nlohmann::json::parse(anthropic.ReplyBody(chat, 9, "msg_1", kNow));
  EXPECT_EQ(text, whole["content"][0]["text"]);
  EXPECT_EQ(events[7].second,
            R"({"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},)"
            R"("usage":{"output_tokens":9}})");
  EXPECT_EQ(events[8].second, R"({"type":"message_stop"})");
}

TEST(AnthropicDialectTest, RateLimitHeadersRoundTokensAndResetAtTheNextSecond) {
  const AnthropicDialect anthropic;
  LimitViews views;
  views[static_cast<int>(Dimension::kRequests)] = LimitView{50, 49, 50, absl::Milliseconds(1200)};
  views[static_cast<int>(Dimension::kInputTokens)] =
      LimitView{100000, 1499, 100000, absl::Seconds(59)};
  // Under a thousand, rounding would claim more than the bucket holds: clamped.
  views[static_cast<int>(Dimension::kOutputTokens)] = LimitView{700, 600, 700, absl::Seconds(9)};
  const Map headers = HeaderMap(anthropic.RateLimitHeaders(views, kNow));
  EXPECT_EQ(headers.at("anthropic-ratelimit-requests-limit"), "50");
  EXPECT_EQ(headers.at("anthropic-ratelimit-requests-remaining"), "49");
  EXPECT_EQ(headers.at("anthropic-ratelimit-requests-reset"), "2025-01-12T23:12:23Z");
  EXPECT_EQ(headers.at("anthropic-ratelimit-input-tokens-remaining"), "1000");
  EXPECT_EQ(headers.at("anthropic-ratelimit-input-tokens-reset"), "2025-01-12T23:13:20Z");
  EXPECT_EQ(headers.at("anthropic-ratelimit-output-tokens-remaining"), "700");
  // "tokens" is whichever token limit is closest to refusing: output here.
  EXPECT_EQ(headers.at("anthropic-ratelimit-tokens-limit"), "700");
  EXPECT_EQ(headers.at("anthropic-ratelimit-tokens-reset"), "2025-01-12T23:12:30Z");
  EXPECT_EQ(headers.size(), 12u);
}

// OpenAI -----------------------------------------------------------------------

TEST(OpenAiDialectTest, ReadsABearerKeyAndRefusesWithoutOne) {
  const OpenAiDialect openai;
  std::string key;
  EXPECT_EQ(openai.ReadApiKey(Headers({{"Authorization", "Bearer sk-proj-1"}}), kRequestId, &key),
            std::nullopt);
  EXPECT_EQ(key, "sk-proj-1");
  EXPECT_EQ(openai.CheckHeaders(Headers({}), kRequestId), std::nullopt);
  for (const Map& headers : {Map{}, Map{{"Authorization", "Bearer "}}, Map{{"x-api-key", "k"}}}) {
    const std::optional<Reply> refused = openai.ReadApiKey(Headers(headers), kRequestId, &key);
    ASSERT_TRUE(refused.has_value());
    EXPECT_EQ(refused->status, 401);
    EXPECT_THAT(Body(*refused)["error"]["message"].get<std::string>(),
                HasSubstr("You didn't provide an API key"));
  }
  const Reply unknown = openai.UnknownKey(kRequestId);
  EXPECT_EQ(unknown.body,
            R"({"error":{"message":"Incorrect API key provided.","type":"invalid_request_error",)"
            R"("param":null,"code":"invalid_api_key"}})");
}

TEST(OpenAiDialectTest, BadBodiesNameTheParamAsOpenAiDoes) {
  const OpenAiDialect openai;
  ChatRequest chat;
  const std::optional<Reply> not_json = openai.ParseBody("{", {}, kRequestId, &chat);
  ASSERT_TRUE(not_json.has_value());
  EXPECT_EQ(not_json->status, 400);
  EXPECT_THAT(Body(*not_json)["error"]["message"].get<std::string>(),
              HasSubstr("We could not parse the JSON body of your request: "));
  EXPECT_TRUE(Body(*not_json)["error"]["param"].is_null());
  const std::optional<Reply> missing = openai.ParseBody(R"({"model":"m"})", {}, kRequestId, &chat);
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(Body(*missing)["error"]["message"], "Missing required parameter: 'messages'.");
  EXPECT_EQ(Body(*missing)["error"]["param"], "messages");
  EXPECT_EQ(Body(*missing)["error"]["code"], "missing_required_parameter");
  // Without max_tokens, the default is charged.
  EXPECT_EQ(openai.ParseBody(R"({"model":"m","messages":[{"role":"user","content":"abcd"}]})", {},
                             kRequestId, &chat),
            std::nullopt);
  EXPECT_EQ(chat.max_tokens, FakeProviderOptions().default_max_tokens);
}

TEST(OpenAiDialectTest, ChargesMaxOfMaxTokensAndPromptAndSettlesToTheTotal) {
  const OpenAiDialect openai;
  const ChatRequest small_prompt{.model = "m", .max_tokens = 100, .input_tokens = 15};
  std::vector<Charge> charges = openai.Charges(small_prompt);
  ASSERT_EQ(charges.size(), 2u);
  EXPECT_EQ(charges[0].dimension, Dimension::kRequests);
  EXPECT_EQ(charges[0].n, 1u);
  EXPECT_EQ(charges[1].dimension, Dimension::kTokens);
  EXPECT_EQ(charges[1].n, 100u);
  const Settlement settled = openai.Settle(small_prompt, 40);
  EXPECT_EQ(settled.dimension, Dimension::kTokens);
  EXPECT_EQ(settled.charged, 100u);
  EXPECT_EQ(settled.used, 55u);
  const ChatRequest big_prompt{.model = "m", .max_tokens = 10, .input_tokens = 500};
  EXPECT_EQ(openai.Charges(big_prompt)[1].n, 500u);
  EXPECT_EQ(openai.Settle(big_prompt, 10).used, 510u);  // a debit of 10
}

TEST(OpenAiDialectTest, RateLimitedSaysTryAgainInTheMessageWithoutRetryAfter) {
  const OpenAiDialect openai;
  const ChatRequest chat{.model = "gpt-4o", .max_tokens = 100, .input_tokens = 15};
  Refusal refusal{.dimension = Dimension::kTokens,
                  .per_minute = 30000,
                  .requested = 100,
                  .used = 29950,
                  .wait = absl::Microseconds(643200)};
  const Reply later = openai.RateLimited(refusal, chat, kRequestId);
  EXPECT_EQ(later.status, 429);
  EXPECT_THAT(later.headers, IsEmpty());
  EXPECT_EQ(Body(later)["error"]["message"],
            "Rate limit reached for gpt-4o in organization org-fake on tokens per min (TPM): "
            "Limit 30000, Used 29950, Requested 100. Please try again in 644ms. Visit "
            "https://platform.openai.com/account/rate-limits to learn more.");
  EXPECT_EQ(Body(later)["error"]["type"], "tokens");
  EXPECT_EQ(Body(later)["error"]["code"], "rate_limit_exceeded");

  refusal.dimension = Dimension::kRequests;
  EXPECT_EQ(Body(openai.RateLimited(refusal, chat, kRequestId))["error"]["type"], "requests");
  refusal.dimension = Dimension::kTokens;
  refusal.wait = std::nullopt;
  refusal.requested = 36278;
  EXPECT_THAT(
      Body(openai.RateLimited(refusal, chat, kRequestId))["error"]["message"].get<std::string>(),
      HasSubstr("Request too large for gpt-4o in organization org-fake on tokens per min "
                "(TPM): Limit 30000, Requested 36278."));
}

TEST(OpenAiDialectTest, FailuresAndServerRefusals) {
  const OpenAiDialect openai;
  EXPECT_EQ(openai.FailureReply(Failure::kOverloaded, kRequestId).status, 503);
  const Reply quota = openai.FailureReply(Failure::kOutOfMoney, kRequestId);
  EXPECT_EQ(quota.status, 429);
  EXPECT_EQ(Body(quota)["error"]["code"], "insufficient_quota");
  EXPECT_EQ(Body(quota)["error"]["type"], "insufficient_quota");
  EXPECT_EQ(Body(openai.FailureReply(Failure::kServerError, kRequestId))["error"]["type"],
            "server_error");
  const Reply missing = openai.Refused({404, "POST", "/v1/chat/nothing", 4096}, kRequestId);
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(Body(missing)["error"]["message"], "Invalid URL (POST /v1/chat/nothing)");
  EXPECT_THAT(Body(openai.Refused({413, "POST", "/v1/chat/completions", 4096},
                                  kRequestId))["error"]["message"]
                  .get<std::string>(),
              HasSubstr("the limit is 4096 bytes"));
}

TEST(OpenAiDialectTest, StreamHasChunksThenUsageWhenAskedThenDone) {
  const OpenAiDialect openai;
  ChatRequest chat{.model = "gpt-4o", .max_tokens = 100, .input_tokens = 15};
  chat.include_usage = true;
  const auto events = Events(openai.StreamEvents(chat, 5, "chatcmpl-1", kNow));
  ASSERT_EQ(events.size(), 6u);
  for (const auto& [name, data] : events) EXPECT_EQ(name, "");
  EXPECT_EQ(events[0].second,
            R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1736723541,)"
            R"("model":"gpt-4o","system_fingerprint":null,"choices":[{"index":0,"delta":)"
            R"({"role":"assistant","content":"","refusal":null},"logprobs":null,)"
            R"("finish_reason":null}],"usage":null})");
  const auto data = [&events](int i) { return nlohmann::json::parse(events[i].second); };
  EXPECT_EQ(data(1)["choices"][0]["delta"], nlohmann::json({{"content", "tok tok tok tok"}}));
  EXPECT_EQ(data(2)["choices"][0]["delta"], nlohmann::json({{"content", " tok"}}));
  EXPECT_EQ(data(3)["choices"][0]["delta"], nlohmann::json::object());
  EXPECT_EQ(data(3)["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(data(4)["choices"], nlohmann::json::array());
  EXPECT_EQ(data(4)["usage"],
            nlohmann::json::parse(openai.ReplyBody(chat, 5, "chatcmpl-1", kNow))["usage"]);
  EXPECT_EQ(data(4)["usage"]["total_tokens"], 20);
  EXPECT_EQ(events[5].second, "[DONE]");

  chat.include_usage = false;
  const auto plain = Events(openai.StreamEvents(chat, 100, "chatcmpl-2", kNow));
  ASSERT_EQ(plain.size(), 1 + 25 + 1 + 1u);  // role, 25 pieces of 4 words, finish, [DONE]
  EXPECT_FALSE(nlohmann::json::parse(plain[0].second).contains("usage"));
  EXPECT_EQ(nlohmann::json::parse(plain[26].second)["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(plain[27].second, "[DONE]");
}

TEST(OpenAiDialectTest, ReplyAndRateLimitHeaders) {
  const OpenAiDialect openai;
  const ChatRequest chat{.model = "gpt-4o", .max_tokens = 2, .input_tokens = 15};
  const nlohmann::json reply = nlohmann::json::parse(openai.ReplyBody(chat, 2, "chatcmpl-1", kNow));
  EXPECT_EQ(reply["object"], "chat.completion");
  EXPECT_EQ(reply["created"], 1736723541);
  EXPECT_EQ(reply["choices"][0]["message"]["content"], "tok tok");
  EXPECT_EQ(reply["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(reply["usage"]["total_tokens"], 17);

  LimitViews views;
  views[static_cast<int>(Dimension::kRequests)] =
      LimitView{500, 499, 500, absl::Microseconds(11200)};
  views[static_cast<int>(Dimension::kTokens)] = LimitView{30000, 0, 30000, absl::Minutes(6)};
  EXPECT_THAT(
      HeaderMap(openai.RateLimitHeaders(views, kNow)),
      ElementsAre(
          Pair("x-ratelimit-limit-requests", "500"), Pair("x-ratelimit-limit-tokens", "30000"),
          Pair("x-ratelimit-remaining-requests", "499"), Pair("x-ratelimit-remaining-tokens", "0"),
          Pair("x-ratelimit-reset-requests", "12ms"), Pair("x-ratelimit-reset-tokens", "6m0s")));
}

}  // namespace
}  // namespace sluice::fake_provider_internal
