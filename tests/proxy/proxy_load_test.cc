// 5,000 requests waiting at once in `sluice proxy`, on two cores: every one
// answered 200 once the limits are raised, served in priority order (every
// high before any normal, every normal before any low), and what a waiting
// request costs the proxy in resident memory (printed; at most 16 KiB).
//
// The proxy runs as a process of its own, so that its memory is measured
// apart from the 5,000 client sockets here. The requests are held by a
// minute's limit of one request; a reload to a high rate with a concurrency
// cap of one releases them one after another, so that each finishes, and is
// logged, before the next starts: the log's order is the order served.

#include <sched.h>
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/server/raw_client.h"
#include "tests/tools/cli_runner.h"
#include "tests/tools/proxy_process.h"

namespace sluice {
namespace {

using ::testing::StartsWith;

constexpr int kWaiting = 5000;
constexpr char kKey[] = "sk-test-PROXY-LOAD";
constexpr char kMessage[] =
    R"({"model":"claude-sonnet-4","max_tokens":8,"messages":[{"role":"user","content":"hi"}]})";
constexpr const char* kPriorities[] = {"high", "normal", "low"};

// Polls `done` for up to a minute.
bool Eventually(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + absl::Minutes(1);
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return done();
}

// The proxy's sluice_proxy_queued gauge, from its /metrics; -1 if unread.
int64_t Queued(const std::string& base_url) {
  httplib::Client client(base_url);
  httplib::Result r = client.Get("/metrics");
  if (!r || r->status != 200) return -1;
  for (absl::string_view line : absl::StrSplit(r->body, '\n')) {
    int64_t value = 0;
    if (absl::ConsumePrefix(&line, "sluice_proxy_queued ") && absl::SimpleAtoi(line, &value)) {
      return value;
    }
  }
  return -1;
}

// The proxy's log lines of throttled requests (they name a priority), in the
// order it wrote them (its stdout, a temporary file, read through /proc).
std::vector<std::string> ThrottledLines(const CliProcess& proxy) {
  std::ifstream out(absl::StrCat("/proc/", proxy.pid(), "/fd/1"));
  std::vector<std::string> lines;
  for (std::string line; std::getline(out, line);) {
    if (absl::StrContains(line, " priority=")) lines.push_back(line);
  }
  return lines;
}

std::string PriorityOf(absl::string_view line) {
  const size_t from = line.find(" priority=") + 10;
  return std::string(line.substr(from, line.find(' ', from) - from));
}

// Runs this process, and the processes it starts, on at most two CPUs.
void UseTwoCpus() {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return;
  cpu_set_t two;
  CPU_ZERO(&two);
  for (int cpu = 0, taken = 0; cpu < CPU_SETSIZE && taken < 2; ++cpu) {
    if (CPU_ISSET(cpu, &allowed)) {
      CPU_SET(cpu, &two);
      ++taken;
    }
  }
  sched_setaffinity(0, sizeof(two), &two);
}

TEST(ProxyLoadTest, FiveThousandWaitingAreServedInPriorityOrderInLittleMemory) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);  // the proxy inherits it
  if (limit.rlim_cur < kWaiting + 200) GTEST_SKIP() << "too few descriptors";
  UseTwoCpus();

  ProxyProcess running("[scopes.global]\nrequests_per_minute = 1\n");
  CliProcess& proxy = running.process();
  const std::string url = running.url();
  ASSERT_THAT(url, StartsWith("http://127.0.0.1:"));

  {  // The minute's one request; the loops' first allocations are made.
    httplib::Client client(url);
    httplib::Result r =
        client.Post("/v1/messages", {{"x-api-key", kKey}}, kMessage, "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
  }
  ASSERT_EQ(Queued(url), 0);
  const int64_t before = ResidentBytes(proxy.pid());

  std::vector<std::unique_ptr<RawClient>> callers;
  callers.reserve(kWaiting);
  for (int i = 0; i < kWaiting; ++i) {
    callers.push_back(std::make_unique<RawClient>(running.port()));
    ASSERT_TRUE(callers.back()->connected()) << i;
    ASSERT_TRUE(callers.back()->Send(
        absl::StrCat("POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: ", kKey,
                     "\r\nx-sluice-priority: ", kPriorities[i % 3],
                     "\r\ncontent-type: application/json\r\ncontent-length: ", sizeof(kMessage) - 1,
                     "\r\n\r\n", kMessage)));
  }
  ASSERT_TRUE(Eventually([&] { return Queued(url) == kWaiting; })) << Queued(url);
  const int64_t after = ResidentBytes(proxy.pid());
  const double per_request = static_cast<double>(after - before) / kWaiting;
  std::printf("sluice proxy: %d requests waiting, resident memory %.1f MiB more, %.0f bytes each\n",
              kWaiting, static_cast<double>(after - before) / (1 << 20), per_request);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  EXPECT_LE(per_request, 16 * 1024);
#endif

  // Released: a rate that never binds, one request at a time.
  running.WriteLimits("[scopes.global]\nrequests_per_minute = 6000000\nmax_concurrency = 1\n");
  const absl::Time released = absl::Now();
  proxy.Kill(SIGHUP);
  int answered = 0;
  for (const std::unique_ptr<RawClient>& caller : callers) {
    answered += absl::StartsWith(caller->ReadUntil("\r\n\r\n"), "HTTP/1.1 200 ");
  }
  std::printf("sluice proxy: %d of %d answered 200, %.1f s after the reload\n", answered, kWaiting,
              absl::ToDoubleSeconds(absl::Now() - released));
  EXPECT_EQ(answered, kWaiting);

  std::vector<std::string> lines;
  Eventually([&] {
    lines = ThrottledLines(proxy);
    return lines.size() >= kWaiting + 1u;
  });
  ASSERT_EQ(lines.size(), kWaiting + 1u);
  std::vector<std::string> order;
  int not_ok = 0;
  for (size_t i = 1; i < lines.size(); ++i) {  // [0]: the first request, which never waited
    not_ok += !absl::StrContains(lines[i], " status=200 ");
    order.push_back(PriorityOf(lines[i]));
  }
  EXPECT_EQ(not_ok, 0);
  const std::vector<std::string> expected = [] {
    std::vector<std::string> sorted;
    for (int p = 0; p < 3; ++p) {
      for (int i = p; i < kWaiting; i += 3) sorted.push_back(kPriorities[p]);
    }
    return sorted;
  }();
  EXPECT_TRUE(order == expected) << "served out of priority order";
  proxy.Kill(SIGTERM);
  EXPECT_EQ(proxy.Wait().status, 0);
}

}  // namespace
}  // namespace sluice
