// The simulated provider's server: what its files share (fake_provider.cc
// runs the server, keys, limits and counts; fake_provider_apis.cc answers
// the two APIs). Internal to the simulated provider.
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
#include "nlohmann/json.hpp"
#include "tools/fake_provider/chat_body.h"
#include "tools/fake_provider/fake_provider.h"
#include "tools/judge/exact_bucket.h"

namespace sluice {
namespace fake_provider_internal {

// ordered_json keeps fields in the order the providers send them.
using Json = nlohmann::ordered_json;

inline constexpr char kJson[] = "application/json";

// Requests served on one connection before it is closed.
inline constexpr size_t kKeepAliveMaxRequests = 100;

// The slow_body fault: the body goes out in this many pieces, each after a
// pause, about 400 ms in all (real time: time_scale does not apply).
inline constexpr int kSlowBodyPieces = 8;
inline constexpr absl::Duration kSlowBodyPause = absl::Milliseconds(50);

// Serializes a reply. Strings echoed from requests (the model name) were
// valid UTF-8 when parsed, but `replace` keeps dump() from ever throwing.
std::string Dump(const Json& doc);

// Go-style, rounded up to the millisecond as OpenAI's values are.
std::string GoDurationMillisCeil(absl::Duration d);

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

using fake_provider_internal::BadRequest;
using fake_provider_internal::Draws;
using fake_provider_internal::Generator;
using fake_provider_internal::HttpServer;
using fake_provider_internal::Json;

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
  // One bucket of a key: its limit per simulated minute (what headers and
  // messages call the limit), and the bucket enforcing it (null: unlimited).
  struct Limit {
    uint64_t per_minute = 0;
    std::unique_ptr<ExactBucket> bucket;
  };

  // An API key's limits and counters. Each bucket guards itself; counts are
  // guarded by Impl::mu_.
  struct KeyState {
    FakeApi api;
    std::string label;
    Limit requests;
    Limit input_tokens;   // Anthropic ITPM
    Limit output_tokens;  // Anthropic OTPM
    Limit tokens;         // OpenAI TPM
    FakeProviderStats::Counts counts;
  };

  // One charge of an all-or-nothing admission.
  struct Charge {
    const Limit* limit;
    uint64_t n;
    const char* what;  // "requests", "input tokens", ...
  };

  // Why admission failed: the charge refused, and the real time until it
  // would fit (nullopt when it never can).
  struct Refusal {
    const Charge* charge;
    std::optional<absl::Duration> wait;
  };

  enum class Fault {
    kNone,
    kOverloaded,
    kServerError,
    kQuota,
    kReset,
    kTruncated,
    kMalformed,
    kSlow
  };

  // What one API exchange came to know, for the headers and the counters.
  struct Exchange {
    FakeApi api;
    std::string request_id;
    KeyState* key = nullptr;
  };

  // Routing.
  void ServeMessages(const httplib::Request& req, httplib::Response& res);
  void ServeCountTokens(const httplib::Request& req, httplib::Response& res);
  void ServeChatCompletions(const httplib::Request& req, httplib::Response& res);
  void ServeStats(const httplib::Request& req, httplib::Response& res);
  httplib::Server::HandlerResponse ServeError(const httplib::Request& req, httplib::Response& res);

  // The two APIs, once the request id is set.
  void Messages(const httplib::Request& req, httplib::Response& res, Exchange& ex);
  void ChatCompletions(const httplib::Request& req, httplib::Response& res, Exchange& ex);

  // Errors in each provider's shape.
  void AnthropicError(httplib::Response& res, const Exchange& ex, int status,
                      absl::string_view type, absl::string_view message, Json details = nullptr);
  void OpenAiError(httplib::Response& res, int status, absl::string_view message,
                   absl::string_view type, absl::string_view param, absl::string_view code);
  void AnthropicBadRequest(httplib::Response& res, const Exchange& ex, const BadRequest& bad);
  void OpenAiBadRequest(httplib::Response& res, const BadRequest& bad);

  // Keys, limits, faults.
  bool KeyAllowed(const std::string& key) const;
  KeyState* FindOrAddKey(FakeApi api, const std::string& key);
  Limit MakeLimit(uint64_t per_minute) const;
  std::optional<Refusal> Admit(const std::vector<Charge>& charges, int64_t now_ns) const;
  absl::Duration TimeToFull(const Limit& limit, int64_t now_ns) const;
  Fault PreAdmissionFault(const Draws& d) const;
  Fault DeliveryFault(const Draws& d) const;
  uint64_t OutputTokens(const Draws& d, uint64_t max_tokens) const;
  absl::Duration Latency(const Draws& d) const;
  void AddAnthropicHeaders(const KeyState& key, httplib::Response& res) const;
  void AddOpenAiHeaders(const KeyState& key, httplib::Response& res) const;

  // Counting.
  void CountRequest(const httplib::Request& req);
  void CountFault(Exchange& ex);
  void CountRateLimited(Exchange& ex);
  void CountAdmitted(Exchange& ex, uint64_t input_tokens, uint64_t output_tokens);

  // Sends an admitted request's reply, damaged as `fault` says.
  void Deliver(const httplib::Request& req, httplib::Response& res, Fault fault, std::string body);

  std::string NextId(absl::string_view prefix);

  const FakeProviderOptions options_;
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
