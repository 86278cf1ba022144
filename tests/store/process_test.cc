// Telling processes apart: start times, liveness on positive evidence only,
// the tag a lease carries, and the PID namespace.
#include "src/store/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/store/segment_test_util.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kPidMask = (uint64_t{1} << 22) - 1;

// A child that exits at once; returns its pid once it has been reaped.
pid_t ReapedChild() {
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  waitpid(pid, nullptr, 0);
  return pid;
}

// Leaves `spare` descriptors free in this process (run it in a child).
void UseUpDescriptors(int spare) {
  rlimit limit{64, 64};
  setrlimit(RLIMIT_NOFILE, &limit);
  while (open("/dev/null", O_RDONLY) >= 0) {
  }
  for (int fd = 63; fd > 63 - spare; --fd) close(fd);
}

TEST(ProcessTest, ThisProcessHasAStartTimeThatDoesNotChange) {
  auto first = ReadStartTime(getpid());
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = ReadStartTime(getpid());
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*first, *second);
  EXPECT_EQ(ProcessLiveness(getpid(), *first), Liveness::kAlive);
  EXPECT_TRUE(MaybeAlive(getpid(), *first));
}

TEST(ProcessTest, AProcessThatIsGoneIsDead) {
  const pid_t gone = ReapedChild();
  EXPECT_EQ(ReadStartTime(gone).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ProcessLiveness(gone, 12345), Liveness::kDead);
  EXPECT_FALSE(MaybeAlive(gone, 12345));
  EXPECT_EQ(ProcessLiveness(0, 0), Liveness::kDead);
  EXPECT_EQ(ProcessLiveness(-1, 0), Liveness::kDead);
}

TEST(ProcessTest, AZombieHasExited) {
  const pid_t zombie = fork();
  if (zombie == 0) _exit(0);
  // Not reaped yet: the pid exists but the process holds nothing any more.
  // (Until the child has run to its exit it is alive; poll for that.)
  absl::StatusOr<uint64_t> start = ReadStartTime(zombie);
  for (int i = 0; i < 10'000 && start.ok(); ++i) {
    usleep(1000);
    start = ReadStartTime(zombie);
  }
  EXPECT_EQ(start.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(start.status().message(), HasSubstr("exited"));
  EXPECT_EQ(kill(zombie, 0), 0) << "the zombie's pid still exists";
  waitpid(zombie, nullptr, 0);
}

TEST(ProcessTest, APidReusedByAnotherProcessIsDead) {
  auto start = ReadStartTime(getpid());
  ASSERT_TRUE(start.ok());
  // This pid, but a start time it never had: another process's.
  EXPECT_EQ(ProcessLiveness(getpid(), *start + 1), Liveness::kDead);
}

TEST(ProcessTest, AnUnreadableProcIsUnknownAndCountsAsAlive) {
  auto parent_start = ReadStartTime(getpid());
  ASSERT_TRUE(parent_start.ok());
  const pid_t parent = getpid();
  EXPECT_EQ(InChild([&] {
              UseUpDescriptors(0);
              absl::StatusOr<uint64_t> read = ReadStartTime(parent);
              if (read.status().code() != absl::StatusCode::kUnavailable) return 1;
              if (ProcessLiveness(parent, *parent_start) != Liveness::kUnknown) return 2;
              if (!MaybeAlive(parent, *parent_start + 1)) return 3;
              // Nor can this process name itself for a lease.
              if (ProcessTag().status().code() != absl::StatusCode::kUnavailable) return 4;
              return 0;
            }),
            0);
}

TEST(ProcessTest, TheTagNamesThisProcessAndIsRecomputedAfterFork) {
  auto tag = ProcessTag();
  ASSERT_TRUE(tag.ok()) << tag.status();
  EXPECT_NE(*tag, 0u);
  EXPECT_EQ(static_cast<pid_t>(*tag & kPidMask), getpid());
  EXPECT_TRUE(ProcessTagMaybeAlive(*tag));
  const uint64_t parent_tag = *tag;
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t child = fork();
  if (child == 0) {
    auto mine = ProcessTag();
    uint64_t value = mine.ok() ? *mine : 0;
    _exit(write(fds[1], &value, sizeof(value)) == sizeof(value) && value != parent_tag ? 0 : 1);
  }
  uint64_t child_tag = 0;
  ASSERT_EQ(read(fds[0], &child_tag, sizeof(child_tag)), static_cast<ssize_t>(sizeof(child_tag)));
  int status = 0;
  waitpid(child, &status, 0);
  close(fds[0]);
  close(fds[1]);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child kept its parent's tag";
  EXPECT_EQ(static_cast<pid_t>(child_tag & kPidMask), child);
  // The child is gone: a lease tagged with it is anybody's.
  EXPECT_FALSE(ProcessTagMaybeAlive(child_tag));
  EXPECT_FALSE(ProcessTagMaybeAlive(0));
}

TEST(ProcessTest, ThePidNamespaceIsTheInodeOfProcSelfNsPid) {
  auto ns = PidNamespace();
  ASSERT_TRUE(ns.ok()) << ns.status();
  struct stat st;
  ASSERT_EQ(stat("/proc/self/ns/pid", &st), 0);
  EXPECT_EQ(*ns, static_cast<uint64_t>(st.st_ino));
}

}  // namespace
}  // namespace sluice
