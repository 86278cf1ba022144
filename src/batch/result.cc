// The result lines of a batch and the class of a failed call
// (sluice/batch_result.h).

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "sluice/batch_result.h"

namespace sluice {
namespace batch {

using Json = nlohmann::ordered_json;

std::string FailureClass(const CallResult& r) {
  if (r.error.error_class != ErrorClass::kNone) {
    return std::string(ErrorClassName(r.error.error_class));
  }
  switch (r.status.code()) {
    case absl::StatusCode::kDeadlineExceeded:
      return "throttle_timeout";
    case absl::StatusCode::kResourceExhausted:
      return "throttle_refused";
    case absl::StatusCode::kOutOfRange:
      return "never_fits";
    default:
      return "error";
  }
}

Json UsageJson(const Usage& usage) {
  return {{"input_tokens", usage.input_tokens},
          {"output_tokens", usage.output_tokens},
          {"cache_creation_input_tokens", usage.cache_creation_input_tokens},
          {"cache_read_input_tokens", usage.cache_read_input_tokens}};
}

Json ResultLine(const InputLine& line, const CallResult& r, bool simulated) {
  Json doc;
  doc["line"] = line.number;
  doc["custom_id"] = line.custom_id;
  doc["status"] = r.status.ok() ? "succeeded" : "failed";
  if (r.status.ok()) {
    doc["response"] = r.response;
  } else {
    doc["error"] = {{"class", FailureClass(r)},
                    {"type", r.error.provider_type},
                    {"http_status", r.http_status},
                    {"message", std::string(r.status.message())},
                    {"request_id", r.error.request_id}};
  }
  doc["usage"] = UsageJson(r.usage);
  doc["attempts"] = r.attempts;
  doc["rate_limited"] = r.rate_limited;
  doc["throttle_wait_ms"] = absl::ToDoubleMilliseconds(r.throttle_wait);
  doc["request_id"] = r.request_id;
  if (simulated) doc["simulated"] = true;
  return doc;
}

Json InvalidResultLine(const Input& input, const InputLine& line) {
  Json doc;
  doc["line"] = line.number;
  doc["custom_id"] = line.custom_id;
  doc["status"] = "invalid";
  doc["error"] = {{"class", "invalid_line"}, {"message", input.Error(line)}};
  return doc;
}

}  // namespace batch
}  // namespace sluice
