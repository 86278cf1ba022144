// Stats snapshots of a segment set up here with exact values (a fake clock,
// explicit `now`), and their JSON and Prometheus forms parsed back.
#include "sluice/stats.h"

#include <unistd.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sluice/limits.h"
#include "sluice/segment.h"
#include "sluice/stats_exposition.h"
#include "tests/stats/exposition_parser.h"
#include "tests/stats/stats_fixture.h"
#include "tests/store/segment_test_util.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

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

// A provider account's buckets (a proxy's callers' keys) are grouped under
// their own owner, show their provider's configured limit, and expose.
TEST_F(StatsTest, ProviderAccountBucketsAreListedUnderTheirAccount) {
  Populate(Wall());
  auto account = segment_->OpenBucket("provider:anthropic@0a1b2c3d4e5f6789:default:rpm",
                                      {Rate::PerMinute(500), 50});
  ASSERT_TRUE(account.ok()) << account.status();
  ASSERT_TRUE(account->TryAcquire(10, clock_.Now()).granted());
  const StatsSnapshot snapshot = Snapshot(&config_);
  const StatsSnapshot::Group* group = nullptr;
  for (const auto& g : snapshot.groups) {
    if (g.name == "anthropic@0a1b2c3d4e5f6789/default") group = &g;
  }
  ASSERT_NE(group, nullptr);
  EXPECT_EQ(group->type, StatsSnapshot::GroupType::kProvider);
  ASSERT_EQ(group->buckets.size(), 1u);
  EXPECT_EQ(group->buckets[0].kind, "rpm");
  EXPECT_EQ(group->buckets[0].available, 40);
  EXPECT_EQ(group->buckets[0].limit, 500u);  // the provider's, after headroom
  EXPECT_EQ(group->buckets[0].limit_period, "minute");

  const absl::StatusOr<Exposition> e = ParseExposition(FormatPrometheus(snapshot));
  ASSERT_TRUE(e.ok()) << e.status();
  ExpectSluiceConventions(*e);
  const std::map<std::string, std::string> labels = {
      {"bucket", "provider:anthropic@0a1b2c3d4e5f6789:default:rpm"},
      {"owner", "anthropic@0a1b2c3d4e5f6789/default"},
      {"owner_type", "provider"},
      {"kind", "rpm"}};
  EXPECT_EQ(Get(*e, "sluice_bucket_available_permits", labels), 40);
  EXPECT_THAT(FormatStatsJson(snapshot), HasSubstr("anthropic@0a1b2c3d4e5f6789/default"));

  const auto taken = TakeStatsSnapshot(scratch_.path(), &config_);
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(taken->slots_used, 8u);
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

}  // namespace
}  // namespace sluice
