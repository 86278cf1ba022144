// Errors the proxy answers itself, in the shape of the provider the request
// was meant for, so that an SDK raises its usual exception: Anthropic's
// {"type":"error","error":{"type","message"}} and OpenAI's
// {"error":{"message","type","param","code"}}. Internal to src/proxy.
//
// Thread safety: pure functions.

#ifndef SLUICE_SRC_PROXY_PROVIDER_ERRORS_H_
#define SLUICE_SRC_PROXY_PROVIDER_ERRORS_H_

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/http_server.h"
#include "sluice/provider.h"

namespace sluice {
namespace proxy_internal {

struct ErrorReply {
  int status = 500;
  HttpFields headers;  // content-type, and retry-after when given
  std::string body;
};

// The provider's error for HTTP `status`: 400 invalid request, 401
// authentication, 413 request too large, 429 rate limit (OpenAI: code
// rate_limit_exceeded), 502/503 upstream unreachable, 504 timeout. With
// `retry_after`, a retry-after header of whole seconds (rounded up, at least
// 1) and a retry-after-ms header. REQUIRES: `message` holds no secret.
ErrorReply ProviderError(Provider provider, int status, absl::string_view message,
                         std::optional<absl::Duration> retry_after = std::nullopt);

}  // namespace proxy_internal
}  // namespace sluice

#endif  // SLUICE_SRC_PROXY_PROVIDER_ERRORS_H_
