// The simulated provider's server core: what its files share (fake_provider.cc
// runs the server, keys, limits and counts; exchange.cc answers an API
// exchange through its dialect and delivers the reply). The APIs themselves
// are dialects (dialect.h), which know nothing of the server; the server is
// sluice's asynchronous one (sluice/http_server.h): every exchange is handled
// on its event loop, generation time is a timer and a slow body timed
// writes, so no connection holds a thread. Internal to the simulated
// provider.
#ifndef SLUICE_TOOLS_FAKE_PROVIDER_FAKE_PROVIDER_IMPL_H_
#define SLUICE_TOOLS_FAKE_PROVIDER_FAKE_PROVIDER_IMPL_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "sluice/http_server.h"
#include "tools/fake_provider/anthropic_dialect.h"
#include "tools/fake_provider/chat_body.h"
#include "tools/fake_provider/delivery.h"
#include "tools/fake_provider/dialect.h"
#include "tools/fake_provider/fake_provider.h"
#include "tools/fake_provider/openai_dialect.h"
#include "tools/fake_provider/openai_endpoints.h"
#include "tools/judge/exact_bucket.h"

namespace sluice {
namespace fake_provider_internal {

// How long Stop lets replies already under way (a slow body, the 500s it
// answers requests in generation with) finish before it cuts them.
inline constexpr absl::Duration kStopDeadline = absl::Seconds(1);

// The random values one request may need, all drawn at once so that every
// authenticated request consumes the same amount of the sequence whatever
// happens to it. Each is uniform in [0, 1).
struct Draws {
  double overloaded;
  double server_error;
  double insufficient_quota;
  double spend_limit;
  double reset;
  double truncated_body;
  double malformed_json;
  double slow_body;
  double output;   // picks the output length in [1, max_tokens]
  double latency;  // picks the latency in mean +- jitter
};

// mt19937_64 rather than absl::BitGen: its sequence is fixed by the standard,
// so a seed means the same run on every platform and Abseil version.
class Generator {
 public:
  explicit Generator(uint64_t seed) : engine_(seed) {}

  Draws Next() {
    absl::MutexLock lock(&mu_);
    return {Uniform(), Uniform(), Uniform(), Uniform(), Uniform(),
            Uniform(), Uniform(), Uniform(), Uniform(), Uniform()};
  }

 private:
  // 53 random bits as a double in [0, 1), exactly, without relying on a
  // library distribution whose algorithm may differ between implementations.
  double Uniform() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
  }

  absl::Mutex mu_;
  std::mt19937_64 engine_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fake_provider_internal

using fake_provider_internal::AnthropicDialect;
using fake_provider_internal::Charge;
using fake_provider_internal::ChatRequest;
using fake_provider_internal::Delivery;
using fake_provider_internal::Dialect;
using fake_provider_internal::Dimension;
using fake_provider_internal::Draws;
using fake_provider_internal::Failure;
using fake_provider_internal::Generator;
using fake_provider_internal::Json;
using fake_provider_internal::kDimensions;
using fake_provider_internal::LimitViews;
using fake_provider_internal::OpenAiDialect;
using fake_provider_internal::OpenAiEmbeddingsDialect;
using fake_provider_internal::OpenAiResponsesDialect;
using fake_provider_internal::Outgoing;
using fake_provider_internal::Refusal;
using fake_provider_internal::Settlement;

class FakeProvider::Impl {
 public:
  explicit Impl(FakeProviderOptions options)
      : options_(std::move(options)), generator_(options_.seed) {}

  ~Impl() { Stop(); }

  absl::Status Listen();
  void Stop();
  int port() const { return server_->port(); }
  std::string base_url() const { return server_->base_url(); }
  FakeProviderStats stats() const;

 private:
  // sluice::Reply (provider.h) is the client's; this one is a dialect's.
  using Reply = fake_provider_internal::Reply;

  // One bucket of a key: its limit per simulated minute (what headers and
  // messages call the limit), and the bucket enforcing it (null: unlimited).
  struct Limit {
    uint64_t per_minute = 0;
    std::unique_ptr<ExactBucket> bucket;
  };

  // An API key's limits (by Dimension; those of its API are set) and
  // counters. Each bucket guards itself; counts are guarded by Impl::mu_.
  struct KeyState {
    FakeApi api;
    std::string label;
    Limit limits[kDimensions];
    FakeProviderStats::Counts counts;
  };

  // One API exchange: its dialect, its request id, and its key once known.
  struct Exchange {
    const Dialect* dialect;
    std::string request_id;
    KeyState* key = nullptr;
  };

  // A request admitted and charged, whose reply is generated after `latency`.
  struct Admitted {
    ChatRequest chat;
    uint64_t output_tokens;
    Delivery delivery;
    absl::Duration latency;
  };

  // An admitted request in generation (its latency timer pending).
  struct Generating {
    std::shared_ptr<HttpExchange> http;
    Exchange ex;
    Admitted admitted;
    HttpServer::TimerId timer = 0;
  };

  // Routing, on the server's loop.
  void Handle(std::shared_ptr<HttpExchange> http);
  void ServeApi(const Dialect& dialect, std::shared_ptr<HttpExchange> http);
  void ServeCountTokens(HttpExchange& http);
  void ServeStats(HttpExchange& http);
  // The server's own refusals (no route, a body over the cap) in the shape
  // of the API the path belongs to.
  void Refuse(HttpExchange& http, int status);

  // An exchange once its request id is set: authenticate, draw, validate,
  // fault, admit and settle. The reply when it ends there, else what was
  // admitted.
  std::variant<Reply, Admitted> Answer(const HttpRequest& req, Exchange& ex);
  // The 401 or 400 when the request's key or headers are refused; else
  // sets *api_key.
  std::optional<Reply> Authenticate(const Dialect& dialect, const HttpRequest& req,
                                    absl::string_view request_id, std::string* api_key) const;

  // Keys, limits, faults.
  bool KeyAllowed(const std::string& key) const;
  KeyState* FindOrAddKey(const Dialect& dialect, const std::string& key);
  Limit MakeLimit(uint64_t per_minute) const;
  uint64_t PerMinute(Dimension dimension) const;
  std::optional<Refusal> Admit(const KeyState& key, const std::vector<Charge>& charges,
                               int64_t now_ns) const;
  void Settle(const KeyState& key, const Settlement& settlement) const;
  LimitViews Views(const KeyState& key, int64_t now_ns) const;
  std::optional<Failure> PreAdmissionFault(const Draws& d) const;
  Delivery DeliveryFault(const Draws& d) const;
  uint64_t OutputTokens(const Draws& d, uint64_t max_tokens) const;
  absl::Duration Latency(const Draws& d) const;

  // Counting.
  void CountRequest(const HttpRequest& req);
  void CountFault(Exchange& ex);
  void CountRateLimited(Exchange& ex);
  void CountAdmitted(Exchange& ex, uint64_t input_tokens, uint64_t output_tokens);

  // Replies. Every API reply carries the request id and, once the key is
  // known, its rate-limit headers as they stand when it is sent.
  HttpFields ReplyHeaders(const Exchange& ex) const;
  void Send(HttpExchange& http, const Exchange& ex, const Reply& reply) const;
  // Generates an admitted request's reply now and sends it.
  void Deliver(std::shared_ptr<HttpExchange> http, const Exchange& ex, const Admitted& admitted);
  // Sends `out`'s pieces from `next` on, each after its pause, then ends.
  void WritePieces(std::shared_ptr<HttpExchange> http, std::shared_ptr<const Outgoing> out,
                   size_t next);

  // Generation time: a timer per request, remembered so that Stop can
  // answer them at once.
  void StartGenerating(Generating generating);
  void FinishGenerating(uint64_t id);
  void AnswerGeneratingOnStop();

  std::string NextId(absl::string_view prefix);

  const FakeProviderOptions options_;
  const AnthropicDialect anthropic_;
  const OpenAiDialect openai_;
  const OpenAiResponsesDialect openai_responses_;
  const OpenAiEmbeddingsDialect openai_embeddings_;
  Generator generator_;
  std::atomic<uint64_t> next_id_{1};

  std::unique_ptr<HttpServer> server_;
  absl::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;

  absl::Mutex generating_mu_;
  uint64_t next_generating_ ABSL_GUARDED_BY(generating_mu_) = 0;
  absl::flat_hash_map<uint64_t, Generating> generating_ ABSL_GUARDED_BY(generating_mu_);

  mutable absl::Mutex mu_;
  // By API, then by the key itself (kept only here, never shown).
  absl::flat_hash_map<std::string, std::unique_ptr<KeyState>> keys_[2] ABSL_GUARDED_BY(mu_);
  FakeProviderStats::Counts totals_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> custom_ids_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice

#endif  // SLUICE_TOOLS_FAKE_PROVIDER_FAKE_PROVIDER_IMPL_H_
