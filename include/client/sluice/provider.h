// File: provider.h
// -----------------------------------------------------------------------------
// What an AI provider's HTTP response means for the caller, decided without a
// network: the rate-limit headers (how much is left, when it refills), how
// long the server asked us to wait, what kind of failure a response is and
// whether retrying it can help, and how long to wait before the next attempt.
// The transport (sluice/client.h) feeds responses in; everything here is a
// pure function of its arguments, so every rule is tested exhaustively.
//
// The rules are the providers' own, from their documentation and official SDKs:
//   * Anthropic sends `anthropic-ratelimit-<dimension>-{limit,remaining,reset}`
//     with `-reset` an RFC 3339 timestamp; OpenAI sends
//     `x-ratelimit-{limit,remaining,reset}-<dimension>` with `-reset` a Go
//     duration ("6m0s"). Values that are absent, garbage or `-1` (some
//     gateways) are unknown, never an error.
//   * Retried: 408, 409, 429 (your per-minute quota), 5xx, 529 (overload) and
//     connection failures. Never retried: 400, 401, 402, 403, 404, 413, an
//     exhausted quota or spend limit (which only a new month or a payment
//     fixes), and a request too large to ever fit. The official SDKs retry
//     every 429, quota cases included; sluice does not.
//   * One retry layer with a per-request attempt budget: the server's
//     retry-after is honored exactly up to a cap and beyond it the request
//     fails fast; otherwise the wait is full-jitter exponential backoff that is
//     never shorter than the official SDKs' own.
//
// Thread safety: every function here is a pure function of its arguments and
// may be called from any number of threads. Headers is a value type: const
// methods may be called concurrently, a mutating one needs exclusive access.
// DecideRetry uses the generator it is given; sharing one generator between
// threads is the caller's to synchronize.
//
// Example:
//   sluice::Classification failure =
//       sluice::ClassifyResponse(sluice::Provider::kAnthropic, status, body, headers);
//   if (failure.error_class == sluice::ErrorClass::kNone) return Parse(body);
//   sluice::RetryDecision next = sluice::DecideRetry(
//       options, attempt, failure, sluice::ParseRetryAfter(headers, absl::Now()), bitgen);
//   if (!next.retry) return absl::UnavailableError(next.reason);
//   absl::SleepFor(next.delay);

#ifndef SLUICE_PROVIDER_H_
#define SLUICE_PROVIDER_H_

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/random/bit_gen_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "sluice/policy.h"

namespace sluice {

// Provider
//
// The model API a response came from. Header names, error bodies and reset
// formats differ between them.
enum class Provider : uint8_t { kAnthropic, kOpenAi };

// ParseProvider()
//
// "anthropic" or "openai", as in the limits file. Returns InvalidArgument
// naming the text for anything else (the match is exact: "OpenAI" is refused,
// like any other unknown provider name in the limits file).
absl::StatusOr<Provider> ParseProvider(absl::string_view name);

// ProviderName()
//
// The name ParseProvider() accepts: "anthropic" or "openai".
absl::string_view ProviderName(Provider provider);

// KeyFingerprint()
//
// The lowercase hex SHA-256 of an API key (64 digits): a name for the key
// that can be logged, configured or used in a bucket key without revealing
// it. A proxy maps keys to scopes by it, and the client names a key's
// provider account by its first 16 digits (ClientOptions::account_per_key).
std::string KeyFingerprint(absl::string_view api_key);

// Headers
//
// An HTTP response's header fields. Names are case-insensitive in HTTP, so
// they are stored lower-cased and Find() matches any spelling; values are kept
// without the optional whitespace around them. A field that appears twice
// keeps its last value: none of the fields read here may legitimately repeat.
//
// Example:
//   sluice::Headers headers{{"Retry-After", "2"}, {"request-id", "req_1"}};
//   const std::string* retry_after = headers.Find("retry-after");  // "2"
class Headers {
 public:
  Headers() = default;
  Headers(std::initializer_list<std::pair<absl::string_view, absl::string_view>> fields);

  // Sets field `name` (any case) to `value`, replacing an earlier value.
  // Leading and trailing spaces, tabs, CR and LF are dropped from the value.
  void Set(absl::string_view name, absl::string_view value);
  // Removes field `name` (any case), if present.
  void Erase(absl::string_view name);

  // Adds one line as libcurl's header callback delivers it ("Name: value\r\n"
  // with the line ending). A status line ("HTTP/1.1 200 OK") starts a new
  // response and clears what an earlier one (a 100 Continue, a redirect)
  // left. Returns true when the line was a header field and was stored; false
  // for status lines, the blank line ending the headers, and lines that are
  // not "name: value" (a missing colon, an empty name, whitespace in the name).
  bool AddLine(absl::string_view line);

  // The value of field `name` (any case), or nullptr when it is absent. The
  // pointer is valid until the next mutation.
  const std::string* Find(absl::string_view name) const;

  void Clear() { fields_.clear(); }
  size_t size() const { return fields_.size(); }
  // Every (lower-cased name, value), in no particular order (a proxy passing
  // a response's fields on).
  auto begin() const { return fields_.begin(); }
  auto end() const { return fields_.end(); }
  bool empty() const { return fields_.empty(); }

 private:
  absl::flat_hash_map<std::string, std::string> fields_;  // lower-cased name -> value
};

// ParseGoDuration()
//
// Parses a duration in the syntax of Go's time.ParseDuration, which OpenAI's
// x-ratelimit-reset-* headers use: one or more decimal numbers, each with an
// optional fraction and a unit among "h", "m", "s", "ms", "us", "µs" (U+00B5),
// "μs" (U+03BC) and "ns" — "1s", "6m0s", "12ms", "4m12.172s", "23h18m29.144s",
// "1.5s", ".5s" — or a bare "0". Digits beyond the nanosecond are truncated.
//
// Unlike Go, a sign is refused: a time until reset is never negative.
// Returns InvalidArgument naming the text when it is empty, signed, has a
// number without a unit ("-1", "60"), an unknown unit ("1x", "1h-2m"), a
// misplaced dot ("1.2.3s", ".s"), or exceeds Go's range (about 292 years).
absl::StatusOr<absl::Duration> ParseGoDuration(absl::string_view text);

// ParseRfc3339()
//
// Parses an RFC 3339 timestamp as Anthropic's anthropic-ratelimit-*-reset
// headers send it: "2025-01-12T23:12:21Z", with an optional fraction of a
// second ("...21.25Z") and "Z" or a numeric offset ("+05:30"). Parsing is
// absl::ParseTime with absl::RFC3339_full, so its leniencies apply (single-
// digit fields, surrounding whitespace). Returns InvalidArgument naming the
// text for anything else, including a missing offset, an impossible date and
// Abseil's "infinite-future"/"infinite-past" spellings.
absl::StatusOr<absl::Time> ParseRfc3339(absl::string_view text);

// RateLimitInfo
//
// What a response's rate-limit headers said. Every field is optional:
// std::nullopt (or an empty request_id) means the header was absent, garbage
// or `-1` — unknown, never an error. Counts are in the dimension's unit
// (requests or tokens); Anthropic rounds token `remaining` values to the
// nearest thousand. Numbers from the network are clamped before anything
// computes with them: counts to [0, kMaxRateLimitCount], reset times to
// [0, kMaxResetWait]. (retry_after is ParseRetryAfter's, which may be
// infinite: see QuotaHold for the clamped wait.)
inline constexpr int64_t kMaxRateLimitCount = int64_t{1} << 48;
inline constexpr absl::Duration kMaxResetWait = absl::Hours(24 * 7);

struct RateLimitInfo {
  struct Dimension {
    std::optional<int64_t> limit;
    std::optional<int64_t> remaining;
    // Time until the dimension is fully replenished, relative to the `now`
    // given to ParseRateLimitHeaders(); zero when that moment has passed.
    std::optional<absl::Duration> reset_in;
  };
  Dimension requests;       // anthropic-ratelimit-requests-* / x-ratelimit-*-requests
  Dimension tokens;         // anthropic-ratelimit-tokens-* / x-ratelimit-*-tokens
  Dimension input_tokens;   // anthropic-ratelimit-input-tokens-* (Anthropic only)
  Dimension output_tokens;  // anthropic-ratelimit-output-tokens-* (Anthropic only)
  // ParseRetryAfter() of the same headers.
  std::optional<absl::Duration> retry_after;
  // x-should-retry: "true" or "false" (any case); the server's own verdict.
  std::optional<bool> should_retry;
  // The provider's id for the request, to quote in logs and support tickets:
  // request-id (Anthropic) or x-request-id (OpenAI); the other provider's
  // header name is accepted too, for gateways that rename it.
  std::string request_id;
};

// ParseRateLimitHeaders()
//
// Reads the rate-limit headers of `provider` from `headers`. `now` is the
// time the response arrived; Anthropic's absolute reset timestamps become
// durations relative to it. Never fails: what cannot be read is std::nullopt.
RateLimitInfo ParseRateLimitHeaders(Provider provider, const Headers& headers, absl::Time now);

struct RetryOptions;

// QuotaHold()
//
// How long a quota 429 holds the provider's buckets for every process on the
// host: the server's retry-after, else the requests dimension's reset time,
// else one second; never negative and never longer than
// options.max_retry_after (the longest a request would wait for one retry),
// whatever the server sent.
absl::Duration QuotaHold(const RateLimitInfo& info, const RetryOptions& options);

// ParseRetryAfter()
//
// How long the server asked the caller to wait, as the official SDKs read it:
//   * "retry-after-ms": milliseconds, possibly fractional ("1500", "644.5");
//   * otherwise "retry-after": seconds, possibly fractional ("2", "0.5"), or
//     an HTTP-date (IMF-fixdate "Wed, 21 Oct 2015 07:28:00 GMT", or the
//     obsolete RFC 850 and asctime forms HTTP recipients must accept),
//     relative to `now`; a date already past is zero.
// A retry-after-ms that cannot be read falls back to retry-after. Returns
// std::nullopt when neither is present or readable (garbage, a sign, an
// exponent). A number too large to count in int64_t nanoseconds (~292 years)
// is absl::InfiniteDuration(): the server asked for an enormous wait, which
// must fail fast rather than fall back to backoff.
std::optional<absl::Duration> ParseRetryAfter(const Headers& headers, absl::Time now);

// ErrorClass
//
// What kind of outcome a response (or a failure to get one) is. The class,
// not the status, decides what the rest of sluice does with it.
enum class ErrorClass : uint8_t {
  // A 2xx whose body is a JSON object with no error in it.
  kNone,
  // 429: your per-minute quota. Retry after the server's wait, and pause this
  // provider's buckets for every process on the host.
  kRateLimited,
  // 529 overloaded_error or 503: provider-wide load, not your quota. Back
  // off, but do not shrink the buckets' quota estimates.
  kOverloaded,
  // 500 api_error, 502, 504 timeout_error, any other 5xx.
  kServerError,
  // 408.
  kRequestTimeout,
  // 409.
  kConflict,
  // 400 invalid_request_error, and any other 4xx not listed here.
  kInvalidRequest,
  // 401 authentication_error.
  kAuthentication,
  // 402 billing_error.
  kBilling,
  // 403 permission_error.
  kPermission,
  // 404 not_found_error.
  kNotFound,
  // 413 request_too_large, and OpenAI's "Request too large ... Limit N,
  // Requested M" (sent as 429 or 400): the request can never fit.
  kRequestTooLarge,
  // insufficient_quota, credit_balance_exhausted, enforced_spend_limit_reached
  // (OpenAI's error.code or error.type; Anthropic's error.details.error_code
  // on a 429): only a payment or a new month helps.
  kQuotaExhausted,
  // A 2xx whose body is not a JSON object, or a status that is not a final
  // HTTP answer (1xx, 3xx, outside 100-599). The provider may have served and
  // billed the request, so it is not retried by default.
  kMalformedResponse,
  // No HTTP response: connection refused or reset, DNS, TLS, a timeout before
  // the response. See ClassifyTransportError().
  kConnection,
};

// ErrorClassName()
//
// The class in snake case for logs and metrics: "none", "rate_limited",
// "overloaded", "server_error", "request_timeout", "conflict",
// "invalid_request", "authentication", "billing", "permission", "not_found",
// "request_too_large", "quota_exhausted", "malformed_response", "connection".
absl::string_view ErrorClassName(ErrorClass error_class);

// Classification
//
// One attempt's outcome, as ClassifyResponse() or ClassifyTransportError()
// judged it.
struct Classification {
  ErrorClass error_class = ErrorClass::kNone;
  // Whether another attempt can succeed (DecideRetry() still applies the
  // attempt budget and the server's wait).
  bool retryable = false;
  // 0 when there was no HTTP response.
  int http_status = 0;
  // The provider's most specific machine-readable reason: Anthropic's
  // error.details.error_code, else error.type; OpenAI's error.code, else
  // error.type. Empty when the body had none.
  std::string provider_type;
  // The provider's error.message (cut to 1000 bytes), or for a body that is
  // not JSON a description quoting its first bytes, escaped. Never built from
  // request headers, so it never holds the API key.
  std::string message;
  // From the request-id / x-request-id header, else Anthropic's body field
  // "request_id". Empty when neither was present.
  std::string request_id;
};

// ClassifyResponse()
//
// Classifies an HTTP response from its status, body and headers:
//   * The status decides the class (see ErrorClass). The JSON error body
//     refines it, by machine-readable fields only — error.type, error.code,
//     error.details.error_code — never by matching message text, with one
//     documented exception: OpenAI gives "Request too large" no code of its
//     own (it comes as 429 rate_limit_exceeded or 400), so an OpenAI 4xx whose
//     error.message starts with "Request too large" is kRequestTooLarge.
//   * A quota code (insufficient_quota, credit_balance_exhausted,
//     enforced_spend_limit_reached) in any of those fields makes any error
//     status kQuotaExhausted. Anthropic's overloaded_error on any 5xx is
//     kOverloaded.
//   * A body that is not JSON (a proxy's HTML page, an empty or truncated
//     body) classifies by status alone.
//   * A 2xx is kNone when its body is a JSON object, kMalformedResponse when
//     not. A 2xx carrying an error object (an Anthropic streaming "error"
//     event after a 200, or OpenAI's streamed {"error": ...}) is classified by
//     that error's type: overloaded_error -> kOverloaded, rate_limit_error /
//     rate_limit_exceeded -> kRateLimited, a quota code -> kQuotaExhausted,
//     the 4xx types to their classes, anything else kServerError.
//   * x-should-retry: "true" / "false" overrides `retryable`, as the SDKs
//     let it, with one exception: it cannot make kQuotaExhausted or
//     kRequestTooLarge retryable. Those are facts about the account or the
//     request that no retry changes, and sluice would otherwise spin against
//     a spend cap or a request that never fits.
// Never fails: any status, body and headers yield a Classification.
Classification ClassifyResponse(Provider provider, int http_status, absl::string_view body,
                                const Headers& headers);

// Reply
//
// What a successful response body says: the reply's text and the usage to
// settle with.
struct Reply {
  std::string text;
  Usage usage;
};

// The most tokens a usage field is believed: larger counts are clamped to it,
// so that settling (sums, differences) never overflows.
inline constexpr uint64_t kMaxUsageTokens = uint64_t{1} << 40;

// ParseReply()
//
// Reads a 2xx body, already parsed as JSON, as the provider's reply: an
// Anthropic Message ({content: [{type: "text", text}], usage: {input_tokens,
// output_tokens, cache_creation_input_tokens, cache_read_input_tokens}}) or
// an OpenAI Chat Completion ({choices: [{message: {content}}], usage:
// {prompt_tokens, completion_tokens, prompt_tokens_details.cached_tokens}},
// mapped to Usage with cached tokens apart). Fields of the wrong type count
// as absent; token counts are clamped to kMaxUsageTokens. std::nullopt when
// the body is not that shape (no usage object; no content array or no
// choices). Never throws, whatever the JSON.
std::optional<Reply> ParseReply(Provider provider, const nlohmann::json& response);

// ClassifyTransportError()
//
// The Classification of an attempt that got no HTTP response (refused or
// reset connection, DNS or TLS failure, timeout): kConnection, retryable,
// http_status 0, `detail` (the transport's description, e.g. libcurl's error
// buffer) as the message. Retrying these is what both SDKs do.
Classification ClassifyTransportError(absl::string_view detail);

// RetryOptions
//
// The retry policy's parameters. Durations must be finite.
struct RetryOptions {
  // Attempts per request, the first included: 3 is 1 + 2 retries, as the
  // official SDKs. REQUIRES: >= 1.
  int max_attempts = 3;
  // Backoff after attempt n (0-based) lies in
  // [0.75 * min(base * 2^n, cap), min(cap, base * 2^(n+1))].
  // REQUIRES: 0 < base <= cap.
  absl::Duration base = absl::Milliseconds(500);
  absl::Duration cap = absl::Seconds(8);
  // A server wait (retry-after) longer than this is not slept through: the
  // request fails fast so the caller can requeue it. Anthropic's SDK caps at
  // 60 s, OpenAI's at 120 s. REQUIRES: >= 0.
  absl::Duration max_retry_after = absl::Seconds(60);
};

// ValidateRetryOptions()
//
// OK, or InvalidArgument naming the first field that breaks a REQUIRES above.
absl::Status ValidateRetryOptions(const RetryOptions& options);

// RetryDecision
//
// Whether to try again, after how long, and why, in words fit for a log line.
struct RetryDecision {
  bool retry = false;
  // Sleep this long before the next attempt; zero when not retrying.
  absl::Duration delay = absl::ZeroDuration();
  // e.g. "429 rate_limited: honoring retry-after 2s",
  // "not retryable: quota_exhausted (insufficient_quota)",
  // "attempt budget of 3 spent".
  std::string reason;
};

// DecideRetry()
//
// Decides what follows failed attempt number `attempt` (0-based: 0 is the
// first attempt) of one request, in this order:
//   1. a `failure` that is not retryable is not retried;
//   2. when attempt + 1 attempts have used up options.max_attempts, no retry;
//   3. a server wait (`retry_after`, from ParseRetryAfter()) with
//      0 < wait <= options.max_retry_after is honored exactly: it is what the
//      provider asked for. A longer wait fails fast (no retry, and the reason
//      says so) instead of holding a worker for it;
//   4. otherwise full-jitter exponential backoff with a floor: uniform over
//      whole nanoseconds in [floor, ceiling], where
//        floor   = 0.75 * min(base * 2^attempt, cap)  (the SDKs' shortest wait)
//        ceiling = max(floor, min(cap, base * 2^(attempt + 1))).
//      Full jitter spreads many clients' retries best; the floor keeps sluice
//      from ever retrying sooner than the official SDKs would.
// `rng` is the only source of randomness, so a seeded generator makes the
// decision reproducible. REQUIRES: ValidateRetryOptions(options).ok(),
// attempt >= 0; out-of-range values are clamped, never undefined behavior.
RetryDecision DecideRetry(const RetryOptions& options, int attempt, const Classification& failure,
                          std::optional<absl::Duration> retry_after, absl::BitGenRef rng);

}  // namespace sluice

#endif  // SLUICE_PROVIDER_H_
