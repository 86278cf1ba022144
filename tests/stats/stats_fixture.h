// A segment with known contents, for the stats tests: a fake clock, a limits
// config, and Populate() filling the segment as the policy would have.
#ifndef SLUICE_TESTS_STATS_STATS_FIXTURE_H_
#define SLUICE_TESTS_STATS_STATS_FIXTURE_H_

#include <cstdint>
#include <memory>

#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sluice/clock.h"
#include "sluice/limits.h"
#include "sluice/segment.h"
#include "sluice/stats.h"
#include "tests/store/segment_test_util.h"

namespace sluice {

inline constexpr absl::string_view kConfig = R"(
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
inline absl::Time Wall() {
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

  // Permits a bucket of `per_minute` has refilled, at most, between the
  // fake clock's reading and now on the host's monotonic clock: what a tool
  // reading the host's clock may see on top of what Populate() left.
  int64_t RefilledSincePopulate(int64_t per_minute) const {
    const int64_t elapsed = Clock::MonotonicNanos() - clock_.Now();
    return elapsed / (int64_t{60'000'000'000} / per_minute);
  }

  ScratchSegment scratch_;
  // Starts at the host's monotonic clock, so that the binary, reading that
  // clock, sees every bucket as it was left here plus what it refilled since
  // (RefilledSincePopulate).
  FakeClock clock_{Clock::MonotonicNanos()};
  std::unique_ptr<Segment> segment_;
  LimitsConfig config_;
};

}  // namespace sluice

#endif  // SLUICE_TESTS_STATS_STATS_FIXTURE_H_
