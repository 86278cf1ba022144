// The simulated provider's server core: what its files share (fake_provider.cc
// runs the server, keys, limits and counts; exchange.cc answers an API
// exchange through its dialect and delivers the reply). The APIs themselves
// are dialects (dialect.h), which know nothing of the server. Internal to the
// simulated provider.
#ifndef SLUICE_TOOLS_FAKE_PROVIDER_FAKE_PROVIDER_IMPL_H_
#define SLUICE_TOOLS_FAKE_PROVIDER_FAKE_PROVIDER_IMPL_H_

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "httplib.h"
#include "tools/fake_provider/anthropic_dialect.h"
#include "tools/fake_provider/chat_body.h"
#include "tools/fake_provider/delivery.h"
#include "tools/fake_provider/dialect.h"
#include "tools/fake_provider/fake_provider.h"
#include "tools/fake_provider/openai_dialect.h"
#include "tools/judge/exact_bucket.h"

namespace sluice {
namespace fake_provider_internal {

// Requests served on one connection before it is closed.
inline constexpr size_t kKeepAliveMaxRequests = 100;

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

// httplib listens with a backlog of 5 (fixed when the library was built):
// a burst of new connections overflows it and the kernel drops their SYNs,
// which clients retry only after a second. Listening again on the bound
// socket raises the backlog; svr_sock_ is only reachable from a subclass.
class HttpServer : public httplib::Server {
 public:
  void RaiseListenBacklog() { ::listen(svr_sock_, SOMAXCONN); }
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
using fake_provider_internal::HttpServer;
using fake_provider_internal::Json;
using fake_provider_internal::kDimensions;
using fake_provider_internal::LimitViews;
using fake_provider_internal::OpenAiDialect;
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
  int port() const { return port_; }
  const std::string& host() const { return options_.host; }
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

  // Routing.
  void ServeApi(const Dialect& dialect, const httplib::Request& req, httplib::Response& res);
  void ServeCountTokens(const httplib::Request& req, httplib::Response& res);
  void ServeStats(const httplib::Request& req, httplib::Response& res);
  httplib::Server::HandlerResponse ServeError(const httplib::Request& req, httplib::Response& res);

  // An exchange once its request id is set: authenticate, draw, validate,
  // fault, admit, settle, answer.
  void Answer(const httplib::Request& req, httplib::Response& res, Exchange& ex);
  // The 401 or 400 when the request's key or headers are refused; else
  // sets *api_key.
  std::optional<Reply> Authenticate(const Dialect& dialect, const httplib::Request& req,
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
  void CountRequest(const httplib::Request& req);
  void CountFault(Exchange& ex);
  void CountRateLimited(Exchange& ex);
  void CountAdmitted(Exchange& ex, uint64_t input_tokens, uint64_t output_tokens);

  // Sends an admitted request's reply as `out` says.
  void Transmit(const httplib::Request& req, httplib::Response& res, Outgoing out);

  std::string NextId(absl::string_view prefix);

  const FakeProviderOptions options_;
  const AnthropicDialect anthropic_;
  const OpenAiDialect openai_;
  Generator generator_;
  std::atomic<uint64_t> next_id_{1};
  absl::Notification stopping_;  // cuts latency and slow bodies short

  HttpServer server_;
  std::thread listener_;
  std::atomic<bool> listener_done_{false};
  int port_ = 0;
  absl::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;

  mutable absl::Mutex mu_;
  // By API, then by the key itself (kept only here, never shown).
  absl::flat_hash_map<std::string, std::unique_ptr<KeyState>> keys_[2] ABSL_GUARDED_BY(mu_);
  FakeProviderStats::Counts totals_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> custom_ids_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice

#endif  // SLUICE_TOOLS_FAKE_PROVIDER_FAKE_PROVIDER_IMPL_H_
