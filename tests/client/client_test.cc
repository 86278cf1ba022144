// The libcurl client against the simulated provider on 127.0.0.1, end to
// end: request and response shapes, retries by error class, hostile
// responses, secrets, caps shared with other processes, and a quota 429
// held for every process. What depends on timing (start times, 429 counts,
// header feedback converging) runs on the fake clock in scheduler_test.cc.
#include "sluice/client.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/segment.h"
#include "tests/store/segment_test_util.h"
#include "tools/fake_provider/fake_provider.h"

namespace sluice {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kSecret[] = "sk-test-SECRET-4242-do-not-print";

std::unique_ptr<FakeProvider> StartProvider(FakeProviderOptions options = {}) {
  auto provider = FakeProvider::Start(std::move(options));
  EXPECT_TRUE(provider.ok()) << provider.status();
  return provider.ok() ? *std::move(provider) : nullptr;
}

ClientOptions Options(Provider provider, const FakeProvider& server) {
  ClientOptions options;
  options.provider = provider;
  options.base_url = server.base_url();
  options.api_key = kSecret;
  // Fast retries for tests: the policy's shape, small numbers.
  options.retry.base = absl::Milliseconds(2);
  options.retry.cap = absl::Milliseconds(20);
  options.seed = 7;
  return options;
}

std::unique_ptr<Client> MakeClient(const ClientOptions& options, Policy* policy = nullptr) {
  auto client = Client::Create(options, policy);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

// Everything a result could show a user.
std::string Shown(const CallResult& r) {
  return absl::StrCat(r.status.ToString(), "|", r.text, "|", r.error.message, "|",
                      r.error.provider_type, "|", r.response.dump(), "|", r.request_id);
}

TEST(ClientTest, AnthropicCallReturnsTheReplyAndItsUsage) {
  auto server = StartProvider();
  ASSERT_NE(server, nullptr);
  auto client = MakeClient(Options(Provider::kAnthropic, *server));
  const CallResult r = client->Call(CallRequest::Simple("claude-sonnet-4", "Say hello!", 16));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.http_status, 200);
  EXPECT_EQ(r.attempts, 1);
  EXPECT_FALSE(r.text.empty());
  EXPECT_FALSE(r.request_id.empty());
  EXPECT_GE(r.usage.output_tokens, 1u);
  EXPECT_LE(r.usage.output_tokens, 16u);
  EXPECT_GT(r.usage.input_tokens, 0u);
  EXPECT_EQ(r.response.value("type", ""), "message");
}

TEST(ClientTest, OpenAiCallReturnsTheReplyAndItsUsage) {
  auto server = StartProvider();
  ASSERT_NE(server, nullptr);
  auto client = MakeClient(Options(Provider::kOpenAi, *server));
  const CallResult r = client->Call(CallRequest::Simple("gpt-4o", "Say hello!", 16));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.response.value("object", ""), "chat.completion");
  EXPECT_FALSE(r.text.empty());
  EXPECT_GE(r.usage.output_tokens, 1u);
}

TEST(ClientTest, OverloadIsRetriedUpToTheAttemptBudget) {
  FakeProviderOptions faults;
  faults.overloaded_rate = 1.0;
  auto server = StartProvider(faults);
  ASSERT_NE(server, nullptr);
  auto client = MakeClient(Options(Provider::kAnthropic, *server));
  const CallResult r = client->Call(CallRequest::Simple("m", "hi", 8));
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(r.attempts, 3);
  EXPECT_EQ(r.error.error_class, ErrorClass::kOverloaded);
  EXPECT_EQ(r.http_status, 529);
  EXPECT_THAT(r.status.message(), AllOf(HasSubstr("overloaded"), HasSubstr("after 3 attempts")));
}

TEST(ClientTest, QuotaAndSpendLimitsAreNeverRetried) {
  FakeProviderOptions quota;
  quota.insufficient_quota_rate = 1.0;
  auto openai = StartProvider(quota);
  ASSERT_NE(openai, nullptr);
  const CallResult q =
      MakeClient(Options(Provider::kOpenAi, *openai))->Call(CallRequest::Simple("m", "hi", 8));
  EXPECT_EQ(q.attempts, 1);
  EXPECT_EQ(q.error.error_class, ErrorClass::kQuotaExhausted);
  EXPECT_THAT(q.status.message(), HasSubstr("insufficient_quota"));

  FakeProviderOptions spend;
  spend.spend_limit_rate = 1.0;
  auto anthropic = StartProvider(spend);
  ASSERT_NE(anthropic, nullptr);
  const CallResult s = MakeClient(Options(Provider::kAnthropic, *anthropic))
                           ->Call(CallRequest::Simple("m", "hi", 8));
  EXPECT_EQ(s.attempts, 1);
  EXPECT_EQ(s.error.error_class, ErrorClass::kQuotaExhausted);
  EXPECT_EQ(s.http_status, 429);
}

TEST(ClientTest, HostileResponsesAreClearErrorsAndNeverLeakTheKey) {
  struct Case {
    const char* name;
    double FakeProviderOptions::*rate;
    ErrorClass expected;
    int attempts;
  };
  const Case cases[] = {
      // A 200 the provider processed (and charged) but whose body is broken
      // is not retried: a retry would pay for the request twice.
      {"malformed", &FakeProviderOptions::malformed_json_rate, ErrorClass::kMalformedResponse, 1},
      {"truncated", &FakeProviderOptions::truncated_body_rate, ErrorClass::kConnection, 3},
      {"reset", &FakeProviderOptions::reset_rate, ErrorClass::kConnection, 3},
      {"server error", &FakeProviderOptions::server_error_rate, ErrorClass::kServerError, 3},
      // Slow is not broken: a body trickling in still completes.
      {"slow", &FakeProviderOptions::slow_body_rate, ErrorClass::kNone, 1},
  };
  for (const Case& c : cases) {
    FakeProviderOptions options;
    options.*(c.rate) = 1.0;
    auto server = StartProvider(options);
    ASSERT_NE(server, nullptr);
    for (Provider p : {Provider::kAnthropic, Provider::kOpenAi}) {
      const CallResult r = MakeClient(Options(p, *server))->Call(CallRequest::Simple("m", "hi", 8));
      EXPECT_EQ(r.status.ok(), c.expected == ErrorClass::kNone) << c.name << ": " << r.status;
      EXPECT_EQ(r.attempts, c.attempts) << c.name << ": " << r.status;
      if (c.expected == ErrorClass::kConnection &&
          r.error.error_class == ErrorClass::kMalformedResponse) {
        // A body cut short may also arrive as a short, unparseable body.
      } else {
        EXPECT_EQ(r.error.error_class, c.expected) << c.name << " " << r.status;
      }
      EXPECT_THAT(Shown(r), Not(HasSubstr(kSecret))) << c.name;
    }
  }
}

TEST(ClientTest, AResponseLargerThanTheCapIsRefused) {
  auto server = StartProvider();
  ASSERT_NE(server, nullptr);
  ClientOptions options = Options(Provider::kAnthropic, *server);
  options.max_response_bytes = 64;
  const CallResult r = MakeClient(options)->Call(CallRequest::Simple("m", "hi", 64));
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(r.attempts, 1);
  EXPECT_THAT(r.status.message(), HasSubstr("exceeded 64 bytes"));
}

TEST(ClientTest, MissingKeyAndBadUrlAreRefusedUpFront) {
  ClientOptions options;
  options.provider = Provider::kOpenAi;
  options.require_api_key = true;
  unsetenv("OPENAI_API_KEY");
  EXPECT_THAT(Client::Create(options, nullptr).status().message(), HasSubstr("OPENAI_API_KEY"));
  options.api_key = kSecret;
  options.base_url = "ftp://example";
  const auto s = Client::Create(options, nullptr).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), Not(HasSubstr(kSecret)));
}

// By default a client needs no key of its own: Create succeeds without one,
// and a request that brings none fails before anything is sent, naming the
// variable to set.
TEST(ClientTest, CreateSucceedsWithoutAKeyByDefault) {
  ClientOptions options;
  options.provider = Provider::kOpenAi;
  options.base_url = "http://127.0.0.1:1";  // never reached
  unsetenv("OPENAI_API_KEY");
  EXPECT_FALSE(ClientOptions().require_api_key);
  auto client = Client::Create(options, nullptr);
  ASSERT_TRUE(client.ok()) << client.status();
  const CallResult r = (*client)->Call(CallRequest::Simple("m", "hi", 4));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status.message(), HasSubstr("OPENAI_API_KEY"));
  EXPECT_EQ(r.attempts, 0);
}

// A concurrency cap of one: extra requests wait for a lease to come back
// (not failing), so all finish, one at a time.
// A policy for a limits file over process memory.
struct LocalPolicy {
  std::unique_ptr<Store> store = NewLocalStore();
  std::unique_ptr<Policy> policy;

  explicit LocalPolicy(absl::string_view toml) {
    auto config = ParseLimitsConfig(toml, "test.toml");
    EXPECT_TRUE(config.ok()) << config.status();
    if (!config.ok()) return;
    auto created = Policy::Create(*config, store.get());
    EXPECT_TRUE(created.ok()) << created.status();
    if (created.ok()) policy = *std::move(created);
  }
};

TEST(ClientTest, RequestsBeyondAConcurrencyCapWaitForALease) {
  LocalPolicy local(R"(
[scopes.global]
requests_per_minute = 100000
max_concurrency = 1
)");
  ASSERT_NE(local.policy, nullptr);
  Policy* policy = local.policy.get();
  auto server = StartProvider();
  ASSERT_NE(server, nullptr);
  // Without the cold start, which would send the first request alone.
  ClientOptions options = Options(Provider::kAnthropic, *server);
  options.cold_start = false;
  auto client = MakeClient(options, policy);
  int n = 0, succeeded = 0;
  client->Run(
      [&](CallRequest* r) {
        *r = CallRequest::Simple("m", "hi", 4);
        return n++ < 3;
      },
      3, [&](size_t, CallResult r) { succeeded += r.status.ok(); });
  EXPECT_EQ(succeeded, 3);
  EXPECT_EQ(policy->Stats().concurrency.at(0).in_flight, 0u);
  EXPECT_GE(policy->Stats().concurrency.at(0).bottlenecks, 2u);
}

// What a proxy does with a caller's request, against the simulated provider:
// the caller's bytes forwarded as they are, the reply passed on piece by
// piece, and the caller key's own provider account settled with the usage
// the reply reported.
TEST(ClientTest, AForwardedRequestIsPassedOnAndSettledInItsKeysAccount) {
  LocalPolicy local(R"(
headroom = 1.0
[providers.anthropic]
requests_per_minute = 1000
input_tokens_per_minute = 100000
output_tokens_per_minute = 100000
)");
  ASSERT_NE(local.policy, nullptr);
  auto server = StartProvider();
  ASSERT_NE(server, nullptr);
  ClientOptions options = Options(Provider::kAnthropic, *server);
  options.api_key.clear();
  options.account_per_key = true;
  auto client = MakeClient(options, local.policy.get());
  const std::string raw =
      R"({"model":"claude-sonnet-4","max_tokens":5000,"messages":[{"role":"user","content":"Say hello!"}]})";
  CallRequest request;
  request.body = nlohmann::json::parse(raw);
  request.raw_body = raw;
  request.headers = {{"x-api-key", kSecret}, {"anthropic-version", "2023-06-01"}};
  std::string passed;
  int status = 0;
  bool started = false;
  request.on_start = [&] { started = true; };
  request.on_response = [&](int s, const Headers&) { status = s; };
  request.on_chunk = [&](absl::string_view chunk) { absl::StrAppend(&passed, chunk); };
  const CallResult r = client->Call(request);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_TRUE(started);
  EXPECT_EQ(status, 200);
  const nlohmann::json reply = nlohmann::json::parse(passed, nullptr, false);
  ASSERT_TRUE(reply.is_object()) << passed;
  EXPECT_EQ(reply.value("type", ""), "message");
  const uint64_t output = reply["usage"].value("output_tokens", uint64_t{0});
  ASSERT_GE(output, 1u);
  EXPECT_EQ(r.usage.output_tokens, output);
  // Settled in the key's account: 5,000 pre-charged, the reply's kept.
  const std::string account = KeyFingerprint(kSecret).substr(0, 16);
  bool found = false;
  for (const PolicyStats::Bucket& b : local.policy->Stats().buckets) {
    if (b.key != absl::StrCat("provider:anthropic@", account, ":default:otpm")) continue;
    found = true;
    EXPECT_GE(b.available, b.capacity - static_cast<int64_t>(output));
  }
  EXPECT_TRUE(found);
  EXPECT_THAT(Shown(r), Not(HasSubstr(kSecret)));
}

// A child process that takes every lease of the global cap (2) through its
// own policy on the segment, says so on `ready`, holds them for `hold`, then
// gives them back, or dies holding them. It starts no threads, and the
// caller forks it before starting any.
pid_t HoldGlobalCapInChild(const std::string& segment_path, const LimitsConfig& config,
                           absl::Duration hold, bool die, int ready) {
  const pid_t pid = fork();
  if (pid != 0) return pid;
  auto segment = Segment::Open(segment_path);
  if (!segment.ok()) _exit(1);
  auto store = NewSegmentStore(segment->get());
  auto policy = Policy::Create(config, store.get());
  if (!policy.ok()) _exit(2);
  auto route = (*policy)->Resolve("global", "anthropic", "m");
  auto a = (*policy)->Reserve(**route, 1, 1, absl::ZeroDuration(), Clock::MonotonicNanos());
  auto b = (*policy)->Reserve(**route, 1, 1, absl::ZeroDuration(), Clock::MonotonicNanos());
  if (!a.ok() || !b.ok()) _exit(3);
  const char byte = 1;
  if (write(ready, &byte, 1) != 1) _exit(4);
  absl::SleepFor(hold);
  if (die) raise(SIGKILL);
  a->Cancel();
  b->Cancel();
  _exit(0);
}

constexpr char kSharedCap[] = R"(
[scopes.global]
max_concurrency = 2
)";

// Runs `count` requests through a client on the segment at `path`, after the
// child holding the cap said it holds it.
std::vector<CallResult> RunBehindTheCap(const std::string& path, const LimitsConfig& config,
                                        int ready, absl::Duration throttle_timeout, int count) {
  char byte = 0;
  EXPECT_EQ(read(ready, &byte, 1), 1);
  auto server = StartProvider();
  auto segment = Segment::Open(path);
  EXPECT_TRUE(segment.ok()) << segment.status();
  auto store = NewSegmentStore(segment->get());
  auto policy = Policy::Create(config, store.get());
  EXPECT_TRUE(policy.ok()) << policy.status();
  ClientOptions options = Options(Provider::kAnthropic, *server);
  options.throttle_timeout = throttle_timeout;
  auto client = MakeClient(options, policy->get());
  std::vector<CallResult> results(count);
  int n = 0;
  client->Run(
      [&](CallRequest* r) {
        *r = CallRequest::Simple("m", "hi", 4);
        return n++ < count;
      },
      count, [&](size_t i, CallResult r) { results[i] = std::move(r); });
  return results;
}

// What `count` requests got while another process held the whole cap for
// `hold` (then released it, or died holding it), and how that process ended.
struct BehindAHolder {
  std::vector<CallResult> results;
  int holder_status = 0;
};

BehindAHolder RunBehindAHolder(absl::Duration hold, bool die, absl::Duration throttle_timeout,
                               int count) {
  ScratchSegment scratch;
  auto config = ParseLimitsConfig(kSharedCap, "cap.toml");
  EXPECT_TRUE(config.ok());
  int ready[2];
  EXPECT_EQ(pipe(ready), 0);
  const pid_t holder = HoldGlobalCapInChild(scratch.path(), *config, hold, die, ready[1]);
  BehindAHolder run;
  run.results = RunBehindTheCap(scratch.path(), *config, ready[0], throttle_timeout, count);
  if (hold > throttle_timeout) kill(holder, SIGKILL);  // done with it
  waitpid(holder, &run.holder_status, 0);
  close(ready[0]);
  close(ready[1]);
  return run;
}

// Another process holds the whole cap: requests wait (they used to fail at
// once when this process had nothing in flight), woken when it releases.
TEST(ClientTest, AFullCapSharedWithAnotherProcessWaitsForItsRelease) {
  const BehindAHolder run = RunBehindAHolder(absl::Milliseconds(300), false, absl::Seconds(30), 3);
  EXPECT_TRUE(WIFEXITED(run.holder_status) && WEXITSTATUS(run.holder_status) == 0);
  for (const CallResult& r : run.results) {
    EXPECT_TRUE(r.status.ok()) << r.status;
    EXPECT_GT(r.throttle_wait, absl::ZeroDuration());
  }
}

// The holder dies with the leases: a waiter takes them back while it waits,
// well within the throttle timeout (the watcher retries every 200 ms).
TEST(ClientTest, AWaiterTakesBackTheLeasesOfAHolderThatDiesWhileItWaits) {
  const BehindAHolder run = RunBehindAHolder(absl::Milliseconds(300), true, absl::Seconds(5), 2);
  EXPECT_TRUE(WIFSIGNALED(run.holder_status) && WTERMSIG(run.holder_status) == SIGKILL);
  for (const CallResult& r : run.results) {
    EXPECT_TRUE(r.status.ok()) << r.status;
    EXPECT_GT(r.throttle_wait, absl::ZeroDuration());
  }
}

// Held past the throttle timeout: the requests fail then, naming the cap.
TEST(ClientTest, AWaitOnAFullCapEndsAtTheThrottleTimeout) {
  const BehindAHolder run = RunBehindAHolder(absl::Seconds(30), false, absl::Milliseconds(300), 2);
  for (const CallResult& r : run.results) {
    EXPECT_EQ(r.status.code(), absl::StatusCode::kDeadlineExceeded) << r.status;
    EXPECT_THAT(r.status.message(), AllOf(HasSubstr("scope:global:concurrency"),
                                          HasSubstr("none came back within 300ms")));
    EXPECT_TRUE(IsConcurrencyFull(r.status));
    EXPECT_EQ(r.attempts, 0);
  }
}

TEST(ClientTest, AQuota429InOneProcessHoldsTheOthers) {
  ScratchSegment scratch;
  auto config = ParseLimitsConfig(R"(
headroom = 1.0
[providers.anthropic]
requests_per_minute = 600
[providers.anthropic.burst]
requests_per_minute = 10
[scopes.global]
requests_per_minute = 100000
)",
                                  "hold.toml");
  ASSERT_TRUE(config.ok());
  // The provider runs in a process of its own: this test forks a client, and
  // a fork of a process running server threads may inherit a held lock (the
  // allocator's, say) and hang. So this process starts no threads at all.
  int port_pipe[2];
  ASSERT_EQ(pipe(port_pipe), 0);
  const pid_t server_pid = fork();
  if (server_pid == 0) {
    FakeProviderOptions options;
    options.rpm = 1;  // the second request in a minute is a 429 with retry-after
    auto server = FakeProvider::Start(options);
    const int port = server.ok() ? (*server)->port() : -1;
    (void)write(port_pipe[1], &port, sizeof(port));
    pause();  // until the test kills it
    _exit(0);
  }
  int port = -1;
  ASSERT_EQ(read(port_pipe[0], &port, sizeof(port)), static_cast<ssize_t>(sizeof(port)));
  ASSERT_GT(port, 0);
  const std::string base_url = absl::StrCat("http://127.0.0.1:", port);
  const pid_t child = fork();
  if (child == 0) {
    auto segment = Segment::Open(scratch.path());
    auto store = NewSegmentStore(segment->get());
    auto policy = Policy::Create(*config, store.get());
    ClientOptions o;
    o.provider = Provider::kAnthropic;
    o.base_url = base_url;
    o.api_key = kSecret;
    o.retry.max_attempts = 1;
    o.learn_provider_rate = false;  // this test is about the hold alone
    auto client = Client::Create(o, policy->get());
    // Two at once: both leave before either answer, and the second is a 429.
    int n = 0, limited = 0;
    (*client)->Run(
        [&](CallRequest* r) {
          *r = CallRequest::Simple("m", "hi", 4);
          return n++ < 2;
        },
        2, [&](size_t, CallResult r) { limited += r.http_status == 429; });
    _exit(limited == 1 ? 0 : 1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  kill(server_pid, SIGKILL);
  waitpid(server_pid, nullptr, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // This process never saw a 429, yet its provider bucket is held.
  auto segment = Segment::Open(scratch.path());
  ASSERT_TRUE(segment.ok());
  auto store = NewSegmentStore(segment->get());
  auto policy = Policy::Create(*config, store.get());
  ASSERT_TRUE(policy.ok());
  auto route = (*policy)->Resolve("global", "anthropic", "m");
  ASSERT_TRUE(route.ok());
  auto permit = (*policy)->Reserve(**route, 1, 1, absl::Minutes(5), Clock::MonotonicNanos());
  ASSERT_TRUE(permit.ok()) << permit.status();
  EXPECT_GT(permit->wait_ns(), 1'000'000'000) << "held until the provider's retry-after";
  EXPECT_EQ(permit->bottleneck(), "provider:anthropic:default:rpm");
}

}  // namespace
}  // namespace sluice
