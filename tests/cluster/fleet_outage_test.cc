// Lease-mode hosts (processes, each with its own store and refiller) sharing
// one bucket in a private redis-server, on real time, while things break:
//   * Redis is killed and restarted (empty, on the same port) mid-run, for
//     each on_redis_down: what the fleet admits during the outage against
//     what the mode promises, how soon every host sees Redis again (the
//     goal: within a second of the restart), and that what was credited
//     during the outage is debited once Redis is back;
//   * a host is killed with SIGKILL while holding a host lease: the other
//     goes on and takes the whole bucket, and the permits lost with the dead
//     host are at most its one lease (concurrency leases with a time to live
//     in Redis do not exist yet: the local store keeps them per host);
//   * the link to Redis is cut and refused for two seconds through a relay:
//     no admit ever waits on Redis.
// No process may hang: each must exit within a few seconds of its run's end.
// Figures are printed. Labelled "redis;process" and run alone.
//
// Every process reads and writes one MAP_SHARED page: the parent's marks
// (when Redis died, when it was restarted) and each host's report, kept
// live so that a host killed with SIGKILL has reported all it did.

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sluice/clock.h"
#include "sluice/fleet_store.h"
#include "sluice/redis_buckets.h"
#include "sluice/store.h"
#include "tests/tools/redis_server.h"
#include "tests/tools/tcp_relay.h"

namespace sluice {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSecond = 1'000 * kMs;
constexpr int kMaxHosts = 4;
constexpr char kKey[] = "outage-test";

// What a host admits from: saturating all the time, or a trickle (one
// admit every 5 ms) until the parent's first mark and saturating after.
enum class Demand { kSaturating, kTrickleThenSaturating };

// One host's figures, updated as they happen.
struct HostReport {
  // Admitted before the parent's first mark, between its marks, after them.
  std::atomic<uint64_t> admitted[3];
  // When its refiller first said Redis was away after the first mark, and
  // first said it was back after the second (CLOCK_MONOTONIC; 0: never).
  std::atomic<int64_t> saw_down_ns;
  std::atomic<int64_t> saw_up_ns;
  std::atomic<uint64_t> max_lease;  // the largest lease size its plan showed
  std::atomic<uint64_t> max_outage_credited;
  std::atomic<uint64_t> outage_credited_at_end;
  std::atomic<bool> redis_up_at_end;
  // The longest time between two admit attempts (TryAcquire, never blocks).
  std::atomic<int64_t> longest_gap_ns;
  std::atomic<bool> finished;
};

struct SharedPage {
  // The parent's marks: Redis died (or the link was cut), Redis was
  // restarted (or the link allowed again); 0 until then.
  std::atomic<int64_t> first_mark_ns;
  std::atomic<int64_t> second_mark_ns;
  HostReport hosts[kMaxHosts];
};

struct HostPlan {
  uint16_t port;
  BucketConfig config;
  RedisDown on_redis_down;
  int64_t start_ns;  // CLOCK_MONOTONIC, shared by every process on the host
  int64_t end_ns;
};

int PhaseOf(const SharedPage& page) {
  if (page.first_mark_ns.load(std::memory_order_acquire) == 0) return 0;
  return page.second_mark_ns.load(std::memory_order_acquire) == 0 ? 1 : 2;
}

// Watches the refiller's figures every millisecond (Stats takes the
// refiller's lock, so never from the admit loop).
void Watch(const FleetStore& fleet, const SharedPage& page, HostReport& report,
           const std::atomic<bool>& stop) {
  while (!stop.load()) {
    const FleetStats s = fleet.Stats();
    const int64_t now = Clock::MonotonicNanos();
    const int phase = PhaseOf(page);
    if (phase >= 1 && !s.redis_up && report.saw_down_ns.load() == 0) report.saw_down_ns = now;
    if (phase == 2 && s.redis_up && report.saw_down_ns.load() != 0 &&
        report.saw_up_ns.load() == 0) {
      report.saw_up_ns = now;
    }
    if (!s.buckets.empty()) {
      const FleetBucketStats& b = s.buckets[0];
      report.max_lease = std::max(report.max_lease.load(), b.lease_size);
      report.max_outage_credited = std::max(report.max_outage_credited.load(), b.outage_credited);
    }
    usleep(1'000);
  }
}

// One host: a FleetStore over its own local store, admitting from its pool
// with non-blocking TryAcquire until the run's end.
void RunHost(const HostPlan& plan, int index, Demand demand, SharedPage& page) {
  HostReport& report = page.hosts[index];
  Clock::Monotonic().SleepUntil(plan.start_ns);
  auto local = NewLocalStore();
  FleetOptions options;
  options.redis.port = plan.port;
  options.redis.timeout = absl::Milliseconds(50);
  options.on_redis_down = plan.on_redis_down;
  options.host = absl::StrCat("host-", index);
  auto fleet = FleetStore::Create(local.get(), options);
  if (!fleet.ok()) return;
  auto pool = (*fleet)->Bucket(kKey, plan.config);
  if (!pool.ok()) return;
  std::atomic<bool> stop{false};
  std::thread watcher([&] { Watch(**fleet, page, report, stop); });
  int64_t last = Clock::MonotonicNanos();
  for (int64_t now = last; now < plan.end_ns; now = Clock::MonotonicNanos()) {
    report.longest_gap_ns = std::max(report.longest_gap_ns.load(), now - last);
    last = now;
    if (demand == Demand::kTrickleThenSaturating && PhaseOf(page) == 0) {
      if (pool->bucket.TryAcquire(1, 0).granted()) report.admitted[0].fetch_add(1);
      usleep(5'000);
      continue;
    }
    if (pool->bucket.TryAcquire(1, 0).granted()) {
      report.admitted[PhaseOf(page)].fetch_add(1);
    } else {
      usleep(50);
    }
  }
  stop = true;
  watcher.join();
  const FleetStats s = (*fleet)->Stats();
  report.outage_credited_at_end = s.buckets.empty() ? 0 : s.buckets[0].outage_credited;
  report.redis_up_at_end = s.redis_up;
  fleet->reset();  // gives the pool back to the fleet
  report.finished = true;
}

class FleetOutageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(redis_.ok());
    void* p = mmap(nullptr, sizeof(SharedPage), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    page_ = new (p) SharedPage();
  }
  void TearDown() override {
    for (pid_t pid : pids_) {  // only those a failed test left behind
      if (pid <= 0) continue;
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    if (page_ != nullptr) munmap(page_, sizeof(SharedPage));
  }

  HostPlan Plan(RedisDown mode, int64_t seconds, BucketConfig config, uint16_t port = 0) {
    const int64_t start = Clock::MonotonicNanos() + 500 * kMs;  // every host forked by then
    return {.port = port != 0 ? port : redis_.port(),
            .config = config,
            .on_redis_down = mode,
            .start_ns = start,
            .end_ns = start + seconds * kSecond};
  }

  void Fork(const HostPlan& plan, const std::vector<Demand>& demands) {
    for (size_t h = 0; h < demands.size(); ++h) {
      const pid_t pid = fork();
      if (pid == 0) {
        RunHost(plan, static_cast<int>(h), demands[h], *page_);
        _exit(0);
      }
      EXPECT_GT(pid, 0) << "fork";
      pids_.push_back(pid);
    }
  }

  // Kills host `index` with SIGKILL and reaps it.
  void KillHost(size_t index) {
    kill(pids_[index], SIGKILL);
    waitpid(pids_[index], nullptr, 0);
    pids_[index] = -1;
  }

  // Waits for every host still running until `deadline`; one that has not
  // exited by then hung: it is killed and the test fails.
  void WaitHosts(int64_t deadline) {
    for (size_t h = 0; h < pids_.size(); ++h) {
      if (pids_[h] <= 0) continue;
      int status = 0;
      pid_t got = 0;
      while ((got = waitpid(pids_[h], &status, WNOHANG)) == 0 &&
             Clock::MonotonicNanos() < deadline) {
        usleep(1'000);
      }
      if (got == 0) {
        ADD_FAILURE() << "host " << h << " hung past the run's end";
        kill(pids_[h], SIGKILL);
        waitpid(pids_[h], &status, 0);
      } else {
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "host " << h;
        EXPECT_TRUE(page_->hosts[h].finished.load()) << "host " << h << " never ran";
      }
      pids_[h] = -1;
    }
    pids_.clear();
  }

  void MarkFirst() { page_->first_mark_ns.store(Clock::MonotonicNanos()); }
  void MarkSecond() { page_->second_mark_ns.store(Clock::MonotonicNanos()); }

  uint64_t Admitted(int phase, int hosts) const {
    uint64_t n = 0;
    for (int h = 0; h < hosts; ++h) n += page_->hosts[h].admitted[phase].load();
    return n;
  }

  // Every host saw the outage and saw Redis again, each within `within_s`
  // of `ready_ns`; prints the recovery times and returns the longest.
  double ExpectRecovery(int hosts, int64_t ready_ns, double within_s) {
    double worst = 0;
    std::printf("  recovery after the restart (s):");
    for (int h = 0; h < hosts; ++h) {
      const HostReport& r = page_->hosts[h];
      EXPECT_NE(r.saw_down_ns.load(), 0) << "host " << h << " never saw the outage";
      EXPECT_NE(r.saw_up_ns.load(), 0) << "host " << h << " never saw Redis again";
      EXPECT_TRUE(r.redis_up_at_end.load()) << "host " << h;
      if (r.saw_up_ns.load() == 0) continue;
      const double s = static_cast<double>(r.saw_up_ns.load() - ready_ns) / kSecond;
      std::printf(" %.3f", s);
      worst = std::max(worst, s);
      EXPECT_LE(s, within_s) << "host " << h;
    }
    std::printf("\n");
    return worst;
  }

  int64_t LongestGap(int hosts) const {
    int64_t gap = 0;
    for (int h = 0; h < hosts; ++h) gap = std::max(gap, page_->hosts[h].longest_gap_ns.load());
    return gap;
  }

  RedisServer redis_;
  SharedPage* page_ = nullptr;
  std::vector<pid_t> pids_;
};

const char* Name(RedisDown mode) {
  switch (mode) {
    case RedisDown::kLocalShare:
      return "local_share";
    case RedisDown::kFailClosed:
      return "fail_closed";
    case RedisDown::kFailOpen:
      return "fail_open";
  }
  return "?";
}

class RedisRestartTest : public FleetOutageTest, public ::testing::WithParamInterface<RedisDown> {};

// Four saturating hosts for 8 s; Redis is killed at 2 s and restarted
// (empty) at 5 s.
TEST_P(RedisRestartTest, EachModeDoesWhatItPromisesAndEveryHostRecovers) {
  constexpr int kHosts = 4;
  constexpr double kRate = 2'000, kCapacity = 200;
  const HostPlan plan = Plan(GetParam(), 8, {Rate::PerSecond(2'000), 200});
  Fork(plan, std::vector<Demand>(kHosts, Demand::kSaturating));
  Clock::Monotonic().SleepUntil(plan.start_ns + 2 * kSecond);
  redis_.Kill();
  MarkFirst();
  Clock::Monotonic().SleepUntil(plan.start_ns + 5 * kSecond);
  MarkSecond();
  ASSERT_TRUE(redis_.Restart());
  const int64_t ready_ns = Clock::MonotonicNanos();
  WaitHosts(plan.end_ns + 5 * kSecond);

  const double outage_s =
      static_cast<double>(page_->second_mark_ns.load() - page_->first_mark_ns.load()) / kSecond;
  const double after_s = static_cast<double>(plan.end_ns - page_->second_mark_ns.load()) / kSecond;
  const uint64_t before = Admitted(0, kHosts), during = Admitted(1, kHosts),
                 after = Admitted(2, kHosts);
  std::printf("on_redis_down = %s, 4 hosts, R = 2000/s, C = 200, Redis away %.2f s:\n",
              Name(GetParam()), outage_s);
  std::printf("  admitted before %llu, during %llu (R*outage = %.0f), after %llu\n",
              static_cast<unsigned long long>(before), static_cast<unsigned long long>(during),
              kRate * outage_s, static_cast<unsigned long long>(after));
  const double worst = ExpectRecovery(kHosts, ready_ns, 1.0);
  std::printf("  slowest host back %.3f s after the restart; longest admit gap %.1f ms\n", worst,
              static_cast<double>(LongestGap(kHosts)) / kMs);
  EXPECT_LT(LongestGap(kHosts), 500 * kMs);
  EXPECT_GT(before, 0u);

  uint64_t credited = 0;
  for (int h = 0; h < kHosts; ++h) {
    credited += page_->hosts[h].max_outage_credited.load();
    // Whatever was credited during the outage was debited once Redis was back.
    EXPECT_EQ(page_->hosts[h].outage_credited_at_end.load(), 0u) << "host " << h;
  }
  switch (GetParam()) {
    case RedisDown::kLocalShare:
      // Each host goes on at R / 4 (hosts_alive was 4 at its last lease),
      // holding at most C / 4, plus what its pool held: at most one lease,
      // C / (2 * 4) by PlanLease, C / 2 for the four.
      EXPECT_LE(static_cast<double>(during), kRate * outage_s + kCapacity / 2 + kCapacity);
      EXPECT_GE(static_cast<double>(during), 0.5 * kRate * outage_s);  // it goes on
      EXPECT_GT(credited, 0u);
      break;
    case RedisDown::kFailClosed:
      // Only what the pools held when Redis died: a lease each, at most
      // C / (2 * 4) by PlanLease; and one admit per host may straddle the
      // mark.
      EXPECT_LE(during, static_cast<uint64_t>(kCapacity / 2) + kHosts);
      EXPECT_EQ(credited, 0u);
      // And admits again once Redis is back, from its new bucket (made
      // after the restart, so at most C + R * t since) and what pools held.
      EXPECT_GT(after, 0u);
      EXPECT_LE(static_cast<double>(after), kCapacity + kRate * after_s + kCapacity / 2 + kHosts);
      break;
    case RedisDown::kFailOpen:
      // No limit at all: pools are kept full.
      EXPECT_GE(static_cast<double>(during), 5 * (kRate * outage_s + kCapacity));
      EXPECT_GT(credited, 0u);
      break;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, RedisRestartTest,
                         ::testing::Values(RedisDown::kLocalShare, RedisDown::kFailClosed,
                                           RedisDown::kFailOpen),
                         [](const auto& info) { return std::string(Name(info.param)); });

// One host, no forks: Redis away 1.5 s (long enough for the link's
// reconnect backoff to reach its cap), then restarted; five times. The
// refiller probes every 100 ms while Redis is away, so a host must see
// Redis again well within a second of every restart: at most its link's
// capped backoff plus a probe. (With the link's default cap of a second,
// about one restart in four took more than 0.6 s.)
TEST_F(FleetOutageTest, AHostSeesRedisAgainSoonAfterEveryRestart) {
  auto local = NewLocalStore();
  FleetOptions options;
  options.redis.port = redis_.port();
  options.redis.timeout = absl::Milliseconds(50);
  options.host = "alone";
  auto fleet = FleetStore::Create(local.get(), options);
  ASSERT_TRUE(fleet.ok());
  auto pool = (*fleet)->Bucket(kKey, {Rate::PerSecond(2'000), 200});
  ASSERT_TRUE(pool.ok());
  const auto redis_up = [&] { return (*fleet)->Stats().redis_up; };
  for (int i = 0; i < 200 && !redis_up(); ++i) usleep(10'000);
  ASSERT_TRUE(redis_up());
  std::printf("one host, back after each restart (s):");
  for (int round = 0; round < 5; ++round) {
    redis_.Kill();
    // Admits keep the refiller asking (and failing) while Redis is away.
    const int64_t until = Clock::MonotonicNanos() + 1'500 * kMs;
    while (Clock::MonotonicNanos() < until) {
      pool->bucket.TryAcquire(1, 0);
      usleep(1'000);
    }
    ASSERT_FALSE(redis_up());
    ASSERT_TRUE(redis_.Restart());
    const int64_t ready_ns = Clock::MonotonicNanos();
    while (!redis_up() && Clock::MonotonicNanos() < ready_ns + 3 * kSecond) usleep(1'000);
    const double back_s = static_cast<double>(Clock::MonotonicNanos() - ready_ns) / kSecond;
    std::printf(" %.3f", back_s);
    EXPECT_LE(back_s, 0.6) << "restart " << round;
  }
  std::printf("\n");
}

// Two hosts: the victim saturates, the survivor trickles until the victim is
// killed with SIGKILL (at 2.5 s) and saturates after. Before the hosts
// start, the test takes the bucket's whole capacity, so that from then on
// the fleet is given exactly R * t; whatever was given and is neither
// admitted nor in Redis at the end (the survivor gives its pool back at
// exit) was lost with the victim: at most its one lease.
TEST_F(FleetOutageTest, AHostKilledHoldingALeaseLosesAtMostThatLease) {
  constexpr double kRate = 2'000;
  // C is a second of R, so the bucket never fills (and wastes its refill)
  // while the survivor's leases grow; leases are sized by demand anyway.
  const BucketConfig config{Rate::PerSecond(2'000), 2'000};
  RedisBucketsOptions direct;
  direct.port = redis_.port();
  direct.timeout = absl::Seconds(2);
  auto redis = RedisBuckets::Connect(direct);
  ASSERT_TRUE(redis.ok()) << redis.status();
  auto took = (*redis)->Lease({{kKey, config, config.capacity}}, "");
  ASSERT_TRUE(took.ok()) << took.status();
  ASSERT_EQ(took->grants[0].granted, config.capacity);
  const int64_t given_from_ns = Clock::MonotonicNanos();

  const HostPlan plan = Plan(RedisDown::kLocalShare, 5, config);
  Fork(plan, {Demand::kSaturating, Demand::kTrickleThenSaturating});
  Clock::Monotonic().SleepUntil(plan.start_ns + 2'500 * kMs);
  KillHost(0);
  MarkFirst();
  WaitHosts(plan.end_ns + 5 * kSecond);
  auto level = (*redis)->Available({{kKey, config, 0}});
  const int64_t given_to_ns = Clock::MonotonicNanos();
  ASSERT_TRUE(level.ok()) << level.status();

  const HostReport& victim = page_->hosts[0];
  const HostReport& survivor = page_->hosts[1];
  const double given = kRate * static_cast<double>(given_to_ns - given_from_ns) / kSecond;
  const uint64_t admitted = Admitted(0, 2) + Admitted(1, 2);
  const double lost = given - static_cast<double>(admitted) - static_cast<double>((*level)[0]);
  const double after_s = static_cast<double>(plan.end_ns - page_->first_mark_ns.load()) / kSecond;
  const double survivor_rate = static_cast<double>(survivor.admitted[1].load()) / after_s;
  std::printf(
      "a host killed holding a lease: given %.0f, admitted %llu (victim %llu), left in Redis "
      "%llu, lost %.1f; victim's largest lease %llu; survivor after the kill %.0f/s of %.0f\n",
      given, static_cast<unsigned long long>(admitted),
      static_cast<unsigned long long>(victim.admitted[0].load()),
      static_cast<unsigned long long>((*level)[0]), lost,
      static_cast<unsigned long long>(victim.max_lease.load()), survivor_rate, kRate);
  EXPECT_GT(victim.admitted[0].load(), 0u);
  // Never more than the fleet was given (a permit of rounding aside)...
  EXPECT_GE(lost, -2.0);
  // ...and what the dead host took with it is at most its lease (its plan
  // may have grown a little in the last millisecond before the kill).
  EXPECT_LE(lost, static_cast<double>(victim.max_lease.load()) + 3);
  // The survivor takes the bucket: all of it but what its pool still holds
  // at the end (a lease, at most C / (2 * 2) by PlanLease), given back.
  EXPECT_GE(survivor_rate, 0.9 * kRate - static_cast<double>(config.capacity / 4) / after_s);
  EXPECT_LE(LongestGap(2), 500 * kMs);
}

// Four hosts reach Redis through a relay adding 1 ms each way; at 2 s every
// link is cut and new ones refused, for 2 s. No admit waits on Redis (the
// admit loop's attempts follow each other closely throughout), local_share
// keeps admitting, and every host is back once the relay lets it through.
TEST_F(FleetOutageTest, ACutLinkNeverBlocksAnAdmit) {
  constexpr int kHosts = 4;
  constexpr double kRate = 2'000;
  // Bound now, relaying only after the fork: the hosts are forked from a
  // process with one thread.
  auto relay = TcpRelay::Listen(redis_.port(), absl::Milliseconds(1));
  ASSERT_TRUE(relay.ok()) << relay.status();
  const HostPlan plan = Plan(RedisDown::kLocalShare, 6, {Rate::PerSecond(2'000), 200},
                             static_cast<uint16_t>((*relay)->port()));
  Fork(plan, std::vector<Demand>(kHosts, Demand::kSaturating));
  (*relay)->Serve();
  Clock::Monotonic().SleepUntil(plan.start_ns + 2 * kSecond);
  (*relay)->SetRefusing(true);
  (*relay)->CutAll();
  MarkFirst();
  Clock::Monotonic().SleepUntil(plan.start_ns + 4 * kSecond);
  MarkSecond();
  (*relay)->SetRefusing(false);
  const int64_t ready_ns = Clock::MonotonicNanos();
  WaitHosts(plan.end_ns + 5 * kSecond);

  const double cut_s =
      static_cast<double>(page_->second_mark_ns.load() - page_->first_mark_ns.load()) / kSecond;
  const uint64_t during = Admitted(1, kHosts);
  std::printf(
      "link cut for %.2f s (relay, +2 ms): longest admit gap %.1f ms; admitted during the cut "
      "%llu (R*cut = %.0f)\n",
      cut_s, static_cast<double>(LongestGap(kHosts)) / kMs, static_cast<unsigned long long>(during),
      kRate * cut_s);
  EXPECT_LT(LongestGap(kHosts), 500 * kMs);
  EXPECT_GE(static_cast<double>(during), 0.5 * kRate * cut_s);
  EXPECT_LE(static_cast<double>(during), kRate * cut_s + 100 + 200);
  ExpectRecovery(kHosts, ready_ns, 1.0);
}

}  // namespace
}  // namespace sluice
