// The scheduler as a proxy uses it, on a fake clock over a scripted
// transport: unthrottled requests, per-request throttle limits, the start
// hook, withdrawing a reservation, per-key provider accounts, and settling
// replies passed on piece by piece.
#include <zlib.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/client.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/store.h"
#include "tests/client/scheduler_rig.h"
#include "tests/client/scripted_transport.h"

namespace sluice {
namespace {

using namespace scheduler_rig;  // NOLINT: the rig is this test's vocabulary
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// `reply` with its body gzip-compressed, in three pieces split anywhere.
ScriptedReply Gzipped(ScriptedReply reply) {
  const std::string plain = absl::StrJoin(reply.chunks, "");
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY),
            Z_OK);
  std::string out(deflateBound(&z, plain.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(plain.data()));
  z.avail_in = static_cast<uInt>(plain.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(out.size() - z.avail_out);
  deflateEnd(&z);
  const size_t third = out.size() / 3;
  reply.chunks = {out.substr(0, third), out.substr(third, third), out.substr(2 * third)};
  reply.headers.Set("content-encoding", "gzip");
  return reply;
}

// An unthrottled request (a proxy's pass-through path) is sent when due,
// whatever the buckets hold: it reserves nothing, and its response's
// rate-limit headers, even a quota 429's, change no bucket.
TEST(SchedulerTest, AnUnthrottledRequestReservesNothingAndFeedsNothingBack) {
  ClientOptions options = Options();
  options.retry.max_attempts = 1;
  Rig rig(
      [](const TransportRequest&) {
        return AnthropicError(
            429, "rate_limit_error",
            {{"retry-after", "30"}, {"anthropic-ratelimit-requests-remaining", "0"}});
      },
      options, absl::StrCat(kProviderTenAtOnce, kOneASecond));
  const auto full = Levels(rig);
  std::vector<CallRequest> requests(3, CallRequest::Simple("m", "hi", 4));
  for (CallRequest& r : requests) r.throttled = false;
  for (const CallResult& r : RunAll(rig, requests)) {
    EXPECT_EQ(r.http_status, 429);
    EXPECT_EQ(r.throttle_wait, absl::ZeroDuration());
  }
  ASSERT_EQ(rig.transport->sent().size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(rig.transport->sent()[i].at_ns, kStart) << i;
  EXPECT_EQ(Levels(rig), full);
  // A throttled request pays, and its 429 holds the provider's buckets.
  RunAll(rig, {CallRequest::Simple("m", "hi", 4)});
  EXPECT_EQ(rig.transport->sent().size(), 4u);
  EXPECT_LT(Levels(rig).at("scope:global:rpm"), full.at("scope:global:rpm"));
  EXPECT_EQ(Levels(rig).at("provider:anthropic:default:rpm"), 0);  // held, not 9
}

// A request's own throttle timeout replaces the client's, for a wait on the
// buckets and for one on a full concurrency cap.
TEST(SchedulerTest, ARequestsOwnThrottleTimeoutReplacesTheClients) {
  Rig rig([](const TransportRequest&) { return AnthropicOk(absl::Seconds(5)); }, WarmOptions(),
          R"(
[scopes.global]
requests_per_minute = 60
[scopes.global.burst]
requests_per_minute = 1
[scopes.capped]
requests_per_minute = 100000
max_concurrency = 1
)");
  std::vector<CallRequest> requests(3, CallRequest::Simple("m", "hi", 4));
  requests[1].throttle_timeout = absl::Milliseconds(500);  // the next permit is 1 s away
  requests[2].throttle_timeout = absl::Seconds(2);
  std::vector<CallResult> results = RunAll(rig, requests);
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_EQ(results[1].status.code(), absl::StatusCode::kDeadlineExceeded) << results[1].status;
  EXPECT_THAT(results[1].status.message(), HasSubstr("scope:global:rpm"));
  EXPECT_TRUE(results[2].status.ok()) << results[2].status;
  EXPECT_EQ(results[2].throttle_wait, absl::Seconds(1));

  // The cap is held for 5 s by the first request: 100 ms is not enough.
  std::vector<CallRequest> capped(2, CallRequest::Simple("m", "hi", 4));
  for (CallRequest& r : capped) r.scope = "capped";
  capped[1].throttle_timeout = absl::Milliseconds(100);
  const int64_t start = rig.clock.Now();
  results = RunAll(rig, capped);
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_EQ(results[1].status.code(), absl::StatusCode::kDeadlineExceeded) << results[1].status;
  EXPECT_THAT(results[1].status.message(), HasSubstr("scope:capped:concurrency"));
  EXPECT_THAT(results[1].status.message(), HasSubstr("within 100ms"));
  EXPECT_EQ(rig.transport->sent().back().at_ns, start);  // only the first was sent
}

// on_start runs once per request, on the loop's thread, as its first attempt
// is handed to the transport: after its permits and its start time, not
// again for a retry, and never for a request that does not start.
TEST(SchedulerTest, OnStartRunsOnceWhenTheFirstAttemptGoesOut) {
  int calls = 0;
  Rig rig(
      [&](const TransportRequest&) {
        return calls++ == 0 ? AnthropicError(529, "overloaded_error") : AnthropicOk();
      },
      Options(), kOneASecond);
  std::vector<int64_t> started(4, -1);
  std::vector<size_t> sent_before(4, 0);
  std::vector<CallRequest> requests(4, CallRequest::Simple("m", "hi", 4));
  for (size_t i = 0; i < requests.size(); ++i) {
    requests[i].on_start = [&, i] {
      EXPECT_EQ(started[i], -1) << "twice: " << i;
      started[i] = rig.clock.Now();
      sent_before[i] = rig.transport->sent().size();
    };
  }
  requests[2].throttle_timeout = absl::Milliseconds(10);  // times out waiting
  requests[3].body["max_tokens"] = uint64_t{1} << 40;     // still starts: no token limit
  requests[3].scope = "global";
  const std::vector<CallResult> results = RunAll(rig, requests);
  ASSERT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_EQ(results[0].attempts, 2);  // the 529, then the reply
  EXPECT_EQ(started[0], kStart);
  EXPECT_EQ(sent_before[0], 0u);                // before the transport had it
  EXPECT_EQ(started[1], kStart + 1'000 * kMs);  // at its reserved start
  EXPECT_EQ(results[2].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(started[2], -1);
  EXPECT_EQ(started[3], kStart + 2'000 * kMs);

  // Cancelled while it waits: never started.
  bool ran = false;
  CallRequest later = CallRequest::Simple("m", "hi", 4);
  later.not_before_ns = rig.clock.Now() + 60'000 * kMs;
  later.on_start = [&] { ran = true; };
  const Client::Handle h = rig.client->Submit(later, [](CallResult) {});
  rig.transport->on_poll = [&] {
    rig.client->Cancel(h);
    rig.client->Stop();
  };
  rig.client->Serve();
  EXPECT_FALSE(ran);
}

// Provider accounts: each request draws from its account's provider
// buckets, explicit or named by the key it is sent with; a quota 429 for
// one key holds that key's buckets only. The scopes stay shared.
TEST(SchedulerTest, EachKeysQuotaIsItsOwnWithAccountPerKey) {
  for (bool per_key : {false, true}) {
    SCOPED_TRACE(per_key ? "account_per_key" : "shared");
    ClientOptions options = Options();
    options.account_per_key = per_key;
    options.retry.max_attempts = 1;
    Rig rig(
        [](const TransportRequest& t) {
          for (const std::string& h : t.headers) {
            if (h == "x-api-key: sk-limited") {
              return AnthropicError(429, "rate_limit_error", {{"retry-after", "30"}});
            }
          }
          return AnthropicOk();
        },
        options, kProviderTenAtOnce);
    CallRequest limited = CallRequest::Simple("m", "hi", 4);
    limited.api_key = "sk-limited";
    ASSERT_EQ(RunAll(rig, {limited})[0].http_status, 429);
    // Another key, in each way a request can carry one, and the client's.
    std::vector<CallRequest> others(4, CallRequest::Simple("m", "hi", 4));
    others[0].api_key = "sk-other";
    others[1].headers = {{"x-api-key", "sk-header"}};
    others[2].headers = {{"authorization", "Bearer sk-bearer"}};
    const int64_t after_429 = rig.clock.Now();
    for (const CallResult& r : RunAll(rig, others)) EXPECT_TRUE(r.status.ok()) << r.status;
    const auto& sent = rig.transport->sent();
    ASSERT_EQ(sent.size(), 5u);
    const auto levels = Levels(rig);
    if (!per_key) {
      // One shared bucket: the hold makes everyone wait out the 30 s.
      for (size_t i = 1; i < 5; ++i) EXPECT_GE(sent[i].at_ns, after_429 + 29'000 * kMs) << i;
      for (const auto& [key, level] : levels) EXPECT_FALSE(absl::StrContains(key, "@")) << key;
      continue;
    }
    for (size_t i = 1; i < 5; ++i) EXPECT_EQ(sent[i].at_ns, after_429) << i;
    auto account = [](absl::string_view key) {
      return absl::StrCat("provider:anthropic@", KeyFingerprint(key).substr(0, 16), ":default:rpm");
    };
    EXPECT_EQ(levels.at(account("sk-limited")), 0);  // held, not 9
    for (const char* key : {"sk-other", "sk-header", "sk-bearer", kSecret}) {
      EXPECT_EQ(levels.at(account(key)), 9) << key;
    }
    EXPECT_EQ(levels.at("provider:anthropic:default:rpm"), 10);  // nobody's
    // An explicit account wins over the key's: not held, sent at once.
    CallRequest named = CallRequest::Simple("m", "hi", 4);
    named.api_key = "sk-limited";
    named.account = "team7";
    const int64_t before_named = rig.clock.Now();
    EXPECT_EQ(RunAll(rig, {named})[0].http_status, 429);
    EXPECT_EQ(rig.transport->sent().back().at_ns, before_named);
    EXPECT_TRUE(Levels(rig).contains("provider:anthropic@team7:default:rpm"));
    named.account = "Not-Valid";
    EXPECT_EQ(RunAll(rig, {named})[0].status.code(), absl::StatusCode::kInvalidArgument);
  }
}

// A response passed on piece by piece settles its permit with the usage it
// reported: a whole JSON reply from its body, a stream from its events
// (Anthropic's message_start and message_delta, OpenAI's final usage
// chunk); a stream without usage keeps the estimate charged.
TEST(SchedulerTest, APassedOnResponseSettlesWithTheUsageItReported) {
  auto Events = [](absl::string_view content_type, std::vector<std::string> chunks) {
    ScriptedReply r;
    r.headers.Set("content-type", content_type);
    r.chunks = std::move(chunks);
    return r;
  };
  const struct {
    const char* name;
    Provider provider;
    ScriptedReply reply;
    int64_t charged;  // output tokens left charged of max_tokens = 1000
  } kCases[] = {
      {"anthropic json", Provider::kAnthropic, AnthropicOk(), 2},
      {"openai json", Provider::kOpenAi, OpenAiOk(), 2},
      {"anthropic events", Provider::kAnthropic,
       Events("text/event-stream; charset=utf-8",
              {"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":"
               "{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
               "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":"
               "{\"output_tokens\":7}}\n\n"}),
       7},
      {"openai events", Provider::kOpenAi,
       Events("text/event-stream",
              {"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
               "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,"
               "\"total_tokens\":8}}\n\ndata: [DONE]\n\n"}),
       5},
      {"events without usage", Provider::kOpenAi,
       Events("text/event-stream",
              {"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
               "data: [DONE]\n\n"}),
       1000},
  };
  // Each as sent, and gzip-compressed (a proxy passes a compressed body on
  // compressed, and reads the usage from a decoded copy).
  for (const bool gzip : {false, true}) {
    for (const auto& c : kCases) {
      SCOPED_TRACE(absl::StrCat(c.name, gzip ? ", gzip" : ""));
      const ScriptedReply reply = gzip ? Gzipped(c.reply) : c.reply;
      Rig rig([&](const TransportRequest&) { return reply; }, Options(c.provider), R"(
[scopes.global]
output_tokens_per_minute = 1000
[scopes.global.burst]
output_tokens_per_minute = 1000
)");
      std::string passed;
      CallRequest request = CallRequest::Simple("m", "hi", 1000);
      request.on_chunk = [&](absl::string_view chunk) { absl::StrAppend(&passed, chunk); };
      const CallResult r = rig.client->Call(request);
      ASSERT_TRUE(r.status.ok()) << r.status;
      EXPECT_EQ(passed, absl::StrJoin(reply.chunks, ""));
      // At 1,000 tokens a minute, the 1 ms the reply took refilled nothing.
      EXPECT_EQ(Levels(rig).at("scope:global:otpm"), 1000 - c.charged);
    }
  }
}

// A compressed error body is kept decoded (what a proxy answers with), and
// the result's headers no longer claim an encoding.
TEST(SchedulerTest, ACompressedErrorBodyIsKeptDecoded) {
  ClientOptions options = Options();
  options.retry.max_attempts = 1;
  const ScriptedReply error = AnthropicError(400, "invalid_request_error");
  Rig rig([&](const TransportRequest&) { return Gzipped(error); }, options);
  const CallResult r = rig.client->Call(CallRequest::Simple("m", "hi", 4));
  EXPECT_EQ(r.http_status, 400);
  EXPECT_EQ(r.error_body, absl::StrJoin(error.chunks, ""));
  EXPECT_EQ(r.headers.Find("content-encoding"), nullptr);
  EXPECT_EQ(r.error.provider_type, "invalid_request_error");
}

// Withdraw gives back a reservation that has not been sent (the next
// request takes its place at once) and leaves a request in flight alone: a
// queue in front of the client never abandons what the provider has seen.
TEST(SchedulerTest, WithdrawTakesBackOnlyWhatWasNotSent) {
  Rig rig([](const TransportRequest&) { return AnthropicOk(absl::Seconds(10)); }, WarmOptions(),
          kOneASecond);
  ScriptedTransport* transport = rig.transport;
  Client& client = *rig.client;
  std::vector<CallResult> results(3);
  auto keep = [&](int i) { return [&results, i](CallResult r) { results[i] = std::move(r); }; };
  const Client::Handle a = client.Submit(CallRequest::Simple("m", "hi", 4), keep(0));
  const Client::Handle b = client.Submit(CallRequest::Simple("m", "hi", 4), keep(1));
  int step = 0;
  std::optional<int64_t> c_sent;
  transport->on_poll = [&] {
    if (step == 0) {  // a in flight, b reserved for +1 s
      ASSERT_EQ(transport->in_flight(), 1u);
      client.Withdraw(a);  // in flight: left alone
      client.Withdraw(b);
      step = 1;
    } else if (step == 1) {
      client.Submit(CallRequest::Simple("m", "hi", 4), keep(2));
      step = 2;
    } else if (step == 2 && transport->sent().size() == 2) {
      c_sent = transport->sent().back().at_ns;
      step = 3;
    } else if (step == 3 && transport->in_flight() == 0) {
      client.Stop();
    }
  };
  client.Serve();
  EXPECT_EQ(results[1].status.code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(results[1].status.message(), HasSubstr("withdrawn before it was sent"));
  EXPECT_EQ(results[1].attempts, 0);
  ASSERT_TRUE(c_sent.has_value());
  EXPECT_EQ(*c_sent, kStart + 1'000 * kMs) << "c took b's place, not the one after it";
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_THAT(transport->cancelled(), Not(Contains(a)));
  EXPECT_TRUE(results[2].status.ok()) << results[2].status;
}

// A client told not to read the environment never sends the key there: a
// request without credentials fails before it is sent.
TEST(SchedulerTest, KeyFromEnvironmentOffNeverBorrowsTheEnvironmentsKey) {
  setenv("ANTHROPIC_API_KEY", kSecret, /*overwrite=*/1);
  ClientOptions options = Options();
  options.api_key.clear();
  options.key_from_environment = false;
  Rig rig([](const TransportRequest&) { return AnthropicOk(); }, options);
  const CallResult r = rig.client->Call(CallRequest::Simple("m", "hi", 4));
  unsetenv("ANTHROPIC_API_KEY");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument) << r.status;
  EXPECT_TRUE(rig.transport->sent().empty());

  setenv("ANTHROPIC_API_KEY", kSecret, /*overwrite=*/1);
  options.key_from_environment = true;
  Rig reads([](const TransportRequest&) { return AnthropicOk(); }, options);
  const CallResult ok = reads.client->Call(CallRequest::Simple("m", "hi", 4));
  unsetenv("ANTHROPIC_API_KEY");
  EXPECT_TRUE(ok.status.ok()) << ok.status;
}

}  // namespace
}  // namespace sluice
