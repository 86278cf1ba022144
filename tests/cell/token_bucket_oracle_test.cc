// The bucket cell against an exact oracle: random traces of TryAcquire and
// Reserve decisions, at rates from 1/day to 1e6/s over periods that divide
// into no whole number of nanoseconds, at clock readings from a year before
// the clock's origin to fourteen years after it. Every decision must be the
// one exact arithmetic makes, in both directions, with the same wait to the
// nanosecond.
//
// The oracle is independent of the cell: it is a token count, not a
// theoretical arrival time, kept as an integer numerator over the period in
// nanoseconds (K = tokens * T for a rate of P permits per T ns), so that a
// nanosecond adds exactly P and a permit costs exactly T. Nothing is rounded.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sluice/rate.h"
#include "sluice/token_bucket.h"

namespace sluice {
namespace {

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kYear = 365 * 86'400 * kSec;

// A token bucket in exact integers: K / T tokens, at most C.
class Oracle {
 public:
  Oracle(const BucketConfig& config, int64_t start_ns)
      : p_(config.rate.permits()),
        t_(absl::ToInt64Nanoseconds(config.rate.period())),
        c_(config.capacity),
        k_(static_cast<__int128>(c_) * t_),
        last_ns_(start_ns) {}

  // Brings the count to `now_ns` (never backwards).
  void Advance(int64_t now_ns) {
    if (now_ns <= last_ns_) return;
    // Fits: dt < 2^64 ns and P < 2^40 here.
    const __int128 dt = static_cast<__int128>(now_ns) - last_ns_;
    k_ = std::min(static_cast<__int128>(c_) * t_, k_ + dt * p_);
    last_ns_ = now_ns;
  }

  // How far the count is from n permits, in permits * T (negative: short).
  __int128 Margin(uint64_t n) const { return k_ - static_cast<__int128>(n) * t_; }

  // Whether a decision about n permits is within 1e-6 permits of the line
  // but not on it: exactly n permits there must be admitted.
  bool Near(uint64_t n) const {
    const __int128 m = Margin(n);
    return m != 0 && (m < 0 ? -m : m) * 1'000'000 < t_;
  }

  // Whole ns until n permits are there (0 if they are).
  int64_t WaitNs(uint64_t n) const {
    const __int128 short_by = -Margin(n);
    if (short_by <= 0) return 0;
    return static_cast<int64_t>((short_by + p_ - 1) / p_);
  }

  uint64_t capacity() const { return c_; }

  void Take(uint64_t n) { k_ -= static_cast<__int128>(n) * t_; }
  // A reservation waits a whole number of ns: the holder proceeds then, and
  // the count is what it will be at that instant, zero, less that wait.
  void Reserve(int64_t wait_ns) { k_ = -static_cast<__int128>(wait_ns) * p_; }

 private:
  __int128 p_, t_;
  uint64_t c_;
  __int128 k_;
  int64_t last_ns_;
};

// Rates log-uniform from 1/day to 1e6/s over a period of 1 s, 7 s, 1 min, a
// day, or the odd lengths that exposed rounding; capacity log-uniform in
// [1, 1000]; one the cell accepts.
BucketConfig RandomConfig(std::mt19937_64& rng) {
  for (;;) {
    const double per_second = std::exp(
        std::uniform_real_distribution<double>(std::log(1.0 / 86'400), std::log(1e6))(rng));
    const int64_t periods[] = {1, 7, 60, 86'400, 370'189, 782'406, 901'945};
    const int64_t period = periods[rng() % std::size(periods)];
    const uint64_t permits = std::max<uint64_t>(1, std::llround(per_second * period));
    const uint64_t capacity = std::max<uint64_t>(
        1, std::llround(std::exp(std::uniform_real_distribution<double>(0, std::log(1000))(rng))));
    const BucketConfig config{Rate(permits, absl::Seconds(period)), capacity};
    if (ValidateBucketConfig(config).ok()) return config;
  }
}

struct Tally {
  int64_t events = 0;
  int64_t wrong = 0;
  int64_t near = 0;
  int64_t granted = 0;
  int64_t refused = 0;
  int64_t waited = 0;
  int64_t past_ten_years = 0;
  int64_t on_the_line = 0;  // exactly n permits there
};

// The next instant to decide at: a step within an interval, a few
// intervals, days, or years; or the exact nanosecond (or the one before)
// at which n permits are back, where any error changes the answer.
int64_t NextNow(std::mt19937_64& rng, int64_t now, const Oracle& oracle, uint64_t n,
                const BucketConfig& config) {
  const int64_t interval_ns =
      std::max<int64_t>(1, absl::ToInt64Nanoseconds(config.rate.period()) / config.rate.permits());
  switch (rng() % 6) {
    case 0:
      return now + static_cast<int64_t>(rng() % interval_ns);
    case 1:
      return now + static_cast<int64_t>(rng() % (4 * static_cast<uint64_t>(interval_ns) + 1));
    case 2:
      return now + static_cast<int64_t>(rng() % (3 * 86'400 * static_cast<uint64_t>(kSec)));
    case 3:
      return rng() % 8 == 0 ? now + static_cast<int64_t>(rng() % (2 * kYear)) : now;
    default: {
      const int64_t ready = now + oracle.WaitNs(n);
      return rng() % 2 == 0 ? ready : std::max(now, ready - 1);
    }
  }
}

// One bucket's trace, judged event by event.
void RunTrace(const BucketConfig& config, int64_t start, int events, std::mt19937_64& rng,
              Tally& tally) {
  BucketCell cell;
  ASSERT_TRUE(BucketRef::Init(&cell, config, start).ok());
  const BucketRef bucket(&cell, Clock::Monotonic());
  Oracle oracle(config, start);
  int64_t now = start;
  const std::string what = absl::StrCat(config.rate.ToString(), " burst ", config.capacity);
  std::string history;  // the events so far, for a failure's message
  for (int i = 0; i < events; ++i) {
    const uint64_t n = 1 + rng() % (config.capacity + 1);
    now = NextNow(rng, now, oracle, n, config);
    oracle.Advance(now);
    const bool reserve = rng() % 4 == 0;
    const int64_t max_wait = reserve ? static_cast<int64_t>(rng() % (2 * kSec)) : 0;
    const Decision d = bucket.Reserve(n, max_wait, now);
    if (i < 40) {
      absl::StrAppend(&history, "\n  at ", now, " n=", n, " max_wait=", max_wait, ": ",
                      d.granted() ? "granted" : "refused", " wait ", d.wait_ns);
    }
    ++tally.events;
    tally.past_ten_years += now > 10 * kYear;
    if (n > oracle.capacity()) {
      tally.wrong += d.outcome != Outcome::kNeverFits;
      EXPECT_EQ(d.outcome, Outcome::kNeverFits) << what << " n=" << n;
      continue;
    }
    const int64_t wait = oracle.WaitNs(n);
    const bool admit = wait <= max_wait;
    tally.on_the_line += oracle.Margin(n) == 0;
    // Within 1e-6 permits of the line either answer would do; the cell is
    // exact, so it is held to the exact answer there too.
    tally.near += oracle.Near(n);
    if (d.granted() != admit || d.wait_ns != wait) {
      ++tally.wrong;
      ADD_FAILURE() << what << " at " << now << " (" << now / kYear << " years) n=" << n
                    << " max_wait=" << max_wait << ": cell "
                    << (d.granted() ? "granted" : "refused") << " wait " << d.wait_ns << ", oracle "
                    << (admit ? "grants" : "refuses") << " wait " << wait
                    << "; events from the start:" << history;
      if (tally.wrong > 20) return;
    }
    if (d.granted()) {
      if (d.wait_ns > 0) {
        oracle.Reserve(d.wait_ns);
        ++tally.waited;
      } else {
        oracle.Take(n);
        ++tally.granted;
      }
    } else {
      ++tally.refused;
    }
  }
}

TEST(TokenBucketOracleTest, EveryDecisionIsExactAtAnyRateAndAge) {
  std::mt19937_64 rng(20261130);
  Tally tally;
  for (int b = 0; b < 400; ++b) {
    const BucketConfig config = RandomConfig(rng);
    // From a year before the clock's origin to twelve years after it.
    const int64_t start = static_cast<int64_t>(rng() % (13 * static_cast<uint64_t>(kYear))) - kYear;
    RunTrace(config, start, 400, rng, tally);
    if (HasFailure()) break;
  }
  EXPECT_EQ(tally.wrong, 0);
  EXPECT_GE(tally.events, 160'000);
  // The traces reach every kind of decision, and far ages.
  EXPECT_GT(tally.granted, 20'000);
  EXPECT_GT(tally.refused, 20'000);
  EXPECT_GT(tally.waited, 2'000);
  EXPECT_GT(tally.past_ten_years, 10'000);
  EXPECT_GT(tally.near, 10'000);
  EXPECT_GT(tally.on_the_line, 10'000);
}

// The buckets that exposed the first cell's two faults: a fast odd rate
// whose rounding accumulated while saturated, and slow ones whose word
// saturated 4.57 years after its epoch. Saturated, then aged.
TEST(TokenBucketOracleTest, TheRatesThatUsedToGoWrongAreExact) {
  const BucketConfig cases[] = {
      {Rate(4'180'434'727, absl::Seconds(370'189)), 1000},
      {Rate(17, absl::Seconds(782'406)), 5},
      {Rate(14, absl::Seconds(901'945)), 162},
  };
  std::mt19937_64 rng(4);
  for (const BucketConfig& config : cases) {
    for (const int64_t start : {int64_t{0}, 4 * kYear, 11 * kYear}) {
      Tally tally;
      RunTrace(config, start, 3000, rng, tally);
      EXPECT_EQ(tally.wrong, 0) << config.rate.ToString() << " from " << start / kYear << " y";
      EXPECT_GT(tally.granted, 100);
      EXPECT_GT(tally.refused, 100);
    }
  }
}

}  // namespace
}  // namespace sluice
