// Concurrency caps through the policy in lease mode: two hosts' policies
// over FleetStores share one cap in Redis, and a permit settled, cancelled
// or dropped gives its lease back to the fleet.

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "sluice/clock.h"
#include "sluice/fleet_store.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/store.h"
#include "tests/tools/redis_server.h"

namespace sluice {
namespace {

constexpr char kConfig[] = R"(
[scopes."team:eng"]
max_concurrency = 2
)";

class FleetCapsPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(redis_.ok());
    auto config = ParseLimitsConfig(kConfig, "caps.toml");
    ASSERT_TRUE(config.ok()) << config.status();
    for (int h = 0; h < 2; ++h) {
      locals_.push_back(NewLocalStore());
      FleetOptions o;
      o.redis.port = redis_.port();
      o.redis.timeout = absl::Seconds(1);
      o.host = std::string(1, static_cast<char>('a' + h));
      o.start_refiller = false;
      auto fleet = FleetStore::Create(locals_.back().get(), o);
      ASSERT_TRUE(fleet.ok()) << fleet.status();
      fleets_.push_back(*std::move(fleet));
      auto policy = Policy::Create(*config, fleets_.back().get());
      ASSERT_TRUE(policy.ok()) << policy.status();
      policies_.push_back(*std::move(policy));
    }
  }

  absl::StatusOr<Permit> Reserve(int host) {
    absl::StatusOr<const Route*> route = policies_[host]->Resolve("team:eng", "anthropic", "m");
    EXPECT_TRUE(route.ok()) << route.status();
    if (!route.ok()) return route.status();
    return policies_[host]->Reserve(**route, 1, 1, absl::ZeroDuration(),
                                    fleets_[host]->clock().Now());
  }

  RedisServer redis_;
  std::vector<std::unique_ptr<Store>> locals_;
  std::vector<std::unique_ptr<FleetStore>> fleets_;
  std::vector<std::unique_ptr<Policy>> policies_;
};

TEST_F(FleetCapsPolicyTest, HostsShareTheCapAndPermitsGiveItBack) {
  auto a1 = Reserve(0);
  auto a2 = Reserve(0);
  ASSERT_TRUE(a1.ok()) << a1.status();
  ASSERT_TRUE(a2.ok()) << a2.status();
  // The first host holds both: the second host's cap is full too.
  auto b = Reserve(1);
  EXPECT_TRUE(IsConcurrencyFull(b.status())) << b.status();
  EXPECT_EQ(fleets_[1]->Stats().concurrency_leases_held, 0u);
  // Settled: its lease goes back to the fleet.
  a1->Settle({.input_tokens = 1, .output_tokens = 1});
  auto b1 = Reserve(1);
  ASSERT_TRUE(b1.ok()) << b1.status();
  EXPECT_TRUE(IsConcurrencyFull(Reserve(0).status()));
  // Cancelled: back too.
  b1->Cancel();
  auto a3 = Reserve(0);
  ASSERT_TRUE(a3.ok()) << a3.status();
  EXPECT_TRUE(IsConcurrencyFull(Reserve(1).status()));
  // Dropped without either: back as well.
  { Permit dropped = *std::move(a3); }
  auto b2 = Reserve(1);
  ASSERT_TRUE(b2.ok()) << b2.status();
  EXPECT_EQ(fleets_[0]->Stats().concurrency_leases_held, 1u);
  EXPECT_EQ(fleets_[1]->Stats().concurrency_leases_held, 1u);
  // The policy's stats show the fleet's count in flight.
  absl::StatusOr<StoredLeases> cap = fleets_[0]->Leases("scope:team:eng:concurrency", 2);
  ASSERT_TRUE(cap.ok());
  EXPECT_EQ(cap->InFlight(), 2u);
}

}  // namespace
}  // namespace sluice
