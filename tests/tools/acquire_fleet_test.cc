// `sluice acquire --redis URL`: shell scripts on many hosts (here: two
// segments) share one bucket in a private redis-server, in both modes.

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/tools/cli_runner.h"
#include "tests/tools/redis_server.h"
#include "tools/fake_provider/fake_provider.h"

namespace sluice {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

class AcquireFleetTest : public ::testing::TestWithParam<std::string> {
 protected:
  AcquireFleetTest() {
    static std::atomic<int> counter{0};
    for (std::string& s : segments_)
      s = absl::StrCat("sluice-fleet-cli-", getpid(), "-", counter++);
  }
  ~AcquireFleetTest() override {
    for (const std::string& s : segments_) unlink(absl::StrCat("/dev/shm/", s).c_str());
  }

  // One acquire on host `host` (its own segment) of the fleet's bucket.
  CliResult Acquire(int host, std::vector<std::string> more = {}) {
    std::vector<std::string> args = {"acquire",   "fleet-key",
                                     "--segment", segments_[host],
                                     "--rate",    "1/h",
                                     "--burst",   "5",
                                     "--redis",   absl::StrCat("redis://127.0.0.1:", redis_.port()),
                                     "--mode",    GetParam(),
                                     "--timeout", "300ms"};
    args.insert(args.end(), more.begin(), more.end());
    return RunCli(args);
  }

  RedisServer redis_;
  std::string segments_[2];
};

TEST_P(AcquireFleetTest, TwoHostsShareOneBurst) {
  ASSERT_TRUE(redis_.ok());
  int granted = 0, refused = 0;
  for (int i = 0; i < 8; ++i) {
    const CliResult r = Acquire(i % 2);
    if (r.status == 0) ++granted;
    if (r.status == 75) ++refused;
    if (r.status == 75) {
      EXPECT_THAT(r.err, HasSubstr("fleet-key")) << r.err;
    }
  }
  // Five permits in the fleet, an hour from the next: every acquire either
  // took one or was refused, and together they took the five.
  EXPECT_EQ(granted, 5);
  EXPECT_EQ(refused, 3);
}

// --timeout 0 waits for nothing, but a permit the fleet holds is not a wait:
// exact mode asks Redis once, and lease mode takes one lease (a regression:
// lease mode gave up before its first lease).
TEST_P(AcquireFleetTest, NoWaitStillTakesAPermitTheFleetHolds) {
  ASSERT_TRUE(redis_.ok());
  for (int i = 0; i < 5; ++i) {
    const CliResult r = Acquire(i % 2, {"--timeout", "0s"});
    EXPECT_EQ(r.status, 0) << ::testing::PrintToString(r);
  }
  const CliResult empty = Acquire(0, {"--timeout", "0s"});
  EXPECT_EQ(empty.status, 75) << ::testing::PrintToString(empty);
}

TEST_P(AcquireFleetTest, BadFlagsAreUsageErrors) {
  ASSERT_TRUE(redis_.ok());
  CliResult r = RunCli({"acquire", "k", "--rate", "1/s", "--burst", "1", "--redis",
                        "redis://user:hunter2@127.0.0.1:1", "--mode", GetParam()});
  EXPECT_EQ(r.status, 64) << r.err;
  EXPECT_THAT(r.err, AllOf(HasSubstr("--redis"), Not(HasSubstr("hunter2"))));
  r = RunCli({"acquire", "k", "--rate", "1/s", "--burst", "1", "--redis",
              absl::StrCat("redis://127.0.0.1:", redis_.port()), "--mode", "sometimes"});
  EXPECT_EQ(r.status, 64) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--mode"));
  // A burst Redis cannot hold exactly (two days of it).
  r = RunCli({"acquire", "k", "--rate", "1/day", "--burst", "2", "--redis",
              absl::StrCat("redis://127.0.0.1:", redis_.port()), "--mode", GetParam()});
  EXPECT_EQ(r.status, 64) << r.err;
  EXPECT_THAT(r.err, HasSubstr("spans at most"));
}

TEST_P(AcquireFleetTest, AnUnreachableRedisFailsWithinTheTimeout) {
  // A port nothing listens on: the connection is refused at once.
  const CliResult r = RunCli({"acquire", "k", "--rate", "1/s", "--burst", "1", "--redis",
                              "redis://127.0.0.1:1", "--mode", GetParam(), "--timeout", "200ms"});
  EXPECT_NE(r.status, 0);
  if (GetParam() == "exact") {
    EXPECT_THAT(r.err, HasSubstr("127.0.0.1:1")) << r.err;
  }
}

// `sluice call` four times, alternating two hosts (two segments), with a
// limits file whose [cluster] table (plus `cluster_more`) shares a fleet
// bucket of two permits, 30 s to the next: the calls that went through, and
// the others' stderr.
struct TwoHostCalls {
  int ok = 0;
  std::vector<std::string> refusals;
};

TwoHostCalls CallOnTwoHosts(const std::string& cluster_more) {
  TwoHostCalls calls;
  RedisServer redis;
  EXPECT_TRUE(redis.ok());
  auto provider = FakeProvider::Start({});
  EXPECT_TRUE(provider.ok()) << provider.status();
  if (!redis.ok() || !provider.ok()) return calls;
  const std::string tag = absl::StrCat(getpid(), "-", std::hash<std::string>()(cluster_more));
  const std::string limits = absl::StrCat(::testing::TempDir(), "/fleet-limits-", tag, ".toml");
  std::ofstream(limits) << "[cluster]\nredis = \"redis://127.0.0.1:" << redis.port() << "/0\"\n"
                        << cluster_more
                        << "[scopes.global]\nrequests_per_minute = 2\n"
                           "[scopes.global.burst]\nrequests_per_minute = 2\n";
  setenv("ANTHROPIC_API_KEY", "sk-fleet-test", 1);
  for (int i = 0; i < 4; ++i) {
    const std::string segment = absl::StrCat("sluice-fleet-call-", tag, "-", i % 2);
    const CliResult r =
        RunCli({"call", "hi", "--segment", segment, "--config", limits, "--base-url",
                (*provider)->base_url(), "--max-tokens", "8", "--timeout", "300ms"});
    if (r.status == 0) ++calls.ok;
    if (r.status != 0) calls.refusals.push_back(r.err);
  }
  unsetenv("ANTHROPIC_API_KEY");
  for (int h = 0; h < 2; ++h)
    unlink(absl::StrCat("/dev/shm/sluice-fleet-call-", tag, "-", h).c_str());
  std::remove(limits.c_str());
  return calls;
}

// Lease mode: a refusal is a pool holding too little.
TEST(ClusterLimitsTest, CallsOnTwoHostsShareTheFleetsBurst) {
  const TwoHostCalls calls = CallOnTwoHosts("");
  EXPECT_EQ(calls.ok, 2);
  ASSERT_EQ(calls.refusals.size(), 2u);
  for (const std::string& err : calls.refusals) EXPECT_THAT(err, HasSubstr("pool")) << err;
}

// Exact mode: every reservation is one round trip to Redis, and a refusal
// names the fleet's bucket (no pool is involved).
TEST(ClusterLimitsTest, ExactModeCallsOnTwoHostsShareTheFleetsBurst) {
  const TwoHostCalls calls = CallOnTwoHosts("mode = \"exact\"\n");
  EXPECT_EQ(calls.ok, 2);
  ASSERT_EQ(calls.refusals.size(), 2u);
  for (const std::string& err : calls.refusals) {
    EXPECT_THAT(err, AllOf(HasSubstr("scope:global:rpm"), Not(HasSubstr("pool")))) << err;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, AcquireFleetTest, ::testing::Values("exact", "lease"));

}  // namespace
}  // namespace sluice
