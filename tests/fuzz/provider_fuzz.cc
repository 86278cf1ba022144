// libFuzzer target for everything sluice reads from a provider's response:
// header lines as libcurl delivers them, the rate-limit headers of both
// providers (counts, RFC 3339 and Go-duration resets, retry-after in
// seconds, milliseconds or HTTP-date), the classification of status and
// body, the retry decision and quota hold computed from them, and the reply
// body's text and usage.
//
// Input: byte 0 picks the provider, bytes 1-2 the HTTP status (mod 700); the
// rest is header lines, a blank line, then the body. Seeds:
// tests/fuzz/corpus/provider.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "sluice/provider.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const sluice::Provider provider =
      data[0] % 2 == 0 ? sluice::Provider::kAnthropic : sluice::Provider::kOpenAi;
  const int status = (data[1] | (data[2] << 8)) % 700;
  const absl::string_view rest(reinterpret_cast<const char*>(data + 3), size - 3);
  const size_t blank = rest.find("\n\n");
  const absl::string_view head = rest.substr(0, blank);
  const absl::string_view body =
      blank == absl::string_view::npos ? absl::string_view() : rest.substr(blank + 2);

  sluice::Headers headers;
  for (absl::string_view line : absl::StrSplit(head, '\n')) {
    headers.AddLine(std::string(line) + "\r\n");
  }
  const absl::Time now = absl::FromUnixSeconds(1'764'000'000);
  const sluice::RateLimitInfo info = sluice::ParseRateLimitHeaders(provider, headers, now);
  for (const sluice::RateLimitInfo::Dimension* d :
       {&info.requests, &info.tokens, &info.input_tokens, &info.output_tokens}) {
    // Clamped before anything computes with them.
    if (d->limit && (*d->limit < 0 || *d->limit > sluice::kMaxRateLimitCount)) __builtin_trap();
    if (d->remaining && (*d->remaining < 0 || *d->remaining > sluice::kMaxRateLimitCount)) {
      __builtin_trap();
    }
    if (d->reset_in &&
        (*d->reset_in < absl::ZeroDuration() || *d->reset_in > sluice::kMaxResetWait)) {
      __builtin_trap();
    }
  }
  const sluice::Classification c = sluice::ClassifyResponse(provider, status, body, headers);
  sluice::RetryOptions options;
  const absl::Duration hold = sluice::QuotaHold(info, options);
  if (hold < absl::ZeroDuration() || hold > options.max_retry_after) __builtin_trap();
  absl::InsecureBitGen rng;
  sluice::DecideRetry(options, 1, c, info.retry_after, rng);

  const nlohmann::json json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_discarded()) {
    if (const auto reply = sluice::ParseReply(provider, json)) {
      if (reply->usage.input_tokens > sluice::kMaxUsageTokens ||
          reply->usage.output_tokens > sluice::kMaxUsageTokens) {
        __builtin_trap();
      }
    }
  }
  return 0;
}
