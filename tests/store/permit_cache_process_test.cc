// Permit caches over a bucket in a shared segment: each process has its own
// caches over the one shared word, and together they admit exactly what the
// bucket holds, no more.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <new>

#include "gtest/gtest.h"
#include "sluice/permit_cache.h"
#include "sluice/segment.h"
#include "tests/store/segment_test_util.h"

namespace sluice {
namespace {

constexpr int kChildren = 3;
// No refill during the test: one permit an hour.
const BucketConfig kConfig{Rate::PerHour(1), 1000};

struct Tallies {
  std::atomic<int64_t> admitted[kChildren];
};

// A child's body: its own segment handle and cache, single permits until
// refused, then the cache is destroyed (returning what it holds).
[[noreturn]] void AdmitUntilRefused(const std::string& path, std::atomic<int64_t>* admitted) {
  auto segment = Segment::Open(path);
  if (!segment.ok()) _exit(10);
  auto bucket = (*segment)->OpenBucket("hot", kConfig);
  if (!bucket.ok()) _exit(11);
  {
    auto cache = PermitCache::Create(bucket->ref(), {.batch = 64});
    if (!cache.ok()) _exit(12);
    while ((*cache)->TryAcquire(1).granted()) admitted->fetch_add(1);
  }
  _exit(0);
}

TEST(PermitCacheProcessTest, ProcessesCachingOneSharedWordAdmitExactlyTheCapacity) {
  ScratchSegment scratch;
  auto segment = Segment::Open(scratch.path());
  ASSERT_TRUE(segment.ok()) << segment.status();
  auto bucket = (*segment)->OpenBucket("hot", kConfig);
  ASSERT_TRUE(bucket.ok()) << bucket.status();
  void* mem =
      mmap(nullptr, sizeof(Tallies), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* tallies = new (mem) Tallies{};
  pid_t pids[kChildren];
  for (int c = 0; c < kChildren; ++c) {
    pids[c] = fork();
    if (pids[c] == 0) AdmitUntilRefused(scratch.path(), &tallies->admitted[c]);
  }
  int64_t total = 0;
  for (int c = 0; c < kChildren; ++c) {
    int status = 0;
    ASSERT_EQ(waitpid(pids[c], &status, 0), pids[c]);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child " << c << ": " << status;
    total += tallies->admitted[c].load();
  }
  // A child stops only when its own cache is empty and the word refuses one
  // permit, so when all have stopped the bucket is spent and nothing was
  // left cached: every permit admitted once.
  EXPECT_EQ(total, 1000);
  EXPECT_EQ(bucket->Available(), 0);
  munmap(mem, sizeof(Tallies));
}

// A child's body: its own handle on the segment and a cache that takes 3
// permits (a batch of 64). With `tidy` the cache is destroyed before the
// child exits; without, _exit skips destructors, as a kill would.
[[noreturn]] void TakeThree(const std::string& path, bool tidy) {
  auto segment = Segment::Open(path);
  if (!segment.ok()) _exit(10);
  auto bucket = (*segment)->FindBucket("hot");
  if (!bucket.ok()) _exit(11);
  auto cache = PermitCache::Create(bucket->ref(), {.batch = 64});
  if (!cache.ok() || !(*cache)->TryAcquire(3).granted()) _exit(12);
  if (tidy) cache->reset();
  _exit(0);
}

int RunChild(const std::string& path, bool tidy) {
  const pid_t child = fork();
  if (child == 0) TakeThree(path, tidy);
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(PermitCacheProcessTest, AProcessReturnsWhatItCachedToTheSharedWord) {
  ScratchSegment scratch;
  auto segment = Segment::Open(scratch.path());
  ASSERT_TRUE(segment.ok()) << segment.status();
  auto bucket = (*segment)->OpenBucket("hot", kConfig);
  ASSERT_TRUE(bucket.ok()) << bucket.status();
  // Gone without returning: the whole batch stays taken.
  ASSERT_EQ(RunChild(scratch.path(), /*tidy=*/false), 0);
  EXPECT_EQ(bucket->Available(), 1000 - 64);
  // This one destroyed its cache: only the 3 it admitted stay taken.
  ASSERT_EQ(RunChild(scratch.path(), /*tidy=*/true), 0);
  EXPECT_EQ(bucket->Available(), 1000 - 64 - 3);
}

TEST(PermitCacheProcessTest, AForkedChildStartsWithItsCachesEmpty) {
  ScratchSegment scratch;
  auto segment = Segment::Open(scratch.path());
  ASSERT_TRUE(segment.ok()) << segment.status();
  auto bucket = (*segment)->OpenBucket("hot", kConfig);
  ASSERT_TRUE(bucket.ok()) << bucket.status();
  auto cache = PermitCache::Create(bucket->ref(), {.batch = 64});
  ASSERT_TRUE(cache.ok()) << cache.status();
  ASSERT_TRUE((*cache)->TryAcquire(1).granted());  // 63 cached in this process
  const pid_t child = fork();
  if (child == 0) {
    // The copy of this thread's cache is empty: the child takes a batch of
    // its own rather than admitting the parent's 63 a second time.
    const bool took = (*cache)->TryAcquire(1).granted();
    _exit(took && (*cache)->Cached() == 63 && bucket->Available() == 1000 - 128 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ((*cache)->Cached(), 63u);
  EXPECT_EQ(bucket->Available(), 1000 - 128);
  cache->reset();
  EXPECT_EQ(bucket->Available(), 1000 - 65);
}

}  // namespace
}  // namespace sluice
