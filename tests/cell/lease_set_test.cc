#include "sluice/lease_set.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/clock.h"
#include "tests/cell/stress_duration.h"

namespace sluice {
namespace {

struct Leases {
  explicit Leases(uint32_t n) : words(n) {
    for (auto& w : words) w.store(0);
  }
  LeaseSetRef Ref() { return LeaseSetRef(words.data(), static_cast<uint32_t>(words.size()), &gen); }
  std::vector<std::atomic<uint64_t>> words;
  std::atomic<uint32_t> gen{0};
};

bool NobodyDies(uint64_t) { return false; }

TEST(LeaseSetTest, NeverMoreThanCapacityAndReleaseFreesOne) {
  Leases l(3);
  const LeaseSetRef leases = l.Ref();
  const int32_t a = leases.TryAcquire(11, 0);
  const int32_t b = leases.TryAcquire(11, 0);
  const int32_t c = leases.TryAcquire(22, 5);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  ASSERT_GE(c, 0);
  EXPECT_EQ(leases.TryAcquire(33, 0), -1);
  EXPECT_EQ(leases.InFlight(), 3u);
  leases.Release(static_cast<uint32_t>(b), 22);  // not 22's lease: ignored
  EXPECT_EQ(leases.InFlight(), 3u);
  leases.Release(static_cast<uint32_t>(b), 11);
  EXPECT_EQ(leases.InFlight(), 2u);
  EXPECT_EQ(leases.TryAcquire(33, 0), b);
}

TEST(LeaseSetTest, LeasesOfDeadHoldersAreTakenBack) {
  Leases l(2);
  const LeaseSetRef leases = l.Ref();
  ASSERT_GE(leases.TryAcquire(666, 0), 0);
  ASSERT_GE(leases.TryAcquire(7, 0), 0);
  auto dead = [](uint64_t tag) { return tag == 666; };
  const auto index = leases.Acquire(8, absl::ZeroDuration(), 0, dead);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(leases.InFlight(), 2u);
  const auto none = leases.Acquire(9, absl::ZeroDuration(), 0, dead);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(none.status().message(), ::testing::HasSubstr("all 2 concurrency leases"));
}

TEST(LeaseSetTest, AWaiterWakesWhenALeaseIsReturned) {
  Leases l(1);
  const LeaseSetRef leases = l.Ref();
  ASSERT_EQ(leases.TryAcquire(1, 0), 0);
  std::atomic<bool> got{false};
  std::thread waiter([&] { got = leases.Acquire(2, absl::Seconds(30), 0, NobodyDies).ok(); });
  // The waiter announces itself (the generation's low bit) before it sleeps
  // on the futex; the release then wakes it and clears the flag.
  while ((l.gen.load() & 1) == 0) std::this_thread::yield();
  leases.Release(0, 1);
  waiter.join();
  EXPECT_TRUE(got.load());
  EXPECT_EQ(l.words[0].load(), 2u);
  EXPECT_EQ(l.gen.load() & 1, 0u);
}

// With nobody asleep, a release only bumps the generation (by 2, leaving
// the sleeper flag clear): no futex system call.
TEST(LeaseSetTest, AReleaseWithNobodyAsleepLeavesTheFlagClear) {
  Leases l(1);
  const LeaseSetRef leases = l.Ref();
  ASSERT_EQ(leases.TryAcquire(1, 0), 0);
  leases.Release(0, 1);
  EXPECT_EQ(l.gen.load(), 2u);
  // A waiter that gives up at once never flags itself either.
  ASSERT_EQ(leases.TryAcquire(1, 0), 0);
  EXPECT_FALSE(leases.Acquire(2, absl::ZeroDuration(), 0, NobodyDies).ok());
  EXPECT_EQ(l.gen.load(), 2u);
}

TEST(LeaseSetTest, ThreadsNeverHoldMoreThanTheCap) {
  Leases l(4);
  const LeaseSetRef leases = l.Ref();
  std::atomic<int> in_flight{0}, peak{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      const uint64_t tag = 100 + t;
      for (int i = 0; i < 2000; ++i) {
        auto index = leases.Acquire(tag, absl::Seconds(10), t, NobodyDies);
        ASSERT_TRUE(index.ok()) << index.status();
        const int now = in_flight.fetch_add(1) + 1;
        int seen = peak.load();
        while (now > seen && !peak.compare_exchange_weak(seen, now)) {
        }
        in_flight.fetch_sub(1);
        leases.Release(*index, tag);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(peak.load(), 4);
  EXPECT_GE(peak.load(), 1);
  EXPECT_EQ(leases.InFlight(), 0u);
}

// Holders that die (abandon a lease under a tag that is then dead) while
// others wait and take back: at no moment do more than the cap's leases have
// a living holder, and every abandoned lease comes back. Waiters reclaim
// while they sleep, since a dead holder never releases.
TEST(LeaseSetTest, ThreadsDyingWhileOthersWaitNeverBreakTheCap) {
  constexpr int kCap = 3;
  Leases l(kCap);
  const LeaseSetRef leases = l.Ref();
  // A holder's tag is (sequence << 3) | thread. Every seventh holder of a
  // thread dies holding its lease: its tag is dead once the thread has moved
  // past it (died_upto), and never used again.
  constexpr int kThreads = 6;
  std::vector<std::atomic<uint64_t>> died_upto(kThreads);
  const auto is_dead = [&](uint64_t tag) {
    const uint64_t seq = tag >> 3;
    return seq % 7 == 0 && seq < died_upto[tag & 7].load();
  };
  std::atomic<int> living{0}, peak{0}, abandoned{0};
  std::vector<std::thread> threads;
  const int64_t deadline = Clock::MonotonicNanos() + StressNanos(300'000'000);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t seq = 1; Clock::MonotonicNanos() < deadline; ++seq) {
        const uint64_t tag = (seq << 3) | static_cast<uint64_t>(t);
        auto index = leases.Acquire(tag, absl::Seconds(30), t, is_dead);
        ASSERT_TRUE(index.ok()) << index.status();
        const int now = living.fetch_add(1) + 1;
        int seen = peak.load();
        while (now > seen && !peak.compare_exchange_weak(seen, now)) {
        }
        living.fetch_sub(1);
        if (seq % 7 == 0) {
          died_upto[t].store(seq + 1);  // dies holding it
          abandoned.fetch_add(1);
        } else {
          leases.Release(*index, tag);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(peak.load(), kCap);
  EXPECT_GT(abandoned.load(), 0);
  leases.Reclaim(is_dead);
  EXPECT_EQ(leases.InFlight(), 0u);
}

}  // namespace
}  // namespace sluice
