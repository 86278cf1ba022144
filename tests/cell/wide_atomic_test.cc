// The 16-byte word under the bucket cell: compare-and-swap and the three
// loads, alone and raced by a writer whose values differ in both halves, and
// the cell's promise that a refusal is never made from a torn read.

#include "sluice/wide_atomic.h"

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "sluice/rate.h"
#include "sluice/token_bucket.h"
#include "tests/cell/stress_duration.h"

namespace sluice {
namespace {

// Tearing needs the writer and a reader on two cores at once, and is rare
// (about 1 load in 1,000 with both running). With the cell's check on
// refusals removed, the bucket test gave 88 wrong refusals in a 2-second run
// and failed in 3 of 4 one-second runs (3 to 20 each), on a 2-core machine
// busy with a build; it runs 2 s here, and CI's TSan stage gives it 3.
constexpr int64_t kStressNs = 2'000'000'000;

constexpr __int128 Wide(uint64_t hi, uint64_t lo) {
  return static_cast<__int128>((static_cast<unsigned __int128>(hi) << 64) | lo);
}

TEST(WideAtomicTest, CompareExchangeReplacesOnlyWhatItExpects) {
  WideAtomic word;
  EXPECT_EQ(word.Load(), 0);
  __int128 expected = 0;
  const __int128 a = Wide(0x0123456789abcdef, 0xfedcba9876543210);
  ASSERT_TRUE(word.CompareExchange(expected, a));
  EXPECT_EQ(word.Load(), a);

  expected = Wide(0x0123456789abcdef, 0);  // the high half alone matches
  EXPECT_FALSE(word.CompareExchange(expected, 7));
  EXPECT_EQ(expected, a);  // a failed CAS loads what the word holds
  EXPECT_EQ(word.Load(), a);

  expected = a;
  const __int128 negative = -Wide(5, 3);
  ASSERT_TRUE(word.CompareExchange(expected, negative));
  EXPECT_EQ(word.Load(), negative);
}

TEST(WideAtomicTest, EveryLoadReadsTheWordAndNoneChangesIt) {
  for (const __int128 v : {__int128{0}, Wide(1, 0), Wide(0, ~uint64_t{0}), -Wide(0, 1)}) {
    WideAtomic word;
    word.Store(v);
    EXPECT_EQ(word.Load(), v);
    EXPECT_EQ(word.LoadHalves(), v);
    EXPECT_EQ(word.LoadByCas(), v);
    EXPECT_EQ(word.Load(), v) << "LoadByCas left the word as it was";
    if (internal_wide::kAtomicVectorLoad) {
      EXPECT_EQ(word.LoadVector(), v);
    }
  }
}

// A writer flips the word between two values that differ in both halves,
// as fast as it can; readers check every load against the two. Load (and
// each way it reads) never sees a mix; LoadHalves may, and says how often.
TEST(WideAtomicTest, WholeLoadsAreNeverTornByARacingWriter) {
  const __int128 low = Wide(0, ~uint64_t{0} - 7);
  const __int128 high = Wide(1, 8);
  WideAtomic word;
  word.Store(low);
  std::atomic<bool> started{false}, stop{false};
  std::thread writer([&] {
    __int128 seen = low;
    started = true;
    while (!stop.load(std::memory_order_relaxed)) {
      word.CompareExchange(seen, seen == low ? high : low);
    }
  });
  while (!started) std::this_thread::yield();
  const int64_t end = Clock::MonotonicNanos() + StressNanos(kStressNs);
  int64_t loads = 0, torn_whole = 0, torn_halves = 0;
  while (Clock::MonotonicNanos() < end) {
    for (int i = 0; i < 1000; ++i, ++loads) {
      const __int128 whole =
          i % 2 == 0 || !internal_wide::kAtomicVectorLoad ? word.LoadByCas() : word.Load();
      torn_whole += whole != low && whole != high;
      const __int128 halves = word.LoadHalves();
      torn_halves += halves != low && halves != high;
    }
  }
  stop = true;
  writer.join();
  std::printf("%lld loads of each kind; LoadHalves saw %lld torn\n", static_cast<long long>(loads),
              static_cast<long long>(torn_halves));
  EXPECT_EQ(torn_whole, 0);
}

// A bucket whose word straddles a carry into its high half: a writer moves
// it back and forth across (a debit of 1,000 permits and its refund), while
// readers take and give back one permit at a time. Every state the word
// really holds has room for about a million, so every TryAcquire must be
// granted; a refusal made from a torn read (the high half of one state, the
// low half of the other: a TAT 2^63 units ahead) would fail the test.
TEST(WideAtomicTest, ABucketNeverRefusesFromATornRead) {
  BucketCell cell;
  // 16 permits per ns: the word counts 1/16 ns, and at this reading the TAT
  // is 496 units below 2^63, where the word (TAT << 1) carries into its
  // high half.
  const int64_t now = (int64_t{1} << 59) - 31;
  ASSERT_TRUE(BucketRef::Init(&cell, {Rate(16, absl::Nanoseconds(1)), 1'000'000}, now).ok());
  const BucketRef bucket(&cell, Clock::Monotonic());
  std::atomic<bool> started{false}, stop{false};
  std::thread writer([&] {
    started = true;
    while (!stop.load(std::memory_order_relaxed)) {
      bucket.Debit(1000, now);
      const Decision d = bucket.TryAcquire(1, now);  // for the terms
      if (d.granted()) bucket.Refund(1001, d.terms, now);
    }
  });
  const int readers = 1;
  std::atomic<int64_t> refused{0}, taken{0};
  std::vector<std::thread> threads;
  while (!started) std::this_thread::yield();
  const int64_t end = Clock::MonotonicNanos() + StressNanos(kStressNs);
  for (int r = 0; r < readers; ++r) {
    threads.emplace_back([&] {
      while (Clock::MonotonicNanos() < end) {
        for (int i = 0; i < 1000; ++i) {
          const Decision d = bucket.TryAcquire(1, now);
          if (!d.granted()) {
            refused.fetch_add(1, std::memory_order_relaxed);
            continue;
          }
          taken.fetch_add(1, std::memory_order_relaxed);
          bucket.Refund(1, d.terms, now);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  stop = true;
  writer.join();
  EXPECT_EQ(refused.load(), 0);
  EXPECT_GT(taken.load(), 0);
  EXPECT_EQ(bucket.Available(now), 1'000'000);
}

}  // namespace
}  // namespace sluice
