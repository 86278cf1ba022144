// The proxy's one line per request: what was asked, by which scope, how it
// ended and how long it waited. Text for people, JSON lines for machines.
// No credential or body ever appears in a line. Internal to src/proxy.
//
// Thread safety: pure functions.

#ifndef SLUICE_SRC_PROXY_REQUEST_LOG_H_
#define SLUICE_SRC_PROXY_REQUEST_LOG_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace sluice {
namespace proxy_internal {

struct RequestRecord {
  absl::Time at;  // when the answer ended
  std::string method;
  std::string path;      // without the query
  std::string provider;  // "anthropic", "openai"
  std::string scope;     // "" for requests that are not throttled
  std::string priority;  // "" likewise
  int status = 0;        // the HTTP status answered; 0: none (the client went away)
  // "ok", "upstream_error", "queue_timeout", "queue_full", "client_gone",
  // "bad_request", "upstream_unreachable", ...
  std::string outcome;
  absl::Duration queued;  // from arrival until sent upstream
  absl::Duration total;   // from arrival until the answer ended
  uint64_t input_tokens = 0;
  uint64_t output_tokens = 0;
  int attempts = 0;
  std::string request_id;  // the provider's, when it gave one
};

// "2026-11-30T12:00:00.123Z POST /v1/messages anthropic scope=global
// priority=normal status=200 outcome=ok queued_ms=1.2 total_ms=340.5 in=12
// out=40 attempts=1 request_id=req_1", or the same fields as one JSON object.
std::string FormatRecord(const RequestRecord& record, bool json);

}  // namespace proxy_internal
}  // namespace sluice

#endif  // SLUICE_SRC_PROXY_REQUEST_LOG_H_
