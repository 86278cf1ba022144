#include "sluice/window_counter.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace sluice {
namespace {

TEST(WindowCounterTest, AddsWithinTheLimitAndRefusesBeyondIt) {
  WindowCounterCell cell;
  const WindowCounterRef counter(&cell);
  EXPECT_TRUE(counter.TryAdd(7, 60, 100));
  EXPECT_TRUE(counter.TryAdd(7, 40, 100));
  EXPECT_FALSE(counter.TryAdd(7, 1, 100));
  EXPECT_EQ(counter.Used(7), 100);
}

// The amount field holds kMaxAmount; a limit above it must not let a sum
// carry into the window bits (where a budget of 10 million USD used to admit
// 1,000 requests of 100,000 USD each).
TEST(WindowCounterTest, NeverCarriesIntoTheWindowWhateverTheLimit) {
  WindowCounterCell cell;
  const WindowCounterRef counter(&cell);
  constexpr int64_t kHuge = int64_t{10'000'000} * 1'000'000;  // 10 million USD in micro-USD
  constexpr int64_t kRequest = int64_t{100'000} * 1'000'000;
  int admitted = 0;
  for (int i = 0; i < 1'000; ++i) admitted += counter.TryAdd(20'000, kRequest, kHuge);
  EXPECT_EQ(admitted, WindowCounterRef::kMaxAmount / kRequest);
  EXPECT_EQ(counter.Load().window, 20'000);
  EXPECT_LE(counter.Used(20'000), WindowCounterRef::kMaxAmount);
  EXPECT_FALSE(counter.TryAdd(20'000, -1, kHuge));
}

TEST(WindowCounterTest, ANewWindowStartsAtZeroAndAnOldOneNeverComesBack) {
  WindowCounterCell cell;
  const WindowCounterRef counter(&cell);
  ASSERT_TRUE(counter.TryAdd(7, 100, 100));
  EXPECT_TRUE(counter.TryAdd(8, 30, 100));
  EXPECT_EQ(counter.Used(8), 30);
  EXPECT_EQ(counter.Used(7), 0);
  // A straggler still on window 7 counts against window 8: stricter, never looser.
  EXPECT_TRUE(counter.TryAdd(7, 70, 100));
  EXPECT_FALSE(counter.TryAdd(7, 1, 100));
  EXPECT_EQ(counter.Used(8), 100);
}

TEST(WindowCounterTest, LoadReadsTheCurrentWindowAndItsAmountTogether) {
  WindowCounterCell cell;
  const WindowCounterRef counter(&cell);
  EXPECT_EQ(counter.Load().window, 0);
  EXPECT_EQ(counter.Load().used, 0);
  ASSERT_TRUE(counter.TryAdd(WindowCounterRef::kMaxWindow, WindowCounterRef::kMaxAmount,
                             WindowCounterRef::kMaxAmount));
  EXPECT_EQ(counter.Load().window, WindowCounterRef::kMaxWindow);
  EXPECT_EQ(counter.Load().used, WindowCounterRef::kMaxAmount);
}

TEST(WindowCounterTest, RefundsOnlyTheWindowThatWasCharged) {
  WindowCounterCell cell;
  const WindowCounterRef counter(&cell);
  ASSERT_TRUE(counter.TryAdd(3, 50, 100));
  counter.Refund(3, 20);
  EXPECT_EQ(counter.Used(3), 30);
  counter.Refund(3, 1000);
  EXPECT_EQ(counter.Used(3), 0);  // never below zero
  ASSERT_TRUE(counter.TryAdd(4, 10, 100));
  counter.Refund(3, 10);  // window 3 is over: dropped
  EXPECT_EQ(counter.Used(4), 10);
}

TEST(WindowCounterTest, DebitsSaturateAndLandInTheCurrentWindow) {
  WindowCounterCell cell;
  const WindowCounterRef counter(&cell);
  counter.Debit(5, 10);
  EXPECT_EQ(counter.Used(5), 10);
  counter.Debit(6, 5);
  EXPECT_EQ(counter.Used(6), 5);
  counter.Debit(5, 5);  // an ended window's debit counts now
  EXPECT_EQ(counter.Used(6), 10);
  counter.Debit(6, WindowCounterRef::kMaxAmount);
  EXPECT_EQ(counter.Used(6), WindowCounterRef::kMaxAmount);
  EXPECT_FALSE(counter.TryAdd(6, 1, WindowCounterRef::kMaxAmount));
  EXPECT_TRUE(counter.TryAdd(WindowCounterRef::kMaxWindow, 1, 1));
}

TEST(WindowCounterTest, ThreadsNeverExceedTheLimit) {
  WindowCounterCell cell;
  const WindowCounterRef counter(&cell);
  std::atomic<int64_t> taken{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20'000; ++i) {
        if (counter.TryAdd(1, 3, 10'000)) taken.fetch_add(3);
        if (i % 7 == 0 && counter.TryAdd(1, 2, 10'000)) {
          counter.Refund(1, 2);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(taken.load(), 9'999);  // 3333 adds of 3 fit under 10,000
  EXPECT_EQ(counter.Used(1), 9'999);
}

}  // namespace
}  // namespace sluice
