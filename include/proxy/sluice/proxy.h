// File: proxy.h
// -----------------------------------------------------------------------------
// A local HTTP proxy in front of Anthropic and OpenAI, so that programs using
// the providers' official SDKs, in any language, are throttled host-wide with
// no code change: they point ANTHROPIC_BASE_URL at http://HOST:PORT and
// OPENAI_BASE_URL at http://HOST:PORT/v1, and every request goes through the
// same shared limits, scopes, budgets and header feedback as the C++ client.
//
//   * Routes by path on one port: POST /v1/messages to Anthropic; POST
//     /v1/chat/completions, /v1/responses and /v1/embeddings to OpenAI; all
//     throttled. /v1/messages/count_tokens goes to Anthropic unthrottled by
//     the Messages buckets (its own requests-per-minute bucket when the
//     limits file's [proxy] table gives one). Any other path passes through
//     unthrottled: to Anthropic when the request carries x-api-key or
//     anthropic-version, to OpenAI otherwise.
//   * Credentials pass through untouched (x-api-key, Authorization: Bearer)
//     and appear in no log, metric or error. Requests carrying different keys
//     draw from different provider buckets (named by a hash of the key);
//     scopes stay shared.
//   * The scope is the x-sluice-scope header, else the scope [proxy.keys]
//     maps the key's SHA-256 to, else "global". The priority is the
//     x-sluice-priority header (high, normal, low), else the scope's priority
//     in the limits file, else normal. Both headers are removed before the
//     request is forwarded.
//   * Queueing instead of 429s: a request waits in the proxy, in priority
//     order and FIFO within a priority, and is reserved through the policy
//     only when its turn comes, so that a high request never waits behind a
//     low one's reservation. One that cannot be served within queue_timeout,
//     or that finds max_queue requests waiting, gets the provider's own 429
//     (its error body, a retry-after). One whose client disconnects gives its
//     reservation back.
//   * Responses pass through as they arrive (streamed ones event by event);
//     each request is settled with the usage its response reports. Upstream
//     errors pass through with their headers fed back into the buckets; the
//     proxy retries only when the limits file says so ([proxy]
//     retry_upstream), so no request is charged twice unseen.
//   * Bad input: a body that is not JSON gets a 400 in the provider's error
//     shape and is never forwarded; a body over max_body_bytes gets a 413;
//     an unreachable upstream a 502.
//   * GET /metrics: the segment's buckets and the proxy's counters, as
//     Prometheus text.
//
// Thread safety: a Proxy serves on threads of its own; every method is safe
// to call from any thread.
//
// Example:
//   sluice::ProxyOptions options;
//   options.port = 8787;
//   auto proxy = sluice::Proxy::Start(options, *config, store.get());
//   ...
//   (*proxy)->Reload(*new_config);   // on SIGHUP
//   (*proxy)->Shutdown(absl::Seconds(30));

#ifndef SLUICE_PROXY_H_
#define SLUICE_PROXY_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/limits.h"
#include "sluice/store.h"

namespace sluice {

struct ProxyOptions {
  std::string host = "127.0.0.1";
  int port = 8787;  // 0: a free port (Proxy::port())
  // Upstreams, without a trailing slash.
  std::string anthropic_url = "https://api.anthropic.com";
  std::string openai_url = "https://api.openai.com";
  // The longest a request waits in the proxy (its queue and the throttle)
  // before it is answered 429.
  absl::Duration queue_timeout = absl::Seconds(120);
  // Requests waiting at once, all priorities; one more is answered 429.
  size_t max_queue = 10000;
  size_t max_body_bytes = 32 << 20;
  // One line per finished request; empty: none. JSON lines when json_log.
  std::function<void(absl::string_view line)> log;
  bool json_log = false;
  // Simulated minutes per real minute at the upstream (1 for the real APIs;
  // the simulated provider's --time-scale for a rehearsal).
  double provider_time_scale = 1.0;
  absl::Duration connect_timeout = absl::Seconds(10);
  absl::Duration request_timeout = absl::Minutes(10);
  // The segment the stats for /metrics are read from ("" : none; the proxy's
  // own counters are still shown).
  std::string segment;
};

// What the proxy has done since it started.
struct ProxyStats {
  uint64_t requests = 0;    // every request received
  uint64_t throttled = 0;   // of those, routed through the queue
  uint64_t queued_now = 0;  // waiting in the queue or the throttle now
  uint64_t rejected_queue_full = 0;
  uint64_t rejected_timeout = 0;       // answered 429 after queue_timeout
  uint64_t client_gone = 0;            // clients that went away before their answer
  uint64_t bad_requests = 0;           // 400 and 413 answered by the proxy
  uint64_t upstream_errors = 0;        // 502/504 answered by the proxy
  uint64_t upstream_rate_limited = 0;  // 429s the providers sent
  uint64_t reloads = 0;
};

class Proxy {
 public:
  // Opens the limits of `config` in `store` and starts serving. Errors: the
  // policy's (a bad config for this store), InvalidArgument for an option out
  // of range or an upstream URL that is not http(s), Unavailable when the
  // address cannot be bound. REQUIRES: `store` outlives the Proxy.
  static absl::StatusOr<std::unique_ptr<Proxy>> Start(ProxyOptions options,
                                                      const LimitsConfig& config, Store* store);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  int port() const;
  std::string base_url() const;  // "http://HOST:PORT"

  // Serves new requests under `config` from now on, and those still waiting
  // too (the one being reserved under the old limits gives its reservation
  // back and is reserved again); requests already forwarded finish under the
  // old one. On an error (a config the store refuses) nothing changes.
  absl::Status Reload(const LimitsConfig& config);

  // Stops accepting connections, lets requests in progress (queued ones too)
  // finish until `deadline`, then cuts the rest and returns. Idempotent.
  void Shutdown(absl::Duration deadline);

  ProxyStats stats() const;

 private:
  class Impl;
  explicit Proxy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice

#endif  // SLUICE_PROXY_H_
