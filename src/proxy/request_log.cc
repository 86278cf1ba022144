#include "src/proxy/request_log.h"

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace sluice {
namespace proxy_internal {

std::string FormatRecord(const RequestRecord& r, bool json) {
  const std::string at = absl::FormatTime("%Y-%m-%d%ET%H:%M:%E3SZ", r.at, absl::UTCTimeZone());
  const double queued_ms = absl::ToDoubleMilliseconds(r.queued);
  const double total_ms = absl::ToDoubleMilliseconds(r.total);
  if (json) {
    nlohmann::json line = {{"time", at},
                           {"method", r.method},
                           {"path", r.path},
                           {"provider", r.provider},
                           {"status", r.status},
                           {"outcome", r.outcome},
                           {"queued_ms", queued_ms},
                           {"total_ms", total_ms},
                           {"input_tokens", r.input_tokens},
                           {"output_tokens", r.output_tokens},
                           {"attempts", r.attempts}};
    if (!r.scope.empty()) line["scope"] = r.scope;
    if (!r.priority.empty()) line["priority"] = r.priority;
    if (!r.request_id.empty()) line["request_id"] = r.request_id;
    // Replace, not throw, on bytes that are not UTF-8 (a path is the caller's).
    return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string text = absl::StrFormat("%s %s %s %s", at, r.method, r.path, r.provider);
  if (!r.scope.empty()) absl::StrAppendFormat(&text, " scope=%s priority=%s", r.scope, r.priority);
  absl::StrAppendFormat(&text, " status=%d outcome=%s queued_ms=%.1f total_ms=%.1f in=%d out=%d",
                        r.status, r.outcome, queued_ms, total_ms, r.input_tokens, r.output_tokens);
  absl::StrAppendFormat(&text, " attempts=%d", r.attempts);
  if (!r.request_id.empty()) absl::StrAppendFormat(&text, " request_id=%s", r.request_id);
  return text;
}

}  // namespace proxy_internal
}  // namespace sluice
