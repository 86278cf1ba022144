// Per-thread permit caches on the fake clock: batches are real debits, so
// threads never over-admit (judged by counting, independently of the cell);
// cached-but-unused permits stay within (batch - 1) x threads; idle caches,
// exiting threads and a destroyed cache give their permits back, at the terms
// they were taken at. Threaded tests also run under ThreadSanitizer.
#include "sluice/permit_cache.h"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstdint>
#include <latch>
#include <limits>
#include <memory>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "sluice/token_bucket.h"

namespace sluice {
namespace {

constexpr int64_t kMs = 1'000'000;

struct Rig {
  explicit Rig(BucketConfig config, PermitCacheOptions options = {}) : clock(1'000 * kMs) {
    bucket = *TokenBucket::Create(config, Clock::Fake(&clock));
    cache = *PermitCache::Create(bucket->ref(), options);
  }
  FakeClock clock;
  std::unique_ptr<TokenBucket> bucket;
  std::unique_ptr<PermitCache> cache;
};

// A bucket that does not refill during a test: one permit an hour.
const BucketConfig kStill{Rate::PerHour(1), 1000};

TEST(PermitCacheTest, CreateRejectsBadOptions) {
  auto bucket = *TokenBucket::Create({Rate::PerSecond(10), 100});
  EXPECT_FALSE(PermitCache::Create(bucket->ref(), {.batch = 0}).ok());
  EXPECT_FALSE(PermitCache::Create(bucket->ref(), {.batch = 101}).ok());
  EXPECT_TRUE(PermitCache::Create(bucket->ref(), {.batch = 100}).ok());
  EXPECT_FALSE(PermitCache::Create(bucket->ref(), {.idle = absl::Milliseconds(-1)}).ok());
  EXPECT_FALSE(PermitCache::Create(bucket->ref(),
                                   {.sweep_period = absl::ZeroDuration(), .sweep_thread = true})
                   .ok());
  EXPECT_TRUE(PermitCache::Create(bucket->ref(), {.batch = 10, .max_batch = 100}).ok());
  EXPECT_TRUE(PermitCache::Create(bucket->ref(), {.batch = 10, .max_batch = 10}).ok());
  EXPECT_FALSE(PermitCache::Create(bucket->ref(), {.batch = 10, .max_batch = 101}).ok());
  EXPECT_FALSE(PermitCache::Create(bucket->ref(), {.batch = 10, .max_batch = 9}).ok());
  // Growth is timed by `idle`: none means batches could never grow.
  EXPECT_FALSE(PermitCache::Create(bucket->ref(),
                                   {.batch = 10, .max_batch = 20, .idle = absl::ZeroDuration()})
                   .ok());
}

// Admits one permit at a time until this thread takes its next batch, and
// returns the batch's size (what the bucket lost), with `spacing_ns` of fake
// time before each admit.
int64_t AdmitUntilRefill(Rig& rig, int64_t spacing_ns = 0) {
  for (;;) {
    rig.clock.Advance(spacing_ns);
    const int64_t before = rig.bucket->Available();
    const uint64_t cached = rig.cache->Cached();
    EXPECT_TRUE(rig.cache->TryAcquire(1).granted());
    if (rig.cache->Cached() != cached - 1) {
      const int64_t size = before - rig.bucket->Available();
      EXPECT_EQ(rig.cache->Cached(), cached + static_cast<uint64_t>(size) - 1);
      return size;
    }
  }
}

TEST(PermitCacheTest, BatchesDoubleWhileEachIsUsedUpWithinIdle) {
  Rig rig({Rate::PerHour(1), 10'000}, {.batch = 8, .max_batch = 64});
  for (const int64_t size : {8, 16, 32, 64, 64, 64}) EXPECT_EQ(AdmitUntilRefill(rig), size);
  EXPECT_EQ(rig.cache->Cached(), 63u);
}

TEST(PermitCacheTest, FixedBatchesNeverGrow) {
  Rig rig({Rate::PerHour(1), 10'000}, {.batch = 8});
  for (int i = 0; i < 6; ++i) EXPECT_EQ(AdmitUntilRefill(rig), 8);
}

TEST(PermitCacheTest, ABatchThatLastsIdleOrLongerHalvesTheNext) {
  Rig rig({Rate::PerHour(1), 10'000},
          {.batch = 8, .max_batch = 64, .idle = absl::Milliseconds(10), .sweep_period = {}});
  for (const int64_t size : {8, 16, 32, 64}) EXPECT_EQ(AdmitUntilRefill(rig), size);
  // Admits 2 ms apart: batches of 64, 32, 16 and 8 last 128 to 16 ms. (A
  // batch of 4 would last 8 ms, but batches never shrink below 8.)
  for (const int64_t size : {32, 16, 8, 8}) EXPECT_EQ(AdmitUntilRefill(rig, 2 * kMs), size);
  // Quick again: growing again.
  for (const int64_t size : {16, 32}) EXPECT_EQ(AdmitUntilRefill(rig), size);
}

TEST(PermitCacheTest, BatchesAreTimedOnTheCallersClock) {
  Rig rig({Rate::PerHour(1), 10'000}, {.batch = 8, .max_batch = 64, .sweep_period = {}});
  const int64_t t0 = rig.clock.Now();
  ASSERT_TRUE(rig.cache->TryAcquire(1, t0).granted());  // a batch of 8 at t0
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(rig.cache->TryAcquire(1, t0).granted());
  // The fake clock stands still; the caller's says an hour went by.
  ASSERT_TRUE(rig.cache->TryAcquire(1, t0 + 3'600'000 * kMs).granted());
  EXPECT_EQ(rig.bucket->Available(), 10'000 - 16);  // 8, not doubled
  // Readings 400 years apart (the difference overflows 64 bits) time a
  // batch as well as any: the next is taken after it is used up.
  constexpr int64_t kCentury = int64_t{100} * 365 * 24 * 3'600'000 * kMs;
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(rig.cache->TryAcquire(1, 2 * kCentury).granted());
  ASSERT_TRUE(rig.cache->TryAcquire(1, 2 * kCentury).granted());
  EXPECT_EQ(rig.cache->Cached(), 7u);
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(rig.cache->TryAcquire(1, -2 * kCentury).granted());
  const Decision d = rig.cache->TryAcquire(1, -2 * kCentury);
  EXPECT_EQ(rig.cache->Cached(), d.granted() ? 15u : 0u);
}

TEST(PermitCacheTest, ASweptCacheStartsOverAtTheSmallestBatch) {
  Rig rig({Rate::PerHour(1), 10'000},
          {.batch = 8, .max_batch = 64, .idle = absl::Milliseconds(10), .sweep_period = {}});
  for (const int64_t size : {8, 16, 32}) EXPECT_EQ(AdmitUntilRefill(rig), size);
  const int64_t now = rig.clock.Now();
  EXPECT_EQ(rig.cache->Sweep(now), 0u);  // touched: marked
  EXPECT_EQ(rig.cache->Sweep(now + 10 * kMs), 31u);
  EXPECT_EQ(AdmitUntilRefill(rig), 8);
}

TEST(PermitCacheTest, ARefusedBatchStartsOverAtTheSmallest) {
  Rig rig({Rate::PerHour(1), 100}, {.batch = 8, .max_batch = 64});
  for (const int64_t size : {8, 16, 32}) EXPECT_EQ(AdmitUntilRefill(rig), size);
  EXPECT_EQ(rig.bucket->Available(), 44);
  for (int i = 0; i < 31; ++i) ASSERT_TRUE(rig.cache->TryAcquire(1).granted());
  // A batch of 64 > 44: the request alone, as without a cache.
  ASSERT_TRUE(rig.cache->TryAcquire(1).granted());
  EXPECT_EQ(rig.bucket->Available(), 43);
  EXPECT_EQ(rig.cache->Cached(), 0u);
  EXPECT_EQ(AdmitUntilRefill(rig), 8);
}

TEST(PermitCacheTest, OneBatchFromTheWordThenAdmitsFromTheCache) {
  Rig rig(kStill);
  ASSERT_TRUE(rig.cache->TryAcquire(1).granted());
  EXPECT_EQ(rig.bucket->Available(), 1000 - 64);
  EXPECT_EQ(rig.cache->Cached(), 63u);
  for (int i = 0; i < 63; ++i) ASSERT_TRUE(rig.cache->TryAcquire(1).granted());
  // All 64 admits wrote the word once.
  EXPECT_EQ(rig.bucket->Available(), 1000 - 64);
  EXPECT_EQ(rig.cache->Cached(), 0u);
  ASSERT_TRUE(rig.cache->TryAcquire(1).granted());
  EXPECT_EQ(rig.bucket->Available(), 1000 - 128);
  EXPECT_EQ(rig.cache->Cached(), 63u);
}

TEST(PermitCacheTest, RequestsOfSeveralPermits) {
  Rig rig(kStill);
  ASSERT_TRUE(rig.cache->TryAcquire(1).granted());   // batch: 63 cached
  ASSERT_TRUE(rig.cache->TryAcquire(60).granted());  // from the cache
  EXPECT_EQ(rig.bucket->Available(), 1000 - 64);
  EXPECT_EQ(rig.cache->Cached(), 3u);
  // 5 > 3 held: a new batch, admitted from it together with the 3.
  ASSERT_TRUE(rig.cache->TryAcquire(5).granted());
  EXPECT_EQ(rig.bucket->Available(), 1000 - 128);
  EXPECT_EQ(rig.cache->Cached(), 3u + 64 - 5);
}

TEST(PermitCacheTest, RequestsOfABatchOrMoreGoToTheWord) {
  Rig rig(kStill);
  ASSERT_TRUE(rig.cache->TryAcquire(100).granted());
  EXPECT_EQ(rig.bucket->Available(), 900);
  ASSERT_TRUE(rig.cache->TryAcquire(64).granted());
  EXPECT_EQ(rig.bucket->Available(), 836);
  EXPECT_EQ(rig.cache->Cached(), 0u);
  EXPECT_EQ(rig.cache->TryAcquire(1001).outcome, Outcome::kNeverFits);
}

TEST(PermitCacheTest, AThinBucketIsNotHoarded) {
  // 100 permits, batches of 64: after one batch, 36 remain, fewer than a
  // batch, so later requests take them one at a time until refused.
  Rig rig({Rate::PerSecond(1), 100});
  for (int i = 0; i < 64; ++i) ASSERT_TRUE(rig.cache->TryAcquire(1).granted());
  EXPECT_EQ(rig.bucket->Available(), 36);
  ASSERT_TRUE(rig.cache->TryAcquire(1).granted());
  EXPECT_EQ(rig.bucket->Available(), 35);
  EXPECT_EQ(rig.cache->Cached(), 0u);
  for (int i = 0; i < 35; ++i) ASSERT_TRUE(rig.cache->TryAcquire(1).granted());
  const Decision refused = rig.cache->TryAcquire(1);
  EXPECT_EQ(refused.outcome, Outcome::kRefused);
  EXPECT_EQ(refused.wait_ns, 1'000 * kMs);  // one permit at 1/s
  EXPECT_EQ(rig.bucket->Available(), 0);
}

TEST(PermitCacheTest, TheCallersNowIsUsedOnTheSlowPath) {
  Rig rig({Rate::PerSecond(1), 100}, {.batch = 10});
  const int64_t t0 = rig.clock.Now();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(rig.cache->TryAcquire(1, t0).granted());
  EXPECT_FALSE(rig.cache->TryAcquire(1, t0).granted());
  // Ten seconds later by the caller's clock (the fake one stands still).
  ASSERT_TRUE(rig.cache->TryAcquire(1, t0 + 10'000 * kMs).granted());
  EXPECT_EQ(rig.cache->Cached(), 9u);
}

TEST(PermitCacheTest, ThreadExitReturnsItsCache) {
  Rig rig(kStill);
  std::thread([&] { ASSERT_TRUE(rig.cache->TryAcquire(1).granted()); }).join();
  EXPECT_EQ(rig.cache->Cached(), 0u);
  EXPECT_EQ(rig.bucket->Available(), 999);
}

TEST(PermitCacheTest, DestroyingTheCacheReturnsEverything) {
  Rig rig(kStill);
  std::latch used(2), done(1);
  std::thread other([&] {
    (void)rig.cache->TryAcquire(3);
    used.count_down();
    done.wait();
  });
  ASSERT_TRUE(rig.cache->TryAcquire(1).granted());
  used.arrive_and_wait();
  EXPECT_EQ(rig.cache->Cached(), 63u + 61u);
  rig.cache.reset();
  EXPECT_EQ(rig.bucket->Available(), 1000 - 4);
  // The thread outlives the cache and exits cleanly.
  done.count_down();
  other.join();
  EXPECT_EQ(rig.bucket->Available(), 1000 - 4);
}

TEST(PermitCacheTest, ReleaseThisThreadReturnsOnlyItsCache) {
  Rig rig(kStill);
  ASSERT_TRUE(rig.cache->TryAcquire(1).granted());
  rig.cache->ReleaseThisThread();
  EXPECT_EQ(rig.bucket->Available(), 999);
  ASSERT_TRUE(rig.cache->TryAcquire(1).granted());
  EXPECT_EQ(rig.bucket->Available(), 1000 - 1 - 64);
}

TEST(PermitCacheTest, ReturnsAtTheTermsTheBatchWasTakenAt) {
  Rig rig({Rate::PerHour(1), 100}, {.batch = 10});
  ASSERT_TRUE(rig.cache->TryAcquire(1).granted());  // 9 cached
  EXPECT_EQ(rig.bucket->Available(), 90);
  // Half the capacity: the bucket stays 90% full, 45 of 50.
  ASSERT_TRUE(rig.bucket->Reconfigure({Rate::PerHour(1), 50}).ok());
  EXPECT_EQ(rig.bucket->Available(), 45);
  rig.cache->ReleaseThisThread();
  // 9 permits were 9% of the capacity: 4.5 of 50 now, rounded down. At the
  // new terms they would have been 9 (more than was taken).
  EXPECT_EQ(rig.bucket->Available(), 49);
}

TEST(PermitCacheTest, ARefillAfterAReconfigurationReturnsWhatWasHeld) {
  Rig rig({Rate::PerHour(1), 100}, {.batch = 20});
  ASSERT_TRUE(rig.cache->TryAcquire(1).granted());                    // a batch: 19 cached, 80 left
  ASSERT_TRUE(rig.cache->TryAcquire(15).granted());                   // 4 cached at the old terms
  ASSERT_TRUE(rig.bucket->Reconfigure({Rate::PerHour(1), 50}).ok());  // 40 of 50
  // 5 > 4 held: a batch at the new terms (40 - 20), and the 4 go back at the
  // old ones: 4% of the capacity, 2 of 50.
  ASSERT_TRUE(rig.cache->TryAcquire(5).granted());
  EXPECT_EQ(rig.bucket->Available(), 40 - 20 + 2);
  EXPECT_EQ(rig.cache->Cached(), 15u);
}

TEST(PermitCacheTest, IdleCachesReturnWithinIdlePlusTwoSweepPeriods) {
  constexpr int64_t kIdle = 30 * kMs, kPeriod = 10 * kMs;
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    Rig rig(kStill, {.idle = absl::Nanoseconds(kIdle), .sweep_period = absl::ZeroDuration()});
    // Sweeps run every kPeriod from `start`; the cache is used between
    // them now and then (never more than two sweeps apart, well under
    // kIdle), then left alone at `last`.
    const int64_t start = rig.clock.Now();
    int64_t now = start, last = start;
    const int uses = 1 + static_cast<int>(rng() % 5);
    for (int use = 0; use < uses; ++use) {
      last = now + 1 + static_cast<int64_t>(rng() % (kPeriod - 1));
      ASSERT_TRUE(rig.cache->TryAcquire(1, last).granted());
      for (int sweeps = 1 + static_cast<int>(rng() % 2); sweeps > 0; --sweeps) {
        now += kPeriod;
        ASSERT_EQ(rig.cache->Sweep(now), 0u) << "returned while in use";
      }
    }
    int64_t returned_at = -1;
    while (returned_at < 0 && now < last + kIdle + 4 * kPeriod) {
      now += kPeriod;
      if (rig.cache->Sweep(now) > 0) returned_at = now;
    }
    ASSERT_GE(returned_at, 0) << "never returned; last used " << last - start;
    EXPECT_GE(returned_at - last, kIdle) << "returned before the cache was idle";
    EXPECT_LE(returned_at - last, kIdle + 2 * kPeriod);
    EXPECT_EQ(rig.cache->Cached(), 0u);
    EXPECT_EQ(rig.bucket->Available(now), 1000 - uses);
  }
}

TEST(PermitCacheTest, AnotherThreadsSlowPathSweepsIdleCaches) {
  Rig rig(kStill,
          {.batch = 10, .idle = absl::Milliseconds(5), .sweep_period = absl::Milliseconds(1)});
  std::latch used(2), done(1);
  std::thread idle([&] {
    (void)rig.cache->TryAcquire(1);  // 9 cached, then idle
    used.count_down();
    done.wait();
  });
  used.arrive_and_wait();
  ASSERT_EQ(rig.cache->Cached(), 9u);
  // This thread's slow paths (every tenth admit) sweep as time passes.
  for (int i = 0; i < 100; ++i) {
    rig.clock.Advance(kMs);
    (void)rig.cache->TryAcquire(1);
  }
  const int64_t held = static_cast<int64_t>(rig.cache->Cached());
  EXPECT_LT(held, 10) << "the idle thread's cache is still held";
  EXPECT_EQ(rig.bucket->Available(), 1000 - 101 - held);
  done.count_down();
  idle.join();
}

TEST(PermitCacheTest, TheSweepThreadReturnsIdleCaches) {
  // The sweeper runs on real time; the bucket's fake time moves below.
  Rig rig(kStill, {.batch = 10,
                   .idle = absl::Milliseconds(1),
                   .sweep_period = absl::Milliseconds(1),
                   .sweep_thread = true});
  ASSERT_TRUE(rig.cache->TryAcquire(1).granted());
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (rig.cache->Cached() > 0 && absl::Now() < deadline) {
    rig.clock.Advance(kMs);
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(rig.cache->Cached(), 0u);
  EXPECT_EQ(rig.bucket->Available(), 999);
}

// Threads admitting through their caches in lock-step phases on the fake
// clock; between phases time moves and sometimes a sweep runs. The judge
// counts admissions per phase and checks every span of phases against
// capacity + rate x span, using nothing from the cell.
// Fixed batches of 16, and batches growing from 4 to 32.
class PermitCacheConcurrencyTest : public testing::TestWithParam<std::pair<uint64_t, uint64_t>> {};

INSTANTIATE_TEST_SUITE_P(Batches, PermitCacheConcurrencyTest,
                         testing::Values(std::pair<uint64_t, uint64_t>{16, 0},
                                         std::pair<uint64_t, uint64_t>{4, 32}));

TEST_P(PermitCacheConcurrencyTest, ThreadsNeverOverAdmitAndCachesStayBounded) {
  constexpr int kThreads = 4, kPhases = 300;
  constexpr int64_t kCapacity = 300, kPerSecond = 2000;
  const auto [batch, max_batch] = GetParam();
  const uint64_t largest = std::max(batch, max_batch);
  Rig rig({Rate::PerSecond(kPerSecond), kCapacity}, {.batch = batch,
                                                     .max_batch = max_batch,
                                                     .idle = absl::Milliseconds(4),
                                                     .sweep_period = absl::Milliseconds(2)});
  std::vector<int64_t> phase_time(kPhases);
  std::vector<std::atomic<int64_t>> admitted(kPhases);
  std::vector<uint64_t> cached(kPhases);
  std::mt19937_64 main_rng(11);
  std::barrier sync(kThreads + 1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t + 1);
      constexpr uint64_t kSizes[] = {1, 1, 1, 2, 5, 40};
      for (int phase = 0; phase < kPhases; ++phase) {
        sync.arrive_and_wait();  // the clock is set
        int64_t mine = 0;
        for (int i = 0, tries = static_cast<int>(rng() % 40); i < tries; ++i) {
          const uint64_t n = kSizes[rng() % 6];
          if (rig.cache->TryAcquire(n).granted()) mine += static_cast<int64_t>(n);
        }
        admitted[phase].fetch_add(mine);
        sync.arrive_and_wait();  // the phase is over
      }
    });
  }
  for (int phase = 0; phase < kPhases; ++phase) {
    rig.clock.Advance(static_cast<int64_t>(main_rng() % (5 * kMs)));
    phase_time[phase] = rig.clock.Now();
    if (main_rng() % 8 == 0) rig.cache->Sweep(phase_time[phase]);
    sync.arrive_and_wait();
    sync.arrive_and_wait();
    cached[phase] = rig.cache->Cached();
  }
  for (std::thread& t : threads) t.join();
  int64_t total = 0;
  for (int i = 0; i < kPhases; ++i) {
    ASSERT_LE(cached[i], (largest - 1) * kThreads) << "phase " << i;
    int64_t sum = 0;
    for (int j = i; j < kPhases; ++j) {
      sum += admitted[j].load();
      // sum <= capacity + rate x (t_j - t_i), in whole permits x 1e9.
      const __int128 allowed = __int128{kCapacity} * 1'000'000'000 +
                               __int128{kPerSecond} * (phase_time[j] - phase_time[i]);
      ASSERT_LE(__int128{sum} * 1'000'000'000, allowed) << "phases " << i << " to " << j;
    }
    total += admitted[i].load();
  }
  EXPECT_GT(total, kCapacity) << "the test admitted too little to judge anything";
  EXPECT_EQ(rig.cache->Cached(), 0u) << "threads exited with permits cached";
}

}  // namespace
}  // namespace sluice
