// The TSC calibration in the segment header: every process on the host
// converts with it in the same way, readings never go backwards across
// processes while they recalibrate it, and a segment whose creator could not
// use the TSC (or whose calibration is corrupt) says so.

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/clock.h"
#include "sluice/segment.h"
#include "sluice/segment_info.h"
#include "sluice/tsc.h"
#include "src/store/segment_layout.h"
#include "tests/store/segment_test_util.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

// The calibration's state word is its first member.
constexpr size_t kTscStateOffset = offsetof(segment_layout::Header, tsc);

std::unique_ptr<Segment> MustOpen(const std::string& path, bool prefer_tsc = false) {
  SegmentOptions options;
  options.slots = 8;
  options.prefer_tsc = prefer_tsc;
  auto segment = Segment::Open(path, options);
  EXPECT_TRUE(segment.ok()) << segment.status();
  return segment.ok() ? *std::move(segment) : nullptr;
}

TEST(SegmentTscTest, TheHostClockIsTheSegmentsTscWhereUsable) {
  ScratchSegment scratch;
  auto segment = MustOpen(scratch.path(), /*prefer_tsc=*/true);
  ASSERT_NE(segment, nullptr);
  const Clock clock = segment->TscClock();
  EXPECT_EQ(segment->TscStatus(), TscUsable());
  EXPECT_EQ(segment->clock().kind(), clock.kind()) << "prefer_tsc";
  if (!TscUsable().ok()) {
    EXPECT_EQ(clock.kind(), Clock::Kind::kMonotonic);
    return;
  }
  ASSERT_EQ(clock.kind(), Clock::Kind::kTsc);
  const int64_t before = Clock::MonotonicNanos();
  const int64_t now = clock.Now();
  EXPECT_GT(now, before - 1'000'000);
  EXPECT_LT(now, Clock::MonotonicNanos() + 1'000'000);
  auto info = segment->Inspect();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->clock, "tsc");
  EXPECT_EQ(info->clock_reason, "");
  EXPECT_GE(info->tsc_generation, 1u);
  // A bucket opened through it runs on that clock.
  auto bucket = segment->OpenBucket("b", {Rate::PerSecond(1'000'000), 10});
  ASSERT_TRUE(bucket.ok()) << bucket.status();
  EXPECT_TRUE(bucket->TryAcquire(1).granted());
}

TEST(SegmentTscTest, ACreatorWithoutAUsableTscLeavesItsReadersOnMonotonic) {
  ScratchSegment scratch;
  { ASSERT_NE(MustOpen(scratch.path()), nullptr); }
  ASSERT_TRUE(PatchFile(scratch.path(), kTscStateOffset, TscCalibration::kUnusable));
  auto segment = MustOpen(scratch.path(), /*prefer_tsc=*/true);
  ASSERT_NE(segment, nullptr);
  EXPECT_EQ(segment->TscClock().kind(), Clock::Kind::kMonotonic);
  EXPECT_EQ(segment->clock().kind(), Clock::Kind::kMonotonic);
  const absl::Status why = segment->TscStatus();
  EXPECT_FALSE(why.ok());
  if (TscUsable().ok()) {
    EXPECT_THAT(why.message(), HasSubstr("its creator could not use the TSC"));
  }
  auto info = segment->Inspect();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->clock, "monotonic");
  EXPECT_EQ(info->clock_reason, why.message());
  EXPECT_EQ(info->tsc_generation, 0u);
}

TEST(SegmentTscTest, ACorruptCalibrationIsRefused) {
  ScratchSegment scratch;
  { ASSERT_NE(MustOpen(scratch.path()), nullptr); }
  ASSERT_TRUE(PatchFile(scratch.path(), kTscStateOffset, uint32_t{0x12345678}));
  const absl::Status s = Segment::Open(scratch.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("TSC calibration state 0x12345678"));
}

// What the two processes share besides the segment: the latest reading any
// of them published, and their verdicts.
struct Shared {
  std::atomic<int64_t> latest{0};
  std::atomic<int64_t> backwards{0};
  std::atomic<int64_t> converted{0};  // a tick converted by another process
  std::atomic<int> ready{0};
};

// Reads `clock` for `duration_ns`, checking every reading against the latest
// one published by either process, and forcing a recalibration from a
// reference skewed by up to +-1 ms every ~100 us.
void Hammer(const Clock& clock, Shared* shared, int64_t duration_ns, uint64_t seed) {
  std::mt19937_64 rng(seed);
  TscCalibration* cal = clock.tsc_calibration();
  const int64_t end = Clock::MonotonicNanos() + duration_ns;
  for (int i = 0; Clock::MonotonicNanos() < end; ++i) {
    const int64_t seen = shared->latest.load(std::memory_order_acquire);
    const int64_t now = clock.Now();
    if (now < seen) shared->backwards.fetch_add(1);
    int64_t cur = seen;
    while (cur < now &&
           !shared->latest.compare_exchange_weak(cur, now, std::memory_order_acq_rel)) {
    }
    if (i % 256 == 0) {
      const int64_t skew = static_cast<int64_t>(rng() % 2'000'000) - 1'000'000;
      cal->Recalibrate(ReadTscOrdered(), [&] {
        TscSample s = SampleMonotonic();
        s.ns += skew;
        return s;
      });
    }
  }
}

TEST(SegmentTscTest, TwoProcessesShareOneCalibrationAndNeverGoBackwards) {
  if (!TscUsable().ok()) GTEST_SKIP() << TscUsable();
  ScratchSegment scratch;
  auto segment = MustOpen(scratch.path());
  ASSERT_NE(segment, nullptr);
  void* memory =
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(memory, MAP_FAILED);
  Shared* shared = new (memory) Shared;
  const uint64_t generation = segment->TscClock().tsc_calibration()->generation();
  const pid_t child = fork();
  if (child == 0) {
    // The child maps the segment through its own Open, at its own address.
    SegmentOptions options;
    options.prefer_tsc = true;
    auto own = Segment::Open(scratch.path(), options);
    if (!own.ok() || (*own)->clock().kind() != Clock::Kind::kTsc) _exit(2);
    shared->ready.fetch_add(1);
    while (shared->ready.load() < 2) {
    }
    Hammer((*own)->clock(), shared, 1'500'000'000, 2);
    _exit(0);
  }
  shared->ready.fetch_add(1);
  while (shared->ready.load() < 2) {
  }
  Hammer(segment->TscClock(), shared, 1'500'000'000, 1);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(shared->backwards.load(), 0);
  TscCalibration* cal = segment->TscClock().tsc_calibration();
  // Forced or due, a recalibration is published about every 200 ms.
  EXPECT_GE(cal->generation(), generation + 4) << "the processes recalibrated it";
  // Another process converts a tick exactly as this one does.
  const uint64_t probe = ReadTscOrdered() + 123'456'789;
  ASSERT_EQ(InChild([&] {
              auto own = Segment::Open(scratch.path());
              if (!own.ok() || (*own)->TscClock().kind() != Clock::Kind::kTsc) return 2;
              shared->converted.store((*own)->TscClock().tsc_calibration()->Convert(probe));
              return 0;
            }),
            0);
  EXPECT_EQ(cal->Convert(probe), shared->converted.load());
  munmap(memory, sizeof(Shared));
}

}  // namespace
}  // namespace sluice
