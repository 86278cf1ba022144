// The soak: everything at once on one segment, with a killer. Three
// `sluice batch` processes send to one `sluice fake-provider` (its own,
// independent limiter enforces 20 requests a second, a bucket of one second);
// `sluice acquire` loops and `sluice stats --json` readers run from the
// shell; another shell loop keeps rewriting the limits file's rates (10 or
// 5 a second, always under the provider's); and the test sends SIGKILL to a
// random participant every second or so, then restarts it (a batch resumes).
//
// Afterwards it checks, and prints as figures: the provider answered no 429
// (sluice's limits are half the provider's, so every 429 would be an
// over-admission); every batch line has exactly one result; nothing was sent
// twice except requests in flight at a kill; no lease is held by a dead
// process; the budget's spend is within it; the segment validates; every run
// of every participant ended within its bound.
//
// Labelled "soak": bounded to about two minutes, run in CI's Release stage.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sluice/segment.h"
#include "sluice/segment_info.h"
#include "tests/tools/cli_runner.h"
#include "tests/tools/provider_process.h"

namespace sluice {
namespace {

using Json = nlohmann::json;

constexpr int kLinesPerBatch = 150;
constexpr int kMaxInFlight = 6;
constexpr int kCap = 12;
constexpr int64_t kBudgetMicroUsd = 100'000;
constexpr absl::Duration kSoakBound = absl::Seconds(150);

// The two limits files the rate changer alternates between: 10 or 5
// requests a second with small bursts, half the provider's 20 a second and
// bucket of 20 or less; a cap of 12 in flight; a budget the batches reach.
std::string LimitsToml(int rpm, int burst) {
  return absl::StrCat("headroom = 1.0\n[providers.anthropic]\nrequests_per_minute = ", rpm,
                      "\n[providers.anthropic.burst]\nrequests_per_minute = ", burst,
                      "\n[scopes.global]\nmax_concurrency = ", kCap,
                      "\nusd_per_day = ", static_cast<double>(kBudgetMicroUsd) / 1e6,
                      "\n[prices.\"claude-sonnet-4*\"]\ninput = 3.0\noutput = 15.0\n");
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// One participant: a program restarted after each kill, in a process group
// of its own so that a kill takes its children (a shell loop's sluice) too.
class Participant {
 public:
  Participant(std::string kind, std::vector<std::string> argv)
      : kind_(std::move(kind)), argv_(std::move(argv)) {}
  ~Participant() { Stop(); }

  const std::string& kind() const { return kind_; }
  bool running() const { return pid_ > 0; }
  int kills() const { return kills_; }
  int runs() const { return runs_; }

  void Start() {
    std::vector<char*> argv;
    for (std::string& a : argv_) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    if (posix_spawnp(&pid_, argv[0], &actions, &attr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    EXPECT_GT(pid_, 0) << "cannot start " << kind_;
    started_ = absl::Now();
    ++runs_;
  }

  // The exit status if it ended (-1 while it runs).
  int Poll() {
    if (pid_ <= 0) return -1;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return -1;
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  // Ran longer than `bound` in one run: hung.
  bool Overdue(absl::Duration bound) const { return pid_ > 0 && absl::Now() - started_ > bound; }

  void KillAndRestart() {
    Kill();
    ++kills_;
    Start();
  }

  void Stop() {
    if (pid_ > 0) Kill();
  }

 private:
  void Kill() {
    kill(-pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  std::string kind_;
  std::vector<std::string> argv_;
  pid_t pid_ = -1;
  absl::Time started_;
  int kills_ = 0;
  int runs_ = 0;
};

std::string AnthropicLine(const std::string& id, int i) {
  return Json{{"custom_id", id},
              {"params",
               {{"model", "claude-sonnet-4"},
                {"max_tokens", 16},
                {"messages", {{{"role", "user"}, {"content", absl::StrCat("Question ", i)}}}}}}}
      .dump();
}

// A shell loop that runs `command` over and over, each run bounded by
// timeout(1); a run that hits the bound is logged as a hang. timeout runs in
// the foreground: otherwise it moves itself and `command` into a process
// group of their own, and killing the loop's group would leave them running
// (a kill would not kill `command`, and after the test one could recreate
// the segment while the directory is removed).
std::vector<std::string> ShellLoop(const std::string& command, const std::string& hangs) {
  return {"/bin/sh", "-c",
          absl::StrCat("while :; do timeout --foreground 20 ", command,
                       " >/dev/null 2>&1; [ $? -eq 124 ] && echo \"", command, "\" >> ", hangs,
                       "; done")};
}

TEST(SoakTest, EverythingAtOnceWithAKiller) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "sluice-soak-", getpid());
  ASSERT_EQ(system(absl::StrCat("rm -rf ", dir, " && mkdir -p ", dir).c_str()), 0);
  const auto path = [&](const std::string& name) { return absl::StrCat(dir, "/", name); };
  const std::string sluice = SLUICE_CLI_PATH;
  const std::string segment = path("segment");
  const std::string hangs = path("hangs.log");
  WriteFile(path("limits-fast.toml"), LimitsToml(600, 5));
  WriteFile(path("limits-slow.toml"), LimitsToml(300, 3));
  WriteFile(path("limits.toml"), LimitsToml(600, 5));
  setenv("ANTHROPIC_API_KEY", "sk-soak", 1);

  CliProcess provider({"fake-provider", "--port=0", "--rpm=1200", "--itpm=100000000",
                       "--otpm=100000000", "--bucket-span=1s", "--latency=40ms",
                       "--latency-jitter=30ms"});
  const std::string url = ProviderUrl(provider);
  ASSERT_FALSE(url.empty());

  std::vector<std::unique_ptr<Participant>> batches;
  for (const char* name : {"a", "b", "c"}) {
    std::string input;
    for (int i = 0; i < kLinesPerBatch; ++i) {
      absl::StrAppend(&input, AnthropicLine(absl::StrCat(name, "-", i), i), "\n");
    }
    WriteFile(path(absl::StrCat(name, ".jsonl")), input);
    batches.push_back(std::make_unique<Participant>(
        absl::StrCat("batch ", name),
        std::vector<std::string>{sluice, "batch", path(absl::StrCat(name, ".jsonl")), "--out",
                                 path(absl::StrCat(name, ".out")), "--base-url", url, "--config",
                                 path("limits.toml"), "--segment", segment, "--timeout=60s",
                                 absl::StrCat("--max-in-flight=", kMaxInFlight)}));
  }
  std::vector<std::unique_ptr<Participant>> loops;
  for (int i = 0; i < 2; ++i) {
    loops.push_back(std::make_unique<Participant>(
        "acquire loop",
        ShellLoop(absl::StrCat(sluice,
                               " acquire soak:shell --rate 20/s --burst 5 --timeout 1s "
                               "--segment ",
                               segment),
                  hangs)));
  }
  loops.push_back(std::make_unique<Participant>(
      "stats reader", ShellLoop(absl::StrCat(sluice, " stats --json --segment ", segment), hangs)));
  loops.push_back(std::make_unique<Participant>(
      "rate changer",
      std::vector<std::string>{
          "/bin/sh", "-c",
          absl::StrCat("cd ", dir,
                       " && while :; do for f in slow fast; do sleep 2; cp limits-$f.toml "
                       "limits.tmp && mv limits.tmp limits.toml; done; done")}));

  const absl::Time start = absl::Now();
  for (auto& p : batches) p->Start();
  for (auto& p : loops) p->Start();
  std::mt19937 rng(20261130);
  std::vector<int> exit_status(batches.size(), -1);
  bool hung = false;
  int batches_left = static_cast<int>(batches.size());
  while (batches_left > 0 && absl::Now() - start < kSoakBound) {
    absl::SleepFor(absl::Milliseconds(std::uniform_int_distribution<int>(300, 1500)(rng)));
    for (size_t i = 0; i < batches.size(); ++i) {
      const int status = batches[i]->Poll();
      if (status >= 0) {
        exit_status[i] = status;
        --batches_left;
      }
      hung |= batches[i]->Overdue(absl::Seconds(90));
    }
    // A victim among what still runs: a batch half the time.
    std::vector<Participant*> alive;
    for (auto& p : batches) {
      if (p->running()) alive.push_back(p.get());
    }
    const size_t running_batches = alive.size();
    for (auto& p : loops) alive.push_back(p.get());
    if (running_batches > 0 && rng() % 2 == 0) {
      alive.resize(running_batches);
    }
    alive[rng() % alive.size()]->KillAndRestart();
  }
  const absl::Duration elapsed = absl::Now() - start;
  for (auto& p : loops) p->Stop();
  for (auto& p : batches) p->Stop();
  EXPECT_FALSE(hung) << "a batch run took over 90 s";
  EXPECT_EQ(batches_left, 0) << "the soak did not finish within " << kSoakBound;
  EXPECT_EQ(ReadFile(hangs), "") << "runs that hit their 20 s bound";

  // The provider's verdict, by its own limiter.
  const Json stats = ProviderStats(url);
  const int requests = stats["totals"]["requests"];
  const int rate_limited = stats["totals"]["rate_limited"];
  EXPECT_EQ(rate_limited, 0) << "sluice let through more than its limits allowed";

  // Every line has exactly one result; what was sent twice was in flight at
  // a kill.
  int batch_kills = 0, succeeded = 0, failed = 0, sent_twice = 0;
  for (size_t b = 0; b < batches.size(); ++b) {
    batch_kills += batches[b]->kills();
    EXPECT_TRUE(exit_status[b] == 0 || exit_status[b] == 1) << batches[b]->kind();
    std::map<int, int> results;
    std::istringstream lines(ReadFile(path(std::string(1, "abc"[b]) + ".out")));
    for (std::string line; std::getline(lines, line);) {
      const Json r = Json::parse(line);
      ++results[r["line"].get<int>()];
      if (r["status"] == "succeeded") {
        ++succeeded;
      } else {
        ++failed;
        // The only failures: the budget ran out, which refuses at once.
        EXPECT_EQ(r["error"]["class"], "throttle_refused") << line;
      }
    }
    EXPECT_EQ(results.size(), static_cast<size_t>(kLinesPerBatch)) << batches[b]->kind();
    for (const auto& [line, count] : results) EXPECT_EQ(count, 1) << "line " << line;
  }
  for (const auto& [id, count] : stats["custom_ids"].items()) sent_twice += count.get<int>() - 1;
  EXPECT_LE(sent_twice, batch_kills * kMaxInFlight);

  // The segment validates; no lease is held by a process that is gone; the
  // budget was not overspent.
  SegmentOptions options;
  options.create = false;
  options.register_process = false;
  auto opened = Segment::Open(segment, options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  auto info = (*opened)->Inspect();
  ASSERT_TRUE(info.ok()) << info.status();
  int64_t spent = -1;
  for (const auto& c : info->counters) {
    if (c.name == "scope:global:usd_day") spent = c.used;
  }
  for (const auto& l : info->leases) EXPECT_EQ(l.in_flight, 0u) << l.name;
  EXPECT_GE(spent, 0);
  EXPECT_LE(spent, kBudgetMicroUsd);

  int loop_kills = 0;
  for (auto& p : loops) loop_kills += p->kills();
  std::printf(
      "soak: %.0f s; kills survived: %d of batches, %d of shell loops; provider requests %d, "
      "429s %d (over-admissions); lines %d succeeded, %d refused by the budget; sent twice %d "
      "(at most %d in flight at the kills); budget spent %.6f of %.6f USD; dead leases 0\n",
      absl::ToDoubleSeconds(elapsed), batch_kills, loop_kills, requests, rate_limited, succeeded,
      failed, sent_twice, batch_kills * kMaxInFlight, static_cast<double>(spent) / 1e6,
      static_cast<double>(kBudgetMicroUsd) / 1e6);
  EXPECT_GT(batch_kills, 0);
  EXPECT_GT(succeeded, 0);
  EXPECT_EQ(system(absl::StrCat("rm -rf ", dir).c_str()), 0);
}

}  // namespace
}  // namespace sluice
