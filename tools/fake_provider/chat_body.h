// The simulated provider's reading of a chat request body, both APIs: the
// model, max_tokens and the deterministic input-token count (see
// fake_provider.h), or the field that is wrong and why, as the providers
// report it. Internal to the simulated provider.
#ifndef SLUICE_TOOLS_FAKE_PROVIDER_CHAT_BODY_H_
#define SLUICE_TOOLS_FAKE_PROVIDER_CHAT_BODY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tools/fake_provider/fake_provider.h"

namespace sluice {
namespace fake_provider_internal {

// A chat request reduced to what the simulation needs.
struct ChatRequest {
  std::string model;
  uint64_t max_tokens = 0;  // as given, or the default for OpenAI
  uint64_t input_tokens = 0;
  // "stream": true asks for server-sent events; OpenAI's
  // "stream_options": {"include_usage": true} for a final usage chunk.
  bool stream = false;
  bool include_usage = false;
  // An embeddings request: how many inputs it embeds (0 otherwise).
  uint64_t embeddings = 0;
};

// Why a body was refused: the field (a JSON path such as "messages.0.content")
// and what is wrong with it. `code` is OpenAI's error code for it.
struct BadRequest {
  std::string param;
  std::string problem;
  std::string code;
};

// What the two APIs' bodies have in common; they differ in the details.
struct BodyRules {
  bool max_tokens_required;  // Anthropic: max_tokens; OpenAI: optional, two names
  bool null_content_ok;      // OpenAI assistant messages may carry no content
  bool system_field;         // Anthropic: a top-level "system"
};

inline constexpr BodyRules kAnthropicRules = {true, false, true};
inline constexpr BodyRules kOpenAiRules = {false, true, false};

// Validates a chat body and counts its input tokens (see the header). On a
// bad body, returns what is wrong; `*out` is then unspecified.
std::optional<BadRequest> ParseChat(const std::string& text, const BodyRules& rules,
                                    const FakeProviderOptions& options, ChatRequest* out);

// The bodies of OpenAI's Responses and Embeddings endpoints, read into a
// ChatRequest: the input tokens count as a chat's do (instructions as a
// system prompt; each embeddings input on its own, without the per-message
// 4), max_output_tokens is the Responses' max_tokens, and an embeddings
// request generates nothing (max_tokens 0).
std::optional<BadRequest> ParseResponses(const std::string& text,
                                         const FakeProviderOptions& options, ChatRequest* out);
std::optional<BadRequest> ParseEmbeddings(const std::string& text, ChatRequest* out);

// "tok tok tok ...": `words` of them.
std::string ReplyText(uint64_t words);

// ReplyText(words) in the pieces a stream sends it in, a few words each;
// joined, they are ReplyText(words) exactly.
std::vector<std::string> ReplyTextPieces(uint64_t words);

}  // namespace fake_provider_internal
}  // namespace sluice

#endif  // SLUICE_TOOLS_FAKE_PROVIDER_CHAT_BODY_H_
