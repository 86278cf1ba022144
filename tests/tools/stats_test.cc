// sluice stats, top and metrics: the snapshot of a segment set up here with
// exact values (a fake clock, explicit `now`), its text, JSON and Prometheus
// forms parsed back, the /metrics server, and the built binary
// (SLUICE_CLI_PATH) run as a user would: once, --watch, top on a pipe and on
// a pseudo-terminal, metrics scraped over loopback.
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
#include "tests/store/segment_test_util.h"
#include "tests/tools/cli_runner.h"

namespace sluice {
namespace {

using ::testing::AllOf;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// A Prometheus text exposition (format 0.0.4) parser and validator --------------

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value;
};

struct Exposition {
  std::map<std::string, std::string> types;  // family -> counter, gauge, ...
  std::map<std::string, std::string> help;   // family -> text (unescaped)
  std::vector<Sample> samples;
  // "name{a="x",b="y"}" (labels sorted) -> value, for lookups.
  std::map<std::string, double> series;
};

bool IsMetricName(absl::string_view s) {
  if (s.empty() || !(absl::ascii_isalpha(s[0]) || s[0] == '_' || s[0] == ':')) return false;
  for (char c : s) {
    if (!(absl::ascii_isalnum(c) || c == '_' || c == ':')) return false;
  }
  return true;
}

bool IsLabelName(absl::string_view s) {
  if (s.empty() || !(absl::ascii_isalpha(s[0]) || s[0] == '_') || absl::StartsWith(s, "__")) {
    return false;
  }
  for (char c : s) {
    if (!(absl::ascii_isalnum(c) || c == '_')) return false;
  }
  return true;
}

bool IsUtf8(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

bool ParseValue(absl::string_view text, double* value) {
  if (text == "NaN") return *value = NAN, true;
  if (text == "+Inf") return *value = INFINITY, true;
  if (text == "-Inf") return *value = -INFINITY, true;
  if (text.empty() || absl::ascii_isalpha(text.back())) return false;  // "inf", "1e"
  return absl::SimpleAtod(text, value);
}

std::string SeriesKey(const std::string& name, const std::map<std::string, std::string>& labels) {
  return absl::StrCat(name, "{",
                      absl::StrJoin(labels, ",",
                                    [](std::string* out, const auto& l) {
                                      absl::StrAppend(out, l.first, "=\"", l.second, "\"");
                                    }),
                      "}");
}

// The family a sample belongs to: its own name, or for a histogram or summary
// the name without _bucket, _sum or _count.
std::string FamilyOf(const std::string& name, const Exposition& e) {
  if (e.types.count(name) > 0) return name;
  for (absl::string_view suffix : {"_bucket", "_sum", "_count"}) {
    absl::string_view base = name;
    if (absl::ConsumeSuffix(&base, suffix)) {
      auto it = e.types.find(std::string(base));
      if (it != e.types.end() && (it->second == "histogram" || it->second == "summary")) {
        return it->first;
      }
    }
  }
  return name;
}

// Parses the labels of a sample starting after '{'; `*pos` ends after '}'.
absl::Status ParseLabels(absl::string_view line, size_t* pos,
                         std::map<std::string, std::string>* labels) {
  size_t i = *pos;
  while (i < line.size() && line[i] != '}') {
    const size_t eq = line.find('=', i);
    if (eq == absl::string_view::npos) return absl::InvalidArgumentError("label without '='");
    const std::string name(line.substr(i, eq - i));
    if (!IsLabelName(name))
      return absl::InvalidArgumentError(absl::StrCat("label name '", name, "'"));
    if (eq + 1 >= line.size() || line[eq + 1] != '"') {
      return absl::InvalidArgumentError("label value not quoted");
    }
    std::string value;
    size_t j = eq + 2;
    for (; j < line.size() && line[j] != '"'; ++j) {
      if (line[j] != '\\') {
        value += line[j];
        continue;
      }
      if (++j == line.size()) return absl::InvalidArgumentError("escape at the end");
      if (line[j] == '\\') {
        value += '\\';
      } else if (line[j] == '"') {
        value += '"';
      } else if (line[j] == 'n') {
        value += '\n';
      } else {
        return absl::InvalidArgumentError(absl::StrCat("bad escape \\", line.substr(j, 1)));
      }
    }
    if (j == line.size()) return absl::InvalidArgumentError("unterminated label value");
    if (!IsUtf8(value)) return absl::InvalidArgumentError("label value is not UTF-8");
    if (!labels->emplace(name, value).second) {
      return absl::InvalidArgumentError(absl::StrCat("label '", name, "' twice"));
    }
    i = j + 1;
    if (i < line.size() && line[i] == ',') ++i;
  }
  if (i == line.size()) return absl::InvalidArgumentError("labels not closed");
  *pos = i + 1;
  return absl::OkStatus();
}

absl::StatusOr<Exposition> ParseExposition(absl::string_view text) {
  Exposition e;
  if (!text.empty() && text.back() != '\n') return absl::InvalidArgumentError("no final newline");
  std::set<std::string> closed;  // families whose samples have ended
  std::string current;           // the family of the samples being read
  int number = 0;
  for (absl::string_view line : absl::StrSplit(absl::StripSuffix(text, "\n"), '\n')) {
    ++number;
    auto fail = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("line ", number, " '", line, "': ", why));
    };
    if (line.empty()) continue;
    if (line[0] == '#') {
      const std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(' ', 3));
      if (parts.size() < 3 || (parts[1] != "HELP" && parts[1] != "TYPE")) continue;  // a comment
      const std::string family(parts[2]);
      if (!IsMetricName(family)) return fail("bad metric name");
      if (e.series.count(family) > 0 || closed.count(family) > 0 || current == family) {
        return fail("HELP or TYPE after the family's samples");
      }
      const std::string rest = parts.size() > 3 ? std::string(parts[3]) : "";
      if (parts[1] == "TYPE") {
        static const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary",
                                                     "untyped"};
        if (kTypes.count(rest) == 0) return fail("unknown type");
        if (!e.types.emplace(family, rest).second) return fail("TYPE twice");
      } else {
        std::string help;
        for (size_t i = 0; i < rest.size(); ++i) {
          if (rest[i] != '\\') {
            help += rest[i];
          } else if (i + 1 < rest.size() && (rest[i + 1] == '\\' || rest[i + 1] == 'n')) {
            help += rest[++i] == 'n' ? '\n' : '\\';
          } else {
            return fail("bad escape in HELP");
          }
        }
        if (!e.help.emplace(family, help).second) return fail("HELP twice");
      }
      continue;
    }
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = std::string(line.substr(0, i));
    if (!IsMetricName(s.name)) return fail("bad metric name");
    if (i < line.size() && line[i] == '{') {
      ++i;
      if (absl::Status st = ParseLabels(line, &i, &s.labels); !st.ok()) return fail(st.message());
    }
    if (i >= line.size() || line[i] != ' ') return fail("no value");
    const std::vector<absl::string_view> fields = absl::StrSplit(line.substr(i + 1), ' ');
    if (fields.empty() || fields.size() > 2)
      return fail("expected a value and a timestamp at most");
    if (!ParseValue(fields[0], &s.value)) return fail("value is not a number");
    int64_t timestamp;
    if (fields.size() == 2 && !absl::SimpleAtoi(fields[1], &timestamp)) return fail("timestamp");
    const std::string family = FamilyOf(s.name, e);
    if (family != current) {
      if (closed.count(family) > 0) return fail("the family's samples are not together");
      if (!current.empty()) closed.insert(current);
      current = family;
    }
    if (!e.series.emplace(SeriesKey(s.name, s.labels), s.value).second) {
      return fail("duplicate series");
    }
    e.samples.push_back(std::move(s));
  }
  return e;
}

// sluice's own conventions on top of the format.
void ExpectSluiceConventions(const Exposition& e) {
  for (const Sample& s : e.samples) {
    const std::string family = FamilyOf(s.name, e);
    EXPECT_THAT(s.name, StartsWith("sluice_"));
    ASSERT_EQ(e.types.count(family), 1u) << s.name << " has no TYPE";
    EXPECT_EQ(e.help.count(family), 1u) << s.name << " has no HELP";
    EXPECT_EQ(e.types.at(family) == "counter", absl::EndsWith(s.name, "_total")) << s.name;
    EXPECT_FALSE(absl::StrContains(s.name, "_ms")) << s.name << ": base units";
  }
}

double Get(const Exposition& e, const std::string& name,
           const std::map<std::string, std::string>& labels) {
  auto it = e.series.find(SeriesKey(name, labels));
  EXPECT_TRUE(it != e.series.end()) << "no series " << SeriesKey(name, labels);
  return it == e.series.end() ? NAN : it->second;
}

bool Has(const Exposition& e, const std::string& name,
         const std::map<std::string, std::string>& labels) {
  return e.series.count(SeriesKey(name, labels)) > 0;
}

TEST(ExpositionParserTest, RefusesWhatTheFormatForbids) {
  EXPECT_TRUE(ParseExposition("# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n"
                              "a_total{x=\"2\"} NaN\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\n"
                              "h_sum 2.5 1700000000000\nh_count 1\n")
                  .ok());
  const char* bad[] = {
      "a 1",                                    // no final newline
      "# TYPE a gauge\n# TYPE a gauge\na 1\n",  // TYPE twice
      "# TYPE a gauges\na 1\n",                 // unknown type
      "a 1\n# TYPE a gauge\n",                  // TYPE after samples
      "a{x=\"1\"} 1\nb 2\na{x=\"2\"} 3\n",      // family split
      "a{x=\"1\"} 1\na{x=\"1\"} 2\n",           // duplicate series
      "a{x=\"1\",x=\"2\"} 1\n",                 // label twice
      "a{x=\"\\t\"} 1\n",                       // bad escape
      "a{x=\"1} 1\n",                           // unterminated
      "a{1x=\"1\"} 1\n",                        // bad label name
      "a{__x=\"1\"} 1\n",                       // reserved label name
      "1a 1\n",                                 // bad metric name
      "a one\n",                                // not a number
      "a inf\n",                                // Go spells it +Inf
      "a\n",                                    // no value
      "a{x=\"\xff\"} 1\n",                      // not UTF-8
      "# HELP a bad \\t escape\na 1\n",         // bad HELP escape
  };
  for (const char* text : bad) EXPECT_FALSE(ParseExposition(text).ok()) << text;
}

// A segment with known contents -------------------------------------------------

constexpr absl::string_view kConfig = R"(
headroom = 0.5
[providers.anthropic]
requests_per_minute = 1000
[providers.openai]
requests_per_minute = 100
[scopes.global]
requests_per_minute = 800
max_concurrency = 4
usd_per_month = 100
[scopes."team:marketing"]
parent = "global"
requests_per_minute = 100
usd_per_day = 5
)";

// 2025-01-15 10:00:00 UTC: day 20103 since the epoch, month 660.
absl::Time Wall() {
  return absl::FromCivil(absl::CivilSecond(2025, 1, 15, 10, 0, 0), absl::UTCTimeZone());
}

class StatsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SegmentOptions options;
    options.clock = Clock::Fake(&clock_);
    options.max_leases = 16;
    auto segment = Segment::Open(scratch_.path(), options);
    ASSERT_TRUE(segment.ok()) << segment.status();
    segment_ = *std::move(segment);
    auto config = ParseLimitsConfig(kConfig, "test.toml");
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *std::move(config);
  }

  // Fills the segment as the policy would have, at wall time `wall`.
  void Populate(absl::Time wall) {
    const int64_t now = clock_.Now();
    auto marketing = segment_->OpenBucket("scope:team:marketing:rpm", {Rate::PerMinute(100), 10});
    ASSERT_TRUE(marketing.ok());
    ASSERT_TRUE(marketing->TryAcquire(8, now).granted());  // 2 of 10 left: high
    marketing->bottlenecks()->fetch_add(3);
    auto global = segment_->OpenBucket("scope:global:rpm", {Rate::PerMinute(800), 80});
    ASSERT_TRUE(global.ok());
    ASSERT_TRUE(global->TryAcquire(20, now).granted());  // 60 of 80: low
    auto provider =
        segment_->OpenBucket("provider:anthropic:default:rpm", {Rate::PerMinute(500), 50});
    ASSERT_TRUE(provider.ok());
    ASSERT_TRUE(provider->TryAcquire(25, now).granted());  // 25 of 50: medium
    provider->bottlenecks()->fetch_add(7);
    // A key the policy did not write: grouped by its prefix.
    ASSERT_TRUE(segment_->OpenBucket("anthropic:itpm", {Rate::PerMinute(1000), 100}).ok());

    auto day = segment_->OpenCounter("scope:team:marketing:usd_day");
    ASSERT_TRUE(day.ok());
    ASSERT_TRUE(day->TryAdd(BudgetWindowId(BudgetPeriod::kDay, wall), 1'234'567, 5'000'000));
    day->bottlenecks()->fetch_add(1);
    // Spent in an earlier month: nothing of it counts now.
    auto month = segment_->OpenCounter("scope:global:usd_month");
    ASSERT_TRUE(month.ok());
    ASSERT_TRUE(
        month->TryAdd(BudgetWindowId(BudgetPeriod::kMonth, wall) - 1, 99'000'000, 100'000'000));

    auto cap = segment_->OpenLeases("scope:global:concurrency", 4);
    ASSERT_TRUE(cap.ok());
    ASSERT_GE(cap->TryAcquire(42, 0), 0);
    cap->bottlenecks()->fetch_add(2);
  }

  StatsSnapshot Snapshot(const LimitsConfig* config, absl::Time wall = Wall()) {
    auto info = segment_->Inspect();
    EXPECT_TRUE(info.ok()) << info.status();
    return BuildStatsSnapshot(*info, config, wall);
  }

  ScratchSegment scratch_;
  // An hour ahead of the host's monotonic clock: the binary, reading the real
  // clock, sees every bucket as it was left here (a `now` before a bucket's
  // epoch reads as the epoch; it never rewinds), so its values are exact too.
  FakeClock clock_{Clock::MonotonicNanos() + absl::ToInt64Nanoseconds(absl::Hours(1))};
  std::unique_ptr<Segment> segment_;
  LimitsConfig config_;
};

TEST_F(StatsTest, BudgetWindowsAreThePolicysUtcDayAndMonth) {
  EXPECT_EQ(BudgetWindowId(BudgetPeriod::kDay, Wall()), 20103);
  EXPECT_EQ(BudgetWindowId(BudgetPeriod::kMonth, Wall()), 660);
  EXPECT_EQ(BudgetWindowId(BudgetPeriod::kDay, absl::UnixEpoch()), 0);
  EXPECT_EQ(BudgetWindowId(
                BudgetPeriod::kMonth,
                absl::FromCivil(absl::CivilSecond(1970, 12, 31, 23, 59, 59), absl::UTCTimeZone())),
            11);
}

TEST_F(StatsTest, JsonWithConfigHasEveryFieldExact) {
  Populate(Wall());
  const std::string text = FormatStatsJson(Snapshot(&config_));
  const nlohmann::json doc = nlohmann::json::parse(text);

  EXPECT_EQ(doc["segment"], scratch_.path());
  EXPECT_EQ(doc["time"], "2025-01-15T10:00:00+00:00");
  EXPECT_EQ(doc["config"], "test.toml");
  EXPECT_EQ(doc["slots"]["total"], 1024);
  EXPECT_EQ(doc["slots"]["used"], 7);
  EXPECT_EQ(doc["bottleneck"]["key"], "provider:anthropic:default:rpm");
  EXPECT_EQ(doc["bottleneck"]["count"], 7);
  ASSERT_EQ(doc["processes"].size(), 1u);
  EXPECT_EQ(doc["processes"][0]["pid"], getpid());
  EXPECT_EQ(doc["processes"][0]["alive"], true);
  EXPECT_EQ(doc["processes_alive"], 1);

  // Scopes root first, then providers in config order, then other keys.
  std::vector<std::string> names;
  for (const auto& g : doc["groups"]) names.push_back(g["name"]);
  EXPECT_EQ(names, (std::vector<std::string>{"global", "team:marketing", "anthropic/default",
                                             "openai/default", "anthropic"}));
  const nlohmann::json& global = doc["groups"][0];
  EXPECT_EQ(global["type"], "scope");
  EXPECT_EQ(global["configured"], true);
  EXPECT_TRUE(global["parent"].is_null());
  EXPECT_EQ(global["path"], nlohmann::json::array({"global"}));
  EXPECT_EQ(global["bottleneck"], "scope:global:concurrency");
  ASSERT_EQ(global["buckets"].size(), 1u);
  const nlohmann::json& rpm = global["buckets"][0];
  EXPECT_EQ(rpm["key"], "scope:global:rpm");
  EXPECT_EQ(rpm["kind"], "rpm");
  EXPECT_EQ(rpm["in_segment"], true);
  EXPECT_EQ(rpm["limit"], 800);
  EXPECT_EQ(rpm["limit_period"], "minute");
  EXPECT_EQ(rpm["rate"], "800/min");
  EXPECT_DOUBLE_EQ(rpm["rate_per_second"].get<double>(), 800.0 / 60);
  EXPECT_EQ(rpm["capacity"], 80);
  EXPECT_EQ(rpm["available"], 60);
  EXPECT_DOUBLE_EQ(rpm["percent_available"].get<double>(), 75.0);
  EXPECT_EQ(rpm["pressure"], "low");
  EXPECT_EQ(rpm["bottlenecks"], 0);
  ASSERT_EQ(global["budgets"].size(), 1u);
  const nlohmann::json& month = global["budgets"][0];
  EXPECT_EQ(month["key"], "scope:global:usd_month");
  EXPECT_EQ(month["period"], "month");
  EXPECT_EQ(month["window"], "2025-01");
  EXPECT_EQ(month["in_segment"], true);
  EXPECT_EQ(month["spent_micro_usd"], 0);  // last month's spend
  EXPECT_EQ(month["limit_micro_usd"], 100'000'000);
  EXPECT_DOUBLE_EQ(month["limit_usd"].get<double>(), 100.0);
  EXPECT_DOUBLE_EQ(month["percent_spent"].get<double>(), 0.0);
  ASSERT_EQ(global["concurrency"].size(), 1u);
  EXPECT_EQ(global["concurrency"][0]["key"], "scope:global:concurrency");
  EXPECT_EQ(global["concurrency"][0]["in_segment"], true);
  EXPECT_EQ(global["concurrency"][0]["max_in_flight"], 4);
  EXPECT_EQ(global["concurrency"][0]["in_flight"], 1);
  EXPECT_EQ(global["concurrency"][0]["bottlenecks"], 2);

  const nlohmann::json& marketing = doc["groups"][1];
  EXPECT_EQ(marketing["parent"], "global");
  EXPECT_EQ(marketing["path"], nlohmann::json::array({"team:marketing", "global"}));
  EXPECT_EQ(marketing["bottleneck"], "scope:team:marketing:rpm");
  EXPECT_EQ(marketing["buckets"][0]["available"], 2);
  EXPECT_DOUBLE_EQ(marketing["buckets"][0]["percent_available"].get<double>(), 20.0);
  EXPECT_EQ(marketing["buckets"][0]["pressure"], "high");
  EXPECT_EQ(marketing["buckets"][0]["bottlenecks"], 3);
  const nlohmann::json& day = marketing["budgets"][0];
  EXPECT_EQ(day["key"], "scope:team:marketing:usd_day");
  EXPECT_EQ(day["window"], "2025-01-15");
  EXPECT_EQ(day["spent_micro_usd"], 1'234'567);
  EXPECT_DOUBLE_EQ(day["spent_usd"].get<double>(), 1.234567);
  EXPECT_EQ(day["limit_micro_usd"], 5'000'000);
  EXPECT_DOUBLE_EQ(day["percent_spent"].get<double>(), 100.0 * 1'234'567 / 5'000'000);
  EXPECT_EQ(day["bottlenecks"], 1);

  const nlohmann::json& anthropic = doc["groups"][2];
  EXPECT_EQ(anthropic["type"], "provider");
  EXPECT_EQ(anthropic["buckets"][0]["limit"], 500);  // 1000 at headroom 0.5
  EXPECT_EQ(anthropic["buckets"][0]["available"], 25);
  EXPECT_EQ(anthropic["buckets"][0]["pressure"], "medium");

  // Configured, but no process has opened it.
  const nlohmann::json& openai = doc["groups"][3]["buckets"][0];
  EXPECT_EQ(openai["key"], "provider:openai:default:rpm");
  EXPECT_EQ(openai["in_segment"], false);
  EXPECT_EQ(openai["limit"], 50);
  EXPECT_EQ(openai["capacity"], 5);  // 6 s of 50/min
  EXPECT_TRUE(openai["available"].is_null());
  EXPECT_TRUE(openai["pressure"].is_null());

  const nlohmann::json& other = doc["groups"][4];
  EXPECT_EQ(other["type"], "other");
  EXPECT_EQ(other["configured"], false);
  EXPECT_EQ(other["buckets"][0]["key"], "anthropic:itpm");
  EXPECT_EQ(other["buckets"][0]["kind"], "itpm");
  EXPECT_TRUE(other["buckets"][0]["limit"].is_null());
  EXPECT_EQ(other["buckets"][0]["available"], 100);
}

TEST_F(StatsTest, WithoutConfigGroupsComeFromTheKeys) {
  Populate(Wall());
  const nlohmann::json doc = nlohmann::json::parse(FormatStatsJson(Snapshot(nullptr)));
  EXPECT_TRUE(doc["config"].is_null());
  std::vector<std::string> names;
  for (const auto& g : doc["groups"]) {
    names.push_back(absl::StrCat(g["type"].get<std::string>(), " ", g["name"].get<std::string>()));
    EXPECT_EQ(g["configured"], false);
    EXPECT_TRUE(g["parent"].is_null());
    for (const auto& b : g["buckets"]) EXPECT_TRUE(b["limit"].is_null()) << b;
    for (const auto& b : g["budgets"]) EXPECT_TRUE(b["limit_micro_usd"].is_null()) << b;
  }
  // Scopes ("global" first), providers, other keys; nothing configured is listed.
  EXPECT_EQ(names, (std::vector<std::string>{"scope global", "scope team:marketing",
                                             "provider anthropic/default", "other anthropic"}));
  EXPECT_EQ(doc["groups"][1]["budgets"][0]["spent_micro_usd"], 1'234'567);
}

TEST_F(StatsTest, BudgetSpentCountsOnlyTheCurrentOrALaterWindow) {
  Populate(Wall());
  auto spent = [](const StatsSnapshot& s) {
    for (const auto& g : s.groups) {
      for (const auto& b : g.budgets) {
        if (b.key == "scope:team:marketing:usd_day") return b.spent_micro_usd;
      }
    }
    return uint64_t{999};
  };
  EXPECT_EQ(spent(Snapshot(nullptr, Wall())), 1'234'567u);
  EXPECT_EQ(spent(Snapshot(nullptr, Wall() + absl::Hours(24))), 0u);  // the next day
  // A writer whose clock ran ahead: its spend counts against today.
  EXPECT_EQ(spent(Snapshot(nullptr, Wall() - absl::Hours(24))), 1'234'567u);
}

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

TEST_F(StatsTest, PrometheusExpositionParsesBackWithEveryValue) {
  Populate(Wall());
  const std::string text = FormatPrometheus(Snapshot(&config_));
  const absl::StatusOr<Exposition> parsed = ParseExposition(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << text;
  const Exposition& e = *parsed;
  ExpectSluiceConventions(e);

  EXPECT_EQ(e.types.at("sluice_bucket_bottleneck_total"), "counter");
  EXPECT_EQ(e.types.at("sluice_bucket_available_permits"), "gauge");
  EXPECT_EQ(Get(e, "sluice_segment_slots", {}), 1024);
  EXPECT_EQ(Get(e, "sluice_segment_slots_used", {}), 7);
  EXPECT_EQ(Get(e, "sluice_processes_attached", {}), 1);
  EXPECT_EQ(Get(e, "sluice_processes_alive", {}), 1);

  const std::map<std::string, std::string> marketing = {{"bucket", "scope:team:marketing:rpm"},
                                                        {"owner", "team:marketing"},
                                                        {"owner_type", "scope"},
                                                        {"kind", "rpm"}};
  EXPECT_EQ(Get(e, "sluice_bucket_available_permits", marketing), 2);
  EXPECT_EQ(Get(e, "sluice_bucket_capacity_permits", marketing), 10);
  EXPECT_DOUBLE_EQ(Get(e, "sluice_bucket_rate_permits_per_second", marketing), 100.0 / 60);
  EXPECT_DOUBLE_EQ(Get(e, "sluice_bucket_available_ratio", marketing), 0.2);
  EXPECT_EQ(Get(e, "sluice_bucket_pressure", marketing), 2);
  EXPECT_EQ(Get(e, "sluice_bucket_bottleneck_total", marketing), 3);
  auto with_period = marketing;
  with_period["period"] = "minute";
  EXPECT_EQ(Get(e, "sluice_bucket_limit_permits", with_period), 100);

  const std::map<std::string, std::string> provider = {{"bucket", "provider:anthropic:default:rpm"},
                                                       {"owner", "anthropic/default"},
                                                       {"owner_type", "provider"},
                                                       {"kind", "rpm"}};
  EXPECT_EQ(Get(e, "sluice_bucket_pressure", provider), 1);
  EXPECT_EQ(Get(e, "sluice_bucket_bottleneck_total", provider), 7);

  // Configured but not opened: its limit, and no live series.
  const std::map<std::string, std::string> openai = {{"bucket", "provider:openai:default:rpm"},
                                                     {"owner", "openai/default"},
                                                     {"owner_type", "provider"},
                                                     {"kind", "rpm"},
                                                     {"period", "minute"}};
  EXPECT_EQ(Get(e, "sluice_bucket_limit_permits", openai), 50);
  auto openai_live = openai;
  openai_live.erase("period");
  EXPECT_FALSE(Has(e, "sluice_bucket_available_permits", openai_live));

  const std::map<std::string, std::string> day = {
      {"budget", "scope:team:marketing:usd_day"}, {"scope", "team:marketing"}, {"period", "day"}};
  EXPECT_DOUBLE_EQ(Get(e, "sluice_budget_spent_usd", day), 1.234567);
  EXPECT_EQ(Get(e, "sluice_budget_limit_usd", day), 5);
  EXPECT_EQ(Get(e, "sluice_budget_bottleneck_total", day), 1);
  const std::map<std::string, std::string> month = {
      {"budget", "scope:global:usd_month"}, {"scope", "global"}, {"period", "month"}};
  EXPECT_EQ(Get(e, "sluice_budget_spent_usd", month), 0);
  EXPECT_EQ(Get(e, "sluice_budget_limit_usd", month), 100);

  const std::map<std::string, std::string> cap = {{"cap", "scope:global:concurrency"},
                                                  {"scope", "global"}};
  EXPECT_EQ(Get(e, "sluice_concurrency_in_flight", cap), 1);
  EXPECT_EQ(Get(e, "sluice_concurrency_max_in_flight", cap), 4);
  EXPECT_EQ(Get(e, "sluice_concurrency_bottleneck_total", cap), 2);

  EXPECT_EQ(Get(e, "sluice_scope_info", {{"scope", "team:marketing"}, {"parent", "global"}}), 1);
  EXPECT_EQ(Get(e, "sluice_scope_info", {{"scope", "global"}, {"parent", ""}}), 1);
  EXPECT_NEAR(Get(e, "sluice_segment_created_timestamp_seconds", {}),
              absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()), 600);
}

TEST_F(StatsTest, PrometheusLabelValuesAreEscapedAndUtf8) {
  // Bucket names may hold quotes, backslashes and any non-control byte.
  ASSERT_TRUE(segment_->OpenBucket("we\"ird\\key", {Rate::PerSecond(5), 5}).ok());
  ASSERT_TRUE(segment_
                  ->OpenBucket("bad\xff"
                               "byte",
                               {Rate::PerSecond(5), 5})
                  .ok());
  const std::string text = FormatPrometheus(Snapshot(nullptr));
  EXPECT_THAT(text, HasSubstr(R"(bucket="we\"ird\\key")"));
  const absl::StatusOr<Exposition> e = ParseExposition(text);
  ASSERT_TRUE(e.ok()) << e.status() << "\n" << text;
  EXPECT_EQ(Get(*e, "sluice_bucket_available_permits",
                {{"bucket", "we\"ird\\key"},
                 {"owner", "we\"ird\\key"},
                 {"owner_type", "other"},
                 {"kind", ""}}),
            5);
  EXPECT_EQ(Get(*e, "sluice_bucket_available_permits",
                {{"bucket",
                  "bad\xEF\xBF\xBD"
                  "byte"},
                 {"owner",
                  "bad\xEF\xBF\xBD"
                  "byte"},
                 {"owner_type", "other"},
                 {"kind", ""}}),
            5);
  // JSON replaces the byte the same way instead of throwing.
  EXPECT_THAT(FormatStatsJson(Snapshot(nullptr)), HasSubstr("bad\xEF\xBF\xBD"
                                                            "byte"));
}

TEST_F(StatsTest, TakeStatsSnapshotNamesAMissingSegment) {
  ScratchSegment missing;
  const auto snapshot = TakeStatsSnapshot(missing.path(), nullptr);
  EXPECT_EQ(snapshot.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(snapshot.status().message(),
            absl::StrCat("no segment at ", missing.path(), "; nothing has run yet?"));
  EXPECT_NE(access(missing.path().c_str(), F_OK), 0);  // looking never creates

  Populate(absl::Now());
  const auto taken = TakeStatsSnapshot(scratch_.path(), &config_);
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(taken->slots_used, 7u);
  EXPECT_EQ(taken->processes.size(), 1u);  // this process only: looking does not register
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
  EXPECT_THAT(r.out, ContainsRegex("\nscope team:marketing +rpm +100/min +100/min +10 +2 +20.0% +"
                                   "high +3\n"));
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
  EXPECT_EQ(doc["groups"][1]["buckets"][0]["available"], 2);
  EXPECT_EQ(doc["groups"][1]["budgets"][0]["spent_micro_usd"], 1'234'567);

  const Result prom = Run({"stats", "--prometheus", "--config", ConfigFile()});
  ASSERT_THAT(prom, ExitsWith(0));
  const auto e = ParseExposition(prom.out);
  ASSERT_TRUE(e.ok()) << e.status();
  ExpectSluiceConventions(*e);
  EXPECT_EQ(Get(*e, "sluice_bucket_available_permits",
                {{"bucket", "scope:team:marketing:rpm"},
                 {"owner", "team:marketing"},
                 {"owner_type", "scope"},
                 {"kind", "rpm"}}),
            2);
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
  EXPECT_EQ(Get(*e, "sluice_bucket_available_permits",
                {{"bucket", "scope:global:rpm"},
                 {"owner", "global"},
                 {"owner_type", "scope"},
                 {"kind", "rpm"}}),
            40);

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
