// The independent judge: hand-checked cases in exact nanoseconds, then a
// cross-check against sluice's GCRA cell on random traces. The cell counts
// time exactly, so it must agree with the judge on every decision, wait and
// available count, whether or not a rate's interval is a whole number of
// nanoseconds; a cell that ever grants what the judge refuses fails the test.
#include "tools/judge/exact_bucket.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/clock.h"
#include "sluice/rate.h"
#include "sluice/token_bucket.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

std::unique_ptr<ExactBucket> MakeBucket(const ExactBucketConfig& config, int64_t now_ns = 0) {
  absl::StatusOr<std::unique_ptr<ExactBucket>> bucket = ExactBucket::Create(config, now_ns);
  EXPECT_TRUE(bucket.ok()) << bucket.status();
  return bucket.ok() ? *std::move(bucket) : nullptr;
}

// Two permits a second, capacity 2: one permit every 500 ms.
constexpr ExactBucketConfig kTwoPerSecond = {.permits = 2, .period_ns = kSec, .capacity = 2};

// Hand-checked cases -----------------------------------------------------------------

TEST(ExactBucketTest, StartsFullAndRefillsContinuously) {
  auto bucket = MakeBucket(kTwoPerSecond);
  EXPECT_EQ(bucket->Capacity(), 2u);
  EXPECT_EQ(bucket->Available(0), 2);
  EXPECT_EQ(bucket->NanosUntilFull(0), 0);
  EXPECT_TRUE(bucket->TryTake(2, 0).taken);
  EXPECT_EQ(bucket->Available(0), 0);
  EXPECT_EQ(bucket->NanosUntilFull(0), kSec);
  // Half a permit after 250 ms: still none whole.
  EXPECT_EQ(bucket->Available(kSec / 4), 0);
  const ExactBucket::TakeResult early = bucket->TryTake(1, kSec / 4);
  EXPECT_FALSE(early.taken);
  EXPECT_FALSE(early.never_fits);
  EXPECT_EQ(early.wait_ns, kSec / 4);
  EXPECT_EQ(bucket->Available(kSec / 2), 1);
  EXPECT_EQ(bucket->NanosUntilFull(kSec / 2), kSec / 2);
  EXPECT_TRUE(bucket->TryTake(1, kSec / 2).taken);
  EXPECT_FALSE(bucket->TryTake(1, kSec / 2).taken);
}

TEST(ExactBucketTest, NeverHoldsMoreThanItsCapacity) {
  auto bucket = MakeBucket(kTwoPerSecond);
  EXPECT_TRUE(bucket->TryTake(1, 0).taken);
  EXPECT_EQ(bucket->Available(1000 * kSec), 2);
  EXPECT_EQ(bucket->NanosUntilFull(1000 * kSec), 0);
  EXPECT_TRUE(bucket->TryTake(2, 1000 * kSec).taken);
  EXPECT_FALSE(bucket->TryTake(1, 1000 * kSec).taken);
}

TEST(ExactBucketTest, MoreThanTheCapacityNeverFitsAndChangesNothing) {
  auto bucket = MakeBucket(kTwoPerSecond);
  const ExactBucket::TakeResult r = bucket->TryTake(3, 0);
  EXPECT_FALSE(r.taken);
  EXPECT_TRUE(r.never_fits);
  EXPECT_EQ(r.wait_ns, 0);
  EXPECT_EQ(bucket->Available(0), 2);
}

TEST(ExactBucketTest, RefundIsCappedAtTheCapacity) {
  auto bucket = MakeBucket(kTwoPerSecond);
  bucket->Refund(5, 0);  // already full: nothing to give back
  EXPECT_EQ(bucket->Available(0), 2);
  EXPECT_TRUE(bucket->TryTake(2, 0).taken);
  bucket->Refund(1, kSec / 4);  // 0.5 + 1 permits
  EXPECT_EQ(bucket->Available(kSec / 4), 1);
  EXPECT_EQ(bucket->NanosUntilFull(kSec / 4), kSec / 4);
  bucket->Refund(5, kSec / 4);
  EXPECT_EQ(bucket->Available(kSec / 4), 2);
  EXPECT_FALSE(bucket->TryTake(3, kSec / 4).taken);
}

TEST(ExactBucketTest, DebitGoesIntoDebtAndRefillsFromThere) {
  auto bucket = MakeBucket(kTwoPerSecond);
  bucket->Debit(3, 0);  // 2 - 3 = -1 permit
  EXPECT_EQ(bucket->Available(0), 0);
  EXPECT_EQ(bucket->NanosUntilFull(0), 1500 * 1'000'000);  // 3 permits at 2/s
  EXPECT_EQ(bucket->TryTake(1, 0).wait_ns, kSec);          // 2 permits short
  EXPECT_EQ(bucket->Available(kSec / 2), 0);               // back to 0
  EXPECT_EQ(bucket->Available(kSec), 1);
  // A refund in debt is not capped by the capacity alone: -1 + 2 = 1.
  bucket->Debit(2, kSec);  // 1 - 2 = -1
  bucket->Refund(2, kSec);
  EXPECT_EQ(bucket->Available(kSec), 1);
}

TEST(ExactBucketTest, AStaleNowChangesNothing) {
  auto bucket = MakeBucket(kTwoPerSecond, 10 * kSec);
  EXPECT_TRUE(bucket->TryTake(2, 10 * kSec).taken);
  // An earlier reading neither rewinds nor refills; it reads the latest
  // time's level, and its wait counts from the earlier reading.
  EXPECT_EQ(bucket->Available(9 * kSec), 0);
  const ExactBucket::TakeResult stale = bucket->TryTake(1, 9 * kSec);
  EXPECT_FALSE(stale.taken);
  EXPECT_EQ(stale.wait_ns, kSec + kSec / 2);
  EXPECT_EQ(bucket->NanosUntilFull(9 * kSec), 2 * kSec);
  EXPECT_EQ(bucket->Available(10 * kSec + kSec / 2), 1);
  // A bucket created "in the future" is full at any earlier reading.
  auto later = MakeBucket(kTwoPerSecond, kSec);
  EXPECT_EQ(later->Available(0), 2);
  EXPECT_TRUE(later->TryTake(2, 0).taken);
  EXPECT_EQ(later->Available(kSec), 0);
}

TEST(ExactBucketTest, WaitsRoundUpToTheNextWholeNanosecond) {
  // 3 per second: a permit every 333,333,333 1/3 ns. Capacity 2, so that a
  // fraction of a permit past the first is kept, not spilled.
  auto bucket = MakeBucket({.permits = 3, .period_ns = kSec, .capacity = 2});
  EXPECT_TRUE(bucket->TryTake(2, 0).taken);
  EXPECT_EQ(bucket->TryTake(1, 0).wait_ns, 333'333'334);
  EXPECT_EQ(bucket->NanosUntilFull(0), 666'666'667);
  const ExactBucket::TakeResult early = bucket->TryTake(1, 333'333'333);
  EXPECT_FALSE(early.taken);
  EXPECT_EQ(early.wait_ns, 1);
  EXPECT_TRUE(bucket->TryTake(1, 333'333'334).taken);
  // The 2/3 ns left over is kept: the next permit comes a third of a
  // nanosecond sooner, at exactly 666,666,666 2/3 ns.
  EXPECT_EQ(bucket->TryTake(1, 333'333'334).wait_ns, 333'333'333);
  EXPECT_FALSE(bucket->TryTake(1, 666'666'666).taken);
  EXPECT_TRUE(bucket->TryTake(1, 666'666'667).taken);
}

TEST(ExactBucketTest, ExtremesNeitherOverflowNorWrap) {
  constexpr uint64_t kBig = kMaxExactBucketParameter;
  auto bucket =
      MakeBucket({.permits = 1, .period_ns = static_cast<int64_t>(kBig), .capacity = kBig},
                 std::numeric_limits<int64_t>::min());
  EXPECT_EQ(bucket->Available(kMax), static_cast<int64_t>(kBig));
  // Each debit is 2^126 - 2^62 parts; three would pass the deepest debt kept
  // (-2^126 parts), and 128 bits, without saturation.
  constexpr uint64_t kAll = std::numeric_limits<uint64_t>::max();
  for (int i = 0; i < 3; ++i) bucket->Debit(kAll, kMax);
  EXPECT_EQ(bucket->Available(kMax), 0);
  EXPECT_EQ(bucket->NanosUntilFull(kMax), kMax);  // saturated
  EXPECT_EQ(bucket->TryTake(1, kMax).wait_ns, kMax);
  bucket->Refund(kAll, kMax);  // -2^126 + 2^126 - 2^62: still in debt
  EXPECT_EQ(bucket->Available(kMax), 0);
  bucket->Refund(kAll, kMax);  // past full: capped
  EXPECT_EQ(bucket->Available(kMax), static_cast<int64_t>(kBig));

  auto fast = MakeBucket({.permits = kBig, .period_ns = 1, .capacity = kBig},
                         std::numeric_limits<int64_t>::min());
  EXPECT_TRUE(fast->TryTake(kBig, std::numeric_limits<int64_t>::min()).taken);
  EXPECT_EQ(fast->Available(kMax), static_cast<int64_t>(kBig));  // 2^64 ns at 2^62/ns
}

TEST(ExactBucketTest, InvalidConfigsNameTheField) {
  const auto error = [](const ExactBucketConfig& config) {
    absl::StatusOr<std::unique_ptr<ExactBucket>> b = ExactBucket::Create(config, 0);
    EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(b.status().message());
  };
  EXPECT_THAT(error({.permits = 0, .period_ns = kSec, .capacity = 1}), HasSubstr("permits"));
  EXPECT_THAT(error({.permits = 1, .period_ns = 0, .capacity = 1}), HasSubstr("period_ns"));
  EXPECT_THAT(error({.permits = 1, .period_ns = -kSec, .capacity = 1}), HasSubstr("period_ns"));
  EXPECT_THAT(error({.permits = 1, .period_ns = kSec, .capacity = 0}), HasSubstr("capacity"));
  EXPECT_THAT(error({.permits = kMaxExactBucketParameter + 1, .period_ns = kSec, .capacity = 1}),
              HasSubstr("permits"));
  EXPECT_THAT(error({.permits = 1, .period_ns = kMax, .capacity = 1}), HasSubstr("period_ns"));
}

TEST(ExactBucketTest, ConcurrentTakersGetExactlyTheCapacity) {
  // One permit a day: nothing refills while the threads run.
  auto bucket = MakeBucket({.permits = 1, .period_ns = 86'400 * kSec, .capacity = 1000});
  std::vector<std::thread> threads;
  std::vector<int> taken(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) taken[t] += bucket->TryTake(1, i).taken;
    });
  }
  for (std::thread& t : threads) t.join();
  int total = 0;
  for (int n : taken) total += n;
  EXPECT_EQ(total, 1000);
}

// Cross-check against the cell ---------------------------------------------------------

// What one trace of the cross-check saw.
struct Tally {
  int64_t events = 0;            // takes, refunds and debits
  int64_t takes = 0;             // TryTake / TryAcquire pairs compared
  int64_t identical = 0;         // same decision from both
  int64_t granted = 0;           // granted by both
  int64_t cell_stricter = 0;     // the judge granted, the cell refused
  int64_t over_admits = 0;       // the cell granted, the judge refused: a cell bug
  int64_t other_mismatches = 0;  // waits or availability out of line
  std::string first_problem;

  void Add(const Tally& t) {
    events += t.events;
    takes += t.takes;
    identical += t.identical;
    granted += t.granted;
    cell_stricter += t.cell_stricter;
    over_admits += t.over_admits;
    other_mismatches += t.other_mismatches;
    if (first_problem.empty()) first_problem = t.first_problem;
  }
  void Problem(int64_t* counter, const std::string& what) {
    ++*counter;
    if (first_problem.empty()) first_problem = what;
  }
};

// Whether a rate's interval is a whole number of nanoseconds (a 64-bit
// count of nanoseconds would carry it exactly; 1 s / 7 it would not).
bool IntervalIsWholeNanos(const BucketConfig& config) {
  return absl::ToInt64Nanoseconds(config.rate.period()) % config.rate.permits() == 0;
}

ExactBucketConfig JudgeConfig(const BucketConfig& config) {
  return {.permits = config.rate.permits(),
          .period_ns = absl::ToInt64Nanoseconds(config.rate.period()),
          .capacity = config.capacity};
}

// The next time step: zero, within an interval, within the bucket's span,
// past it, or a few nanoseconds (where rounding shows).
int64_t NextStep(std::mt19937_64& rng, int64_t interval_ns, int64_t span_ns) {
  const auto upto = [&rng](int64_t max) {
    return 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(std::max<int64_t>(max, 1)));
  };
  const uint64_t twentieths = rng() % 20;
  if (twentieths < 5) return 0;
  if (twentieths < 6) return upto(10);
  if (twentieths < 13) return upto(2 * interval_ns);
  if (twentieths < 18) return upto(span_ns);
  return span_ns + upto(2 * span_ns);
}

// Runs `events` random operations on a cell configured `cell_config` and a
// judge configured `judge_config`, both full at the same start. When
// `identical` the two must agree on every decision, wait and available
// count; otherwise the cell may refuse what the judge grants (the judge then
// gives the permits back, so both stay on the same footing: the judge never
// holds less than the cell) but never the reverse.
Tally CrossCheck(const BucketConfig& cell_config, const ExactBucketConfig& judge_config,
                 bool identical, uint64_t seed, int events) {
  std::mt19937_64 rng(seed);
  // Somewhere in the first 1000 s of a monotonic clock, which counts from 0.
  const int64_t start = static_cast<int64_t>(rng() % (1000 * kSec));
  BucketCell cell;
  Tally tally;
  if (!BucketRef::Init(&cell, cell_config, start).ok()) {
    tally.Problem(&tally.other_mismatches, "the cell refused its config");
    return tally;
  }
  const BucketRef bucket(&cell, Clock::Monotonic());
  std::unique_ptr<ExactBucket> judge = MakeBucket(judge_config, start);
  const int64_t interval_ns =
      std::max<int64_t>(1, judge_config.period_ns / static_cast<int64_t>(judge_config.permits));
  const int64_t span_ns = std::max<int64_t>(1, interval_ns * judge_config.capacity);
  // 2^56 ns is 2.3 years.
  const int64_t end = start + (int64_t{1} << 56);
  struct Taken {
    uint64_t n;
    Terms terms;
  };
  std::vector<Taken> outstanding;  // granted by both, not yet refunded
  int64_t now = start;
  for (int i = 0; i < events; ++i, ++tally.events) {
    now = std::min(end, now + NextStep(rng, interval_ns, span_ns));
    const std::string at = absl::StrCat("seed ", seed, " event ", i, " at ", now - start, " ns: ");
    const uint64_t op = rng() % 16;
    if (op == 0 && !outstanding.empty()) {
      const Taken back = outstanding[rng() % outstanding.size()];
      bucket.Refund(back.n, back.terms, now);
      judge->Refund(back.n, now);
    } else if (op == 1 && judge->NanosUntilFull(now) < 4 * span_ns) {
      const uint64_t n = 1 + rng() % (judge_config.capacity + 1);
      bucket.Debit(n, now);
      judge->Debit(n, now);
    } else {
      const uint64_t n = 1 + rng() % (judge_config.capacity + 1);
      const Decision d = bucket.TryAcquire(n, now);
      const ExactBucket::TakeResult j = judge->TryTake(n, now);
      ++tally.takes;
      const bool cell_granted = d.granted();
      if (cell_granted == j.taken && (d.outcome == Outcome::kNeverFits) == j.never_fits) {
        ++tally.identical;
        if (cell_granted) {
          ++tally.granted;
          if (outstanding.size() < 64) outstanding.push_back({n, d.terms});
        }
      } else if (cell_granted) {
        tally.Problem(&tally.over_admits,
                      absl::StrCat(at, "the cell granted ", n, " that the judge refused"));
      } else if (identical || !j.taken) {
        tally.Problem(&tally.other_mismatches,
                      absl::StrCat(at, "decisions differ for ", n, " permits"));
      } else {
        ++tally.cell_stricter;
        judge->Refund(n, now);  // undo: the two stay comparable
      }
      if (!cell_granted && !j.taken && !j.never_fits &&
          (identical ? d.wait_ns != j.wait_ns : d.wait_ns < j.wait_ns)) {
        tally.Problem(&tally.other_mismatches, absl::StrCat(at, "cell wait ", d.wait_ns,
                                                            " ns, judge wait ", j.wait_ns, " ns"));
      }
    }
    const int64_t cell_available = bucket.Available(now);
    const int64_t judge_available = judge->Available(now);
    if (identical ? cell_available != judge_available : cell_available > judge_available) {
      tally.Problem(&tally.other_mismatches,
                    absl::StrCat(at, "cell holds ", cell_available, ", judge ", judge_available));
    }
  }
  return tally;
}

// A random valid config whose span is at most 2^47 ns (1.6 days), so that a
// trace of a thousand events stays inside the cell's range. Half the rates
// are "round" ones (60/min, 1000/h) whose intervals are mostly exact; the
// others are log-uniform, mostly inexact.
BucketConfig RandomConfig(std::mt19937_64& rng) {
  static constexpr absl::Duration kPeriods[] = {absl::Milliseconds(1), absl::Seconds(1),
                                                absl::Minutes(1), absl::Hours(1), absl::Hours(24)};
  static constexpr uint64_t kRoundPermits[] = {
      1,   2,   3,   4,    5,    6,    8,    10,    12,    16,     20, 50,     60,
      100, 250, 500, 1000, 1024, 3600, 4000, 10000, 50000, 100000, 7,  1000000};
  for (;;) {
    const absl::Duration period =
        rng() % 8 == 0 ? absl::Nanoseconds(1 + rng() % 1'000'000'000'000) : kPeriods[rng() % 5];
    const uint64_t permits = rng() % 2 == 0
                                 ? kRoundPermits[rng() % std::size(kRoundPermits)]
                                 : 1 + static_cast<uint64_t>(std::exp2((rng() % 2400) / 100.0));
    const uint64_t capacity = 1 + static_cast<uint64_t>(std::exp2((rng() % 1400) / 100.0));
    const BucketConfig config = {Rate(permits, period), capacity};
    const __int128 span_ns =
        __int128{absl::ToInt64Nanoseconds(period)} * capacity / static_cast<__int128>(permits);
    if (ValidateBucketConfig(config).ok() && span_ns <= (int64_t{1} << 47)) return config;
  }
}

TEST(ExactBucketCrossCheckTest, TheCellNeverGrantsWhatTheJudgeRefuses) {
  constexpr int kTraces = 240;
  constexpr int kEventsPerTrace = 1000;
  Tally whole, fractional;
  int whole_traces = 0, fractional_traces = 0;
  for (uint64_t seed = 1; seed <= kTraces; ++seed) {
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull);
    const BucketConfig config = RandomConfig(rng);
    const bool whole_ns = IntervalIsWholeNanos(config);
    const Tally t =
        CrossCheck(config, JudgeConfig(config), /*identical=*/true, seed, kEventsPerTrace);
    (whole_ns ? whole : fractional).Add(t);
    ++(whole_ns ? whole_traces : fractional_traces);
    ASSERT_EQ(t.over_admits + t.other_mismatches, 0)
        << config.rate.ToString() << " capacity " << config.capacity << ": " << t.first_problem;
  }
  // The counts the judge's design is checked with; printed for the record.
  std::printf(
      "cross-check: %lld events over %d traces\n"
      "  whole-ns intervals      (%d traces): %lld takes, %lld identical (%lld granted)\n"
      "  fractional-ns intervals (%d traces): %lld takes, %lld identical (%lld granted), "
      "%lld cell-stricter, %lld over-admits\n",
      static_cast<long long>(whole.events + fractional.events), kTraces, whole_traces,
      static_cast<long long>(whole.takes), static_cast<long long>(whole.identical),
      static_cast<long long>(whole.granted), fractional_traces,
      static_cast<long long>(fractional.takes), static_cast<long long>(fractional.identical),
      static_cast<long long>(fractional.granted), static_cast<long long>(fractional.cell_stricter),
      static_cast<long long>(fractional.over_admits));
  EXPECT_GE(whole.events + fractional.events, 100'000);
  // Both kinds of rate, and both answers, were well exercised.
  EXPECT_GE(whole_traces, kTraces / 5);
  EXPECT_GE(fractional_traces, kTraces / 5);
  EXPECT_EQ(whole.identical, whole.takes);
  EXPECT_EQ(fractional.identical, fractional.takes);
  for (const Tally* t : {&whole, &fractional}) {
    EXPECT_GE(t->granted, t->takes / 10);
    EXPECT_GE(t->takes - t->granted, t->takes / 10);
  }
}

// The cross-check can fail: a cell that refills an eighth too fast, or holds
// one permit too many, is caught on every trace (holding more than the judge,
// or promising a shorter wait), and is caught granting what the judge refuses.
TEST(ExactBucketCrossCheckTest, CatchesACellThatOverAdmits) {
  int64_t over_admits = 0;
  int wrong_cells = 0;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 rng(seed);
    const BucketConfig config = RandomConfig(rng);
    BucketConfig faster = config;
    faster.rate = Rate(config.rate.permits() + config.rate.permits() / 8 + 1, config.rate.period());
    BucketConfig larger = config;
    larger.capacity = config.capacity + 1;
    for (const BucketConfig& wrong : {faster, larger}) {
      if (!ValidateBucketConfig(wrong).ok()) continue;
      ++wrong_cells;
      const Tally t = CrossCheck(wrong, JudgeConfig(config), /*identical=*/false, seed, 1000);
      EXPECT_GT(t.over_admits + t.other_mismatches, 0)
          << "seed " << seed << ": a wrong cell " << wrong.rate.ToString() << " capacity "
          << wrong.capacity << " went unnoticed";
      over_admits += t.over_admits;
    }
  }
  EXPECT_GE(wrong_cells, 30);
  EXPECT_GT(over_admits, 0);
  std::printf("%d wrong cells, each caught; %lld over-admits among them\n", wrong_cells,
              static_cast<long long>(over_admits));
}

}  // namespace
}  // namespace sluice
