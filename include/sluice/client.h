// File: client.h
// -----------------------------------------------------------------------------
// Calls to Anthropic Messages and OpenAI Chat Completions over libcurl, every
// one of them throttled by a Policy: reserve the request's permits, call,
// settle with the usage the provider reported, and feed its rate-limit
// headers back into the shared buckets.
//
//   * Many requests in flight from one thread: a libcurl multi loop; each
//     request waits for its reserved start time in the loop, not in a thread.
//   * Retries (provider.h's DecideRetry): full jitter no shorter than the
//     official SDKs', retry-after honored up to a cap, never retrying what
//     cannot succeed (quota, spend limit, too large, 4xx). Each attempt pays
//     the buckets again: the provider counts failed requests too.
//   * Feedback: when a response says fewer requests or tokens remain than the
//     local bucket holds, the bucket is clamped down; a quota 429 holds the
//     provider's buckets until its retry-after, for every process sharing the
//     segment. A 529/503 (provider overload) backs off the request only.
//   * Secrets: the API key goes into one request header and nowhere else — not
//     into errors, logs, results or files.
//   * TLS verification on; connect and total timeouts; a cap on response size;
//     connections reused across requests.
//
// Thread safety: a Client may be used by one thread at a time (its Run loop
// owns the transfers); use one Client per thread.
//
// Example:
//   sluice::ClientOptions options;
//   options.provider = sluice::Provider::kAnthropic;
//   auto client = sluice::Client::Create(options, policy.get());
//   sluice::CallResult r = (*client)->Call(sluice::CallRequest::Simple(
//       "claude-sonnet-4", "Say hi", /*max_tokens=*/64));
//   if (r.status.ok()) std::cout << r.text;

#ifndef SLUICE_CLIENT_H_
#define SLUICE_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "sluice/policy.h"
#include "sluice/provider.h"

namespace sluice {

class ReleaseWatcher;

// The header `sluice batch` sends with each request, naming its input line's
// custom_id: providers ignore it; the simulated provider counts requests by
// it, so tests can tell what was sent twice.
inline constexpr char kCustomIdHeader[] = "x-sluice-custom-id";

struct ClientOptions {
  Provider provider = Provider::kAnthropic;
  // Without a trailing slash; empty: the provider's public API. Tests and
  // demos point it at the simulated provider on 127.0.0.1.
  std::string base_url;
  // Empty: ANTHROPIC_API_KEY or OPENAI_API_KEY from the environment.
  std::string api_key;
  std::string anthropic_version = "2023-06-01";
  // The scope requests are charged to (limits.h).
  std::string scope = "global";
  // How long one attempt may wait in the throttle; past that it fails at once
  // with DeadlineExceeded naming the bottleneck bucket. A full concurrency
  // cap makes a request wait too, up to this long, for a lease to come back
  // from any process on the host (a dead holder's is taken back within a
  // fraction of a second).
  absl::Duration throttle_timeout = absl::Seconds(60);
  absl::Duration connect_timeout = absl::Seconds(10);
  absl::Duration request_timeout = absl::Minutes(10);  // one attempt, end to end
  size_t max_response_bytes = 16 << 20;
  // Connections open at once (CURLMOPT_MAX_TOTAL_CONNECTIONS); transfers
  // beyond it queue inside libcurl. 0: no cap, a connection per request in
  // flight, as HTTP/1.1 needs when calls last seconds. Cap it below what the
  // server can serve at once (the simulated provider: a thread each).
  int max_connections = 0;
  RetryOptions retry;
  // Feed rate-limit headers back into the provider buckets: clamp to what
  // remains, hold on a quota 429, and (with learn_provider_rate) lower a
  // bucket configured above the limit the provider's headers state for the
  // key (its `*-limit` headers: the real tier, whatever the config says).
  bool header_feedback = true;
  bool learn_provider_rate = true;
  // Simulated minutes per real minute at the provider: 1 for the real APIs;
  // the simulated provider's --time_scale for a rehearsal, whose limit
  // headers count per simulated minute.
  double provider_time_scale = 1.0;
  uint64_t seed = 0;  // for retry jitter; 0: random
};

// One call: a provider-shaped JSON body (Anthropic Messages or OpenAI Chat
// Completions), passed through as it is.
struct CallRequest {
  nlohmann::json body;
  std::string scope;  // empty: ClientOptions::scope
  // Do not start (nor reserve permits) before this time on the Client's clock
  // (the policy store's; Clock::MonotonicNanos() without a policy): a request
  // that "arrives" later, for open-loop load such as the demo's. 0: at once.
  int64_t not_before_ns = 0;
  // Extra request headers (name, value), sent with this request only, after
  // the client's own. REQUIRES: no CR or LF in either.
  std::vector<std::pair<std::string, std::string>> headers;

  // {"model", "max_tokens", "messages": [{"role": "user", "content": prompt}]}.
  static CallRequest Simple(absl::string_view model, absl::string_view prompt, uint64_t max_tokens);
};

struct CallResult {
  // OK, or the final error: the provider's (its class and type in the
  // message, HTTP status and request-id), DeadlineExceeded for a throttle
  // timeout (naming the bucket), OutOfRange for a request that can never fit.
  absl::Status status;
  Classification error;     // the last attempt's classification
  std::string text;         // the reply's text
  nlohmann::json response;  // the provider's whole response (success only)
  Usage usage;
  int attempts = 0;
  int rate_limited = 0;          // attempts the provider answered 429 (quota)
  absl::Duration throttle_wait;  // time spent waiting for permits, all attempts
  std::string request_id;
  int http_status = 0;
};

class Client {
 public:
  // `policy` may be null for unthrottled calls (the demo's baseline).
  // InvalidArgument when no API key is set or the base URL is not http(s).
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientOptions options, Policy* policy);
  ~Client();

  // Runs requests pulled from `next` (false: no more) with at most
  // `max_in_flight` at once (sent, or waiting for permits or a retry), calling
  // `done(index, result)` on this thread as each finishes (index = order
  // pulled). Requests reserve their permits in the order they became ready
  // to start. Returns when all are done.
  void Run(const std::function<bool(CallRequest*)>& next, int max_in_flight,
           const std::function<void(size_t, CallResult)>& done);

  // One request, to completion.
  CallResult Call(const CallRequest& request);

  // Implementation detail: one request in progress (libcurl's callbacks
  // reach it).
  struct Job;

 private:
  explicit Client(ClientOptions options, Policy* policy);
  void StartTransfer(Job& job);
  class Queue;
  void Finish(std::unique_ptr<Job> job, int curl_code, Queue& waiting,
              const std::function<void(size_t, CallResult)>& done);
  void Feedback(const Job& job, const RateLimitInfo& info, const Classification& c);
  // Points the release watcher at the caps blocked jobs wait for.
  absl::Status WatchReleases(const Queue& waiting);
  int64_t Now() const;  // the policy store's clock (the monotonic clock without one)
  // libcurl's socket and timer callbacks (CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION).
  static int OnSocket(void* easy, int fd, int what, void* client, void* socket_data);
  static int OnTimer(void* multi, long timeout_ms, void* client);

  ClientOptions options_;
  Policy* policy_;
  void* multi_ = nullptr;          // CURLM*, driven by curl_multi_socket_action
  int epoll_fd_ = -1;              // the sockets libcurl asked to watch
  int64_t curl_deadline_ns_ = -1;  // when libcurl's timer expires (-1: none), monotonic
  const std::string url_;          // base URL + the provider endpoint
  void* headers_out_ = nullptr;    // curl_slist*: the request headers, the key among them
  int in_flight_ = 0;              // transfers running in Run
  std::vector<void*> idle_easy_;   // CURL* handles kept for connection reuse
  CharacterEstimator estimator_;
  absl::BitGen rng_;
  // Hears of leases returned anywhere on the host while requests wait on a
  // full concurrency cap; made the first time one does.
  std::unique_ptr<ReleaseWatcher> watcher_;
  std::vector<std::string> watched_caps_;
};

}  // namespace sluice

#endif  // SLUICE_CLIENT_H_
