// The OpenAI Chat Completions API as the simulated provider speaks it (see
// dialect.h): Authorization: Bearer KEY; errors as
// {"error":{"message","type","param","code"}}; 429 messages that say
// "Please try again in 644ms" and no retry-after; x-ratelimit-* headers with
// Go-style durations (FormatGoDuration, rounded up to the millisecond); the
// x-request-id header. Limits: RPM and TPM, pre-charged max(max_tokens, the
// prompt) and settled to prompt + completion tokens.
//
// Thread safety: stateless; safe from any thread.

#ifndef SLUICE_TOOLS_FAKE_PROVIDER_OPENAI_DIALECT_H_
#define SLUICE_TOOLS_FAKE_PROVIDER_OPENAI_DIALECT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "tools/fake_provider/dialect.h"

namespace sluice {
namespace fake_provider_internal {

class OpenAiDialect : public Dialect {
 public:
  FakeApi api() const override { return FakeApi::kOpenAi; }
  absl::string_view request_id_header() const override { return "x-request-id"; }
  absl::string_view reply_id_prefix() const override { return "chatcmpl-"; }
  std::vector<Dimension> dimensions() const override;

  std::optional<Reply> ReadApiKey(HeaderLookup headers, absl::string_view request_id,
                                  std::string* api_key) const override;
  Reply UnknownKey(absl::string_view request_id) const override;
  std::optional<Reply> CheckHeaders(HeaderLookup headers,
                                    absl::string_view request_id) const override;
  std::optional<Reply> ParseBody(const std::string& body, const FakeProviderOptions& options,
                                 absl::string_view request_id, ChatRequest* out) const override;

  std::vector<Charge> Charges(const ChatRequest& chat) const override;
  Settlement Settle(const ChatRequest& chat, uint64_t output_tokens) const override;

  Reply FailureReply(Failure failure, absl::string_view request_id) const override;
  Reply RateLimited(const Refusal& refusal, const ChatRequest& chat,
                    absl::string_view request_id) const override;
  Reply Refused(const ServerRefusal& refusal, absl::string_view request_id) const override;

  std::string ReplyBody(const ChatRequest& chat, uint64_t output_tokens, absl::string_view reply_id,
                        absl::Time now) const override;
  std::vector<std::string> StreamEvents(const ChatRequest& chat, uint64_t output_tokens,
                                        absl::string_view reply_id, absl::Time now) const override;
  std::vector<std::pair<std::string, std::string>> RateLimitHeaders(const LimitViews& limits,
                                                                    absl::Time now) const override;

  // An error reply: {"error":{"message","type","param","code"}}, an empty
  // param or code being null.
  static Reply Error(int status, absl::string_view message, absl::string_view type,
                     absl::string_view param, absl::string_view code);
  // The 400 for a bad body, naming the param as OpenAI does; nullopt for none.
  static std::optional<Reply> BadBody(const std::optional<BadRequest>& bad);
};

}  // namespace fake_provider_internal
}  // namespace sluice

#endif  // SLUICE_TOOLS_FAKE_PROVIDER_OPENAI_DIALECT_H_
