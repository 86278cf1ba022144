// The fleet's buckets in a private redis-server: the Lua GCRA decides as the
// bucket cell does on the same trace, stays exact at any age, reserves all
// or nothing, leases without debt, and survives Redis going away.

#include "sluice/redis_buckets.h"

#include <cmath>
#include <cstdint>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sluice/fixed_point.h"
#include "sluice/token_bucket.h"
#include "tests/tools/redis_server.h"

namespace sluice {
namespace {

std::unique_ptr<RedisBuckets> ConnectTo(const RedisServer& redis, std::string password = "") {
  absl::StatusOr<std::unique_ptr<RedisBuckets>> b = RedisBuckets::Connect(
      {.port = redis.port(), .password = std::move(password), .timeout = absl::Seconds(2)});
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

// A random bucket: rate log-uniform in [lo, hi] per second over a period of
// 1 s, 1 min, 7 s or 370,189 s; capacity log-uniform in [1, 1000]; one that
// Redis can hold.
BucketConfig RandomConfig(std::mt19937_64& rng, double lo, double hi) {
  for (;;) {
    const double per_second =
        std::exp(std::uniform_real_distribution<double>(std::log(lo), std::log(hi))(rng));
    const int64_t periods[] = {1, 60, 7, 370'189};
    const int64_t period = periods[rng() % 4];
    const uint64_t permits = std::max<uint64_t>(1, std::llround(per_second * period));
    const uint64_t capacity = std::max<uint64_t>(
        1, std::llround(std::exp(std::uniform_real_distribution<double>(0, std::log(1000))(rng))));
    BucketConfig config{Rate(permits, absl::Seconds(period)), capacity};
    if (RedisBuckets::Validate(config).ok()) return config;
  }
}

// An independent judge for chosen instants: the GCRA in 128-bit integers,
// with no epoch and no limit on age.
struct WideGcra {
  __int128 tat = 0;  // units (1/16 ns) since the Unix epoch
  __int128 interval, tau;
  Outcome Decide(uint64_t n, int64_t max_wait_ns, __int128 now, int64_t* wait_ns) {
    const __int128 cost = interval * n;
    *wait_ns = 0;
    if (cost > tau) return Outcome::kNeverFits;
    __int128 next = std::max(tat, now) + cost;
    const __int128 excess = next - now - tau;
    if (excess > static_cast<__int128>(max_wait_ns) * 16) {
      *wait_ns = static_cast<int64_t>((excess + 15) / 16);
      return Outcome::kRefused;
    }
    if (excess > 0) {
      *wait_ns = static_cast<int64_t>((excess + 15) / 16);
      next = now + tau + static_cast<__int128>(*wait_ns) * 16;
    }
    tat = next;
    return Outcome::kGranted;
  }
};

// The trace's one event: what was asked and what Redis decided.
struct Event {
  uint64_t n;
  int64_t max_wait_ns;
  RedisDecision decision;
};

// Redis keeps the GCRA in 1/16 ns with intervals rounded up (Lua's numbers
// are doubles), where the bucket cell is exact: so every decision is judged
// against the same rounding in wide integers, and where the interval is a
// whole number of 1/16 ns (half the buckets here) also against the cell.
TEST(RedisBucketsTest, ATraceDecidesInRedisAsInTheBucketCell) {
  RedisServer redis;
  ASSERT_TRUE(redis.ok());
  auto buckets = ConnectTo(redis);
  ASSERT_NE(buckets, nullptr);
  std::mt19937_64 rng(20261130);
  // Rates per second whose interval is a whole number of 1/16 ns.
  const uint64_t kWhole[] = {125,    1'000,   3'200,   6'250,   16'000,   40'000,
                             64'000, 125'000, 320'000, 640'000, 1'000'000};
  int granted = 0, refused = 0, waited = 0, events = 0, against_cell = 0;
  for (int b = 0; b < 60; ++b) {
    // Rates around the pace of round trips (tens of microseconds), so the
    // trace has grants, refusals and waits.
    BucketConfig config = RandomConfig(rng, 100, 1e6);
    if (b % 2 == 0) config.rate = Rate::PerSecond(kWhole[rng() % std::size(kWhole)]);
    const std::string key = absl::StrCat("trace:", b);
    std::vector<Event> trace;
    for (int i = 0; i < 300; ++i) {
      const uint64_t n = 1 + rng() % (config.capacity + 1);
      const int64_t max_wait_ns = rng() % 3 == 0 ? static_cast<int64_t>(rng() % 2'000'000) : 0;
      absl::StatusOr<RedisDecision> d =
          buckets->Reserve({{key, config, n}}, absl::Nanoseconds(max_wait_ns));
      ASSERT_TRUE(d.ok()) << d.status();
      trace.push_back({n, max_wait_ns, *d});
    }
    // The same asks, at the instants Redis decided them, through the judge
    // and (for whole intervals) the cell.
    const __int128 interval = internal_gcra::IntervalUnits(config.rate);
    WideGcra judge{.tat = 0, .interval = interval, .tau = interval * config.capacity};
    const bool whole = interval * config.rate.permits() ==
                       static_cast<__int128>(absl::ToInt64Nanoseconds(config.rate.period())) * 16;
    BucketCell cell;
    ASSERT_TRUE(BucketRef::Init(&cell, config, trace[0].decision.redis_now_ns).ok());
    const BucketRef ref(&cell, Clock::Monotonic());
    for (const Event& e : trace) {
      int64_t judged_wait = 0;
      const Outcome judged = judge.Decide(
          e.n, e.max_wait_ns, static_cast<__int128>(e.decision.redis_now_ns) * 16, &judged_wait);
      ASSERT_EQ(judged, e.decision.outcome)
          << "bucket " << b << " " << config.rate.ToString() << " burst " << config.capacity
          << " n=" << e.n << " at " << e.decision.redis_now_ns;
      ASSERT_EQ(judged_wait, e.decision.wait_ns) << "bucket " << b << " n=" << e.n;
      if (whole) {
        const Decision local = ref.Reserve(e.n, e.max_wait_ns, e.decision.redis_now_ns);
        ASSERT_EQ(local.outcome, e.decision.outcome) << "bucket " << b << " n=" << e.n;
        ASSERT_EQ(local.wait_ns, e.decision.wait_ns) << "bucket " << b << " n=" << e.n;
        ++against_cell;
      }
      ++events;
      granted += judged == Outcome::kGranted && judged_wait == 0;
      waited += judged == Outcome::kGranted && judged_wait > 0;
      refused += judged != Outcome::kGranted;
    }
  }
  EXPECT_EQ(events, 60 * 300);
  EXPECT_EQ(against_cell, 30 * 300);
  // The trace exercised every kind of decision.
  EXPECT_GT(granted, 1000);
  EXPECT_GT(refused, 1000);
  EXPECT_GT(waited, 100);
}

TEST(RedisBucketsTest, ExactAtAnyAgeAcrossDayLongGapsAndBeyondTenYears) {
  RedisServer redis;
  ASSERT_TRUE(redis.ok());
  auto buckets = ConnectTo(redis);
  ASSERT_NE(buckets, nullptr);
  std::mt19937_64 rng(7);
  int64_t latest_ns = 0;
  int decisions = 0;
  for (int b = 0; b < 30; ++b) {
    // From 1/day-ish to 1e6/s.
    const BucketConfig config = RandomConfig(rng, 1e-5, 1e6);
    const std::string key = absl::StrCat("age:", b);
    const __int128 interval = internal_gcra::IntervalUnits(config.rate);
    WideGcra judge{.tat = 0, .interval = interval, .tau = interval * config.capacity};
    // Start in 2026 and run past 2038 in steps from a microsecond to months.
    int64_t now_ns = int64_t{1'790'000'000} * 1'000'000'000;
    for (int i = 0; i < 500; ++i) {
      const uint64_t n = 1 + rng() % (config.capacity + 1);
      const int kind = rng() % 5;
      const int64_t step_us = kind == 0   ? rng() % 1'000
                              : kind == 1 ? rng() % 10'000'000
                              : kind == 2 ? rng() % (int64_t{3} * 86'400'000'000)
                              : kind == 3 ? rng() % (int64_t{100} * 86'400'000'000)
                                          : 0;
      now_ns += step_us * 1'000;
      if (kind == 4) {
        // Right at the boundary: the microsecond before or after n permits
        // are back, where an error of a few nanoseconds changes the answer.
        const __int128 ready_ns = (judge.tat + judge.interval * n - judge.tau + 15) / 16;
        const int64_t ready_us = static_cast<int64_t>(ready_ns / 1'000) + (rng() % 2);
        now_ns = std::max(now_ns, ready_us * 1'000);
      }
      buckets->SetTimeForTesting(now_ns);
      const int64_t max_wait_ns = rng() % 2 == 0 ? 0 : static_cast<int64_t>(rng() % 10'000'000'000);
      absl::StatusOr<RedisDecision> d =
          buckets->Reserve({{key, config, n}}, absl::Nanoseconds(max_wait_ns));
      ASSERT_TRUE(d.ok()) << d.status();
      int64_t wait_ns = 0;
      const Outcome want =
          judge.Decide(n, max_wait_ns, static_cast<__int128>(now_ns) * 16, &wait_ns);
      ASSERT_EQ(d->outcome, want) << "bucket " << b << " " << config.rate.ToString() << " burst "
                                  << config.capacity << " step " << i;
      if (want != Outcome::kNeverFits) {
        ASSERT_EQ(d->wait_ns, wait_ns) << "bucket " << b;
      }
      ASSERT_EQ(d->redis_now_ns, now_ns);
      ++decisions;
    }
    latest_ns = std::max(latest_ns, now_ns);
  }
  EXPECT_EQ(decisions, 30 * 500);
  // Ten years and more past the first instant.
  EXPECT_GT(latest_ns - int64_t{1'790'000'000} * 1'000'000'000,
            int64_t{10} * 365 * 86'400 * 1'000'000'000);
}

}  // namespace
}  // namespace sluice
