// Budgets while Redis is away, each on_redis_down: Redis paused (SIGSTOP:
// calls time out, and Redis runs them when it resumes, after the host gave
// up on them) or killed and restarted empty. What a host spent during the
// outage reaches the fleet's counter once, when Redis answers again; no call
// waits much past the timeout. Real time, with wide margins.

#include <signal.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "gtest/gtest.h"
#include "sluice/fleet_store.h"
#include "sluice/store.h"
#include "tests/tools/redis_server.h"

namespace sluice {
namespace {

constexpr absl::Duration kTimeout = absl::Milliseconds(500);
// A call may wait one timeout; the rest is a loaded machine's slack.
const absl::Duration kLongestCall = kTimeout + absl::Seconds(1);
constexpr int64_t kWindow = 20'700;
constexpr int64_t kLimit = 1'000;

class FleetBudgetOutageTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(redis_.ok()); }

  struct Host {
    std::unique_ptr<Store> local;
    std::unique_ptr<FleetStore> fleet;
    std::optional<StoredCounter> budget;
  };
  Host NewHost(const std::string& name, RedisDown mode, uint32_t expected_hosts = 4) {
    Host h;
    h.local = NewLocalStore();
    FleetOptions o;
    o.redis.port = redis_.port();
    o.redis.timeout = kTimeout;
    o.host = name;
    o.start_refiller = false;
    o.on_redis_down = mode;
    o.expected_hosts = expected_hosts;
    auto fleet = FleetStore::Create(h.local.get(), std::move(o));
    EXPECT_TRUE(fleet.ok()) << fleet.status();
    h.fleet = *std::move(fleet);
    auto budget = h.fleet->Counter("scope:global:usd_day");
    EXPECT_TRUE(budget.ok()) << budget.status();
    h.budget = *budget;
    return h;
  }

  // Runs `op`, expecting it not to wait on Redis much past the timeout.
  template <typename Op>
  static auto Timed(Op op) {
    const absl::Time start = absl::Now();
    auto result = op();
    EXPECT_LT(absl::Now() - start, kLongestCall);
    return result;
  }

  // Until `host` has sent what it spent while Redis was away (its budget
  // calls carry it, at most every 100 ms).
  static void AwaitSent(Host& host) {
    const absl::Time give_up = absl::Now() + absl::Seconds(15);
    while (absl::Now() < give_up) {
      host.budget->Used(kWindow);
      const FleetStats stats = host.fleet->Stats();
      if (stats.budgets_redis_up && stats.budget_entries_owed == 0) return;
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << "the outage's spending never reached Redis";
  }

  // The fleet's counter as a host that never saw the outage reads it.
  int64_t FleetUsed() {
    Host reader = NewHost("reader", RedisDown::kFailClosed);
    return reader.budget->Used(kWindow);
  }

  void Pause() { ASSERT_EQ(kill(redis_.pid(), SIGSTOP), 0); }
  void Resume() { ASSERT_EQ(kill(redis_.pid(), SIGCONT), 0); }

  RedisServer redis_;
};

TEST_F(FleetBudgetOutageTest, LocalShareSpendsTheHostsShareOfWhatWasLeftThenDebitsItOnce) {
  Host a = NewHost("a", RedisDown::kLocalShare);
  ASSERT_TRUE(a.budget->TryAdd(kWindow, 200, kLimit));
  Pause();
  // Four hosts expected (none leases), 800 left: this host's share is 200.
  EXPECT_TRUE(Timed([&] { return a.budget->TryAdd(kWindow, 150, kLimit); }));
  EXPECT_FALSE(Timed([&] { return a.budget->TryAdd(kWindow, 60, kLimit); }));
  EXPECT_TRUE(Timed([&] { return a.budget->TryAdd(kWindow, 50, kLimit); }));
  Timed([&] {
    a.budget->Refund(kWindow, 20);
    a.budget->Debit(kWindow, 30);
    return 0;
  });
  // Counted in the host's own cell meanwhile.
  EXPECT_EQ(a.budget->counter.Used(kWindow), 150 + 50 - 20 + 30);
  EXPECT_GE(a.fleet->Stats().budget_entries_owed, 1u);
  Resume();
  AwaitSent(a);
  // Redis ran the call that timed out when it resumed, or never: either way
  // it is counted once.
  EXPECT_EQ(FleetUsed(), 200 + 150 + 50 - 20 + 30);
  EXPECT_EQ(a.budget->counter.Used(kWindow), 0);
}

TEST_F(FleetBudgetOutageTest, FailClosedRefusesNewSpendingButKeepsRefundsAndDebits) {
  Host a = NewHost("a", RedisDown::kFailClosed);
  ASSERT_TRUE(a.budget->TryAdd(kWindow, 100, kLimit));
  Pause();
  EXPECT_FALSE(Timed([&] { return a.budget->TryAdd(kWindow, 10, kLimit); }));
  EXPECT_FALSE(Timed([&] { return a.budget->TryAdd(kWindow, 1, kLimit); }));
  Timed([&] {
    a.budget->Refund(kWindow, 40);
    a.budget->Debit(kWindow, 5);
    return 0;
  });
  Resume();
  AwaitSent(a);
  // The refused call is not counted, even if Redis ran it after the host
  // gave up on it.
  EXPECT_EQ(FleetUsed(), 100 - 40 + 5);
  EXPECT_TRUE(a.budget->TryAdd(kWindow, 10, kLimit));
}

TEST_F(FleetBudgetOutageTest, FailOpenAllowsSpendingAndStillDebitsItAfterwards) {
  Host a = NewHost("a", RedisDown::kFailOpen);
  ASSERT_TRUE(a.budget->TryAdd(kWindow, 100, kLimit));
  redis_.Kill();
  EXPECT_TRUE(Timed([&] { return a.budget->TryAdd(kWindow, 900, kLimit); }));
  EXPECT_TRUE(Timed([&] { return a.budget->TryAdd(kWindow, 900, kLimit); }));  // past the limit
  ASSERT_TRUE(redis_.Restart());  // empty: what was spent before is gone with it
  AwaitSent(a);
  EXPECT_EQ(FleetUsed(), 1'800);
  Host b = NewHost("b", RedisDown::kLocalShare);
  EXPECT_FALSE(b.budget->TryAdd(kWindow, 1, kLimit));
}

TEST_F(FleetBudgetOutageTest, AHostThatNeverReachedRedisTakesTheShareOfExpectedHosts) {
  redis_.Kill();
  Host a = NewHost("a", RedisDown::kLocalShare, /*expected_hosts=*/4);
  EXPECT_TRUE(Timed([&] { return a.budget->TryAdd(kWindow, 250, kLimit); }));
  EXPECT_FALSE(Timed([&] { return a.budget->TryAdd(kWindow, 1, kLimit); }));
  ASSERT_TRUE(redis_.Restart());
  AwaitSent(a);
  EXPECT_EQ(FleetUsed(), 250);
}

}  // namespace
}  // namespace sluice
