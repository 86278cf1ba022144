// What a decision costs when a fleet shares its buckets in Redis, against a
// private redis-server started here (tests/tools/redis_server.h):
//   BM_Redis_Ping             the round trip alone: the floor of any Redis design
//   BM_Redis_ReferenceScript  the reference design's shape: a token bucket in
//                             floating point, `now` from the caller, one EVALSHA
//   BM_Redis_Exact            sluice's exact mode: the integer GCRA on Redis's
//                             clock, one EVALSHA
// sluice_bench prints the ratios between them after its table.

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "benchmark/benchmark.h"
#include "sluice/redis_buckets.h"
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
    const std::string now = absl::StrFormat("%.6f", absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
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

BENCHMARK(BM_Redis_Ping);
BENCHMARK(BM_Redis_ReferenceScript);
BENCHMARK(BM_Redis_Exact);

}  // namespace
}  // namespace sluice
