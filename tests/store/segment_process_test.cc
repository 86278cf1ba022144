// Many processes on one segment, on the real clock: the bound holds across
// processes, survives kill -9 at random moments, and exactly one process
// initializes a new segment even when the creator dies halfway.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "sluice/segment.h"
#include "sluice/segment_info.h"
#include "src/store/segment_testing.h"
#include "tests/store/segment_test_util.h"

namespace sluice {
namespace {

// Counters in anonymous shared memory, written by children, read by the parent.
struct SharedCounters {
  std::atomic<int64_t> granted[64];
};

SharedCounters* MapCounters() {
  void* p = mmap(nullptr, sizeof(SharedCounters), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : new (p) SharedCounters{};
}

int WaitExitCode(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A child's body: open the segment and bucket itself, then take single
// permits until `until_ns`, counting each grant right after it lands.
[[noreturn]] void Hammer(const std::string& path, const BucketConfig& config, int64_t until_ns,
                         std::atomic<int64_t>* granted) {
  auto segment = Segment::Open(path);
  if (!segment.ok()) _exit(10);
  auto bucket = (*segment)->OpenBucket("shared", config);
  if (!bucket.ok()) _exit(11);
  while (Clock::MonotonicNanos() < until_ns) {
    if (bucket->TryAcquire(1).granted()) granted->fetch_add(1, std::memory_order_relaxed);
  }
  _exit(0);
}

TEST(SegmentProcessTest, EightProcessesNeverOverAdmitAndUseTheSupply) {
  ScratchSegment scratch;
  // 20,000/s with a burst of 2,000 (0.1 s of refill), so a scheduler that
  // parks every child for a moment wastes nothing.
  const BucketConfig config{Rate::PerSecond(20'000), 2'000};
  auto segment = Segment::Open(scratch.path());
  ASSERT_TRUE(segment.ok()) << segment.status();
  const int64_t created = Clock::MonotonicNanos();
  ASSERT_TRUE((*segment)->OpenBucket("shared", config).ok());
  SharedCounters* counters = MapCounters();
  ASSERT_NE(counters, nullptr);
  const int64_t until = created + 2'000'000'000;
  std::vector<pid_t> children;
  for (int i = 0; i < 8; ++i) {
    const pid_t pid = fork();
    if (pid == 0) Hammer(scratch.path(), config, until, &counters->granted[i]);
    children.push_back(pid);
  }
  for (pid_t pid : children) EXPECT_EQ(WaitExitCode(pid), 0);
  const int64_t ended = Clock::MonotonicNanos();
  int64_t total = 0;
  for (int i = 0; i < 8; ++i) total += counters->granted[i].load();
  // Never more than C + R*elapsed; at least 90% of C + R*run.
  EXPECT_LE(total, 2'000 + (ended - created) / 50'000 + 1);
  EXPECT_GE(total, (2'000 + (until - created) / 50'000) * 9 / 10);
  munmap(counters, sizeof(SharedCounters));
}

TEST(SegmentProcessTest, KillNineAtRandomMomentsLeavesAValidSegmentAndTheBound) {
  ScratchSegment scratch;
  const BucketConfig config{Rate::PerSecond(10'000), 100};
  SegmentOptions options;
  options.max_processes = 16;  // 400 children: dead entries must be reused
  auto segment = Segment::Open(scratch.path(), options);
  ASSERT_TRUE(segment.ok()) << segment.status();
  const int64_t created = Clock::MonotonicNanos();
  ASSERT_TRUE((*segment)->OpenBucket("shared", config).ok());
  SharedCounters* counters = MapCounters();
  ASSERT_NE(counters, nullptr);
  std::mt19937_64 rng(7);
  constexpr int kRounds = 200;
  for (int round = 0; round < kRounds; ++round) {
    pid_t pids[2];
    for (int c = 0; c < 2; ++c) {
      pids[c] = fork();
      if (pids[c] == 0) {
        // Half the children also create a bucket of their own, so some kills
        // land inside the locked slow path, mid-claim.
        if (c == 1) {
          auto own = Segment::Open(scratch.path());
          if (own.ok()) (void)(*own)->OpenBucket(absl::StrCat("k", round % 8), config);
        }
        Hammer(scratch.path(), config, Clock::MonotonicNanos() + 50'000'000, &counters->granted[c]);
      }
    }
    usleep(static_cast<useconds_t>(rng() % 3000));
    for (pid_t pid : pids) kill(pid, SIGKILL);
    for (pid_t pid : pids) WaitExitCode(pid);
  }
  // The segment still opens and validates; a new process keeps acquiring.
  auto again = Segment::Open(scratch.path(), options);
  ASSERT_TRUE(again.ok()) << again.status();
  auto bucket = (*again)->FindBucket("shared");
  ASSERT_TRUE(bucket.ok()) << bucket.status();
  const pid_t survivor = fork();
  if (survivor == 0) {
    Hammer(scratch.path(), config, Clock::MonotonicNanos() + 100'000'000, &counters->granted[2]);
  }
  EXPECT_EQ(WaitExitCode(survivor), 0);
  EXPECT_GT(counters->granted[2].load(), 0);
  const int64_t ended = Clock::MonotonicNanos();
  const int64_t total =
      counters->granted[0].load() + counters->granted[1].load() + counters->granted[2].load();
  EXPECT_LE(total, 100 + (ended - created) / 100'000 + 1);
  auto info = (*again)->Inspect();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_LE(info->buckets.size(), 9u);
  munmap(counters, sizeof(SharedCounters));
}

TEST(SegmentProcessTest, SixteenProcessesOpeningANewSegmentAgreeOnOneCreator) {
  ScratchSegment scratch;
  int go[2], results[2], done[2];
  ASSERT_EQ(pipe(go), 0);
  ASSERT_EQ(pipe(results), 0);
  ASSERT_EQ(pipe(done), 0);
  constexpr int kProcesses = 16;
  std::vector<pid_t> children;
  for (int i = 0; i < kProcesses; ++i) {
    const pid_t pid = fork();
    if (pid == 0) {
      close(go[1]);
      char c;
      (void)read(go[0], &c, 1);  // returns when the parent closes its end
      auto segment = Segment::Open(scratch.path());
      if (!segment.ok()) _exit(1);
      auto bucket = (*segment)->OpenBucket("shared", {Rate::PerHour(1), kProcesses});
      if (!bucket.ok()) _exit(2);
      const int64_t report[2] = {(*segment)->initialized_by_this_open() ? 1 : 0, bucket->slot()};
      const bool granted = bucket->TryAcquire(1).granted();
      (void)write(results[1], report, sizeof(report));
      close(done[1]);
      (void)read(done[0], &c, 1);  // stay attached until the parent has looked
      _exit(granted ? 0 : 3);
    }
    children.push_back(pid);
  }
  close(go[0]);
  close(go[1]);  // all children start at once
  close(results[1]);
  close(done[0]);
  int creators = 0;
  std::vector<int64_t> slots;
  int64_t report[2];
  while (slots.size() < kProcesses && read(results[0], report, sizeof(report)) == sizeof(report)) {
    creators += static_cast<int>(report[0]);
    slots.push_back(report[1]);
  }
  close(results[0]);
  EXPECT_EQ(creators, 1);
  ASSERT_EQ(slots.size(), static_cast<size_t>(kProcesses));
  for (int64_t s : slots) EXPECT_EQ(s, slots[0]);
  // All sixteen are still attached: one table, sixteen live registrations.
  SegmentOptions look;
  look.register_process = false;
  auto segment = Segment::Open(scratch.path(), look);
  ASSERT_TRUE(segment.ok());
  auto info = (*segment)->Inspect();
  ASSERT_TRUE(info.ok());
  ASSERT_EQ(info->buckets.size(), 1u);
  EXPECT_EQ(info->buckets[0].available, 0);  // each of the 16 permits went exactly once
  EXPECT_EQ(info->processes.size(), static_cast<size_t>(kProcesses));
  for (const auto& p : info->processes) EXPECT_TRUE(p.alive) << p.pid;
  close(done[1]);  // let them go
  int failed = 0;
  for (pid_t pid : children) failed += WaitExitCode(pid) != 0;
  EXPECT_EQ(failed, 0);
}

TEST(SegmentProcessTest, ACreatorKilledDuringInitializationIsRecoveredFrom) {
  ScratchSegment scratch;
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  const pid_t creator = fork();
  if (creator == 0) {
    segment_testing::SetInitFaultHook([&] {
      close(go[1]);  // let the others start while this one holds the lock
      usleep(100'000);
      raise(SIGKILL);
    });
    (void)Segment::Open(scratch.path());
    _exit(1);  // not reached
  }
  close(go[1]);
  char c;
  ASSERT_EQ(read(go[0], &c, 1), 0);  // the creator is inside initialization
  std::vector<pid_t> others;
  for (int i = 0; i < 8; ++i) {
    const pid_t pid = fork();
    if (pid == 0) {
      auto segment = Segment::Open(scratch.path());
      if (!segment.ok()) _exit(1);
      auto bucket = (*segment)->OpenBucket("shared", {Rate::PerHour(1), 8});
      _exit(bucket.ok() && bucket->TryAcquire(1).granted() ? 0 : 2);
    }
    others.push_back(pid);
  }
  EXPECT_EQ(WaitExitCode(creator), 128 + SIGKILL);
  for (pid_t pid : others) EXPECT_EQ(WaitExitCode(pid), 0);
  auto segment = Segment::Open(scratch.path());
  ASSERT_TRUE(segment.ok()) << segment.status();
  EXPECT_FALSE((*segment)->initialized_by_this_open());
  EXPECT_EQ((*segment)->FindBucket("shared")->Available(), 0);
}

}  // namespace
}  // namespace sluice
