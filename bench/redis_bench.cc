// What a decision costs when a fleet shares its buckets in Redis, against a
// private redis-server started here (tests/tools/redis_server.h):
//   BM_Redis_Ping             the round trip alone: the floor of any Redis design
//   BM_Redis_ReferenceScript  the reference design's shape: a token bucket in
//                             floating point, `now` from the caller, one EVALSHA
//   BM_Redis_Exact            sluice's exact mode: the integer GCRA on Redis's
//                             clock, one EVALSHA
//   BM_Redis_PolicyExact      the same through the policy: Policy::Reserve of
//                             a route of two buckets (scope and provider) over
//                             a FleetStore in exact mode, one EVALSHA
//   BM_Redis_LeasedAdmit      lease mode: an admit from this host's pool in a
//                             shared segment, topped up from Redis in the
//                             background (against BM_ShmAcquire_Admit)
//   BM_Redis_LeasedSteady     lease mode at a steady 100,000 admits/s on a
//                             bucket of 100,000/s: its counter
//                             redis_cmds_per_1000 is the Redis commands the
//                             host sent per 1,000 admits
// sluice_bench prints the ratios between them after its table.

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "benchmark/benchmark.h"
#include "sluice/clock.h"
#include "sluice/fleet_store.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/redis_buckets.h"
#include "sluice/segment.h"
#include "sluice/store.h"
#include "src/cluster/redis_link.h"
#include "tests/tools/redis_server.h"

namespace sluice {
namespace {

// One redis-server for the whole program, started at first use.
RedisServer* Server() {
  static RedisServer* server = new RedisServer();
  return server->ok() ? server : nullptr;
}

internal_cluster::RedisLink* Link() {
  static internal_cluster::RedisLink* link = [] {
    auto l = internal_cluster::RedisLink::Connect(
        {.port = Server()->port(), .timeout = absl::Seconds(5)});
    return l.ok() ? l->release() : nullptr;
  }();
  return link;
}

void BM_Redis_Ping(benchmark::State& state) {
  if (Server() == nullptr || Link() == nullptr) return state.SkipWithError("no redis-server");
  for (auto _ : state) {
    if (!Link()->Command({"PING"}).ok()) return state.SkipWithError("PING failed");
  }
}

// The reference design's bucket, rewritten here for comparison: tokens and
// `now` (seconds, from the caller's clock) as doubles.
constexpr char kReferenceScript[] = R"lua(
local rate, capacity = tonumber(ARGV[1]), tonumber(ARGV[2])
local now, requested = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(now - ts, 0) * rate)
local allowed = 0
if tokens >= requested then
  tokens = tokens - requested
  allowed = 1
end
redis.call('HMSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) * 2 + 1)
return allowed
)lua";

void BM_Redis_ReferenceScript(benchmark::State& state) {
  if (Server() == nullptr || Link() == nullptr) return state.SkipWithError("no redis-server");
  for (auto _ : state) {
    const std::string now =
        absl::StrFormat("%.6f", absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
    auto r = Link()->Eval(kReferenceScript, {"reference"}, {"1000000000", "1000000000", now, "1"});
    if (!r.ok() || r->integer != 1) return state.SkipWithError("the reference script refused");
  }
}

void BM_Redis_Exact(benchmark::State& state) {
  if (Server() == nullptr) return state.SkipWithError("no redis-server");
  static RedisBuckets* buckets = [] {
    auto b = RedisBuckets::Connect({.port = Server()->port(), .timeout = absl::Seconds(5)});
    return b.ok() ? b->release() : nullptr;
  }();
  if (buckets == nullptr) return state.SkipWithError("cannot connect");
  const RedisCharge charge{"exact", {Rate::PerSecond(1'000'000'000), 1'000'000'000}, 1};
  for (auto _ : state) {
    auto d = buckets->TryAcquire(charge);
    if (!d.ok() || !d->granted()) return state.SkipWithError("the exact script refused");
  }
}

void BM_Redis_PolicyExact(benchmark::State& state) {
  if (Server() == nullptr) return state.SkipWithError("no redis-server");
  static Policy* policy = []() -> Policy* {
    static std::unique_ptr<Store> local = NewLocalStore();
    FleetOptions options;
    options.mode = FleetMode::kExact;
    options.redis = {
        .port = Server()->port(), .timeout = absl::Seconds(5), .key_prefix = "bench-policy-exact:"};
    static auto fleet = FleetStore::Create(local.get(), options);
    auto config = ParseLimitsConfig(R"(
[providers.anthropic]
requests_per_minute = 60000000000
[scopes.global]
requests_per_minute = 60000000000
)",
                                    "bench.toml");
    if (!fleet.ok() || !config.ok()) return nullptr;
    auto p = Policy::Create(*config, fleet->get());
    return p.ok() ? p->release() : nullptr;
  }();
  if (policy == nullptr) return state.SkipWithError("cannot make the policy");
  const Route* route = *policy->Resolve("global", "anthropic", "claude-sonnet-4");
  for (auto _ : state) {
    auto permit = policy->Reserve(*route, 0, 0, absl::ZeroDuration(), Clock::MonotonicNanos());
    if (!permit.ok()) return state.SkipWithError("the policy refused");
  }
}

// A fleet store over its own segment (kept for the life of the program),
// with its refiller running.
FleetStore* Fleet(const char* name) {
  const std::string path = absl::StrFormat("/dev/shm/sluice-bench-%s-%d", name, getpid());
  auto segment = Segment::Open(path);
  if (!segment.ok() || Server() == nullptr) return nullptr;
  (*segment)->Unlink().IgnoreError();
  Store* local = NewSegmentStore(segment->release()).release();
  FleetOptions options;
  options.redis = {.port = Server()->port(),
                   .timeout = absl::Seconds(1),
                   .key_prefix = absl::StrCat("bench-", name, ":")};
  auto fleet = FleetStore::Create(local, options);
  return fleet.ok() ? fleet->release() : nullptr;
}

void BM_Redis_LeasedAdmit(benchmark::State& state) {
  static FleetStore* fleet = Fleet("leased");
  if (fleet == nullptr) return state.SkipWithError("no redis-server");
  static const StoredBucket pool =
      *fleet->Bucket("leased", {Rate::PerSecond(1'000'000'000), 1'000'000'000});
  // The first lease, before timing.
  for (int i = 0; i < 1000 && pool.bucket.Available() == 0; ++i)
    absl::SleepFor(absl::Milliseconds(1));
  int64_t refused = 0;
  for (auto _ : state) refused += !pool.bucket.TryAcquire(1).granted();
  state.counters["refused"] = static_cast<double>(refused);
}

void BM_Redis_LeasedSteady(benchmark::State& state) {
  static FleetStore* fleet = Fleet("steady");
  if (fleet == nullptr) return state.SkipWithError("no redis-server");
  const StoredBucket pool = *fleet->Bucket("steady", {Rate::PerSecond(100'000), 100'000});
  constexpr int64_t kEveryNs = 10'000;  // 100,000 a second
  int64_t next = Clock::MonotonicNanos();
  int64_t admitted = 0, i = 0;
  uint64_t commands_at = 0;
  int64_t counted = 0;
  for (auto _ : state) {
    while (Clock::MonotonicNanos() < next) {
    }
    next += kEveryNs;
    const bool granted = pool.bucket.TryAcquire(1).granted();
    // The first second is the ramp-up; steady state is counted after it.
    if (++i == 100'000) commands_at = fleet->Stats().commands;
    if (i > 100'000) counted += granted;
    admitted += granted;
  }
  const uint64_t commands = fleet->Stats().commands - commands_at;
  state.counters["admitted"] = static_cast<double>(admitted);
  state.counters["redis_cmds_per_1000"] =
      counted > 0 ? 1000.0 * static_cast<double>(commands) / static_cast<double>(counted) : -1;
}

BENCHMARK(BM_Redis_Ping);
BENCHMARK(BM_Redis_ReferenceScript);
BENCHMARK(BM_Redis_Exact);
BENCHMARK(BM_Redis_PolicyExact);
BENCHMARK(BM_Redis_LeasedAdmit);
BENCHMARK(BM_Redis_LeasedSteady)->Iterations(300'000)->UseRealTime();

}  // namespace
}  // namespace sluice
