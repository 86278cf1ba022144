// OpenAI's other endpoints as the simulated provider speaks them: the
// Responses API (/v1/responses) and Embeddings (/v1/embeddings). They are
// the OpenAI API (see openai_dialect.h): the same keys, limits (RPM and TPM,
// shared with Chat Completions), errors and headers; only their bodies and
// replies differ. Minimal: text in, text or vectors out, with usage.
//
// Thread safety: stateless; safe from any thread.

#ifndef SLUICE_TOOLS_FAKE_PROVIDER_OPENAI_ENDPOINTS_H_
#define SLUICE_TOOLS_FAKE_PROVIDER_OPENAI_ENDPOINTS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "tools/fake_provider/openai_dialect.h"

namespace sluice {
namespace fake_provider_internal {

// Responses: {"model", "input", "instructions", "max_output_tokens",
// "stream"} in; {"object":"response", "output":[a message with output_text],
// "usage":{"input_tokens","output_tokens","total_tokens",...}} out, its
// status "incomplete" when max_output_tokens ran out. Streamed as
// response.created, response.output_text.delta events, response.completed
// (with the usage).
class OpenAiResponsesDialect final : public OpenAiDialect {
 public:
  absl::string_view reply_id_prefix() const override { return "resp_"; }
  std::optional<Reply> ParseBody(const std::string& body, const FakeProviderOptions& options,
                                 absl::string_view request_id, ChatRequest* out) const override;
  std::string ReplyBody(const ChatRequest& chat, uint64_t output_tokens, absl::string_view reply_id,
                        absl::Time now) const override;
  std::vector<std::string> StreamEvents(const ChatRequest& chat, uint64_t output_tokens,
                                        absl::string_view reply_id, absl::Time now) const override;
};

// Embeddings: {"model", "input": a string or strings} in; {"object":"list",
// "data":[{"object":"embedding","index","embedding":[8 numbers]}],
// "usage":{"prompt_tokens","total_tokens"}} out. Charged its input tokens
// to TPM; never streamed (it has no "stream").
class OpenAiEmbeddingsDialect final : public OpenAiDialect {
 public:
  std::optional<Reply> ParseBody(const std::string& body, const FakeProviderOptions& options,
                                 absl::string_view request_id, ChatRequest* out) const override;
  std::string ReplyBody(const ChatRequest& chat, uint64_t output_tokens, absl::string_view reply_id,
                        absl::Time now) const override;
  // The reply body, as the only "event": an embeddings request never streams.
  std::vector<std::string> StreamEvents(const ChatRequest& chat, uint64_t output_tokens,
                                        absl::string_view reply_id, absl::Time now) const override;
};

}  // namespace fake_provider_internal
}  // namespace sluice

#endif  // SLUICE_TOOLS_FAKE_PROVIDER_OPENAI_ENDPOINTS_H_
