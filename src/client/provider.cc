// The pure half of the provider client: reading rate-limit headers and
// retry-after, classifying responses, and the retry policy (sluice/provider.h).
//
// Everything read here comes from the network and is untrusted: numbers are
// parsed strictly and in checked integer arithmetic, JSON with nlohmann's
// non-throwing parse and accessors that check types first (json::value() and
// operator[] on a const object can throw or assert on unexpected shapes, so
// they are not used), and any text echoed into an error message is escaped and
// cut short.

#include "sluice/provider.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "absl/random/distributions.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace sluice {
namespace {

using Json = nlohmann::json;

// Longest provider message kept in a Classification: enough for any real
// one, small enough that a hostile body cannot flood a log line.
constexpr size_t kMaxMessageBytes = 1000;
// How much of a non-JSON body, or of a bad header value, is quoted.
constexpr size_t kExcerptBytes = 128;

constexpr int64_t kMaxNanos = std::numeric_limits<int64_t>::max();

// `text` escaped for a log line, cut to kExcerptBytes.
std::string Excerpt(absl::string_view text) {
  if (text.size() <= kExcerptBytes) return absl::CHexEscape(text);
  return absl::StrCat(absl::CHexEscape(text.substr(0, kExcerptBytes)), "...");
}

// `text` cut to at most `max_bytes` without splitting a UTF-8 sequence.
std::string Truncate(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  size_t end = max_bytes;
  // Back up over continuation bytes (10xxxxxx) to a sequence boundary.
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return absl::StrCat(text.substr(0, end), "...");
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// A non-negative decimal number "D*[.D*]" with at least one digit, kept
// exactly: whole part, and the fraction as numerator over a power of ten.
struct Decimal {
  uint64_t whole = 0;
  bool whole_overflow = false;  // the whole part alone exceeds int64_t
  uint64_t fraction = 0;
  uint64_t fraction_scale = 1;
};

// Fraction digits kept; later ones are below 1e-18 of the unit, under a
// nanosecond for every unit used here, and truncated as Go truncates them.
constexpr int kMaxFractionDigits = 18;

// Consumes a Decimal from the front of `*text`. Returns std::nullopt, leaving
// `*text` unspecified, when it does not start with one.
std::optional<Decimal> ConsumeDecimal(absl::string_view* text) {
  Decimal number;
  size_t i = 0;
  bool any_digit = false;
  for (; i < text->size() && IsDigit((*text)[i]); ++i) {
    any_digit = true;
    const uint64_t digit = static_cast<uint64_t>((*text)[i] - '0');
    if (number.whole > (static_cast<uint64_t>(kMaxNanos) - digit) / 10) {
      number.whole_overflow = true;  // keep consuming: the syntax is still checked
    } else {
      number.whole = number.whole * 10 + digit;
    }
  }
  if (i < text->size() && (*text)[i] == '.') {
    ++i;
    int kept = 0;
    for (; i < text->size() && IsDigit((*text)[i]); ++i) {
      any_digit = true;
      if (kept == kMaxFractionDigits) continue;
      number.fraction = number.fraction * 10 + static_cast<uint64_t>((*text)[i] - '0');
      number.fraction_scale *= 10;
      ++kept;
    }
  }
  if (!any_digit) return std::nullopt;
  text->remove_prefix(i);
  return number;
}

// `number` units of `unit_ns` nanoseconds each, truncated to whole
// nanoseconds; std::nullopt when that exceeds int64_t.
std::optional<int64_t> ToNanos(const Decimal& number, int64_t unit_ns) {
  if (number.whole_overflow) return std::nullopt;
  // whole < 2^63 and unit_ns <= 3.6e12, fraction < 1e18: both products fit.
  const unsigned __int128 unit = static_cast<unsigned __int128>(unit_ns);
  const unsigned __int128 total =
      number.whole * unit + number.fraction * unit / number.fraction_scale;
  if (total > static_cast<unsigned __int128>(kMaxNanos)) return std::nullopt;
  return static_cast<int64_t>(total);
}

// Nanoseconds per Go duration unit, or 0 for an unknown one.
int64_t GoUnitNanos(absl::string_view unit) {
  if (unit == "ns") return 1;
  // "us", MICRO SIGN (U+00B5) and GREEK SMALL LETTER MU (U+03BC), as Go.
  if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") return 1000;
  if (unit == "ms") return 1000 * 1000;
  if (unit == "s") return 1000 * 1000 * 1000;
  if (unit == "m") return int64_t{60} * 1000 * 1000 * 1000;
  if (unit == "h") return int64_t{3600} * 1000 * 1000 * 1000;
  return 0;
}

absl::Status GoDurationError(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid Go duration \"", Excerpt(text), "\": ", why));
}

// A whole string that is a Decimal, as a Duration of `unit_ns` each;
// InfiniteDuration() when too large for int64_t nanoseconds. std::nullopt for
// anything else (signs, exponents, spaces inside, trailing text).
std::optional<absl::Duration> ParseDecimalDuration(absl::string_view text, int64_t unit_ns) {
  absl::string_view rest = text;
  std::optional<Decimal> number = ConsumeDecimal(&rest);
  if (!number.has_value() || !rest.empty()) return std::nullopt;
  std::optional<int64_t> nanos = ToNanos(*number, unit_ns);
  if (!nanos.has_value()) return absl::InfiniteDuration();
  return absl::Nanoseconds(*nanos);
}

// A header count ("1000"): digits only, fitting int64_t. "-1", which some
// gateways send for "unknown", and anything else is std::nullopt.
std::optional<int64_t> ParseCount(const std::string* value) {
  if (value == nullptr || value->empty()) return std::nullopt;
  if (!std::all_of(value->begin(), value->end(), IsDigit)) return std::nullopt;
  // Digits only, so never negative. A count too large for int64_t is
  // garbage (unknown); one merely absurd is clamped, so that what is computed
  // from it (remaining + slack, limit x time scale) stays in range.
  int64_t count = 0;
  if (!absl::SimpleAtoi(*value, &count)) return std::nullopt;
  return std::min(count, kMaxRateLimitCount);
}

// HTTP-date in the three forms RFC 9110 section 5.6.7 makes recipients accept.
std::optional<absl::Time> ParseHttpDate(absl::string_view text) {
  static constexpr const char* kFormats[] = {
      "%a, %d %b %Y %H:%M:%S GMT",  // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
      "%A, %d-%b-%y %H:%M:%S GMT",  // RFC 850:     Sunday, 06-Nov-94 08:49:37 GMT
      "%a %b %e %H:%M:%S %Y",       // asctime:     Sun Nov  6 08:49:37 1994
  };
  for (const char* format : kFormats) {
    absl::Time time;
    std::string error;
    // absl::ParseTime accepts "infinite-future" whatever the format.
    if (absl::ParseTime(format, text, absl::UTCTimeZone(), &time, &error) &&
        time != absl::InfiniteFuture() && time != absl::InfinitePast()) {
      return time;
    }
  }
  return std::nullopt;
}

// The request id header of `provider`, else of the other provider (gateways
// rename), else empty.
std::string RequestIdHeader(Provider provider, const Headers& headers) {
  const char* primary = provider == Provider::kAnthropic ? "request-id" : "x-request-id";
  const char* secondary = provider == Provider::kAnthropic ? "x-request-id" : "request-id";
  if (const std::string* id = headers.Find(primary); id != nullptr && !id->empty()) return *id;
  if (const std::string* id = headers.Find(secondary); id != nullptr) return *id;
  return "";
}

std::optional<bool> ParseShouldRetry(const Headers& headers) {
  const std::string* value = headers.Find("x-should-retry");
  if (value == nullptr) return std::nullopt;
  if (absl::EqualsIgnoreCase(*value, "true")) return true;
  if (absl::EqualsIgnoreCase(*value, "false")) return false;
  return std::nullopt;
}

// ---- Error bodies ----------------------------------------------------------

// The machine-readable fields of an error body. Strings are empty when the
// field is absent or not a string.
struct ErrorBody {
  bool is_object = false;   // the body parsed as a JSON object
  bool has_error = false;   // ... with an "error" object in it
  std::string type;         // error.type
  std::string code;         // error.code (OpenAI)
  std::string detail_code;  // error.details.error_code (Anthropic)
  std::string message;      // error.message
  std::string request_id;   // request_id (Anthropic, top level)
};

// `object[key]` when `object` is an object holding a string there, else "".
std::string StringMember(const Json& object, const char* key) {
  if (!object.is_object()) return "";
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

ErrorBody ReadErrorBody(absl::string_view body) {
  ErrorBody fields;
  const Json json = Json::parse(body.begin(), body.end(), /*cb=*/nullptr,
                                /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) return fields;
  fields.is_object = true;
  fields.request_id = StringMember(json, "request_id");
  auto error = json.find("error");
  if (error == json.end() || !error->is_object()) return fields;
  fields.has_error = true;
  fields.type = StringMember(*error, "type");
  fields.code = StringMember(*error, "code");
  fields.message = StringMember(*error, "message");
  if (auto details = error->find("details"); details != error->end()) {
    fields.detail_code = StringMember(*details, "error_code");
  }
  return fields;
}

bool IsQuotaCode(absl::string_view code) {
  return code == "insufficient_quota" || code == "credit_balance_exhausted" ||
         code == "enforced_spend_limit_reached";
}

bool HasQuotaCode(const ErrorBody& body) {
  return IsQuotaCode(body.type) || IsQuotaCode(body.code) || IsQuotaCode(body.detail_code);
}

// OpenAI's "Request too large for gpt-4o ... Limit 30000, Requested 36278":
// the one case detected from message text, because OpenAI gives it no code of
// its own (it arrives as 429 rate_limit_exceeded, or 400).
bool IsOpenAiRequestTooLarge(Provider provider, const ErrorBody& body) {
  return provider == Provider::kOpenAi && absl::StartsWith(body.message, "Request too large");
}

// The class of an error type or code from either provider's vocabulary, for
// an error that arrived inside a 2xx (a streamed error event).
ErrorClass ClassOfErrorType(absl::string_view type) {
  if (type == "rate_limit_error" || type == "rate_limit_exceeded") return ErrorClass::kRateLimited;
  if (type == "overloaded_error") return ErrorClass::kOverloaded;
  if (type == "invalid_request_error") return ErrorClass::kInvalidRequest;
  if (type == "authentication_error") return ErrorClass::kAuthentication;
  if (type == "billing_error") return ErrorClass::kBilling;
  if (type == "permission_error") return ErrorClass::kPermission;
  if (type == "not_found_error") return ErrorClass::kNotFound;
  if (type == "request_too_large") return ErrorClass::kRequestTooLarge;
  // api_error, timeout_error, server_error, and anything unknown: the
  // provider failed mid-response.
  return ErrorClass::kServerError;
}

// The class an HTTP status alone implies.
ErrorClass ClassOfStatus(int status) {
  if (status >= 200 && status <= 299) return ErrorClass::kNone;
  switch (status) {
    case 400:
      return ErrorClass::kInvalidRequest;
    case 401:
      return ErrorClass::kAuthentication;
    case 402:
      return ErrorClass::kBilling;
    case 403:
      return ErrorClass::kPermission;
    case 404:
      return ErrorClass::kNotFound;
    case 408:
      return ErrorClass::kRequestTimeout;
    case 409:
      return ErrorClass::kConflict;
    case 413:
      return ErrorClass::kRequestTooLarge;
    case 429:
      return ErrorClass::kRateLimited;
    case 503:  // OpenAI's "engine is currently overloaded"
    case 529:  // Anthropic's overloaded_error
      return ErrorClass::kOverloaded;
  }
  if (status >= 400 && status <= 499) return ErrorClass::kInvalidRequest;
  if (status >= 500 && status <= 599) return ErrorClass::kServerError;
  // 1xx, 3xx (a redirect the transport did not follow), or not HTTP at all.
  return ErrorClass::kMalformedResponse;
}

bool RetryableByDefault(ErrorClass error_class) {
  switch (error_class) {
    case ErrorClass::kRateLimited:
    case ErrorClass::kOverloaded:
    case ErrorClass::kServerError:
    case ErrorClass::kRequestTimeout:
    case ErrorClass::kConflict:
    case ErrorClass::kConnection:
      return true;
    case ErrorClass::kNone:
    case ErrorClass::kInvalidRequest:
    case ErrorClass::kAuthentication:
    case ErrorClass::kBilling:
    case ErrorClass::kPermission:
    case ErrorClass::kNotFound:
    case ErrorClass::kRequestTooLarge:
    case ErrorClass::kQuotaExhausted:
    case ErrorClass::kMalformedResponse:
      return false;
  }
  return false;
}

// Classes no server hint makes retryable: the account or the request itself
// must change first.
bool NeverRetryable(ErrorClass error_class) {
  return error_class == ErrorClass::kQuotaExhausted || error_class == ErrorClass::kRequestTooLarge;
}

ErrorClass ClassOf(Provider provider, int status, const ErrorBody& body) {
  const ErrorClass by_status = ClassOfStatus(status);
  if (by_status == ErrorClass::kMalformedResponse) return by_status;
  if (by_status == ErrorClass::kNone) {
    if (!body.is_object) return ErrorClass::kMalformedResponse;
    if (!body.has_error) return ErrorClass::kNone;
  }
  if (HasQuotaCode(body)) return ErrorClass::kQuotaExhausted;
  const bool client_error = status >= 400 && status <= 499;
  if ((client_error || by_status == ErrorClass::kNone) && IsOpenAiRequestTooLarge(provider, body)) {
    return ErrorClass::kRequestTooLarge;
  }
  if (by_status == ErrorClass::kNone) {
    return ClassOfErrorType(!body.code.empty() ? body.code : body.type);
  }
  if (status >= 500 && body.type == "overloaded_error") return ErrorClass::kOverloaded;
  return by_status;
}

// What the body says about itself when it has no error.message.
std::string DescribeBody(int status, absl::string_view body, const ErrorBody& fields) {
  if (body.empty()) return absl::StrCat("HTTP ", status, " with an empty body");
  return absl::StrCat(
      "HTTP ", status, " with ",
      fields.is_object ? "a JSON body without error.message" : "a body that is not a JSON object",
      " (", body.size(), " bytes): ", Excerpt(body));
}

// "429 rate_limited", or "connection" when there was no HTTP response.
std::string Describe(const Classification& failure) {
  if (failure.http_status == 0) return std::string(ErrorClassName(failure.error_class));
  return absl::StrCat(failure.http_status, " ", ErrorClassName(failure.error_class));
}

}  // namespace

// ---- Providers -------------------------------------------------------------

absl::StatusOr<Provider> ParseProvider(absl::string_view name) {
  if (name == "anthropic") return Provider::kAnthropic;
  if (name == "openai") return Provider::kOpenAi;
  return absl::InvalidArgumentError(absl::StrCat("unknown provider \"", Excerpt(name),
                                                 "\": expected \"anthropic\" or \"openai\""));
}

absl::string_view ProviderName(Provider provider) {
  switch (provider) {
    case Provider::kAnthropic:
      return "anthropic";
    case Provider::kOpenAi:
      return "openai";
  }
  return "unknown";
}

std::string KeyFingerprint(absl::string_view api_key) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  // SHA-256 cannot fail on memory input; an empty result would show as "".
  if (EVP_Digest(api_key.data(), api_key.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    return "";
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), length));
}

// ---- Headers ---------------------------------------------------------------

Headers::Headers(std::initializer_list<std::pair<absl::string_view, absl::string_view>> fields) {
  for (const auto& [name, value] : fields) Set(name, value);
}

void Headers::Set(absl::string_view name, absl::string_view value) {
  fields_.insert_or_assign(absl::AsciiStrToLower(name),
                           std::string(absl::StripAsciiWhitespace(value)));
}

void Headers::Erase(absl::string_view name) { fields_.erase(absl::AsciiStrToLower(name)); }

bool Headers::AddLine(absl::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (absl::StartsWith(line, "HTTP/")) {
    // A new response: what came before belonged to an interim (100) or
    // redirect response, not to the one the caller will read.
    Clear();
    return false;
  }
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  const absl::string_view name = line.substr(0, colon);
  // Field names are visible ASCII (RFC 9110 tokens). That rules out
  // whitespace before the colon, which RFC 9112 forbids, and a line starting
  // with whitespace, which is obsolete folding: neither can be trusted.
  for (char c : name) {
    const unsigned char byte = static_cast<unsigned char>(c);
    if (byte <= ' ' || byte >= 0x7F) return false;
  }
  Set(name, line.substr(colon + 1));
  return true;
}

const std::string* Headers::Find(absl::string_view name) const {
  const bool lower = std::none_of(name.begin(), name.end(), absl::ascii_isupper);
  auto it = lower ? fields_.find(name) : fields_.find(absl::AsciiStrToLower(name));
  return it == fields_.end() ? nullptr : &it->second;
}

// ---- Durations and times ---------------------------------------------------

absl::StatusOr<absl::Duration> ParseGoDuration(absl::string_view text) {
  if (text.empty()) return GoDurationError(text, "empty");
  if (text == "0") return absl::ZeroDuration();  // the one number Go accepts without a unit
  if (text.front() == '-' || text.front() == '+') {
    return GoDurationError(text, "a sign is not accepted (a reset is never negative)");
  }
  unsigned __int128 total = 0;
  absl::string_view rest = text;
  while (!rest.empty()) {
    std::optional<Decimal> number = ConsumeDecimal(&rest);
    if (!number.has_value()) return GoDurationError(text, "expected a number");
    // The unit runs to the next number, as in Go: "1h-2m" has unit "h-".
    size_t unit_end = 0;
    while (unit_end < rest.size() && rest[unit_end] != '.' && !IsDigit(rest[unit_end])) {
      ++unit_end;
    }
    const absl::string_view unit = rest.substr(0, unit_end);
    rest.remove_prefix(unit_end);
    if (unit.empty()) return GoDurationError(text, "missing unit");
    const int64_t unit_ns = GoUnitNanos(unit);
    if (unit_ns == 0) {
      return GoDurationError(text, absl::StrCat("unknown unit \"", Excerpt(unit), "\""));
    }
    std::optional<int64_t> nanos = ToNanos(*number, unit_ns);
    if (!nanos.has_value()) return GoDurationError(text, "out of range (over ~292 years)");
    total += static_cast<unsigned __int128>(*nanos);  // each term < 2^63: no wrap
    if (total > static_cast<unsigned __int128>(kMaxNanos)) {
      return GoDurationError(text, "out of range (over ~292 years)");
    }
  }
  return absl::Nanoseconds(static_cast<int64_t>(total));
}

absl::StatusOr<absl::Time> ParseRfc3339(absl::string_view text) {
  absl::Time time;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, text, &time, &error)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid RFC 3339 timestamp \"", Excerpt(text), "\": ", error));
  }
  if (time == absl::InfiniteFuture() || time == absl::InfinitePast()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid RFC 3339 timestamp \"", Excerpt(text), "\": not a finite time"));
  }
  return time;
}

// ---- Rate-limit headers ----------------------------------------------------

std::optional<absl::Duration> ParseRetryAfter(const Headers& headers, absl::Time now) {
  if (const std::string* ms = headers.Find("retry-after-ms"); ms != nullptr) {
    if (std::optional<absl::Duration> wait = ParseDecimalDuration(*ms, 1000 * 1000)) return wait;
  }
  const std::string* value = headers.Find("retry-after");
  if (value == nullptr) return std::nullopt;
  if (std::optional<absl::Duration> wait = ParseDecimalDuration(*value, 1000 * 1000 * 1000)) {
    return wait;
  }
  std::optional<absl::Time> date = ParseHttpDate(*value);
  if (!date.has_value()) return std::nullopt;
  return std::max(*date - now, absl::ZeroDuration());
}

absl::Duration QuotaHold(const RateLimitInfo& info, const RetryOptions& options) {
  const absl::Duration asked =
      info.retry_after.value_or(info.requests.reset_in.value_or(absl::Seconds(1)));
  return std::clamp(asked, absl::ZeroDuration(), options.max_retry_after);
}

RateLimitInfo ParseRateLimitHeaders(Provider provider, const Headers& headers, absl::Time now) {
  RateLimitInfo info;
  if (provider == Provider::kAnthropic) {
    const auto read = [&](absl::string_view dimension, RateLimitInfo::Dimension& out) {
      const std::string prefix = absl::StrCat("anthropic-ratelimit-", dimension, "-");
      out.limit = ParseCount(headers.Find(absl::StrCat(prefix, "limit")));
      out.remaining = ParseCount(headers.Find(absl::StrCat(prefix, "remaining")));
      if (const std::string* reset = headers.Find(absl::StrCat(prefix, "reset"))) {
        if (absl::StatusOr<absl::Time> at = ParseRfc3339(*reset); at.ok()) {
          out.reset_in = std::clamp(*at - now, absl::ZeroDuration(), kMaxResetWait);
        }
      }
    };
    read("requests", info.requests);
    read("tokens", info.tokens);
    read("input-tokens", info.input_tokens);
    read("output-tokens", info.output_tokens);
  } else {
    const auto read = [&](absl::string_view dimension, RateLimitInfo::Dimension& out) {
      out.limit = ParseCount(headers.Find(absl::StrCat("x-ratelimit-limit-", dimension)));
      out.remaining = ParseCount(headers.Find(absl::StrCat("x-ratelimit-remaining-", dimension)));
      if (const std::string* reset = headers.Find(absl::StrCat("x-ratelimit-reset-", dimension))) {
        if (absl::StatusOr<absl::Duration> in = ParseGoDuration(*reset); in.ok()) {
          out.reset_in = std::min(*in, kMaxResetWait);
        }
      }
    };
    read("requests", info.requests);
    read("tokens", info.tokens);
  }
  info.retry_after = ParseRetryAfter(headers, now);
  info.should_retry = ParseShouldRetry(headers);
  info.request_id = RequestIdHeader(provider, headers);
  return info;
}

// ---- Replies ---------------------------------------------------------------

namespace {

uint64_t JsonCount(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return 0;
  const auto it = obj.find(key);
  if (it == obj.end() || !it->is_number_unsigned()) return 0;
  return std::min(it->get<uint64_t>(), kMaxUsageTokens);
}

std::string JsonString(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return "";
  const auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

std::optional<Reply> ParseReply(Provider provider, const nlohmann::json& response) {
  if (!response.is_object()) return std::nullopt;
  const auto usage = response.find("usage");
  if (usage == response.end() || !usage->is_object()) return std::nullopt;
  const nlohmann::json& u = *usage;
  Reply reply;
  if (provider == Provider::kAnthropic) {
    const auto content = response.find("content");
    if (content == response.end() || !content->is_array()) return std::nullopt;
    for (const nlohmann::json& block : *content) {
      if (JsonString(block, "type") == "text") reply.text += JsonString(block, "text");
    }
    reply.usage.input_tokens = JsonCount(u, "input_tokens");
    reply.usage.output_tokens = JsonCount(u, "output_tokens");
    reply.usage.cache_creation_input_tokens = JsonCount(u, "cache_creation_input_tokens");
    reply.usage.cache_read_input_tokens = JsonCount(u, "cache_read_input_tokens");
    return reply;
  }
  const auto choices = response.find("choices");
  if (choices == response.end() || !choices->is_array() || choices->empty()) return std::nullopt;
  const nlohmann::json& first = choices->front();
  if (first.is_object()) {
    const auto message = first.find("message");
    if (message != first.end()) reply.text = JsonString(*message, "content");
  }
  // OpenAI's prompt_tokens include cached ones; sluice's Usage keeps them apart.
  const uint64_t prompt = JsonCount(u, "prompt_tokens");
  const auto details = u.find("prompt_tokens_details");
  const uint64_t cached =
      std::min(prompt, details != u.end() ? JsonCount(*details, "cached_tokens") : uint64_t{0});
  reply.usage.input_tokens = prompt - cached;
  reply.usage.cache_read_input_tokens = cached;
  reply.usage.output_tokens = JsonCount(u, "completion_tokens");
  return reply;
}

// ---- Classification --------------------------------------------------------

absl::string_view ErrorClassName(ErrorClass error_class) {
  switch (error_class) {
    case ErrorClass::kNone:
      return "none";
    case ErrorClass::kRateLimited:
      return "rate_limited";
    case ErrorClass::kOverloaded:
      return "overloaded";
    case ErrorClass::kServerError:
      return "server_error";
    case ErrorClass::kRequestTimeout:
      return "request_timeout";
    case ErrorClass::kConflict:
      return "conflict";
    case ErrorClass::kInvalidRequest:
      return "invalid_request";
    case ErrorClass::kAuthentication:
      return "authentication";
    case ErrorClass::kBilling:
      return "billing";
    case ErrorClass::kPermission:
      return "permission";
    case ErrorClass::kNotFound:
      return "not_found";
    case ErrorClass::kRequestTooLarge:
      return "request_too_large";
    case ErrorClass::kQuotaExhausted:
      return "quota_exhausted";
    case ErrorClass::kMalformedResponse:
      return "malformed_response";
    case ErrorClass::kConnection:
      return "connection";
  }
  return "unknown";
}

Classification ClassifyResponse(Provider provider, int http_status, absl::string_view body,
                                const Headers& headers) {
  const ErrorBody fields = ReadErrorBody(body);
  Classification result;
  result.http_status = http_status;
  result.error_class = ClassOf(provider, http_status, fields);
  result.retryable = RetryableByDefault(result.error_class);
  if (result.error_class != ErrorClass::kNone) {
    if (std::optional<bool> should_retry = ParseShouldRetry(headers); should_retry.has_value()) {
      result.retryable = *should_retry && !NeverRetryable(result.error_class);
    }
    const std::string& specific =
        provider == Provider::kAnthropic ? fields.detail_code : fields.code;
    result.provider_type = !specific.empty() ? specific : fields.type;
    result.message = !fields.message.empty() ? Truncate(fields.message, kMaxMessageBytes)
                                             : DescribeBody(http_status, body, fields);
  }
  result.request_id = RequestIdHeader(provider, headers);
  if (result.request_id.empty()) result.request_id = fields.request_id;
  return result;
}

Classification ClassifyTransportError(absl::string_view detail) {
  Classification result;
  result.error_class = ErrorClass::kConnection;
  result.retryable = true;
  result.message = Truncate(detail, kMaxMessageBytes);
  return result;
}

// ---- Retry policy ----------------------------------------------------------

absl::Status ValidateRetryOptions(const RetryOptions& options) {
  if (options.max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_attempts must be at least 1, got ", options.max_attempts));
  }
  if (options.base <= absl::ZeroDuration() || options.base == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("base must be positive and finite, got ", absl::FormatDuration(options.base)));
  }
  if (options.cap < options.base || options.cap == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("cap must be finite and at least base (",
                                                   absl::FormatDuration(options.base), "), got ",
                                                   absl::FormatDuration(options.cap)));
  }
  if (options.max_retry_after < absl::ZeroDuration() ||
      options.max_retry_after == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_retry_after must be finite and not negative, got ",
                     absl::FormatDuration(options.max_retry_after)));
  }
  return absl::OkStatus();
}

RetryDecision DecideRetry(const RetryOptions& options, int attempt, const Classification& failure,
                          std::optional<absl::Duration> retry_after, absl::BitGenRef rng) {
  RetryDecision decision;
  if (!failure.retryable) {
    decision.reason = absl::StrCat("not retryable: ", ErrorClassName(failure.error_class));
    if (!failure.provider_type.empty()) {
      absl::StrAppend(&decision.reason, " (", failure.provider_type, ")");
    }
    return decision;
  }
  const int max_attempts = std::max(options.max_attempts, 1);
  attempt = std::max(attempt, 0);
  if (attempt >= max_attempts - 1) {
    decision.reason =
        absl::StrCat(Describe(failure), ": attempt budget of ", max_attempts, " spent");
    return decision;
  }
  if (retry_after.has_value() && *retry_after > absl::ZeroDuration()) {
    if (*retry_after > options.max_retry_after) {
      decision.reason =
          absl::StrCat(Describe(failure), ": server asked to wait ",
                       absl::FormatDuration(*retry_after), ", over max_retry_after ",
                       absl::FormatDuration(options.max_retry_after), ": failing fast");
      return decision;
    }
    decision.retry = true;
    decision.delay = *retry_after;
    decision.reason = absl::StrCat(Describe(failure), ": honoring retry-after ",
                                   absl::FormatDuration(*retry_after));
    return decision;
  }
  // Shifts stay within int64_t; absl::Duration multiplication saturates.
  const int exponent = std::min(attempt, 61);
  const absl::Duration base = std::max(options.base, absl::ZeroDuration());
  const absl::Duration sdk_delay = std::min(base * (int64_t{1} << exponent), options.cap);
  const absl::Duration full_delay = std::min(base * (int64_t{1} << (exponent + 1)), options.cap);
  const int64_t sdk_ns = std::max<int64_t>(absl::ToInt64Nanoseconds(sdk_delay), 0);
  // ceil(0.75 * sdk_ns), exactly and without overflow: never a nanosecond
  // shorter than the SDKs' shortest wait.
  const int64_t floor_ns = sdk_ns - sdk_ns / 4;
  const int64_t ceiling_ns = std::max(absl::ToInt64Nanoseconds(full_delay), floor_ns);
  decision.retry = true;
  decision.delay = absl::Nanoseconds(
      absl::Uniform<int64_t>(absl::IntervalClosedClosed, rng, floor_ns, ceiling_ns));
  decision.reason =
      absl::StrCat(Describe(failure), ": backing off ", absl::FormatDuration(decision.delay),
                   " before attempt ", attempt + 2, " of ", max_attempts);
  return decision;
}

}  // namespace sluice
