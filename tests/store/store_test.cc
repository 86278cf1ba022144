// The Store's promises, through both stores: process memory and a shared
// segment hand out the same cells with the same rules (created full,
// reconfigured keeping the fill, a learned limit never raised by a later
// configuration, counters from zero, caps that cannot be resized).
#include "sluice/store.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/segment.h"
#include "tests/store/segment_test_util.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kT0 = 1'000 * kSec;

enum class Kind { kLocal, kSegment };

class StoreTest : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    if (GetParam() == Kind::kLocal) {
      store_ = NewLocalStore(Clock::Fake(&clock_));
      return;
    }
    SegmentOptions options;
    options.clock = Clock::Fake(&clock_);
    auto segment = Segment::Open(scratch_.path(), options);
    ASSERT_TRUE(segment.ok()) << segment.status();
    segment_ = *std::move(segment);
    store_ = NewSegmentStore(segment_.get());
  }

  // A second store over the same cells: another process's view of the
  // segment, or the same local store (process memory has no other view).
  std::unique_ptr<Store> Reopen() {
    if (GetParam() == Kind::kLocal) return nullptr;
    SegmentOptions options;
    options.clock = Clock::Fake(&clock_);
    auto segment = Segment::Open(scratch_.path(), options);
    EXPECT_TRUE(segment.ok()) << segment.status();
    others_.push_back(*std::move(segment));
    return NewSegmentStore(others_.back().get());
  }

  Store& store() { return *store_; }

  FakeClock clock_{kT0};
  ScratchSegment scratch_;
  std::unique_ptr<Segment> segment_;
  std::vector<std::unique_ptr<Segment>> others_;
  std::unique_ptr<Store> store_;
};

TEST_P(StoreTest, ANewBucketIsFullAndRunsOnTheStoresClock) {
  auto b = store().Bucket("b", {Rate::PerSecond(10), 5});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->bucket.Available(), 5);
  EXPECT_EQ(b->bucket.clock().Now(), kT0);
  EXPECT_EQ(store().clock().Now(), kT0);
  EXPECT_FALSE(b->learned.has_value());
  EXPECT_EQ(b->bottlenecks->load(), 0u);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(b->bucket.TryAcquire(1).granted());
  EXPECT_FALSE(b->bucket.TryAcquire(1).granted());
  clock_.Advance(kSec / 10);  // one permit at 10/s
  EXPECT_TRUE(b->bucket.TryAcquire(1).granted());
}

TEST_P(StoreTest, OpeningAgainHandsOutTheSameCell) {
  auto first = store().Bucket("b", {Rate::PerSecond(10), 5});
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(first->bucket.TryAcquire(3).granted());
  auto second = store().Bucket("b", {Rate::PerSecond(10), 5});
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->bucket.Available(), 2);
  EXPECT_EQ(second->bottlenecks, first->bottlenecks);
}

TEST_P(StoreTest, ANewConfigurationKeepsTheFillRatio) {
  auto b = store().Bucket("b", {Rate::PerSecond(10), 10});
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(b->bucket.TryAcquire(6).granted());  // 40% left
  auto bigger = store().Bucket("b", {Rate::PerSecond(100), 100});
  ASSERT_TRUE(bigger.ok());
  EXPECT_EQ(bigger->bucket.Capacity(), 100);
  EXPECT_EQ(bigger->bucket.Available(), 40);
}

TEST_P(StoreTest, ALearnedLimitHoldsAgainstALaterConfiguration) {
  ASSERT_TRUE(store().Bucket("b", {Rate::PerMinute(600), 600}).ok());
  ASSERT_TRUE(store().Learn("b", Rate::PerMinute(60)).ok());
  auto again = store().Bucket("b", {Rate::PerMinute(600), 600});
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(again->learned.has_value());
  EXPECT_EQ(*again->learned, Rate::PerMinute(60));
  EXPECT_EQ(again->bucket.Capacity(), 60);
  if (std::unique_ptr<Store> other = Reopen()) {  // a process starting later
    auto seen = other->Bucket("b", {Rate::PerMinute(600), 600});
    ASSERT_TRUE(seen.ok());
    EXPECT_EQ(seen->bucket.Capacity(), 60);
  }
  // Forgetting the learned limit restores the configuration.
  ASSERT_TRUE(store().Learn("b", std::nullopt).ok());
  auto restored = store().Bucket("b", {Rate::PerMinute(600), 600});
  ASSERT_TRUE(restored.ok());
  EXPECT_EQ(restored->bucket.Capacity(), 600);
}

TEST_P(StoreTest, LearningNeedsAnOpenedBucketAndAValidRate) {
  EXPECT_EQ(store().Learn("never", Rate::PerMinute(1)).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store().Bucket("b", {Rate::PerMinute(10), 10}).ok());
  EXPECT_FALSE(store().Learn("b", Rate(0, absl::Minutes(1))).ok());
}

TEST_P(StoreTest, ABadConfigurationIsRefusedAndCreatesNothing) {
  EXPECT_EQ(store().Bucket("b", {Rate::PerSecond(10), 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store().Learn("b", Rate::PerMinute(1)).code(), absl::StatusCode::kNotFound);
}

TEST_P(StoreTest, ACounterStartsAtZeroAndIsShared) {
  auto c = store().Counter("budget");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->bottlenecks->load(), 0u);
  EXPECT_TRUE(c->counter.TryAdd(/*window=*/7, /*amount=*/40, /*limit=*/100));
  auto again = store().Counter("budget");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->counter.TryAdd(7, 61, 100));
  EXPECT_TRUE(again->counter.TryAdd(7, 60, 100));
}

TEST_P(StoreTest, ACapHandsOutItsLeasesAndCannotBeResized) {
  auto cap = store().Leases("cap", 2);
  ASSERT_TRUE(cap.ok()) << cap.status();
  EXPECT_EQ(cap->capacity(), 2u);
  auto a = cap->TryAcquire();
  auto b = cap->TryAcquire();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_GE(*a, 0);
  EXPECT_GE(*b, 0);
  EXPECT_EQ(*cap->TryAcquire(), -1);
  EXPECT_EQ(cap->InFlight(), 2u);
  const uint32_t generation = cap->Generation();
  cap->Release(static_cast<uint32_t>(*a));
  EXPECT_NE(cap->Generation(), generation);
  EXPECT_EQ(cap->InFlight(), 1u);
  auto resized = store().Leases("cap", 3);
  EXPECT_EQ(resized.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(resized.status().message(), HasSubstr("cap"));
  EXPECT_EQ(store().Leases("none", 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(StoreTest, ALeaseHeldByADeadProcessComesBack) {
  auto cap = store().Leases("cap", 1);
  ASSERT_TRUE(cap.ok());
  // A child takes the only lease and dies holding it (in process memory the
  // child's copy of the store is its own; only a segment shares the lease).
  ASSERT_EQ(InChild([&] {
              std::unique_ptr<Store> mine = Reopen();
              Store& s = mine ? *mine : store();
              auto child_cap = s.Leases("cap", 1);
              return child_cap.ok() && *child_cap->TryAcquire() >= 0 ? 0 : 1;
            }),
            0);
  auto lease = cap->TryAcquire();
  ASSERT_TRUE(lease.ok());
  EXPECT_GE(*lease, 0);
}

INSTANTIATE_TEST_SUITE_P(BothStores, StoreTest, ::testing::Values(Kind::kLocal, Kind::kSegment),
                         [](const auto& info) {
                           return info.param == Kind::kLocal ? "Local" : "Segment";
                         });

}  // namespace
}  // namespace sluice
