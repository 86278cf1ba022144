#include "src/client/wire_request.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace sluice {
namespace {

std::string EndpointPath(Provider provider) {
  return provider == Provider::kAnthropic ? "/v1/messages" : "/v1/chat/completions";
}

bool HasLineBreak(absl::string_view text) {
  return text.find_first_of("\r\n") != absl::string_view::npos;
}

// The value of the request's own header `name` (any case), or nullptr.
const std::string* Find(const CallRequest& request, absl::string_view name) {
  for (const auto& [n, v] : request.headers) {
    if (absl::EqualsIgnoreCase(n, name)) return &v;
  }
  return nullptr;
}

bool Carries(const CallRequest& request, absl::string_view name) {
  return Find(request, name) != nullptr;
}

// GET and HEAD carry no body.
bool Bodiless(absl::string_view method) {
  return absl::EqualsIgnoreCase(method, "GET") || absl::EqualsIgnoreCase(method, "HEAD");
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
  wire.method = request.method;
  wire.url =
      options.base_url + (request.path.empty() ? EndpointPath(options.provider) : request.path);
  const bool bodiless = Bodiless(request.method);
  if (!bodiless && !Carries(request, "content-type")) {
    wire.headers.push_back("content-type: application/json");
  }
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
  if (bodiless) return wire;
  wire.body = !request.raw_body.empty()
                  ? request.raw_body
                  : request.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return wire;
}

std::string SendingKey(const ClientOptions& options, const CallRequest& request) {
  if (!request.api_key.empty()) return request.api_key;
  if (const std::string* key = Find(request, "x-api-key")) return *key;
  if (const std::string* authorization = Find(request, "authorization")) {
    // "Bearer KEY" (the scheme is case-insensitive); any other scheme's
    // credential is named by the whole value.
    absl::string_view value = absl::StripAsciiWhitespace(*authorization);
    if (value.size() > 7 && absl::StartsWithIgnoreCase(value, "bearer ")) {
      value = absl::StripLeadingAsciiWhitespace(value.substr(7));
    }
    return std::string(value);
  }
  return options.api_key;
}

std::string RequestAccount(const ClientOptions& options, const CallRequest& request) {
  if (!request.account.empty() || !options.account_per_key) return request.account;
  const std::string key = SendingKey(options, request);
  return key.empty() ? "" : KeyFingerprint(key).substr(0, 16);
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
  auto add_messages = [&](const nlohmann::json& messages) {
    for (const auto& m : messages) {
      if (m.is_object() && m.contains("content")) add(m["content"]);
      if (m.is_string()) text += m.get<std::string>();  // an embeddings input list
    }
  };
  if (!body.is_object()) return text;
  for (const char* key : {"system", "instructions"}) {
    if (body.contains(key)) add(body[key]);
  }
  if (body.contains("messages") && body["messages"].is_array()) add_messages(body["messages"]);
  // The Responses and Embeddings APIs' "input": a string, or a list of
  // messages (Responses) or of strings (Embeddings).
  if (body.contains("input")) {
    const nlohmann::json& input = body["input"];
    if (input.is_string()) text += input.get<std::string>();
    if (input.is_array()) add_messages(input);
  }
  return text;
}

std::string ModelOf(const nlohmann::json& body) {
  if (!body.is_object()) return "";
  const auto it = body.find("model");
  return it != body.end() && it->is_string() ? it->get<std::string>() : "";
}

uint64_t MaxTokens(const nlohmann::json& body) {
  if (!body.is_object()) return 0;
  for (const char* key : {"max_tokens", "max_completion_tokens", "max_output_tokens"}) {
    if (body.contains(key) && body[key].is_number_unsigned()) return body[key].get<uint64_t>();
  }
  return 0;
}

}  // namespace sluice
