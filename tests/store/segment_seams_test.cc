// What the segment promises when the world around it misbehaves: an
// unreadable boot id never wipes a live segment; a process whose liveness
// cannot be read keeps what it holds; another PID namespace is refused; a
// kill in the middle of a reconfiguration leaves a segment that opens; a
// learned limit outlives the processes that open the segment later.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/segment.h"
#include "sluice/segment_info.h"
#include "src/store/process.h"
#include "src/store/segment_layout.h"
#include "src/store/segment_testing.h"
#include "tests/store/segment_test_util.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kSec = 1'000'000'000;

std::unique_ptr<Segment> MustOpen(const std::string& path, SegmentOptions options = {}) {
  auto segment = Segment::Open(path, std::move(options));
  EXPECT_TRUE(segment.ok()) << segment.status();
  return segment.ok() ? *std::move(segment) : nullptr;
}

// In a forked child: closes every descriptor above stderr and leaves room
// for exactly `spare` more, so the next open after those fails with EMFILE
// ("too many open files"), as in a process that ran out of descriptors.
void LeaveRoomForDescriptors(int spare) {
  for (int fd = 3; fd < 1024; ++fd) close(fd);
  const rlim_t limit = static_cast<rlim_t>(3 + spare);
  const struct rlimit r { limit, limit };
  setrlimit(RLIMIT_NOFILE, &r);
}

// When /proc/sys/kernel/random/boot_id cannot be read, the segment used to be
// taken for one from an earlier boot and wiped under the processes using it.
TEST(SegmentSeamsTest, AnUnreadableBootIdFailsTheOpenAndLeavesTheSegmentAsItIs) {
  ScratchSegment scratch;
  auto segment = MustOpen(scratch.path());
  ASSERT_NE(segment, nullptr);
  auto bucket = segment->OpenBucket("kept", {Rate::PerHour(1), 5});
  ASSERT_TRUE(bucket.ok()) << bucket.status();
  ASSERT_TRUE(bucket->TryAcquire(5).granted());
  const std::vector<char> before = ReadFile(scratch.path());

  EXPECT_EQ(InChild([&] {
              LeaveRoomForDescriptors(1);  // the segment's own descriptor, nothing more
              auto opened = Segment::Open(scratch.path());
              if (opened.ok()) return 1;
              const std::string message(opened.status().message());
              if (!absl::StrContains(message, "/proc/sys/kernel/random/boot_id")) return 2;
              if (!absl::StrContains(message, scratch.path())) return 3;
              return 0;
            }),
            0);
  // Not a byte changed: same header, same slots, and the bucket still empty.
  EXPECT_EQ(ReadFile(scratch.path()), before);
  EXPECT_EQ(bucket->Available(), 0);
  auto again = MustOpen(scratch.path());
  ASSERT_NE(again, nullptr);
  EXPECT_FALSE(again->initialized_by_this_open());
  EXPECT_TRUE(again->FindBucket("kept").ok());
}

// A lease holder whose /proc entry cannot be read is not known to be dead:
// its lease stays. (It used to be taken back.)
TEST(SegmentSeamsTest, UnknownIsNotDead) {
  ScratchSegment scratch;
  auto segment = MustOpen(scratch.path());
  ASSERT_NE(segment, nullptr);
  auto leases = segment->OpenLeases("cap", 1);
  ASSERT_TRUE(leases.ok()) << leases.status();
  const absl::StatusOr<uint64_t> tag = ProcessTag();
  ASSERT_TRUE(tag.ok()) << tag.status();
  ASSERT_EQ(leases->TryAcquire(*tag, 0), 0);

  EXPECT_EQ(InChild([&] {
              const absl::StatusOr<uint64_t> mine = ProcessTag();  // read while it can be
              if (!mine.ok()) return 1;
              LeaveRoomForDescriptors(0);
              const auto dead = [](uint64_t holder) { return !ProcessTagMaybeAlive(holder); };
              if (leases->Reclaim(dead) != 0) return 2;
              if (leases->TryAcquire(*mine, 0) >= 0) return 3;
              return 0;
            }),
            0);
  EXPECT_EQ(leases->InFlight(), 1u);
  EXPECT_EQ(ProcessLiveness(getpid(), 0), Liveness::kDead);  // a reused pid
  EXPECT_EQ(ProcessLiveness(getpid(), *ReadStartTime(getpid())), Liveness::kAlive);
}

// A holder that dies while someone sleeps waiting for its lease never
// releases it, so no wake comes: the waiter must look for dead holders while
// it waits, not only before. (It used to look once, then sleep its whole
// timeout.) Real time: the holder dies after 300 ms, the wait allows 20 s.
TEST(SegmentSeamsTest, AWaiterNoticesAHolderThatDiesWhileItSleeps) {
  ScratchSegment scratch;
  auto segment = MustOpen(scratch.path());
  ASSERT_NE(segment, nullptr);
  auto leases = segment->OpenLeases("cap", 1);
  ASSERT_TRUE(leases.ok()) << leases.status();
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t holder = fork();
  if (holder == 0) {
    const absl::StatusOr<uint64_t> tag = ProcessTag();
    if (!tag.ok() || leases->TryAcquire(*tag, 0) < 0) _exit(1);
    const char byte = 1;
    if (write(ready[1], &byte, 1) != 1) _exit(2);
    absl::SleepFor(absl::Milliseconds(300));
    raise(SIGKILL);
  }
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  const absl::Time start = absl::Now();
  const auto index = leases->Acquire(*ProcessTag(), absl::Seconds(20), 0,
                                     [](uint64_t holder) { return !ProcessTagMaybeAlive(holder); });
  const absl::Duration waited = absl::Now() - start;
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_LT(waited, absl::Seconds(20));
  waitpid(holder, nullptr, 0);
  std::cout << "noticed the dead holder after " << absl::FormatDuration(waited) << "\n";
}

// Whether the segment has a bucket `name`, looked up without opening it
// (opening would mark it as this process's).
bool HasBucket(Segment& segment, absl::string_view name) {
  absl::StatusOr<SegmentInfo> info = segment.Inspect();
  if (!info.ok()) return false;
  for (const SegmentInfo::Bucket& b : info->buckets) {
    if (b.name == name) return true;
  }
  return false;
}

// A forked child keeps using its parent's handles after the parent died: no
// slot it may hold is reclaimed while it is unregistered, and once it
// registers (by opening anything) the handles it inherited are marked as its
// own. (It used to be invisible, and the parent's slots were freed under it.)
TEST(SegmentSeamsTest, NoLiveHandleCanPointAtAReclaimedSlot) {
  ScratchSegment scratch;
  auto segment = MustOpen(scratch.path());
  ASSERT_NE(segment, nullptr);
  int to_grandchild[2], from_grandchild[2];
  ASSERT_EQ(pipe(to_grandchild), 0);
  ASSERT_EQ(pipe(from_grandchild), 0);
  const pid_t parent = fork();
  if (parent == 0) {
    auto mine = Segment::Open(scratch.path());
    if (!mine.ok()) _exit(1);
    auto x = (*mine)->OpenBucket("x", {Rate::PerSecond(10), 5});
    if (!x.ok()) _exit(2);
    if (fork() == 0) {  // the grandchild: uses the inherited handle, then registers
      close(from_grandchild[0]);
      close(to_grandchild[1]);
      char byte = 0;
      if (read(to_grandchild[0], &byte, 1) != 1) _exit(3);
      const Decision taken = x->TryAcquire(1);
      x->Refund(1, taken.terms);
      // Says 'R' when it registered with the handle working, else why not.
      char said = 'R';
      if (!taken.granted()) said = 'T';
      if (!(*mine)->OpenBucket("y", {Rate::PerSecond(10), 5}).ok()) said = 'O';
      if (write(from_grandchild[1], &said, 1) != 1) _exit(5);
      if (read(to_grandchild[0], &byte, 1) != 1) _exit(6);
      _exit(0);
    }
    _exit(0);  // the parent dies; the grandchild lives on with its handle
  }
  close(to_grandchild[0]);
  close(from_grandchild[1]);
  int status = 0;
  waitpid(parent, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // The grandchild maps the segment unregistered: nothing is reclaimed.
  auto refused = segment->ReclaimIdle(absl::ZeroDuration());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("without being registered"));
  EXPECT_TRUE(HasBucket(*segment, "x"));
  // It registers (opening "y"), marking "x", which it holds, as its own.
  char byte = 1;
  ASSERT_EQ(write(to_grandchild[1], &byte, 1), 1);
  ASSERT_EQ(read(from_grandchild[0], &byte, 1), 1);
  ASSERT_EQ(byte, 'R');
  auto none = segment->ReclaimIdle(absl::ZeroDuration());
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, 0);
  EXPECT_TRUE(HasBucket(*segment, "x"));
  // Once it is gone, both are idle and nobody's.
  ASSERT_EQ(write(to_grandchild[1], &byte, 1), 1);
  for (int i = 0; i < 500; ++i) {
    auto freed = segment->ReclaimIdle(absl::ZeroDuration());
    if (freed.ok() && *freed == 2) break;
    absl::SleepFor(absl::Milliseconds(10));  // until the grandchild has exited
  }
  EXPECT_FALSE(HasBucket(*segment, "x"));
  EXPECT_FALSE(HasBucket(*segment, "y"));
}

TEST(SegmentSeamsTest, ASegmentOfAnotherPidNamespaceIsRefused) {
  ScratchSegment scratch;
  ASSERT_NE(MustOpen(scratch.path()), nullptr);
  ASSERT_TRUE(PatchFile(scratch.path(), offsetof(segment_layout::Header, pid_namespace),
                        uint64_t{4026531999}));
  auto opened = Segment::Open(scratch.path());
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(opened.status().message(), HasSubstr("PID namespace 4026531999"));
  EXPECT_THAT(opened.status().message(), HasSubstr(scratch.path()));
}

// Killed right after the cell took its new parameters: the configuration
// recorded for them was written first, so the segment opens and the bucket
// runs at the new configuration. (The recorded configuration used to be
// written after, and every later open was refused until `sluice rm`.)
TEST(SegmentSeamsTest, AKillDuringAReconfigurationLeavesASegmentThatOpens) {
  ScratchSegment scratch;
  auto segment = MustOpen(scratch.path());
  ASSERT_NE(segment, nullptr);
  ASSERT_TRUE(segment->OpenBucket("b", {Rate::PerSecond(10), 10}).ok());
  const BucketConfig next{Rate::PerSecond(100), 40};
  EXPECT_EQ(InChild([&] {
              segment_testing::SetReconfigureFaultHook([] { raise(SIGKILL); });
              auto child = Segment::Open(scratch.path());
              if (!child.ok()) return 1;
              (*child)->OpenBucket("b", next, /*reconfigure=*/true).IgnoreError();
              return 2;
            }),
            128 + SIGKILL);
  auto after = MustOpen(scratch.path());
  ASSERT_NE(after, nullptr);
  auto bucket = after->FindBucket("b");
  ASSERT_TRUE(bucket.ok()) << bucket.status();
  EXPECT_EQ(bucket->Capacity(), 40);
  ASSERT_TRUE(after->OpenBucket("b", next, /*reconfigure=*/true).ok());
  auto info = after->Inspect();
  ASSERT_TRUE(info.ok());
  ASSERT_EQ(info->buckets.size(), 1u);
  EXPECT_EQ(info->buckets[0].config.capacity, 40u);
  EXPECT_EQ(info->buckets[0].configured.capacity, 40u);
}

// A limit learned from the provider's headers lives in the segment: a process
// that opens the bucket later with its configured limit runs at the learned
// one, a new configuration is lowered the same way, and only new evidence
// (LearnBucket) changes it.
TEST(SegmentSeamsTest, ALearnedLimitOutlivesLaterOpens) {
  ScratchSegment scratch;
  FakeClock clock(1'000 * kSec);
  SegmentOptions options;
  options.clock = Clock::Fake(&clock);
  auto first = MustOpen(scratch.path(), options);
  ASSERT_NE(first, nullptr);
  const BucketConfig configured{Rate::PerMinute(1'000), 100};
  ASSERT_TRUE(first->OpenBucket("rpm", configured).ok());
  ASSERT_TRUE(first->LearnBucket("rpm", Rate::PerMinute(100)).ok());

  auto later = MustOpen(scratch.path(), options);  // as a process starting later would
  ASSERT_NE(later, nullptr);
  auto bucket = later->OpenBucket("rpm", configured, /*reconfigure=*/true);
  ASSERT_TRUE(bucket.ok()) << bucket.status();
  EXPECT_EQ(bucket->Capacity(), 10);
  EXPECT_EQ(bucket->learned(), Rate::PerMinute(100));
  // A new configuration is recorded, and still lowered to what was learned.
  ASSERT_TRUE(later->OpenBucket("rpm", {Rate::PerMinute(2'000), 200}, true).ok());
  EXPECT_EQ(bucket->Capacity(), 10);
  // New evidence raises it again, never above the configuration.
  ASSERT_TRUE(first->LearnBucket("rpm", Rate::PerMinute(500)).ok());
  EXPECT_EQ(bucket->Capacity(), 50);
  ASSERT_TRUE(first->LearnBucket("rpm", std::nullopt).ok());
  EXPECT_EQ(bucket->Capacity(), 200);
  auto info = later->Inspect();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->buckets[0].configured.rate, Rate::PerMinute(2'000));
  EXPECT_EQ(info->buckets[0].learned, std::nullopt);
  EXPECT_EQ(first->LearnBucket("missing", Rate::PerMinute(5)).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace sluice
