// A fleet's concurrency caps in Redis (FleetStore::Leases): one cap for
// every host, leases that live while their holder refreshes them, a lease
// Redis lost counted as lost, and each on_redis_down while Redis is away.
// Hosts are FleetStores over stores of their own, in one process.

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "sluice/clock.h"
#include "sluice/fleet_store.h"
#include "sluice/store.h"
#include "tests/tools/redis_server.h"

namespace sluice {
namespace {

class RedisLeasesTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(redis_.ok()); }

  FleetOptions Options(std::string host, RedisDown down = RedisDown::kLocalShare) {
    FleetOptions o;
    o.redis.port = redis_.port();
    o.redis.timeout = absl::Milliseconds(500);
    o.host = std::move(host);
    o.start_refiller = false;
    o.on_redis_down = down;
    return o;
  }

  // A host: its own store, and a FleetStore over it.
  struct Host {
    std::unique_ptr<Store> local;
    std::unique_ptr<FleetStore> fleet;
  };
  Host NewHost(FleetOptions options) {
    Host h{NewLocalStore(), nullptr};
    auto fleet = FleetStore::Create(h.local.get(), std::move(options));
    EXPECT_TRUE(fleet.ok()) << fleet.status();
    if (fleet.ok()) h.fleet = *std::move(fleet);
    return h;
  }

  // A host whose leases live 300 ms unless it refreshes them.
  Host ShortLivedHost(std::string name, RedisDown down = RedisDown::kLocalShare) {
    FleetOptions o = Options(std::move(name), down);
    o.concurrency_lease_ttl = absl::Milliseconds(300);
    return NewHost(o);
  }

  static StoredLeases Cap(FleetStore& fleet, uint32_t count, const std::string& key = "cap") {
    absl::StatusOr<StoredLeases> cap = fleet.Leases(key, count);
    EXPECT_TRUE(cap.ok()) << cap.status();
    return *cap;
  }

  static int32_t Take(const StoredLeases& cap) {
    absl::StatusOr<int32_t> got = cap.TryAcquire();
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : -2;
  }

  RedisServer redis_;
};

TEST_F(RedisLeasesTest, HostsShareOneCap) {
  Host a = NewHost(Options("a"));
  Host b = NewHost(Options("b"));
  const StoredLeases cap_a = Cap(*a.fleet, 3);
  const StoredLeases cap_b = Cap(*b.fleet, 3);
  EXPECT_EQ(cap_a.capacity(), 3u);
  const int32_t a1 = Take(cap_a);
  const int32_t a2 = Take(cap_a);
  const int32_t b1 = Take(cap_b);
  ASSERT_GE(a1, 0);
  ASSERT_GE(a2, 0);
  ASSERT_GE(b1, 0);
  EXPECT_NE(a1, a2);
  // Three in all: the fourth is refused on either host.
  EXPECT_EQ(Take(cap_a), -1);
  EXPECT_EQ(Take(cap_b), -1);
  EXPECT_EQ(cap_a.InFlight(), 3u);
  EXPECT_EQ(cap_b.InFlight(), 3u);
  EXPECT_EQ(a.fleet->Stats().concurrency_leases_held, 2u);
  // A release on one host frees a lease for the other.
  const uint32_t seen = cap_a.Generation();
  cap_a.Release(static_cast<uint32_t>(a1));
  EXPECT_NE(cap_a.Generation(), seen);
  const int32_t b2 = Take(cap_b);
  EXPECT_GE(b2, 0);
  EXPECT_EQ(Take(cap_a), -1);
  auto waited = cap_a.Acquire(absl::Milliseconds(30));
  EXPECT_EQ(waited.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(absl::StrContains(waited.status().message(), "across the fleet"));
  // A waiter gets the lease another host returns while it waits.
  std::thread releaser([&] {
    absl::SleepFor(absl::Milliseconds(50));
    cap_b.Release(static_cast<uint32_t>(b1));
  });
  auto got = cap_a.Acquire(absl::Seconds(20));
  releaser.join();
  ASSERT_TRUE(got.ok()) << got.status();
  cap_a.Release(*got);
  cap_a.Release(static_cast<uint32_t>(a2));
  cap_b.Release(static_cast<uint32_t>(b2));
  EXPECT_EQ(cap_a.InFlight(), 0u);
  EXPECT_EQ(a.fleet->Stats().concurrency_leases_held, 0u);
}

TEST_F(RedisLeasesTest, TheCountFollowsTheConfiguration) {
  Host a = NewHost(Options("a"));
  Host b = NewHost(Options("b"));
  const StoredLeases two = Cap(*a.fleet, 2);
  ASSERT_GE(Take(two), 0);
  ASSERT_GE(Take(two), 0);
  EXPECT_EQ(Take(two), -1);
  // Another host configured for 3: the cap is 3 for its calls.
  const StoredLeases three = Cap(*b.fleet, 3);
  EXPECT_EQ(three.capacity(), 3u);
  EXPECT_GE(Take(three), 0);
  EXPECT_EQ(Take(three), -1);
  // Lowered to 1: nothing more until the fleet holds fewer than 1.
  const StoredLeases one = Cap(*b.fleet, 1);
  EXPECT_EQ(Take(one), -1);
  EXPECT_EQ(one.InFlight(), 3u);
  EXPECT_EQ(a.fleet->Leases("cap", 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.fleet->Leases("cap", 1u << 20).status().code(), absl::StatusCode::kInvalidArgument);
}

// Real time: leases that live 300 ms, held for four times that.
TEST_F(RedisLeasesTest, AHolderThatLivesKeepsItsLeasesAcrossTtls) {
  Host a = ShortLivedHost("a");
  Host b = NewHost(Options("b"));
  const StoredLeases cap_a = Cap(*a.fleet, 2);
  const StoredLeases cap_b = Cap(*b.fleet, 2);
  const int32_t a1 = Take(cap_a);
  const int32_t a2 = Take(cap_a);
  ASSERT_GE(a1, 0);
  ASSERT_GE(a2, 0);
  const int64_t start = Clock::MonotonicNanos();
  while (Clock::MonotonicNanos() - start < 1'200'000'000) {
    EXPECT_EQ(Take(cap_b), -1);
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(a.fleet->Stats().concurrency_leases_lost, 0u);
  EXPECT_EQ(a.fleet->Stats().concurrency_leases_held, 2u);
  cap_a.Release(static_cast<uint32_t>(a1));
  EXPECT_GE(Take(cap_b), 0);
}

// Redis restarted empty: the holder's refresh finds its lease gone and
// counts it lost; its release then leaves alone the lease another host took.
TEST_F(RedisLeasesTest, ALeaseRedisLostIsCountedLostAndNotReleasedTwice) {
  Host a = ShortLivedHost("a", RedisDown::kFailClosed);
  Host b = NewHost(Options("b"));
  const StoredLeases cap_a = Cap(*a.fleet, 1);
  const StoredLeases cap_b = Cap(*b.fleet, 1);
  const int32_t held = Take(cap_a);
  ASSERT_GE(held, 0);
  ASSERT_TRUE(redis_.Restart());
  for (int i = 0; i < 500 && a.fleet->Stats().concurrency_leases_lost == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(a.fleet->Stats().concurrency_leases_lost, 1u);
  EXPECT_EQ(a.fleet->Stats().concurrency_leases_held, 0u);
  int32_t taken = -1;
  for (int i = 0; i < 500 && taken < 0; ++i) {
    taken = Take(cap_b);
    if (taken < 0) absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_GE(taken, 0);
  cap_a.Release(static_cast<uint32_t>(held));
  EXPECT_EQ(cap_b.InFlight(), 1u);
  EXPECT_EQ(Take(cap_b), -1);
}

// Threads on two hosts take and return leases of one cap of 3: never more
// than 3 held at once.
TEST_F(RedisLeasesTest, ThreadsOnTwoHostsNeverHoldMoreThanTheCap) {
  Host a = NewHost(Options("a"));
  Host b = NewHost(Options("b"));
  const StoredLeases caps[2] = {Cap(*a.fleet, 3), Cap(*b.fleet, 3)};
  std::atomic<int> holding{0}, most{0}, granted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      const StoredLeases& cap = caps[t % 2];
      for (int i = 0; i < 40; ++i) {
        absl::StatusOr<uint32_t> got = cap.Acquire(absl::Seconds(30));
        if (!got.ok()) continue;
        const int now = holding.fetch_add(1) + 1;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        granted.fetch_add(1);
        holding.fetch_sub(1);
        cap.Release(*got);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(granted.load(), 6 * 40);
  EXPECT_LE(most.load(), 3);
  EXPECT_EQ(caps[0].InFlight(), 0u);
}

// Redis down, local_share: a host goes on with its share of the cap, the
// count ÷ the hosts last seen alive (here 4, seen through the fleet's
// hosts' set that the refillers keep).
TEST_F(RedisLeasesTest, LocalShareWhileRedisIsDown) {
  std::vector<Host> hosts;
  for (int h = 0; h < 4; ++h) {
    hosts.push_back(NewHost(Options(absl::StrCat("h", h))));
    hosts.back().fleet->RefillOnce(Clock::MonotonicNanos());  // marks it alive
  }
  const StoredLeases cap = Cap(*hosts[0].fleet, 8);
  const int32_t before = Take(cap);  // learns the hosts alive
  ASSERT_GE(before, 0);
  redis_.Stop();
  const int32_t s1 = Take(cap);
  const int32_t s2 = Take(cap);
  ASSERT_GE(s1, 0);
  ASSERT_GE(s2, 0);
  EXPECT_EQ(Take(cap), -1);  // 8 ÷ 4
  auto waited = cap.Acquire(absl::Milliseconds(30));
  EXPECT_EQ(waited.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(absl::StrContains(waited.status().message(), "this host's share")) << waited.status();
  // The share lives in the host's own store, for every process on it.
  absl::StatusOr<StoredLeases> local = hosts[0].local->Leases("fleet:cap-down:cap/2", 2);
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(local->InFlight(), 2u);
  cap.Release(static_cast<uint32_t>(s1));
  EXPECT_EQ(local->InFlight(), 1u);
  EXPECT_GE(Take(cap), 0);
  // The lease taken before the outage goes back without harm.
  cap.Release(static_cast<uint32_t>(before));
  // A host that never reached Redis assumes expected_hosts.
  FleetOptions fresh = Options("new");
  fresh.expected_hosts = 3;
  Host n = NewHost(fresh);
  const StoredLeases cap_n = Cap(*n.fleet, 8);
  EXPECT_GE(Take(cap_n), 0);
  EXPECT_GE(Take(cap_n), 0);
  EXPECT_EQ(Take(cap_n), -1);  // 8 ÷ 3
}

TEST_F(RedisLeasesTest, FailClosedWhileRedisIsDown) {
  Host a = NewHost(Options("a", RedisDown::kFailClosed));
  const StoredLeases cap = Cap(*a.fleet, 4);
  const int32_t held = Take(cap);
  ASSERT_GE(held, 0);
  redis_.Stop();
  EXPECT_EQ(Take(cap), -1);
  auto waited = cap.Acquire(absl::Milliseconds(50));
  EXPECT_EQ(waited.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(absl::StrContains(waited.status().message(), "Redis is down")) << waited.status();
  cap.Release(static_cast<uint32_t>(held));
  // Back: leases again, from Redis.
  ASSERT_TRUE(redis_.Restart());
  int32_t got = -1;
  for (int i = 0; i < 300 && got < 0; ++i) {
    got = Take(cap);
    if (got < 0) absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_GE(got, 0);
  EXPECT_EQ(cap.InFlight(), 1u);
}

TEST_F(RedisLeasesTest, FailOpenWhileRedisIsDown) {
  Host a = NewHost(Options("a", RedisDown::kFailOpen));
  const StoredLeases cap = Cap(*a.fleet, 2);
  redis_.Stop();
  std::vector<int32_t> held;
  for (int i = 0; i < 10; ++i) held.push_back(Take(cap));
  for (int32_t h : held) EXPECT_GE(h, 0);
  EXPECT_EQ(cap.InFlight(), 10u);
  for (int32_t h : held) cap.Release(static_cast<uint32_t>(h));
  EXPECT_EQ(cap.InFlight(), 0u);
}

// A Redis that hangs (stopped, its socket open) costs a call the timeout
// once; the calls after go by on_redis_down at once.
TEST_F(RedisLeasesTest, AHangingRedisCostsACallAtMostTheTimeout) {
  FleetOptions o = Options("a", RedisDown::kFailClosed);
  o.redis.timeout = absl::Milliseconds(100);
  Host a = NewHost(o);
  const StoredLeases cap = Cap(*a.fleet, 4);
  ASSERT_GE(Take(cap), 0);  // connected
  ASSERT_EQ(kill(redis_.pid(), SIGSTOP), 0);
  int64_t start = Clock::MonotonicNanos();
  EXPECT_EQ(Take(cap), -1);
  const int64_t first = Clock::MonotonicNanos() - start;
  start = Clock::MonotonicNanos();
  EXPECT_EQ(Take(cap), -1);
  const int64_t second = Clock::MonotonicNanos() - start;
  kill(redis_.pid(), SIGCONT);
  EXPECT_LT(first, 1'000'000'000);  // the 100 ms timeout, with a wide margin
  EXPECT_LT(second, 50'000'000);
}

}  // namespace
}  // namespace sluice
