// The fleet's hosts as Redis records them (RedisBuckets::Hosts), in a
// private redis-server: hosts that leased are listed with their ages by
// Redis's clock, hosts not seen for a minute are not, and reading changes
// nothing; and what their pools hold (RedisBuckets::Pools), by the same rule.

#include <cstdint>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/redis_buckets.h"
#include "tests/tools/redis_server.h"

namespace sluice {
namespace {

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kT0 = int64_t{1'800'000'000} * kSecond;
const BucketConfig k10PerSecond{Rate::PerSecond(10), 10};

std::unique_ptr<RedisBuckets> ConnectTo(const RedisServer& redis, std::string prefix = "sluice:") {
  absl::StatusOr<std::unique_ptr<RedisBuckets>> b =
      RedisBuckets::Connect({.port = redis.port(),
                             .db = 0,
                             .password = "",
                             .timeout = absl::Seconds(2),
                             .key_prefix = std::move(prefix)});
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

std::vector<std::string> Names(const std::vector<FleetHost>& hosts) {
  std::vector<std::string> names;
  for (const FleetHost& h : hosts) names.push_back(h.name);
  return names;
}

TEST(RedisHostsTest, ListsTheHostsThatLeasedInTheLastMinuteWithTheirAges) {
  RedisServer redis;
  ASSERT_TRUE(redis.ok());
  auto buckets = ConnectTo(redis);
  ASSERT_NE(buckets, nullptr);
  absl::StatusOr<std::vector<FleetHost>> hosts = buckets->Hosts();
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  EXPECT_TRUE(hosts->empty());

  buckets->SetTimeForTesting(kT0);
  ASSERT_TRUE(buckets->Lease({{"k", k10PerSecond, 1}}, "old").ok());
  buckets->SetTimeForTesting(kT0 + 30 * kSecond);
  ASSERT_TRUE(buckets->Lease({{"k", k10PerSecond, 1}}, "host-b").ok());
  buckets->SetTimeForTesting(kT0 + 50 * kSecond);
  ASSERT_TRUE(buckets->Lease({{"k", k10PerSecond, 1}}, "host-a").ok());
  // A lease with no host name marks nobody.
  ASSERT_TRUE(buckets->Lease({{"k", k10PerSecond, 1}}, "").ok());

  buckets->SetTimeForTesting(kT0 + 59 * kSecond + 999'999'000);
  hosts = buckets->Hosts();
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  EXPECT_THAT(Names(*hosts), ::testing::ElementsAre("host-a", "host-b", "old"));
  EXPECT_EQ((*hosts)[0].since_seen, absl::Seconds(9));
  EXPECT_EQ((*hosts)[1].since_seen, absl::Seconds(29));
  EXPECT_EQ((*hosts)[2].since_seen, absl::Seconds(59));

  // A minute after its lease "old" is no longer alive, as the leases count:
  // Hosts leaves it out although no lease has pruned it yet.
  buckets->SetTimeForTesting(kT0 + 60 * kSecond);
  hosts = buckets->Hosts();
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  EXPECT_THAT(Names(*hosts), ::testing::ElementsAre("host-a", "host-b"));
  absl::StatusOr<LeaseResult> lease = buckets->Lease({{"k", k10PerSecond, 1}}, "host-a");
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(lease->hosts_alive, hosts->size());

  // Another fleet (key prefix) on the same Redis has hosts of its own.
  auto other = ConnectTo(redis, "other:");
  ASSERT_NE(other, nullptr);
  hosts = other->Hosts();
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  EXPECT_TRUE(hosts->empty());
}

TEST(RedisHostsTest, AgesFollowRedisClock) {
  RedisServer redis;
  ASSERT_TRUE(redis.ok());
  auto buckets = ConnectTo(redis);
  ASSERT_NE(buckets, nullptr);
  // On Redis's own clock (no fixed time): just seen.
  ASSERT_TRUE(buckets->Lease({{"k", k10PerSecond, 1}}, "here").ok());
  absl::StatusOr<std::vector<FleetHost>> hosts = buckets->Hosts();
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 1u);
  EXPECT_EQ((*hosts)[0].name, "here");
  EXPECT_GE((*hosts)[0].since_seen, absl::ZeroDuration());
  EXPECT_LE((*hosts)[0].since_seen, absl::Seconds(5));  // a loaded machine, wide margin
}

TEST(RedisHostsTest, UnavailableWhenRedisIsDown) {
  RedisServer redis;
  ASSERT_TRUE(redis.ok());
  auto buckets = ConnectTo(redis);
  ASSERT_NE(buckets, nullptr);
  redis.Kill();
  const absl::StatusOr<std::vector<FleetHost>> hosts = buckets->Hosts();
  EXPECT_TRUE(absl::IsUnavailable(hosts.status())) << hosts.status();
}

TEST(RedisHostsTest, PoolsCountWhatHostsSeenInTheLastMinuteHold) {
  RedisServer redis;
  ASSERT_TRUE(redis.ok());
  auto buckets = ConnectTo(redis);
  ASSERT_NE(buckets, nullptr);
  const std::vector<std::string> keys = {"k", "untouched"};
  buckets->SetTimeForTesting(kT0);
  ASSERT_TRUE(buckets->Lease({{"k", k10PerSecond, 3}}, "a").ok());
  buckets->SetTimeForTesting(kT0 + 30 * kSecond);
  // b held 2 already (reported as held) and takes 1 more.
  ASSERT_TRUE(buckets->Lease({{"k", k10PerSecond, 1, 2}}, "b").ok());
  ASSERT_TRUE(buckets->Lease({{"k", k10PerSecond, 0}}, "idle").ok());
  absl::StatusOr<std::vector<PoolsHeld>> pools = buckets->Pools(keys);
  ASSERT_TRUE(pools.ok()) << pools.status();
  EXPECT_EQ((*pools)[0].permits, 6u);
  EXPECT_EQ((*pools)[0].hosts, 2u);  // "idle" holds nothing
  EXPECT_EQ((*pools)[1].permits, 0u);
  EXPECT_EQ((*pools)[1].hosts, 0u);
  // A minute after a's lease, a (maybe dead) counts nothing; b still does.
  buckets->SetTimeForTesting(kT0 + 61 * kSecond);
  pools = buckets->Pools(keys);
  ASSERT_TRUE(pools.ok()) << pools.status();
  EXPECT_EQ((*pools)[0].permits, 3u);
  EXPECT_EQ((*pools)[0].hosts, 1u);
  // b gives everything back.
  ASSERT_TRUE(buckets->Return({{"k", k10PerSecond, 3, 0}}, "b").ok());
  pools = buckets->Pools(keys);
  ASSERT_TRUE(pools.ok()) << pools.status();
  EXPECT_EQ((*pools)[0].permits, 0u);
}

}  // namespace
}  // namespace sluice
