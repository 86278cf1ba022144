// A host killed with SIGKILL while it holds concurrency leases: nothing
// releases them, and they expire with their time to live, no sooner (the
// other host is refused at half of it) and not much later. Prints the time
// from the kill to the lease taken back.
//
// The host is a forked process, forked before the test process starts any
// thread (a child forked beside a running thread may inherit a held lock).

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "sluice/clock.h"
#include "sluice/fleet_store.h"
#include "sluice/store.h"
#include "tests/tools/redis_server.h"

namespace sluice {
namespace {

constexpr uint32_t kCap = 3;
constexpr absl::Duration kTtl = absl::Seconds(2);

FleetOptions Options(uint16_t port, std::string host) {
  FleetOptions o;
  o.redis.port = port;
  o.redis.timeout = absl::Seconds(1);
  o.host = std::move(host);
  o.start_refiller = false;
  o.concurrency_lease_ttl = kTtl;
  return o;
}

// The doomed host: takes every lease, says so on `ready`, and waits to die.
[[noreturn]] void HoldEverything(uint16_t port, int ready) {
  auto local = NewLocalStore();
  auto fleet = FleetStore::Create(local.get(), Options(port, "doomed"));
  char held = 0;
  if (fleet.ok()) {
    absl::StatusOr<StoredLeases> cap = (*fleet)->Leases("cap", kCap);
    for (uint32_t i = 0; cap.ok() && i < kCap; ++i) {
      absl::StatusOr<int32_t> got = cap->TryAcquire();
      if (got.ok() && *got >= 0) ++held;
    }
  }
  if (write(ready, &held, 1) != 1) _exit(1);
  for (;;) pause();
}

TEST(RedisLeasesKillTest, AKilledHostsLeasesExpireWithinTheirTimeToLive) {
  RedisServer redis;
  ASSERT_TRUE(redis.ok());
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(p[0]);
    HoldEverything(redis.port(), p[1]);
  }
  close(p[1]);
  char held = 0;
  ASSERT_EQ(read(p[0], &held, 1), 1);
  close(p[0]);
  ASSERT_EQ(held, static_cast<char>(kCap));
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  const int64_t killed = Clock::MonotonicNanos();
  int status = 0;
  waitpid(pid, &status, 0);

  auto local = NewLocalStore();
  auto fleet = FleetStore::Create(local.get(), Options(redis.port(), "survivor"));
  ASSERT_TRUE(fleet.ok());
  absl::StatusOr<StoredLeases> cap = (*fleet)->Leases("cap", kCap);
  ASSERT_TRUE(cap.ok());
  EXPECT_EQ(cap->TryAcquire().value_or(-2), -1);
  // At half the time to live (the last refresh was at most a third of it
  // before the kill), the dead host's leases still count.
  absl::SleepFor(kTtl / 2 - absl::Nanoseconds(Clock::MonotonicNanos() - killed));
  EXPECT_EQ(cap->TryAcquire().value_or(-2), -1);
  EXPECT_EQ(cap->InFlight(), kCap);
  // Within the time to live and a wide margin, every one is free again.
  absl::StatusOr<uint32_t> got = cap->Acquire(kTtl + absl::Seconds(3));
  const int64_t expired = Clock::MonotonicNanos() - killed;
  ASSERT_TRUE(got.ok()) << got.status();
  std::printf(
      "concurrency leases of a host killed with SIGKILL: free again %.0f ms after the "
      "kill (time to live %.0f ms, refreshed every third of it)\n",
      static_cast<double>(expired) / 1e6, absl::ToDoubleMilliseconds(kTtl));
  EXPECT_GE(expired, absl::ToInt64Nanoseconds(kTtl / 2));
  EXPECT_LE(expired, absl::ToInt64Nanoseconds(kTtl + absl::Seconds(3)));
  // The others expire within moments (they were taken moments apart).
  for (uint32_t i = 1; i < kCap; ++i) EXPECT_TRUE(cap->Acquire(absl::Seconds(1)).ok());
  EXPECT_EQ(cap->Reclaim(), 0u);
}

}  // namespace
}  // namespace sluice
