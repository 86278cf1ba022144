// Properties of the bucket over long random runs on simulated time:
//   - never over-admit: in every window [t, t+W], admitted <= C + R*W;
//   - no waste: with demand always above supply, admitted >= C + R*W - 1;
//   - no drift: 10^8 acquires at 1000/min admit exactly the ideal count;
//   - the coarse clock never exceeds the long-run allowance, and shifts
//     admissions within a window by at most its lag.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "sluice/token_bucket.h"

namespace sluice {
namespace {

constexpr int64_t kSec = 1'000'000'000;

struct Grant {
  int64_t at_ns;
  int64_t permits;
};

// Checks admitted <= C + R*W over every window that starts and ends on a
// grant (the tightest windows), exactly, in integers: with R = p / P,
//   (admitted - C) * P <= p * (t_j - t_i).
// For each start i, the worst end j maximizes prefix[j]*P - p*t_j, so one
// backward pass with a running maximum checks all O(n^2) windows in O(n).
void ExpectNeverOverAdmits(const std::vector<Grant>& grants, const BucketConfig& config) {
  const __int128 p = config.rate.permits();
  const __int128 P = absl::ToInt64Nanoseconds(config.rate.period());
  const __int128 C = config.capacity;
  std::vector<__int128> prefix(grants.size() + 1, 0);
  for (size_t i = 0; i < grants.size(); ++i) prefix[i + 1] = prefix[i] + grants[i].permits;
  __int128 best_end = std::numeric_limits<int64_t>::min();
  for (size_t i = grants.size(); i-- > 0;) {
    best_end = std::max(best_end, prefix[i + 1] * P - p * grants[i].at_ns);
    // Window [t_i, t_j]: (prefix[j+1] - prefix[i] - C) * P <= p * (t_j - t_i).
    const __int128 lhs = best_end - (prefix[i] + C) * P + p * grants[i].at_ns;
    ASSERT_LE(static_cast<double>(lhs), 0.0)
        << "over-admitted in a window starting at grant " << i << " (t=" << grants[i].at_ns
        << ") for rate " << config.rate.ToString() << " capacity " << config.capacity;
  }
}

BucketConfig RandomConfig(std::mt19937_64& rng) {
  static constexpr absl::Duration kPeriods[] = {absl::Seconds(1), absl::Minutes(1), absl::Hours(1),
                                                absl::Hours(24)};
  const absl::Duration period = kPeriods[rng() % 4];
  // Permits per period between 1 and ~1e6, log-uniform, so intervals range
  // from microseconds to a day and many are not whole nanoseconds.
  const uint64_t permits = 1 + static_cast<uint64_t>(std::exp2((rng() % 2000) / 100.0));
  const uint64_t capacity = 1 + rng() % 64;
  return {Rate(permits, period), capacity};
}

TEST(TokenBucketPropertyTest, NeverOverAdmitsInAnyWindow) {
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    std::mt19937_64 rng(seed);
    const BucketConfig config = RandomConfig(rng);
    const int64_t interval = absl::ToInt64Nanoseconds(config.rate.period()) /
                             static_cast<int64_t>(config.rate.permits());
    BucketCell cell;
    const int64_t start = static_cast<int64_t>(rng() % (1000 * kSec));
    int64_t now = start;
    ASSERT_TRUE(BucketRef::Init(&cell, config, now).ok());
    const BucketRef bucket(&cell, Clock::Monotonic());
    std::vector<Grant> grants;
    for (int step = 0; step < 3000; ++step) {
      // Jumps from zero to a few intervals; sometimes a stale reading.
      const int64_t jump = static_cast<int64_t>(rng() % (3 * static_cast<uint64_t>(interval) + 2));
      const bool stale = rng() % 16 == 0;
      const int64_t at = stale ? std::max(start, now - jump) : (now += jump);
      const uint64_t n = 1 + rng() % std::min<uint64_t>(config.capacity, 8);
      switch (rng() % 8) {
        case 0: {  // reserve with a wait, then sometimes give it back
          const Decision d = bucket.Reserve(n, 2 * interval, at);
          if (d.granted() && rng() % 2 == 0) {
            bucket.Refund(n, d.terms, at);
          } else if (d.granted()) {
            grants.push_back({at + d.wait_ns, static_cast<int64_t>(n)});
          }
          break;
        }
        default:
          if (bucket.TryAcquire(n, at).granted()) {
            grants.push_back({at, static_cast<int64_t>(n)});
          }
      }
    }
    // Reservations are used at their ready time, which may precede a later
    // grant's time: sort by the time the permits are used.
    std::sort(grants.begin(), grants.end(),
              [](const Grant& a, const Grant& b) { return a.at_ns < b.at_ns; });
    ASSERT_GT(grants.size(), config.capacity);
    ExpectNeverOverAdmits(grants, config);
    if (HasFatalFailure()) return;
  }
}

TEST(TokenBucketPropertyTest, WastesNothingWhenDemandExceedsSupply) {
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    std::mt19937_64 rng(seed);
    BucketConfig config = RandomConfig(rng);
    // Attempts land on whole nanoseconds, so with a capacity of one a permit
    // that becomes ready at a fraction of a nanosecond overflows for that
    // fraction before anyone can ask for it; a second permit of room lets
    // demand stay ahead. (Capacity one is covered exactly by the unit tests.)
    config.capacity = std::max<uint64_t>(config.capacity, 2);
    const int64_t period = absl::ToInt64Nanoseconds(config.rate.period());
    const int64_t interval = period / static_cast<int64_t>(config.rate.permits());
    const double exact_interval = static_cast<double>(period) / config.rate.permits();
    const int64_t start = static_cast<int64_t>(rng() % (1000 * kSec));
    BucketCell cell;
    ASSERT_TRUE(BucketRef::Init(&cell, config, start).ok());
    const BucketRef bucket(&cell, Clock::Monotonic());
    // Demand starts at `first` and never lets up from then on.
    const int64_t first =
        start + static_cast<int64_t>(rng() % (10 * static_cast<uint64_t>(interval)));
    int64_t now = first;
    int64_t admitted = 0;
    // Within a year of the epoch (the word counts 4.57 years from it).
    for (int step = 0; step < 2000 && now - start < 365 * 86'400 * kSec; ++step) {
      Decision d;
      while ((d = bucket.TryAcquire(1, now)).granted()) ++admitted;
      // admitted >= C + R*W - 1 with the configured rate R = permits/period.
      // The interval is rounded up by under 1/16 ns, which over this run can
      // cost at most W / (16 * interval^2) permits: add that allowance only.
      const __int128 w = now - first;
      const __int128 ideal_scaled = (static_cast<__int128>(config.capacity) - 1) * period +
                                    w * config.rate.permits();  // (C - 1 + R*W) * period
      const double rounding = static_cast<double>(w) / (16.0 * exact_interval * exact_interval);
      ASSERT_GE(static_cast<double>(admitted) + rounding + 1e-9,
                static_cast<double>(ideal_scaled) / static_cast<double>(period))
          << "seed " << seed << " rate " << config.rate.ToString() << " capacity "
          << config.capacity << " after " << static_cast<int64_t>(w) << " ns";
      // And never more than the ideal.
      ASSERT_TRUE(static_cast<__int128>(admitted - static_cast<int64_t>(config.capacity)) *
                      period <=
                  w * config.rate.permits())
          << "admitted " << admitted << " beyond the ideal, seed " << seed;
      // The next attempt comes before the bucket could fill up again (the
      // next permit's wait plus C - 1 intervals): demand above supply, so no
      // refill ever spills over the capacity unasked for.
      const uint64_t span = static_cast<uint64_t>(d.wait_ns - 1) +
                            (config.capacity - 1) * static_cast<uint64_t>(interval);
      now += 1 + static_cast<int64_t>(span > 0 ? rng() % span : 0);
    }
  }
}

TEST(TokenBucketPropertyTest, NoDriftOver100MillionAcquires) {
  // 1000/min: the interval is 60 ms exactly. Attempts arrive every 45 ms, so
  // demand always exceeds supply; after 10^8 of them the admitted count must
  // be exactly the capacity plus one per whole elapsed interval.
  constexpr int64_t kInterval = 60'000'000;
  constexpr int64_t kStep = 45'000'000;
  constexpr int64_t kAttempts = 100'000'000;
  constexpr uint64_t kCapacity = 20;
  BucketCell cell;
  ASSERT_TRUE(BucketRef::Init(&cell, {Rate::PerMinute(1000), kCapacity}, 0).ok());
  const BucketRef bucket(&cell, Clock::Monotonic());
  int64_t admitted = 0;
  int64_t now = 0;
  for (int64_t i = 0; i < kAttempts; ++i, now += kStep) {
    admitted += bucket.TryAcquire(1, now).granted();
  }
  const int64_t last = now - kStep;
  EXPECT_EQ(admitted, static_cast<int64_t>(kCapacity) + last / kInterval);
}

TEST(TokenBucketPropertyTest, CoarseClockBound) {
  // The coarse clock reads true time rounded down to its tick, so it lags by
  // less than L = one tick. Driven by it, a bucket created at true time 0
  //   - never admits more by true time t than C + R*t: its long-run allowance
  //     (a lagging reading only sees less refill), and
  //   - admits at most C + R*(W + L) in any window of true time W: the lag can
  //     move admissions by up to L, never add to them in the long run.
  constexpr int64_t kTick = 4'000'000;  // 4 ms, this kernel's coarse step
  for (uint64_t seed = 1; seed <= 50; ++seed) {
    std::mt19937_64 rng(seed);
    BucketConfig config = RandomConfig(rng);
    int64_t interval = 0;
    // AI-scale rates (an interval of 1 ms or more) keep the grant log small.
    while ((interval = absl::ToInt64Nanoseconds(config.rate.period()) /
                       static_cast<int64_t>(config.rate.permits())) < 1'000'000) {
      config = RandomConfig(rng);
    }
    const int64_t period = absl::ToInt64Nanoseconds(config.rate.period());
    BucketCell cell;
    ASSERT_TRUE(BucketRef::Init(&cell, config, 0).ok());
    const BucketRef coarse(&cell, Clock::Monotonic());
    int64_t now = 0, admitted = 0;
    std::vector<Grant> grants;
    for (int step = 0; step < 3000; ++step) {
      now += 1 + static_cast<int64_t>(rng() % (static_cast<uint64_t>(interval) + kTick));
      while (coarse.TryAcquire(1, now / kTick * kTick).granted()) {
        ++admitted;
        grants.push_back({now, 1});  // the permit is used at the true time
      }
      ASSERT_TRUE(static_cast<__int128>(admitted - static_cast<int64_t>(config.capacity)) *
                      period <=
                  static_cast<__int128>(now) * config.rate.permits())
          << "seed " << seed << ": " << admitted << " admitted by " << now;
    }
    // C + R*(W + L) is the window bound of a bucket whose capacity is larger
    // by R*L, rounded up to whole permits.
    BucketConfig widened = config;
    widened.capacity += static_cast<uint64_t>(
        (static_cast<__int128>(kTick) * config.rate.permits() + period - 1) / period);
    ExpectNeverOverAdmits(grants, widened);
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace sluice
