// File: fake_provider.h
// -----------------------------------------------------------------------------
// A simulated AI model provider: a real HTTP server on a loopback port that
// answers like Anthropic's Messages API and OpenAI's Chat Completions API
// (shapes, headers, limits and errors as the providers document them), so that the sluice
// client, the batch runner, the demo and users' launch rehearsals have
// something faithful to hit without spending money or quota.
//
// Endpoints:
//   POST /v1/messages                Anthropic: x-api-key (or Authorization:
//                                    Bearer KEY), anthropic-version
//   POST /v1/messages/count_tokens   Anthropic: {"input_tokens": N}, unlimited
//   POST /v1/chat/completions        OpenAI: Authorization: Bearer KEY
//   POST /v1/responses               OpenAI Responses, minimal: text input
//                                    ("input", "instructions"), text output
//   POST /v1/embeddings              OpenAI Embeddings, minimal: usage and
//                                    placeholder vectors
//   GET  /stats                      counters per API key (never the key itself)
//                                    and per x-sluice-custom-id header value
// Anything else is a 404 in the shape of the provider the path belongs to.
//
// Streaming ("stream": true) answers an admitted request with
// content-type text/event-stream and the providers' events, each written and
// flushed on its own: Anthropic's message_start (the input usage),
// content_block_start, ping, content_block_delta (a few words of text
// each), content_block_stop, message_delta (stop reason, output usage) and
// message_stop; OpenAI's chat.completion.chunk data lines (the role, then the
// text, then the finish reason), one more with the usage when
// "stream_options": {"include_usage": true}, then "data: [DONE]". The text,
// the usage and the charges are those of the same request unstreamed; every
// error (401, 400, 429, ...) is the plain JSON reply.
//
// Token counting is deterministic, so that tests can check usage exactly:
//   input tokens  = ceil(B / 4) + 4 * M, where B is the total UTF-8 bytes of
//                   every message's text (a string content, or the "text" of
//                   each part of an array content) plus the system prompt
//                   (Anthropic's "system", a string or text blocks), and M is
//                   the number of messages;
//   output tokens = uniform in [1, max_tokens], drawn from a generator seeded
//                   with FakeProviderOptions::seed. The reply is that many
//                   words "tok" separated by spaces.
// Every request that passes authentication draws the same number of values,
// in a fixed order, so a given seed and request order always give the same
// outputs and the same injected faults.
//
// Limits are kept per API key and per provider as continuous token buckets,
// as the providers replenish continuously: each refills at its limit per
// minute and holds limit * bucket_span / 1 minute permits (at least 1), so
// one minute's worth by default and less for a shorter span, the way real
// providers enforce a per-minute limit at sub-minute granularity:
//   Anthropic: RPM (1 per request), ITPM (input tokens), OTPM (pre-charged
//              max_tokens, settled to the actual output);
//   OpenAI:    RPM, TPM (pre-charged max(max_tokens, input tokens), settled to
//              prompt + completion tokens), shared by its three endpoints;
//              an embeddings request generates nothing and is charged its
//              input tokens.
// The buckets are exact integer token buckets (tools/judge/exact_bucket.h)
// that share no code with sluice's own bucket, so that the provider is an
// independent judge of the clients it refuses. A request takes from all of
// its buckets or none; a refused request costs nothing. One that exceeds a
// bucket's capacity can never fit: a 429 with no retry-after. Rate-limit
// headers are on every response once the key is known: the limit per minute,
// what the bucket holds now, and when it is full again. With time_scale X
// every bucket refills X times faster and every time told to clients
// (retry-after, resets, "try again in") is real time, i.e. the simulated time
// divided by X.
//
// Faults are drawn per request after authentication and validation. Before
// the limits: overloaded (Anthropic 529 overloaded_error, OpenAI 503),
// server_error (500), insufficient_quota and spend_limit (both are "the money
// ran out": OpenAI's 429 insufficient_quota, Anthropic's 429 rate_limit_error
// with details.error_code "enforced_spend_limit_reached", neither with
// retry-after). After admission, so the request is charged and counted as
// the providers do but the answer is lost or damaged: reset (the connection
// is dropped without a response), truncated_body (Content-Length promises
// more than is sent, then the connection closes; a stream stops after half
// its events), malformed_json (a 200 whose body, or a stream's middle event,
// is not JSON) and slow_body (the body, or a stream's events, dribbles out in
// small pieces over about 400 ms). Latency (mean +- uniform jitter) is spent before answering an
// admitted request, as generation time.
//
// Inside, a server core (keys, limits, faults, counts, delivery) answers
// through one dialect per API (anthropic_dialect.h, openai_dialect.h), which
// render every body and header above and know nothing of the HTTP server.
//
// It serves any number of connections at once, like a real provider: every
// exchange is handled on the event loop of sluice's asynchronous HTTP server
// (sluice/http_server.h), latency is a timer and a slow body timed writes,
// so no connection, idle or waiting, holds a thread.
//
// Thread safety: a FakeProvider serves requests on its own loop thread(s);
// stats(), port(), base_url() and Stop() are safe to call from any thread
// (Stop and the destructor not from a handler, which they would wait for).
//
// Example:
//   sluice::FakeProviderOptions options;
//   options.rpm = 50;
//   auto provider = sluice::FakeProvider::Start(options);
//   if (!provider.ok()) return provider.status();
//   // Point any HTTP client at (*provider)->base_url() and POST /v1/messages.
//   sluice::FakeProviderStats stats = (*provider)->stats();

#ifndef SLUICE_TOOLS_FAKE_PROVIDER_FAKE_PROVIDER_H_
#define SLUICE_TOOLS_FAKE_PROVIDER_FAKE_PROVIDER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sluice {

// FakeProviderOptions
//
// Limits are per API key, per minute of simulated time. Fault rates are
// probabilities in [0, 1], drawn independently per request.
struct FakeProviderOptions {
  // Where to listen. Port 0 picks a free port (see FakeProvider::port()).
  std::string host = "127.0.0.1";
  int port = 0;

  // Requests per minute (both providers), Anthropic input and output tokens
  // per minute, OpenAI tokens per minute. Each must be at least 1 unless
  // `unlimited`.
  uint64_t rpm = 1000;
  uint64_t itpm = 100000;
  uint64_t otpm = 100000;
  uint64_t tpm = 100000;
  // No limits at all: nothing is refused and no rate-limit headers are sent.
  bool unlimited = false;

  // How much of its limit each bucket holds, in simulated time: capacity =
  // limit * bucket_span / 1 minute permits, at least 1 (60 rpm with a 1 s
  // span admits a burst of one). Must be in (0, 1 minute].
  absl::Duration bucket_span = absl::Minutes(1);

  // When non-empty, only these API keys authenticate (401 otherwise); when
  // empty, any non-empty key does.
  std::vector<std::string> api_keys;

  // Simulated minutes per real minute: 60 makes a per-minute bucket refill in
  // one second of real time. Must be positive and finite.
  double time_scale = 1.0;

  // Generation time of an admitted request: uniform in
  // [latency_mean - latency_jitter, latency_mean + latency_jitter], at least 0.
  absl::Duration latency_mean = absl::ZeroDuration();
  absl::Duration latency_jitter = absl::ZeroDuration();

  // The largest max_tokens accepted (400 above it, as for a model's output
  // limit), and what an OpenAI request without max_tokens or
  // max_completion_tokens may produce and is charged for.
  uint64_t max_output_tokens = 64000;
  uint64_t default_max_tokens = 256;

  double overloaded_rate = 0;
  double server_error_rate = 0;
  double insufficient_quota_rate = 0;
  double spend_limit_rate = 0;
  double malformed_json_rate = 0;
  double truncated_body_rate = 0;
  double slow_body_rate = 0;
  double reset_rate = 0;

  // Seeds the generator behind output lengths, faults and latency jitter.
  uint64_t seed = 1;

  // Event-loop threads. Connections are not bound to threads: one loop
  // serves thousands of them, and idle keep-alive connections cost none.
  int threads = 1;

  // Request bodies larger than this get a 413 request_too_large.
  size_t max_body_bytes = 4 << 20;
};

// The APIs the provider simulates.
enum class FakeApi { kAnthropic, kOpenAi };
const char* FakeApiName(FakeApi api);  // "anthropic", "openai"

// FakeProviderStats
//
// What the provider has seen since it started.
struct FakeProviderStats {
  struct Counts {
    uint64_t requests = 0;      // requests to the API endpoints
    uint64_t admitted = 0;      // passed the limits (and were charged)
    uint64_t rate_limited = 0;  // 429 rate_limit responses (not the quota faults)
    uint64_t input_tokens = 0;  // of admitted requests
    uint64_t output_tokens = 0;
    uint64_t faults = 0;  // injected faults of any kind
  };
  struct Key {
    FakeApi api;
    std::string label;  // FakeProvider::KeyLabel(api_key)
    Counts counts;
  };

  // Every request to an API endpoint (all but count_tokens), including those
  // refused before a key was known (so totals.requests may exceed the sum
  // over keys).
  Counts totals;
  std::vector<Key> keys;  // ordered by api, then label
  // Requests per value of their x-sluice-custom-id header (which `sluice
  // batch` sends), so that a test can count what was sent twice.
  std::map<std::string, uint64_t> custom_ids;

  // The counts of one key, zero when it has not been seen.
  Counts ForKey(FakeApi api, absl::string_view api_key) const;
};

// FakeProvider
//
// The running server. Destroying it stops it.
class FakeProvider {
 public:
  // Binds `options.host`:`options.port`, starts serving on its loop
  // thread(s) and returns once connections are accepted. InvalidArgument naming
  // the option when one is out of range; Unavailable when the address cannot
  // be bound.
  static absl::StatusOr<std::unique_ptr<FakeProvider>> Start(FakeProviderOptions options);

  FakeProvider(const FakeProvider&) = delete;
  FakeProvider& operator=(const FakeProvider&) = delete;
  ~FakeProvider();

  // The port it listens on, and "http://HOST:PORT".
  int port() const;
  std::string base_url() const;

  FakeProviderStats stats() const;

  // Stops accepting and closes idle connections at once, answers requests
  // still in generation (latency) with a 500 "shutting down", gives a slow
  // body up to a second to finish, then closes every connection and returns
  // once the loop threads have ended. Idempotent.
  void Stop();

  // The label /stats and FakeProviderStats show for an API key: "key_" and 8
  // hex digits of a 64-bit hash, stable across runs, enough to tell keys
  // apart without revealing them.
  static std::string KeyLabel(absl::string_view api_key);

 private:
  class Impl;
  explicit FakeProvider(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

// Formats a duration the way Go's time.Duration.String() does, which is what
// OpenAI's x-ratelimit-reset-* headers carry: "0s", "12ms", "1.5µs", "1s",
// "6m0s", "4m12.172s", "23h18m29.144s". Defined with the OpenAI dialect.
std::string FormatGoDuration(absl::Duration d);

}  // namespace sluice

#endif  // SLUICE_TOOLS_FAKE_PROVIDER_FAKE_PROVIDER_H_
