// Limits learned from the provider on one host reach every host of the
// fleet through Redis: a learned rate is the latest word from any host, a
// learned burst the largest, a host that joins later takes them in, and the
// fleet's bucket in Redis runs at them, in lease mode and in exact mode.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "sluice/fleet_store.h"
#include "sluice/redis_buckets.h"
#include "sluice/store.h"
#include "tests/tools/redis_server.h"

namespace sluice {
namespace {

constexpr int64_t kMs = 1'000'000;
const BucketConfig kConfigured{Rate::PerMinute(600), 60};

class FleetLearnedTest : public ::testing::Test {
 protected:
  struct Host {
    std::unique_ptr<Store> local;
    std::unique_ptr<FleetStore> fleet;
  };

  void SetUp() override { ASSERT_TRUE(redis_.ok()); }

  RedisBucketsOptions RedisOptions() const {
    RedisBucketsOptions o;
    o.port = redis_.port();
    o.timeout = absl::Seconds(2);
    return o;
  }

  Host Join(const std::string& name, FleetMode mode = FleetMode::kLease) {
    Host h;
    h.local = NewLocalStore(Clock::Fake(&clock_));
    FleetOptions o;
    o.redis = RedisOptions();
    o.host = name;
    o.start_refiller = false;
    o.mode = mode;
    auto fleet = FleetStore::Create(h.local.get(), o);
    EXPECT_TRUE(fleet.ok()) << fleet.status();
    h.fleet = *std::move(fleet);
    EXPECT_TRUE(h.fleet->Bucket("p", kConfigured).ok());
    return h;
  }

  // A second of the refiller on every host, in order.
  void Round(std::vector<Host*> hosts) {
    clock_.Advance(1'100 * kMs);
    for (Host* h : hosts) h->fleet->RefillOnce(clock_.Now());
  }

  static StoredBucket Local(const Host& h) {
    auto b = h.local->Pool("p", kConfigured);
    EXPECT_TRUE(b.ok()) << b.status();
    return *b;
  }

  // What the host's refiller leases from Redis at.
  static uint64_t FleetCapacity(const Host& h) {
    const FleetStats s = h.fleet->Stats();
    return s.buckets.empty() ? 0 : s.buckets[0].capacity;
  }

  LearnedLimits InRedis() {
    auto b = RedisBuckets::Connect(RedisOptions());
    EXPECT_TRUE(b.ok());
    auto l = (*b)->Learned(std::vector<std::string>{"p"});
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() ? (*l)[0] : LearnedLimits{};
  }

  RedisServer redis_;
  FakeClock clock_{1'000 * kMs};
};

TEST_F(FleetLearnedTest, ALearnedRateReachesEveryHostAndTheFleetsBucket) {
  Host a = Join("a"), b = Join("b");
  Round({&a, &b});
  EXPECT_FALSE(Local(b).learned.has_value());
  EXPECT_EQ(FleetCapacity(b), 60u);

  ASSERT_TRUE(a.fleet->Learn("p", Rate::PerMinute(300)).ok());
  Round({&a, &b});
  EXPECT_EQ(InRedis().rate, Rate::PerMinute(300));
  EXPECT_EQ(Local(b).learned, Rate::PerMinute(300));
  // Lowered to half the rate, the burst halves too, on both hosts.
  EXPECT_EQ(FleetCapacity(a), 30u);
  EXPECT_EQ(FleetCapacity(b), 30u);

  // The latest word wins, from whichever host; clearing clears everywhere.
  ASSERT_TRUE(b.fleet->Learn("p", Rate::PerMinute(200)).ok());
  Round({&b, &a});
  EXPECT_EQ(Local(a).learned, Rate::PerMinute(200));
  EXPECT_EQ(FleetCapacity(a), 20u);
  ASSERT_TRUE(a.fleet->Learn("p", std::nullopt).ok());
  Round({&a, &b});
  EXPECT_FALSE(InRedis().rate.has_value());
  EXPECT_FALSE(Local(b).learned.has_value());
  EXPECT_EQ(FleetCapacity(b), 60u);
}

TEST_F(FleetLearnedTest, TheLargestLearnedBurstHoldsOnEveryHost) {
  Host a = Join("a"), b = Join("b");
  ASSERT_TRUE(b.fleet->LearnBurst("p", 7).ok());
  Round({&b, &a});
  EXPECT_EQ(InRedis().burst, 7u);
  EXPECT_EQ(Local(a).learned_burst, 7u);
  EXPECT_EQ(FleetCapacity(a), 7u);
  // Smaller evidence on another host changes nothing; larger raises it.
  ASSERT_TRUE(a.fleet->LearnBurst("p", 5).ok());
  Round({&a, &b});
  EXPECT_EQ(InRedis().burst, 7u);
  EXPECT_EQ(FleetCapacity(b), 7u);
  ASSERT_TRUE(a.fleet->LearnBurst("p", 9).ok());
  Round({&a, &b});
  EXPECT_EQ(Local(b).learned_burst, 9u);
  EXPECT_EQ(FleetCapacity(b), 9u);
}

TEST_F(FleetLearnedTest, AHostJoiningLaterTakesInWhatTheFleetLearned) {
  Host a = Join("a");
  ASSERT_TRUE(a.fleet->Learn("p", Rate::PerMinute(120)).ok());
  ASSERT_TRUE(a.fleet->LearnBurst("p", 4).ok());
  Round({&a});
  Host c = Join("c");
  Round({&c});
  EXPECT_EQ(Local(c).learned, Rate::PerMinute(120));
  EXPECT_EQ(Local(c).learned_burst, 4u);
  EXPECT_EQ(FleetCapacity(c), 4u);
  // And its own store's empty state did not clear the fleet's.
  EXPECT_EQ(InRedis().rate, Rate::PerMinute(120));
}

TEST_F(FleetLearnedTest, WhatIsNotAValidLearnedLimitReadsAsNone) {
  auto b = RedisBuckets::Connect(RedisOptions());
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->ShareLearnedRate("p", Rate::PerMinute(60)).ok());
  ASSERT_TRUE((*b)->ShareLearnedBurst("p", uint64_t{1} << 40).ok());
  auto l = (*b)->Learned(std::vector<std::string>{"p", "q"});
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ((*l)[0].rate, Rate::PerMinute(60));
  EXPECT_EQ((*l)[0].burst, 0xFFFFFFFFu);  // clamped to what a segment keeps
  EXPECT_FALSE((*l)[1].rate.has_value());
  EXPECT_EQ((*l)[1].burst, 0u);
  // A rate of no permits, written by a broken host, is no rate at all.
  ASSERT_TRUE((*b)->ShareLearnedRate("p", Rate(0, absl::Minutes(1))).ok());
  l = (*b)->Learned(std::vector<std::string>{"p"});
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_FALSE((*l)[0].rate.has_value());
}

// Exact mode: a host shares what it learns at once, and every host sends
// Redis the bucket lowered to what the fleet learned.
TEST_F(FleetLearnedTest, ExactModeHostsSendRedisTheBucketTheFleetLearned) {
  Host a = Join("a", FleetMode::kExact), b = Join("b", FleetMode::kExact);
  RemoteBuckets* remote = b.fleet->remote_buckets();
  ASSERT_NE(remote, nullptr);
  // Unlearned, 31 permits fit in the configured burst of 60 (and are given
  // back).
  const RemoteCharge take31{"p", kConfigured, 31};
  auto d = remote->Reserve({&take31, 1}, absl::ZeroDuration());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->granted());
  remote->Adjust({{"p", kConfigured, -31}});

  ASSERT_TRUE(a.fleet->Learn("p", Rate::PerMinute(300)).ok());
  EXPECT_EQ(InRedis().rate, Rate::PerMinute(300));
  // b reads the fleet's learning within a second, on a call: half the rate,
  // half the burst, although b's own policy still sends the configuration.
  absl::SleepFor(absl::Milliseconds(1'100));
  d = remote->Reserve({&take31, 1}, absl::ZeroDuration());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->outcome, Outcome::kNeverFits);

  ASSERT_TRUE(a.fleet->LearnBurst("p", 5).ok());
  EXPECT_EQ(InRedis().burst, 5u);
}

}  // namespace
}  // namespace sluice
