// Threads hammering one bucket on the real clock (run under ThreadSanitizer in
// CI): whatever the interleaving, the total taken stays within C + R*elapsed.
#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "sluice/token_bucket.h"
#include "tests/cell/stress_duration.h"

namespace sluice {
namespace {

constexpr int kThreads = 4;
const int64_t kRunNs = StressNanos(300'000'000);  // 0.3 s of hammering by default

// Runs kThreads threads of mixed operations for kRunNs on `bucket`, and
// returns the permits they kept (granted and not refunded, plus debits).
int64_t Hammer(const BucketRef& bucket) {
  std::atomic<int64_t> kept{0};
  std::vector<std::thread> threads;
  const int64_t deadline = Clock::MonotonicNanos() + kRunNs;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t + 1);
      int64_t mine = 0;
      for (int64_t now = Clock::MonotonicNanos(); now < deadline; now = Clock::MonotonicNanos()) {
        const uint64_t n = 1 + rng() % 4;
        switch (rng() % 4) {
          case 0: {
            const Decision d = bucket.Reserve(n, 20'000, now);
            if (d.granted() && rng() % 2 == 0) {
              bucket.Refund(n, d.terms, now);
            } else if (d.granted()) {
              mine += static_cast<int64_t>(n);
            }
            break;
          }
          default:
            if (bucket.TryAcquire(n, now).granted()) mine += static_cast<int64_t>(n);
        }
      }
      kept.fetch_add(mine);
    });
  }
  for (std::thread& t : threads) t.join();
  return kept.load();
}

TEST(TokenBucketStressTest, ThreadsNeverOverAdmit) {
  const BucketConfig config{Rate::PerSecond(100'000), 1000};
  const int64_t start = Clock::MonotonicNanos();
  BucketCell cell;
  ASSERT_TRUE(BucketRef::Init(&cell, config, start).ok());
  const BucketRef bucket(&cell, Clock::Monotonic());
  const int64_t kept = Hammer(bucket);
  // Reservations may be used up to 20 us after the last clock reading.
  const int64_t elapsed = Clock::MonotonicNanos() + 20'000 - start;
  const int64_t bound = 1000 + elapsed / 10'000 + 1;  // C + R*elapsed, R = 1 per 10 us
  EXPECT_LE(kept, bound);
  EXPECT_GE(kept, 1000);  // at least the initial burst went out
}

TEST(TokenBucketStressTest, ReconfiguringWhileAcquiringKeepsTheBound) {
  // Reconfiguring to the same rate and capacity flips the parameter slot on
  // every call without changing the fill: acquirers racing the flips must
  // still stay within C + R*elapsed.
  const BucketConfig config{Rate::PerSecond(100'000), 1000};
  auto created = TokenBucket::Create(config);
  ASSERT_TRUE(created.ok());
  TokenBucket& bucket = **created;
  const int64_t start = Clock::MonotonicNanos();
  std::atomic<bool> stop{false};
  std::atomic<int64_t> flips{0};
  std::thread reconfigurer([&] {
    while (!stop.load()) {
      ASSERT_TRUE(bucket.Reconfigure(config).ok());
      flips.fetch_add(1);
    }
  });
  const int64_t kept = Hammer(bucket.ref());
  stop.store(true);
  reconfigurer.join();
  const int64_t elapsed = Clock::MonotonicNanos() + 20'000 - start;
  EXPECT_GT(flips.load(), 0);
  EXPECT_LE(kept, 1000 + elapsed / 10'000 + 1);
  EXPECT_GE(kept, 1000);
}

// Refunds racing reconfigurations and holds, on frozen time (nothing
// refills): threads take permits and give some back at the terms they were
// taken at, while another thread switches the bucket between two
// configurations of different capacity and a third places holds that have
// already ended. Whatever the interleaving, what the threads kept, as shares
// of the capacity at the time of taking, never exceeds the one full bucket
// they started with: a refund that returned more than its share would let
// later takes exceed it.
TEST(TokenBucketStressTest, RefundsRacingReconfigurationsNeverReturnMoreThanTaken) {
  const BucketConfig small{Rate::PerMinute(6'000), 6'000};
  const BucketConfig large{Rate::PerMinute(60'000), 60'000};
  constexpr int64_t kNow = 1'000'000'000'000;
  FakeClock fake(kNow);
  auto created = TokenBucket::Create(small, Clock::Fake(&fake));
  ASSERT_TRUE(created.ok());
  TokenBucket& bucket = **created;
  ASSERT_TRUE(bucket.Reconfigure(small, kNow).ok());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> switches{0};
  std::thread reconfigurer([&] {
    for (bool big = true; !stop.load(); big = !big) {
      ASSERT_TRUE(bucket.Reconfigure(big ? large : small, kNow).ok());
      switches.fetch_add(1);
    }
  });
  std::thread holder([&] {
    while (!stop.load()) bucket.HoldUntil(kNow - 1, kNow);
  });
  std::atomic<double> kept_share{0};
  std::vector<std::thread> takers;
  const int64_t deadline = Clock::MonotonicNanos() + kRunNs;
  for (int t = 0; t < kThreads; ++t) {
    takers.emplace_back([&, t] {
      std::mt19937_64 rng(t + 17);
      double mine = 0;
      while (Clock::MonotonicNanos() < deadline) {
        const uint64_t n = 1 + rng() % 40;
        const Decision d = bucket.TryAcquire(n, kNow);
        if (!d.granted()) continue;
        const uint64_t back = rng() % 2 == 0 ? n : rng() % (n + 1);
        bucket.Refund(back, d.terms, kNow);
        mine += static_cast<double>(n - back) / static_cast<double>(d.terms.capacity);
      }
      double seen = kept_share.load();
      while (!kept_share.compare_exchange_weak(seen, seen + mine)) {
      }
    });
  }
  for (std::thread& t : takers) t.join();
  stop.store(true);
  reconfigurer.join();
  holder.join();
  EXPECT_GT(switches.load(), 0);
  EXPECT_LE(kept_share.load(), 1.0 + 1e-6);
  // And nothing was lost: what is left plus what was kept is the bucket.
  const double left =
      static_cast<double>(bucket.Available(kNow)) / static_cast<double>(bucket.Capacity());
  EXPECT_GE(left + kept_share.load(), 1.0 - 0.01);
}

}  // namespace
}  // namespace sluice
