// Lease mode, one round of the refiller at a time: pools start empty and
// hold only what was leased, hosts share one Redis bucket, idle pools and
// stopping hosts give back, and each on_redis_down does what it says.

#include "sluice/fleet_store.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "sluice/redis_buckets.h"
#include "sluice/store.h"
#include "tests/tools/redis_server.h"

namespace sluice {
namespace {

constexpr int64_t kMs = 1'000'000;
// Slow enough that Redis's own clock refills nothing a test could see.
const BucketConfig kFleetBucket{Rate::PerDay(1'000), 100};

class FleetStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(redis_.ok()); }

  FleetOptions Options(std::string host) {
    FleetOptions o;
    o.redis = {.port = redis_.port(), .timeout = absl::Seconds(2)};
    o.host = std::move(host);
    o.start_refiller = false;
    return o;
  }

  // The fleet bucket's level in Redis.
  uint64_t FleetLevel(const std::string& key, const BucketConfig& config = kFleetBucket) {
    auto b = RedisBuckets::Connect({.port = redis_.port(), .timeout = absl::Seconds(2)});
    EXPECT_TRUE(b.ok());
    auto l = (*b)->Available({{key, config, 0}});
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() ? (*l)[0] : 0;
  }

  static uint64_t Drain(const StoredBucket& b) {
    uint64_t n = 0;
    while (b.bucket.TryAcquire(1, 0).granted()) ++n;
    return n;
  }

  RedisServer redis_;
  FakeClock clock_{1'000 * kMs};
};

TEST_F(FleetStoreTest, APoolStartsEmptyAndAdmitsOnlyWhatWasLeased) {
  auto local = NewLocalStore(Clock::Fake(&clock_));
  auto fleet = FleetStore::Create(local.get(), Options("a"));
  ASSERT_TRUE(fleet.ok());
  auto b = (*fleet)->Bucket("k", kFleetBucket);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(b->pool);
  EXPECT_FALSE(b->bucket.TryAcquire(1, 0).granted());
  (*fleet)->RefillOnce(clock_.Now());
  const FleetStats stats = (*fleet)->Stats();
  ASSERT_EQ(stats.buckets.size(), 1u);
  const uint64_t leased = stats.buckets[0].leased;
  EXPECT_GE(leased, 1u);
  EXPECT_TRUE(stats.redis_up);
  EXPECT_TRUE(stats.refiller);
  EXPECT_EQ(FleetLevel("k"), 100 - leased);
  // Years later the pool still holds only the lease: it never refills.
  clock_.Advance(int64_t{10} * 365 * 86'400'000 * kMs);
  EXPECT_EQ(Drain(*b), leased);
}

TEST_F(FleetStoreTest, HostsTogetherNeverTakeMoreThanTheFleetBucketHolds) {
  auto local_a = NewLocalStore(Clock::Fake(&clock_));
  auto local_b = NewLocalStore(Clock::Fake(&clock_));
  auto a = FleetStore::Create(local_a.get(), Options("a"));
  auto b = FleetStore::Create(local_b.get(), Options("b"));
  ASSERT_TRUE(a.ok() && b.ok());
  auto pa = (*a)->Bucket("shared", kFleetBucket);
  auto pb = (*b)->Bucket("shared", kFleetBucket);
  ASSERT_TRUE(pa.ok() && pb.ok());
  uint64_t admitted_a = 0, admitted_b = 0;
  for (int round = 0; round < 500; ++round) {
    clock_.Advance(5 * kMs);
    (*a)->RefillOnce(clock_.Now());
    (*b)->RefillOnce(clock_.Now());
    admitted_a += Drain(*pa);
    admitted_b += Drain(*pb);
  }
  // Redis's clock refilled at most a permit or two during the test.
  EXPECT_LE(admitted_a + admitted_b, 102u);
  EXPECT_GE(admitted_a + admitted_b, 100u);
  EXPECT_GT(admitted_a, 10u);
  EXPECT_GT(admitted_b, 10u);
  EXPECT_EQ((*a)->Stats().hosts_alive, 2u);
}

TEST_F(FleetStoreTest, IdlePoolsAndStoppingHostsGiveTheirPermitsBack) {
  auto local = NewLocalStore(Clock::Fake(&clock_));
  auto fleet = FleetStore::Create(local.get(), Options("a"));
  ASSERT_TRUE(fleet.ok());
  auto b = (*fleet)->Bucket("idle", kFleetBucket);
  ASSERT_TRUE(b.ok());
  (*fleet)->RefillOnce(clock_.Now());
  ASSERT_LT(FleetLevel("idle"), 100u);
  clock_.Advance(2'000 * kMs);  // past idle_return, nothing admitted
  (*fleet)->RefillOnce(clock_.Now());
  EXPECT_EQ(b->bucket.Available(0), 0);
  EXPECT_EQ(FleetLevel("idle"), 100u);
  // Busy again, then stopped: the pool goes back.
  ASSERT_FALSE(b->bucket.TryAcquire(1, 0).granted());
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(1 * kMs);
    (*fleet)->RefillOnce(clock_.Now());
    Drain(*b);
  }
  (*fleet)->RefillOnce(clock_.Now());
  const uint64_t used = 100 - FleetLevel("idle") - static_cast<uint64_t>(b->bucket.Available(0));
  fleet->reset();
  EXPECT_EQ(FleetLevel("idle"), 100 - used);
}

TEST_F(FleetStoreTest, AnOrdinaryBucketCannotBecomeAPoolInPlace) {
  auto local = NewLocalStore(Clock::Fake(&clock_));
  ASSERT_TRUE(local->Bucket("plain", kFleetBucket).ok());
  auto fleet = FleetStore::Create(local.get(), Options("a"));
  ASSERT_TRUE(fleet.ok());
  auto b = (*fleet)->Bucket("plain", kFleetBucket);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(b.status().message(), "plain")) << b.status();
  // And a bucket Redis cannot hold exactly is refused, naming it.
  auto long_span = (*fleet)->Bucket("long", {Rate::PerDay(10), 20});
  EXPECT_EQ(long_span.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(long_span.status().message(), "long")) << long_span.status();
}

TEST_F(FleetStoreTest, OneRefillerPerHostStore) {
  auto local = NewLocalStore(Clock::Fake(&clock_));
  auto a = FleetStore::Create(local.get(), Options("a"));
  auto b = FleetStore::Create(local.get(), Options("b"));
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->Bucket("one", kFleetBucket).ok());
  ASSERT_TRUE((*b)->Bucket("one", kFleetBucket).ok());
  (*a)->RefillOnce(clock_.Now());
  (*b)->RefillOnce(clock_.Now());
  EXPECT_TRUE((*a)->Stats().refiller);
  EXPECT_FALSE((*b)->Stats().refiller);
  EXPECT_EQ((*b)->Stats().commands, 0u);
  // The refiller stops; the other takes over at its next election.
  a->reset();
  clock_.Advance(200 * kMs);
  (*b)->RefillOnce(clock_.Now());
  EXPECT_TRUE((*b)->Stats().refiller);
}

// Real time: the refiller's thread tops the pool up while two threads admit
// from it; together they never take more than was leased, and a stopping
// host gives the rest back.
TEST_F(FleetStoreTest, TheRefillerThreadFeedsThreadsAdmittingAtOnce) {
  const BucketConfig config{Rate::PerSecond(100'000), 10'000};
  auto local = NewLocalStore();
  FleetOptions o = Options("threads");
  o.start_refiller = true;
  auto fleet = FleetStore::Create(local.get(), o);
  ASSERT_TRUE(fleet.ok());
  auto pool = (*fleet)->Bucket("threads", config);
  ASSERT_TRUE(pool.ok());
  std::atomic<uint64_t> admitted{0};
  const int64_t end = Clock::MonotonicNanos() + 300 * kMs;
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      while (Clock::MonotonicNanos() < end) {
        if (pool->bucket.TryAcquire(1).granted()) admitted.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  const FleetStats stats = (*fleet)->Stats();
  ASSERT_EQ(stats.buckets.size(), 1u);
  EXPECT_GT(admitted.load(), 0u);
  EXPECT_EQ(stats.buckets[0].leased - stats.buckets[0].returned,
            admitted.load() + static_cast<uint64_t>(stats.buckets[0].pool));
  fleet->reset();
  EXPECT_EQ(pool->bucket.Available(), 0);
}

// The outage modes, on the fake clock: Redis is killed after a first lease.
class FleetOutageTest : public FleetStoreTest, public ::testing::WithParamInterface<RedisDown> {};

TEST_P(FleetOutageTest, EachModeDoesWhatItSays) {
  const BucketConfig config{Rate::PerSecond(1'000), 1'000};
  auto local = NewLocalStore(Clock::Fake(&clock_));
  FleetOptions o = Options("a");
  o.on_redis_down = GetParam();
  o.redis.timeout = absl::Milliseconds(100);
  auto fleet = FleetStore::Create(local.get(), o);
  ASSERT_TRUE(fleet.ok());
  auto b = (*fleet)->Bucket("out", config);
  ASSERT_TRUE(b.ok());
  (*fleet)->RefillOnce(clock_.Now());
  ASSERT_TRUE((*fleet)->Stats().redis_up);
  Drain(*b);
  redis_.Kill();
  uint64_t admitted = 0;
  for (int i = 0; i < 100; ++i) {  // one simulated second of outage
    clock_.Advance(10 * kMs);
    (*fleet)->RefillOnce(clock_.Now());
    admitted += Drain(*b);
  }
  EXPECT_FALSE((*fleet)->Stats().redis_up);
  switch (GetParam()) {
    case RedisDown::kFailClosed:
      EXPECT_EQ(admitted, 0u);
      break;
    case RedisDown::kLocalShare:
      // One host alive: its share is the whole rate, 1,000 a second.
      EXPECT_GE(admitted, 980u);
      EXPECT_LE(admitted, 1'000u);
      EXPECT_EQ((*fleet)->Stats().buckets[0].outage_credited, admitted);
      break;
    case RedisDown::kFailOpen:
      EXPECT_GE(admitted, 100u * 1'000u);  // a full pool every round
      break;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, FleetOutageTest,
                         ::testing::Values(RedisDown::kLocalShare, RedisDown::kFailClosed,
                                           RedisDown::kFailOpen));

TEST_F(FleetStoreTest, WhatWasCreditedDuringAnOutageIsDebitedWhenRedisReturns) {
  const BucketConfig config{Rate::PerDay(86'400), 10'000};  // 1/s: Redis barely refills
  auto local = NewLocalStore(Clock::Fake(&clock_));
  FleetOptions o = Options("a");
  o.redis.timeout = absl::Milliseconds(100);
  o.expected_hosts = 4;
  auto fleet = FleetStore::Create(local.get(), o);
  ASSERT_TRUE(fleet.ok());
  // Redis is down from the start: the host never saw it, so it takes the
  // share of expected_hosts.
  redis_.Kill();
  auto b = (*fleet)->Bucket("debt", config);
  ASSERT_TRUE(b.ok());
  uint64_t admitted = 0;
  for (int i = 0; i < 400; ++i) {  // 400 s at 1/s, a quarter of it ours
    clock_.Advance(1'000 * kMs);
    (*fleet)->RefillOnce(clock_.Now());
    admitted += Drain(*b);
  }
  EXPECT_GE(admitted, 99u);
  EXPECT_LE(admitted, 100u);
  ASSERT_TRUE(redis_.Restart());
  // The link reconnects after its backoff (at most a second).
  for (int i = 0; i < 300 && !(*fleet)->Stats().redis_up; ++i) {
    usleep(10'000);
    clock_.Advance(200 * kMs);
    (*fleet)->RefillOnce(clock_.Now());
  }
  ASSERT_TRUE((*fleet)->Stats().redis_up);
  EXPECT_EQ((*fleet)->Stats().buckets[0].outage_credited, 0u);
  // The restarted Redis's bucket was full (10,000); it was debited what the
  // host admitted, and leased the new pool.
  const uint64_t in_pool = static_cast<uint64_t>(b->bucket.Available(0));
  EXPECT_LE(FleetLevel("debt", config), 10'000 - admitted - in_pool + 2);
}

}  // namespace
}  // namespace sluice
