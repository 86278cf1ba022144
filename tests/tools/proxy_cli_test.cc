// `sluice proxy` as a process: it serves, logs one line per request without
// the key, reloads its limits on SIGHUP (refusing a bad file and keeping the
// old limits), serves /metrics from its segment, and exits 0 on SIGTERM.

#include <signal.h>

#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/store/segment_test_util.h"
#include "tests/tools/cli_runner.h"
#include "tests/tools/provider_process.h"
#include "tests/tools/proxy_process.h"
#include "tools/fake_provider/fake_provider.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kKey[] = "sk-test-CLI-PROXY-SECRET";
constexpr char kMessage[] =
    R"({"model":"claude-sonnet-4","max_tokens":8,"messages":[{"role":"user","content":"hi"}]})";

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

TEST(ProxyCliTest, ServesReloadsOnHupRefusingABadFileAndStopsOnTerm) {
  ProxyProcess running("[scopes.global]\nrequests_per_minute = 1\n", {"--queue-timeout", "300ms"});
  CliProcess& proxy = running.process();
  const std::string url = running.url();
  ASSERT_THAT(url, HasSubstr("http://127.0.0.1:"));
  EXPECT_EQ(PostStatus(url), 200);
  EXPECT_EQ(PostStatus(url), 429);  // one a minute

  running.WriteLimits("[scopes.global]\nrequests_per_minut = 60000\n");
  proxy.Kill(SIGHUP);
  ASSERT_TRUE(
      Eventually([&] { return StderrOf(proxy).find("reload refused") != std::string::npos; }));
  EXPECT_THAT(StderrOf(proxy), HasSubstr("requests_per_minut: unknown key"));
  EXPECT_EQ(PostStatus(url), 429);  // the old limits stay

  running.WriteLimits("[scopes.global]\nrequests_per_minute = 60000\n");
  proxy.Kill(SIGHUP);
  EXPECT_TRUE(Eventually([&] { return PostStatus(url) == 200; }));

  httplib::Client metrics(url);
  httplib::Result scraped = metrics.Get("/metrics");
  ASSERT_TRUE(scraped);
  EXPECT_THAT(scraped->body, HasSubstr("sluice_proxy_reloads_total 1"));
  EXPECT_THAT(scraped->body, HasSubstr("scope:global:rpm"));

  proxy.Kill(SIGTERM);
  const CliResult result = proxy.Wait();
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("POST /v1/messages anthropic scope=global"));
  EXPECT_THAT(result.out, HasSubstr("status=429 outcome=throttled"));
  EXPECT_THAT(result.out + result.err, Not(HasSubstr(kKey)));
}

TEST(ProxyCliTest, ABadConfigOrAddressIsRefusedAtStart) {
  ScratchSegment segment;
  const std::string limits = absl::StrCat(segment.path(), ".toml");
  WriteText(limits, "[scopes.global]\nrequests_per_minute = -1\n");
  CliResult bad =
      RunCli({"proxy", "--listen", "127.0.0.1:0", "--config", limits, "--segment", segment.path()});
  EXPECT_EQ(bad.status, 78) << bad.err;
  EXPECT_THAT(bad.err, HasSubstr(absl::StrCat(limits, ":2:")));
  CliResult address = RunCli({"proxy", "--listen", "nowhere", "--segment", segment.path()});
  EXPECT_EQ(address.status, 64) << address.err;
  std::remove(limits.c_str());
}

}  // namespace
}  // namespace sluice
