// The Anthropic Messages API as the simulated provider speaks it (see
// dialect.h): the key in x-api-key or in Authorization: Bearer (x-api-key
// wins when both are present), and an anthropic-version header of any
// value; errors as
// {"type":"error","error":{"type","message"},"request_id"}; 429s with
// retry-after in whole seconds; anthropic-ratelimit-* headers with token
// counts rounded to the thousand and RFC 3339 resets; the request-id header.
// Limits: RPM (one per request), ITPM (input tokens) and OTPM (pre-charged
// max_tokens, settled to the output). Also /v1/messages/count_tokens.
//
// Thread safety: stateless; safe from any thread.

#ifndef SLUICE_TOOLS_FAKE_PROVIDER_ANTHROPIC_DIALECT_H_
#define SLUICE_TOOLS_FAKE_PROVIDER_ANTHROPIC_DIALECT_H_

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

class AnthropicDialect final : public Dialect {
 public:
  FakeApi api() const override { return FakeApi::kAnthropic; }
  absl::string_view request_id_header() const override { return "request-id"; }
  absl::string_view reply_id_prefix() const override { return "msg_"; }
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

  // count_tokens: the body of a Messages request without max_tokens; on a
  // bad body, the 400 naming the field.
  std::optional<Reply> ParseCountTokensBody(const std::string& body,
                                            const FakeProviderOptions& options,
                                            absl::string_view request_id, ChatRequest* out) const;
  // {"input_tokens": N}
  std::string CountTokensBody(const ChatRequest& chat) const;

  // An error reply: {"type":"error","error":{"type":..,"message":..[,"details"]},"request_id"}.
  static Reply Error(int status, absl::string_view type, absl::string_view message,
                     absl::string_view request_id, Json details = nullptr);
};

}  // namespace fake_provider_internal
}  // namespace sluice

#endif  // SLUICE_TOOLS_FAKE_PROVIDER_ANTHROPIC_DIALECT_H_
