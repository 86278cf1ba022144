#include "src/client/wire_request.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace sluice {
namespace {

std::string EndpointPath(Provider provider) {
  return provider == Provider::kAnthropic ? "/v1/messages" : "/v1/chat/completions";
}

bool HasLineBreak(absl::string_view text) {
  return text.find_first_of("\r\n") != absl::string_view::npos;
}

// Whether the request's own headers include one named `name` (any case).
bool Carries(const CallRequest& request, absl::string_view name) {
  for (const auto& [n, v] : request.headers) {
    if (absl::EqualsIgnoreCase(n, name)) return true;
  }
  return false;
}

}  // namespace

const char* ApiKeyVariable(Provider provider) {
  return provider == Provider::kAnthropic ? "ANTHROPIC_API_KEY" : "OPENAI_API_KEY";
}

absl::StatusOr<TransportRequest> WireRequest(const ClientOptions& options,
                                             const CallRequest& request) {
  if (!request.path.empty() && !absl::StartsWith(request.path, "/")) {
    return absl::InvalidArgumentError(
        absl::StrCat("request path '", request.path, "' must start with '/'"));
  }
  TransportRequest wire;
  wire.url =
      options.base_url + (request.path.empty() ? EndpointPath(options.provider) : request.path);
  if (!Carries(request, "content-type")) wire.headers.push_back("content-type: application/json");
  const bool own_credential = Carries(request, "x-api-key") || Carries(request, "authorization");
  const std::string& key = request.api_key.empty() ? options.api_key : request.api_key;
  if (!own_credential) {
    if (key.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("no API key: set ", ApiKeyVariable(options.provider),
                       ", give one in the client's options, or send one with the request"));
    }
    wire.headers.push_back(options.provider == Provider::kAnthropic
                               ? absl::StrCat("x-api-key: ", key)
                               : absl::StrCat("authorization: Bearer ", key));
  }
  if (options.provider == Provider::kAnthropic && !Carries(request, "anthropic-version")) {
    wire.headers.push_back(absl::StrCat("anthropic-version: ", options.anthropic_version));
  }
  for (const auto& [name, value] : request.headers) {
    if (HasLineBreak(name) || HasLineBreak(value)) {
      // The value may be a credential: name the header only.
      return absl::InvalidArgumentError(
          absl::StrCat("request header '", absl::CEscape(name), "' has a line break in it"));
    }
    wire.headers.push_back(absl::StrCat(name, ": ", value));
  }
  wire.body = request.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return wire;
}

std::string PromptText(const nlohmann::json& body) {
  std::string text;
  auto add = [&](const nlohmann::json& content) {
    if (content.is_string()) {
      text += content.get<std::string>();
    } else if (content.is_array()) {
      for (const auto& part : content) {
        if (part.is_object() && part.contains("text") && part["text"].is_string()) {
          text += part["text"].get<std::string>();
        }
      }
    }
  };
  if (body.contains("system")) add(body["system"]);
  if (body.contains("messages") && body["messages"].is_array()) {
    for (const auto& m : body["messages"]) {
      if (m.is_object() && m.contains("content")) add(m["content"]);
    }
  }
  return text;
}

uint64_t MaxTokens(const nlohmann::json& body) {
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (body.contains(key) && body[key].is_number_unsigned()) return body[key].get<uint64_t>();
  }
  return 0;
}

}  // namespace sluice
