#include "sluice/provider.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Optional;
using ::testing::SizeIs;
using ::testing::StartsWith;

absl::Time Utc(int year, int month, int day, int hour, int minute, int second) {
  return absl::FromCivil(absl::CivilSecond(year, month, day, hour, minute, second),
                         absl::UTCTimeZone());
}

// ---- Providers -------------------------------------------------------------

TEST(ProviderTest, NamesRoundTrip) {
  for (Provider provider : {Provider::kAnthropic, Provider::kOpenAi}) {
    absl::StatusOr<Provider> parsed = ParseProvider(ProviderName(provider));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, provider);
  }
  EXPECT_EQ(ProviderName(Provider::kAnthropic), "anthropic");
  EXPECT_EQ(ProviderName(Provider::kOpenAi), "openai");
}

TEST(ProviderTest, UnknownNamesAreInvalidArgument) {
  for (absl::string_view name : {"", "OpenAI", "Anthropic", "azure", "openai "}) {
    absl::StatusOr<Provider> parsed = ParseProvider(name);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << name;
  }
  EXPECT_THAT(std::string(ParseProvider("azure").status().message()), HasSubstr("\"azure\""));
}

// ---- Headers ---------------------------------------------------------------

TEST(HeadersTest, NamesAreCaseInsensitiveAndValuesTrimmed) {
  Headers headers{{"Retry-After", "  2 \r\n"}, {"X-Request-ID", "req_1"}};
  ASSERT_NE(headers.Find("retry-after"), nullptr);
  EXPECT_EQ(*headers.Find("retry-after"), "2");
  EXPECT_EQ(*headers.Find("RETRY-AFTER"), "2");
  EXPECT_EQ(*headers.Find("x-request-id"), "req_1");
  EXPECT_EQ(headers.Find("request-id"), nullptr);
  EXPECT_EQ(headers.size(), 2u);
}

TEST(HeadersTest, LaterValueReplacesEarlier) {
  Headers headers;
  headers.Set("retry-after", "1");
  headers.Set("Retry-After", "5");
  EXPECT_EQ(headers.size(), 1u);
  EXPECT_EQ(*headers.Find("retry-after"), "5");
}

TEST(HeadersTest, AddLineTakesCurlHeaderLines) {
  Headers headers;
  EXPECT_FALSE(headers.AddLine("HTTP/1.1 100 Continue\r\n"));
  EXPECT_TRUE(headers.AddLine("x-early: 1\r\n"));
  EXPECT_FALSE(headers.AddLine("\r\n"));
  // The final response's status line drops what the interim response said.
  EXPECT_FALSE(headers.AddLine("HTTP/2 429\r\n"));
  EXPECT_TRUE(headers.empty());
  EXPECT_TRUE(headers.AddLine("Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n"));
  EXPECT_TRUE(headers.AddLine("request-id:req_abc\n"));
  EXPECT_TRUE(headers.AddLine("x-empty:\r\n"));
  EXPECT_FALSE(headers.AddLine("no colon here\r\n"));
  EXPECT_FALSE(headers.AddLine(": no name\r\n"));
  EXPECT_FALSE(headers.AddLine("bad name: x\r\n"));
  EXPECT_FALSE(headers.AddLine("bad\tname: x\r\n"));
  EXPECT_FALSE(headers.AddLine(" folded: continuation\r\n"));
  EXPECT_FALSE(headers.AddLine("r\xC3\xA9sum\xC3\xA9: x\r\n"));
  EXPECT_FALSE(headers.AddLine("\r\n"));
  EXPECT_EQ(headers.size(), 3u);
  EXPECT_EQ(*headers.Find("retry-after"), "Wed, 21 Oct 2015 07:28:00 GMT");
  EXPECT_EQ(*headers.Find("request-id"), "req_abc");
  EXPECT_EQ(*headers.Find("x-empty"), "");
}

// ---- Go durations ----------------------------------------------------------

struct GoDurationCase {
  const char* text;
  absl::Duration want;
};

TEST(ParseGoDurationTest, AcceptsWhatOpenAiSends) {
  const GoDurationCase cases[] = {
      {"1s", absl::Seconds(1)},
      {"6m0s", absl::Minutes(6)},
      {"12ms", absl::Milliseconds(12)},
      {"4m12.172s", absl::Minutes(4) + absl::Milliseconds(12172)},
      {"23h18m29.144s", absl::Hours(23) + absl::Minutes(18) + absl::Milliseconds(29144)},
      {"0s", absl::ZeroDuration()},
      {"0", absl::ZeroDuration()},
      {"1.5s", absl::Milliseconds(1500)},
      {".5s", absl::Milliseconds(500)},
      {"1.s", absl::Seconds(1)},
      {"500us", absl::Microseconds(500)},
      {"500\xC2\xB5s", absl::Microseconds(500)},  // MICRO SIGN
      {"500\xCE\xBCs", absl::Microseconds(500)},  // GREEK SMALL LETTER MU
      {"2h", absl::Hours(2)},
      {"7ns", absl::Nanoseconds(7)},
      {"1h1m1s1ms1us1ns", absl::Hours(1) + absl::Minutes(1) + absl::Seconds(1) +
                              absl::Milliseconds(1) + absl::Microseconds(1) + absl::Nanoseconds(1)},
      {"1m1m", absl::Minutes(2)},  // Go sums repeated units
      {"0.000000001s", absl::Nanoseconds(1)},
      {"0.0000000019s", absl::Nanoseconds(1)},           // below a nanosecond truncates
      {"1.0000000000000000000000001h", absl::Hours(1)},  // past 18 fraction digits
      {"0.5h", absl::Minutes(30)},
      {"00012s", absl::Seconds(12)},
      {"9223372036854775807ns", absl::Nanoseconds(INT64_MAX)},
      {"2562047h47m16.854775807s", absl::Nanoseconds(INT64_MAX)},
  };
  for (const GoDurationCase& c : cases) {
    absl::StatusOr<absl::Duration> parsed = ParseGoDuration(c.text);
    ASSERT_TRUE(parsed.ok()) << c.text << ": " << parsed.status();
    EXPECT_EQ(*parsed, c.want) << c.text;
  }
}

TEST(ParseGoDurationTest, RefusesEverythingElse) {
  const char* const cases[] = {
      "",
      "-1",
      "-1s",
      "+1s",
      "abc",
      "1x",
      "1",
      "60",
      "00",
      "1h-2m",
      "1.2.3s",
      ".s",
      ".",
      "s",
      "1 s",
      " 1s",
      "1s ",
      "1h 2m",
      "1S",
      "1sec",
      "1e3s",
      "0x10s",
      "1\xC2s",
      "99999999999999h",
      "9223372036854775808ns",
      "2562047h47m16.854775808s",
      "2562047h2562047h",
      "99999999999999999999999999999999s",
  };
  for (const char* text : cases) {
    absl::StatusOr<absl::Duration> parsed = ParseGoDuration(text);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument)
        << "\"" << text << "\" parsed as " << (parsed.ok() ? *parsed : absl::ZeroDuration());
  }
  EXPECT_THAT(std::string(ParseGoDuration("1x").status().message()),
              HasSubstr("unknown unit \"x\""));
  EXPECT_THAT(std::string(ParseGoDuration("99999999999999h").status().message()),
              HasSubstr("out of range"));
}

// ---- RFC 3339 --------------------------------------------------------------

TEST(ParseRfc3339Test, AcceptsWhatAnthropicSends) {
  const absl::Time base = Utc(2025, 1, 12, 23, 12, 21);
  const std::pair<const char*, absl::Time> cases[] = {
      {"2025-01-12T23:12:21Z", base},
      {"2025-01-12T23:12:21z", base},
      {"2025-01-12T23:12:21.25Z", base + absl::Milliseconds(250)},
      {"2025-01-12T23:12:21.123456789Z", base + absl::Nanoseconds(123456789)},
      {"2025-01-12T23:12:21+00:00", base},
      {"2025-01-13T04:42:21+05:30", base},
      {"2025-01-12T15:12:21-08:00", base},
  };
  for (const auto& [text, want] : cases) {
    absl::StatusOr<absl::Time> parsed = ParseRfc3339(text);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status();
    EXPECT_EQ(*parsed, want) << text;
  }
}

TEST(ParseRfc3339Test, RefusesGarbage) {
  for (const char* text :
       {"", "garbage", "2025-01-12T23:12:21", "2025-01-12 23:12:21Z", "2025-02-30T00:00:00Z",
        "2025-01-12T24:00:00Z", "1736723541", "2025-01-12T23:12:21+24:00", "infinite-future",
        "infinite-past", "Wed, 21 Oct 2015 07:28:00 GMT", "2025-01-12T23:12:21Zjunk"}) {
    EXPECT_EQ(ParseRfc3339(text).status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

// ---- Retry-After -----------------------------------------------------------

TEST(ParseRetryAfterTest, SecondsMillisecondsAndPrecedence) {
  const absl::Time now = Utc(2015, 10, 21, 7, 27, 0);
  EXPECT_THAT(ParseRetryAfter({{"retry-after", "2"}}, now), Optional(absl::Seconds(2)));
  EXPECT_THAT(ParseRetryAfter({{"retry-after", "0.5"}}, now), Optional(absl::Milliseconds(500)));
  EXPECT_THAT(ParseRetryAfter({{"retry-after", "0"}}, now), Optional(absl::ZeroDuration()));
  EXPECT_THAT(ParseRetryAfter({{"retry-after", "120"}}, now), Optional(absl::Minutes(2)));
  EXPECT_THAT(ParseRetryAfter({{"retry-after-ms", "1500"}}, now),
              Optional(absl::Milliseconds(1500)));
  EXPECT_THAT(ParseRetryAfter({{"retry-after-ms", "644.5"}}, now),
              Optional(absl::Microseconds(644500)));
  // retry-after-ms is the more precise of the two and wins, as in the SDKs.
  EXPECT_THAT(ParseRetryAfter({{"retry-after", "3"}, {"retry-after-ms", "250"}}, now),
              Optional(absl::Milliseconds(250)));
  // An unreadable retry-after-ms falls back to retry-after.
  EXPECT_THAT(ParseRetryAfter({{"retry-after", "3"}, {"retry-after-ms", "soon"}}, now),
              Optional(absl::Seconds(3)));
  EXPECT_THAT(ParseRetryAfter({{"Retry-After", "7"}}, now), Optional(absl::Seconds(7)));
}

TEST(ParseRetryAfterTest, HttpDates) {
  const absl::Time now = Utc(2015, 10, 21, 7, 27, 0);
  EXPECT_THAT(ParseRetryAfter({{"retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"}}, now),
              Optional(absl::Seconds(60)));
  EXPECT_THAT(ParseRetryAfter({{"retry-after", "Wednesday, 21-Oct-15 07:28:30 GMT"}}, now),
              Optional(absl::Seconds(90)));
  EXPECT_THAT(ParseRetryAfter({{"retry-after", "Wed Oct 21 07:27:05 2015"}}, now),
              Optional(absl::Seconds(5)));
  // A date already past means "now".
  EXPECT_THAT(ParseRetryAfter({{"retry-after", "Wed, 21 Oct 2015 07:00:00 GMT"}}, now),
              Optional(absl::ZeroDuration()));
  EXPECT_THAT(ParseRetryAfter({{"retry-after", "Thu, 01 Jan 1970 00:00:00 GMT"}}, now),
              Optional(absl::ZeroDuration()));
}

TEST(ParseRetryAfterTest, GarbageAndNegativeAreUnknown) {
  const absl::Time now = Utc(2015, 10, 21, 7, 27, 0);
  EXPECT_EQ(ParseRetryAfter({}, now), std::nullopt);
  for (const char* value :
       {"", "-1", "-0.5", "+5", "abc", "1e3", "5s", "0x10", "1,5", "2 3", "infinite-future",
        "Wed, 21 Oct 2015 07:28:00 PST", "Wed, 32 Oct 2015 07:28:00 GMT", "."}) {
    EXPECT_EQ(ParseRetryAfter({{"retry-after", value}}, now), std::nullopt) << value;
    EXPECT_EQ(ParseRetryAfter({{"retry-after-ms", value}}, now), std::nullopt) << value;
  }
}

TEST(ParseRetryAfterTest, AnEnormousWaitIsInfiniteNotUnknown) {
  // Falling back to backoff would retry within seconds a server that asked
  // for centuries; infinite makes DecideRetry fail fast instead.
  const absl::Time now = Utc(2015, 10, 21, 7, 27, 0);
  EXPECT_THAT(ParseRetryAfter({{"retry-after", "99999999999999999999"}}, now),
              Optional(absl::InfiniteDuration()));
  EXPECT_THAT(ParseRetryAfter({{"retry-after-ms", "9999999999999999999999"}}, now),
              Optional(absl::InfiniteDuration()));
}

// ---- Rate-limit headers ----------------------------------------------------

TEST(ParseRateLimitHeadersTest, AnthropicFullSet) {
  const absl::Time now = Utc(2025, 1, 12, 23, 12, 0);
  const Headers headers{
      {"anthropic-ratelimit-requests-limit", "4000"},
      {"anthropic-ratelimit-requests-remaining", "3999"},
      {"anthropic-ratelimit-requests-reset", "2025-01-12T23:12:00.015Z"},
      {"anthropic-ratelimit-tokens-limit", "480000"},
      {"anthropic-ratelimit-tokens-remaining", "479000"},
      {"anthropic-ratelimit-tokens-reset", "2025-01-12T23:12:21Z"},
      {"Anthropic-RateLimit-Input-Tokens-Limit", "400000"},
      {"anthropic-ratelimit-input-tokens-remaining", "0"},
      {"anthropic-ratelimit-input-tokens-reset", "2025-01-13T00:12:00+01:00"},  // = now
      {"anthropic-ratelimit-output-tokens-limit", "80000"},
      {"anthropic-ratelimit-output-tokens-remaining", "79000"},
      {"anthropic-ratelimit-output-tokens-reset", "2025-01-12T23:11:00Z"},  // past
      {"retry-after", "21"},
      {"x-should-retry", "true"},
      {"request-id", "req_018EeWyXxfu5pfWkrYcMdjWG"},
  };
  const RateLimitInfo info = ParseRateLimitHeaders(Provider::kAnthropic, headers, now);
  EXPECT_THAT(info.requests.limit, Optional(4000));
  EXPECT_THAT(info.requests.remaining, Optional(3999));
  EXPECT_THAT(info.requests.reset_in, Optional(absl::Milliseconds(15)));
  EXPECT_THAT(info.tokens.limit, Optional(480000));
  EXPECT_THAT(info.tokens.remaining, Optional(479000));
  EXPECT_THAT(info.tokens.reset_in, Optional(absl::Seconds(21)));
  EXPECT_THAT(info.input_tokens.limit, Optional(400000));
  EXPECT_THAT(info.input_tokens.remaining, Optional(0));
  EXPECT_THAT(info.input_tokens.reset_in, Optional(absl::ZeroDuration()));
  EXPECT_THAT(info.output_tokens.limit, Optional(80000));
  EXPECT_THAT(info.output_tokens.remaining, Optional(79000));
  EXPECT_THAT(info.output_tokens.reset_in, Optional(absl::ZeroDuration()));
  EXPECT_THAT(info.retry_after, Optional(absl::Seconds(21)));
  EXPECT_THAT(info.should_retry, Optional(true));
  EXPECT_EQ(info.request_id, "req_018EeWyXxfu5pfWkrYcMdjWG");

  // The same headers mean nothing to the OpenAI reader but the shared ones.
  const RateLimitInfo as_openai = ParseRateLimitHeaders(Provider::kOpenAi, headers, now);
  EXPECT_EQ(as_openai.requests.limit, std::nullopt);
  EXPECT_EQ(as_openai.tokens.reset_in, std::nullopt);
  EXPECT_THAT(as_openai.retry_after, Optional(absl::Seconds(21)));
  EXPECT_EQ(as_openai.request_id, "req_018EeWyXxfu5pfWkrYcMdjWG");  // renamed-header fallback
}

TEST(ParseRateLimitHeadersTest, OpenAiFullSet) {
  const absl::Time now = Utc(2025, 1, 12, 23, 12, 0);
  const Headers headers{
      {"x-ratelimit-limit-requests", "10000"},
      {"x-ratelimit-remaining-requests", "9999"},
      {"x-ratelimit-reset-requests", "6ms"},
      {"X-RateLimit-Limit-Tokens", "30000000"},
      {"x-ratelimit-remaining-tokens", "29999000"},
      {"x-ratelimit-reset-tokens", "4m12.172s"},
      {"retry-after-ms", "644"},
      {"x-should-retry", "false"},
      {"x-request-id", "req_abc123"},
  };
  const RateLimitInfo info = ParseRateLimitHeaders(Provider::kOpenAi, headers, now);
  EXPECT_THAT(info.requests.limit, Optional(10000));
  EXPECT_THAT(info.requests.remaining, Optional(9999));
  EXPECT_THAT(info.requests.reset_in, Optional(absl::Milliseconds(6)));
  EXPECT_THAT(info.tokens.limit, Optional(30000000));
  EXPECT_THAT(info.tokens.remaining, Optional(29999000));
  EXPECT_THAT(info.tokens.reset_in, Optional(absl::Minutes(4) + absl::Milliseconds(12172)));
  EXPECT_EQ(info.input_tokens.limit, std::nullopt);
  EXPECT_EQ(info.output_tokens.remaining, std::nullopt);
  EXPECT_THAT(info.retry_after, Optional(absl::Milliseconds(644)));
  EXPECT_THAT(info.should_retry, Optional(false));
  EXPECT_EQ(info.request_id, "req_abc123");

  const RateLimitInfo as_anthropic = ParseRateLimitHeaders(Provider::kAnthropic, headers, now);
  EXPECT_EQ(as_anthropic.requests.limit, std::nullopt);
  EXPECT_EQ(as_anthropic.request_id, "req_abc123");
}

TEST(ParseRateLimitHeadersTest, MinusOneMissingAndGarbageAreUnknown) {
  const absl::Time now = Utc(2025, 1, 12, 23, 12, 0);
  const RateLimitInfo empty = ParseRateLimitHeaders(Provider::kOpenAi, {}, now);
  for (const RateLimitInfo::Dimension* d : {&empty.requests, &empty.tokens}) {
    EXPECT_EQ(d->limit, std::nullopt);
    EXPECT_EQ(d->remaining, std::nullopt);
    EXPECT_EQ(d->reset_in, std::nullopt);
  }
  EXPECT_EQ(empty.retry_after, std::nullopt);
  EXPECT_EQ(empty.should_retry, std::nullopt);
  EXPECT_THAT(empty.request_id, IsEmpty());

  const RateLimitInfo gateway = ParseRateLimitHeaders(Provider::kOpenAi,
                                                      {{"x-ratelimit-limit-requests", "-1"},
                                                       {"x-ratelimit-remaining-requests", "-1"},
                                                       {"x-ratelimit-reset-requests", "-1"},
                                                       {"x-ratelimit-limit-tokens", "abc"},
                                                       {"x-ratelimit-remaining-tokens", "1.5"},
                                                       {"x-ratelimit-reset-tokens", "soon"},
                                                       {"x-should-retry", "maybe"}},
                                                      now);
  EXPECT_EQ(gateway.requests.limit, std::nullopt);
  EXPECT_EQ(gateway.requests.remaining, std::nullopt);
  EXPECT_EQ(gateway.requests.reset_in, std::nullopt);
  EXPECT_EQ(gateway.tokens.limit, std::nullopt);
  EXPECT_EQ(gateway.tokens.remaining, std::nullopt);
  EXPECT_EQ(gateway.tokens.reset_in, std::nullopt);
  EXPECT_EQ(gateway.should_retry, std::nullopt);

  for (const char* garbage :
       {"", "-1", "+5", " ", "1e3", "0x10", "99999999999999999999", "12abc", "1 000"}) {
    const RateLimitInfo info =
        ParseRateLimitHeaders(Provider::kAnthropic,
                              {{"anthropic-ratelimit-requests-limit", garbage},
                               {"anthropic-ratelimit-requests-remaining", garbage},
                               {"anthropic-ratelimit-requests-reset", garbage}},
                              now);
    EXPECT_EQ(info.requests.limit, std::nullopt) << garbage;
    EXPECT_EQ(info.requests.remaining, std::nullopt) << garbage;
    EXPECT_EQ(info.requests.reset_in, std::nullopt) << garbage;
  }
  // Anthropic resets are timestamps, OpenAI's are durations: each refuses the other.
  EXPECT_EQ(ParseRateLimitHeaders(Provider::kAnthropic,
                                  {{"anthropic-ratelimit-tokens-reset", "6m0s"}}, now)
                .tokens.reset_in,
            std::nullopt);
  EXPECT_EQ(ParseRateLimitHeaders(Provider::kOpenAi,
                                  {{"x-ratelimit-reset-tokens", "2025-01-12T23:12:21Z"}}, now)
                .tokens.reset_in,
            std::nullopt);
}

// Numbers from the network are clamped before anything computes with them:
// the largest count int64_t holds becomes kMaxRateLimitCount, so remaining +
// slack or limit x time scale cannot overflow; a reset a century away becomes
// kMaxResetWait.
TEST(ParseRateLimitHeadersTest, LargeNumbersAreClamped) {
  const absl::Time now = Utc(2025, 1, 12, 23, 12, 0);
  const RateLimitInfo openai =
      ParseRateLimitHeaders(Provider::kOpenAi,
                            {{"x-ratelimit-limit-tokens", "9223372036854775807"},
                             {"x-ratelimit-remaining-tokens", "281474976710657"},
                             {"x-ratelimit-reset-tokens", "2562047h47m16.854775807s"}},
                            now);
  EXPECT_THAT(openai.tokens.limit, Optional(kMaxRateLimitCount));
  EXPECT_THAT(openai.tokens.remaining, Optional(kMaxRateLimitCount));
  EXPECT_THAT(openai.tokens.reset_in, Optional(kMaxResetWait));
  const RateLimitInfo anthropic =
      ParseRateLimitHeaders(Provider::kAnthropic,
                            {{"anthropic-ratelimit-requests-remaining", "281474976710655"},
                             {"anthropic-ratelimit-requests-reset", "2999-01-01T00:00:00Z"}},
                            now);
  EXPECT_THAT(anthropic.requests.remaining, Optional(int64_t{281474976710655}));
  EXPECT_THAT(anthropic.requests.reset_in, Optional(kMaxResetWait));
}

// A quota 429's hold is what the server asked, clamped to max_retry_after:
// an infinite or absurd retry-after (which used to overflow now + wait) holds
// no longer than a request would wait; a negative or missing one falls back.
TEST(QuotaHoldTest, IsClampedToMaxRetryAfter) {
  RetryOptions options;
  options.max_retry_after = absl::Seconds(60);
  RateLimitInfo info;
  EXPECT_EQ(QuotaHold(info, options), absl::Seconds(1));
  info.requests.reset_in = absl::Seconds(7);
  EXPECT_EQ(QuotaHold(info, options), absl::Seconds(7));
  info.retry_after = absl::Seconds(3);
  EXPECT_EQ(QuotaHold(info, options), absl::Seconds(3));
  info.retry_after = absl::InfiniteDuration();
  EXPECT_EQ(QuotaHold(info, options), absl::Seconds(60));
  info.retry_after = absl::Hours(5);
  EXPECT_EQ(QuotaHold(info, options), absl::Seconds(60));
  info.retry_after = -absl::Seconds(5);
  EXPECT_EQ(QuotaHold(info, options), absl::ZeroDuration());
  const Headers huge{{"retry-after", "99999999999999999999999"}};
  info = ParseRateLimitHeaders(Provider::kAnthropic, huge, absl::UnixEpoch());
  EXPECT_EQ(info.retry_after, absl::InfiniteDuration());
  EXPECT_EQ(QuotaHold(info, options), absl::Seconds(60));
}

// ---- Classification --------------------------------------------------------

std::string AnthropicError(absl::string_view type, absl::string_view message = "msg") {
  return absl::StrCat(R"({"type":"error","error":{"type":")", type, R"(","message":")", message,
                      R"("},"request_id":"req_body"})");
}

std::string AnthropicSpendError(absl::string_view error_code) {
  return absl::StrCat(
      R"({"type":"error","error":{"type":"rate_limit_error","message":"You have reached your )"
      R"(specified workspace API usage limits.","details":{"error_code":")",
      error_code, R"("}}})");
}

std::string OpenAiError(absl::string_view type, absl::string_view code,
                        absl::string_view message = "msg") {
  return absl::StrCat(R"({"error":{"message":")", message, R"(","type":)",
                      type.empty() ? "null" : absl::StrCat("\"", type, "\""),
                      R"(,"param":null,"code":)",
                      code.empty() ? "null" : absl::StrCat("\"", code, "\""), "}}");
}

constexpr char kAnthropicMessage[] =
    R"({"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4",)"
    R"("content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn",)"
    R"("stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":2}})";
constexpr char kOpenAiCompletion[] =
    R"({"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,)"
    R"("message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],)"
    R"("usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}})";
constexpr char kOpenAiTooLarge[] =
    "Request too large for gpt-4o in organization org-abc on tokens per min (TPM): "
    "Limit 30000, Requested 36278. The input or output tokens must be reduced in order to run "
    "successfully.";

struct ClassifyCase {
  const char* name;
  Provider provider;
  int status;
  std::string body;
  ErrorClass want_class;
  bool want_retryable;
  const char* want_provider_type;
};

std::vector<ClassifyCase> ClassifyCases() {
  constexpr Provider kA = Provider::kAnthropic;
  constexpr Provider kO = Provider::kOpenAi;
  using E = ErrorClass;
  return {
      // Anthropic, every documented status and error type.
      {"a_200", kA, 200, kAnthropicMessage, E::kNone, false, ""},
      {"a_400", kA, 400, AnthropicError("invalid_request_error"), E::kInvalidRequest, false,
       "invalid_request_error"},
      {"a_401", kA, 401, AnthropicError("authentication_error"), E::kAuthentication, false,
       "authentication_error"},
      {"a_402", kA, 402, AnthropicError("billing_error"), E::kBilling, false, "billing_error"},
      {"a_403", kA, 403, AnthropicError("permission_error"), E::kPermission, false,
       "permission_error"},
      {"a_404", kA, 404, AnthropicError("not_found_error"), E::kNotFound, false, "not_found_error"},
      {"a_408", kA, 408, "", E::kRequestTimeout, true, ""},
      {"a_409", kA, 409, "", E::kConflict, true, ""},
      {"a_413", kA, 413, AnthropicError("request_too_large"), E::kRequestTooLarge, false,
       "request_too_large"},
      {"a_429", kA, 429, AnthropicError("rate_limit_error"), E::kRateLimited, true,
       "rate_limit_error"},
      {"a_429_spend_limit", kA, 429, AnthropicSpendError("enforced_spend_limit_reached"),
       E::kQuotaExhausted, false, "enforced_spend_limit_reached"},
      {"a_429_credit", kA, 429, AnthropicSpendError("credit_balance_exhausted"), E::kQuotaExhausted,
       false, "credit_balance_exhausted"},
      {"a_429_unknown_detail", kA, 429, AnthropicSpendError("some_new_code"), E::kRateLimited, true,
       "some_new_code"},
      {"a_429_details_not_object", kA, 429,
       R"({"type":"error","error":{"type":"rate_limit_error","details":"x"}})", E::kRateLimited,
       true, "rate_limit_error"},
      // No message-text matching: words alone do not make a quota error.
      {"a_429_spend_words_only", kA, 429,
       AnthropicError("rate_limit_error", "spend limit reached: insufficient_quota"),
       E::kRateLimited, true, "rate_limit_error"},
      // The "Request too large" exception is OpenAI's alone.
      {"a_429_too_large_words", kA, 429, AnthropicError("rate_limit_error", kOpenAiTooLarge),
       E::kRateLimited, true, "rate_limit_error"},
      {"a_500", kA, 500, AnthropicError("api_error"), E::kServerError, true, "api_error"},
      {"a_500_overloaded", kA, 500, AnthropicError("overloaded_error"), E::kOverloaded, true,
       "overloaded_error"},
      {"a_502_html", kA, 502, "<html><body>502 Bad Gateway</body></html>", E::kServerError, true,
       ""},
      {"a_503", kA, 503, "", E::kOverloaded, true, ""},
      {"a_504", kA, 504, AnthropicError("timeout_error"), E::kServerError, true, "timeout_error"},
      {"a_529", kA, 529, AnthropicError("overloaded_error", "Overloaded"), E::kOverloaded, true,
       "overloaded_error"},
      {"a_529_empty", kA, 529, "", E::kOverloaded, true, ""},
      {"a_418", kA, 418, "", E::kInvalidRequest, false, ""},
      // Malformed error bodies classify by status.
      {"a_429_truncated_json", kA, 429, R"({"type":"error","error":{"type":"rate_lim)",
       E::kRateLimited, true, ""},
      {"a_429_json_array", kA, 429, "[1,2,3]", E::kRateLimited, true, ""},
      {"a_400_wrong_types", kA, 400,
       R"({"error":{"type":5,"message":{"a":1},"details":[1],"code":null}})", E::kInvalidRequest,
       false, ""},
      {"a_401_empty", kA, 401, "", E::kAuthentication, false, ""},
      // 2xx bodies: JSON objects are fine, anything else is malformed; an
      // error object (a streamed "error" event) classifies by its type.
      {"a_200_empty", kA, 200, "", E::kMalformedResponse, false, ""},
      {"a_200_text", kA, 200, "Hello", E::kMalformedResponse, false, ""},
      {"a_200_truncated", kA, 200, R"({"id":"msg_01","type":"mess)", E::kMalformedResponse, false,
       ""},
      {"a_200_array", kA, 200, "[]", E::kMalformedResponse, false, ""},
      {"a_200_string", kA, 200, "\"ok\"", E::kMalformedResponse, false, ""},
      {"a_201_object", kA, 201, "{}", E::kNone, false, ""},
      {"a_200_stream_overloaded", kA, 200, AnthropicError("overloaded_error"), E::kOverloaded, true,
       "overloaded_error"},
      {"a_200_stream_api_error", kA, 200, AnthropicError("api_error"), E::kServerError, true,
       "api_error"},
      {"a_200_stream_rate_limit", kA, 200, AnthropicError("rate_limit_error"), E::kRateLimited,
       true, "rate_limit_error"},
      {"a_200_stream_invalid", kA, 200, AnthropicError("invalid_request_error"), E::kInvalidRequest,
       false, "invalid_request_error"},
      {"a_200_stream_spend", kA, 200, AnthropicSpendError("enforced_spend_limit_reached"),
       E::kQuotaExhausted, false, "enforced_spend_limit_reached"},
      // Not final HTTP answers.
      {"a_100", kA, 100, "", E::kMalformedResponse, false, ""},
      {"a_301", kA, 301, "", E::kMalformedResponse, false, ""},
      {"a_0", kA, 0, "", E::kMalformedResponse, false, ""},
      {"a_negative", kA, -1, "", E::kMalformedResponse, false, ""},
      {"a_600", kA, 600, "", E::kMalformedResponse, false, ""},
      {"a_int_max", kA, INT_MAX, "", E::kMalformedResponse, false, ""},

      // OpenAI.
      {"o_200", kO, 200, kOpenAiCompletion, E::kNone, false, ""},
      {"o_200_error_null", kO, 200, R"({"error":null,"choices":[]})", E::kNone, false, ""},
      {"o_429_rate_limit", kO, 429,
       OpenAiError("tokens", "rate_limit_exceeded",
                   "Rate limit reached for gpt-4o on tokens per min (TPM): Limit 30000, Used "
                   "29000, Requested 1500. Please try again in 644ms."),
       E::kRateLimited, true, "rate_limit_exceeded"},
      {"o_429_requests_no_code", kO, 429, OpenAiError("requests", ""), E::kRateLimited, true,
       "requests"},
      {"o_429_insufficient_quota", kO, 429,
       OpenAiError("insufficient_quota", "insufficient_quota",
                   "You exceeded your current quota, please check your plan and billing details."),
       E::kQuotaExhausted, false, "insufficient_quota"},
      {"o_429_quota_type_only", kO, 429, OpenAiError("insufficient_quota", ""), E::kQuotaExhausted,
       false, "insufficient_quota"},
      {"o_429_quota_code_only", kO, 429, OpenAiError("", "insufficient_quota"), E::kQuotaExhausted,
       false, "insufficient_quota"},
      {"o_429_credit", kO, 429, OpenAiError("", "credit_balance_exhausted"), E::kQuotaExhausted,
       false, "credit_balance_exhausted"},
      {"o_429_too_large", kO, 429, OpenAiError("tokens", "rate_limit_exceeded", kOpenAiTooLarge),
       E::kRequestTooLarge, false, "rate_limit_exceeded"},
      {"o_400_too_large", kO, 400, OpenAiError("invalid_request_error", "", kOpenAiTooLarge),
       E::kRequestTooLarge, false, "invalid_request_error"},
      {"o_413", kO, 413, "", E::kRequestTooLarge, false, ""},
      {"o_400_context", kO, 400, OpenAiError("invalid_request_error", "context_length_exceeded"),
       E::kInvalidRequest, false, "context_length_exceeded"},
      {"o_401", kO, 401, OpenAiError("invalid_request_error", "invalid_api_key"),
       E::kAuthentication, false, "invalid_api_key"},
      {"o_402", kO, 402, "", E::kBilling, false, ""},
      {"o_403", kO, 403, OpenAiError("request_forbidden", "unsupported_country_region_territory"),
       E::kPermission, false, "unsupported_country_region_territory"},
      {"o_404", kO, 404, OpenAiError("invalid_request_error", "model_not_found"), E::kNotFound,
       false, "model_not_found"},
      {"o_408", kO, 408, "", E::kRequestTimeout, true, ""},
      {"o_409", kO, 409, "", E::kConflict, true, ""},
      {"o_422", kO, 422, OpenAiError("invalid_request_error", ""), E::kInvalidRequest, false,
       "invalid_request_error"},
      {"o_500", kO, 500, OpenAiError("server_error", ""), E::kServerError, true, "server_error"},
      // "Request too large" is a 4xx rule; a 5xx with those words is a server error.
      {"o_500_too_large_words", kO, 500, OpenAiError("server_error", "", kOpenAiTooLarge),
       E::kServerError, true, "server_error"},
      {"o_502", kO, 502, "Bad gateway", E::kServerError, true, ""},
      {"o_503", kO, 503, OpenAiError("server_error", "", "The engine is currently overloaded."),
       E::kOverloaded, true, "server_error"},
      {"o_504", kO, 504, "", E::kServerError, true, ""},
      {"o_429_error_is_string", kO, 429, R"({"error":"rate limited"})", E::kRateLimited, true, ""},
      {"o_429_code_is_number", kO, 429, R"({"error":{"code":429,"type":"tokens"}})",
       E::kRateLimited, true, "tokens"},
      {"o_429_garbage", kO, 429, "\xff\xfe\x00garbage", E::kRateLimited, true, ""},
      {"o_200_stream_error", kO, 200, OpenAiError("tokens", "rate_limit_exceeded"), E::kRateLimited,
       true, "rate_limit_exceeded"},
      {"o_200_stream_quota", kO, 200, OpenAiError("insufficient_quota", "insufficient_quota"),
       E::kQuotaExhausted, false, "insufficient_quota"},
      {"o_200_stream_server", kO, 200, OpenAiError("server_error", ""), E::kServerError, true,
       "server_error"},
      {"o_200_malformed", kO, 200, "not json", E::kMalformedResponse, false, ""},
  };
}

TEST(ClassifyResponseTest, Table) {
  for (const ClassifyCase& c : ClassifyCases()) {
    SCOPED_TRACE(c.name);
    const Classification got = ClassifyResponse(c.provider, c.status, c.body, {});
    EXPECT_EQ(ErrorClassName(got.error_class), ErrorClassName(c.want_class));
    EXPECT_EQ(got.retryable, c.want_retryable);
    EXPECT_EQ(got.provider_type, c.want_provider_type);
    EXPECT_EQ(got.http_status, c.status);
    if (got.error_class == ErrorClass::kNone) {
      EXPECT_THAT(got.message, IsEmpty());
    } else {
      EXPECT_THAT(got.message, Not(IsEmpty()));
      EXPECT_LE(got.message.size(), 1003u);
    }
  }
}

TEST(ClassifyResponseTest, KeepsTheProviderMessageAndRequestId) {
  const Classification a =
      ClassifyResponse(Provider::kAnthropic, 429,
                       AnthropicError("rate_limit_error", "Number of requests has exceeded"), {});
  EXPECT_EQ(a.message, "Number of requests has exceeded");
  EXPECT_EQ(a.request_id, "req_body");  // from the body when no header

  const Classification from_header =
      ClassifyResponse(Provider::kAnthropic, 429, AnthropicError("rate_limit_error"),
                       {{"Request-Id", "req_header"}});
  EXPECT_EQ(from_header.request_id, "req_header");

  const Classification openai =
      ClassifyResponse(Provider::kOpenAi, 200, kOpenAiCompletion, {{"x-request-id", "req_openai"}});
  EXPECT_EQ(openai.request_id, "req_openai");
  EXPECT_THAT(openai.message, IsEmpty());
}

TEST(ClassifyResponseTest, NonJsonBodiesAreQuotedEscapedAndShort) {
  const Classification html =
      ClassifyResponse(Provider::kOpenAi, 502, "<html>502 Bad Gateway</html>\r\n", {});
  EXPECT_THAT(html.message, StartsWith("HTTP 502 with a body that is not a JSON object"));
  EXPECT_THAT(html.message, HasSubstr("<html>502 Bad Gateway</html>\\r\\n"));

  const Classification empty = ClassifyResponse(Provider::kOpenAi, 503, "", {});
  EXPECT_EQ(empty.message, "HTTP 503 with an empty body");

  // 1 MiB of seeded random bytes.
  std::mt19937_64 gen(7);
  std::string garbage(1 << 20, '\0');
  for (char& c : garbage) c = static_cast<char>(gen());
  const Classification huge = ClassifyResponse(Provider::kAnthropic, 500, garbage, {});
  EXPECT_EQ(huge.error_class, ErrorClass::kServerError);
  EXPECT_TRUE(huge.retryable);
  EXPECT_LT(huge.message.size(), 1000u);
  EXPECT_THAT(huge.message, HasSubstr("(1048576 bytes)"));
}

TEST(ClassifyResponseTest, LongMessagesAreCutOnACharacterBoundary) {
  std::string long_message;
  for (int i = 0; i < 3000; ++i) long_message += "\xC3\xA9";  // é, two bytes
  const Classification got = ClassifyResponse(
      Provider::kAnthropic, 400, AnthropicError("invalid_request_error", "x" + long_message), {});
  EXPECT_THAT(got.message, SizeIs(::testing::Le(1003u)));
  ASSERT_THAT(got.message, ::testing::EndsWith("..."));
  // 'x' then whole two-byte characters: an odd length before the "...".
  EXPECT_EQ((got.message.size() - 3) % 2, 1u);
}

TEST(ClassifyResponseTest, DeeplyNestedJsonDoesNotCrash) {
  const std::string nested = std::string(100000, '[') + std::string(100000, ']');
  const Classification got = ClassifyResponse(Provider::kOpenAi, 429, nested, {});
  EXPECT_EQ(got.error_class, ErrorClass::kRateLimited);
  const std::string objects = [] {
    std::string s;
    for (int i = 0; i < 50000; ++i) s += R"({"error":)";
    return s;
  }();
  EXPECT_EQ(ClassifyResponse(Provider::kAnthropic, 200, objects, {}).error_class,
            ErrorClass::kMalformedResponse);
}

TEST(ClassifyResponseTest, RandomInputsNeverCrash) {
  std::mt19937_64 gen(12345);
  const std::string fragments[] = {"{",
                                   "}",
                                   "[",
                                   "]",
                                   "\"error\"",
                                   ":",
                                   ",",
                                   "\"type\"",
                                   "\"code\"",
                                   "\"details\"",
                                   "\"error_code\"",
                                   "null",
                                   "1",
                                   "\"insufficient_quota\"",
                                   "\"message\"",
                                   "\"Request too large",
                                   "\xff",
                                   "\\u00"};
  for (int i = 0; i < 5000; ++i) {
    std::string body;
    const int n = static_cast<int>(gen() % 40);
    for (int j = 0; j < n; ++j) body += fragments[gen() % std::size(fragments)];
    const int status = static_cast<int>(gen() % 700) - 50;
    const Provider provider = gen() % 2 ? Provider::kAnthropic : Provider::kOpenAi;
    const Classification got = ClassifyResponse(provider, status, body, {});
    EXPECT_NE(ErrorClassName(got.error_class), "unknown");
  }
}

TEST(ClassifyResponseTest, ShouldRetryHeaderOverrides) {
  const auto classify = [](Provider provider, int status, const std::string& body,
                           const char* should_retry) {
    return ClassifyResponse(provider, status, body, {{"X-Should-Retry", should_retry}});
  };
  // false stops a retryable 429 and 5xx.
  EXPECT_FALSE(
      classify(Provider::kAnthropic, 429, AnthropicError("rate_limit_error"), "false").retryable);
  EXPECT_FALSE(classify(Provider::kOpenAi, 500, "", "false").retryable);
  // true makes a 400 retryable, as the SDKs let it ...
  EXPECT_TRUE(classify(Provider::kAnthropic, 400, AnthropicError("invalid_request_error"), "true")
                  .retryable);
  EXPECT_TRUE(classify(Provider::kOpenAi, 401, "", "TRUE").retryable);
  // ... but never a quota, spend-limit or too-large error.
  const Classification quota = classify(
      Provider::kOpenAi, 429, OpenAiError("insufficient_quota", "insufficient_quota"), "true");
  EXPECT_EQ(quota.error_class, ErrorClass::kQuotaExhausted);
  EXPECT_FALSE(quota.retryable);
  EXPECT_FALSE(classify(Provider::kAnthropic, 429,
                        AnthropicSpendError("enforced_spend_limit_reached"), "true")
                   .retryable);
  EXPECT_FALSE(
      classify(Provider::kOpenAi, 400, OpenAiError("", "", kOpenAiTooLarge), "true").retryable);
  EXPECT_FALSE(classify(Provider::kAnthropic, 413, "", "true").retryable);
  // Unreadable values change nothing; a success is never "retryable".
  EXPECT_TRUE(classify(Provider::kOpenAi, 503, "", "maybe").retryable);
  EXPECT_FALSE(classify(Provider::kOpenAi, 400, "", "1").retryable);
  EXPECT_FALSE(classify(Provider::kOpenAi, 200, kOpenAiCompletion, "true").retryable);
}

TEST(ClassifyTransportErrorTest, IsARetryableConnectionFailure) {
  const Classification got = ClassifyTransportError("Failed to connect to api.anthropic.com");
  EXPECT_EQ(got.error_class, ErrorClass::kConnection);
  EXPECT_TRUE(got.retryable);
  EXPECT_EQ(got.http_status, 0);
  EXPECT_EQ(got.message, "Failed to connect to api.anthropic.com");
}

TEST(ErrorClassNameTest, EveryClassHasADistinctSnakeCaseName) {
  std::vector<std::string> names;
  for (int i = 0; i <= static_cast<int>(ErrorClass::kConnection); ++i) {
    const absl::string_view name = ErrorClassName(static_cast<ErrorClass>(i));
    EXPECT_NE(name, "unknown") << i;
    EXPECT_THAT(std::string(name), ::testing::MatchesRegex("[a-z_]+")) << i;
    EXPECT_THAT(names, Not(::testing::Contains(std::string(name))));
    names.emplace_back(name);
  }
  EXPECT_EQ(ErrorClassName(ErrorClass::kRateLimited), "rate_limited");
  EXPECT_EQ(ErrorClassName(ErrorClass::kQuotaExhausted), "quota_exhausted");
}

// ---- Retry policy ----------------------------------------------------------

TEST(ValidateRetryOptionsTest, NamesTheBadField) {
  EXPECT_TRUE(ValidateRetryOptions({}).ok());
  EXPECT_TRUE(ValidateRetryOptions({.max_attempts = 1,
                                    .base = absl::Seconds(1),
                                    .cap = absl::Seconds(1),
                                    .max_retry_after = absl::ZeroDuration()})
                  .ok());
  const std::pair<RetryOptions, const char*> bad[] = {
      {{.max_attempts = 0}, "max_attempts"},
      {{.base = absl::ZeroDuration()}, "base"},
      {{.base = -absl::Seconds(1)}, "base"},
      {{.base = absl::InfiniteDuration()}, "base"},
      {{.base = absl::Seconds(2), .cap = absl::Seconds(1)}, "cap"},
      {{.cap = absl::InfiniteDuration()}, "cap"},
      {{.max_retry_after = -absl::Seconds(1)}, "max_retry_after"},
      {{.max_retry_after = absl::InfiniteDuration()}, "max_retry_after"},
  };
  for (const auto& [options, field] : bad) {
    const absl::Status status = ValidateRetryOptions(options);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(std::string(status.message()), StartsWith(field));
  }
}

Classification Failure(ErrorClass error_class, int status, bool retryable,
                       std::string provider_type = "") {
  Classification failure;
  failure.error_class = error_class;
  failure.http_status = status;
  failure.retryable = retryable;
  failure.provider_type = std::move(provider_type);
  return failure;
}

TEST(DecideRetryTest, NeverRetriesWhatIsNotRetryable) {
  std::mt19937_64 gen(1);
  const RetryOptions options;
  const Classification cases[] = {
      ClassifyResponse(Provider::kOpenAi, 429,
                       OpenAiError("insufficient_quota", "insufficient_quota"), {}),
      ClassifyResponse(Provider::kAnthropic, 429,
                       AnthropicSpendError("enforced_spend_limit_reached"), {}),
      ClassifyResponse(Provider::kOpenAi, 429, OpenAiError("tokens", "x", kOpenAiTooLarge), {}),
      ClassifyResponse(Provider::kAnthropic, 400, AnthropicError("invalid_request_error"), {}),
      ClassifyResponse(Provider::kAnthropic, 401, "", {}),
      ClassifyResponse(Provider::kAnthropic, 402, "", {}),
      ClassifyResponse(Provider::kAnthropic, 403, "", {}),
      ClassifyResponse(Provider::kAnthropic, 404, "", {}),
      ClassifyResponse(Provider::kAnthropic, 413, "", {}),
      ClassifyResponse(Provider::kAnthropic, 200, "garbage", {}),
  };
  for (const Classification& failure : cases) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      for (std::optional<absl::Duration> retry_after :
           {std::optional<absl::Duration>(), std::optional(absl::Seconds(1))}) {
        const RetryDecision decision = DecideRetry(options, attempt, failure, retry_after, gen);
        EXPECT_FALSE(decision.retry) << decision.reason;
        EXPECT_EQ(decision.delay, absl::ZeroDuration());
        EXPECT_THAT(decision.reason, StartsWith("not retryable: "));
      }
    }
  }
  EXPECT_EQ(DecideRetry(options, 0, cases[0], std::nullopt, gen).reason,
            "not retryable: quota_exhausted (insufficient_quota)");
  EXPECT_EQ(DecideRetry(options, 0, cases[1], std::nullopt, gen).reason,
            "not retryable: quota_exhausted (enforced_spend_limit_reached)");
  EXPECT_EQ(DecideRetry(options, 0, cases[4], std::nullopt, gen).reason,
            "not retryable: authentication");
}

TEST(DecideRetryTest, AttemptBudget) {
  std::mt19937_64 gen(1);
  const Classification overloaded = Failure(ErrorClass::kOverloaded, 529, true);
  const RetryOptions options;  // 3 attempts
  EXPECT_TRUE(DecideRetry(options, 0, overloaded, std::nullopt, gen).retry);
  EXPECT_TRUE(DecideRetry(options, 1, overloaded, std::nullopt, gen).retry);
  const RetryDecision spent = DecideRetry(options, 2, overloaded, std::nullopt, gen);
  EXPECT_FALSE(spent.retry);
  EXPECT_EQ(spent.delay, absl::ZeroDuration());
  EXPECT_EQ(spent.reason, "529 overloaded: attempt budget of 3 spent");
  // The budget also bounds retries the server asked for.
  EXPECT_FALSE(DecideRetry(options, 2, overloaded, absl::Seconds(1), gen).retry);
  EXPECT_FALSE(DecideRetry(options, INT_MAX, overloaded, std::nullopt, gen).retry);
  EXPECT_FALSE(DecideRetry({.max_attempts = 1}, 0, overloaded, std::nullopt, gen).retry);
  // Clamped: a negative attempt is the first.
  EXPECT_TRUE(DecideRetry(options, -5, overloaded, std::nullopt, gen).retry);
  EXPECT_FALSE(DecideRetry({.max_attempts = 0}, 0, overloaded, std::nullopt, gen).retry);
}

TEST(DecideRetryTest, HonorsRetryAfterExactlyAndFailsFastPastTheCap) {
  std::mt19937_64 gen(1);
  const Classification rate_limited = Failure(ErrorClass::kRateLimited, 429, true);
  const RetryOptions options;  // max_retry_after 60 s

  const RetryDecision two = DecideRetry(options, 0, rate_limited, absl::Seconds(2), gen);
  EXPECT_TRUE(two.retry);
  EXPECT_EQ(two.delay, absl::Seconds(2));
  EXPECT_EQ(two.reason, "429 rate_limited: honoring retry-after 2s");

  // Honored exactly even below the backoff floor, and at the cap itself.
  EXPECT_EQ(DecideRetry(options, 1, rate_limited, absl::Milliseconds(1), gen).delay,
            absl::Milliseconds(1));
  EXPECT_EQ(DecideRetry(options, 1, rate_limited, absl::Seconds(60), gen).delay, absl::Seconds(60));

  for (absl::Duration too_long :
       {absl::Seconds(60) + absl::Nanoseconds(1), absl::Hours(24), absl::InfiniteDuration()}) {
    const RetryDecision decision = DecideRetry(options, 0, rate_limited, too_long, gen);
    EXPECT_FALSE(decision.retry) << too_long;
    EXPECT_EQ(decision.delay, absl::ZeroDuration());
    EXPECT_THAT(decision.reason, HasSubstr("failing fast"));
  }
  EXPECT_EQ(DecideRetry(options, 0, rate_limited, absl::Seconds(90), gen).reason,
            "429 rate_limited: server asked to wait 1m30s, over max_retry_after 1m: failing fast");
  // OpenAI's SDK waits up to 120 s: a caller may choose that.
  EXPECT_TRUE(
      DecideRetry({.max_retry_after = absl::Seconds(120)}, 0, rate_limited, absl::Seconds(90), gen)
          .retry);

  // Zero or negative is no server wait: backoff applies.
  for (absl::Duration none : {absl::ZeroDuration(), -absl::Seconds(1)}) {
    const RetryDecision decision = DecideRetry(options, 0, rate_limited, none, gen);
    EXPECT_TRUE(decision.retry);
    EXPECT_GE(decision.delay, absl::Milliseconds(375));
    EXPECT_LE(decision.delay, absl::Seconds(1));
    EXPECT_THAT(decision.reason, StartsWith("429 rate_limited: backing off "));
  }
}

// The official SDKs' shortest wait after failed attempt n:
// 0.75 * min(0.5 s * 2^n, 8 s).
absl::Duration SdkShortest(int attempt) {
  const double seconds = std::min(0.5 * std::pow(2.0, std::min(attempt, 60)), 8.0);
  return absl::Seconds(0.75 * seconds);
}

TEST(DecideRetryTest, BackoffStaysWithinFloorAndCeilingOverManySeeds) {
  struct Bounds {
    int attempt;
    absl::Duration floor;
    absl::Duration ceiling;
  };
  const Bounds bounds[] = {
      {0, absl::Milliseconds(375), absl::Seconds(1)},
      {1, absl::Milliseconds(750), absl::Seconds(2)},
      {2, absl::Milliseconds(1500), absl::Seconds(4)},
      {3, absl::Seconds(3), absl::Seconds(8)},
      {4, absl::Seconds(6), absl::Seconds(8)},  // the ceiling is capped from here on
      {5, absl::Seconds(6), absl::Seconds(8)},
      {20, absl::Seconds(6), absl::Seconds(8)},
      {62, absl::Seconds(6), absl::Seconds(8)},
      {63, absl::Seconds(6), absl::Seconds(8)},
      {1000, absl::Seconds(6), absl::Seconds(8)},
      {INT_MAX - 2, absl::Seconds(6), absl::Seconds(8)},
  };
  const RetryOptions options{.max_attempts = INT_MAX};
  const Classification server_error = Failure(ErrorClass::kServerError, 500, true);
  constexpr int kSeeds = 4000;
  for (const Bounds& b : bounds) {
    SCOPED_TRACE(absl::StrCat("attempt ", b.attempt));
    EXPECT_GE(b.floor, SdkShortest(b.attempt));
    absl::Duration lowest = absl::InfiniteDuration();
    absl::Duration highest = -absl::InfiniteDuration();
    absl::Duration sum;
    for (int seed = 0; seed < kSeeds; ++seed) {
      std::mt19937_64 gen(seed);
      const RetryDecision decision =
          DecideRetry(options, b.attempt, server_error, std::nullopt, gen);
      ASSERT_TRUE(decision.retry);
      ASSERT_GE(decision.delay, b.floor);
      ASSERT_GE(decision.delay, SdkShortest(b.attempt));
      ASSERT_LE(decision.delay, b.ceiling);
      lowest = std::min(lowest, decision.delay);
      highest = std::max(highest, decision.delay);
      sum += decision.delay;
    }
    // Uniform: both ends are approached and the mean is the midpoint.
    const absl::Duration range = b.ceiling - b.floor;
    EXPECT_LT(lowest - b.floor, range / 100);
    EXPECT_LT(b.ceiling - highest, range / 100);
    EXPECT_LT(absl::AbsDuration(sum / kSeeds - (b.floor + b.ceiling) / 2), range / 25);
  }
}

TEST(DecideRetryTest, CustomBaseAndCap) {
  const Classification timeout = Failure(ErrorClass::kRequestTimeout, 408, true);
  const auto range = [&](const RetryOptions& options, int attempt) {
    absl::Duration lowest = absl::InfiniteDuration();
    absl::Duration highest = -absl::InfiniteDuration();
    for (int seed = 0; seed < 2000; ++seed) {
      std::mt19937_64 gen(seed);
      const absl::Duration delay = DecideRetry(options, attempt, timeout, std::nullopt, gen).delay;
      lowest = std::min(lowest, delay);
      highest = std::max(highest, delay);
    }
    return std::make_pair(lowest, highest);
  };
  const RetryOptions fast{
      .max_attempts = 10, .base = absl::Milliseconds(100), .cap = absl::Seconds(1)};
  auto [low, high] = range(fast, 0);
  EXPECT_GE(low, absl::Milliseconds(75));
  EXPECT_LE(high, absl::Milliseconds(200));
  std::tie(low, high) = range(fast, 3);  // min(0.8 s, 1 s) -> floor 0.6 s; ceiling min(1 s, 1.6 s)
  EXPECT_GE(low, absl::Milliseconds(600));
  EXPECT_LE(high, absl::Seconds(1));
  EXPECT_GT(high, absl::Milliseconds(990));

  // base == cap: the floor is 3/4 of it, rounded up to whole nanoseconds.
  std::tie(low, high) = range({.base = absl::Nanoseconds(5), .cap = absl::Nanoseconds(5)}, 0);
  EXPECT_EQ(low, absl::Nanoseconds(4));  // ceil(3.75)
  EXPECT_EQ(high, absl::Nanoseconds(5));
  std::tie(low, high) = range({.base = absl::Nanoseconds(1), .cap = absl::Nanoseconds(1)}, 0);
  EXPECT_EQ(low, absl::Nanoseconds(1));
  EXPECT_EQ(high, absl::Nanoseconds(1));
}

TEST(DecideRetryTest, DeterministicForASeed) {
  const Classification connection = ClassifyTransportError("connection reset");
  const RetryOptions options{.max_attempts = 10};
  const auto delays = [&](uint64_t seed) {
    std::mt19937_64 gen(seed);
    std::vector<absl::Duration> out;
    for (int attempt = 0; attempt < 9; ++attempt) {
      out.push_back(DecideRetry(options, attempt, connection, std::nullopt, gen).delay);
    }
    return out;
  };
  EXPECT_EQ(delays(42), delays(42));
  EXPECT_NE(delays(42), delays(43));
}

TEST(DecideRetryTest, ReasonsNameTheFailureAndTheNextAttempt) {
  std::mt19937_64 gen(3);
  const RetryDecision overloaded =
      DecideRetry({}, 0, Failure(ErrorClass::kOverloaded, 503, true), std::nullopt, gen);
  EXPECT_THAT(overloaded.reason, StartsWith("503 overloaded: backing off "));
  EXPECT_THAT(overloaded.reason, ::testing::EndsWith(" before attempt 2 of 3"));
  EXPECT_THAT(overloaded.reason, HasSubstr(absl::FormatDuration(overloaded.delay)));
  const RetryDecision connection =
      DecideRetry({}, 1, ClassifyTransportError("reset"), std::nullopt, gen);
  EXPECT_THAT(connection.reason, StartsWith("connection: backing off "));
  EXPECT_THAT(connection.reason, ::testing::EndsWith(" before attempt 3 of 3"));
}

TEST(DecideRetryTest, WorksThroughAbslGenerators) {
  absl::BitGen bitgen;
  const RetryDecision decision =
      DecideRetry({}, 0, Failure(ErrorClass::kServerError, 500, true), std::nullopt, bitgen);
  EXPECT_TRUE(decision.retry);
  EXPECT_GE(decision.delay, absl::Milliseconds(375));
  EXPECT_LE(decision.delay, absl::Seconds(1));
}

// ---- Replies ----------------------------------------------------------------

TEST(ParseReplyTest, ReadsBothProvidersShapes) {
  const auto anthropic = ParseReply(Provider::kAnthropic, nlohmann::json::parse(R"({
    "content": [{"type": "text", "text": "Hi"}, {"type": "tool_use"}, {"type": "text", "text": "!"}],
    "usage": {"input_tokens": 12, "output_tokens": 3, "cache_creation_input_tokens": 4,
              "cache_read_input_tokens": 5}})"));
  ASSERT_TRUE(anthropic.has_value());
  EXPECT_EQ(anthropic->text, "Hi!");
  EXPECT_EQ(anthropic->usage.input_tokens, 12u);
  EXPECT_EQ(anthropic->usage.output_tokens, 3u);
  EXPECT_EQ(anthropic->usage.cache_creation_input_tokens, 4u);
  EXPECT_EQ(anthropic->usage.cache_read_input_tokens, 5u);
  const auto openai = ParseReply(Provider::kOpenAi, nlohmann::json::parse(R"({
    "choices": [{"message": {"content": "Hello"}}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2,
              "prompt_tokens_details": {"cached_tokens": 4}}})"));
  ASSERT_TRUE(openai.has_value());
  EXPECT_EQ(openai->text, "Hello");
  EXPECT_EQ(openai->usage.input_tokens, 6u);
  EXPECT_EQ(openai->usage.cache_read_input_tokens, 4u);
  EXPECT_EQ(openai->usage.output_tokens, 2u);
}

// Whatever JSON a server sends, the parser answers without throwing (a
// non-object choice used to throw out of the client's loop), and token
// counts are clamped before settling does arithmetic with them.
TEST(ParseReplyTest, HostileJsonIsNotAReplyOrIsClamped) {
  for (const char* body : {R"([])", R"("x")", R"({"usage": 5})", R"({"usage": {}})",
                           R"({"usage": {}, "choices": []})", R"({"usage": {}, "content": {}})"}) {
    EXPECT_EQ(ParseReply(Provider::kOpenAi, nlohmann::json::parse(body)), std::nullopt) << body;
    EXPECT_EQ(ParseReply(Provider::kAnthropic, nlohmann::json::parse(body)), std::nullopt) << body;
  }
  const auto odd = ParseReply(Provider::kOpenAi, nlohmann::json::parse(R"({
    "choices": [1, {"message": {"content": "later"}}],
    "usage": {"prompt_tokens": 18446744073709551615, "completion_tokens": -3,
              "prompt_tokens_details": []}})"));
  ASSERT_TRUE(odd.has_value());
  EXPECT_EQ(odd->text, "");
  EXPECT_EQ(odd->usage.input_tokens, kMaxUsageTokens);
  EXPECT_EQ(odd->usage.output_tokens, 0u);
  const auto blocks = ParseReply(Provider::kAnthropic, nlohmann::json::parse(R"({
    "content": [3, {"type": "text", "text": 7}, {"type": 1}],
    "usage": {"input_tokens": "12", "output_tokens": 1e300}})"));
  ASSERT_TRUE(blocks.has_value());
  EXPECT_EQ(blocks->text, "");
  EXPECT_EQ(blocks->usage.input_tokens, 0u);
  EXPECT_EQ(blocks->usage.output_tokens, 0u);
}

// A key's name that reveals nothing of it: its SHA-256, in lowercase hex
// (the FIPS 180-2 test vectors).
TEST(KeyFingerprintTest, IsTheLowercaseHexSha256OfTheKey) {
  EXPECT_EQ(KeyFingerprint("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(KeyFingerprint(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(KeyFingerprint("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_NE(KeyFingerprint("sk-a"), KeyFingerprint("sk-b"));
}

}  // namespace
}  // namespace sluice
