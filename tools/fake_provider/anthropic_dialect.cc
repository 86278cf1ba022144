#include "tools/fake_provider/anthropic_dialect.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace sluice {
namespace fake_provider_internal {
namespace {

// Anthropic rounds token counts in its headers to the nearest thousand. A
// bucket holding under 1000 would then show more remaining than it can
// hold: clamp to its capacity.
int64_t RoundToThousand(int64_t n, uint64_t capacity) {
  return std::min<int64_t>((n + 500) / 1000 * 1000, static_cast<int64_t>(capacity));
}

// "2025-01-12T23:12:21Z", rounded up to the second so that it never claims
// replenishment before it happens.
std::string Rfc3339Ceil(absl::Time t) {
  const absl::Time floor = absl::FromUnixSeconds(absl::ToUnixSeconds(t));
  const absl::Time ceil = floor < t ? floor + absl::Seconds(1) : floor;
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", ceil, absl::UTCTimeZone());
}

const char* WhatIsCounted(Dimension dimension) {
  switch (dimension) {
    case Dimension::kRequests:
      return "requests";
    case Dimension::kInputTokens:
      return "input tokens";
    case Dimension::kOutputTokens:
      return "output tokens";
    case Dimension::kTokens:
      break;
  }
  return "tokens";
}

Reply BadRequestReply(const BadRequest& bad, absl::string_view request_id) {
  const std::string message =
      bad.param.empty() ? bad.problem : absl::StrCat(bad.param, ": ", bad.problem);
  return AnthropicDialect::Error(400, "invalid_request_error", message, request_id);
}

std::optional<Reply> Parse(const std::string& body, const BodyRules& rules,
                           const FakeProviderOptions& options, absl::string_view request_id,
                           ChatRequest* out) {
  if (auto bad = ParseChat(body, rules, options, out)) return BadRequestReply(*bad, request_id);
  return std::nullopt;
}

const char* StopReason(const ChatRequest& chat, uint64_t output_tokens) {
  return output_tokens == chat.max_tokens ? "max_tokens" : "end_turn";
}

}  // namespace

Reply AnthropicDialect::Error(int status, absl::string_view type, absl::string_view message,
                              absl::string_view request_id, Json details) {
  Json error = {{"type", type}, {"message", message}};
  if (!details.is_null()) error["details"] = std::move(details);
  return {
      .status = status,
      .headers = {},
      .body = Dump({{"type", "error"}, {"error", std::move(error)}, {"request_id", request_id}})};
}

std::vector<Dimension> AnthropicDialect::dimensions() const {
  return {Dimension::kRequests, Dimension::kInputTokens, Dimension::kOutputTokens};
}

std::optional<Reply> AnthropicDialect::ReadApiKey(HeaderLookup headers,
                                                  absl::string_view request_id,
                                                  std::string* api_key) const {
  // The official TypeScript SDK authenticates with a Bearer token instead;
  // when a request carries both, x-api-key is the one that counts.
  *api_key = headers("x-api-key");
  if (api_key->empty()) *api_key = BearerToken(headers);
  if (!api_key->empty()) return std::nullopt;
  return Error(401, "authentication_error",
               "x-api-key header or Authorization: Bearer header is required", request_id);
}

Reply AnthropicDialect::UnknownKey(absl::string_view request_id) const {
  return Error(401, "authentication_error", "invalid x-api-key", request_id);
}

std::optional<Reply> AnthropicDialect::CheckHeaders(HeaderLookup headers,
                                                    absl::string_view request_id) const {
  if (!headers("anthropic-version").empty()) return std::nullopt;
  return Error(400, "invalid_request_error", "anthropic-version: header is required", request_id);
}

std::optional<Reply> AnthropicDialect::ParseBody(const std::string& body,
                                                 const FakeProviderOptions& options,
                                                 absl::string_view request_id,
                                                 ChatRequest* out) const {
  return Parse(body, kAnthropicRules, options, request_id, out);
}

std::optional<Reply> AnthropicDialect::ParseCountTokensBody(const std::string& body,
                                                            const FakeProviderOptions& options,
                                                            absl::string_view request_id,
                                                            ChatRequest* out) const {
  // The same body minus max_tokens: parse it with OpenAI's optional rule.
  BodyRules rules = kAnthropicRules;
  rules.max_tokens_required = false;
  return Parse(body, rules, options, request_id, out);
}

std::string AnthropicDialect::CountTokensBody(const ChatRequest& chat) const {
  return Dump({{"input_tokens", chat.input_tokens}});
}

// Output is pre-charged at max_tokens and settled to what was produced.
std::vector<Charge> AnthropicDialect::Charges(const ChatRequest& chat) const {
  return {{Dimension::kRequests, 1},
          {Dimension::kInputTokens, chat.input_tokens},
          {Dimension::kOutputTokens, chat.max_tokens}};
}

Settlement AnthropicDialect::Settle(const ChatRequest& chat, uint64_t output_tokens) const {
  return {Dimension::kOutputTokens, chat.max_tokens, output_tokens};
}

Reply AnthropicDialect::FailureReply(Failure failure, absl::string_view request_id) const {
  switch (failure) {
    case Failure::kOverloaded:
      return Error(529, "overloaded_error", "Overloaded", request_id);
    case Failure::kServerError:
      return Error(500, "api_error", "Internal server error", request_id);
    case Failure::kOutOfMoney:
      // Anthropic's way of saying the money ran out: no retry-after, since
      // no retry can succeed before the next month.
      return Error(429, "rate_limit_error",
                   "You have reached your specified API usage limits. You will regain "
                   "access on the first day of next month at 00:00 UTC.",
                   request_id, {{"error_code", "enforced_spend_limit_reached"}});
    case Failure::kShuttingDown:
      break;
  }
  return Error(500, "api_error", "The server is shutting down", request_id);
}

Reply AnthropicDialect::RateLimited(const Refusal& refusal, const ChatRequest&,
                                    absl::string_view request_id) const {
  const std::string limit = absl::StrCat(
      "This request would exceed your organization's rate "
      "limit of ",
      refusal.per_minute, " ", WhatIsCounted(refusal.dimension));
  if (!refusal.wait.has_value()) {
    return Error(429, "rate_limit_error",
                 absl::StrCat(limit, " per minute on its own (it needs ", refusal.requested,
                              "); it cannot succeed at this limit."),
                 request_id);
  }
  Reply reply = Error(429, "rate_limit_error",
                      absl::StrCat(limit,
                                   " per minute. For details, refer to the response headers and "
                                   "https://docs.anthropic.com/en/api/rate-limits."),
                      request_id);
  const int64_t seconds =
      std::max<int64_t>(1, absl::ToInt64Seconds(absl::Ceil(*refusal.wait, absl::Seconds(1))));
  reply.headers.emplace_back("retry-after", absl::StrCat(seconds));
  return reply;
}

Reply AnthropicDialect::Refused(const ServerRefusal& refusal, absl::string_view request_id) const {
  if (refusal.status == 413) {
    return Error(413, "request_too_large",
                 absl::StrCat("Request exceeds the maximum allowed number of bytes (",
                              refusal.max_body_bytes, ")."),
                 request_id);
  }
  if (refusal.status == 404) {
    return Error(404, "not_found_error",
                 absl::StrCat("Not found: ", refusal.method, " ", refusal.path), request_id);
  }
  if (refusal.status < 500) {
    return Error(refusal.status, "invalid_request_error", absl::StrCat("HTTP ", refusal.status),
                 request_id);
  }
  return Error(refusal.status, "api_error", "Internal server error", request_id);
}

std::string AnthropicDialect::ReplyBody(const ChatRequest& chat, uint64_t output_tokens,
                                        absl::string_view reply_id, absl::Time) const {
  return Dump({
      {"id", reply_id},
      {"type", "message"},
      {"role", "assistant"},
      {"model", chat.model},
      {"content", Json::array({{{"type", "text"}, {"text", ReplyText(output_tokens)}}})},
      {"stop_reason", StopReason(chat, output_tokens)},
      {"stop_sequence", nullptr},
      {"usage",
       {{"input_tokens", chat.input_tokens},
        {"output_tokens", output_tokens},
        {"cache_creation_input_tokens", 0},
        {"cache_read_input_tokens", 0}}},
  });
}

// message_start carries the input usage and the first output token;
// message_delta the stop reason and the cumulative output.
std::vector<std::string> AnthropicDialect::StreamEvents(const ChatRequest& chat,
                                                        uint64_t output_tokens,
                                                        absl::string_view reply_id,
                                                        absl::Time) const {
  const auto event = [](absl::string_view name, const Json& data) {
    return absl::StrCat("event: ", name, "\ndata: ", Dump(data), "\n\n");
  };
  std::vector<std::string> events;
  events.push_back(
      event("message_start", {{"type", "message_start"},
                              {"message",
                               {{"id", reply_id},
                                {"type", "message"},
                                {"role", "assistant"},
                                {"model", chat.model},
                                {"content", Json::array()},
                                {"stop_reason", nullptr},
                                {"stop_sequence", nullptr},
                                {"usage",
                                 {{"input_tokens", chat.input_tokens},
                                  {"cache_creation_input_tokens", 0},
                                  {"cache_read_input_tokens", 0},
                                  {"output_tokens", std::min<uint64_t>(output_tokens, 1)}}}}}}));
  events.push_back(
      event("content_block_start", {{"type", "content_block_start"},
                                    {"index", 0},
                                    {"content_block", {{"type", "text"}, {"text", ""}}}}));
  events.push_back(event("ping", {{"type", "ping"}}));
  for (std::string& text : ReplyTextPieces(output_tokens)) {
    events.push_back(event("content_block_delta",
                           {{"type", "content_block_delta"},
                            {"index", 0},
                            {"delta", {{"type", "text_delta"}, {"text", std::move(text)}}}}));
  }
  events.push_back(event("content_block_stop", {{"type", "content_block_stop"}, {"index", 0}}));
  events.push_back(event(
      "message_delta",
      {{"type", "message_delta"},
       {"delta", {{"stop_reason", StopReason(chat, output_tokens)}, {"stop_sequence", nullptr}}},
       {"usage", {{"output_tokens", output_tokens}}}}));
  events.push_back(event("message_stop", {{"type", "message_stop"}}));
  return events;
}

std::vector<std::pair<std::string, std::string>> AnthropicDialect::RateLimitHeaders(
    const LimitViews& limits, absl::Time now) const {
  std::vector<std::pair<std::string, std::string>> headers;
  const auto add = [&](absl::string_view name, const LimitView& limit, bool round) {
    const std::string prefix = absl::StrCat("anthropic-ratelimit-", name);
    headers.emplace_back(absl::StrCat(prefix, "-limit"), absl::StrCat(limit.per_minute));
    headers.emplace_back(
        absl::StrCat(prefix, "-remaining"),
        absl::StrCat(round ? RoundToThousand(limit.available, limit.capacity) : limit.available));
    headers.emplace_back(absl::StrCat(prefix, "-reset"), Rfc3339Ceil(now + limit.time_to_full));
  };
  const LimitView& input = *limits[static_cast<int>(Dimension::kInputTokens)];
  const LimitView& output = *limits[static_cast<int>(Dimension::kOutputTokens)];
  add("requests", *limits[static_cast<int>(Dimension::kRequests)], false);
  add("input-tokens", input, true);
  add("output-tokens", output, true);
  // "tokens" reports whichever token limit is closest to refusing.
  add("tokens", input.available <= output.available ? input : output, true);
  return headers;
}

}  // namespace fake_provider_internal
}  // namespace sluice
