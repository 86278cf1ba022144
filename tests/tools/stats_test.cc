// sluice stats, top and metrics as tools: the text view of a snapshot, the
// /metrics server, and the built binary (SLUICE_CLI_PATH) run as a user
// would: once, --watch, top on a pipe and on a pseudo-terminal, metrics
// scraped over loopback. (Snapshots and their JSON and Prometheus forms are
// tested in tests/stats.)
#include "tools/stats/stats.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <ostream>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "sluice/clock.h"
#include "sluice/limits.h"
#include "sluice/segment.h"
#include "tests/stats/exposition_parser.h"
#include "tests/stats/stats_fixture.h"
#include "tests/store/segment_test_util.h"
#include "tests/tools/cli_runner.h"

namespace sluice {
namespace {

using ::testing::AllOf;
using ::testing::ContainsRegex;
using ::testing::Ge;
using ::testing::HasSubstr;
using ::testing::Le;
using ::testing::Not;
using ::testing::StartsWith;

TEST_F(StatsTest, TextShowsEachGroupsBucketsBudgetsCapsAndPaths) {
  Populate(Wall());
  const std::string text = FormatStatsText(Snapshot(&config_));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("segment    ", scratch_.path(), " (7 of 1024 slots")));
  EXPECT_THAT(text, HasSubstr("config     test.toml\n"));
  EXPECT_THAT(text, HasSubstr("processes  1 attached, 1 alive\n"));
  EXPECT_THAT(text, ContainsRegex("\nGROUP +BUCKET +LIMIT +RATE +BURST +AVAILABLE +AVAIL% +"
                                  "PRESSURE +BOTTLENECKS\n"));
  EXPECT_THAT(text,
              ContainsRegex("\nscope global +rpm +800/min +800/min +80 +60 +75.0% +low +0\n"));
  EXPECT_THAT(text, ContainsRegex("\nscope team:marketing +rpm +100/min +100/min +10 +2 +20.0% +"
                                  "high +3\n"));
  EXPECT_THAT(text, ContainsRegex("\nprovider anthropic/default +rpm +500/min +500/min +50 +25 +"
                                  "50.0% +medium +7\n"));
  EXPECT_THAT(text, ContainsRegex("\nprovider openai/default +rpm +50/min +50/min +5 +- +- +"
                                  "not opened +-\n"));
  EXPECT_THAT(text, ContainsRegex("\nother anthropic +itpm +- +1000/min +100 +100 +100.0% +low"));
  EXPECT_THAT(text, HasSubstr("\nbottleneck: provider:anthropic:default:rpm (7 times)\n"));
  EXPECT_THAT(text, ContainsRegex("\nscope team:marketing +day +2025-01-15 +1.234567 +5.000000 +"
                                  "24.7% +1\n"));
  EXPECT_THAT(text,
              ContainsRegex("\nscope global +month +2025-01 +0.000000 +100.000000 +0.0% +0\n"));
  EXPECT_THAT(text, ContainsRegex("\nCONCURRENCY +IN FLIGHT +MAX +BOTTLENECKS\nscope global +1 +4 +"
                                  "2\n"));
  EXPECT_THAT(text, ContainsRegex("\nteam:marketing +global +team:marketing -> global\n"));
  EXPECT_THAT(text, ContainsRegex(absl::StrCat("\n *", getpid(), " +yes +")));

  // Without a config: no LIMIT column, no paths.
  const std::string bare = FormatStatsText(Snapshot(nullptr));
  EXPECT_THAT(bare, Not(HasSubstr("LIMIT")));  // nor LIMIT USD and SPENT% for budgets
  EXPECT_THAT(bare, ContainsRegex("\nGROUP +BUCKET +RATE +BURST +AVAILABLE"));
  EXPECT_THAT(bare, ContainsRegex("\nscope team:marketing +day +2025-01-15 +1.234567 +1\n"));
  EXPECT_THAT(bare, Not(HasSubstr("PATH")));
  EXPECT_THAT(bare, ContainsRegex("\nscope global +rpm +800/min +80 +60 +75.0% +low +0\n"));
}

TEST_F(StatsTest, AnEmptySegmentSaysSo) {
  const std::string text = FormatStatsText(Snapshot(nullptr));
  EXPECT_THAT(text, HasSubstr("\nbuckets: none\n"));
  EXPECT_THAT(text, Not(HasSubstr("bottleneck:")));
  EXPECT_THAT(text, Not(HasSubstr("BUDGET")));
  const auto e = ParseExposition(FormatPrometheus(Snapshot(nullptr)));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(Get(*e, "sluice_segment_slots_used", {}), 0);
  EXPECT_FALSE(Has(*e, "sluice_bucket_available_permits", {}));
}

TEST(ListenAddressTest, ParsesHostAndPortAndNamesWhatIsWrong) {
  auto a = ParseListenAddress("127.0.0.1:9464");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 9464);
  a = ParseListenAddress("[::1]:0");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 0);
  EXPECT_TRUE(ParseListenAddress("localhost:65535").ok());
  EXPECT_TRUE(ParseListenAddress("0.0.0.0:80").ok());
  for (const char* bad :
       {"", "9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:+80",
        "127.0.0.1:http", "example.com:80", "::1:80", "[127.0.0.1]:80", "300.0.0.1:80"}) {
    const auto parsed = ParseListenAddress(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(parsed.status().message()),
                StartsWith(absl::StrCat("--listen '", bad, "': ")));
  }
}

TEST(MetricsServerTest, ServesAFreshScrapeOnMetricsOnly) {
  std::atomic<int> scrapes{0};
  std::atomic<bool> fail{false};
  auto server = MetricsServer::Start({"127.0.0.1", 0}, [&]() -> absl::StatusOr<std::string> {
    if (fail) return absl::NotFoundError("no segment at /dev/shm/x; nothing has run yet?");
    return absl::StrCat("# TYPE sluice_x gauge\nsluice_x ", ++scrapes, "\n");
  });
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  EXPECT_GT(port, 0);
  EXPECT_EQ((*server)->url(), absl::StrCat("http://127.0.0.1:", port, "/metrics"));
  httplib::Client client("127.0.0.1", port);
  for (int i = 1; i <= 2; ++i) {
    auto res = client.Get("/metrics");
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    EXPECT_EQ(res->body, absl::StrCat("# TYPE sluice_x gauge\nsluice_x ", i, "\n"));
  }
  auto other = client.Get("/");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  fail = true;
  auto unavailable = client.Get("/metrics");
  ASSERT_TRUE(unavailable);
  EXPECT_EQ(unavailable->status, 503);
  EXPECT_THAT(unavailable->body, HasSubstr("no segment at /dev/shm/x"));
  // A second server cannot take the same port.
  auto second = MetricsServer::Start({"127.0.0.1", port}, [] { return std::string(); });
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(absl::StrCat("127.0.0.1:", port)));
  (*server)->Stop();
  (*server)->Stop();  // twice is fine
}

// The binary ----------------------------------------------------------------------

using Result = CliResult;

MATCHER_P(ExitsWith, code, "") { return arg.status == code; }

// Reads from `fd` until `want` has appeared (true) or `limit` passed.
bool ReadUntil(int fd, absl::string_view want, std::string* got,
               absl::Duration limit = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + limit;
  while (!absl::StrContains(*got, want)) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return absl::StrContains(*got, want);
    got->append(buf, static_cast<size_t>(n));
  }
  return true;
}

int Count(absl::string_view text, absl::string_view what) {
  int n = 0;
  for (size_t at = text.find(what); at != absl::string_view::npos; at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

// Expects the row of team:marketing's rpm bucket as Populate() left it (2
// of 10 available), plus at most `refilled` permits from the tool's later
// reading of the host's clock.
void ExpectMarketingRow(const std::string& out, int64_t refilled) {
  static const std::regex kRow(
      "\nscope team:marketing +rpm +100/min +100/min +10 +([0-9]+) +([0-9.]+)% +([a-z]+) +3\n");
  std::smatch row;
  ASSERT_TRUE(std::regex_search(out, row, kRow)) << out;
  const int64_t available = std::stoll(row[1]);
  EXPECT_GE(available, 2);
  EXPECT_LE(available, 2 + refilled);
  EXPECT_EQ(row[2], absl::StrCat(available * 10, ".0"));
  EXPECT_EQ(row[3], available < 3 ? "high" : available < 6 ? "medium" : "low");
}

class StatsCliTest : public StatsTest {
 protected:
  std::vector<std::string> Args(std::vector<std::string> args) {
    args.insert(args.begin() + 1, {"--segment", scratch_.path()});
    return args;
  }
  Result Run(std::vector<std::string> args) { return RunCli(Args(std::move(args))); }
  std::string ConfigFile() {
    const std::string path = absl::StrCat(testing::TempDir(), "stats-test-", getpid(), ".toml");
    FILE* f = std::fopen(path.c_str(), "w");
    std::fwrite(kConfig.data(), 1, kConfig.size(), f);
    std::fclose(f);
    return path;
  }
};

TEST_F(StatsCliTest, StatsPrintsTheTable) {
  Populate(absl::Now());
  const Result r = Run({"stats", "--config", ConfigFile()});
  ASSERT_THAT(r, ExitsWith(0));
  EXPECT_THAT(r.out, StartsWith("sluice stats  "));
  ExpectMarketingRow(r.out, RefilledSincePopulate(100));
  EXPECT_THAT(r.out, HasSubstr("\nbottleneck: provider:anthropic:default:rpm (7 times)\n"));
  EXPECT_EQ(r.err, "");
}

TEST_F(StatsCliTest, StatsJsonAndPrometheusParseBack) {
  Populate(absl::Now());
  const Result json = Run({"stats", "--json"});
  ASSERT_THAT(json, ExitsWith(0));
  const nlohmann::json doc = nlohmann::json::parse(json.out);
  EXPECT_EQ(doc["segment"], scratch_.path());
  EXPECT_EQ(doc["groups"][1]["name"], "team:marketing");
  EXPECT_GE(doc["groups"][1]["buckets"][0]["available"], 2);
  EXPECT_LE(doc["groups"][1]["buckets"][0]["available"], 2 + RefilledSincePopulate(100));
  EXPECT_EQ(doc["groups"][1]["budgets"][0]["spent_micro_usd"], 1'234'567);

  const Result prom = Run({"stats", "--prometheus", "--config", ConfigFile()});
  ASSERT_THAT(prom, ExitsWith(0));
  const auto e = ParseExposition(prom.out);
  ASSERT_TRUE(e.ok()) << e.status();
  ExpectSluiceConventions(*e);
  EXPECT_THAT(Get(*e, "sluice_bucket_available_permits",
                  {{"bucket", "scope:team:marketing:rpm"},
                   {"owner", "team:marketing"},
                   {"owner_type", "scope"},
                   {"kind", "rpm"}}),
              AllOf(Ge(2), Le(2 + RefilledSincePopulate(100))));
  EXPECT_EQ(Get(*e, "sluice_processes_alive", {}), 1);  // this test, not the tool
}

TEST_F(StatsCliTest, BadUsageAndAMissingSegment) {
  Result r = Run({"stats", "--json", "--prometheus"});
  EXPECT_THAT(r, ExitsWith(64));
  EXPECT_THAT(r.err, HasSubstr("--json and --prometheus"));
  r = Run({"stats", "--watch", "-1s"});
  EXPECT_THAT(r, ExitsWith(64));
  EXPECT_THAT(r.err, HasSubstr("--watch must be a positive duration"));
  r = Run({"stats", "--iterations", "2"});
  EXPECT_THAT(r, ExitsWith(64));
  EXPECT_THAT(r.err, HasSubstr("give --watch too"));
  r = Run({"stats", "--watch", "1s", "--iterations", "-1"});
  EXPECT_THAT(r, ExitsWith(64));
  EXPECT_THAT(r.err, HasSubstr("--iterations must be 0"));
  r = Run({"top", "--interval", "0s"});
  EXPECT_THAT(r, ExitsWith(64));
  EXPECT_THAT(r.err, HasSubstr("--interval must be a positive duration"));
  r = Run({"stats", "--config", "/nonexistent/limits.toml"});
  EXPECT_THAT(r, ExitsWith(1));
  EXPECT_THAT(r.err, HasSubstr("/nonexistent/limits.toml"));

  ScratchSegment missing;
  for (const char* verb : {"stats", "top"}) {
    r = RunCli({verb, "--segment", missing.path()});
    EXPECT_THAT(r, ExitsWith(1));
    EXPECT_EQ(r.err, absl::StrCat("sluice ", verb, ": no segment at ", missing.path(),
                                  "; nothing has run yet?\n"));
  }
  r = RunCli({"metrics", "--segment", missing.path(), "--listen", "127.0.0.1:0"});
  EXPECT_THAT(r, ExitsWith(1));
  EXPECT_THAT(r.err, HasSubstr("nothing has run yet?"));
  EXPECT_NE(access(missing.path().c_str(), F_OK), 0);
}

TEST_F(StatsCliTest, WatchPrintsATablePerTickForIterations) {
  Populate(absl::Now());
  const absl::Time start = absl::Now();
  const Result r = Run({"stats", "--watch", "50ms", "--iterations", "3"});
  ASSERT_THAT(r, ExitsWith(0));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));  // two waits between three
  EXPECT_EQ(Count(r.out, "sluice stats  "), 3) << r.out;
  EXPECT_EQ(Count(r.out, "\n\nsluice stats  "), 2) << r.out;  // a blank line between
  const Result json = Run({"stats", "--json", "--watch", "10ms", "--iterations", "2"});
  ASSERT_THAT(json, ExitsWith(0));
  EXPECT_EQ(Count(json.out, "\"segment\":"), 2);
}

TEST_F(StatsCliTest, WatchStopsOnSigintAndSigtermWithExit0) {
  for (int sig : {SIGINT, SIGTERM}) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = SpawnCli(Args({"stats", "--watch", "1h"}), -1, fds[1], -1);
    close(fds[1]);
    ASSERT_GT(pid, 0);
    std::string got;
    EXPECT_TRUE(ReadUntil(fds[0], "processes  ", &got)) << got;
    kill(pid, sig);
    EXPECT_EQ(WaitCli(pid, absl::Seconds(10)), 0) << "signal " << sig;
    close(fds[0]);
  }
}

TEST_F(StatsCliTest, TopOnAPipePrintsPlainFrames) {
  Populate(absl::Now());
  const Result r = Run({"top", "--interval", "20ms", "--iterations", "3"});
  ASSERT_THAT(r, ExitsWith(0));
  EXPECT_EQ(Count(r.out, "sluice top: every 20ms, Ctrl-C quits\nsluice stats  "), 3) << r.out;
  EXPECT_THAT(r.out, Not(HasSubstr("\x1b")));
}

TEST_F(StatsCliTest, TopOnATerminalRedrawsInPlaceAndQuitsOnQ) {
  Populate(absl::Now());
  const int master = posix_openpt(O_RDWR | O_NOCTTY);
  ASSERT_GE(master, 0);
  ASSERT_EQ(grantpt(master), 0);
  ASSERT_EQ(unlockpt(master), 0);
  const int tty = open(ptsname(master), O_RDWR | O_NOCTTY);
  ASSERT_GE(tty, 0);
  winsize ws{};
  ws.ws_row = 12;
  ws.ws_col = 60;
  ASSERT_EQ(ioctl(master, TIOCSWINSZ, &ws), 0);
  termios before;
  ASSERT_EQ(tcgetattr(tty, &before), 0);

  const pid_t pid = SpawnCli(Args({"top", "--interval", "20ms"}), tty, tty, tty);
  ASSERT_GT(pid, 0);
  std::string got;
  // The alternate screen, then frames drawn from the top left, twice.
  ASSERT_TRUE(ReadUntil(master, "\x1b[?1049h", &got)) << got;
  const std::string frame_start = "\x1b[Hsluice top: every 20ms, q or Ctrl-C quits\x1b[K";
  ASSERT_TRUE(ReadUntil(master, frame_start, &got)) << got;
  got.erase(0, got.find(frame_start) + frame_start.size());
  ASSERT_TRUE(ReadUntil(master, frame_start, &got)) << got;
  // The whole second frame, without its leading cursor-home.
  const std::string frame =
      absl::StrCat(frame_start.substr(3), got.substr(0, got.find(frame_start)));
  // Lines are cut at the window's width, cleared to their end, and at most
  // the window's height are drawn; the rest of the screen is cleared.
  const std::vector<std::string> lines = absl::StrSplit(frame, '\n');
  EXPECT_EQ(lines.size(), 12u);
  for (const std::string& line : lines) {
    std::string text = line;
    absl::StrReplaceAll({{"\x1b[K", ""}, {"\x1b[J", ""}, {"\r", ""}}, &text);
    EXPECT_LE(text.size(), 60u) << line;
    EXPECT_TRUE(absl::StrContains(line, "\x1b[K")) << line;
  }
  EXPECT_TRUE(absl::StrContains(frame, "\x1b[J"));
  ASSERT_EQ(write(master, "q", 1), 1);
  EXPECT_EQ(WaitCli(pid, absl::Seconds(10)), 0);
  ReadUntil(master, "\x1b[?1049l", &got, absl::Seconds(2));
  EXPECT_TRUE(absl::StrContains(got, "\x1b[?25h\x1b[?1049l")) << "cursor and screen restored";
  termios after;
  ASSERT_EQ(tcgetattr(tty, &after), 0);
  EXPECT_EQ(after.c_lflag, before.c_lflag) << "terminal modes restored";
  close(tty);
  close(master);
}

TEST_F(StatsCliTest, MetricsServesTheExpositionUntilSigterm) {
  Populate(absl::Now());
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  FILE* err = std::tmpfile();
  const pid_t pid = SpawnCli(Args({"metrics", "--listen", "127.0.0.1:0", "--config", ConfigFile()}),
                             -1, fds[1], fileno(err));
  close(fds[1]);
  ASSERT_GT(pid, 0);
  std::string line;
  ASSERT_TRUE(ReadUntil(fds[0], "/metrics\n", &line)) << line << ReadAll(err);
  int port = 0;
  ASSERT_THAT(line, StartsWith("metrics listening on http://127.0.0.1:"));
  ASSERT_TRUE(absl::SimpleAtoi(
      absl::StripSuffix(absl::StripPrefix(line, "metrics listening on http://127.0.0.1:"),
                        "/metrics\n"),
      &port))
      << line;

  httplib::Client client("127.0.0.1", port);
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  auto e = ParseExposition(res->body);
  ASSERT_TRUE(e.ok()) << e.status();
  ExpectSluiceConventions(*e);
  const std::map<std::string, std::string> cap = {{"cap", "scope:global:concurrency"},
                                                  {"scope", "global"}};
  EXPECT_EQ(Get(*e, "sluice_concurrency_in_flight", cap), 1);

  // Each scrape is a fresh snapshot.
  auto bucket = segment_->FindBucket("scope:global:rpm");
  ASSERT_TRUE(bucket.ok());
  ASSERT_TRUE(bucket->TryAcquire(20, clock_.Now()).granted());
  res = client.Get("/metrics");
  ASSERT_TRUE(res);
  e = ParseExposition(res->body);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_THAT(Get(*e, "sluice_bucket_available_permits",
                  {{"bucket", "scope:global:rpm"},
                   {"owner", "global"},
                   {"owner_type", "scope"},
                   {"kind", "rpm"}}),
              AllOf(Ge(40), Le(40 + RefilledSincePopulate(800))));

  auto other = client.Get("/");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  // The segment gone: the scrape fails (Prometheus marks the target down).
  ASSERT_EQ(unlink(scratch_.path().c_str()), 0);
  res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_THAT(res->body, HasSubstr("nothing has run yet?"));

  kill(pid, SIGTERM);
  EXPECT_EQ(WaitCli(pid, absl::Seconds(10)), 0) << ReadAll(err);
  close(fds[0]);
  std::fclose(err);
}

TEST_F(StatsCliTest, MetricsRefusesABadListenAddressAsAUsageError) {
  for (const char* bad : {"127.0.0.1", "nowhere:80", "127.0.0.1:99999"}) {
    const Result r = Run({"metrics", "--listen", bad});
    EXPECT_THAT(r, ExitsWith(64)) << bad;
    EXPECT_THAT(r.err, AllOf(StartsWith("sluice metrics: --listen '"), HasSubstr(bad)));
  }
  const Result missing = Run({"metrics"});
  EXPECT_THAT(missing, ExitsWith(64));
  EXPECT_THAT(missing.err, HasSubstr("missing required flag --listen"));
}

}  // namespace
}  // namespace sluice
