// Runs the built `sluice` binary (SLUICE_CLI_PATH) as a user would and checks
// its exit status, stdout and stderr. Each test works on its own segment in
// /dev/shm, removed at the end whatever the outcome.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sluice/rate.h"
#include "sluice/segment.h"
#include "sluice/tsc.h"
#include "tests/tools/cli_runner.h"
#include "tools/fake_provider/fake_provider.h"

namespace sluice {
namespace {

using ::testing::AllOf;
using ::testing::ContainsRegex;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Pair;
using ::testing::StartsWith;

constexpr int kExitError = 1;
constexpr int kExitUsage = 64;
constexpr int kExitTempFail = 75;

using Result = CliResult;

class SluiceCliTest : public ::testing::Test {
 protected:
  SluiceCliTest() {
    static std::atomic<int> counter{0};
    segment_ = absl::StrCat("sluice-cli-test-", getpid(), "-", counter++);
  }
  ~SluiceCliTest() override { unlink(ShmPath().c_str()); }

  std::string ShmPath() const { return absl::StrCat("/dev/shm/", segment_); }
  bool SegmentExists() const { return access(ShmPath().c_str(), F_OK) == 0; }

  // `sluice VERB --segment <this test's segment> args...`
  Result Run(const std::string& verb, std::vector<std::string> args = {}) {
    args.insert(args.begin(), {verb, "--segment", segment_});
    return RunCli(args);
  }
  Result Acquire(const std::string& key, const std::string& rate, int burst,
                 std::vector<std::string> more = {}) {
    std::vector<std::string> args = {key, "--rate", rate, "--burst", absl::StrCat(burst)};
    args.insert(args.end(), more.begin(), more.end());
    return Run("acquire", args);
  }

  std::string segment_;
};

MATCHER_P(ExitsWith, code, "") { return arg.status == code; }

TEST_F(SluiceCliTest, AcquireSucceedsUntilTheBurstIsSpent) {
  EXPECT_THAT(Acquire("k", "1/h", 2), ExitsWith(0));
  EXPECT_THAT(Acquire("k", "1/h", 2, {"--timeout", "0"}), ExitsWith(0));
  EXPECT_TRUE(SegmentExists());
  const Result refused = Acquire("k", "1/h", 2, {"--timeout", "0"});
  EXPECT_THAT(refused, ExitsWith(kExitTempFail));
  EXPECT_THAT(refused.err, AllOf(StartsWith("sluice acquire: "), HasSubstr("'k'"),
                                 HasSubstr("would be available in")));
  EXPECT_THAT(refused.out, IsEmpty());
}

TEST_F(SluiceCliTest, AcquireWaitsWithinTheTimeout) {
  // A permit every 500 ms: the second acquire finds none left, and waits for
  // it only when allowed to.
  EXPECT_THAT(Acquire("k", "2/s", 1), ExitsWith(0));
  EXPECT_THAT(Acquire("k", "2/s", 1, {"--timeout", "0"}), ExitsWith(kExitTempFail));
  EXPECT_THAT(Acquire("k", "2/s", 1, {"--timeout", "2s"}), ExitsWith(0));
}

TEST_F(SluiceCliTest, AcquireWithTimeoutAtTwentyPerSecond) {
  EXPECT_THAT(Acquire("k", "20/s", 1), ExitsWith(0));
  EXPECT_THAT(Acquire("k", "20/s", 1, {"--timeout=1s"}), ExitsWith(0));
}

TEST_F(SluiceCliTest, MoreTokensThanTheBurstCanNeverFit) {
  const Result r = Acquire("k", "10/s", 2, {"--tokens", "3"});
  EXPECT_THAT(r, ExitsWith(kExitError));
  EXPECT_THAT(r.err, AllOf(StartsWith("sluice acquire: "), HasSubstr("can never fit")));
}

TEST_F(SluiceCliTest, ReopeningAKeyWithAnotherRateNamesTheMismatch) {
  ASSERT_THAT(Acquire("k", "5/s", 2), ExitsWith(0));
  const Result r = Acquire("k", "7/s", 2);
  EXPECT_THAT(r, ExitsWith(kExitError));
  EXPECT_THAT(r.err, AllOf(StartsWith("sluice acquire: "), HasSubstr("5/s"), HasSubstr("7/s")));
}

TEST_F(SluiceCliTest, ReconfigureChangesAnExistingBucket) {
  ASSERT_THAT(Acquire("k", "1/h", 2), ExitsWith(0));
  EXPECT_THAT(Acquire("k", "1/h", 4, {"--reconfigure"}), ExitsWith(0));
  const Result inspect = Run("inspect", {"--json"});
  ASSERT_THAT(inspect, ExitsWith(0));
  const nlohmann::json doc = nlohmann::json::parse(inspect.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << inspect.out;
  EXPECT_EQ(doc["buckets"][0].value("capacity", 0), 4);
  // Half full before (1 of 2), half full after (2 of 4), less the one taken.
  EXPECT_EQ(doc["buckets"][0].value("available", -1), 1);
}

TEST_F(SluiceCliTest, MissingRequiredFlagIsAUsageError) {
  const Result no_rate = Run("acquire", {"k", "--burst", "1"});
  EXPECT_THAT(no_rate, ExitsWith(kExitUsage));
  EXPECT_THAT(no_rate.err, AllOf(StartsWith("sluice acquire: "), HasSubstr("--rate")));
  const Result no_burst = Run("acquire", {"k", "--rate", "1/s"});
  EXPECT_THAT(no_burst, ExitsWith(kExitUsage));
  EXPECT_THAT(no_burst.err, HasSubstr("--burst"));
  EXPECT_FALSE(SegmentExists());
}

TEST_F(SluiceCliTest, UnparsableRateIsAUsageErrorNamingTheText) {
  const Result r = Acquire("k", "5/fortnight", 1);
  EXPECT_THAT(r, ExitsWith(kExitUsage));
  EXPECT_THAT(r.err, AllOf(StartsWith("sluice acquire: "), HasSubstr("5/fortnight")));
  EXPECT_FALSE(SegmentExists());
}

TEST_F(SluiceCliTest, UnknownVerbAndNoVerbAreUsageErrors) {
  const Result unknown = RunCli({"frobnicate"});
  EXPECT_THAT(unknown, ExitsWith(kExitUsage));
  EXPECT_THAT(unknown.err, HasSubstr("frobnicate"));
  const Result none = RunCli({});
  EXPECT_THAT(none, ExitsWith(kExitUsage));
  EXPECT_THAT(none.err, HasSubstr("acquire"));
}

TEST_F(SluiceCliTest, WrongArgumentsAndForeignFlagsAreUsageErrors) {
  const Result no_key = Run("acquire", {"--rate", "1/s", "--burst", "1"});
  EXPECT_THAT(no_key, ExitsWith(kExitUsage));
  EXPECT_THAT(no_key.err, HasSubstr("KEY"));
  const Result two_keys = Acquire("a", "1/s", 1, {"b"});
  EXPECT_THAT(two_keys, ExitsWith(kExitUsage));
  EXPECT_THAT(two_keys.err, HasSubstr("'b'"));
  const Result extra = Run("inspect", {"stray"});
  EXPECT_THAT(extra, ExitsWith(kExitUsage));
  EXPECT_THAT(extra.err, HasSubstr("'stray'"));

  // --json is inspect's; absl alone would accept it anywhere.
  const Result foreign = Acquire("k", "1/s", 1, {"--json"});
  EXPECT_THAT(foreign, ExitsWith(kExitUsage));
  EXPECT_THAT(foreign.err, AllOf(StartsWith("sluice acquire: "), HasSubstr("--json")));
  const Result unknown = Run("rm", {"--bogus=1"});
  EXPECT_THAT(unknown, ExitsWith(kExitUsage));
  EXPECT_THAT(unknown.err, HasSubstr("--bogus"));
  const Result builtin = Run("inspect", {"--flagfile=/nonexistent"});
  EXPECT_THAT(builtin, ExitsWith(kExitUsage));

  // Values absl cannot parse are usage errors too, named by absl.
  const Result bad_burst = Run("acquire", {"k", "--rate", "1/s", "--burst", "many"});
  EXPECT_THAT(bad_burst, ExitsWith(kExitUsage));
  EXPECT_THAT(bad_burst.err, AllOf(HasSubstr("many"), HasSubstr("sluice acquire: ")));
  const Result bad_timeout = Acquire("k", "1/s", 1, {"--timeout", "soon"});
  EXPECT_THAT(bad_timeout, ExitsWith(kExitUsage));
  EXPECT_THAT(bad_timeout.err, HasSubstr("soon"));
  EXPECT_THAT(Acquire("k", "1/s", 1, {"--tokens", "0"}), ExitsWith(kExitUsage));
  EXPECT_THAT(Acquire("k", "1/s", 1, {"--timeout", "-1s"}), ExitsWith(kExitUsage));
  EXPECT_THAT(Acquire("k", "1/s", 0), ExitsWith(kExitUsage));
  EXPECT_FALSE(SegmentExists());
}

TEST_F(SluiceCliTest, VerbHelpListsItsOwnFlagsOnly) {
  const Result r = RunCli({"acquire", "--help"});
  EXPECT_THAT(r, ExitsWith(0));
  EXPECT_THAT(r.out, AllOf(StartsWith("usage: sluice acquire KEY"), HasSubstr("--rate"),
                           HasSubstr("--burst"), HasSubstr("--tokens"), HasSubstr("--timeout"),
                           HasSubstr("--segment"), HasSubstr("default: sluice")));
  EXPECT_THAT(r.out, Not(HasSubstr("--json")));
  EXPECT_THAT(r.out, Not(HasSubstr("--force")));

  const Result inspect = RunCli({"inspect", "-h"});
  EXPECT_THAT(inspect, ExitsWith(0));
  EXPECT_THAT(inspect.out, AllOf(HasSubstr("--json"), Not(HasSubstr("--rate"))));
}

TEST_F(SluiceCliTest, HelpListsTheVerbs) {
  for (const char* help : {"help", "--help"}) {
    const Result r = RunCli({help});
    EXPECT_THAT(r, ExitsWith(0));
    EXPECT_THAT(r.out, AllOf(HasSubstr("acquire"), HasSubstr("inspect"), HasSubstr("rm")));
  }
  EXPECT_THAT(RunCli({"help", "rm"}).out, HasSubstr("--force"));
}

// Flags are spelled with dashes, as in git, curl and kubectl, or with
// Abseil's underscores; only names are rewritten, never values or what
// follows "--".
TEST_F(SluiceCliTest, FlagsTakeDashesAndUnderscores) {
  ASSERT_THAT(Acquire("a_key-1", "1/h", 5, {"--tokens=2", "--no-reconfigure"}), ExitsWith(0));
  ASSERT_THAT(Acquire("a_key-1", "1/h", 5, {"--noreconfigure"}), ExitsWith(0));
  // --reconfigure=false would refuse the new burst; the dashed spelling sets it.
  ASSERT_THAT(Acquire("a_key-1", "1/h", 6, {"--reconfigure"}), ExitsWith(0));
  // A key after "--" that looks like a flag is a key, spelled as given.
  ASSERT_THAT(Run("acquire", {"--rate", "1/h", "--burst", "1", "--", "--odd_key-x"}), ExitsWith(0));
  const Result r = Run("inspect", {"--json"});
  ASSERT_THAT(r, ExitsWith(0));
  const nlohmann::json doc = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << r.out;
  std::map<std::string, int> capacities;
  for (const nlohmann::json& b : doc["buckets"]) capacities[b.value("name", "")] = b["capacity"];
  EXPECT_THAT(capacities, ElementsAre(Pair("--odd_key-x", 1), Pair("a_key-1", 6))) << r.out;
  EXPECT_THAT(Run("inspect", {"--no-json"}).out, HasSubstr("a_key-1"));
  // A negated flag must be a boolean's, in either spelling.
  const Result negated = Acquire("k", "1/s", 1, {"--no-tokens"});
  EXPECT_THAT(negated, ExitsWith(kExitUsage));
  EXPECT_THAT(negated.err, HasSubstr("'--no-tokens'"));
}

TEST_F(SluiceCliTest, ErrorsNameFlagsWithDashes) {
  const Result foreign = Acquire("k", "1/s", 1, {"--max-tokens", "5"});
  EXPECT_THAT(foreign, ExitsWith(kExitUsage));
  EXPECT_THAT(foreign.err, AllOf(StartsWith("sluice acquire: flag '--max-tokens'"),
                                 HasSubstr("--rate, --burst"), Not(ContainsRegex("--[a-z]+_"))));
  const Result underscored = Run("call", {"--max_tokens", "0", "hi"});
  EXPECT_THAT(underscored, ExitsWith(kExitUsage));
  EXPECT_THAT(underscored.err, AllOf(HasSubstr("--max-tokens"), Not(HasSubstr("max_tokens"))));
  const Result missing = RunCli({"fake-provider"});
  EXPECT_THAT(missing, ExitsWith(kExitUsage));
  EXPECT_THAT(missing.err, HasSubstr("missing required flag --port"));
  // A verb's own checks of a flag's value name it with dashes too.
  const Result none_in_flight = Run("batch", {"/nonexistent/in.jsonl", "--out",
                                              "/nonexistent/out.jsonl", "--max_in_flight", "0"});
  EXPECT_THAT(none_in_flight, ExitsWith(kExitUsage));
  EXPECT_THAT(none_in_flight.err,
              AllOf(HasSubstr("--max-in-flight"), Not(HasSubstr("max_in_flight"))));
  const Result stopped_time = RunCli({"demo", "--time_scale", "0"});
  EXPECT_THAT(stopped_time, ExitsWith(kExitUsage));
  EXPECT_THAT(stopped_time.err, AllOf(HasSubstr("--time-scale"), Not(HasSubstr("time_scale"))));
}

// Every verb's help shows its flags with dashes: the usage line, the
// description, the flag list and each flag's text.
TEST_F(SluiceCliTest, HelpShowsFlagsWithDashes) {
  const Result verbs = RunCli({"help"});
  ASSERT_THAT(verbs, ExitsWith(0));
  const std::string list = verbs.out.substr(verbs.out.find("verbs:\n") + 7);
  std::vector<std::string> names;
  for (absl::string_view line : absl::StrSplit(list, '\n')) {
    if (!absl::StartsWith(line, "  ")) break;
    names.emplace_back(absl::StripAsciiWhitespace(line).substr(0, line.find(' ', 2) - 2));
  }
  EXPECT_GE(names.size(), 10u) << verbs.out;
  for (const std::string& verb : names) {
    const Result help = RunCli({verb, "--help"});
    EXPECT_THAT(help, ExitsWith(0)) << verb;
    EXPECT_THAT(help.out,
                AllOf(StartsWith("usage: sluice " + verb), Not(ContainsRegex("--[a-z0-9-]+_"))))
        << verb;
  }
  EXPECT_THAT(RunCli({"call", "--help"}).out,
              AllOf(HasSubstr("[--base-url URL]"), HasSubstr("\n  --base-url "),
                    HasSubstr("\n  --max-tokens "), HasSubstr("(default: 1024)")));
  EXPECT_THAT(RunCli({"help", "batch"}).out, HasSubstr("\n  --max-in-flight "));
  EXPECT_THAT(RunCli({"help", "fake-provider"}).out,
              AllOf(HasSubstr("[--bucket-span DURATION]"), HasSubstr("\n  --overloaded-rate ")));
}

TEST_F(SluiceCliTest, InspectShowsBucketsAsText) {
  ASSERT_THAT(Acquire("anthropic:rpm", "1/h", 5, {"--tokens", "3"}), ExitsWith(0));
  const Result r = Run("inspect");
  EXPECT_THAT(r, ExitsWith(0));
  EXPECT_THAT(r.out, AllOf(HasSubstr(ShmPath()), HasSubstr("anthropic:rpm"), HasSubstr("1/h"),
                           HasSubstr("medium")));
  EXPECT_THAT(r.err, IsEmpty());
}

TEST_F(SluiceCliTest, InspectJsonHasEveryField) {
  // At 1/h nothing refills during the test: 5 - 3 leaves exactly 2 (40%).
  ASSERT_THAT(Acquire("k", "1/h", 5, {"--tokens", "2"}), ExitsWith(0));
  ASSERT_THAT(Acquire("k", "1/h", 5), ExitsWith(0));
  const absl::Time before = absl::Now();
  const Result r = Run("inspect", {"--json"});
  ASSERT_THAT(r, ExitsWith(0));
  const nlohmann::json doc = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded()) << r.out;

  EXPECT_EQ(doc.value("path", ""), ShmPath());
  EXPECT_EQ(doc["abi"].value("major", -1), static_cast<int>(kSegmentAbiMajor));
  EXPECT_EQ(doc["abi"].value("minor", -1), static_cast<int>(kSegmentAbiMinor));
  EXPECT_GT(doc.value("size_bytes", uint64_t{0}), 0u);
  EXPECT_EQ(doc["slots"].value("total", 0), 1024);  // SegmentOptions' default
  EXPECT_EQ(doc["slots"].value("used", 0), 1);
  EXPECT_EQ(doc["slots"].value("free", 0), 1023);
  // The host's best clock, and why it is not the TSC when it is not.
  const bool tsc = TscUsable().ok();
  EXPECT_EQ(doc["clock"].value("name", ""), tsc ? "tsc" : "monotonic");
  EXPECT_EQ(doc["clock"].value("reason", "?"), std::string(TscUsable().message()));
  EXPECT_EQ(doc["clock"].value("tsc_generation", uint64_t{0}) > 0, tsc);

  absl::Time created;
  std::string error;
  ASSERT_TRUE(absl::ParseTime(absl::RFC3339_full, doc.value("created", ""), &created, &error))
      << error;
  EXPECT_LE(created, before);
  EXPECT_GT(created, before - absl::Minutes(5));

  ASSERT_EQ(doc["buckets"].size(), 1u) << r.out;
  const nlohmann::json& b = doc["buckets"][0];
  EXPECT_EQ(b.value("name", ""), "k");
  EXPECT_TRUE(b["slot"].is_number_unsigned());
  EXPECT_EQ(b.value("rate", ""), Rate::PerHour(1).ToString());
  EXPECT_EQ(b.value("permits", 0), 1);
  EXPECT_EQ(b.value("period_ns", int64_t{0}), absl::ToInt64Nanoseconds(absl::Hours(1)));
  EXPECT_EQ(b.value("capacity", 0), 5);
  EXPECT_EQ(b.value("available", -1), 2);
  EXPECT_EQ(b.value("pressure", ""), "medium");
  EXPECT_DOUBLE_EQ(b.value("percent_available", 0.0), 40.0);

  // The acquiring processes have exited and detached.
  ASSERT_TRUE(doc["processes"].is_array());
  for (const nlohmann::json& p : doc["processes"]) EXPECT_FALSE(p.value("alive", true)) << p;
}

TEST_F(SluiceCliTest, InspectOfAMissingSegmentFails) {
  const Result r = Run("inspect");
  EXPECT_THAT(r, ExitsWith(kExitError));
  EXPECT_THAT(r.err, AllOf(StartsWith("sluice inspect: "), HasSubstr(segment_)));
  EXPECT_FALSE(SegmentExists());  // looking never creates
}

TEST_F(SluiceCliTest, RmRemovesTheSegment) {
  ASSERT_THAT(Acquire("k", "1/s", 1), ExitsWith(0));
  ASSERT_TRUE(SegmentExists());
  EXPECT_THAT(Run("rm"), ExitsWith(0));
  EXPECT_FALSE(SegmentExists());
  const Result again = Run("rm");
  EXPECT_THAT(again, ExitsWith(kExitError));
  EXPECT_THAT(again.err, AllOf(StartsWith("sluice rm: "), HasSubstr(segment_)));
}

TEST_F(SluiceCliTest, RmOfACorruptSegmentNeedsForce) {
  ASSERT_THAT(Acquire("k", "1/s", 1), ExitsWith(0));
  {
    FILE* f = std::fopen(ShmPath().c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fputs("garbage!", f);  // over the magic number
    std::fclose(f);
  }
  const Result refused = Run("rm");
  EXPECT_THAT(refused, ExitsWith(kExitError));
  EXPECT_THAT(refused.err, AllOf(HasSubstr("not a sluice segment"), HasSubstr("--force")));
  EXPECT_TRUE(SegmentExists());
  EXPECT_THAT(Run("rm", {"--force"}), ExitsWith(0));
  EXPECT_FALSE(SegmentExists());
}

TEST_F(SluiceCliTest, RmRefusesWhileAProcessIsAttachedUnlessForced) {
  // This test process attaches, as a worker would.
  auto segment = Segment::Open(segment_);
  ASSERT_TRUE(segment.ok()) << segment.status();

  const Result inspect = Run("inspect", {"--json"});
  ASSERT_THAT(inspect, ExitsWith(0));
  const nlohmann::json doc = nlohmann::json::parse(inspect.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << inspect.out;
  ASSERT_EQ(doc["processes"].size(), 1u) << inspect.out;
  EXPECT_EQ(doc["processes"][0].value("pid", 0), getpid());
  EXPECT_TRUE(doc["processes"][0].value("alive", false));
  EXPECT_TRUE(doc["processes"][0]["attached"].is_string());
  EXPECT_TRUE(doc["processes"][0]["start_time"].is_number());

  const Result refused = Run("rm");
  EXPECT_THAT(refused, ExitsWith(kExitError));
  EXPECT_THAT(refused.err,
              AllOf(StartsWith("sluice rm: "), HasSubstr("1 live process"), HasSubstr("--force")));
  EXPECT_TRUE(SegmentExists());

  EXPECT_THAT(Run("rm", {"--force"}), ExitsWith(0));
  EXPECT_FALSE(SegmentExists());
}

// sluice config check ---------------------------------------------------------

constexpr char kSeedLimits[] = SLUICE_SOURCE_DIR "/examples/seed-limits.toml";

// A limits file with `text`, removed at the end of the test.
class LimitsFile {
 public:
  explicit LimitsFile(const std::string& text) {
    char path[] = "/tmp/sluice-cli-test-XXXXXX.toml";
    const int fd = mkstemps(path, 5);
    if (fd < 0 || write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
      ADD_FAILURE() << "writing " << path << ": " << std::strerror(errno);
    }
    if (fd >= 0) close(fd);
    path_ = path;
  }
  ~LimitsFile() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST_F(SluiceCliTest, ConfigCheckShowsTheEffectiveLimits) {
  const Result r = RunCli({"config", "check", kSeedLimits});
  ASSERT_THAT(r, ExitsWith(0));
  // Provider limits after the headroom of 0.8; scope limits as written.
  EXPECT_THAT(r.out, ContainsRegex("provider:anthropic:default:rpm +800/min +80 "));
  EXPECT_THAT(r.out, ContainsRegex("provider:anthropic:default:tpd +2000000/day +83333 "));
  EXPECT_THAT(r.out, ContainsRegex("provider:openai:default:tpm +160000/min +16000 "));
  EXPECT_THAT(r.out, ContainsRegex("scope:workflow:nightly-batch:rpm +50/min +5"));
  EXPECT_THAT(r.out, HasSubstr("workflow:nightly-batch -> team:engineering -> global"));
  EXPECT_THAT(r.err, IsEmpty());
  EXPECT_FALSE(SegmentExists());
}

TEST_F(SluiceCliTest, ConfigCheckJson) {
  const Result r = RunCli({"config", "check", kSeedLimits, "--json"});
  ASSERT_THAT(r, ExitsWith(0));
  const nlohmann::json doc = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded()) << r.out;
  EXPECT_EQ(doc.value("headroom", 0.0), 0.8);
  ASSERT_EQ(doc["providers"].size(), 2u) << r.out;
  const nlohmann::json& anthropic = doc["providers"][0];
  EXPECT_EQ(anthropic.value("name", ""), "anthropic");
  const nlohmann::json& rpm = anthropic["classes"][0]["buckets"][0];
  EXPECT_EQ(anthropic["classes"][0].value("name", ""), "default");
  EXPECT_EQ(rpm.value("key", ""), "provider:anthropic:default:rpm");
  EXPECT_EQ(rpm.value("kind", ""), "requests_per_minute");
  EXPECT_EQ(rpm.value("limit", 0), 800);
  EXPECT_EQ(rpm.value("rate", ""), "800/min");
  EXPECT_EQ(rpm.value("burst", 0), 80);

  ASSERT_EQ(doc["scopes"].size(), 4u) << r.out;
  const nlohmann::json& nightly = doc["scopes"][3];
  EXPECT_EQ(nightly.value("name", ""), "workflow:nightly-batch");
  EXPECT_EQ(nightly.value("parent", ""), "team:engineering");
  EXPECT_EQ(nightly["path"],
            nlohmann::json({"workflow:nightly-batch", "team:engineering", "global"}));
  EXPECT_EQ(nightly["buckets"][0].value("burst", 0), 5);
  EXPECT_TRUE(nightly["budgets"].empty());
  EXPECT_TRUE(nightly["concurrency"].is_null());
  EXPECT_TRUE(doc["scopes"][0]["parent"].is_null());  // global
}

TEST_F(SluiceCliTest, ConfigCheckShowsTheClusterButNeverItsPassword) {
  constexpr char kVariable[] = "SLUICE_CLI_TEST_REDIS_PASSWORD";
  constexpr char kSecret[] = "n0t-f0r-output";
  ASSERT_EQ(setenv(kVariable, kSecret, 1), 0);  // the child inherits it
  const LimitsFile file(absl::StrCat("[cluster]\nredis = \"redis://10.0.0.7:6380/2\"\n",
                                     "password_env = \"", kVariable, "\"\nmode = \"exact\"\n"));
  const Result text = RunCli({"config", "check", file.path()});
  ASSERT_THAT(text, ExitsWith(0));
  EXPECT_THAT(text.out, ContainsRegex("\nredis +redis://10.0.0.7:6380/2\n"));
  EXPECT_THAT(text.out,
              ContainsRegex(absl::StrCat("\npassword_env +\\$", kVariable, " \\(not shown\\)\n")));
  EXPECT_THAT(text.out, ContainsRegex("\nmode +exact\n"));
  EXPECT_THAT(text.out, ContainsRegex("\non_redis_down +local_share\n"));
  EXPECT_THAT(text.out, ContainsRegex("\ntimeout +50ms\n"));
  EXPECT_THAT(text.out, Not(HasSubstr(kSecret)));

  const Result json = RunCli({"config", "check", file.path(), "--json"});
  ASSERT_THAT(json, ExitsWith(0));
  EXPECT_THAT(json.out, Not(HasSubstr(kSecret)));
  const nlohmann::json doc = nlohmann::json::parse(json.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded()) << json.out;
  const nlohmann::json& cluster = doc["cluster"];
  EXPECT_EQ(cluster.value("redis", ""), "redis://10.0.0.7:6380/2");
  EXPECT_EQ(cluster.value("host", ""), "10.0.0.7");
  EXPECT_EQ(cluster.value("port", 0), 6380);
  EXPECT_EQ(cluster.value("db", 0), 2);
  EXPECT_EQ(cluster.value("password_env", ""), kVariable);
  EXPECT_EQ(cluster.value("key_prefix", ""), "sluice:");
  EXPECT_EQ(cluster.value("mode", ""), "exact");
  EXPECT_EQ(cluster.value("on_redis_down", ""), "local_share");
  EXPECT_EQ(cluster.value("timeout", ""), "50ms");
  EXPECT_EQ(cluster.value("expected_hosts", 0), 1);
  EXPECT_EQ(cluster.value("concurrency_lease_ttl", ""), "10s");
  unsetenv(kVariable);

  EXPECT_THAT(RunCli({"config", "check", kSeedLimits}).out, HasSubstr("\ncluster: none"));
  EXPECT_TRUE(RunCli({"config", "check", kSeedLimits, "--json"}).out.find("\"cluster\": null") !=
              std::string::npos);
}

TEST_F(SluiceCliTest, ConfigCheckOfAnInvalidFileNamesTheLine) {
  const LimitsFile file("headroom = 0.8\n[providers.anthropic]\ntokens_per_minut = 100000\n");
  const Result r = RunCli({"config", "check", file.path()});
  EXPECT_THAT(r, ExitsWith(kExitError));
  EXPECT_EQ(r.err, absl::StrCat("sluice config: ", file.path(),
                                ":3:1: providers.anthropic.tokens_per_minut: unknown key; did you "
                                "mean tokens_per_minute?\n"));
  EXPECT_THAT(r.out, IsEmpty());

  const LimitsFile syntax("headroom = = 0.8\n");
  const Result bad = RunCli({"config", "check", syntax.path(), "--json"});
  EXPECT_THAT(bad, ExitsWith(kExitError));
  EXPECT_THAT(bad.err, StartsWith(absl::StrCat("sluice config: ", syntax.path(), ":1:12: ")));
  EXPECT_THAT(bad.out, IsEmpty());
}

TEST_F(SluiceCliTest, ConfigNeedsCheckAndAFile) {
  const Result missing = RunCli({"config", "check", "/nonexistent/limits.toml"});
  EXPECT_THAT(missing, ExitsWith(kExitError));
  EXPECT_THAT(missing.err, AllOf(StartsWith("sluice config: "), HasSubstr("/nonexistent")));
  const Result other = RunCli({"config", "lint", kSeedLimits});
  EXPECT_THAT(other, ExitsWith(kExitUsage));
  EXPECT_THAT(other.err, HasSubstr("'lint'"));
  EXPECT_THAT(RunCli({"config", "check"}), ExitsWith(kExitUsage));
  EXPECT_THAT(RunCli({"config", "check", kSeedLimits, "--segment", "x"}), ExitsWith(kExitUsage));
}

// sluice call, against the simulated provider started in this process.
class SluiceCallTest : public SluiceCliTest {
 protected:
  static constexpr char kKey[] = "sk-cli-test-SECRET-777";
  void SetUp() override { setenv("ANTHROPIC_API_KEY", kKey, 1); }
  void TearDown() override { unsetenv("ANTHROPIC_API_KEY"); }

  std::unique_ptr<FakeProvider> Provider(FakeProviderOptions options = {}) {
    auto p = FakeProvider::Start(std::move(options));
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *std::move(p) : nullptr;
  }
  Result Call(const FakeProvider& provider, std::vector<std::string> more) {
    more.insert(more.begin(), {"--base_url", provider.base_url(), "--max_tokens", "8"});
    return Run("call", more);
  }
};

TEST_F(SluiceCallTest, PrintsTheReplyAndWithJsonTheWholeResult) {
  auto provider = Provider();
  ASSERT_NE(provider, nullptr);
  const Result text = Call(*provider, {"Hello"});
  ASSERT_THAT(text, ExitsWith(0));
  EXPECT_THAT(text.out, HasSubstr("tok"));
  const Result json = Call(
      *provider, {"--json", "--config", kSeedLimits, "--scope", "workflow:nightly-batch", "Hello"});
  ASSERT_THAT(json, ExitsWith(0));
  const nlohmann::json doc = nlohmann::json::parse(json.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << json.out;
  EXPECT_TRUE(doc.value("ok", false));
  EXPECT_EQ(doc.value("attempts", 0), 1);
  EXPECT_GT(doc["usage"].value("input_tokens", 0), 0);
  EXPECT_TRUE(doc["throttle_wait_ms"].is_number());
  EXPECT_THAT(doc.value("request_id", ""), StartsWith("req_"));
  EXPECT_THAT(text.out + text.err + json.out + json.err, Not(HasSubstr(kKey)));
}

// Tried as a new user would: `sluice call --base-url URL --max-tokens N`.
TEST_F(SluiceCallTest, TakesDashedFlags) {
  auto provider = Provider();
  ASSERT_NE(provider, nullptr);
  const Result dashed =
      Run("call", {"--base-url", provider->base_url(), "--max-tokens", "3", "--json", "Hello"});
  ASSERT_THAT(dashed, ExitsWith(0)) << dashed.err;
  const nlohmann::json doc = nlohmann::json::parse(dashed.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << dashed.out;
  EXPECT_TRUE(doc.value("ok", false));
  EXPECT_LE(doc["usage"].value("output_tokens", 99), 3);
  const Result with_equals =
      Run("call", {"--base-url=" + provider->base_url(), "--max-tokens=2", "Hello"});
  ASSERT_THAT(with_equals, ExitsWith(0)) << with_equals.err;
  EXPECT_THAT(with_equals.out, HasSubstr("tok"));
  EXPECT_EQ(provider->stats().totals.admitted, 2u);
}

TEST_F(SluiceCallTest, AThrottleTimeoutExits75AndNamesTheBucket) {
  auto provider = Provider();
  ASSERT_NE(provider, nullptr);
  const std::string limits = absl::StrCat("/tmp/sluice-call-", getpid(), ".toml");
  {
    FILE* f = std::fopen(limits.c_str(), "w");
    std::fputs("[scopes.global]\nrequests_per_minute = 1\n", f);
    std::fclose(f);
  }
  ASSERT_THAT(Call(*provider, {"--config", limits, "Hi"}), ExitsWith(0));
  const Result later = Call(*provider, {"--config", limits, "--timeout", "10ms", "Hi"});
  EXPECT_THAT(later, ExitsWith(kExitTempFail));
  EXPECT_THAT(later.err, AllOf(StartsWith("sluice call: "), HasSubstr("scope:global:rpm")));
  std::remove(limits.c_str());
}

TEST_F(SluiceCallTest, ProviderErrorsExit1WithTheirClassAndNeverTheKey) {
  FakeProviderOptions broke;
  broke.spend_limit_rate = 1.0;
  auto provider = Provider(broke);
  ASSERT_NE(provider, nullptr);
  const Result r = Call(*provider, {"Hi"});
  EXPECT_THAT(r, ExitsWith(kExitError));
  EXPECT_THAT(r.err, AllOf(HasSubstr("quota_exhausted"), HasSubstr("HTTP 429"),
                           HasSubstr("enforced_spend_limit_reached")));
  EXPECT_THAT(r.out + r.err, Not(HasSubstr(kKey)));
  const Result never = Call(*provider, {"--config", kSeedLimits, "--max_tokens", "100000", "x"});
  EXPECT_THAT(never, ExitsWith(kExitError));
  EXPECT_THAT(never.err, HasSubstr("never fit"));
  unsetenv("ANTHROPIC_API_KEY");
  const Result no_key = Call(*provider, {"Hi"});
  EXPECT_THAT(no_key, ExitsWith(kExitError));
  EXPECT_THAT(no_key.err, HasSubstr("ANTHROPIC_API_KEY"));
}

}  // namespace
}  // namespace sluice
