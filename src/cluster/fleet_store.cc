// Lease mode: pools in the host's store, topped up from Redis, and budgets
// as counters in Redis (sluice/fleet_store.h).

#include "sluice/fleet_store.h"

#include <unistd.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "src/cluster/exact_buckets.h"
#include "src/cluster/redis_counters.h"
#include "src/cluster/redis_leases.h"
#include "src/cluster/refiller.h"

namespace sluice {
namespace {

// The refiller paces its own probes while Redis is away (every 100 ms); a
// link backing off longer than a couple of them only delays seeing Redis
// again (the goal: every host back within a second of Redis's return).
constexpr absl::Duration kRefillerBackoffMax = absl::Milliseconds(200);

}  // namespace

FleetStore::FleetStore(Store* local, std::unique_ptr<internal_cluster::Refiller> refiller,
                       std::unique_ptr<internal_cluster::ExactBuckets> exact,
                       std::shared_ptr<internal_cluster::RedisLeases> caps,
                       std::unique_ptr<internal_cluster::RedisCounters> counters)
    : local_(local),
      refiller_(std::move(refiller)),
      exact_(std::move(exact)),
      caps_(std::move(caps)),
      counters_(std::move(counters)) {}

FleetStore::~FleetStore() {
  // One try (at most the timeout) to send what was spent while Redis was away.
  counters_->Flush();
  refiller_->Stop();
}

absl::StatusOr<std::unique_ptr<FleetStore>> FleetStore::Create(Store* local, FleetOptions options) {
  if (options.host.empty()) {
    char name[256] = {};
    if (gethostname(name, sizeof(name) - 1) != 0) name[0] = '\0';
    options.host = absl::StrCat(name, ":", getpid());
  }
  options.redis.reconnect_backoff_max =
      std::min(options.redis.reconnect_backoff_max, kRefillerBackoffMax);
  const bool start = options.start_refiller;
  // Exact mode decides on a link of its own: a decision never queues behind
  // the refiller's heartbeat.
  std::unique_ptr<internal_cluster::ExactBuckets> exact;
  if (options.mode == FleetMode::kExact) {
    exact = std::make_unique<internal_cluster::ExactBuckets>(local, options,
                                                             RedisBuckets::Lazy(options.redis));
  }
  auto caps = internal_cluster::RedisLeases::Create(local, options);
  auto counters = std::make_unique<internal_cluster::RedisCounters>(
      internal_cluster::RedisCountersOptions{.redis = options.redis,
                                             .on_redis_down = options.on_redis_down,
                                             .expected_hosts = options.expected_hosts,
                                             .wall_clock = options.wall_clock});
  auto redis = RedisBuckets::Lazy(options.redis);
  auto refiller =
      std::make_unique<internal_cluster::Refiller>(local, std::move(options), std::move(redis));
  if (start) refiller->Start();
  return std::unique_ptr<FleetStore>(new FleetStore(local, std::move(refiller), std::move(exact),
                                                    std::move(caps), std::move(counters)));
}

absl::StatusOr<StoredBucket> FleetStore::Bucket(absl::string_view key, const BucketConfig& config) {
  if (absl::Status s = RedisBuckets::Validate(config); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("bucket '", key, "': ", s.message()));
  }
  if (exact_ != nullptr) return exact_->Share(key, config);
  absl::StatusOr<StoredBucket> pool = local_->Pool(key, config);
  if (!pool.ok()) return pool.status();
  refiller_->Register(key, config, pool->bucket);
  return pool;
}

// Lease mode: the refiller shares what the host's store learned; exact
// mode shares it at once.
absl::Status FleetStore::Learn(absl::string_view key, std::optional<Rate> learned) {
  absl::Status s = local_->Learn(key, learned);
  if (s.ok() && exact_ != nullptr) exact_->ShareLearned(key, learned);
  return s;
}

absl::Status FleetStore::LearnBurst(absl::string_view key, uint64_t burst) {
  absl::Status s = local_->LearnBurst(key, burst);
  if (s.ok() && exact_ != nullptr) exact_->ShareLearnedBurst(key, burst);
  return s;
}

absl::StatusOr<StoredCounter> FleetStore::Counter(absl::string_view key) {
  absl::StatusOr<StoredCounter> host = local_->Counter(key);
  if (!host.ok()) return host.status();
  host->backend = counters_->Open(key, host->counter);
  return host;
}

absl::StatusOr<StoredLeases> FleetStore::Leases(absl::string_view key, uint32_t count) {
  return caps_->Cap(key, count);
}

Clock FleetStore::clock() const { return local_->clock(); }

absl::Time FleetStore::WallTime() const { return counters_->WallTime(); }

void FleetStore::RefillOnce(int64_t now_ns) { refiller_->Step(now_ns); }

void FleetStore::Want(absl::string_view key, uint64_t permits) { refiller_->Want(key, permits); }

FleetStats FleetStore::Stats() const {
  FleetStats stats = refiller_->Stats();
  stats.concurrency_leases_held = caps_->held();
  stats.concurrency_leases_lost = caps_->lost();
  stats.budgets_redis_up = counters_->redis_up();
  stats.budget_entries_owed = counters_->owed();
  return stats;
}

RemoteBuckets* FleetStore::remote_buckets() { return exact_.get(); }

void FleetStore::SetTimeForTesting(int64_t at_ns) {
  if (exact_ != nullptr) exact_->redis().SetTimeForTesting(at_ns);
}

}  // namespace sluice
