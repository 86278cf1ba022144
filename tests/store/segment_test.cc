// The shared-memory segment within one process (and forked children where a
// second process is the point): creation, permissions, the bucket table,
// reclaiming, layout checks, recovery and removal.
#include "sluice/segment.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/pool.h"
#include "sluice/segment_info.h"
#include "src/store/process.h"
#include "src/store/segment_layout.h"
#include "tests/store/segment_test_util.h"

namespace sluice {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr BucketConfig kTenPerSecond{Rate::PerSecond(10), 5};

std::unique_ptr<Segment> MustOpen(const std::string& path, SegmentOptions options = {}) {
  auto segment = Segment::Open(path, std::move(options));
  EXPECT_TRUE(segment.ok()) << segment.status();
  return segment.ok() ? *std::move(segment) : nullptr;
}

TEST(SegmentTest, CreatesWithMode0600AndSharesBucketsBetweenOpens) {
  ScratchSegment scratch;
  auto a = MustOpen(scratch.path());
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(a->initialized_by_this_open());
  struct stat st;
  ASSERT_EQ(stat(scratch.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto b = MustOpen(scratch.path());
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE(b->initialized_by_this_open());
  auto in_a = a->OpenBucket("api", kTenPerSecond);
  auto in_b = b->OpenBucket("api", kTenPerSecond);
  ASSERT_TRUE(in_a.ok() && in_b.ok());
  EXPECT_EQ(in_a->slot(), in_b->slot());
  EXPECT_TRUE(in_a->TryAcquire(4).granted());
  EXPECT_EQ(in_b->Available(), 1);
  EXPECT_FALSE(in_b->TryAcquire(2).granted());
  EXPECT_EQ(in_a->TryAcquire(6).outcome, Outcome::kNeverFits);
}

TEST(SegmentTest, ShortNamesLiveInDevShm) {
  const std::string name = absl::StrCat("sluice-test-name-", getpid());
  auto segment = Segment::Open(name);
  ASSERT_TRUE(segment.ok()) << segment.status();
  EXPECT_EQ((*segment)->path(), "/dev/shm/" + name);
  EXPECT_TRUE((*segment)->Unlink().ok());
  EXPECT_EQ(Segment::Open("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Segment::Open("..").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SegmentTest, GroupAccessCreatesMode0660) {
  ScratchSegment scratch;
  SegmentOptions options;
  options.group_access = true;
  ASSERT_NE(MustOpen(scratch.path(), options), nullptr);
  struct stat st;
  ASSERT_EQ(stat(scratch.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
}

TEST(SegmentTest, MissingSegmentIsNotFoundWithoutCreate) {
  ScratchSegment scratch;
  SegmentOptions options;
  options.create = false;
  const auto s = Segment::Open(scratch.path(), options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr(scratch.path()));
}

TEST(SegmentTest, RefusesSymlinksNonRegularFilesOtherOwnersAndWideModes) {
  ScratchSegment target, link, fifo, foreign, wide;
  ASSERT_NE(MustOpen(target.path()), nullptr);
  ASSERT_EQ(symlink(target.path().c_str(), link.path().c_str()), 0);
  auto s = Segment::Open(link.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(link.path()), HasSubstr("symbolic link")));

  ASSERT_EQ(mkfifo(fifo.path().c_str(), 0600), 0);
  s = Segment::Open(fifo.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("not a regular file"));

  ASSERT_NE(MustOpen(wide.path()), nullptr);
  ASSERT_EQ(chmod(wide.path().c_str(), 0644), 0);
  s = Segment::Open(wide.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("0644"));

  ASSERT_NE(MustOpen(foreign.path()), nullptr);
  if (geteuid() != 0) GTEST_SKIP() << "changing a file's owner needs root";
  ASSERT_EQ(chown(foreign.path().c_str(), 65534, 65534), 0);
  s = Segment::Open(foreign.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("owned by uid 65534"));
}

TEST(SegmentTest, ExistingBucketWithOtherParametersNeedsReconfigure) {
  ScratchSegment scratch;
  FakeClock clock(1'000'000'000);
  SegmentOptions options;
  options.clock = Clock::Fake(&clock);
  auto segment = MustOpen(scratch.path(), options);
  auto bucket = segment->OpenBucket("api", {Rate::PerSecond(100), 100});
  ASSERT_TRUE(bucket.ok());
  ASSERT_TRUE(bucket->TryAcquire(60).granted());
  const auto s = segment->OpenBucket("api", {Rate::PerSecond(200), 200}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("'api'"), HasSubstr("rate 100/s burst 100"),
                                 HasSubstr("rate 200/s burst 200")));
  auto changed = segment->OpenBucket("api", {Rate::PerSecond(200), 200}, /*reconfigure=*/true);
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_EQ(changed->Capacity(), 200);
  EXPECT_EQ(changed->Available(), 80);  // 40% available stays 40%
  auto info = segment->Inspect();
  ASSERT_TRUE(info.ok());
  ASSERT_EQ(info->buckets.size(), 1u);
  EXPECT_EQ(info->buckets[0].config.capacity, 200u);
}

TEST(SegmentTest, FindBucketAndBadNames) {
  ScratchSegment scratch;
  auto segment = MustOpen(scratch.path());
  EXPECT_EQ(segment->FindBucket("nope").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(segment->OpenBucket("yes", kTenPerSecond).ok());
  EXPECT_TRUE(segment->FindBucket("yes").ok());
  EXPECT_EQ(segment->OpenBucket("", kTenPerSecond).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(segment->OpenBucket(std::string(kMaxBucketNameLength + 1, 'x'), kTenPerSecond)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(segment->OpenBucket(std::string(kMaxBucketNameLength, 'x'), kTenPerSecond).ok());
  EXPECT_EQ(segment->OpenBucket("a\nb", kTenPerSecond).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(segment->OpenBucket("zero", {Rate::PerSecond(1), 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SegmentTest, FullTableIsAClearErrorAndNamesNeverCollide) {
  ScratchSegment scratch;
  SegmentOptions options;
  options.slots = 4;
  auto segment = MustOpen(scratch.path(), options);
  std::vector<uint32_t> slots;
  for (const char* name : {"a", "b", "c", "d"}) {
    auto bucket = segment->OpenBucket(name, kTenPerSecond);
    ASSERT_TRUE(bucket.ok()) << bucket.status();
    slots.push_back(bucket->slot());
    EXPECT_TRUE(bucket->TryAcquire(1).granted());
  }
  std::sort(slots.begin(), slots.end());
  EXPECT_EQ(std::unique(slots.begin(), slots.end()), slots.end());
  const auto s = segment->OpenBucket("e", kTenPerSecond).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("all 4 slots are in use"));
  for (const char* name : {"a", "b", "c", "d"}) {
    EXPECT_EQ(segment->FindBucket(name)->Available(), 4) << name;
  }
}

TEST(SegmentTest, ReclaimsIdleBucketsNoLiveProcessHolds) {
  ScratchSegment scratch;
  FakeClock clock(1'000'000'000);
  SegmentOptions options;
  options.slots = 3;
  options.clock = Clock::Fake(&clock);
  auto segment = MustOpen(scratch.path(), options);
  // A child process opens three buckets, drains one, and exits.
  ASSERT_EQ(InChild([&] {
              auto child = Segment::Open(scratch.path(), options);
              if (!child.ok()) return 1;
              for (const char* name : {"idle", "busy", "held"}) {
                if (!(*child)->OpenBucket(name, kTenPerSecond).ok()) return 2;
              }
              return (*child)->FindBucket("busy")->TryAcquire(5).granted() ? 0 : 3;
            }),
            0);
  // This live process holds "held".
  ASSERT_TRUE(segment->FindBucket("held").ok());
  clock.Advance(100'000'000);  // 0.1 s: "busy" is still refilling
  auto freed = segment->ReclaimIdle(absl::Milliseconds(50));
  ASSERT_TRUE(freed.ok()) << freed.status();
  EXPECT_EQ(*freed, 1);
  EXPECT_EQ(segment->FindBucket("idle").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(segment->FindBucket("busy").ok());
  EXPECT_TRUE(segment->FindBucket("held").ok());
  // The freed slot is reused; names whose probe passed through it still resolve.
  auto fresh = segment->OpenBucket("fresh", kTenPerSecond);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->Available(), 5);
  EXPECT_TRUE(segment->FindBucket("busy").ok());
  EXPECT_TRUE(segment->FindBucket("held").ok());
  clock.Advance(10'000'000'000);
  EXPECT_EQ(*segment->ReclaimIdle(absl::Seconds(1)), 0);  // the rest are held by this process
}

// A pool holds permits leased from a fleet: reclaiming it would lose them,
// however long it sits unused.
TEST(SegmentTest, NeverReclaimsAPool) {
  ScratchSegment scratch;
  FakeClock clock(1'000'000'000);
  SegmentOptions options;
  options.clock = Clock::Fake(&clock);
  auto segment = MustOpen(scratch.path(), options);
  ASSERT_EQ(InChild([&] {
              auto child = Segment::Open(scratch.path(), options);
              if (!child.ok()) return 1;
              auto pool = (*child)->OpenPool("leased", kTenPerSecond);
              if (!pool.ok()) return 2;
              return PoolRef(pool->ref().cell()).Credit(3) == 3 ? 0 : 3;
            }),
            0);
  clock.Advance(int64_t{3'600} * 1'000'000'000);
  auto freed = segment->ReclaimIdle(absl::ZeroDuration());
  ASSERT_TRUE(freed.ok()) << freed.status();
  EXPECT_EQ(*freed, 0);
  auto pool = segment->FindBucket("leased");
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->Available(), 3);
  // And a pool cannot be opened over an ordinary bucket.
  ASSERT_TRUE(segment->OpenBucket("plain", kTenPerSecond).ok());
  EXPECT_EQ(segment->OpenPool("plain", kTenPerSecond).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(SegmentTest, CountersAndLeaseSetsShareTheTableWithBuckets) {
  ScratchSegment scratch;
  SegmentOptions options;
  options.max_leases = 8;
  auto segment = MustOpen(scratch.path(), options);
  auto counter = segment->OpenCounter("scope:global:usd_day");
  ASSERT_TRUE(counter.ok()) << counter.status();
  EXPECT_TRUE(counter->TryAdd(20'000, 700, 1'000));
  EXPECT_EQ(segment->OpenCounter("scope:global:usd_day")->Used(20'000), 700);

  auto leases = segment->OpenLeases("scope:global:concurrency", 5);
  ASSERT_TRUE(leases.ok()) << leases.status();
  EXPECT_GE(leases->TryAcquire(42, 0), 0);
  EXPECT_EQ(segment->OpenLeases("scope:global:concurrency", 5)->InFlight(), 1u);
  auto resized = segment->OpenLeases("scope:global:concurrency", 6);
  EXPECT_EQ(resized.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(resized.status().message(), HasSubstr("exists with 5 leases"));
  auto too_many = segment->OpenLeases("another", 4);  // 3 of 8 words left
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(too_many.status().message(), HasSubstr("3 of 8 lease words are free"));
  EXPECT_EQ(segment->FindBucket("another").status().code(), absl::StatusCode::kNotFound);

  // A name belongs to one kind.
  auto wrong = segment->OpenBucket("scope:global:usd_day", kTenPerSecond);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(wrong.status().message(), HasSubstr("is a counter, not a bucket"));

  auto info = segment->Inspect();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->slots_used, 2u);
  ASSERT_EQ(info->counters.size(), 1u);
  ASSERT_EQ(info->leases.size(), 1u);
  EXPECT_EQ(info->leases[0].capacity, 5u);
  EXPECT_EQ(info->leases[0].in_flight, 1u);
  // Reopened by another process, everything validates.
  ASSERT_EQ(
      InChild([&] {
        auto other = Segment::Open(scratch.path());
        return other.ok() && (*other)->OpenCounter("scope:global:usd_day")->Used(20'000) == 700 ? 0
                                                                                                : 1;
      }),
      0);
}

TEST(SegmentTest, InspectReadsEachCounterWindowAndLeaseBottlenecks) {
  ScratchSegment scratch;
  auto segment = MustOpen(scratch.path());
  auto day = segment->OpenCounter("scope:global:usd_day");
  auto fresh = segment->OpenCounter("scope:global:usd_month");
  auto leases = segment->OpenLeases("scope:global:concurrency", 3);
  ASSERT_TRUE(day.ok() && fresh.ok() && leases.ok());
  ASSERT_TRUE(day->TryAdd(20'000, 1'500, 1'000'000));
  day->Debit(20'001, 250);  // a new window starts from zero
  day->bottlenecks()->fetch_add(2);
  leases->bottlenecks()->fetch_add(5);
  ASSERT_GE(leases->TryAcquire(42, 0), 0);

  auto info = segment->Inspect();
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ(info->counters.size(), 2u);
  std::sort(info->counters.begin(), info->counters.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  EXPECT_EQ(info->counters[0].name, "scope:global:usd_day");
  EXPECT_EQ(info->counters[0].window, 20'001);
  EXPECT_EQ(info->counters[0].used, 250);
  EXPECT_EQ(info->counters[0].bottlenecks, 2u);
  // A counter never touched is window 0 with nothing used.
  EXPECT_EQ(info->counters[1].name, "scope:global:usd_month");
  EXPECT_EQ(info->counters[1].window, 0);
  EXPECT_EQ(info->counters[1].used, 0);
  EXPECT_EQ(info->counters[1].bottlenecks, 0u);
  ASSERT_EQ(info->leases.size(), 1u);
  EXPECT_EQ(info->leases[0].in_flight, 1u);
  EXPECT_EQ(info->leases[0].bottlenecks, 5u);
  // The largest window and amount a word holds come back whole.
  day->Debit(WindowCounterRef::kMaxWindow, WindowCounterRef::kMaxAmount);
  info = segment->Inspect();
  ASSERT_TRUE(info.ok());
  for (const SegmentInfo::Counter& c : info->counters) {
    if (c.name != "scope:global:usd_day") continue;
    EXPECT_EQ(c.window, WindowCounterRef::kMaxWindow);
    EXPECT_EQ(c.used, WindowCounterRef::kMaxAmount);
  }
}

TEST(SegmentTest, LeasesOfAKilledProcessComeBack) {
  ScratchSegment scratch;
  auto segment = MustOpen(scratch.path());
  auto leases = segment->OpenLeases("cap", 2);
  ASSERT_TRUE(leases.ok());
  // A child takes both leases under its own tag and is killed holding them.
  ASSERT_EQ(InChild([&] {
              auto child = Segment::Open(scratch.path());
              auto mine = (*child)->OpenLeases("cap", 2);
              const uint64_t tag = *ProcessTag();
              if (mine->TryAcquire(tag, 0) < 0 || mine->TryAcquire(tag, 0) < 0) return 1;
              raise(SIGKILL);
              return 2;
            }),
            128 + SIGKILL);
  EXPECT_EQ(leases->InFlight(), 2u);
  // Its tag names a dead process (that pid with that start time is gone).
  const auto index = leases->Acquire(*ProcessTag(), absl::ZeroDuration(), 0,
                                     [](uint64_t tag) { return !ProcessTagMaybeAlive(tag); });
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(leases->InFlight(), 1u);
}

TEST(SegmentTest, InspectListsBucketsAndAttachedProcesses) {
  ScratchSegment scratch;
  auto segment = MustOpen(scratch.path());
  auto bucket = segment->OpenBucket("team:marketing", {Rate::PerMinute(100), 10});
  ASSERT_TRUE(bucket.ok());
  ASSERT_TRUE(bucket->TryAcquire(8).granted());
  auto info = segment->Inspect();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->path, scratch.path());
  EXPECT_EQ(info->abi_major, kSegmentAbiMajor);
  EXPECT_EQ(info->slots, 1024u);
  EXPECT_EQ(info->slots_used, 1u);
  ASSERT_EQ(info->buckets.size(), 1u);
  EXPECT_EQ(info->buckets[0].name, "team:marketing");
  EXPECT_EQ(info->buckets[0].available, 2);
  EXPECT_EQ(info->buckets[0].pressure, Pressure::kHigh);
  ASSERT_EQ(info->processes.size(), 1u);
  EXPECT_EQ(info->processes[0].pid, getpid());
  EXPECT_TRUE(info->processes[0].alive);
}

TEST(SegmentTest, UnlinkRemovesOnlyTheFileThatWasOpened) {
  ScratchSegment scratch;
  auto segment = MustOpen(scratch.path());
  ASSERT_EQ(unlink(scratch.path().c_str()), 0);
  auto other = MustOpen(scratch.path());  // a new segment under the same name
  const auto s = segment->Unlink();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("another file"));
  EXPECT_EQ(access(scratch.path().c_str(), F_OK), 0);
  EXPECT_TRUE(other->Unlink().ok());
  EXPECT_NE(access(scratch.path().c_str(), F_OK), 0);
}

TEST(SegmentTest, RemoveDeletesASegmentOpenRefuses) {
  ScratchSegment scratch, link;
  ASSERT_NE(MustOpen(scratch.path()), nullptr);
  ASSERT_TRUE(PatchFile(scratch.path(), offsetof(segment_layout::Header, abi_major), uint32_t{9}));
  ASSERT_FALSE(Segment::Open(scratch.path()).ok());
  ASSERT_EQ(symlink(scratch.path().c_str(), link.path().c_str()), 0);
  EXPECT_EQ(Segment::Remove(link.path()).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(access(scratch.path().c_str(), F_OK), 0);
  EXPECT_TRUE(Segment::Remove(scratch.path()).ok());
  EXPECT_NE(access(scratch.path().c_str(), F_OK), 0);
  EXPECT_EQ(Segment::Remove(scratch.path()).code(), absl::StatusCode::kNotFound);
}

TEST(SegmentTest, NoRoomForTheSegmentIsAnErrorAtCreationNotACrashLater) {
  ScratchSegment scratch;
  // A file size limit stands in for a full /dev/shm: the space is reserved
  // up front, so the shortage shows at Open, not as SIGBUS on first use.
  EXPECT_EQ(InChild([&] {
              signal(SIGXFSZ, SIG_IGN);
              const rlimit limit{8192, 8192};
              setrlimit(RLIMIT_FSIZE, &limit);
              const auto s = Segment::Open(scratch.path()).status();
              return s.code() == absl::StatusCode::kResourceExhausted &&
                             absl::StrContains(s.message(), scratch.path()) &&
                             absl::StrContains(s.message(), "cannot reserve")
                         ? 0
                         : 1;
            }),
            0);
  // The next process, without the limit, creates it.
  auto segment = MustOpen(scratch.path());
  ASSERT_NE(segment, nullptr);
  EXPECT_TRUE(segment->initialized_by_this_open());
}

TEST(SegmentTest, MissingDirectoryIsNamedAsSuch) {
  const auto s = Segment::Open("/nonexistent-sluice-dir/segment").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("cannot create or open segment /nonexistent-sluice-dir"),
                                 HasSubstr("No such file or directory")));
}

TEST(SegmentTest, LayoutMismatchNamesThePathAndBothVersions) {
  ScratchSegment scratch;
  ASSERT_NE(MustOpen(scratch.path()), nullptr);
  ASSERT_TRUE(PatchFile(scratch.path(), offsetof(segment_layout::Header, abi_major), uint32_t{7}));
  auto s = Segment::Open(scratch.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(
      s.message(),
      AllOf(HasSubstr(scratch.path()), HasSubstr(absl::StrCat("version 7.", kSegmentAbiMinor)),
            HasSubstr(absl::StrCat("version ", kSegmentAbiMajor, ".", kSegmentAbiMinor))));

  ASSERT_TRUE(
      PatchFile(scratch.path(), offsetof(segment_layout::Header, abi_major), kSegmentAbiMajor));
  ASSERT_TRUE(
      PatchFile(scratch.path(), offsetof(segment_layout::Header, fingerprint), uint64_t{42}));
  s = Segment::Open(scratch.path()).status();
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("fingerprint 0x2a"), HasSubstr("another struct layout")));
}

TEST(SegmentTest, TruncatedAndForeignFilesAreRefused) {
  ScratchSegment scratch, foreign;
  ASSERT_NE(MustOpen(scratch.path()), nullptr);
  ASSERT_EQ(truncate(scratch.path().c_str(), 8192), 0);
  auto s = Segment::Open(scratch.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(scratch.path()), HasSubstr("truncated")));

  ASSERT_TRUE(WriteFile(foreign.path(), {'h', 'e', 'l', 'l', 'o', '\n'}));
  s = Segment::Open(foreign.path()).status();
  EXPECT_THAT(s.message(), HasSubstr("too short"));
  std::vector<char> text(10000, 'x');
  ASSERT_TRUE(WriteFile(foreign.path(), text));
  s = Segment::Open(foreign.path()).status();
  EXPECT_THAT(s.message(), HasSubstr("not a sluice segment"));
  EXPECT_EQ(ReadFile(foreign.path()), text);  // and left untouched
}

TEST(SegmentTest, AbandonedOrEarlierBootSegmentsAreInitializedAgain) {
  ScratchSegment zeros, abandoned, old_boot;
  ASSERT_TRUE(WriteFile(zeros.path(), std::vector<char>(8192, 0)));
  auto a = MustOpen(zeros.path());
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(a->initialized_by_this_open());

  ASSERT_NE(MustOpen(abandoned.path()), nullptr);
  ASSERT_TRUE(PatchFile(abandoned.path(), offsetof(segment_layout::Header, state),
                        segment_layout::kHeaderInitializing));
  auto b = MustOpen(abandoned.path());
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(b->initialized_by_this_open());

  {
    auto c = MustOpen(old_boot.path());
    ASSERT_TRUE(c->OpenBucket("gone", kTenPerSecond).ok());
  }
  char other_boot[segment_layout::kBootIdBytes] = "00000000-0000-0000-0000-000000000000";
  ASSERT_TRUE(PatchFile(old_boot.path(), offsetof(segment_layout::Header, boot_id), other_boot));
  auto c = MustOpen(old_boot.path());
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->initialized_by_this_open());
  EXPECT_EQ(c->FindBucket("gone").status().code(), absl::StatusCode::kNotFound);
}

TEST(SegmentTest, ForkedChildUsesTheParentsSegmentWithItsOwnLock) {
  ScratchSegment scratch;
  auto segment = MustOpen(scratch.path());
  ASSERT_TRUE(segment->OpenBucket("api", kTenPerSecond).ok());
  ASSERT_EQ(InChild([&] {
              auto bucket = segment->OpenBucket("api", kTenPerSecond);
              if (!bucket.ok() || !bucket->TryAcquire(5).granted()) return 1;
              auto info = segment->Inspect();
              return info.ok() && info->processes.size() == 2 ? 0 : 2;
            }),
            0);
  EXPECT_EQ(segment->FindBucket("api")->Available(), 0);
  auto info = segment->Inspect();
  ASSERT_TRUE(info.ok());
  int alive = 0;
  for (const auto& p : info->processes) alive += p.alive;
  EXPECT_EQ(alive, 1);  // the child is gone; its entry is dead
}

}  // namespace
}  // namespace sluice
