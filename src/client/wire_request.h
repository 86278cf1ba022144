// What goes on the wire for one CallRequest: its URL, its headers (the
// client's own, the request's, and exactly one set of credentials) and its
// body, worked out once before the first attempt; and the token counts the
// policy reserves for it.
//
// Thread safety: functions of their arguments only. Internal to the client.
#ifndef SLUICE_SRC_CLIENT_WIRE_REQUEST_H_
#define SLUICE_SRC_CLIENT_WIRE_REQUEST_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "sluice/client.h"
#include "sluice/transport.h"

namespace sluice {

// The variable Create reads the key from: ANTHROPIC_API_KEY or OPENAI_API_KEY.
const char* ApiKeyVariable(Provider provider);

// The request as sent, `id` unset: its method, URL, headers and body
// (raw_body when set, else the JSON body; none for GET and HEAD). InvalidArgument (naming the key's
// variable, never a key) when neither the request nor `options` has
// credentials, when a header has CR or LF in it, or when the path does not
// start with '/'.
absl::StatusOr<TransportRequest> WireRequest(const ClientOptions& options,
                                             const CallRequest& request);

// The API key the request is sent with: its api_key, else the credential
// among its headers (x-api-key, or the token of "authorization: Bearer"),
// else the client's. Empty when it has none. A secret: only to be hashed.
std::string SendingKey(const ClientOptions& options, const CallRequest& request);

// The provider account the request draws from: its own account, else with
// options.account_per_key the first 16 hex digits of its key's
// KeyFingerprint, else "" (none).
std::string RequestAccount(const ClientOptions& options, const CallRequest& request);

// All prompt text in a request body, for estimating its input tokens: the
// system prompt or instructions, the messages' text, and the Responses and
// Embeddings APIs' "input" (a string, messages, or a list of strings).
std::string PromptText(const nlohmann::json& body);

// The body's model; "" when it has none (or is not an object: a GET has
// no body).
std::string ModelOf(const nlohmann::json& body);

// The body's max_tokens (or max_completion_tokens, or the Responses API's
// max_output_tokens); 0 when it has none.
uint64_t MaxTokens(const nlohmann::json& body);

}  // namespace sluice

#endif  // SLUICE_SRC_CLIENT_WIRE_REQUEST_H_
