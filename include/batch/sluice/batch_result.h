// File: batch_result.h
// -----------------------------------------------------------------------------
// How a batch answers one input line: the result line it appends to its
// results file (JSONL), and what reports call a failed call's cause.
//
// A result line:
//   {"line", "custom_id", "status": "succeeded" | "failed" | "invalid",
//    "response" (succeeded) | "error": {"class", "type", "http_status",
//    "message", "request_id"}, "usage", "attempts", "rate_limited",
//    "throttle_wait_ms", "request_id", "simulated" (only when simulated)}
// An invalid line's result holds only line, custom_id, status and
// error: {"class": "invalid_line", "message": "FILE:LINE: field: message"}.
// "line" (1-based) ties each result to its input line; a line's newer result
// supersedes an older one.
//
// Thread safety: the functions are thread-safe.

#ifndef SLUICE_BATCH_RESULT_H_
#define SLUICE_BATCH_RESULT_H_

#include <string>

#include "nlohmann/json.hpp"
#include "sluice/batch_input.h"
#include "sluice/client.h"

namespace sluice {
namespace batch {

// FailureClass()
//
// What reports call a failed call's cause: the provider's error class
// (ErrorClassName), or, for a request the throttle refused before sending,
// "throttle_timeout", "throttle_refused" (a spent budget, a full cap) or
// "never_fits"; "error" for anything else.
std::string FailureClass(const CallResult& r);

// UsageJson()
//
// A call's usage: input_tokens, output_tokens, cache_creation_input_tokens
// and cache_read_input_tokens.
nlohmann::ordered_json UsageJson(const Usage& usage);

// ResultLine()
//
// The result line of `line`, sent and answered with `r`. `simulated` marks it
// as answered by the simulated provider, not the real API.
nlohmann::ordered_json ResultLine(const InputLine& line, const CallResult& r, bool simulated);

// InvalidResultLine()
//
// The result line of an invalid line of `input`. REQUIRES: !line.valid().
nlohmann::ordered_json InvalidResultLine(const Input& input, const InputLine& line);

}  // namespace batch
}  // namespace sluice

#endif  // SLUICE_BATCH_RESULT_H_
