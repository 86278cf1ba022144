// Where a request to the proxy goes, and who sends it: the upstream and
// treatment its path asks for, its credential, scope and priority, and the
// header fields forwarded each way. Internal to src/proxy.
//
// Thread safety: pure functions.

#ifndef SLUICE_SRC_PROXY_ROUTING_H_
#define SLUICE_SRC_PROXY_ROUTING_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sluice/http_server.h"
#include "sluice/limits.h"
#include "sluice/provider.h"

namespace sluice {
namespace proxy_internal {

enum class Treatment {
  kThrottled,    // queued, reserved through the policy, settled
  kCountTokens,  // Anthropic's count_tokens: its own bucket, if any
  kPassThrough,  // forwarded as is
  kMetrics,      // GET /metrics, answered by the proxy
};

struct Destination {
  Treatment treatment = Treatment::kPassThrough;
  Provider provider = Provider::kAnthropic;
};

// POST /v1/messages -> Anthropic, throttled; POST /v1/messages/count_tokens
// -> Anthropic, count_tokens; POST /v1/chat/completions, /v1/responses,
// /v1/embeddings -> OpenAI, throttled; GET /metrics -> metrics; anything else
// passes through, to Anthropic when the request carries x-api-key or
// anthropic-version, to OpenAI otherwise.
Destination Route(const HttpRequest& request);

// The caller's API key: x-api-key, else the token of "Authorization: Bearer
// TOKEN"; "" when neither.
std::string Credential(const HttpFields& headers);

// Who a throttled request is charged to, and in which order it is served.
struct Identity {
  std::string scope;
  Priority priority = Priority::kNormal;
};

// The scope: x-sluice-scope, else config.proxy.key_scopes[SHA-256 of the
// credential], else "global". The priority: x-sluice-priority, else that of
// the first scope on the scope's path that has one, else normal.
// InvalidArgument naming the header when either header's value is not valid.
absl::StatusOr<Identity> Identify(const HttpFields& headers, const LimitsConfig& config);

// The request fields to send upstream: all but hop-by-hop fields, host,
// content-length, x-sluice-scope and x-sluice-priority. accept-encoding
// passes: a compressed response comes back compressed, and the client reads
// its usage from a decoded copy.
std::vector<std::pair<std::string, std::string>> UpstreamFields(const HttpFields& fields);

// The response fields to send back: all but hop-by-hop fields and
// content-length (the server frames the body itself). A content-encoding
// stays: the body passes through as it came.
HttpFields DownstreamFields(const Headers& fields);

}  // namespace proxy_internal
}  // namespace sluice

#endif  // SLUICE_SRC_PROXY_ROUTING_H_
