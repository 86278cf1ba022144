#include "src/proxy/provider_errors.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace sluice {
namespace proxy_internal {
namespace {

// Anthropic's error types by status.
absl::string_view AnthropicType(int status) {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 504:
      return "timeout_error";
    default:
      return "api_error";
  }
}

// OpenAI's (type, code) by status.
std::pair<absl::string_view, nlohmann::json> OpenAiTypeAndCode(int status) {
  switch (status) {
    case 400:
    case 413:
      return {"invalid_request_error", nullptr};
    case 401:
      return {"invalid_request_error", "invalid_api_key"};
    case 429:
      return {"requests", "rate_limit_exceeded"};
    default:
      return {"server_error", nullptr};
  }
}

}  // namespace

ErrorReply ProviderError(Provider provider, int status, absl::string_view message,
                         std::optional<absl::Duration> retry_after) {
  ErrorReply reply;
  reply.status = status;
  reply.headers.emplace_back("content-type", "application/json");
  nlohmann::json body;
  if (provider == Provider::kAnthropic) {
    body = {{"type", "error"},
            {"error", {{"type", AnthropicType(status)}, {"message", std::string(message)}}}};
  } else {
    auto [type, code] = OpenAiTypeAndCode(status);
    body = {
        {"error",
         {{"message", std::string(message)}, {"type", type}, {"param", nullptr}, {"code", code}}}};
  }
  reply.body = body.dump();
  if (retry_after) {
    const double seconds = absl::ToDoubleSeconds(*retry_after);
    const int64_t whole = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(seconds)));
    const int64_t ms = std::max<int64_t>(1, absl::ToInt64Milliseconds(*retry_after));
    reply.headers.emplace_back("retry-after", absl::StrCat(whole));
    reply.headers.emplace_back("retry-after-ms", absl::StrCat(ms));
  }
  return reply;
}

}  // namespace proxy_internal
}  // namespace sluice
