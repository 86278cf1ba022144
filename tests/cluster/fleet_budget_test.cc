// Budgets across a fleet: one window counter in Redis for every host. The
// Redis counter decides as the cell does, hosts share it, windows follow
// Redis's clock whatever the hosts' own clocks say, and the policy's
// reserve, settle and rollback reach it.

#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/fleet_store.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/store.h"
#include "sluice/window_counter.h"
#include "src/cluster/redis_link.h"
#include "tests/tools/redis_server.h"

namespace sluice {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int64_t kMax = WindowCounterRef::kMaxAmount;

class FleetBudgetTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(redis_.ok()); }

  // A host: its own local store and a FleetStore over it, its wall clock
  // `skew` off the true time.
  struct Host {
    std::unique_ptr<Store> local;
    std::unique_ptr<FleetStore> fleet;
  };
  Host NewHost(const std::string& name, absl::Duration skew = absl::ZeroDuration()) {
    Host h;
    h.local = NewLocalStore();
    FleetOptions o;
    o.redis.port = redis_.port();
    o.redis.timeout = absl::Seconds(2);
    o.host = name;
    o.start_refiller = false;
    o.wall_clock = [skew] { return absl::Now() + skew; };
    auto fleet = FleetStore::Create(h.local.get(), std::move(o));
    EXPECT_TRUE(fleet.ok()) << fleet.status();
    if (fleet.ok()) h.fleet = *std::move(fleet);
    return h;
  }

  internal_cluster::RedisValue Command(const std::vector<std::string>& argv) {
    internal_cluster::RedisLinkOptions options;
    options.port = redis_.port();
    options.timeout = absl::Seconds(2);
    auto link = internal_cluster::RedisLink::Connect(options);
    EXPECT_TRUE(link.ok()) << link.status();
    auto r = (*link)->Command(argv);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : internal_cluster::RedisValue();
  }

  absl::Time RedisTime() {
    const internal_cluster::RedisValue t = Command({"TIME"});
    int64_t s = 0;
    int64_t us = 0;
    EXPECT_EQ(t.elements.size(), 2u);
    if (t.elements.size() == 2) {
      EXPECT_TRUE(absl::SimpleAtoi(t.elements[0].text, &s));
      EXPECT_TRUE(absl::SimpleAtoi(t.elements[1].text, &us));
    }
    return absl::FromUnixMicros(s * 1'000'000 + us);
  }

  RedisServer redis_;
};

TEST_F(FleetBudgetTest, TheRedisCounterAnswersAsTheCellDoesAcrossWindows) {
  Host host = NewHost("a");
  auto counter = host.fleet->Counter("judge");
  ASSERT_TRUE(counter.ok()) << counter.status();
  ASSERT_NE(counter->backend, nullptr);
  WindowCounterCell cell;
  const WindowCounterRef judge(&cell);
  std::mt19937_64 rng(14);
  auto amount = [&]() -> int64_t {
    switch (rng() % 8) {
      case 0:
        return static_cast<int64_t>(rng() % static_cast<uint64_t>(kMax));
      case 1:
        return kMax - static_cast<int64_t>(rng() % 3);
      default:
        return static_cast<int64_t>(rng() % 2'000);
    }
  };
  auto limit = [&]() -> int64_t {
    switch (rng() % 6) {
      case 0:
        return kMax;
      case 1:
        return kMax + 1'000;  // no larger than kMax
      case 2:
        return 0;
      default:
        return static_cast<int64_t>(rng() % 10'000);
    }
  };
  int64_t window = 20'000;
  for (int i = 0; i < 1'500; ++i) {
    if (rng() % 25 == 0) window += 1 + static_cast<int64_t>(rng() % 2);
    // Now and then an older window's id, as a late host would name it.
    const int64_t w = rng() % 8 == 0 ? window - 1 - static_cast<int64_t>(rng() % 2) : window;
    SCOPED_TRACE(testing::Message() << "step " << i << " window " << w);
    switch (rng() % 5) {
      case 0: {
        const int64_t a = rng() % 20 == 0 ? -1 : amount();
        const int64_t l = limit();
        ASSERT_EQ(counter->TryAdd(w, a, l), judge.TryAdd(w, a, l)) << a << " of " << l;
        break;
      }
      case 1: {
        const int64_t a = amount();
        counter->Refund(w, a);
        judge.Refund(w, a);
        break;
      }
      case 2: {
        const int64_t a = amount();
        counter->Debit(w, a);
        judge.Debit(w, a);
        break;
      }
      case 3:
        ASSERT_EQ(counter->Used(w), judge.Used(w));
        break;
      default:
        break;
    }
    const WindowCounterRef::Reading got = counter->Load();
    const WindowCounterRef::Reading want = judge.Load();
    ASSERT_EQ(got.window, want.window);
    ASSERT_EQ(got.used, want.used);
  }
  // The host's cell holds nothing: the counter is the fleet's.
  EXPECT_EQ(counter->counter.Load().used, 0);
}

TEST_F(FleetBudgetTest, TwoHostsSpendOneBudget) {
  Host a = NewHost("a");
  Host b = NewHost("b");
  auto ca = a.fleet->Counter("scope:team:usd_day");
  auto cb = b.fleet->Counter("scope:team:usd_day");
  ASSERT_TRUE(ca.ok() && cb.ok());
  const int64_t w = 20'500;
  EXPECT_TRUE(ca->TryAdd(w, 600, 1'000));
  EXPECT_FALSE(cb->TryAdd(w, 500, 1'000));  // what one spent the other cannot
  EXPECT_TRUE(cb->TryAdd(w, 400, 1'000));
  EXPECT_FALSE(ca->TryAdd(w, 1, 1'000));
  EXPECT_EQ(ca->Used(w), 1'000);
  ca->Refund(w, 600);
  EXPECT_EQ(cb->Used(w), 400);
  cb->Debit(w, 50);
  EXPECT_EQ(ca->Used(w), 450);
  EXPECT_EQ(ca->counter.Used(w), 0);
  EXPECT_EQ(cb->counter.Used(w), 0);
  // One key for the fleet, under the prefix's hash tag, expiring after a
  // calendar month at most.
  EXPECT_EQ(Command({"GET", "{sluice:}budget:scope:team:usd_day"}).text, "20500 450");
  const int64_t ttl_ms = Command({"PTTL", "{sluice:}budget:scope:team:usd_day"}).integer;
  EXPECT_GT(ttl_ms, int64_t{31} * 86'400'000);
  EXPECT_LE(ttl_ms, int64_t{35} * 86'400'000);
}

TEST_F(FleetBudgetTest, ThreadsOnTwoHostsNeverSpendMoreThanTheBudget) {
  Host a = NewHost("a");
  Host b = NewHost("b");
  const int64_t w = 20'600;
  std::atomic<int64_t> granted{0};
  std::vector<std::thread> threads;
  for (Host* h : {&a, &b}) {
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([&, h] {
        auto c = h->fleet->Counter("scope:global:usd_day");
        ASSERT_TRUE(c.ok());
        while (c->TryAdd(w, 7, 1'000)) granted += 7;
      });
    }
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(granted.load(), 994);  // 142 of 7: every one that fit, no more
  EXPECT_EQ(b.fleet->Counter("scope:global:usd_day")->Used(w), 994);
}

TEST_F(FleetBudgetTest, HostsWithSkewedClocksAgreeOnTheWindowByRedisClock) {
  // One host's clock is past the next UTC midnight and the first of next
  // month; the other's is minutes behind.
  Host ahead = NewHost("ahead", absl::Hours(24 * 40));
  Host behind = NewHost("behind", -absl::Minutes(7));
  const absl::Time redis = RedisTime();
  for (Host* h : {&ahead, &behind}) {
    const absl::Time t = h->fleet->WallTime();
    EXPECT_LT(absl::AbsDuration(t - redis), absl::Seconds(2));
    for (BudgetPeriod p : {BudgetPeriod::kDay, BudgetPeriod::kMonth}) {
      // Unless the test straddles a boundary, the window is Redis's.
      const int64_t before = BudgetWindowId(p, redis);
      const int64_t after = BudgetWindowId(p, RedisTime());
      EXPECT_TRUE(BudgetWindowId(p, t) == before || BudgetWindowId(p, t) == after);
    }
  }
}

// Two hosts, each a Policy over its FleetStore, with clocks a day apart: the
// policies' windows are Redis's.
class FleetBudgetPolicyTest : public FleetBudgetTest {
 protected:
  static constexpr char kConfig[] = R"(
[scopes.global]
usd_per_day = 1.0
[scopes."team:eng"]
parent = "global"
usd_per_day = 0.5
[prices."m"]
input = 3.0
output = 15.0
)";

  void SetUp() override {
    FleetBudgetTest::SetUp();
    auto config = ParseLimitsConfig(kConfig, "fleet_budget_test.toml");
    ASSERT_TRUE(config.ok()) << config.status();
    a_ = NewHost("a", absl::Hours(25));
    b_ = NewHost("b", -absl::Minutes(7));
    for (auto [host, policy] : {std::pair{&a_, &pa_}, std::pair{&b_, &pb_}}) {
      auto p = Policy::Create(*config, host->fleet.get());
      ASSERT_TRUE(p.ok()) << p.status();
      *policy = *std::move(p);
    }
  }

  static absl::StatusOr<Permit> Reserve(Policy& p, const std::string& scope, uint64_t in,
                                        uint64_t out) {
    auto route = p.Resolve(scope, "anthropic", "m");
    if (!route.ok()) return route.status();
    return p.Reserve(**route, in, out, absl::ZeroDuration(), 0);
  }

  static int64_t Spent(const Policy& p, const std::string& key) {
    for (const auto& b : p.Stats().budgets) {
      if (b.key == key) return static_cast<int64_t>(b.spent_micro_usd);
    }
    ADD_FAILURE() << "no budget " << key;
    return -1;
  }

  Host a_, b_;
  std::unique_ptr<Policy> pa_, pb_;
};

TEST_F(FleetBudgetPolicyTest, TheSecondHostIsRefusedWhatTheFirstSpent) {
  auto first = Reserve(*pa_, "team:eng", 0, 30'000);  // up to 0.45 USD
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = Reserve(*pb_, "team:eng", 0, 10'000);  // 0.15 USD more
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(second.status().message(), AllOf(HasSubstr("scope:team:eng:usd_day"),
                                               HasSubstr("0.450000 USD of 0.500000 USD")));
  EXPECT_EQ(Spent(*pb_, "scope:team:eng:usd_day"), 450'000);
  EXPECT_EQ(Spent(*pb_, "scope:global:usd_day"), 450'000);  // the team refused first
  // Settling to less frees the difference for every host.
  first->Settle({.output_tokens = 20'000});  // 0.30 USD
  EXPECT_EQ(Spent(*pb_, "scope:team:eng:usd_day"), 300'000);
  EXPECT_EQ(Spent(*pb_, "scope:global:usd_day"), 300'000);
  EXPECT_TRUE(Reserve(*pb_, "team:eng", 0, 10'000).ok());
  EXPECT_EQ(Spent(*pa_, "scope:team:eng:usd_day"), 450'000);
}

TEST_F(FleetBudgetPolicyTest, ARollbackGivesBackExactlyAndSettleDebitsReachRedis) {
  // Host a spends most of the global budget through its own scope.
  auto global = Reserve(*pa_, "global", 0, 60'000);  // 0.90 USD
  ASSERT_TRUE(global.ok()) << global.status();
  // Host b's team still has 0.5 USD, the fleet's global budget 0.1 USD: the
  // team's charge (a route pays its own scope first, the root last) is
  // taken in Redis, then given back exactly when the global one refuses.
  auto refused = Reserve(*pb_, "team:eng", 0, 10'000);  // 0.15 USD
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("scope:global:usd_day"));
  EXPECT_EQ(pb_->Stats().rollbacks, 1u);
  EXPECT_EQ(Spent(*pa_, "scope:team:eng:usd_day"), 0);
  EXPECT_EQ(Spent(*pa_, "scope:global:usd_day"), 900'000);
  // A request that cost more than reserved debits the difference.
  auto small = Reserve(*pb_, "team:eng", 0, 1'000);  // 15,000 micro-USD
  ASSERT_TRUE(small.ok()) << small.status();
  small->Settle({.input_tokens = 1'000, .output_tokens = 2'000});  // 33,000
  EXPECT_EQ(Spent(*pa_, "scope:team:eng:usd_day"), 33'000);
  EXPECT_EQ(Spent(*pa_, "scope:global:usd_day"), 933'000);
  // Cancelling gives back everything, on every host.
  global->Cancel();
  EXPECT_EQ(Spent(*pb_, "scope:global:usd_day"), 33'000);
}

}  // namespace
}  // namespace sluice
