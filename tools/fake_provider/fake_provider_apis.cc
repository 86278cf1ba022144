// The simulated provider's two APIs: Anthropic Messages (and count_tokens)
// and OpenAI Chat Completions, each request authenticated, drawn, validated,
// faulted, admitted and answered; and the delivery of admitted replies,
// damaged as a delivery fault says.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "sluice/clock.h"
#include "tools/fake_provider/chat_body.h"
#include "tools/fake_provider/connection_reset.h"
#include "tools/fake_provider/fake_provider_impl.h"

namespace sluice {

using fake_provider_internal::BodyRules;
using fake_provider_internal::ChatRequest;
using fake_provider_internal::DropConnection;
using fake_provider_internal::Dump;
using fake_provider_internal::GoDurationMillisCeil;
using fake_provider_internal::kAnthropicRules;
using fake_provider_internal::kJson;
using fake_provider_internal::kOpenAiRules;
using fake_provider_internal::kSlowBodyPause;
using fake_provider_internal::kSlowBodyPieces;
using fake_provider_internal::ParseChat;
using fake_provider_internal::ReplyText;

// Anthropic -----------------------------------------------------------------------------

void FakeProvider::Impl::ServeMessages(const httplib::Request& req, httplib::Response& res) {
  Exchange ex{.api = FakeApi::kAnthropic, .request_id = NextId("req_")};
  res.set_header("request-id", ex.request_id);
  CountRequest(req);
  Messages(req, res, ex);
  if (ex.key != nullptr) AddAnthropicHeaders(*ex.key, res);
}

void FakeProvider::Impl::Messages(const httplib::Request& req, httplib::Response& res,
                                  Exchange& ex) {
  const std::string api_key = req.get_header_value("x-api-key");
  if (api_key.empty()) {
    return AnthropicError(res, ex, 401, "authentication_error", "x-api-key header is required");
  }
  if (!KeyAllowed(api_key)) {
    return AnthropicError(res, ex, 401, "authentication_error", "invalid x-api-key");
  }
  ex.key = FindOrAddKey(FakeApi::kAnthropic, api_key);
  if (req.get_header_value("anthropic-version").empty()) {
    return AnthropicError(res, ex, 400, "invalid_request_error",
                          "anthropic-version: header is required");
  }
  const Draws draws = generator_.Next();

  ChatRequest chat;
  if (auto bad = ParseChat(req.body, kAnthropicRules, options_, &chat)) {
    return AnthropicBadRequest(res, ex, *bad);
  }

  switch (PreAdmissionFault(draws)) {
    case Fault::kOverloaded:
      CountFault(ex);
      return AnthropicError(res, ex, 529, "overloaded_error", "Overloaded");
    case Fault::kServerError:
      CountFault(ex);
      return AnthropicError(res, ex, 500, "api_error", "Internal server error");
    case Fault::kQuota:
      // Anthropic's way of saying the money ran out: no retry-after, since
      // no retry can succeed before the next month.
      CountFault(ex);
      return AnthropicError(res, ex, 429, "rate_limit_error",
                            "You have reached your specified API usage limits. You will regain "
                            "access on the first day of next month at 00:00 UTC.",
                            {{"error_code", "enforced_spend_limit_reached"}});
    default:
      break;
  }

  const int64_t now_ns = Clock::MonotonicNanos();
  const std::vector<Charge> charges = {
      {&ex.key->requests, 1, "requests"},
      {&ex.key->input_tokens, chat.input_tokens, "input tokens"},
      {&ex.key->output_tokens, chat.max_tokens, "output tokens"},
  };
  if (std::optional<Refusal> refusal = Admit(charges, now_ns)) {
    CountRateLimited(ex);
    const Charge& c = *refusal->charge;
    if (!refusal->wait.has_value()) {
      return AnthropicError(
          res, ex, 429, "rate_limit_error",
          absl::StrCat("This request would exceed your organization's rate limit of ",
                       c.limit->per_minute, " ", c.what, " per minute on its own (it needs ", c.n,
                       "); it cannot succeed at this limit."));
    }
    const int64_t seconds =
        std::max<int64_t>(1, absl::ToInt64Seconds(absl::Ceil(*refusal->wait, absl::Seconds(1))));
    res.set_header("retry-after", absl::StrCat(seconds));
    return AnthropicError(
        res, ex, 429, "rate_limit_error",
        absl::StrCat("This request would exceed your organization's rate limit of ",
                     c.limit->per_minute, " ", c.what,
                     " per minute. For details, refer to the response headers and "
                     "https://docs.anthropic.com/en/api/rate-limits."));
  }

  // Output is pre-charged at max_tokens; settle to what was produced.
  const uint64_t output_tokens = OutputTokens(draws, chat.max_tokens);
  if (ex.key->output_tokens.bucket != nullptr) {
    ex.key->output_tokens.bucket->Refund(chat.max_tokens - output_tokens, Clock::MonotonicNanos());
  }
  CountAdmitted(ex, chat.input_tokens, output_tokens);

  if (stopping_.WaitForNotificationWithTimeout(Latency(draws))) {
    return AnthropicError(res, ex, 500, "api_error", "The server is shutting down");
  }
  Json reply = {
      {"id", NextId("msg_")},
      {"type", "message"},
      {"role", "assistant"},
      {"model", chat.model},
      {"content", Json::array({{{"type", "text"}, {"text", ReplyText(output_tokens)}}})},
      {"stop_reason", output_tokens == chat.max_tokens ? "max_tokens" : "end_turn"},
      {"stop_sequence", nullptr},
      {"usage",
       {{"input_tokens", chat.input_tokens},
        {"output_tokens", output_tokens},
        {"cache_creation_input_tokens", 0},
        {"cache_read_input_tokens", 0}}},
  };
  const Fault fault = DeliveryFault(draws);
  if (fault != Fault::kNone) CountFault(ex);
  Deliver(req, res, fault, Dump(reply));
}

// count_tokens answers from the same deterministic count, without limits.
void FakeProvider::Impl::ServeCountTokens(const httplib::Request& req, httplib::Response& res) {
  const Exchange ex{.api = FakeApi::kAnthropic, .request_id = NextId("req_")};
  res.set_header("request-id", ex.request_id);
  const std::string api_key = req.get_header_value("x-api-key");
  if (api_key.empty() || !KeyAllowed(api_key)) {
    return AnthropicError(res, ex, 401, "authentication_error",
                          api_key.empty() ? "x-api-key header is required" : "invalid x-api-key");
  }
  if (req.get_header_value("anthropic-version").empty()) {
    return AnthropicError(res, ex, 400, "invalid_request_error",
                          "anthropic-version: header is required");
  }
  // The same body minus max_tokens: parse it with OpenAI's optional rule.
  BodyRules rules = kAnthropicRules;
  rules.max_tokens_required = false;
  ChatRequest chat;
  if (auto bad = ParseChat(req.body, rules, options_, &chat)) {
    return AnthropicBadRequest(res, ex, *bad);
  }
  res.set_content(Dump({{"input_tokens", chat.input_tokens}}), kJson);
}

// OpenAI ---------------------------------------------------------------------------------

void FakeProvider::Impl::ServeChatCompletions(const httplib::Request& req, httplib::Response& res) {
  Exchange ex{.api = FakeApi::kOpenAi, .request_id = NextId("req_")};
  res.set_header("x-request-id", ex.request_id);
  CountRequest(req);
  ChatCompletions(req, res, ex);
  if (ex.key != nullptr) AddOpenAiHeaders(*ex.key, res);
}

void FakeProvider::Impl::ChatCompletions(const httplib::Request& req, httplib::Response& res,
                                         Exchange& ex) {
  const std::string authorization = req.get_header_value("Authorization");
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWith(authorization, kBearer) || authorization.size() == kBearer.size()) {
    return OpenAiError(res, 401,
                       "You didn't provide an API key. You need to provide your API key in an "
                       "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                       "YOUR_KEY).",
                       "invalid_request_error", "", "");
  }
  const std::string api_key = authorization.substr(kBearer.size());
  if (!KeyAllowed(api_key)) {
    return OpenAiError(res, 401, "Incorrect API key provided.", "invalid_request_error", "",
                       "invalid_api_key");
  }
  ex.key = FindOrAddKey(FakeApi::kOpenAi, api_key);
  const Draws draws = generator_.Next();

  ChatRequest chat;
  if (auto bad = ParseChat(req.body, kOpenAiRules, options_, &chat)) {
    return OpenAiBadRequest(res, *bad);
  }

  switch (PreAdmissionFault(draws)) {
    case Fault::kOverloaded:
      CountFault(ex);
      return OpenAiError(res, 503,
                         "That model is currently overloaded with other requests. You can retry "
                         "your request.",
                         "server_error", "", "");
    case Fault::kServerError:
      CountFault(ex);
      return OpenAiError(res, 500,
                         "The server had an error while processing your request. Sorry about that!",
                         "server_error", "", "");
    case Fault::kQuota:
      CountFault(ex);
      return OpenAiError(res, 429,
                         "You exceeded your current quota, please check your plan and billing "
                         "details.",
                         "insufficient_quota", "", "insufficient_quota");
    default:
      break;
  }

  // TPM is pre-charged max(max_tokens, prompt estimate); the fake's estimate
  // is exact, so it is the prompt itself.
  const uint64_t charged = std::max(chat.max_tokens, chat.input_tokens);
  const int64_t now_ns = Clock::MonotonicNanos();
  const std::vector<Charge> charges = {
      {&ex.key->requests, 1, "requests"},
      {&ex.key->tokens, charged, "tokens"},
  };
  if (std::optional<Refusal> refusal = Admit(charges, now_ns)) {
    CountRateLimited(ex);
    const Charge& c = *refusal->charge;
    const bool requests = c.limit == &ex.key->requests;
    const char* unit = requests ? "requests per min (RPM)" : "tokens per min (TPM)";
    if (!refusal->wait.has_value()) {
      return OpenAiError(
          res, 429,
          absl::StrCat("Request too large for ", chat.model, " in organization org-fake on ", unit,
                       ": Limit ", c.limit->per_minute, ", Requested ", c.n,
                       ". The input or output tokens must be reduced in order to run "
                       "successfully."),
          requests ? "requests" : "tokens", "", "rate_limit_exceeded");
    }
    // What the bucket holds that is spoken for: its whole capacity less
    // what is available (the per-minute limit when the bucket spans a minute).
    const int64_t used =
        static_cast<int64_t>(c.limit->bucket->Capacity()) - c.limit->bucket->Available(now_ns);
    return OpenAiError(
        res, 429,
        absl::StrCat("Rate limit reached for ", chat.model, " in organization org-fake on ", unit,
                     ": Limit ", c.limit->per_minute, ", Used ", used, ", Requested ", c.n,
                     ". Please try again in ", GoDurationMillisCeil(*refusal->wait),
                     ". Visit https://platform.openai.com/account/rate-limits to learn more."),
        requests ? "requests" : "tokens", "", "rate_limit_exceeded");
  }

  const uint64_t completion_tokens = OutputTokens(draws, chat.max_tokens);
  const uint64_t used = chat.input_tokens + completion_tokens;
  if (ex.key->tokens.bucket != nullptr) {
    const int64_t settled_ns = Clock::MonotonicNanos();
    if (used < charged) {
      ex.key->tokens.bucket->Refund(charged - used, settled_ns);
    } else {
      ex.key->tokens.bucket->Debit(used - charged, settled_ns);
    }
  }
  CountAdmitted(ex, chat.input_tokens, completion_tokens);

  if (stopping_.WaitForNotificationWithTimeout(Latency(draws))) {
    return OpenAiError(res, 500, "The server is shutting down.", "server_error", "", "");
  }
  Json reply = {
      {"id", NextId("chatcmpl-")},
      {"object", "chat.completion"},
      {"created", absl::ToUnixSeconds(absl::Now())},
      {"model", chat.model},
      {"choices", Json::array({{
                      {"index", 0},
                      {"message",
                       {{"role", "assistant"},
                        {"content", ReplyText(completion_tokens)},
                        {"refusal", nullptr}}},
                      {"logprobs", nullptr},
                      {"finish_reason", completion_tokens == chat.max_tokens ? "length" : "stop"},
                  }})},
      {"usage",
       {{"prompt_tokens", chat.input_tokens},
        {"completion_tokens", completion_tokens},
        {"total_tokens", used},
        {"prompt_tokens_details", {{"cached_tokens", 0}}}}},
  };
  const Fault fault = DeliveryFault(draws);
  if (fault != Fault::kNone) CountFault(ex);
  Deliver(req, res, fault, Dump(reply));
}

// Delivery --------------------------------------------------------------------------------

void FakeProvider::Impl::Deliver(const httplib::Request& req, httplib::Response& res, Fault fault,
                                 std::string body) {
  res.status = 200;
  switch (fault) {
    case Fault::kReset:
      if (DropConnection(req)) return;
      // Not found (it cannot happen on Linux): fall back to promising a
      // body and sending none, the nearest thing httplib can do.
      res.set_content_provider(body.size(), kJson,
                               [](size_t, size_t, httplib::DataSink&) { return false; });
      return;
    case Fault::kTruncated: {
      // Content-Length says the whole body; half of it is sent, then the
      // provider fails, and httplib closes the connection.
      auto shared = std::make_shared<const std::string>(std::move(body));
      const size_t cut = shared->size() / 2;
      res.set_content_provider(shared->size(), kJson,
                               [shared, cut](size_t offset, size_t, httplib::DataSink& sink) {
                                 if (offset >= cut) return false;
                                 return sink.write(shared->data() + offset, cut - offset);
                               });
      return;
    }
    case Fault::kMalformed:
      // What a misbehaving proxy might pass on: the reply cut short and
      // followed by junk, under a 200 and a JSON content type.
      body.resize(body.size() / 2);
      body.append("<!-- upstream connection reset -->");
      res.set_content(body, kJson);
      return;
    case Fault::kSlow: {
      auto shared = std::make_shared<const std::string>(std::move(body));
      const size_t piece = (shared->size() + kSlowBodyPieces - 1) / kSlowBodyPieces;
      res.set_content_provider(
          shared->size(), kJson,
          [this, shared, piece](size_t offset, size_t length, httplib::DataSink& sink) {
            if (stopping_.WaitForNotificationWithTimeout(kSlowBodyPause)) return false;
            return sink.write(shared->data() + offset, std::min(piece, length));
          });
      return;
    }
    default:
      res.set_content(body, kJson);
  }
}

}  // namespace sluice
