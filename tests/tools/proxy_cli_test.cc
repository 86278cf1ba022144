// `sluice proxy` as a process: it serves, logs one line per request without
// the key, reloads its limits on SIGHUP (refusing a bad file and keeping the
// old limits), serves /metrics from its segment, and exits 0 on SIGTERM.

#include <signal.h>

#include <fstream>
#include <functional>
#include <initializer_list>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/store/segment_test_util.h"
#include "tests/tools/cli_runner.h"
#include "tests/tools/provider_process.h"
#include "tools/fake_provider/fake_provider.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kKey[] = "sk-test-CLI-PROXY-SECRET";
constexpr char kMessage[] =
    R"({"model":"claude-sonnet-4","max_tokens":8,"messages":[{"role":"user","content":"hi"}]})";

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

// What the process has written to its stderr so far.
std::string StderrOf(const CliProcess& process) {
  std::ifstream err(absl::StrCat("/proc/", process.pid(), "/fd/2"));
  std::stringstream text;
  text << err.rdbuf();
  return text.str();
}

bool Eventually(const std::function<bool()>& done) {
  for (int i = 0; i < 1000; ++i) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return done();
}

int PostStatus(const std::string& base_url) {
  httplib::Client client(base_url);
  httplib::Result r =
      client.Post("/v1/messages", {{"x-api-key", kKey}}, kMessage, "application/json");
  return r ? r->status : -1;
}

// An unlimited simulated provider, a scratch segment, and a limits file of
// one request a minute for the proxy in front of it.
class ProxyCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FakeProviderOptions options;
    options.unlimited = true;
    auto provider = FakeProvider::Start(options);
    ASSERT_TRUE(provider.ok()) << provider.status();
    provider_ = *std::move(provider);
    WriteText(limits_, "[scopes.global]\nrequests_per_minute = 1\n");
  }
  void TearDown() override { std::remove(limits_.c_str()); }

  // `sluice proxy` in front of the provider, with the limits file and `flags`.
  std::vector<std::string> ProxyArgs(std::initializer_list<std::string> flags) const {
    std::vector<std::string> args = {"proxy",         "--listen",        "127.0.0.1:0",
                                     "--config",      limits_,           "--segment",
                                     segment_.path(), "--anthropic-url", provider_->base_url()};
    args.insert(args.end(), flags);
    return args;
  }

  ScratchSegment segment_;
  const std::string limits_ = absl::StrCat(segment_.path(), ".toml");
  std::unique_ptr<FakeProvider> provider_;
};

TEST_F(ProxyCliTest, ServesReloadsOnHupRefusingABadFileAndStopsOnTerm) {
  CliProcess proxy(ProxyArgs({"--queue-timeout", "300ms"}));
  const std::string url = ProviderUrl(proxy);
  ASSERT_THAT(url, HasSubstr("http://127.0.0.1:"));
  EXPECT_EQ(PostStatus(url), 200);
  EXPECT_EQ(PostStatus(url), 429);  // one a minute

  WriteText(limits_, "[scopes.global]\nrequests_per_minut = 60000\n");
  proxy.Kill(SIGHUP);
  ASSERT_TRUE(
      Eventually([&] { return StderrOf(proxy).find("reload refused") != std::string::npos; }));
  EXPECT_THAT(StderrOf(proxy), HasSubstr("requests_per_minut: unknown key"));
  EXPECT_EQ(PostStatus(url), 429);  // the old limits stay

  WriteText(limits_, "[scopes.global]\nrequests_per_minute = 60000\n");
  proxy.Kill(SIGHUP);
  EXPECT_TRUE(Eventually([&] { return PostStatus(url) == 200; }));

  // The new limits reach the shared cells before the proxy switches to them
  // on its loop: a 200 can come before the reload is counted.
  httplib::Client metrics(url);
  std::string body;
  EXPECT_TRUE(Eventually([&] {
    httplib::Result scraped = metrics.Get("/metrics");
    body = scraped ? scraped->body : "";
    return absl::StrContains(body, "sluice_proxy_reloads_total 1");
  })) << body;
  EXPECT_THAT(body, HasSubstr("scope:global:rpm"));
  EXPECT_THAT(body, HasSubstr("period=\"minute\"} 60000"));

  proxy.Kill(SIGTERM);
  const CliResult result = proxy.Wait();
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("POST /v1/messages anthropic scope=global"));
  EXPECT_THAT(result.out, HasSubstr("status=429 outcome=throttled"));
  EXPECT_THAT(result.out + result.err, Not(HasSubstr(kKey)));
}

// --time-scale 60 runs the limits 60 times faster, as the simulated
// provider's: one a minute is one a second, so the second request waits
// about a second, not a minute (past --queue-timeout: a 429).
TEST_F(ProxyCliTest, TimeScaleRunsTheLimitsFaster) {
  CliProcess proxy(ProxyArgs({"--queue-timeout", "20s", "--time-scale", "60"}));
  const std::string url = ProviderUrl(proxy);
  ASSERT_THAT(url, HasSubstr("http://127.0.0.1:"));
  EXPECT_EQ(PostStatus(url), 200);
  const absl::Time start = absl::Now();
  EXPECT_EQ(PostStatus(url), 200);
  const absl::Duration waited = absl::Now() - start;
  EXPECT_GE(waited, absl::Milliseconds(500));
  EXPECT_LE(waited, absl::Seconds(15));
  proxy.Kill(SIGTERM);
  EXPECT_EQ(proxy.Wait().status, 0);
}

TEST_F(ProxyCliTest, ABadConfigOrAddressIsRefusedAtStart) {
  WriteText(limits_, "[scopes.global]\nrequests_per_minute = -1\n");
  CliResult bad = RunCli(ProxyArgs({}));
  EXPECT_EQ(bad.status, 78) << bad.err;
  EXPECT_THAT(bad.err, HasSubstr(absl::StrCat(limits_, ":2:")));
  CliResult address = RunCli({"proxy", "--listen", "nowhere", "--segment", segment_.path()});
  EXPECT_EQ(address.status, 64) << address.err;
  CliResult scale = RunCli(
      {"proxy", "--listen", "127.0.0.1:0", "--segment", segment_.path(), "--time-scale", "0"});
  EXPECT_EQ(scale.status, 64) << scale.err;
  EXPECT_THAT(scale.err, HasSubstr("--time-scale must be in (0, 1e6]"));
}

}  // namespace
}  // namespace sluice
