// File: tools/fake_provider/dialect.h
// -----------------------------------------------------------------------------
// A dialect is one provider API as the simulated provider speaks it: how a
// request authenticates and what its body means, how the provider counts it
// against its limits, and the exact bodies and headers of its replies, its
// errors and its rate-limit headers. A dialect knows nothing of any HTTP
// server: it reads headers through a lookup function and answers with a Reply
// (status, headers, JSON body) that the server core sends. The server core
// (fake_provider.cc, exchange.cc) keeps the keys, the limits (the judge's
// buckets), the faults, the counts and the delivery, the same for every API.
//
//   AnthropicDialect (anthropic_dialect.h)  Messages API, /v1/messages
//   OpenAiDialect (openai_dialect.h)        Chat Completions, /v1/chat/completions
//   OpenAiResponsesDialect, OpenAiEmbeddingsDialect (openai_endpoints.h)
//                                           /v1/responses, /v1/embeddings
//
// Thread safety: dialects hold no mutable state; every method is const and
// safe from any number of threads.

#ifndef SLUICE_TOOLS_FAKE_PROVIDER_DIALECT_H_
#define SLUICE_TOOLS_FAKE_PROVIDER_DIALECT_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "tools/fake_provider/chat_body.h"
#include "tools/fake_provider/fake_provider.h"

namespace sluice {
namespace fake_provider_internal {

// ordered_json keeps fields in the order the providers send them.
using Json = nlohmann::ordered_json;

inline constexpr char kJson[] = "application/json";
inline constexpr char kEventStream[] = "text/event-stream";

// Serializes a reply. Strings echoed from requests (the model name) were
// valid UTF-8 when parsed, but `replace` keeps dump() from ever throwing.
std::string Dump(const Json& doc);

// What the server sends: a status, headers, and a JSON body (kJson).
struct Reply {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // The value of header `name` (case as set), or "" when absent.
  std::string header(absl::string_view name) const;
};

// A request header by name ("" when absent), however the server stores them.
using HeaderLookup = absl::FunctionRef<std::string(absl::string_view name)>;

// The KEY of an "Authorization: Bearer KEY" header, or "" when there is
// none (or it is not Bearer, or the key is empty).
std::string BearerToken(HeaderLookup headers);

// The limits a provider keeps per API key, each per minute.
enum class Dimension : uint8_t {
  kRequests,      // RPM, both APIs
  kInputTokens,   // Anthropic ITPM
  kOutputTokens,  // Anthropic OTPM
  kTokens,        // OpenAI TPM
};
inline constexpr int kDimensions = 4;

// n permits of one dimension, taken all-or-nothing with the request's others.
struct Charge {
  Dimension dimension;
  uint64_t n;
};

// After generation, what was charged to a dimension and what the call used:
// the core refunds or debits the difference.
struct Settlement {
  Dimension dimension;
  uint64_t charged;
  uint64_t used;
};

// Why the limits refused a request: the charge refused and its bucket's state.
struct Refusal {
  Dimension dimension;
  uint64_t per_minute;  // the documented limit
  uint64_t requested;   // the charge refused
  int64_t used;         // the bucket's capacity less what it holds now
  // Real time until the charge fits; nullopt when it never can.
  std::optional<absl::Duration> wait;
};

// A limit as the rate-limit headers show it, in real time.
struct LimitView {
  uint64_t per_minute;
  int64_t available;  // what the bucket holds now
  uint64_t capacity;
  absl::Duration time_to_full;
};
// By Dimension; only the dimensions of the dialect are set.
using LimitViews = std::array<std::optional<LimitView>, kDimensions>;

// The failures the provider answers with before the limits, or instead of a
// reply it cannot finish.
enum class Failure {
  kOverloaded,    // Anthropic 529 overloaded_error, OpenAI 503
  kServerError,   // 500
  kOutOfMoney,    // Anthropic spend limit, OpenAI insufficient_quota: 429s never to retry
  kShuttingDown,  // 500: the server stopped while the request was in generation
};

// What a server refused before a handler ran (no route, a body over the cap,
// a malformed request line).
struct ServerRefusal {
  int status;  // 404, 413, ...
  std::string method;
  std::string path;
  size_t max_body_bytes;
};

// Dialect
//
// Each method renders or reads one thing; `request_id` is the id the core
// gave the exchange (some providers echo it in error bodies).
class Dialect {
 public:
  virtual ~Dialect() = default;

  virtual FakeApi api() const = 0;
  // The header carrying the request id on every reply.
  virtual absl::string_view request_id_header() const = 0;
  // The prefix of a reply's id ("msg_", "chatcmpl-").
  virtual absl::string_view reply_id_prefix() const = 0;
  // The limits a key has in this API.
  virtual std::vector<Dimension> dimensions() const = 0;

  // The API key the request presents, or the 401 when it presents none.
  virtual std::optional<Reply> ReadApiKey(HeaderLookup headers, absl::string_view request_id,
                                          std::string* api_key) const = 0;
  // The 401 for a key the provider does not know.
  virtual Reply UnknownKey(absl::string_view request_id) const = 0;
  // Once the key is known: a reply when another header is wrong.
  virtual std::optional<Reply> CheckHeaders(HeaderLookup headers,
                                            absl::string_view request_id) const = 0;
  // Reads and validates a chat body (see fake_provider.h for the token
  // count); on a bad body, the 400 naming the field.
  virtual std::optional<Reply> ParseBody(const std::string& body,
                                         const FakeProviderOptions& options,
                                         absl::string_view request_id, ChatRequest* out) const = 0;

  // What the request is charged before it runs, in order, and how each
  // charge settles once `output_tokens` are generated.
  virtual std::vector<Charge> Charges(const ChatRequest& chat) const = 0;
  virtual Settlement Settle(const ChatRequest& chat, uint64_t output_tokens) const = 0;

  virtual Reply FailureReply(Failure failure, absl::string_view request_id) const = 0;
  // The 429 for a refusal of the limits.
  virtual Reply RateLimited(const Refusal& refusal, const ChatRequest& chat,
                            absl::string_view request_id) const = 0;
  virtual Reply Refused(const ServerRefusal& refusal, absl::string_view request_id) const = 0;

  // The 200 body of an admitted request that generated `output_tokens`.
  virtual std::string ReplyBody(const ChatRequest& chat, uint64_t output_tokens,
                                absl::string_view reply_id, absl::Time now) const = 0;
  // The same reply streamed ("stream": true): the server-sent events in
  // order, each whole ("event: NAME\ndata: JSON\n\n" or "data: ...\n\n")
  // and meant to be sent and flushed on its own. The text and usage are
  // ReplyBody's.
  virtual std::vector<std::string> StreamEvents(const ChatRequest& chat, uint64_t output_tokens,
                                                absl::string_view reply_id,
                                                absl::Time now) const = 0;

  // The rate-limit headers of a key's limits at `now` (wall clock).
  virtual std::vector<std::pair<std::string, std::string>> RateLimitHeaders(
      const LimitViews& limits, absl::Time now) const = 0;
};

}  // namespace fake_provider_internal
}  // namespace sluice

#endif  // SLUICE_TOOLS_FAKE_PROVIDER_DIALECT_H_
