// `sluice batch`, run as the binary: one result line per input line, both
// input shapes, malformed lines reported with their line numbers, resuming
// after kill -9 without losing or repeating a line, and two batches sharing
// a segment staying inside the limits together.
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/tools/cli_runner.h"
#include "tests/tools/provider_process.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

std::vector<Json> ReadResults(const std::string& path) {
  std::vector<Json> results;
  std::istringstream lines(ReadFile(path));
  for (std::string line; std::getline(lines, line);) results.push_back(Json::parse(line));
  return results;
}

std::string AnthropicLine(int i) {
  return Json{{"custom_id", absl::StrCat("req-", i)},
              {"params",
               {{"model", "claude-sonnet-4"},
                {"max_tokens", 16},
                {"messages", {{{"role", "user"}, {"content", absl::StrCat("Question ", i)}}}}}}}
      .dump();
}

std::string OpenAiLine(int i) {
  return Json{{"custom_id", absl::StrCat("req-", i)},
              {"method", "POST"},
              {"url", "/v1/chat/completions"},
              {"body",
               {{"model", "gpt-4o-mini"},
                {"max_tokens", 16},
                {"messages", {{{"role", "user"}, {"content", absl::StrCat("Question ", i)}}}}}}}
      .dump();
}

std::string Lines(int n, std::string (*line)(int)) {
  std::string text;
  for (int i = 0; i < n; ++i) absl::StrAppend(&text, line(i), "\n");
  return text;
}

class BatchTest : public ::testing::Test {
 protected:
  BatchTest() {
    static std::atomic<int> counter{0};
    dir_ = absl::StrCat(::testing::TempDir(), "sluice-batch-", getpid(), "-", counter++);
    EXPECT_EQ(system(absl::StrCat("mkdir -p ", dir_).c_str()), 0);
  }
  ~BatchTest() override { EXPECT_EQ(system(absl::StrCat("rm -rf ", dir_).c_str()), 0); }
  std::string Path(const std::string& name) const { return absl::StrCat(dir_, "/", name); }

  std::string dir_;
};

TEST_F(BatchTest, EveryLineGetsOneResultAnthropicShape) {
  WriteFile(Path("in.jsonl"), Lines(40, AnthropicLine));
  const CliResult r = RunCli({"batch", Path("in.jsonl"), "--out", Path("out.jsonl"), "--simulate",
                              "--time_scale=60", "--json"});
  ASSERT_EQ(r.status, 0) << testing::PrintToString(r);
  const std::vector<Json> results = ReadResults(Path("out.jsonl"));
  ASSERT_EQ(results.size(), 40u);
  std::set<int> lines;
  for (const Json& result : results) {
    const int line = result["line"];
    lines.insert(line);
    EXPECT_EQ(result["custom_id"], absl::StrCat("req-", line - 1));
    EXPECT_EQ(result["status"], "succeeded") << result.dump();
    EXPECT_EQ(result["response"]["type"], "message");
    EXPECT_GT(result["usage"]["input_tokens"].get<int>(), 0);
    EXPECT_EQ(result["attempts"], 1);
    EXPECT_TRUE(result.contains("throttle_wait_ms"));
    EXPECT_EQ(result["simulated"], true);
  }
  EXPECT_EQ(lines.size(), 40u);
  const Json summary = Json::parse(r.out);
  EXPECT_EQ(summary["simulated"], true);
  EXPECT_EQ(summary["requests"], 40);
  EXPECT_EQ(summary["succeeded"], 40);
  EXPECT_EQ(summary["rate_limit_errors"], 0);
  EXPECT_EQ(summary["configured_rpm"], 1000);
  EXPECT_EQ(summary["configured_burst"], 100);
  // The throttle never lets through more than the limit allowed meanwhile.
  EXPECT_GE(summary["allowed"].get<double>(), 100);
  EXPECT_LE(summary["limit_used"].get<double>(), 1.0);
}

TEST_F(BatchTest, EveryLineGetsOneResultOpenAiShape) {
  WriteFile(Path("in.jsonl"), Lines(25, OpenAiLine));
  const CliResult r = RunCli(
      {"batch", Path("in.jsonl"), "--out", Path("out.jsonl"), "--simulate", "--time_scale=60"});
  ASSERT_EQ(r.status, 0) << testing::PrintToString(r);
  const std::vector<Json> results = ReadResults(Path("out.jsonl"));
  ASSERT_EQ(results.size(), 25u);
  for (const Json& result : results) {
    EXPECT_EQ(result["status"], "succeeded") << result.dump();
    EXPECT_EQ(result["response"]["object"], "chat.completion");
  }
  EXPECT_THAT(r.out, HasSubstr("succeeded      25"));
  EXPECT_THAT(r.out, HasSubstr("SIMULATED provider"));
}

// Without --simulate a batch is for the real API: with no key it stops (it
// used to run against the simulator and write "succeeded" results of
// "tok tok tok"), and against a provider it names, nothing says simulated.
TEST_F(BatchTest, TheRealApiIsTheDefaultAndTheSimulatorRunsOnlyWhenAsked) {
  WriteFile(Path("in.jsonl"), Lines(3, AnthropicLine));
  unsetenv("ANTHROPIC_API_KEY");
  CliResult r = RunCli({"batch", Path("in.jsonl"), "--out", Path("out.jsonl"),
                        absl::StrCat("--segment=", Path("segment"))});
  EXPECT_EQ(r.status, 1) << testing::PrintToString(r);
  EXPECT_THAT(r.err, HasSubstr("ANTHROPIC_API_KEY"));
  EXPECT_TRUE(ReadResults(Path("out.jsonl")).empty());

  CliProcess provider({"fake-provider", "--port=0", "--unlimited"});
  const std::string base_url = ProviderUrl(provider);
  ASSERT_FALSE(base_url.empty());
  setenv("ANTHROPIC_API_KEY", "sk-test-batch", 1);
  r = RunCli({"batch", Path("in.jsonl"), "--out", Path("out.jsonl"), "--base-url", base_url,
              absl::StrCat("--segment=", Path("segment")), "--json"});
  ASSERT_EQ(r.status, 0) << testing::PrintToString(r);
  for (const Json& result : ReadResults(Path("out.jsonl"))) {
    EXPECT_EQ(result["status"], "succeeded");
    EXPECT_FALSE(result.contains("simulated")) << result.dump();
  }
  EXPECT_EQ(Json::parse(r.out)["simulated"], false);
  r = RunCli({"batch", Path("in.jsonl"), "--out", Path("out2.jsonl"), "--simulate", "--base-url",
              base_url});
  EXPECT_EQ(r.status, 64);
  EXPECT_THAT(r.err, HasSubstr("--simulate and --base-url"));
}

// The summary's configured RPM is the tightest on the batch's route (its
// scope path and its provider's model class); of two equal limits, the
// provider's burst is the one it names.
TEST_F(BatchTest, TheSummaryNamesTheTightestRpmOnTheRoute) {
  WriteFile(Path("in.jsonl"), Lines(5, AnthropicLine));
  auto summary = [&](const std::string& out, const std::string& scope_limits) {
    WriteFile(Path("limits.toml"),
              "headroom = 1.0\nminute_burst = \"6s\"\n[providers.anthropic]\n"
              "requests_per_minute = 1000\n[scopes.global]\n" +
                  scope_limits);
    const CliResult r = RunCli({"batch", Path("in.jsonl"), "--out", Path(out), "--simulate",
                                "--time_scale=60", "--json", "--config", Path("limits.toml")});
    EXPECT_EQ(r.status, 0) << testing::PrintToString(r);
    return r.status == 0 ? Json::parse(r.out) : Json::object();
  };
  const Json equal = summary("equal.jsonl",
                             "requests_per_minute = 1000\n[scopes.global.burst]\n"
                             "requests_per_minute = 7\n");
  EXPECT_EQ(equal["configured_rpm"], 1000);
  EXPECT_EQ(equal["configured_burst"], 100);
  const Json tighter = summary("tighter.jsonl", "requests_per_minute = 500\n");
  EXPECT_EQ(tighter["configured_rpm"], 500);
  EXPECT_EQ(tighter["configured_burst"], 50);
}

// A file with provider limits and no scopes works (it used to fail every
// line); a configuration that cannot route the batch (a budget without a
// price for its model) stops it with exit 78 before anything is sent or
// written, instead of writing a "failed" result for every line.
TEST_F(BatchTest, AConfigurationProblemStopsTheBatchAndMarksNoLineDone) {
  std::string input = Lines(5, AnthropicLine);
  input += "{not json\n";
  WriteFile(Path("in.jsonl"), input);
  WriteFile(Path("providers.toml"), "[providers.anthropic]\nrequests_per_minute = 1000\n");
  CliResult r = RunCli({"batch", Path("in.jsonl"), "--out", Path("ok.jsonl"), "--simulate",
                        "--time_scale=60", "--config", Path("providers.toml")});
  EXPECT_EQ(r.status, 1) << testing::PrintToString(r);  // the bad line
  int succeeded = 0;
  for (const Json& result : ReadResults(Path("ok.jsonl")))
    succeeded += result["status"] == "succeeded";
  EXPECT_EQ(succeeded, 5);

  WriteFile(Path("budget.toml"), "[scopes.global]\nusd_per_day = 5.0\n");
  r = RunCli({"batch", Path("in.jsonl"), "--out", Path("out.jsonl"), "--simulate",
              "--time_scale=60", "--config", Path("budget.toml")});
  EXPECT_EQ(r.status, 78) << testing::PrintToString(r);
  EXPECT_THAT(r.err, HasSubstr("[prices]"));
  EXPECT_THAT(r.err, HasSubstr("nothing was sent"));
  EXPECT_EQ(ReadFile(Path("out.jsonl")), "");
}

// Failed lines are final on resume unless --retry-failed (--retry_failed)
// sends them again; the newer result line supersedes the older one.
TEST_F(BatchTest, RetryFailedSendsFailedLinesAgainAndTheNewerResultCounts) {
  WriteFile(Path("in.jsonl"), Lines(6, AnthropicLine));
  setenv("ANTHROPIC_API_KEY", "sk-test-batch", 1);
  const auto run = [&](const std::string& base_url, const std::vector<std::string>& more) {
    std::vector<std::string> args = {"batch",
                                     Path("in.jsonl"),
                                     "--out",
                                     Path("out.jsonl"),
                                     absl::StrCat("--base-url=", base_url),
                                     absl::StrCat("--segment=", Path("segment")),
                                     "--json"};
    args.insert(args.end(), more.begin(), more.end());
    return RunCli(args);
  };
  {
    // The money ran out: every line fails, and is not retried.
    CliProcess broke({"fake-provider", "--port=0", "--spend_limit_rate=1"});
    const std::string url = ProviderUrl(broke);
    ASSERT_FALSE(url.empty());
    const CliResult r = run(url, {});
    EXPECT_EQ(r.status, 1) << testing::PrintToString(r);
    EXPECT_EQ(Json::parse(r.out)["failed"], 6);
    // Resumed as it is, nothing is sent: failed lines are done.
    const CliResult again = run(url, {});
    EXPECT_EQ(Json::parse(again.out)["this_run"], 0) << again.out;
  }
  CliProcess paid({"fake-provider", "--port=0", "--unlimited"});
  const std::string url = ProviderUrl(paid);
  ASSERT_FALSE(url.empty());
  const CliResult r = run(url, {"--retry-failed"});
  ASSERT_EQ(r.status, 0) << testing::PrintToString(r);
  const Json summary = Json::parse(r.out);
  EXPECT_EQ(summary["retried_failed"], 6);
  EXPECT_EQ(summary["succeeded"], 6);
  std::map<int, std::string> last;
  for (const Json& result : ReadResults(Path("out.jsonl"))) {
    last[result["line"].get<int>()] = result["status"];
  }
  ASSERT_EQ(last.size(), 6u);
  for (const auto& [line, status] : last) EXPECT_EQ(status, "succeeded") << line;
  EXPECT_EQ(ReadResults(Path("out.jsonl")).size(), 12u);
  // Every line now ends in success: a further --retry_failed sends nothing.
  EXPECT_EQ(Json::parse(run(url, {"--retry_failed"}).out)["this_run"], 0);
}

// Bad lines are answered as results naming the line and what is wrong; the
// batch goes on with the others.
TEST_F(BatchTest, MalformedLinesAreErrorResultsWithTheirLineNumbers) {
  std::string text = Lines(3, AnthropicLine);
  text += "{not json\n";  // line 4
  text += R"({"params": {"model": "m", "max_tokens": 5, "messages": []}})"
          "\n";  // 5
  text += R"({"custom_id": "x", "params": {"model": "m", "messages": []}})"
          "\n";                     // 6
  text += AnthropicLine(1) + "\n";  // 7: repeats req-1
  text += OpenAiLine(9) + "\n";     // 8: the other shape
  text += R"({"custom_id": "y", "params": {}, "extra": 1})"
          "\n";               // 9
  text += "\n";               // 10: empty
  text += AnthropicLine(11);  // 11, no final newline
  WriteFile(Path("in.jsonl"), text);
  const CliResult r = RunCli(
      {"batch", Path("in.jsonl"), "--out", Path("out.jsonl"), "--simulate", "--time_scale=60"});
  EXPECT_EQ(r.status, 1) << testing::PrintToString(r);
  std::map<int, Json> by_line;
  for (const Json& result : ReadResults(Path("out.jsonl"))) {
    EXPECT_TRUE(by_line.emplace(result["line"].get<int>(), result).second) << result.dump();
  }
  ASSERT_EQ(by_line.size(), 11u);
  for (int line : {1, 2, 3, 11}) EXPECT_EQ(by_line[line]["status"], "succeeded") << line;
  const std::map<int, std::string> expected = {
      {4, "in.jsonl:4: not JSON"},
      {5, "in.jsonl:5: custom_id: must be a non-empty string"},
      {6, "in.jsonl:6: params.max_tokens: must be a positive integer"},
      {7, "in.jsonl:7: custom_id: 'req-1' repeats line 2"},
      {8, "in.jsonl:8: an OpenAI line (body) in a batch for anthropic"},
      {9, "in.jsonl:9: extra: unknown field"},
      {10, "in.jsonl:10: not JSON"},
  };
  for (const auto& [line, message] : expected) {
    SCOPED_TRACE(line);
    EXPECT_EQ(by_line[line]["status"], "invalid");
    EXPECT_EQ(by_line[line]["error"]["class"], "invalid_line");
    EXPECT_THAT(by_line[line]["error"]["message"].get<std::string>(), HasSubstr(message));
  }
  EXPECT_THAT(r.out, HasSubstr("invalid lines  7"));
}

// Killed with SIGKILL at random moments, 20 times, then run to the end: each
// line has exactly one result, and only the lines in flight at a kill were
// sent twice. The provider runs in a process of its own, so that it sees
// every request of every run.
TEST_F(BatchTest, ResumesAfterKill9LosingAndRepeatingNothing) {
  CliProcess provider({"fake-provider", "--port=0", "--unlimited", "--latency=5ms"});
  const std::string base_url = ProviderUrl(provider);
  ASSERT_FALSE(base_url.empty());
  setenv("ANTHROPIC_API_KEY", "sk-test-batch", 1);

  // About 1,600 requests a second (8 in flight, 5 ms each): a run takes
  // over half a second, and each round is killed well before that.
  constexpr int kLines = 1000;
  constexpr int kInFlight = 8;
  WriteFile(Path("in.jsonl"), Lines(kLines, AnthropicLine));
  const std::vector<std::string> args = {"batch",
                                         Path("in.jsonl"),
                                         "--out",
                                         Path("out.jsonl"),
                                         "--provider=anthropic",
                                         absl::StrCat("--base_url=", base_url),
                                         absl::StrCat("--segment=", Path("segment")),
                                         absl::StrCat("--max_in_flight=", kInFlight)};
  std::mt19937 rng(20261128);
  int kills = 0;
  for (int round = 0; round < 20; ++round) {
    CliProcess batch(args);
    usleep(std::uniform_int_distribution<int>(5'000, 60'000)(rng));
    batch.Kill(SIGKILL);
    const CliResult r = batch.Wait();
    if (r.status == 128 + SIGKILL) ++kills;
    // Every line written so far is whole, or the last one is torn.
  }
  EXPECT_GE(kills, 15) << "the batch should mostly be killed mid-run";
  // A torn last line, as a kill mid-write would leave one.
  { std::ofstream(Path("out.jsonl"), std::ios::app) << R"({"line": 3, "custom_id": "req-)"; }
  const CliResult last = CliProcess(args).Wait();
  ASSERT_EQ(last.status, 0) << testing::PrintToString(last);
  EXPECT_THAT(last.err, HasSubstr("dropped a torn last line"));

  std::map<int, int> seen;
  for (const Json& result : ReadResults(Path("out.jsonl"))) {
    ++seen[result["line"].get<int>()];
    EXPECT_EQ(result["status"], "succeeded");
    EXPECT_EQ(result["custom_id"], absl::StrCat("req-", result["line"].get<int>() - 1));
  }
  ASSERT_EQ(seen.size(), static_cast<size_t>(kLines));
  for (const auto& [line, count] : seen) EXPECT_EQ(count, 1) << "line " << line;

  // Nothing finished was sent again: the provider saw the lines once each,
  // plus at most the requests in flight at each kill.
  const Json stats = ProviderStats(base_url);
  EXPECT_GE(stats["totals"]["requests"].get<int>(), kLines);
  EXPECT_LE(stats["totals"]["requests"].get<int>(), kLines + kills * kInFlight) << stats.dump();
}

// Two batches on one host share the limits through the segment: together
// they stay inside them and draw no 429s from a provider that allows a little
// more. Each on a segment of its own, the same two overrun it (the control,
// which shows that the first half of the test can fail). Each keeps 16
// requests in flight: together well under the provider's 64 threads, so that
// no connection waits for one and reaches it late, in a bunch.
TEST_F(BatchTest, TwoBatchesSharingASegmentStayWithinTheLimitsTogether) {
  WriteFile(Path("limits.toml"), R"(headroom = 1.0
[providers.anthropic]
requests_per_minute = 50
[scopes.global]
)");
  WriteFile(Path("a.jsonl"), Lines(100, AnthropicLine));
  WriteFile(Path("b.jsonl"), Lines(100, AnthropicLine));
  setenv("ANTHROPIC_API_KEY", "sk-test-batch", 1);
  std::map<bool, int> rate_limited;
  for (bool shared : {true, false}) {
    SCOPED_TRACE(shared ? "one segment" : "two segments");
    // 60 a simulated minute at 60x: 60 a second, and a bucket of 60.
    CliProcess provider({"fake-provider", "--port=0", "--rpm=60", "--time_scale=60"});
    const std::string base_url = ProviderUrl(provider);
    ASSERT_FALSE(base_url.empty());
    std::vector<std::unique_ptr<CliProcess>> batches;
    for (const char* name : {"a", "b"}) {
      const std::string segment = shared ? Path("segment") : Path(absl::StrCat("segment-", name));
      batches.push_back(std::make_unique<CliProcess>(std::vector<std::string>{
          "batch", Path(absl::StrCat(name, ".jsonl")), "--out",
          Path(absl::StrCat(name, shared ? "-shared" : "-apart", ".out")), "--provider=anthropic",
          absl::StrCat("--base_url=", base_url), "--config", Path("limits.toml"),
          absl::StrCat("--segment=", segment), "--time_scale=60", "--max_in_flight=16", "--json"}));
    }
    for (auto& batch : batches) {
      const CliResult r = batch->Wait();
      if (shared) {
        EXPECT_EQ(r.status, 0) << testing::PrintToString(r);
      }
    }
    rate_limited[shared] = ProviderStats(base_url)["totals"]["rate_limited"].get<int>();
  }
  EXPECT_EQ(rate_limited[true], 0);
  EXPECT_GT(rate_limited[false], 0);
}

// The shell reproduction of a dead process's leases: a batch holding both
// leases of a cap of 2 is killed with SIGKILL; the next batch on the segment
// takes them back and sends every line (it used to fail all four in 20 ms as
// throttle_timeout, and resuming never sent them).
TEST_F(BatchTest, ANewBatchTakesBackTheLeasesOfAKilledOne) {
  WriteFile(Path("cap.toml"), "[scopes.global]\nmax_concurrency = 2\n");
  WriteFile(Path("in.jsonl"), Lines(4, AnthropicLine));
  setenv("ANTHROPIC_API_KEY", "sk-test-batch", 1);
  CliProcess slow({"fake-provider", "--port=0", "--unlimited", "--latency=60s"});
  const std::string slow_url = ProviderUrl(slow);
  ASSERT_FALSE(slow_url.empty());
  const auto batch = [&](const std::string& url, const std::string& out) {
    return std::vector<std::string>{
        "batch",         Path("in.jsonl"), "--out",
        Path(out),       "--base-url",     url,
        "--config",      Path("cap.toml"), absl::StrCat("--segment=", Path("segment")),
        "--timeout=10s", "--json"};
  };
  CliProcess holder(batch(slow_url, "held.jsonl"));
  for (int i = 0; i < 500 && ProviderStats(slow_url)["totals"]["requests"] != 2; ++i) {
    usleep(10'000);
  }
  ASSERT_EQ(ProviderStats(slow_url)["totals"]["requests"], 2) << "both leases taken";
  holder.Kill(SIGKILL);
  EXPECT_EQ(holder.Wait().status, 128 + SIGKILL);

  CliProcess fast({"fake-provider", "--port=0", "--unlimited"});
  const std::string fast_url = ProviderUrl(fast);
  ASSERT_FALSE(fast_url.empty());
  const CliResult r = RunCli(batch(fast_url, "out.jsonl"));
  ASSERT_EQ(r.status, 0) << testing::PrintToString(r);
  EXPECT_EQ(Json::parse(r.out)["succeeded"], 4);
}

// Results from another input are refused, not appended to.
TEST_F(BatchTest, ResultsOfAnotherInputAreRefused) {
  WriteFile(Path("in.jsonl"), Lines(3, AnthropicLine));
  const std::string other = R"({"line": 2, "custom_id": "other-2", "status": "succeeded"})"
                            "\n";
  WriteFile(Path("out.jsonl"), other);
  const CliResult r = RunCli(
      {"batch", Path("in.jsonl"), "--out", Path("out.jsonl"), "--simulate", "--time_scale=60"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("out.jsonl:1: result for line 2 has custom_id 'other-2'"));
  EXPECT_THAT(r.err, HasSubstr("in.jsonl:2 has 'req-1'"));
  EXPECT_EQ(ReadFile(Path("out.jsonl")), other);  // untouched
}

TEST_F(BatchTest, UsageErrors) {
  WriteFile(Path("in.jsonl"), Lines(1, AnthropicLine));
  CliResult r = RunCli({"batch", Path("in.jsonl")});
  EXPECT_EQ(r.status, 64);
  EXPECT_THAT(r.err, HasSubstr("--out"));
  r = RunCli({"batch", Path("missing.jsonl"), "--out", Path("out.jsonl")});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("missing.jsonl"));
  r = RunCli({"batch", Path("in.jsonl"), "--out", Path("out.jsonl"), "--max_in_flight=0"});
  EXPECT_EQ(r.status, 64);
  EXPECT_THAT(r.err, HasSubstr("--max-in-flight"));
}

}  // namespace
}  // namespace sluice
