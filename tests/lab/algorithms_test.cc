// Each algorithm's defining property, on explicit (simulated) time, and the
// lock-free cells shared between two processes through a MAP_SHARED mapping.
#include "sluice/lab/algorithms.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/token_bucket.h"
#include "sluice/window_counter.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kMin = 60 * kSec;

// Pacer ------------------------------------------------------------------------

TEST(PacerTest, AdmitsOneIntervalApartAndNeverBursts) {
  PacerCell cell;
  const auto pacer = PacerRef::Create(&cell, {.rate = Rate::PerSecond(10)});
  ASSERT_TRUE(pacer.ok()) << pacer.status();
  EXPECT_EQ(pacer->IntervalNanos(), 100 * kMs);
  EXPECT_TRUE(pacer->TryAcquire(1, 0).granted());
  const Decision early = pacer->TryAcquire(1, 40 * kMs);
  EXPECT_EQ(early.outcome, Outcome::kRefused);
  EXPECT_EQ(early.wait_ns, 60 * kMs);
  EXPECT_TRUE(pacer->TryAcquire(1, 100 * kMs).granted());
  // Idle for ten seconds earns no burst: the next admission is one at a time.
  EXPECT_TRUE(pacer->TryAcquire(1, 10 * kSec).granted());
  EXPECT_EQ(pacer->TryAcquire(1, 10 * kSec + 1).wait_ns, 100 * kMs - 1);
  // n permits hold the next admission for n intervals.
  EXPECT_TRUE(pacer->TryAcquire(3, 11 * kSec).granted());
  EXPECT_EQ(pacer->TryAcquire(1, 11 * kSec).wait_ns, 300 * kMs);
}

TEST(PacerTest, CallersRetryingAtTheirWaitAreEvenlySpaced) {
  PacerCell cell;
  const auto pacer = PacerRef::Create(&cell, {.rate = Rate::PerMinute(7)});
  ASSERT_TRUE(pacer.ok());
  // Eight callers arrive together; each retries exactly when told.
  std::vector<int64_t> admitted;
  std::deque<int64_t> retry_at(8, 5 * kSec);
  while (!retry_at.empty()) {
    const int64_t now = retry_at.front();
    retry_at.pop_front();
    const Decision d = pacer->TryAcquire(1, now);
    if (d.granted()) {
      admitted.push_back(now);
    } else {
      retry_at.push_back(now + d.wait_ns);
    }
  }
  ASSERT_EQ(admitted.size(), 8u);
  // 60 s / 7 rounds up to whole 1/16 ns: gaps are 8,571,428,571.4375 ns,
  // read as whole ns by the callers: 8,571,428,572 (the ceiling) each.
  for (size_t i = 1; i < admitted.size(); ++i) {
    EXPECT_EQ(admitted[i] - admitted[i - 1], 8'571'428'572) << i;
  }
}

TEST(PacerTest, StaleTimeNeverRewindsAndHugeRequestsNeverFit) {
  PacerCell cell;
  const auto pacer = PacerRef::Create(&cell, {.rate = Rate::PerSecond(1), .epoch_ns = kSec});
  ASSERT_TRUE(pacer.ok());
  EXPECT_TRUE(pacer->TryAcquire(1, 5 * kSec).granted());
  EXPECT_EQ(pacer->TryAcquire(1, 2 * kSec).outcome, Outcome::kRefused);
  EXPECT_EQ(pacer->TryAcquire(1, 6 * kSec - 1).wait_ns, 1);
  EXPECT_EQ(pacer->TryAcquire(uint64_t{1} << 40, 7 * kSec).outcome, Outcome::kNeverFits);
  EXPECT_TRUE(pacer->TryAcquire(1, 6 * kSec).granted());
}

TEST(PacerTest, BadRateIsAClearError) {
  PacerCell cell;
  const auto bad = PacerRef::Create(&cell, {.rate = Rate(0, absl::Seconds(1))});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("permits must be >= 1"));
}

// Fixed window -----------------------------------------------------------------

TEST(FixedWindowTest, AtMostTheLimitInEachWindow) {
  WindowCounterCell cell;
  const auto window = FixedWindowRef::Create(&cell, {.limit = 100, .window = absl::Minutes(1)});
  ASSERT_TRUE(window.ok()) << window.status();
  int granted = 0;
  for (int i = 0; i < 250; ++i) granted += window->TryAcquire(1, 10 * kSec + i * kMs).granted();
  EXPECT_EQ(granted, 100);
  const Decision refused = window->TryAcquire(1, 30 * kSec);
  EXPECT_EQ(refused.outcome, Outcome::kRefused);
  EXPECT_EQ(refused.wait_ns, 30 * kSec);  // until the next window
  EXPECT_EQ(window->Used(30 * kSec), 100);
  EXPECT_TRUE(window->TryAcquire(100, kMin).granted());  // a fresh window
  EXPECT_EQ(window->TryAcquire(101, 3 * kMin).outcome, Outcome::kNeverFits);
}

TEST(FixedWindowTest, LetsTwiceTheLimitThroughAcrossABoundary) {
  WindowCounterCell cell;
  const auto window = FixedWindowRef::Create(&cell, {.limit = 1000, .window = absl::Minutes(1)});
  ASSERT_TRUE(window.ok());
  // 1000 in the last millisecond of a minute, 1000 in the first of the next:
  // 2000 admitted within 2 ms against a limit of 1000 per minute.
  int granted = 0;
  for (int i = 0; i < 1000; ++i) granted += window->TryAcquire(1, kMin - kMs + i * 1000).granted();
  for (int i = 0; i < 1000; ++i) granted += window->TryAcquire(1, kMin + i * 1000).granted();
  EXPECT_EQ(granted, 2000);
}

TEST(FixedWindowTest, WindowsCountFromTheEpoch) {
  WindowCounterCell cell;
  const auto window = FixedWindowRef::Create(
      &cell, {.limit = 1, .window = absl::Seconds(10), .epoch_ns = 3 * kSec});
  ASSERT_TRUE(window.ok());
  EXPECT_EQ(window->WindowOf(12 * kSec), 0);
  EXPECT_EQ(window->WindowOf(13 * kSec), 1);
  EXPECT_TRUE(window->TryAcquire(1, 12 * kSec).granted());
  EXPECT_EQ(window->TryAcquire(1, 12 * kSec).wait_ns, kSec);
  EXPECT_TRUE(window->TryAcquire(1, 13 * kSec).granted());
}

TEST(FixedWindowTest, BadConfigIsAClearError) {
  WindowCounterCell cell;
  EXPECT_THAT(FixedWindowRef::Create(&cell, {.limit = 0}).status().message(),
              HasSubstr("limit 0 must be from 1"));
  EXPECT_THAT(FixedWindowRef::Create(&cell, {.limit = 5, .window = absl::ZeroDuration()})
                  .status()
                  .message(),
              HasSubstr("window 0 must be positive"));
}

// Sliding window counter -------------------------------------------------------

TEST(SlidingWindowTest, WeighsThePreviousWindowByWhatStillOverlaps) {
  SlidingWindowCell cell;
  const auto sliding = SlidingWindowRef::Create(&cell, {.limit = 100, .window = absl::Minutes(1)});
  ASSERT_TRUE(sliding.ok()) << sliding.status();
  ASSERT_TRUE(sliding->TryAcquire(80, 10 * kSec).granted());
  // 15 s into the next window, 45/60 of the previous one still overlaps:
  // estimate = ceil(80 * 45 / 60) = 60, so 40 more fit and the 41st does not.
  EXPECT_EQ(sliding->Estimate(75 * kSec), 60);
  EXPECT_TRUE(sliding->TryAcquire(40, 75 * kSec).granted());
  const Decision refused = sliding->TryAcquire(1, 75 * kSec);
  ASSERT_EQ(refused.outcome, Outcome::kRefused);
  // Room for one more once 80 * (60 s - e) / 60 s <= 59: e >= 15.75 s.
  EXPECT_EQ(refused.wait_ns, 750 * kMs);
  EXPECT_FALSE(sliding->TryAcquire(1, 75 * kSec + 750 * kMs - 1).granted());
  EXPECT_TRUE(sliding->TryAcquire(1, 75 * kSec + 750 * kMs).granted());
}

TEST(SlidingWindowTest, WaitsIntoTheNextWindowWhenThisOneIsFull) {
  SlidingWindowCell cell;
  const auto sliding = SlidingWindowRef::Create(&cell, {.limit = 10, .window = absl::Seconds(10)});
  ASSERT_TRUE(sliding.ok());
  ASSERT_TRUE(sliding->TryAcquire(10, 2 * kSec).granted());
  // Full: in the next window the 10 weigh 10 * (10 s - e) / 10 s <= 9 once
  // e >= 1 s, so the wait runs to 11 s.
  const Decision refused = sliding->TryAcquire(1, 4 * kSec);
  EXPECT_EQ(refused.wait_ns, 7 * kSec);
  EXPECT_FALSE(sliding->TryAcquire(1, 11 * kSec - 1).granted());
  EXPECT_TRUE(sliding->TryAcquire(1, 11 * kSec).granted());
  // Two windows later nothing is remembered.
  EXPECT_EQ(sliding->Estimate(30 * kSec), 0);
}

TEST(SlidingWindowTest, StopsTheFixedWindowBoundaryBurstButIsOnlyAnEstimate) {
  SlidingWindowCell cell;
  const auto sliding = SlidingWindowRef::Create(&cell, {.limit = 100, .window = absl::Minutes(1)});
  ASSERT_TRUE(sliding.ok());
  int granted = 0;
  for (int i = 0; i < 100; ++i) granted += sliding->TryAcquire(1, kMin - kMs + i).granted();
  for (int i = 0; i < 100; ++i) granted += sliding->TryAcquire(1, kMin + i).granted();
  EXPECT_EQ(granted, 100);  // the boundary burst is refused
  // But the estimate assumes the previous window's 100 were spread evenly:
  // they came in its last millisecond, so 30 s later it counts only 50 of
  // them, and admits 50 more while the exact count of the last minute is 100.
  EXPECT_EQ(sliding->Estimate(kMin + 30 * kSec), 50);
  granted = 0;
  for (int i = 0; i < 100; ++i) granted += sliding->TryAcquire(1, kMin + 30 * kSec).granted();
  EXPECT_EQ(granted, 50);  // 150 within one minute (59.999 s .. 90 s)
}

TEST(SlidingWindowTest, StaleTimeIsStricter) {
  SlidingWindowCell cell;
  const auto sliding = SlidingWindowRef::Create(&cell, {.limit = 10, .window = absl::Seconds(10)});
  ASSERT_TRUE(sliding.ok());
  ASSERT_TRUE(sliding->TryAcquire(10, 5 * kSec).granted());
  ASSERT_TRUE(sliding->TryAcquire(1, 19 * kSec).granted());  // window 1: prev 10 weighs 1
  // A caller still in window 0 counts against window 1 at its start, where
  // the previous window weighs fully: refused.
  EXPECT_FALSE(sliding->TryAcquire(1, 9 * kSec).granted());
  EXPECT_EQ(sliding->Estimate(19 * kSec), 2);
}

TEST(SlidingWindowTest, BadConfigIsAClearError) {
  SlidingWindowCell cell;
  EXPECT_THAT(SlidingWindowRef::Create(&cell, {.limit = SlidingWindowRef::kMaxLimit + 1})
                  .status()
                  .message(),
              HasSubstr("must be from 1 to 4194303"));
}

// Sliding log ------------------------------------------------------------------

TEST(SlidingLogTest, IsExact) {
  auto log = SlidingLog::Create({.limit = 3, .window = absl::Seconds(10)});
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_TRUE((*log)->TryAcquire(1, 0).granted());
  EXPECT_TRUE((*log)->TryAcquire(1, 1 * kSec).granted());
  EXPECT_TRUE((*log)->TryAcquire(1, 2 * kSec).granted());
  const Decision refused = (*log)->TryAcquire(2, 5 * kSec);
  EXPECT_EQ(refused.outcome, Outcome::kRefused);
  EXPECT_EQ(refused.wait_ns, 6 * kSec);  // two must expire: the one at 1 s, at 11 s
  EXPECT_FALSE((*log)->TryAcquire(1, 10 * kSec - 1).granted());
  EXPECT_TRUE((*log)->TryAcquire(1, 10 * kSec).granted());  // the one at 0 s left
  EXPECT_EQ((*log)->InWindow(10 * kSec), 3u);
  EXPECT_EQ((*log)->TryAcquire(4, 100 * kSec).outcome, Outcome::kNeverFits);
}

// Against a brute-force count over a random trace: admits exactly when the
// last `window` holds at most limit - n, across many ring wrap-arounds.
TEST(SlidingLogTest, AgreesWithABruteForceCount) {
  constexpr uint64_t kLimit = 17;
  constexpr int64_t kWindow = 1000;
  auto log = SlidingLog::Create({.limit = kLimit, .window = absl::Nanoseconds(kWindow)});
  ASSERT_TRUE(log.ok());
  std::mt19937_64 rng(7);
  std::vector<std::pair<int64_t, uint64_t>> admitted;
  int64_t now = 0;
  for (int i = 0; i < 20'000; ++i) {
    now += static_cast<int64_t>(rng() % 90);
    const uint64_t n = 1 + rng() % 3;
    uint64_t in_window = 0;
    for (const auto& [t, k] : admitted) in_window += now - t < kWindow ? k : 0;
    const Decision d = (*log)->TryAcquire(n, now);
    ASSERT_EQ(d.granted(), in_window + n <= kLimit) << "at " << now;
    if (d.granted()) admitted.emplace_back(now, n);
    if (admitted.size() > 64) admitted.erase(admitted.begin());
  }
}

// Concurrency --------------------------------------------------------------------

TEST(ConcurrencyTest, NeverMoreInFlightThanTheMaximum) {
  auto limiter = Limiter::Create(
      {.algorithm = Algorithm::kConcurrency, .rate = Rate::PerSecond(1), .max_in_flight = 3}, 0);
  ASSERT_TRUE(limiter.ok()) << limiter.status();
  std::vector<Admission> held;
  for (int i = 0; i < 3; ++i) held.push_back((*limiter)->TryAcquire(1, 0));
  for (const Admission& a : held) ASSERT_TRUE(a.granted());
  const Admission refused = (*limiter)->TryAcquire(1, 0);
  EXPECT_EQ(refused.outcome, Outcome::kRefused);
  EXPECT_EQ(refused.wait_ns, kWaitForRelease);  // only a release makes room
  (*limiter)->Release(held[1], 0);
  EXPECT_TRUE((*limiter)->TryAcquire(1, 0).granted());
  EXPECT_FALSE((*limiter)->TryAcquire(1, 0).granted());
}

TEST(ConcurrencyTest, ThreadsNeverExceedTheMaximum) {
  constexpr int kMax = 3;
  auto limiter = Limiter::Create(
      {.algorithm = Algorithm::kConcurrency, .rate = Rate::PerSecond(1), .max_in_flight = kMax}, 0);
  ASSERT_TRUE(limiter.ok());
  std::atomic<int> in_flight{0};
  std::atomic<int> most{0};
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5'000; ++i) {
        const Admission a = (*limiter)->TryAcquire(1, 0);
        if (!a.granted()) continue;
        const int now = in_flight.fetch_add(1) + 1;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        admitted.fetch_add(1);
        in_flight.fetch_sub(1);
        (*limiter)->Release(a, 0);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(most.load(), kMax);
  EXPECT_GT(admitted.load(), 0);
  EXPECT_TRUE((*limiter)->TryAcquire(1, 0).granted());  // every lease came back
}

// Adaptive -------------------------------------------------------------------------

AdaptiveConfig AdaptiveAt600() {
  return {.initial = Rate::PerMinute(600),
          .burst = 1,
          .min_permits = 10,
          .max_permits = 900,
          .increase_permits = 60,
          .decrease_permille = 500,
          .cooldown = absl::Seconds(1)};
}

TEST(AdaptiveTest, HalvesOnA429OncePerCooldownAndEmptiesItsBucket) {
  AdaptiveCell cell;
  const auto adaptive = AdaptiveRef::Create(&cell, AdaptiveAt600());
  ASSERT_TRUE(adaptive.ok()) << adaptive.status();
  EXPECT_EQ(adaptive->RateMilli(), 600'000);
  EXPECT_TRUE(adaptive->TryAcquire(1, 10 * kSec).granted());
  EXPECT_EQ(adaptive->TryAcquire(1, 10 * kSec).wait_ns, 100 * kMs);  // 600/min

  EXPECT_TRUE(adaptive->OnRateLimited(10 * kSec));
  EXPECT_EQ(adaptive->RateMilli(), 300'000);
  EXPECT_FALSE(adaptive->OnRateLimited(10 * kSec + 500 * kMs));  // the same round trip
  EXPECT_EQ(adaptive->RateMilli(), 300'000);
  // Empty at the new rate: the next permit is one 300/min interval away.
  EXPECT_EQ(adaptive->TryAcquire(1, 10 * kSec).wait_ns, 200 * kMs);
  EXPECT_TRUE(adaptive->TryAcquire(1, 10 * kSec + 200 * kMs).granted());

  EXPECT_TRUE(adaptive->OnRateLimited(11 * kSec));
  EXPECT_EQ(adaptive->RateMilli(), 150'000);
  for (int64_t t = 12; t < 30; t += 2) adaptive->OnRateLimited(t * kSec);
  EXPECT_EQ(adaptive->RateMilli(), 10'000);  // never below min_permits
}

TEST(AdaptiveTest, RecoversAdditivelyUpToItsMaximum) {
  AdaptiveCell cell;
  const auto adaptive = AdaptiveRef::Create(&cell, AdaptiveAt600());
  ASSERT_TRUE(adaptive.ok());
  ASSERT_TRUE(adaptive->OnRateLimited(0));
  ASSERT_EQ(adaptive->RateMilli(), 300'000);
  // Each success adds 60 / rate permits per minute, so a minute's worth of
  // successes (about 300 at 300/min) adds about 60/min.
  for (int i = 0; i < 300; ++i) adaptive->OnSuccess();
  EXPECT_GE(adaptive->RateMilli(), 354'000);
  EXPECT_LE(adaptive->RateMilli(), 360'000);
  // Back to where it started: (600^2 - 300^2) / (2 * 60) = 2250 successes,
  // plus what flooring each step to a whole thousandth loses: under 1 of at
  // least 100 thousandths a step, so under 1% more.
  int successes = 300;
  while (adaptive->RateMilli() < 600'000) {
    adaptive->OnSuccess();
    ++successes;
  }
  EXPECT_GE(successes, 2250);
  EXPECT_LE(successes, 2273);
  for (int i = 0; i < 10'000; ++i) adaptive->OnSuccess();
  EXPECT_EQ(adaptive->RateMilli(), 900'000);
  EXPECT_EQ(adaptive->TryAcquire(2, 0).outcome, Outcome::kNeverFits);  // burst 1
}

TEST(AdaptiveTest, BadConfigIsAClearError) {
  AdaptiveCell cell;
  AdaptiveConfig config = AdaptiveAt600();
  config.decrease_permille = 1000;
  EXPECT_THAT(AdaptiveRef::Create(&cell, config).status().message(),
              HasSubstr("decrease_permille 1000 must be from 1 to 999"));
  config = AdaptiveAt600();
  config.min_permits = 700;
  EXPECT_THAT(AdaptiveRef::Create(&cell, config).status().message(),
              HasSubstr("outside min_permits 700"));
  config = AdaptiveAt600();
  config.burst = 0;
  EXPECT_THAT(AdaptiveRef::Create(&cell, config).status().message(), HasSubstr("burst"));
}

// The Limiter interface -------------------------------------------------------------

TEST(LimiterTest, EveryAlgorithmHoldsTheLimitOnABurst) {
  for (Algorithm a : kAllAlgorithms) {
    SCOPED_TRACE(AlgorithmName(a));
    auto limiter = Limiter::Create(
        {.algorithm = a, .rate = Rate::PerMinute(60), .burst = 5, .max_in_flight = 4}, 0);
    ASSERT_TRUE(limiter.ok()) << limiter.status();
    EXPECT_EQ((*limiter)->algorithm(), a);
    int granted = 0;
    for (int i = 0; i < 100; ++i) granted += (*limiter)->TryAcquire(1, kSec).granted();
    const int expected[] = {5, 1, 60, 60, 60, 4, 1};  // in kAllAlgorithms order
    EXPECT_EQ(granted, expected[static_cast<int>(a)]);
  }
}

TEST(LimiterTest, NamesRoundTripAndBadInputIsAClearError) {
  for (Algorithm a : kAllAlgorithms) {
    EXPECT_EQ(*ParseAlgorithm(AlgorithmName(a)), a);
  }
  const auto unknown = ParseAlgorithm("leaky");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(),
              HasSubstr("unknown algorithm 'leaky'; algorithms are token-bucket, pacer, "
                        "fixed-window, sliding-log, sliding-window, concurrency, adaptive"));
  const auto zero = Limiter::Create({.rate = Rate(0, absl::Minutes(1))}, 0);
  EXPECT_THAT(zero.status().message(), HasSubstr("permits must be >= 1"));
  const auto negative = Limiter::Create(
      {.algorithm = Algorithm::kFixedWindow, .rate = Rate(5, absl::Seconds(-1))}, 0);
  EXPECT_THAT(negative.status().message(), HasSubstr("period must be positive"));
  const auto no_slots =
      Limiter::Create({.algorithm = Algorithm::kConcurrency, .max_in_flight = 0}, 0);
  EXPECT_THAT(no_slots.status().message(), HasSubstr("max_in_flight must be >= 1"));
}

// Shared memory ----------------------------------------------------------------------

// The lock-free cells in one MAP_SHARED mapping, raced by a forked child and
// its parent at the same instant: together they admit exactly the limit.
struct SharedCells {
  BucketCell bucket;
  PacerCell pacer;
  WindowCounterCell fixed;
  SlidingWindowCell sliding;
  AdaptiveCell adaptive;
  std::atomic<uint64_t> leases[4];
  std::atomic<uint32_t> lease_generation;
  std::atomic<int> ready;
  std::atomic<int> child_granted[6];
};

TEST(SharedMemoryTest, CellsInAMappingSharedAcrossForkNeverOverAdmit) {
  void* mem =
      mmap(nullptr, sizeof(SharedCells), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* cells = new (mem) SharedCells();  // zero-filled: every cell is fresh
  constexpr int64_t kNow = 42 * kSec;
  ASSERT_TRUE(BucketRef::Init(&cells->bucket, {Rate::PerMinute(500), 500}, kNow).ok());

  // Each process builds its Refs from the same configuration.
  struct Refs {
    BucketRef bucket;
    PacerRef pacer;
    FixedWindowRef fixed;
    SlidingWindowRef sliding;
    AdaptiveRef adaptive;
    LeaseSetRef leases;
  };
  auto make_refs = [cells] {
    AdaptiveConfig adaptive = AdaptiveAt600();
    adaptive.burst = 300;
    return Refs{BucketRef(&cells->bucket, Clock::Monotonic()),
                *PacerRef::Create(&cells->pacer, {.rate = Rate::PerMinute(500)}),
                *FixedWindowRef::Create(&cells->fixed, {.limit = 500}),
                *SlidingWindowRef::Create(&cells->sliding, {.limit = 500}),
                *AdaptiveRef::Create(&cells->adaptive, adaptive),
                LeaseSetRef(cells->leases, 4, &cells->lease_generation)};
  };
  // 1000 attempts on each cell; leases are kept (never released).
  auto race = [](const Refs& r, uint64_t tag, int granted[6]) {
    for (int i = 0; i < 1000; ++i) {
      granted[0] += r.bucket.TryAcquire(1, kNow).granted();
      granted[1] += r.pacer.TryAcquire(1, kNow).granted();
      granted[2] += r.fixed.TryAcquire(1, kNow).granted();
      granted[3] += r.sliding.TryAcquire(1, kNow).granted();
      granted[4] += r.adaptive.TryAcquire(1, kNow).granted();
      granted[5] += r.leases.TryAcquire(tag, static_cast<uint32_t>(i)) >= 0;
    }
  };

  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const Refs refs = make_refs();
    cells->ready.fetch_add(1);
    while (cells->ready.load() < 2) {
    }
    int granted[6] = {};
    race(refs, 2, granted);
    for (int i = 0; i < 6; ++i) cells->child_granted[i].store(granted[i]);
    _exit(0);
  }
  const Refs refs = make_refs();
  cells->ready.fetch_add(1);
  while (cells->ready.load() < 2) {
  }
  int granted[6] = {};
  race(refs, 1, granted);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  const int limits[6] = {500, 1, 500, 500, 300, 4};
  const char* names[6] = {"token bucket",   "pacer",    "fixed window",
                          "sliding window", "adaptive", "leases"};
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(granted[i] + cells->child_granted[i].load(), limits[i]) << names[i];
  }
  EXPECT_EQ(refs.leases.InFlight(), 4u);
  munmap(mem, sizeof(SharedCells));
}

}  // namespace
}  // namespace sluice
