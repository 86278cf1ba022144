// A FleetStore's buckets in exact mode (exact_buckets.h).

#include "src/cluster/exact_buckets.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"

namespace sluice {
namespace internal_cluster {
namespace {

constexpr int64_t kHostsEveryNs = 10'000'000'000;
constexpr int64_t kLearnedEveryNs = 1'000'000'000;

RemoteDown OnDown(RedisDown down) {
  switch (down) {
    case RedisDown::kLocalShare:
      return RemoteDown::kDecideLocally;
    case RedisDown::kFailClosed:
      return RemoteDown::kRefuse;
    case RedisDown::kFailOpen:
      return RemoteDown::kAdmit;
  }
  return RemoteDown::kRefuse;
}

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

LeaseAsk ExactBuckets::Ask(const RemoteCharge& c, uint64_t permits) {
  return {std::string(c.key), Sent(c.key, c.config), permits, 0};
}

BucketConfig HostShare(const BucketConfig& config, uint32_t hosts) {
  hosts = std::max<uint32_t>(hosts, 1);
  return {Rate(std::max<uint64_t>(config.rate.permits() / hosts, 1), config.rate.period()),
          std::max<uint64_t>(config.capacity / hosts, 1)};
}

ExactBuckets::ExactBuckets(Store* local, const FleetOptions& options,
                           std::unique_ptr<RedisBuckets> redis)
    : local_(local),
      redis_(std::move(redis)),
      on_down_(OnDown(options.on_redis_down)),
      expected_hosts_(std::max<uint32_t>(options.expected_hosts, 1)),
      hosts_(expected_hosts_) {}

absl::StatusOr<StoredBucket> ExactBuckets::Share(absl::string_view key,
                                                 const BucketConfig& config) {
  std::lock_guard<std::mutex> lock(mu_);
  shares_[key] = config;
  return local_->Bucket(key, HostShare(config, hosts()));
}

std::string ExactBuckets::Describe() const {
  const RedisBucketsOptions& o = redis_->options();
  return absl::StrCat("Redis at ", o.host, ":", o.port, "/", o.db);
}

void ExactBuckets::RefreshHosts() {
  const int64_t now = SteadyNs();
  int64_t due = next_hosts_ns_.load(std::memory_order_relaxed);
  if (now < due || !next_hosts_ns_.compare_exchange_strong(due, now + kHostsEveryNs)) return;
  absl::StatusOr<std::vector<FleetHost>> hosts = redis_->Hosts();
  if (!hosts.ok()) {
    next_hosts_ns_.store(0, std::memory_order_relaxed);  // again at the next call
    return;
  }
  // None yet (no refiller has marked its host alive): the count stands.
  if (hosts->empty()) return;
  const uint32_t n = static_cast<uint32_t>(hosts->size());
  if (hosts_.exchange(n, std::memory_order_relaxed) == n) return;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [key, config] : shares_) {
    local_->Bucket(key, HostShare(config, n)).IgnoreError();
  }
}

absl::Status ExactBuckets::PayDebts() {
  if (!owing_.load(std::memory_order_acquire)) return absl::OkStatus();
  absl::flat_hash_map<std::string, Owed> owed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    owed.swap(owed_);
    owing_.store(false, std::memory_order_release);
  }
  std::vector<BucketChange> debits;
  for (const auto& [key, o] : owed) {
    if (o.permits > 0) {
      debits.push_back({{key, o.config, static_cast<uint64_t>(o.permits), 0}, BucketOp::kDebit});
    }
  }
  if (debits.empty()) return absl::OkStatus();
  absl::StatusOr<std::vector<uint64_t>> paid = redis_->Change(debits);
  if (paid.ok() || paid.status().code() != absl::StatusCode::kUnavailable) {
    return absl::OkStatus();
  }
  std::lock_guard<std::mutex> lock(mu_);  // still owed
  for (const auto& [key, o] : owed) {
    Owed& back = owed_[key];
    back.config = o.config;
    back.permits += o.permits;
  }
  owing_.store(true, std::memory_order_release);
  return paid.status();
}

void ExactBuckets::RefreshLearned() {
  const int64_t now = SteadyNs();
  int64_t due = next_learned_ns_.load(std::memory_order_relaxed);
  if (now < due || !next_learned_ns_.compare_exchange_strong(due, now + kLearnedEveryNs)) return;
  std::vector<std::string> keys;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, config] : shares_) keys.push_back(key);
  }
  absl::StatusOr<std::vector<LearnedLimits>> learned = redis_->Learned(keys);
  if (!learned.ok()) {
    next_learned_ns_.store(0, std::memory_order_relaxed);  // again at the next call
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < keys.size(); ++i) learned_[keys[i]] = (*learned)[i];
}

BucketConfig ExactBuckets::Sent(absl::string_view key, const BucketConfig& config) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = learned_.find(key);
  if (it == learned_.end()) return config;
  const LearnedLimits& l = it->second;
  const BucketConfig lowered = CapBurst(l.rate ? LowerTo(config, *l.rate) : config, l.burst);
  return RedisBuckets::Validate(lowered).ok() ? lowered : config;
}

void ExactBuckets::ShareLearned(absl::string_view key, std::optional<Rate> rate) {
  if (redis_->ShareLearnedRate(key, rate).ok()) next_learned_ns_.store(0);
}

void ExactBuckets::ShareLearnedBurst(absl::string_view key, uint64_t burst) {
  if (redis_->ShareLearnedBurst(key, burst).ok()) next_learned_ns_.store(0);
}

absl::Status ExactBuckets::Prepare() {
  RefreshHosts();
  RefreshLearned();
  return PayDebts();
}

absl::StatusOr<RemoteDecision> ExactBuckets::Reserve(absl::Span<const RemoteCharge> charges,
                                                     absl::Duration max_wait) {
  if (absl::Status s = Prepare(); !s.ok()) return s;
  absl::InlinedVector<RedisCharge, 8> redis;
  for (const RemoteCharge& c : charges) {
    redis.push_back({std::string(c.key), Sent(c.key, c.config),
                     static_cast<uint64_t>(std::max<int64_t>(c.permits, 0))});
  }
  absl::StatusOr<RedisDecision> d = redis_->Reserve(redis, max_wait);
  if (!d.ok()) return d.status();
  return RemoteDecision{d->outcome, d->wait_ns, d->bottleneck};
}

void ExactBuckets::Change(std::vector<BucketChange> changes) {
  if (changes.empty()) return;
  if (Prepare().ok() && redis_->Change(changes).ok()) return;
  // Redis is away: what should have been taken is owed; nothing else is
  // done (a refund lost errs on the safe side).
  for (const BucketChange& c : changes) {
    if (c.op != BucketOp::kDebit) continue;
    Owe({c.bucket.key, c.bucket.config, static_cast<int64_t>(c.bucket.want)});
  }
}

void ExactBuckets::Adjust(absl::Span<const RemoteCharge> charges) {
  std::vector<BucketChange> changes;
  for (const RemoteCharge& c : charges) {
    if (c.permits > 0)
      changes.push_back({Ask(c, static_cast<uint64_t>(c.permits)), BucketOp::kDebit});
    if (c.permits < 0) {
      changes.push_back({Ask(c, static_cast<uint64_t>(-c.permits)), BucketOp::kReturn});
    }
  }
  Change(std::move(changes));
}

void ExactBuckets::Clamp(absl::Span<const RemoteCharge> charges) {
  std::vector<BucketChange> changes;
  for (const RemoteCharge& c : charges) {
    changes.push_back(
        {Ask(c, static_cast<uint64_t>(std::max<int64_t>(c.permits, 0))), BucketOp::kClamp});
  }
  Change(std::move(changes));
}

void ExactBuckets::Hold(absl::Span<const RemoteCharge> buckets, absl::Duration hold) {
  const int64_t ns = absl::ToInt64Nanoseconds(hold);
  if (ns <= 0) return;
  std::vector<BucketChange> changes;
  for (const RemoteCharge& c : buckets) {
    changes.push_back({Ask(c, static_cast<uint64_t>(ns)), BucketOp::kHold});
  }
  Change(std::move(changes));
}

absl::StatusOr<std::vector<int64_t>> ExactBuckets::Available(
    absl::Span<const RemoteCharge> buckets) {
  if (absl::Status s = Prepare(); !s.ok()) return s;
  std::vector<LeaseAsk> reads;
  for (const RemoteCharge& c : buckets) reads.push_back(Ask(c, 0));
  absl::StatusOr<std::vector<uint64_t>> levels = redis_->Available(reads);
  if (!levels.ok()) return levels.status();
  return std::vector<int64_t>(levels->begin(), levels->end());
}

void ExactBuckets::Owe(const RemoteCharge& charge) {
  if (charge.permits == 0) return;
  const BucketConfig config = Sent(charge.key, charge.config);
  std::lock_guard<std::mutex> lock(mu_);
  Owed& o = owed_[charge.key];
  o.config = config;
  o.permits += charge.permits;
  owing_.store(true, std::memory_order_release);
}

}  // namespace internal_cluster
}  // namespace sluice
