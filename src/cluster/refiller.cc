// The host's refiller (refiller.h).

#include "src/cluster/refiller.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "absl/random/distributions.h"
#include "sluice/lease_sizing.h"
#include "sluice/pool.h"

namespace sluice {
namespace internal_cluster {
namespace {

// Demand is smoothed over about a quarter second.
constexpr double kDemandSeconds = 0.25;
constexpr int64_t kElectionEveryNs = 100'000'000;
constexpr int64_t kHeartbeatEveryNs = 10'000'000'000;
constexpr int64_t kProbeEveryNs = 100'000'000;
constexpr int64_t kShareLearnedEveryNs = 1'000'000'000;

// What a pool holds now, as Redis counts it.
uint64_t HeldBy(BucketCell* cell) {
  return static_cast<uint64_t>(std::max<int64_t>(PoolRef(cell).Available(), 0));
}

double PerNanosecond(const Rate& rate) {
  return static_cast<double>(rate.permits()) /
         static_cast<double>(absl::ToInt64Nanoseconds(rate.period()));
}

}  // namespace

Refiller::Refiller(Store* local, FleetOptions options, std::unique_ptr<RedisBuckets> redis)
    : local_(local), options_(std::move(options)), redis_(std::move(redis)) {}

Refiller::~Refiller() { Stop(); }

void Refiller::Start() {
  thread_ = std::thread([this] { Run(); });
}

void Refiller::Run() {
  std::unique_lock<std::mutex> lock(stop_mu_);
  while (!stopping_) {
    lock.unlock();
    Step(local_->clock().Now());
    lock.lock();
    stop_cv_.wait_for(lock, absl::ToChronoNanoseconds(options_.tick), [&] { return stopping_; });
  }
}

void Refiller::Stop() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  if (elected_ < 0) return;
  if (options_.give_back_at_stop) GiveEverythingBackLocked();
  election_->Release(static_cast<uint32_t>(elected_));
  elected_ = -1;
}

void Refiller::Register(absl::string_view key, const BucketConfig& config, const BucketRef& pool) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& t : tracked_) {
    if (t->key == key) {
      t->configured = config;
      t->config = config;
      t->cell = pool.cell();
      t->shared_once = false;
      next_share_ns_ = 0;
      return;
    }
  }
  auto t = std::make_unique<Tracked>();
  t->key = std::string(key);
  t->configured = config;
  t->config = config;
  t->cell = pool.cell();
  next_share_ns_ = 0;
  t->last_level = PoolRef(t->cell).Available();
  tracked_.push_back(std::move(t));
}

void Refiller::Want(absl::string_view key, uint64_t permits) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& t : tracked_) {
    if (t->key == key) t->wanted = std::max(t->wanted, permits);
  }
}

// Only one process on the host refills: whoever holds the store's
// "fleet:refiller" lease (a dead holder's is taken back).
bool Refiller::ElectLocked(int64_t now_ns) {
  if (elected_ >= 0) return true;
  if (now_ns < next_election_ns_) return false;
  next_election_ns_ = now_ns + kElectionEveryNs;
  if (!election_) {
    absl::StatusOr<StoredLeases> leases = local_->Leases("fleet:refiller", 1);
    if (!leases.ok()) return false;
    election_ = *leases;
  }
  absl::StatusOr<int32_t> got = election_->TryAcquire();
  if (got.ok() && *got >= 0) elected_ = *got;
  return elected_ >= 0;
}

// Demand: what left the pool since the last round (admits; refunds and our
// own credits aside), smoothed; a pool found empty asks for twice what it
// served, so a starved host grows its leases instead of living on crumbs.
void Refiller::MeasureLocked(Tracked& t, int64_t level, int64_t now_ns) {
  if (t.last_ns < 0 || now_ns <= t.last_ns) {
    t.last_ns = std::max(t.last_ns, now_ns);
    t.last_level = level;
    if (t.last_active_ns == 0) t.last_active_ns = now_ns;
    return;
  }
  const double dt = static_cast<double>(now_ns - t.last_ns) * 1e-9;
  const int64_t consumed = std::max<int64_t>(t.last_level - level, 0);
  const double rate = static_cast<double>(consumed) / dt;
  const double alpha = 1 - std::exp(-dt / kDemandSeconds);
  t.demand += alpha * (rate - t.demand);
  if (level == 0 && consumed > 0) t.demand = std::max(t.demand, 2 * rate);
  if (consumed > 0) t.last_active_ns = now_ns;
  t.last_ns = now_ns;
  t.last_level = level;
}

void Refiller::Step(int64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!ElectLocked(now_ns)) return;
  std::vector<LeaseAsk> asks, gives;
  std::vector<Tracked*> asking;
  for (auto& tp : tracked_) {
    Tracked& t = *tp;
    const PoolRef pool(t.cell);
    const int64_t level = pool.Available();
    const int64_t debt = pool.Debt();
    MeasureLocked(t, level, now_ns);
    const LeasePlan plan = PlanLease({.capacity = t.config.capacity,
                                      .demand_per_second = t.demand,
                                      .round_trip = rtt_,
                                      .hosts_alive = std::max<uint32_t>(hosts_alive_, 1),
                                      .rate_per_second = PerNanosecond(t.config.rate) * 1e9});
    t.lease_size = plan.lease;
    t.backoff = plan.backoff;
    if (redis_up_ && level > 0 && debt == 0 &&
        now_ns - t.last_active_ns > absl::ToInt64Nanoseconds(options_.idle_return)) {
      const uint64_t drained = pool.Drain(static_cast<uint64_t>(level));
      t.last_level -= static_cast<int64_t>(drained);
      if (drained > 0) gives.push_back({t.key, t.config, drained, HeldBy(t.cell)});
      continue;
    }
    const int64_t target = static_cast<int64_t>(std::max(plan.lease, t.wanted));
    if ((level < static_cast<int64_t>(plan.watermark) || level < static_cast<int64_t>(t.wanted) ||
         debt > 0) &&
        now_ns >= t.retry_at_ns) {
      const uint64_t want = std::max<int64_t>(target - level, 1) + std::max<int64_t>(debt, 0);
      asks.push_back({t.key, t.config, want, static_cast<uint64_t>(std::max<int64_t>(level, 0))});
      asking.push_back(&t);
    }
  }
  if (!gives.empty()) GiveBackLocked(gives);
  if (!asks.empty() && (redis_up_ || now_ns >= next_heartbeat_ns_)) {
    LeaseLocked(asking, asks, now_ns);
  } else if (now_ns >= next_heartbeat_ns_) {
    HeartbeatLocked(now_ns);
  }
  if (!redis_up_) OutageLocked(now_ns);
  if (redis_up_ && now_ns >= next_share_ns_) ShareLearnedLocked(now_ns);
}

void Refiller::LeaseLocked(std::vector<Tracked*>& asking, std::vector<LeaseAsk>& asks,
                           int64_t now_ns) {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<LeaseResult> r = redis_->Lease(asks, options_.host);
  if (!r.ok()) {
    redis_up_ = false;
    next_heartbeat_ns_ = now_ns + kProbeEveryNs;
    return;
  }
  const absl::Duration took = absl::FromChrono(std::chrono::steady_clock::now() - start);
  rtt_ = rtt_ == absl::ZeroDuration() ? took : (rtt_ * 7 + took) / 8;
  RedisAnsweredLocked(r->hosts_alive);
  next_heartbeat_ns_ = now_ns + kHeartbeatEveryNs;
  std::vector<LeaseAsk> excess;
  for (size_t i = 0; i < asking.size(); ++i) {
    Tracked& t = *asking[i];
    const LeaseGrant& g = r->grants[i];
    const uint64_t credited = PoolRef(t.cell).Credit(g.granted);
    t.wanted = 0;
    t.last_level += static_cast<int64_t>(credited);
    t.leased += g.granted;
    t.fleet_available = g.available;
    if (credited < g.granted) {
      excess.push_back({t.key, t.config, g.granted - credited, HeldBy(t.cell)});
    }
    if (g.granted < asks[i].want) {
      // The bucket is dry: it refills at its rate for every host, and asking
      // sooner only splits it into smaller grants. A draw from [backoff,
      // 2 backoff) keeps hosts refused together from asking together again.
      const int64_t backoff = absl::ToInt64Nanoseconds(t.backoff);
      const int64_t drawn = backoff > 0 ? absl::Uniform<int64_t>(rng_, backoff, 2 * backoff) : 0;
      t.retry_at_ns = now_ns + std::max({g.wait_ns, absl::ToInt64Nanoseconds(rtt_), drawn});
    }
  }
  if (!excess.empty()) GiveBackLocked(excess);
}

// Permits taken out of pools go back to Redis; if Redis is away they go
// back into their pools (they were paid for), never lost.
void Refiller::GiveBackLocked(std::vector<LeaseAsk>& gives) {
  absl::StatusOr<std::vector<uint64_t>> r = redis_->Return(gives, options_.host);
  for (size_t i = 0; i < gives.size(); ++i) {
    for (auto& t : tracked_) {
      if (t->key != gives[i].key) continue;
      if (r.ok()) {
        t->returned += gives[i].want;
        t->fleet_available = (*r)[i];
      } else {
        t->last_level += static_cast<int64_t>(PoolRef(t->cell).Credit(gives[i].want));
      }
    }
  }
  if (!r.ok()) redis_up_ = false;
}

void Refiller::HeartbeatLocked(int64_t now_ns) {
  absl::StatusOr<LeaseResult> r = redis_->Lease({}, options_.host);
  if (!r.ok()) {
    redis_up_ = false;
    next_heartbeat_ns_ = now_ns + kProbeEveryNs;
    return;
  }
  RedisAnsweredLocked(r->hosts_alive);
  next_heartbeat_ns_ = now_ns + kHeartbeatEveryNs;
}

// Redis answers: first the fleet's buckets are debited what this host
// credited while it was away.
void Refiller::RedisAnsweredLocked(uint32_t hosts_alive) {
  hosts_alive_ = std::max<uint32_t>(hosts_alive, 1);
  redis_up_ = true;
  ever_up_ = true;
  std::vector<LeaseAsk> owed;
  std::vector<Tracked*> owing;
  for (auto& t : tracked_) {
    t->outage_last_ns = -1;
    t->outage_accrued = 0;
    if (t->outage_credited == 0) continue;
    owed.push_back({t->key, t->config, t->outage_credited});
    owing.push_back(t.get());
  }
  if (owed.empty()) return;
  if (redis_->Debit(owed).ok()) {
    for (Tracked* t : owing) t->outage_credited = 0;
  } else {
    redis_up_ = false;
  }
}

void Refiller::OutageLocked(int64_t now_ns) {
  if (options_.on_redis_down == RedisDown::kFailClosed) return;
  const uint32_t hosts = std::max<uint32_t>(ever_up_ ? hosts_alive_ : options_.expected_hosts, 1);
  for (auto& tp : tracked_) {
    Tracked& t = *tp;
    const PoolRef pool(t.cell);
    uint64_t n = 0;
    if (options_.on_redis_down == RedisDown::kFailOpen) {
      n = static_cast<uint64_t>(std::max<int64_t>(pool.Capacity() - pool.Available(), 0));
    } else {
      if (t.outage_last_ns < 0) t.outage_last_ns = now_ns;
      const double cap = std::max<double>(static_cast<double>(t.config.capacity / hosts), 1);
      t.outage_accrued += PerNanosecond(t.config.rate) / hosts *
                          static_cast<double>(std::max<int64_t>(now_ns - t.outage_last_ns, 0));
      t.outage_accrued = std::min(t.outage_accrued, cap);
      t.outage_last_ns = now_ns;
      const double room = cap - static_cast<double>(pool.Available());
      n = static_cast<uint64_t>(std::max(std::floor(std::min(t.outage_accrued, room)), 0.0));
    }
    if (n == 0) continue;
    const uint64_t credited = pool.Credit(n);
    t.outage_accrued -= static_cast<double>(credited);
    t.outage_credited += credited;
    t.last_level += static_cast<int64_t>(credited);
  }
}

// At stop. While Redis is away the permits stay in their pools, for the
// host's next refiller.
void Refiller::GiveEverythingBackLocked() {
  if (!redis_up_) return;
  std::vector<LeaseAsk> gives;
  for (auto& t : tracked_) {
    const uint64_t drained = PoolRef(t->cell).Drain(~uint64_t{0});
    t->last_level -= static_cast<int64_t>(drained);
    if (drained > 0) gives.push_back({t->key, t->config, drained, HeldBy(t->cell)});
  }
  if (!gives.empty()) GiveBackLocked(gives);
}

void Refiller::ShareLearnedLocked(int64_t now_ns) {
  next_share_ns_ = now_ns + kShareLearnedEveryNs;
  std::vector<std::string> keys;
  for (const auto& t : tracked_) keys.push_back(t->key);
  absl::StatusOr<std::vector<LearnedLimits>> fleet = redis_->Learned(keys);
  if (!fleet.ok()) return;  // Redis went away: the next lease finds out
  for (size_t i = 0; i < tracked_.size(); ++i) ShareLearnedLocked(*tracked_[i], (*fleet)[i]);
}

void Refiller::ShareLearnedLocked(Tracked& t, const LearnedLimits& fleet) {
  // Opening the pool again changes nothing and says what the host learned.
  absl::StatusOr<StoredBucket> local = local_->Pool(t.key, t.configured);
  if (!local.ok()) return;
  // A change on this host (or, the first time, a rate the fleet lacks) is
  // shared; otherwise the fleet's is taken in.
  std::optional<Rate> rate = local->learned;
  if (t.shared_once ? rate != t.local_rate_seen : !fleet.rate.has_value()) {
    if (rate != fleet.rate && !redis_->ShareLearnedRate(t.key, rate).ok()) return;
  } else if (fleet.rate != rate) {
    if (!local_->Learn(t.key, fleet.rate).ok()) return;
    rate = fleet.rate;
  }
  const uint64_t burst = std::max(local->learned_burst, fleet.burst);
  if (burst > local->learned_burst && !local_->LearnBurst(t.key, burst).ok()) return;
  if (burst > fleet.burst && !redis_->ShareLearnedBurst(t.key, burst).ok()) return;
  t.local_rate_seen = rate;
  t.shared_once = true;
  const BucketConfig running = CapBurst(rate ? LowerTo(t.configured, *rate) : t.configured, burst);
  if (RedisBuckets::Validate(running).ok()) t.config = running;
}

FleetStats Refiller::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  FleetStats s;
  s.refiller = elected_ >= 0;
  s.redis_up = redis_up_;
  s.hosts_alive = hosts_alive_;
  s.round_trip = rtt_;
  s.commands = redis_->commands();
  for (const auto& t : tracked_) {
    s.buckets.push_back({.key = t->key,
                         .capacity = t->config.capacity,
                         .pool = PoolRef(t->cell).Available(),
                         .fleet_available = t->fleet_available,
                         .leased = t->leased,
                         .returned = t->returned,
                         .outage_credited = t->outage_credited,
                         .demand_per_second = t->demand,
                         .lease_size = t->lease_size});
  }
  return s;
}

}  // namespace internal_cluster
}  // namespace sluice
