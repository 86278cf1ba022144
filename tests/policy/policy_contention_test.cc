// The policy under contention: threads and processes reserving over
// overlapping scope paths. Time is frozen (a fake clock that never moves), so
// no bucket refills and every bucket's final level must equal its capacity
// minus an exact ledger of what was granted and settled: a rollback that gave
// back a permit too many or too few, or an over-admission, shows up as a
// difference of at least one.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "sluice/policy.h"
#include "sluice/segment.h"
#include "tests/store/segment_test_util.h"

namespace sluice {
namespace {

constexpr char kConfig[] = R"(
headroom = 1.0
[providers.anthropic]
requests_per_minute = 6000
input_tokens_per_minute = 600000
[providers.anthropic.burst]
requests_per_minute = 900
input_tokens_per_minute = 60000
[scopes.global]
requests_per_minute = 6000
[scopes.global.burst]
requests_per_minute = 700
[scopes."team:a"]
requests_per_minute = 6000
tokens_per_minute = 600000
[scopes."team:a".burst]
requests_per_minute = 400
tokens_per_minute = 40000
[scopes."team:b"]
requests_per_minute = 6000
[scopes."team:b".burst]
requests_per_minute = 300
[scopes."workflow:x"]
parent = "team:a"
requests_per_minute = 6000
[scopes."workflow:x".burst]
requests_per_minute = 150
)";

const char* const kScopes[] = {"workflow:x", "team:a", "team:b", "global"};

// What one worker was granted and kept, per bucket key.
using Ledger = std::map<std::string, int64_t>;

// Provider accounts a worker may draw from ("": the provider's own buckets).
const char* const kAccounts[] = {"", "a1", "a2", "a3"};

// Reserves random requests on random overlapping routes until `attempts`
// are spent; settles most of them to a random smaller usage and cancels the
// rest, recording what each bucket kept. With `accounts`, each request
// draws on a random provider account, opened by whichever thread is first.
Ledger Work(Policy& policy, int64_t now, uint64_t seed, int attempts, bool accounts = false) {
  std::mt19937_64 rng(seed);
  Ledger kept;
  for (int i = 0; i < attempts; ++i) {
    const std::string scope = kScopes[rng() % 4];
    const std::string account = accounts ? kAccounts[rng() % 4] : "";
    auto route = policy.Resolve(scope, "anthropic", "m", account);
    if (!route.ok()) continue;
    const uint64_t input = 1 + rng() % 400;
    auto permit = policy.Reserve(**route, input, 0, absl::ZeroDuration(), now);
    if (!permit.ok()) continue;
    if (rng() % 8 == 0) {
      permit->Cancel();
      continue;
    }
    const uint64_t used = rng() % (input + 1);
    permit->Settle({.input_tokens = used});
    for (const std::string& s : (*route)->path()) {
      kept["scope:" + s + ":rpm"] += 1;
      if (s == "team:a") kept["scope:team:a:tpm"] += static_cast<int64_t>(used);
    }
    const std::string provider = account.empty() ? "anthropic" : "anthropic@" + account;
    kept["provider:" + provider + ":default:rpm"] += 1;
    kept["provider:" + provider + ":default:itpm"] += static_cast<int64_t>(used);
  }
  return kept;
}

void ExpectLevelsMatchLedger(const Policy& policy, const Ledger& kept) {
  int drained = 0;
  for (const auto& b : policy.Stats().buckets) {
    const int64_t taken = kept.count(b.key) ? kept.at(b.key) : 0;
    EXPECT_EQ(b.available, b.capacity - taken) << b.key;
    EXPECT_GE(b.available, 0) << b.key;
    drained += b.available < b.capacity / 10;
  }
  EXPECT_GT(drained, 0) << "the workload never pressed on any bucket";
}

// kConfig's policy over process memory, on a clock that never moves.
struct FrozenPolicy {
  FakeClock frozen{1'000'000'000};
  std::unique_ptr<Store> store = NewLocalStore(Clock::Fake(&frozen));
  std::unique_ptr<Policy> policy;

  FrozenPolicy() {
    auto config = ParseLimitsConfig(kConfig, "contention.toml");
    EXPECT_TRUE(config.ok()) << config.status();
    if (!config.ok()) return;
    auto created = Policy::Create(*config, store.get());
    EXPECT_TRUE(created.ok()) << created.status();
    if (created.ok()) policy = *std::move(created);
  }

  // Work on four threads at once (seeds from `seed`), their ledgers summed.
  Ledger WorkOnFourThreads(uint64_t seed, bool accounts) {
    std::vector<Ledger> ledgers(4);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back(
          [&, t] { ledgers[t] = Work(*policy, frozen.Now(), seed + t, 1500, accounts); });
    }
    for (auto& t : threads) t.join();
    Ledger total;
    for (const Ledger& l : ledgers) {
      for (const auto& [key, n] : l) total[key] += n;
    }
    return total;
  }
};

TEST(PolicyContentionTest, ThreadsOnOverlappingPathsKeepAnExactLedger) {
  FrozenPolicy rig;
  ASSERT_NE(rig.policy, nullptr);
  ExpectLevelsMatchLedger(*rig.policy, rig.WorkOnFourThreads(1, /*accounts=*/false));
  EXPECT_GT(rig.policy->Stats().rollbacks, 0u);
}

// Accounts opened on first use by racing threads, while another thread
// reads the stats: each account's buckets open once and keep an exact ledger.
TEST(PolicyContentionTest, ThreadsOpeningProviderAccountsKeepAnExactLedger) {
  FrozenPolicy rig;
  ASSERT_NE(rig.policy, nullptr);
  constexpr size_t kBuckets = 7 + 3 * 2;  // the config's, and each account's rpm and itpm
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done.load()) EXPECT_LE(rig.policy->Stats().buckets.size(), kBuckets);
  });
  const Ledger total = rig.WorkOnFourThreads(11, /*accounts=*/true);
  done.store(true);
  reader.join();
  EXPECT_EQ(rig.policy->Stats().buckets.size(), kBuckets);
  ExpectLevelsMatchLedger(*rig.policy, total);
}

TEST(PolicyContentionTest, FourProcessesOnOneSegmentKeepAnExactLedger) {
  ScratchSegment scratch;
  auto config = ParseLimitsConfig(kConfig, "contention.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  constexpr int64_t kFrozen = 1'000'000'000;
  // Each process has its own frozen clock at the same instant.
  FakeClock frozen(kFrozen);
  SegmentOptions options;
  options.clock = Clock::Fake(&frozen);
  auto segment = Segment::Open(scratch.path(), options);
  ASSERT_TRUE(segment.ok()) << segment.status();
  auto store = NewSegmentStore(segment->get());
  auto policy = Policy::Create(*config, store.get());
  ASSERT_TRUE(policy.ok()) << policy.status();

  int results[2];
  ASSERT_EQ(pipe(results), 0);
  std::vector<pid_t> children;
  for (int p = 0; p < 4; ++p) {
    const pid_t pid = fork();
    if (pid == 0) {
      close(results[0]);
      auto own = Segment::Open(scratch.path(), options);
      if (!own.ok()) _exit(1);
      auto own_store = NewSegmentStore(own->get());
      auto own_policy = Policy::Create(*config, own_store.get());
      if (!own_policy.ok()) _exit(2);
      const Ledger kept = Work(**own_policy, kFrozen, 100 + p, 1500);
      for (const auto& [key, n] : kept) {
        const std::string line = absl::StrCat(key, " ", n, "\n");
        (void)write(results[1], line.data(), line.size());
      }
      _exit(0);
    }
    children.push_back(pid);
  }
  close(results[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(results[0], buf, sizeof(buf))) > 0;) text.append(buf, n);
  close(results[0]);
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  Ledger total;
  std::istringstream lines(text);
  std::string key;
  int64_t n;
  while (lines >> key >> n) total[key] += n;
  ExpectLevelsMatchLedger(**policy, total);
}

TEST(PolicyContentionTest, FourProcessesNeverOverspendADailyBudget) {
  ScratchSegment scratch;
  auto config = ParseLimitsConfig(R"(
[scopes.global]
requests_per_minute = 1000000
usd_per_day = 1.0
[prices."m"]
input = 3.0
output = 15.0
cache_write = 3.75
cache_read = 0.3
)",
                                  "budget.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  // What each child settled, in zeroed shared memory.
  void* mem = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* settled = static_cast<std::atomic<int64_t>*>(mem);
  std::vector<pid_t> children;
  for (int p = 0; p < 4; ++p) {
    const pid_t pid = fork();
    if (pid == 0) {
      auto segment = Segment::Open(scratch.path());
      if (!segment.ok()) _exit(1);
      auto store = NewSegmentStore(segment->get());
      auto policy = Policy::Create(*config, store.get());
      if (!policy.ok()) _exit(2);
      auto route = (*policy)->Resolve("global", "anthropic", "m");
      std::mt19937_64 rng(p + 7);
      for (int refusals = 0; refusals < 200;) {
        const uint64_t in = rng() % 3000, out = rng() % 2000;
        auto permit =
            (*policy)->Reserve(**route, in, out, absl::ZeroDuration(), Clock::MonotonicNanos());
        if (!permit.ok()) {
          ++refusals;
          continue;
        }
        // Random actual usage within what was reserved (cache writes are
        // part of the input the estimate covered).
        const uint64_t cached = rng() % (in + 1);
        const Usage usage{.input_tokens = in - cached,
                          .output_tokens = rng() % (out + 1),
                          .cache_creation_input_tokens = cached / 2,
                          .cache_read_input_tokens = cached - cached / 2};
        permit->Settle(usage);
        const int64_t cost = static_cast<int64_t>(std::ceil(
            usage.input_tokens * 3.0 + usage.output_tokens * 15.0 +
            usage.cache_creation_input_tokens * 3.75 + usage.cache_read_input_tokens * 0.3));
        settled[p].fetch_add(cost);
      }
      _exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  int64_t total = 0;
  for (int p = 0; p < 4; ++p) total += settled[p].load();
  EXPECT_LE(total, 1'000'000);
  EXPECT_GT(total, 900'000);  // and the budget was really used
  auto segment = Segment::Open(scratch.path());
  ASSERT_TRUE(segment.ok());
  auto store = NewSegmentStore(segment->get());
  auto policy = Policy::Create(*config, store.get());
  ASSERT_TRUE(policy.ok());
  EXPECT_EQ((*policy)->Stats().budgets.at(0).spent_micro_usd, static_cast<uint64_t>(total));
  munmap(mem, 4096);
}

TEST(PolicyContentionTest, ConcurrencyLeasesOfAKilledProcessComeBack) {
  ScratchSegment scratch;
  auto config = ParseLimitsConfig(R"(
[scopes.global]
requests_per_minute = 6000
max_concurrency = 2
)",
                                  "cap.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  auto segment = Segment::Open(scratch.path());
  ASSERT_TRUE(segment.ok());
  auto store = NewSegmentStore(segment->get());
  auto policy = Policy::Create(*config, store.get());
  ASSERT_TRUE(policy.ok());
  const Request request{.scope = "global", .provider = "x", .model = "m"};
  const pid_t child = fork();
  if (child == 0) {
    auto own = Segment::Open(scratch.path());
    auto own_store = NewSegmentStore(own->get());
    auto own_policy = Policy::Create(*config, own_store.get());
    auto a = (*own_policy)->Acquire(request, absl::ZeroDuration());
    auto b = (*own_policy)->Acquire(request, absl::ZeroDuration());
    if (!a.ok() || !b.ok()) _exit(1);
    raise(SIGKILL);  // dies holding both
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_EQ((*policy)->Stats().concurrency.at(0).in_flight, 2u);
  auto mine = (*policy)->Acquire(request, absl::ZeroDuration());
  ASSERT_TRUE(mine.ok()) << mine.status();
  auto second = (*policy)->Acquire(request, absl::ZeroDuration());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*policy)->Stats().concurrency.at(0).in_flight, 2u);
  auto third = (*policy)->Acquire(request, absl::ZeroDuration());
  EXPECT_EQ(third.status().code(), absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace sluice
