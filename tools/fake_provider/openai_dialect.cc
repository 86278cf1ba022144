#include "tools/fake_provider/openai_dialect.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace sluice {
namespace fake_provider_internal {
namespace {

// Go-style, rounded up to the millisecond as OpenAI's values are.
std::string GoDurationMillisCeil(absl::Duration d) {
  return FormatGoDuration(absl::Ceil(d, absl::Milliseconds(1)));
}

// The digits of `n` / 10^`scale` with the fraction's trailing zeros dropped:
// (4172, 3) -> "4.172", (1500, 3) -> "1.5", (2000, 3) -> "2".
std::string Decimal(uint64_t n, int scale) {
  uint64_t unit = 1;
  for (int i = 0; i < scale; ++i) unit *= 10;
  std::string text = absl::StrCat(n / unit);
  uint64_t frac = n % unit;
  if (frac == 0) return text;
  while (frac % 10 == 0) {
    frac /= 10;
    --scale;
  }
  return absl::StrFormat("%s.%0*d", text, scale, frac);
}

const char* FinishReason(const ChatRequest& chat, uint64_t output_tokens) {
  return output_tokens == chat.max_tokens ? "length" : "stop";
}

Json Usage(const ChatRequest& chat, uint64_t output_tokens) {
  return {{"prompt_tokens", chat.input_tokens},
          {"completion_tokens", output_tokens},
          {"total_tokens", chat.input_tokens + output_tokens},
          {"prompt_tokens_details", {{"cached_tokens", 0}}}};
}

}  // namespace

Reply OpenAiDialect::Error(int status, absl::string_view message, absl::string_view type,
                           absl::string_view param, absl::string_view code) {
  return {.status = status,
          .headers = {},
          .body = Dump({{"error",
                         {{"message", message},
                          {"type", type},
                          {"param", param.empty() ? Json(nullptr) : Json(param)},
                          {"code", code.empty() ? Json(nullptr) : Json(code)}}}})};
}

std::vector<Dimension> OpenAiDialect::dimensions() const {
  return {Dimension::kRequests, Dimension::kTokens};
}

std::optional<Reply> OpenAiDialect::ReadApiKey(HeaderLookup headers, absl::string_view,
                                               std::string* api_key) const {
  *api_key = BearerToken(headers);
  if (!api_key->empty()) return std::nullopt;
  return Error(401,
               "You didn't provide an API key. You need to provide your API key in an "
               "Authorization header using Bearer auth (i.e. Authorization: Bearer "
               "YOUR_KEY).",
               "invalid_request_error", "", "");
}

Reply OpenAiDialect::UnknownKey(absl::string_view) const {
  return Error(401, "Incorrect API key provided.", "invalid_request_error", "", "invalid_api_key");
}

std::optional<Reply> OpenAiDialect::CheckHeaders(HeaderLookup, absl::string_view) const {
  return std::nullopt;  // the key is all it asks for
}

std::optional<Reply> OpenAiDialect::ParseBody(const std::string& body,
                                              const FakeProviderOptions& options, absl::string_view,
                                              ChatRequest* out) const {
  return BadBody(ParseChat(body, kOpenAiRules, options, out));
}

std::optional<Reply> OpenAiDialect::BadBody(const std::optional<BadRequest>& bad) {
  if (!bad.has_value()) return std::nullopt;
  std::string message;
  if (bad->param.empty()) {
    message = absl::StrCat("We could not parse the JSON body of your request: ", bad->problem, ".");
  } else if (bad->code == "missing_required_parameter") {
    message = absl::StrCat("Missing required parameter: '", bad->param, "'.");
  } else {
    message = absl::StrCat("Invalid '", bad->param, "': ", bad->problem, ".");
  }
  return Error(400, message, "invalid_request_error", bad->param, bad->code);
}

// TPM is pre-charged max(max_tokens, prompt estimate); the fake's estimate
// is exact, so it is the prompt itself.
std::vector<Charge> OpenAiDialect::Charges(const ChatRequest& chat) const {
  return {{Dimension::kRequests, 1},
          {Dimension::kTokens, std::max(chat.max_tokens, chat.input_tokens)}};
}

Settlement OpenAiDialect::Settle(const ChatRequest& chat, uint64_t output_tokens) const {
  return {Dimension::kTokens, std::max(chat.max_tokens, chat.input_tokens),
          chat.input_tokens + output_tokens};
}

Reply OpenAiDialect::FailureReply(Failure failure, absl::string_view) const {
  switch (failure) {
    case Failure::kOverloaded:
      return Error(503,
                   "That model is currently overloaded with other requests. You can retry "
                   "your request.",
                   "server_error", "", "");
    case Failure::kServerError:
      return Error(500, "The server had an error while processing your request. Sorry about that!",
                   "server_error", "", "");
    case Failure::kOutOfMoney:
      return Error(429,
                   "You exceeded your current quota, please check your plan and billing "
                   "details.",
                   "insufficient_quota", "", "insufficient_quota");
    case Failure::kShuttingDown:
      break;
  }
  return Error(500, "The server is shutting down.", "server_error", "", "");
}

Reply OpenAiDialect::RateLimited(const Refusal& refusal, const ChatRequest& chat,
                                 absl::string_view) const {
  const bool requests = refusal.dimension == Dimension::kRequests;
  const char* unit = requests ? "requests per min (RPM)" : "tokens per min (TPM)";
  const char* type = requests ? "requests" : "tokens";
  if (!refusal.wait.has_value()) {
    return Error(
        429,
        absl::StrCat("Request too large for ", chat.model, " in organization org-fake on ", unit,
                     ": Limit ", refusal.per_minute, ", Requested ", refusal.requested,
                     ". The input or output tokens must be reduced in order to run "
                     "successfully."),
        type, "", "rate_limit_exceeded");
  }
  // "Used" is what the bucket holds that is spoken for: its whole capacity
  // less what is available (the per-minute limit when it spans a minute).
  return Error(
      429,
      absl::StrCat("Rate limit reached for ", chat.model, " in organization org-fake on ", unit,
                   ": Limit ", refusal.per_minute, ", Used ", refusal.used, ", Requested ",
                   refusal.requested, ". Please try again in ", GoDurationMillisCeil(*refusal.wait),
                   ". Visit https://platform.openai.com/account/rate-limits to learn "
                   "more."),
      type, "", "rate_limit_exceeded");
}

Reply OpenAiDialect::Refused(const ServerRefusal& refusal, absl::string_view) const {
  const std::string message =
      refusal.status == 413
          ? absl::StrCat("Request body too large: the limit is ", refusal.max_body_bytes, " bytes.")
      : refusal.status == 404
          ? absl::StrCat("Invalid URL (", refusal.method, " ", refusal.path, ")")
          : absl::StrCat("HTTP ", refusal.status);
  return Error(refusal.status, message, "invalid_request_error", "", "");
}

std::string OpenAiDialect::ReplyBody(const ChatRequest& chat, uint64_t output_tokens,
                                     absl::string_view reply_id, absl::Time now) const {
  return Dump({
      {"id", reply_id},
      {"object", "chat.completion"},
      {"created", absl::ToUnixSeconds(now)},
      {"model", chat.model},
      {"choices",
       Json::array({{
           {"index", 0},
           {"message",
            {{"role", "assistant"}, {"content", ReplyText(output_tokens)}, {"refusal", nullptr}}},
           {"logprobs", nullptr},
           {"finish_reason", FinishReason(chat, output_tokens)},
       }})},
      {"usage", Usage(chat, output_tokens)},
  });
}

// Chunks with the role, then the text, then the finish reason; with
// include_usage, every one of them says "usage": null and one more carries
// the usage and no choices.
std::vector<std::string> OpenAiDialect::StreamEvents(const ChatRequest& chat,
                                                     uint64_t output_tokens,
                                                     absl::string_view reply_id,
                                                     absl::Time now) const {
  const auto chunk = [&](Json choices) {
    Json data = {{"id", reply_id},
                 {"object", "chat.completion.chunk"},
                 {"created", absl::ToUnixSeconds(now)},
                 {"model", chat.model},
                 {"system_fingerprint", nullptr},
                 {"choices", std::move(choices)}};
    if (chat.include_usage) data["usage"] = nullptr;
    return data;
  };
  const auto choice = [](Json delta, Json finish_reason) {
    return Json::array({{{"index", 0},
                         {"delta", std::move(delta)},
                         {"logprobs", nullptr},
                         {"finish_reason", std::move(finish_reason)}}});
  };
  const auto event = [](const Json& data) { return absl::StrCat("data: ", Dump(data), "\n\n"); };
  std::vector<std::string> events;
  events.push_back(event(
      chunk(choice({{"role", "assistant"}, {"content", ""}, {"refusal", nullptr}}, nullptr))));
  for (std::string& text : ReplyTextPieces(output_tokens)) {
    events.push_back(event(chunk(choice({{"content", std::move(text)}}, nullptr))));
  }
  events.push_back(event(chunk(choice(Json::object(), FinishReason(chat, output_tokens)))));
  if (chat.include_usage) {
    Json last = chunk(Json::array());
    last["usage"] = Usage(chat, output_tokens);
    events.push_back(event(last));
  }
  events.push_back("data: [DONE]\n\n");
  return events;
}

std::vector<std::pair<std::string, std::string>> OpenAiDialect::RateLimitHeaders(
    const LimitViews& limits, absl::Time) const {
  std::vector<std::pair<std::string, std::string>> headers;
  const auto add = [&](absl::string_view name, const LimitView& limit) {
    headers.emplace_back(absl::StrCat("x-ratelimit-limit-", name), absl::StrCat(limit.per_minute));
    headers.emplace_back(absl::StrCat("x-ratelimit-remaining-", name),
                         absl::StrCat(limit.available));
    headers.emplace_back(absl::StrCat("x-ratelimit-reset-", name),
                         GoDurationMillisCeil(limit.time_to_full));
  };
  add("requests", *limits[static_cast<int>(Dimension::kRequests)]);
  add("tokens", *limits[static_cast<int>(Dimension::kTokens)]);
  return headers;
}

}  // namespace fake_provider_internal

// Formats OpenAI's reset headers carry (declared in fake_provider.h).
std::string FormatGoDuration(absl::Duration d) {
  using fake_provider_internal::Decimal;
  const int64_t ns = absl::ToInt64Nanoseconds(d);  // saturates
  if (ns == 0) return "0s";
  const uint64_t u = ns < 0 ? uint64_t{0} - static_cast<uint64_t>(ns) : static_cast<uint64_t>(ns);
  const char* sign = ns < 0 ? "-" : "";
  if (u < 1000) return absl::StrCat(sign, u, "ns");
  if (u < 1000000) return absl::StrCat(sign, Decimal(u, 3), "µs");
  if (u < 1000000000) return absl::StrCat(sign, Decimal(u, 6), "ms");
  const uint64_t secs = u / 1000000000;
  const uint64_t hours = secs / 3600, minutes = secs / 60 % 60;
  std::string out = sign;
  if (hours > 0) absl::StrAppend(&out, hours, "h");
  if (hours > 0 || minutes > 0) absl::StrAppend(&out, minutes, "m");
  absl::StrAppend(&out, Decimal(u % 60000000000, 9), "s");
  return out;
}

}  // namespace sluice
