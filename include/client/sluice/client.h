// File: client.h
// -----------------------------------------------------------------------------
// Calls to Anthropic Messages and OpenAI Chat Completions (or any of their
// endpoints), every one of them throttled by a Policy: reserve the request's
// permits, call, settle with the usage the provider reported, and feed its
// rate-limit headers back into the shared buckets.
//
//   * Many requests in flight from one thread: a scheduler holds the requests
//     waiting for their start time (arrival, reserved start, retry delay) and
//     hands them to a transport (transport.h: libcurl multi + epoll) when
//     due; nothing waits in a thread of its own.
//   * Retries (provider.h's DecideRetry): full jitter no shorter than the
//     official SDKs', retry-after honored up to a cap, never retrying what
//     cannot succeed (quota, spend limit, too large, 4xx). Each attempt pays
//     the buckets again: the provider counts failed requests too.
//   * Feedback: when a response says fewer requests or tokens remain than the
//     local bucket holds, the bucket is clamped down; a quota 429 holds the
//     provider's buckets until its retry-after, for every process sharing the
//     segment. A 529/503 (provider overload) backs off the request only.
//   * Two ways to drive it: Run (a batch pulled from a function, returns when
//     done) and Call (one request); or Serve, a long-lived loop on a thread
//     of its own, into which any thread Submits requests and Cancels them.
//   * Credentials per request or per client: a request may carry its own key
//     or credential header (a proxy forwarding its callers' keys); without
//     one it uses the client's.
//   * Streaming: a request with on_chunk set gets its successful response's
//     body piece by piece as it arrives (server-sent events pass through).
//   * Secrets: an API key goes into one request header and nowhere else — not
//     into errors, logs, results or files.
//   * TLS verification on; connect and total timeouts; a cap on the response
//     size kept in memory; connections reused across requests.
//
// Thread safety: Run, Call and Serve drive the client's one loop: call one of
// them at a time, from one thread. Submit, Cancel and Stop are safe from any
// thread, also while the loop runs. Callbacks (done, on_start, on_response,
// on_chunk) run on the loop's thread.
//
// Example:
//   sluice::ClientOptions options;
//   options.provider = sluice::Provider::kAnthropic;
//   auto client = sluice::Client::Create(options, policy.get());
//   sluice::CallResult r = (*client)->Call(sluice::CallRequest::Simple(
//       "claude-sonnet-4", "Say hi", /*max_tokens=*/64));
//   if (r.status.ok()) std::cout << r.text;
//
// Example (a service):
//   std::thread loop([&] { client->Serve(); });
//   sluice::Client::Handle h = client->Submit(request, [](sluice::CallResult r) { ... });
//   client->Cancel(h);  // the caller went away
//   client->Stop();
//   loop.join();

#ifndef SLUICE_CLIENT_H_
#define SLUICE_CLIENT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "sluice/clock.h"
#include "sluice/policy.h"
#include "sluice/provider.h"
#include "sluice/transport.h"

namespace sluice {

// The header `sluice batch` sends with each request, naming its input line's
// custom_id: providers ignore it; the simulated provider counts requests by
// it, so tests can tell what was sent twice.
inline constexpr char kCustomIdHeader[] = "x-sluice-custom-id";

struct ClientOptions {
  Provider provider = Provider::kAnthropic;
  // Without a trailing slash; empty: the provider's public API. Tests and
  // demos point it at the simulated provider on 127.0.0.1.
  std::string base_url;
  // Empty: ANTHROPIC_API_KEY or OPENAI_API_KEY from the environment, read
  // once by Create (unless key_from_environment is false). Requests may
  // bring their own (CallRequest::api_key).
  std::string api_key;
  // false: never read a key from the environment (a proxy, whose requests
  // must each bring their caller's key and never borrow the proxy's).
  bool key_from_environment = true;
  // With no key in the options nor the environment: false (the default),
  // Create succeeds and each request must bring its own credentials
  // (CallRequest::api_key, a proxy forwarding its callers' keys), or fails
  // before it is sent, naming the variable; true, Create fails (for callers
  // whose every request needs the client's key, such as a batch).
  bool require_api_key = false;
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
  // The most of one response kept in memory; a longer one fails (a streamed
  // one is passed on whole and only its first bytes are kept).
  size_t max_response_bytes = 16 << 20;
  // Connections open at once (CURLMOPT_MAX_TOTAL_CONNECTIONS); transfers
  // beyond it queue inside libcurl. 0: no cap, a connection per request in
  // flight, as HTTP/1.1 needs when calls last seconds. Cap it below what the
  // server can serve at once.
  int max_connections = 0;
  RetryOptions retry;
  // Feed rate-limit headers back into the provider buckets: clamp to what
  // remains, hold on a quota 429, and (with learn_provider_rate) lower a
  // bucket configured above the limit the provider's headers state for the
  // key (its `*-limit` headers: the real tier, whatever the config says).
  bool header_feedback = true;
  bool learn_provider_rate = true;
  // The cold start (with header_feedback): until the provider's rate-limit
  // headers have been seen for a route's provider buckets (per account), one
  // request at a time goes to them (the first alone; the next when its
  // response comes back, or when it fails without one, as the next probe);
  // every response's `*-remaining` then sizes their burst, never above what
  // the provider's own bucket holds (Policy::LearnProviderBurst), kept in the
  // store for every process. A response without rate-limit headers ends
  // the cold start as it is. false: send as the configuration says from the
  // first request. (With learn_provider_rate, whatever this says, a provider
  // missing from the limits file gets its buckets from the first response's
  // `*-limit` headers, Policy::LearnProviderLimits, their burst sized by its
  // `*-remaining` when this is true; the requests sent before that response
  // went unthrottled by the provider's limits.)
  bool cold_start = true;
  // Simulated minutes per real minute at the provider: 1 for the real APIs;
  // the simulated provider's --time-scale for a rehearsal, whose limit
  // headers count per simulated minute.
  double provider_time_scale = 1.0;
  uint64_t seed = 0;  // for retry jitter; 0: random
  // Provider accounts (Policy::Resolve): true, a request with an empty
  // CallRequest::account draws from (and feeds back into) the provider
  // buckets of the account its credential names: the first 16 hex digits of
  // KeyFingerprint of the key it is sent with (its api_key, else the
  // credential among its headers: x-api-key, or the token of an
  // "authorization: Bearer" header, else the client's key). A provider meters
  // each key on its own, so one key's 429s never slow another's requests.
  // false: every request without an account shares the provider's buckets.
  bool account_per_key = false;
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
  // Extra request headers (name, value), sent with this request only. One
  // named like a header the client sends itself (content-type,
  // anthropic-version, or a credential: x-api-key or authorization) replaces
  // the client's. REQUIRES: no CR or LF in either.
  std::vector<std::pair<std::string, std::string>> headers;
  // The endpoint under the base URL ("/v1/embeddings"); empty: the
  // provider's Messages or Chat Completions endpoint.
  std::string path;
  // This request's API key; empty: a credential header among `headers`, or
  // the client's key.
  std::string api_key;
  // Streaming: when on_chunk is set, a successful (2xx) response is passed
  // on as it arrives: on_response once with its status and headers, then
  // on_chunk with each piece of the body. Once a piece went out the request
  // is never retried. Error responses are not streamed: they are retried or
  // end in the CallResult.
  //
  // Usage is read from the response all the same, and the permit settled
  // with it: from a server-sent-events stream (content-type
  // text/event-stream) its usage events (Anthropic's message_start and
  // message_delta, OpenAI's final chunk with stream_options.include_usage;
  // without them the estimate stays charged); from any other body (a whole
  // JSON reply passed on piece by piece), the body as kept, up to
  // max_response_bytes.
  std::function<void(int http_status, const Headers& headers)> on_response;
  std::function<void(absl::string_view chunk)> on_chunk;

  // Non-empty: these exact bytes are the body sent (a proxy forwards its
  // caller's untouched), instead of body.dump(). `body` is still what the
  // estimate, model and max_tokens are read from.
  std::string raw_body;
  // The HTTP method; empty: POST. GET and HEAD are sent without a body.
  std::string method;
  // false: no reservation, no permit and no header feedback: the request is
  // only sent when due (a proxy's pass-through paths, count_tokens). Its
  // retries follow ClientOptions::retry as any request's.
  bool throttled = true;
  // How long this request may wait in the throttle (a concurrency cap's lease
  // included) on each attempt; nullopt: ClientOptions::throttle_timeout.
  std::optional<absl::Duration> throttle_timeout;
  // Runs once, on the loop's thread, when the request's first attempt is
  // handed to the transport (its permits granted and its start time come);
  // never for a request that does not start (cancelled while waiting, a
  // throttle timeout, one that can never fit, one that cannot be sent).
  std::function<void()> on_start;
  // The provider account whose provider buckets this request draws from and
  // feeds back into (Policy::Resolve; 1 to 32 characters of [0-9a-z]).
  // Empty: the one its key names with ClientOptions::account_per_key, else
  // none (the provider's shared buckets).
  std::string account;

  // {"model", "max_tokens", "messages": [{"role": "user", "content": prompt}]}.
  static CallRequest Simple(absl::string_view model, absl::string_view prompt, uint64_t max_tokens);
};

struct CallResult {
  // OK, or the final error: the provider's (its class and type in the
  // message, HTTP status and request-id), DeadlineExceeded for a throttle
  // timeout (naming the bucket), OutOfRange for a request that can never fit,
  // InvalidArgument for a request that cannot be sent (no API key, a bad
  // path), Cancelled for one cancelled or stopped.
  absl::Status status;
  Classification error;     // the last attempt's classification
  std::string text;         // the reply's text
  nlohmann::json response;  // the provider's whole response (success only)
  // The last response's headers, and its body when it was an error (what a
  // proxy passes on).
  Headers headers;
  std::string error_body;
  Usage usage;
  int attempts = 0;
  int rate_limited = 0;          // attempts the provider answered 429 (quota)
  absl::Duration throttle_wait;  // time spent waiting for permits, all attempts
  std::string request_id;
  int http_status = 0;
};

class Client {
 public:
  // Names a submitted request, for Cancel.
  using Handle = uint64_t;

  // `policy` may be null for unthrottled calls (the demo's baseline).
  // InvalidArgument when the base URL is not http(s), or when no API key is
  // set and options.require_api_key.
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientOptions options, Policy* policy);

  // The same over another transport (a scripted one, in tests), on `clock`
  // when there is no policy (the policy's store's clock otherwise).
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientOptions options, Policy* policy,
                                                        std::unique_ptr<Transport> transport,
                                                        Clock clock);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Runs requests pulled from `next` (false: no more) with at most
  // `max_in_flight` at once (sent, or waiting for permits or a retry), calling
  // `done(index, result)` on this thread as each finishes (index = order
  // pulled). Requests reserve their permits in the order they became ready
  // to start. Returns when all are done.
  void Run(const std::function<bool(CallRequest*)>& next, int max_in_flight,
           const std::function<void(size_t, CallResult)>& done);

  // One request, to completion.
  CallResult Call(const CallRequest& request);

  // The long-lived loop: runs submitted requests as they come (no cap on
  // how many at once beyond the policy's and max_connections) until Stop.
  // Requests still waiting or in flight then end Cancelled.
  void Serve();

  // Queues `request` for the loop; `done` runs on the loop's thread when it
  // finishes: exactly once, Cancelled if cancelled or stopped. A request
  // submitted while no loop runs waits for the next Serve (or Run, which
  // then waits for it too); one still queued when the Client is destroyed
  // is dropped without its done. Thread-safe.
  Handle Submit(CallRequest request, std::function<void(CallResult)> done);

  // Ends a submitted request: one waiting gives back what it reserved; one
  // in flight is abandoned (what it reserved stays charged as a failed
  // attempt: the provider saw it). Its done gets Cancelled. A finished or
  // unknown handle is ignored. Thread-safe.
  void Cancel(Handle handle);

  // Ends a submitted request only if its first attempt has not been sent
  // yet: it gives back what it reserved and its done gets Cancelled. One
  // already sent (or finished, or unknown) is left alone. Thread-safe. (A
  // queue in front of the client takes back a reservation to make room for a
  // more urgent request, without ever abandoning one the provider has seen.)
  void Withdraw(Handle handle);

  // Makes Serve return (soon, from any thread). Thread-safe.
  void Stop();

 private:
  class Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice

#endif  // SLUICE_CLIENT_H_
