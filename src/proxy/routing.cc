#include "src/proxy/routing.h"

#include <optional>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "sluice/bucket_key.h"
#include "sluice/client.h"

namespace sluice {
namespace proxy_internal {
namespace {

constexpr char kScopeHeader[] = "x-sluice-scope";
constexpr char kPriorityHeader[] = "x-sluice-priority";

// Fields that describe one connection, not the message (RFC 9110 7.6.1),
// and the ones the proxy frames itself.
bool IsHopByHop(absl::string_view name) {
  for (absl::string_view hop :
       {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
        "te", "trailer", "transfer-encoding", "upgrade", "content-length"}) {
    if (absl::EqualsIgnoreCase(name, hop)) return true;
  }
  return false;
}

}  // namespace

Destination Route(const HttpRequest& request) {
  const absl::string_view path = request.path;
  if (request.method == "GET" && path == "/metrics") return {Treatment::kMetrics};
  if (request.method == "POST") {
    if (path == "/v1/messages") return {Treatment::kThrottled, Provider::kAnthropic};
    if (path == "/v1/messages/count_tokens") {
      return {Treatment::kCountTokens, Provider::kAnthropic};
    }
    if (path == "/v1/chat/completions" || path == "/v1/responses" || path == "/v1/embeddings") {
      return {Treatment::kThrottled, Provider::kOpenAi};
    }
  }
  const bool anthropic = FindField(request.headers, "x-api-key").has_value() ||
                         FindField(request.headers, "anthropic-version").has_value();
  return {Treatment::kPassThrough, anthropic ? Provider::kAnthropic : Provider::kOpenAi};
}

std::string Credential(const HttpFields& headers) {
  if (std::optional<absl::string_view> key = FindField(headers, "x-api-key")) {
    return std::string(absl::StripAsciiWhitespace(*key));
  }
  if (std::optional<absl::string_view> auth = FindField(headers, "authorization")) {
    absl::string_view value = absl::StripAsciiWhitespace(*auth);
    if (value.size() > 7 && absl::StartsWithIgnoreCase(value, "bearer ")) {
      return std::string(absl::StripAsciiWhitespace(value.substr(7)));
    }
  }
  return "";
}

absl::StatusOr<Identity> Identify(const HttpFields& headers, const LimitsConfig& config) {
  Identity identity;
  if (std::optional<absl::string_view> scope = FindField(headers, kScopeHeader)) {
    const absl::string_view name = absl::StripAsciiWhitespace(*scope);
    if (absl::Status s = BucketKey::ValidateName(BucketKey::Part::kScope, name); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(kScopeHeader, ": ", s.message()));
    }
    identity.scope = std::string(name);
  } else if (const std::string key = Credential(headers);
             !key.empty() && !config.proxy.key_scopes.empty()) {
    auto it = config.proxy.key_scopes.find(KeyFingerprint(key));
    if (it != config.proxy.key_scopes.end()) identity.scope = it->second;
  }
  if (identity.scope.empty()) identity.scope = "global";

  if (std::optional<absl::string_view> priority = FindField(headers, kPriorityHeader)) {
    std::optional<Priority> parsed =
        ParsePriority(absl::AsciiStrToLower(absl::StripAsciiWhitespace(*priority)));
    if (!parsed) {
      return absl::InvalidArgumentError(
          absl::StrCat(kPriorityHeader, ": must be high, normal or low, got \"", *priority, "\""));
    }
    identity.priority = *parsed;
    return identity;
  }
  for (const ScopeLimits* scope : ResolveScope(config, identity.scope).scopes) {
    if (scope->priority) {
      identity.priority = *scope->priority;
      break;
    }
  }
  return identity;
}

std::vector<std::pair<std::string, std::string>> UpstreamFields(const HttpFields& fields) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, value] : fields) {
    if (IsHopByHop(name) || name == "host" || name == kScopeHeader || name == kPriorityHeader) {
      continue;
    }
    out.emplace_back(name, value);
  }
  return out;
}

HttpFields DownstreamFields(const Headers& fields) {
  HttpFields out;
  for (const auto& [name, value] : fields) {
    if (IsHopByHop(name)) continue;
    out.emplace_back(name, value);
  }
  return out;
}

}  // namespace proxy_internal
}  // namespace sluice
