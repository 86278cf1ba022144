// The client's scheduler on a fake clock over a scripted transport: start
// times, reservations, retries, header feedback, per-request credentials,
// streaming, cancelling and the service loop, exact to the nanosecond, with
// no sleeps and no sockets.
#include <cmath>
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

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

using namespace scheduler_rig;  // NOLINT: the rig is this test's vocabulary

// Open-loop load: a request with a start time is neither sent nor charged
// before it, whatever order it was pulled in; on the fake clock it is sent
// exactly at it.
TEST(SchedulerTest, ScheduledRequestsStartAtTheirTime) {
  Rig rig([](const TransportRequest&) { return AnthropicOk(); });
  const int64_t offsets_ms[] = {60, 0, 30};
  std::vector<size_t> order;
  std::vector<int64_t> finished(3, 0);
  size_t n = 0;
  rig.client->Run(
      [&](CallRequest* r) {
        if (n == 3) return false;
        *r = CallRequest::Simple("m", "hi", 4);
        r->not_before_ns = kStart + offsets_ms[n++] * kMs;
        return true;
      },
      3,
      [&](size_t index, CallResult r) {
        EXPECT_TRUE(r.status.ok()) << r.status;
        order.push_back(index);
        finished[index] = rig.clock.Now();
      });
  EXPECT_THAT(order, ElementsAre(1u, 2u, 0u));
  ASSERT_EQ(rig.transport->sent().size(), 3u);
  EXPECT_EQ(rig.transport->sent()[0].at_ns, kStart);
  EXPECT_EQ(rig.transport->sent()[1].at_ns, kStart + 30 * kMs);
  EXPECT_EQ(rig.transport->sent()[2].at_ns, kStart + 60 * kMs);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(finished[i], kStart + offsets_ms[i] * kMs + 1 * kMs) << "request " << i;
  }
}

// Permits are reserved in the order requests became due, and each request
// is sent at its reserved start time: one a second at 60 a minute.
TEST(SchedulerTest, RequestsAreSentAtTheirReservedStartTimes) {
  Rig rig([](const TransportRequest&) { return AnthropicOk(); }, Options(), kOneASecond);
  ScriptedTransport* transport = rig.transport;
  int n = 0;
  std::vector<absl::Duration> waits(4);
  rig.client->Run(
      [&](CallRequest* r) {
        *r = CallRequest::Simple("m", "hi", 4);
        return n++ < 4;
      },
      4, [&](size_t i, CallResult r) { waits[i] = r.throttle_wait; });
  ASSERT_EQ(transport->sent().size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(transport->sent()[i].at_ns, kStart + i * 1'000 * kMs) << i;
    EXPECT_EQ(waits[i], absl::Seconds(i)) << i;
  }
}

// Each result counts the 429s its attempts drew, so that a batch can report
// them; a retry-after past max_retry_after fails fast.
TEST(SchedulerTest, ResultsCountTheRateLimitedAttempts) {
  int answered = 0, limited_sent = 0;
  ClientOptions options = Options();
  options.retry.max_attempts = 2;
  options.retry.max_retry_after = absl::Milliseconds(1);  // fail rather than wait a minute
  Rig rig(
      [&](const TransportRequest&) {
        if (answered++ == 0) return AnthropicOk();
        ++limited_sent;
        return AnthropicError(429, "rate_limit_error", {{"retry-after", "60"}});
      },
      options);
  int n = 0, limited = 0, succeeded = 0;
  rig.client->Run(
      [&](CallRequest* r) {
        *r = CallRequest::Simple("m", "hi", 4);
        return n++ < 3;
      },
      1,
      [&](size_t, CallResult r) {
        limited += r.rate_limited;
        succeeded += r.status.ok();
        if (!r.status.ok()) {
          EXPECT_EQ(r.error.error_class, ErrorClass::kRateLimited);
          EXPECT_EQ(r.http_status, 429);
          EXPECT_THAT(r.error_body, HasSubstr("rate_limit_error"));
          ASSERT_NE(r.headers.Find("retry-after"), nullptr);
          EXPECT_EQ(*r.headers.Find("retry-after"), "60");
        }
      });
  EXPECT_EQ(succeeded, 1);
  EXPECT_EQ(limited, limited_sent);
  EXPECT_GE(limited, 2);
}

// A retry waits for the server's retry-after exactly, when it is within the
// cap; overloads back off with jitter inside the documented bounds.
TEST(SchedulerTest, RetriesWaitForRetryAfterAndBackOffWithinBounds) {
  int calls = 0;
  ClientOptions options = Options();
  Rig rig(
      [&](const TransportRequest&) {
        switch (calls++) {
          case 0:
            return AnthropicError(429, "rate_limit_error", {{"retry-after", "2"}});
          case 1:
            return AnthropicError(529, "overloaded_error");
          default:
            return AnthropicOk();
        }
      },
      options);
  const CallResult r = rig.client->Call(CallRequest::Simple("m", "hi", 4));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.attempts, 3);
  EXPECT_EQ(r.rate_limited, 1);
  const auto& sent = rig.transport->sent();
  ASSERT_EQ(sent.size(), 3u);
  // The 429 answered at +1 ms; the retry goes out 2 s after that.
  EXPECT_EQ(sent[1].at_ns, sent[0].at_ns + 1 * kMs + 2'000 * kMs);
  // Attempt 1 (0-based) backs off within [0.75 * min(base * 2, cap), min(cap, base * 4)].
  const int64_t backoff = sent[2].at_ns - (sent[1].at_ns + 1 * kMs);
  EXPECT_GE(backoff, 3 * kMs);
  EXPECT_LE(backoff, 8 * kMs);
}

TEST(SchedulerTest, OverloadIsRetriedUpToTheAttemptBudget) {
  Rig rig([](const TransportRequest&) { return AnthropicError(529, "overloaded_error"); });
  const CallResult r = rig.client->Call(CallRequest::Simple("m", "hi", 8));
  EXPECT_EQ(r.attempts, 3);
  EXPECT_EQ(r.error.error_class, ErrorClass::kOverloaded);
  EXPECT_THAT(r.status.message(), AllOf(HasSubstr("overloaded"), HasSubstr("after 3 attempts")));
  EXPECT_EQ(rig.transport->sent().size(), 3u);
}

// A concurrency cap of one: the others wait for the lease (not failing) and
// run strictly one at a time.
TEST(SchedulerTest, RequestsBeyondAConcurrencyCapRunOneAtATime) {
  Rig rig([](const TransportRequest&) { return AnthropicOk(absl::Milliseconds(50)); },
          WarmOptions(),
          R"(
[scopes.global]
requests_per_minute = 100000
max_concurrency = 1
)");
  ScriptedTransport* transport = rig.transport;
  Policy* policy = rig.policy.get();
  int n = 0, succeeded = 0;
  rig.client->Run(
      [&](CallRequest* r) {
        *r = CallRequest::Simple("m", "hi", 4);
        return n++ < 3;
      },
      3, [&](size_t, CallResult r) { succeeded += r.status.ok(); });
  EXPECT_EQ(succeeded, 3);
  EXPECT_EQ(transport->max_in_flight(), 1u);
  ASSERT_EQ(transport->sent().size(), 3u);
  EXPECT_EQ(transport->sent()[1].at_ns, kStart + 50 * kMs);
  EXPECT_EQ(transport->sent()[2].at_ns, kStart + 100 * kMs);
  EXPECT_EQ(policy->Stats().concurrency.at(0).in_flight, 0u);
  EXPECT_GE(policy->Stats().concurrency.at(0).bottlenecks, 2u);
}

// A provider that enforces `rpm` requests a minute of its own clock (time
// scale 60: a real second is its minute) with a continuous bucket of that
// many, and says so in Anthropic's rate-limit headers. Independent of
// sluice's cells: plain arithmetic on the fake clock.
class ScriptedLimit {
 public:
  ScriptedLimit(const FakeClock* clock, double rpm) : clock_(clock), rpm_(rpm), tokens_(rpm) {}

  ScriptedReply Answer() {
    const double per_ns = rpm_ / 1e9;  // its minute is one real second
    const int64_t now = clock_->Now();
    tokens_ = std::min(rpm_, tokens_ + static_cast<double>(now - last_) * per_ns);
    last_ = now;
    const bool admitted = tokens_ >= 1;
    if (admitted) tokens_ -= 1;
    Headers h;
    h.Set("anthropic-ratelimit-requests-limit", absl::StrCat(static_cast<int>(rpm_)));
    h.Set("anthropic-ratelimit-requests-remaining",
          absl::StrCat(static_cast<int>(std::floor(tokens_))));
    const absl::Duration to_full = absl::Nanoseconds((rpm_ - tokens_) / per_ns);
    h.Set("anthropic-ratelimit-requests-reset",
          absl::FormatTime(absl::RFC3339_sec, absl::Now() + absl::Ceil(to_full, absl::Seconds(1)),
                           absl::UTCTimeZone()));
    if (admitted) {
      ScriptedReply ok = AnthropicOk(absl::Milliseconds(50));
      for (const char* name :
           {"anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset"}) {
        ok.headers.Set(name, *h.Find(name));
      }
      return ok;
    }
    ++limited_;
    h.Set("retry-after", "1");
    ScriptedReply refused = AnthropicError(429, "rate_limit_error", h);
    refused.latency = absl::Milliseconds(50);
    return refused;
  }
  int limited() const { return limited_; }

 private:
  const FakeClock* clock_;
  const double rpm_;
  double tokens_;
  int64_t last_ = kStart;
  int limited_ = 0;
};

// A provider enforcing a lower limit than sluice is configured for: with
// header feedback the client learns the real limit from the headers and draws
// few 429s; without it, it draws many.
TEST(SchedulerTest, HeaderFeedbackConvergesOnTheProvidersRealLimit) {
  int rate_limited[2] = {0, 0};
  for (int feedback = 0; feedback < 2; ++feedback) {
    ClientOptions options = Options();
    options.header_feedback = feedback == 1;
    options.provider_time_scale = 60;
    options.retry.max_attempts = 10;
    std::optional<ScriptedLimit> provider;
    Rig rig([&](const TransportRequest&) { return provider->Answer(); }, options, R"(
headroom = 1.0
[providers.anthropic]
requests_per_minute = 1200
[providers.anthropic.burst]
requests_per_minute = 10
[scopes.global]
requests_per_minute = 100000
)");
    provider.emplace(&rig.clock, 6);  // 6 a second, against sluice's 20
    int n = 0, succeeded = 0;
    rig.client->Run(
        [&](CallRequest* r) {
          if (n++ == 24) return false;
          *r = CallRequest::Simple("m", "hi", 4);
          return true;
        },
        8, [&](size_t, CallResult r) { succeeded += r.status.ok(); });
    EXPECT_EQ(succeeded, 24);
    rate_limited[feedback] = provider->limited();
  }
  EXPECT_LT(rate_limited[1], rate_limited[0]) << rate_limited[1] << " vs " << rate_limited[0];
  EXPECT_LE(rate_limited[1], 3) << "with feedback; without: " << rate_limited[0];
}

std::vector<std::string> SentHeaders(const ScriptedTransport& t, size_t i) {
  return t.sent().at(i).request.headers;
}

// Credentials per request: the request's key, or its own credential header
// passed through untouched, or the client's key; the path per request.
TEST(SchedulerTest, EachRequestCarriesItsOwnCredentialsAndPath) {
  ClientOptions options = Options();
  Rig rig([](const TransportRequest&) { return AnthropicOk(); }, options);
  CallRequest own_key = CallRequest::Simple("m", "hi", 4);
  own_key.api_key = "sk-per-request";
  CallRequest own_header = CallRequest::Simple("m", "hi", 4);
  own_header.headers = {{"Authorization", "Bearer sk-sdk"}, {"anthropic-version", "2026-10-21"}};
  own_header.path = "/v1/messages/count_tokens";
  ASSERT_TRUE(rig.client->Call(own_key).status.ok());
  ASSERT_TRUE(rig.client->Call(own_header).status.ok());
  ASSERT_TRUE(rig.client->Call(CallRequest::Simple("m", "hi", 4)).status.ok());
  const ScriptedTransport& t = *rig.transport;
  EXPECT_THAT(SentHeaders(t, 0), Contains("x-api-key: sk-per-request"));
  EXPECT_THAT(SentHeaders(t, 0), Not(Contains(absl::StrCat("x-api-key: ", kSecret))));
  EXPECT_EQ(t.sent()[0].request.url, "http://scripted.invalid/v1/messages");
  EXPECT_THAT(
      SentHeaders(t, 1),
      AllOf(Contains("Authorization: Bearer sk-sdk"), Contains("anthropic-version: 2026-10-21"),
            Not(Contains("anthropic-version: 2023-06-01")), Not(Contains(HasSubstr("x-api-key")))));
  EXPECT_EQ(t.sent()[1].request.url, "http://scripted.invalid/v1/messages/count_tokens");
  EXPECT_THAT(SentHeaders(t, 2), Contains(absl::StrCat("x-api-key: ", kSecret)));
}

// Without a key anywhere, Create still succeeds when the options allow it;
// a request without credentials then fails at once, naming the variable,
// and nothing is sent. A header with a line break is refused, and the error
// never shows its value.
TEST(SchedulerTest, ARequestWithoutCredentialsFailsNamingTheVariable) {
  unsetenv("OPENAI_API_KEY");
  ClientOptions options = Options(Provider::kOpenAi);
  options.api_key.clear();
  options.require_api_key = false;
  Rig rig([](const TransportRequest&) { return OpenAiOk(); }, options);
  ASSERT_NE(rig.client, nullptr);
  const CallResult r = rig.client->Call(CallRequest::Simple("m", "hi", 4));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status.message(), HasSubstr("OPENAI_API_KEY"));
  EXPECT_EQ(r.attempts, 0);
  CallRequest injected = CallRequest::Simple("m", "hi", 4);
  injected.api_key = "sk-ok";
  injected.headers = {{"x-note", "a\r\nx-evil: sk-hidden"}};
  const CallResult bad = rig.client->Call(injected);
  EXPECT_EQ(bad.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status.message(), AllOf(HasSubstr("x-note"), Not(HasSubstr("sk-hidden"))));
  CallRequest keyed = CallRequest::Simple("m", "hi", 4);
  keyed.api_key = "sk-ok";
  ASSERT_TRUE(rig.client->Call(keyed).status.ok());
  ASSERT_EQ(rig.transport->sent().size(), 1u);
  EXPECT_THAT(SentHeaders(*rig.transport, 0), Contains("authorization: Bearer sk-ok"));
}

// Streaming: the 2xx body goes out piece by piece as it arrives, after its
// status and headers; an error status before it is retried unseen. The
// usage its events report settles the permit, as a whole reply's would.
TEST(SchedulerTest, AStreamedResponseIsPassedOnAsItArrivesAndSettlesItsUsage) {
  int calls = 0;
  const std::vector<std::string> events = {
      "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[],"
      "\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
      "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}"
      "\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"};
  Rig rig(
      [&](const TransportRequest&) {
        if (calls++ == 0) return AnthropicError(529, "overloaded_error");
        ScriptedReply r;
        r.headers.Set("content-type", "text/event-stream");
        r.chunks = events;
        return r;
      },
      Options(), R"(
[scopes.global]
output_tokens_per_minute = 60000
)");
  std::vector<std::string> seen;
  CallRequest request = CallRequest::Simple("m", "hi", 1000);
  request.on_response = [&](int status, const Headers& headers) {
    seen.push_back(absl::StrCat("status ", status, " ", *headers.Find("content-type")));
  };
  request.on_chunk = [&](absl::string_view chunk) { seen.emplace_back(chunk); };
  const CallResult r = rig.client->Call(request);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.attempts, 2);
  EXPECT_EQ(r.http_status, 200);
  EXPECT_THAT(seen, ElementsAre("status 200 text/event-stream", events[0], events[1]));
  EXPECT_EQ(r.usage.input_tokens, 3u);
  EXPECT_EQ(r.usage.output_tokens, 15u);
  // 1,000 pre-charged, 15 kept (the failed attempt's output was refunded
  // too); a few ms of refill at 1,000 a second at most.
  const PolicyStats::Bucket otpm = rig.policy->Stats().buckets.at(0);
  EXPECT_GE(otpm.available, otpm.capacity - 15);
}

// An error event after the 200 makes the result an error of its class, not
// retried (the stream went out).
TEST(SchedulerTest, AnErrorEventAfterTheStartFailsTheStream) {
  Rig rig([](const TransportRequest&) {
    ScriptedReply r;
    r.chunks = {"event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                "\"message\":\"Overloaded\"}}\n\n"};
    return r;
  });
  CallRequest request = CallRequest::Simple("m", "hi", 4);
  request.on_chunk = [](absl::string_view) {};
  const CallResult r = rig.client->Call(request);
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(r.error.error_class, ErrorClass::kOverloaded);
  EXPECT_EQ(r.attempts, 1);
}

// Once part of a stream went out, a failure is final: a retry would repeat it.
TEST(SchedulerTest, AStreamCutShortIsNotRetried) {
  Rig rig([](const TransportRequest&) {
    ScriptedReply r;
    r.chunks = {"event: message_start\ndata: {}\n\n"};
    r.error = absl::UnavailableError("Connection reset by peer");
    return r;
  });
  int chunks = 0;
  CallRequest request = CallRequest::Simple("m", "hi", 4);
  request.on_chunk = [&](absl::string_view) { ++chunks; };
  const CallResult r = rig.client->Call(request);
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(r.attempts, 1);
  EXPECT_EQ(chunks, 1);
  EXPECT_EQ(r.error.error_class, ErrorClass::kConnection);
}

// Submitted requests run in the service loop; one cancelled while it waits
// for its reserved start time gives its permits back (the next request may
// take its place at once), and one cancelled in flight is stopped in the
// transport. Stop ends what is left as Cancelled.
TEST(SchedulerTest, CancelGivesBackAWaitingReservationAndStopsATransfer) {
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
      EXPECT_EQ(transport->in_flight(), 1u);
      client.Cancel(b);
      step = 1;
    } else if (step == 1) {  // b's second came back: c may take it
      client.Submit(CallRequest::Simple("m", "hi", 4), keep(2));
      step = 2;
    } else if (step == 2 && transport->sent().size() == 2) {
      c_sent = transport->sent().back().at_ns;
      client.Cancel(a);
      step = 3;
    } else if (step == 3) {
      client.Stop();
    }
  };
  client.Serve();
  EXPECT_EQ(results[1].status.code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(results[1].status.message(), HasSubstr("before it was sent"));
  EXPECT_EQ(results[1].attempts, 0);
  ASSERT_TRUE(c_sent.has_value());
  EXPECT_EQ(*c_sent, kStart + 1'000 * kMs) << "c took b's place, not the one after it";
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(results[0].status.message(), HasSubstr("in flight"));
  EXPECT_THAT(transport->cancelled(), Contains(a));
  // c was still in flight at Stop.
  EXPECT_EQ(results[2].status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(transport->in_flight(), 0u);
}

// Cancelling twice, or a handle that names nothing, changes nothing: each
// request's done runs exactly once.
TEST(SchedulerTest, DoneRunsExactlyOncePerRequestWhateverIsCancelled) {
  Rig rig([](const TransportRequest&) { return AnthropicOk(absl::Milliseconds(10)); });
  int dones = 0, cancelled = 0;
  auto count = [&](CallResult r) {
    ++dones;
    cancelled += r.status.code() == absl::StatusCode::kCancelled;
  };
  const Client::Handle a = rig.client->Submit(CallRequest::Simple("m", "hi", 4), count);
  rig.client->Submit(CallRequest::Simple("m", "hi", 4), count);
  int polls = 0;
  rig.transport->on_poll = [&] {
    if (polls++ == 0) {
      rig.client->Cancel(a);
      rig.client->Cancel(a);
      rig.client->Cancel(a + 1000);
    } else if (rig.transport->in_flight() == 0) {
      rig.client->Stop();
    }
  };
  rig.client->Serve();
  EXPECT_EQ(dones, 2);
  EXPECT_EQ(cancelled, 1);
  EXPECT_EQ(rig.transport->cancelled(), std::vector<uint64_t>{a});
}

// Serve returns at once when stopped before it starts, and serves again
// after.
TEST(SchedulerTest, ServeRunsUntilStopAndCanServeAgain) {
  Rig rig([](const TransportRequest&) { return AnthropicOk(); });
  rig.client->Stop();
  rig.client->Serve();
  int done = 0;
  rig.client->Submit(CallRequest::Simple("m", "hi", 4), [&](CallResult r) {
    EXPECT_TRUE(r.status.ok()) << r.status;
    ++done;
    rig.client->Stop();
  });
  rig.client->Serve();
  EXPECT_EQ(done, 1);
}

}  // namespace
}  // namespace sluice
