// The fleet's Redis as the stats show it (sluice/cluster_stats.h).

#include "sluice/cluster_stats.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sluice/effective_limits.h"
#include "sluice/redis_buckets.h"

namespace sluice {
namespace {

using Cluster = StatsSnapshot::Cluster;

// The fleet's buckets: the config's, or without one the segment's.
std::vector<LeaseAsk> FleetBuckets(const LimitsConfig* config, const StatsSnapshot& s) {
  std::vector<LeaseAsk> buckets;
  if (config != nullptr) {
    const EffectiveLimits limits(*config);
    for (const OwnerLimits& owner : limits.owners()) {
      for (const BucketSpec& spec : owner.buckets) buckets.push_back({spec.key, spec.config, 0});
    }
    return buckets;
  }
  for (const StatsSnapshot::Group& g : s.groups) {
    for (const StatsSnapshot::Bucket& b : g.buckets) {
      if (b.in_segment) buckets.push_back({b.key, {b.rate, b.capacity}, 0});
    }
  }
  return buckets;
}

// What the segment holds under `key`, if a process opened it.
std::optional<int64_t> SegmentLevel(const StatsSnapshot& s, const std::string& key) {
  for (const StatsSnapshot::Group& g : s.groups) {
    for (const StatsSnapshot::Bucket& b : g.buckets) {
      if (b.key == key && b.in_segment) return b.available;
    }
  }
  return std::nullopt;
}

// The fleet's budgets and caps: the config's (without one, none).
void AddBudgetsAndCaps(const LimitsConfig* config, Cluster* c) {
  if (config == nullptr) return;
  const EffectiveLimits limits(*config);
  for (const OwnerLimits& owner : limits.owners()) {
    for (const BudgetSpec& spec : owner.budgets) {
      c->budgets.push_back(
          {.key = spec.key, .period = spec.period, .limit_micro_usd = spec.limit_micro_usd});
    }
    if (owner.concurrency) {
      c->caps.push_back(
          {.key = owner.concurrency->key, .max_in_flight = owner.concurrency->max_in_flight});
    }
  }
}

// What the fleet spent of each budget in its window now, by Redis's clock,
// and the calls in flight under each cap.
absl::Status ReadBudgetsAndCaps(RedisBuckets& redis, Cluster* c) {
  std::vector<std::string> budgets, caps;
  for (const Cluster::Budget& b : c->budgets) budgets.push_back(b.key);
  for (const Cluster::Cap& cap : c->caps) caps.push_back(cap.key);
  absl::StatusOr<FleetReadings> r = redis.ReadBudgetsAndCaps(budgets, caps);
  if (!r.ok()) return r.status();
  const absl::Time now = absl::FromUnixNanos(r->redis_now_ns);
  for (size_t i = 0; i < c->budgets.size(); ++i) {
    Cluster::Budget& b = c->budgets[i];
    b.window = absl::FormatTime(b.period == BudgetPeriod::kDay ? "%Y-%m-%d" : "%Y-%m", now,
                                absl::UTCTimeZone());
    // A counter still in an older window has spent nothing in this one.
    const FleetBudgetReading& reading = r->budgets[i];
    b.spent_micro_usd =
        reading.window >= BudgetWindowId(b.period, now) ? static_cast<uint64_t>(reading.used) : 0;
  }
  for (size_t i = 0; i < c->caps.size(); ++i) c->caps[i].in_flight = r->in_flight[i];
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RedisBuckets>> ConnectTo(const ClusterSettings& settings) {
  absl::StatusOr<std::string> password = ClusterPassword(settings);
  if (!password.ok()) return password.status();
  return RedisBuckets::Connect({.host = settings.redis.host,
                                .port = settings.redis.port,
                                .db = settings.redis.db,
                                .password = *std::move(password),
                                .timeout = settings.timeout,
                                .key_prefix = settings.key_prefix});
}

// The hosts alive, in one call the level of every bucket Redis can hold
// (the others stay nullopt), and in lease mode what hosts' pools hold.
absl::Status ReadRedis(const ClusterSettings& settings, const std::vector<LeaseAsk>& buckets,
                       Cluster* c) {
  absl::StatusOr<std::unique_ptr<RedisBuckets>> redis = ConnectTo(settings);
  if (!redis.ok()) return redis.status();
  absl::StatusOr<std::vector<FleetHost>> hosts = (*redis)->Hosts();
  if (!hosts.ok()) return hosts.status();
  std::vector<LeaseAsk> held;
  std::vector<size_t> at;
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (!RedisBuckets::Validate(buckets[i].config).ok()) continue;
    held.push_back(buckets[i]);
    at.push_back(i);
  }
  absl::StatusOr<std::vector<uint64_t>> levels = (*redis)->Available(held);
  if (!levels.ok()) return levels.status();
  for (const FleetHost& h : *hosts) c->hosts.push_back({h.name, h.since_seen});
  for (size_t j = 0; j < at.size(); ++j) c->buckets[at[j]].global = (*levels)[j];
  if (absl::Status s = ReadBudgetsAndCaps(**redis, c); !s.ok()) return s;
  if (c->mode != ClusterMode::kLease) return absl::OkStatus();
  std::vector<std::string> keys;
  for (const LeaseAsk& b : held) keys.push_back(b.key);
  absl::StatusOr<std::vector<PoolsHeld>> pools = (*redis)->Pools(keys);
  if (!pools.ok()) return pools.status();
  for (size_t j = 0; j < at.size(); ++j) {
    c->buckets[at[j]].in_pools = (*pools)[j].permits;
    c->buckets[at[j]].hosts_holding = (*pools)[j].hosts;
  }
  return absl::OkStatus();
}

}  // namespace

void AddClusterStats(const ClusterSettings& settings, const LimitsConfig* config,
                     StatsSnapshot* snapshot) {
  Cluster c;
  c.redis = settings.redis.ToString();
  c.key_prefix = settings.key_prefix;
  c.mode = settings.mode;
  const std::vector<LeaseAsk> buckets = FleetBuckets(config, *snapshot);
  AddBudgetsAndCaps(config, &c);
  for (const LeaseAsk& b : buckets) {
    Cluster::Bucket row;
    row.key = b.key;
    row.capacity = b.config.capacity;
    if (settings.mode == ClusterMode::kLease) row.pool = SegmentLevel(*snapshot, b.key);
    c.buckets.push_back(std::move(row));
  }
  if (absl::Status s = ReadRedis(settings, buckets, &c); !s.ok()) {
    c.error = std::string(s.message());
    c.hosts.clear();
  }
  snapshot->cluster = std::move(c);
}

}  // namespace sluice
