// The fleet lab's simulation (tools/lab/fleet.h): hosts, their refillers and
// one Redis bucket on simulated time, driven by a queue of timed events.

#include "tools/lab/fleet.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <queue>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "sluice/lease_sizing.h"
#include "tools/judge/exact_bucket.h"
#include "tools/lab/fleet_measure.h"
#include "tools/lab/fleet_redis.h"

namespace sluice::lab {
namespace {

constexpr int64_t kNever = INT64_MAX;
constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kBurstOnNs = 2 * kSecond;  // bursty: on 2 s at 4x, off 6 s
constexpr int64_t kBurstPeriodNs = 8 * kSecond;
constexpr int64_t kCrashDownNs = 5 * kSecond;
constexpr int64_t kSelfRefillEveryNs = 10'000'000;  // the broken refiller's tick

int64_t Nanos(absl::Duration d) { return absl::ToInt64Nanoseconds(d); }

struct Host {
  uint64_t pool = 0;          // permits leased and not used
  std::deque<int64_t> queue;  // arrival times of waiting requests (one permit each)
  bool crashed = false;
  uint32_t epoch = 0;      // bumped at a crash: what was on its way is lost
  bool in_flight = false;  // a LEASE is on its way or being answered
  LeasePlan sent_plan;     // the plan and queue of the LEASE in flight
  uint64_t sent_queued = 0;
  int64_t next_lease_ns = 0;  // no LEASE before this (Redis said the rest comes then)
  bool retry_pending = false;
  int64_t last_use_ns = 0;  // last admit or grant: the idle clock
  bool idle_check_pending = false;
  double demand = 0;  // requests per second, decayed to demand_at_ns
  int64_t demand_at_ns = 0;
  uint32_t hosts_alive = 1;      // as Redis last said
  double rate = 0;               // offered requests per second while on
  int64_t phase_ns = 0;          // bursty: where its on/off cycle starts
  uint64_t used_unreported = 0;  // admitted since the last call to Redis
  int64_t offered = 0;
  int64_t admitted = 0;
};

// Who Redis sees calling: a host that restarts is a new caller.
uint64_t CallerId(uint32_t host, uint32_t epoch) { return (uint64_t{epoch} << 32) | host; }

class FleetSim {
 public:
  FleetSim(const FleetConfig& config, FleetWorkload workload, std::unique_ptr<ExactBucket> bucket);
  FleetResult Run();

 private:
  enum class Kind : uint8_t {
    kArrival,
    kLeaseAtRedis,
    kGrantAtHost,
    kReturnAtRedis,
    kRetry,
    kIdleCheck,
    kCrash,
    kRestart,
    kSelfRefill,
  };
  struct Event {
    int64_t t = 0;
    uint64_t seq = 0;  // ties go in the order pushed: deterministic
    Kind kind = Kind::kArrival;
    uint32_t host = 0;
    uint32_t epoch = 0;
    uint32_t alive = 0;  // a grant: hosts alive, as Redis counted them
    uint64_t n = 0;      // permits wanted, granted or returned
    int64_t aux = 0;     // a grant: when the rest will be there (0: all granted)
    bool operator>(const Event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
  };

  void Push(Event e);
  void Dispatch(const Event& e);
  void SetUpHosts();
  void ScheduleCrashes();
  int64_t NextArrival(const Host& host, int64_t after);
  void OnArrival(uint32_t h);
  void OnLeaseAtRedis(const Event& e);
  void OnGrant(const Event& e);
  void OnReturnAtRedis(const Event& e);
  void OnIdleCheck(uint32_t h);
  void OnCrash(uint32_t h);
  void OnRestart(uint32_t h);
  void OnSelfRefill(uint32_t h);
  void ServeQueue(Host& host);
  void Admit(Host& host, int64_t arrival_ns);
  void MaybeLease(uint32_t h);
  void ScheduleIdleCheck(uint32_t h);
  void AddToPool(Host& host, uint64_t n);
  double DemandNow(const Host& host) const;
  void Finish();

  const FleetConfig config_;
  const FleetWorkload workload_;
  const int64_t end_ns_;
  const int64_t half_trip_ns_;
  const int64_t trip_ns_;
  const double rate_per_second_;  // R
  FleetRedis redis_;
  std::mt19937_64 rng_;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  uint64_t seq_ = 0;
  int64_t now_ = 0;
  std::vector<Host> hosts_;
  uint32_t hot_hosts_ = 0;  // skewed: hosts 0 .. hot_hosts_ - 1 are hot
  int64_t pooled_ = 0;
  int64_t granted_ = 0;
  int64_t returned_ = 0;
  FleetTrace trace_;
};

FleetSim::FleetSim(const FleetConfig& config, FleetWorkload workload,
                   std::unique_ptr<ExactBucket> bucket)
    : config_(config),
      workload_(workload),
      end_ns_(Nanos(config.duration)),
      half_trip_ns_(Nanos(config.round_trip) / 2),
      trip_ns_(Nanos(config.round_trip)),
      rate_per_second_(static_cast<double>(config.limit.permits()) /
                       absl::ToDoubleSeconds(config.limit.period())),
      redis_(std::move(bucket), config.cap_outstanding),
      rng_(config.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(workload) * 1'000'003 +
           config.hosts),
      hosts_(config.hosts) {}

void FleetSim::Push(Event e) {
  e.seq = seq_++;
  events_.push(e);
}

void FleetSim::SetUpHosts() {
  const uint32_t n = config_.hosts;
  const double fleet = config_.load * rate_per_second_;
  hot_hosts_ = workload_ == FleetWorkload::kSkewed ? std::max<uint32_t>(1, n / 20) : n;
  std::uniform_int_distribution<int64_t> phase(0, kBurstPeriodNs - 1);
  for (uint32_t h = 0; h < n; ++h) {
    Host& host = hosts_[h];
    host.rate = fleet / n;
    if (workload_ == FleetWorkload::kBursty) {
      host.rate *= static_cast<double>(kBurstPeriodNs) / kBurstOnNs;
      host.phase_ns = phase(rng_);
    } else if (workload_ == FleetWorkload::kSkewed) {
      const double idle = 0.01 * fleet / config_.load / std::max<uint32_t>(1, n - hot_hosts_);
      host.rate = h < hot_hosts_ ? fleet / hot_hosts_ : idle;
    }
    if (config_.fault == FleetFault::kPoolRefillsItself) {
      Push({.t = kSelfRefillEveryNs, .kind = Kind::kSelfRefill, .host = h});
    }
    if (const int64_t t = NextArrival(host, 0); t <= end_ns_) {
      Push({.t = t, .kind = Kind::kArrival, .host = h});
    }
  }
}

void FleetSim::ScheduleCrashes() {
  if (workload_ != FleetWorkload::kCrash) return;
  std::vector<uint32_t> order(config_.hosts);
  for (uint32_t h = 0; h < config_.hosts; ++h) order[h] = h;
  std::shuffle(order.begin(), order.end(), rng_);
  std::uniform_int_distribution<int64_t> when(end_ns_ / 10, end_ns_ * 8 / 10);
  const uint32_t crashes = std::max<uint32_t>(1, config_.hosts / 10);
  for (uint32_t i = 0; i < crashes; ++i) {
    Push({.t = when(rng_), .kind = Kind::kCrash, .host = order[i]});
  }
}

// Poisson at host.rate; bursty hosts only while on (memoryless: an arrival
// that would fall while off starts afresh at the next on).
int64_t FleetSim::NextArrival(const Host& host, int64_t after) {
  if (!(host.rate > 0)) return kNever;
  std::exponential_distribution<double> gap(host.rate);
  int64_t t = after + std::max<int64_t>(1, static_cast<int64_t>(gap(rng_) * kSecond));
  if (workload_ != FleetWorkload::kBursty) return t;
  while (t <= end_ns_) {
    const int64_t into = ((t - host.phase_ns) % kBurstPeriodNs + kBurstPeriodNs) % kBurstPeriodNs;
    if (into < kBurstOnNs) return t;
    t += kBurstPeriodNs - into + static_cast<int64_t>(gap(rng_) * kSecond);
  }
  return t;
}

FleetResult FleetSim::Run() {
  SetUpHosts();
  ScheduleCrashes();
  while (!events_.empty() && events_.top().t <= end_ns_) {
    const Event e = events_.top();
    events_.pop();
    now_ = e.t;
    Dispatch(e);
  }
  Finish();
  FleetResult result{
      .workload = workload_, .hosts = config_.hosts, .round_trip = config_.round_trip};
  result.metrics = JudgeFleet(config_, trace_);
  return result;
}

void FleetSim::Dispatch(const Event& e) {
  Host& host = hosts_[e.host];
  switch (e.kind) {
    case Kind::kArrival:
      return OnArrival(e.host);
    case Kind::kLeaseAtRedis:
      return OnLeaseAtRedis(e);
    case Kind::kGrantAtHost:
      return OnGrant(e);
    case Kind::kReturnAtRedis:
      return OnReturnAtRedis(e);
    case Kind::kRetry:
      if (e.epoch != host.epoch) return;
      host.retry_pending = false;
      return MaybeLease(e.host);
    case Kind::kIdleCheck:
      if (e.epoch != host.epoch) return;
      return OnIdleCheck(e.host);
    case Kind::kCrash:
      return OnCrash(e.host);
    case Kind::kRestart:
      return OnRestart(e.host);
    case Kind::kSelfRefill:
      return OnSelfRefill(e.host);
  }
}

void FleetSim::OnArrival(uint32_t h) {
  Host& host = hosts_[h];
  if (const int64_t t = NextArrival(host, now_); t <= end_ns_) {
    Push({.t = t, .kind = Kind::kArrival, .host = h});
  }
  if (host.crashed) return;  // its callers went down with it
  ++host.offered;
  const double tau = absl::ToDoubleSeconds(config_.demand_window);
  host.demand = DemandNow(host) + 1 / tau;
  host.demand_at_ns = now_;
  if (host.queue.empty() && host.pool > 0) {
    Admit(host, now_);
  } else {
    host.queue.push_back(now_);
  }
  MaybeLease(h);
}

double FleetSim::DemandNow(const Host& host) const {
  const double tau = absl::ToDoubleSeconds(config_.demand_window);
  return host.demand * std::exp(-static_cast<double>(now_ - host.demand_at_ns) / 1e9 / tau);
}

void FleetSim::Admit(Host& host, int64_t arrival_ns) {
  --host.pool;
  --pooled_;
  ++host.admitted;
  ++host.used_unreported;
  host.last_use_ns = now_;
  trace_.admitted_ns.push_back(now_);
  trace_.waits_ns.push_back(now_ - arrival_ns);
}

// Gives up on requests that waited too long, then admits from the pool.
void FleetSim::ServeQueue(Host& host) {
  const int64_t max_wait = Nanos(config_.max_wait);
  while (!host.queue.empty() && now_ - host.queue.front() > max_wait) {
    host.queue.pop_front();
    ++trace_.gave_up;
  }
  while (!host.queue.empty() && host.pool > 0) {
    Admit(host, host.queue.front());
    host.queue.pop_front();
  }
}

// The refiller: below the watermark with no LEASE in flight, ask for a lease
// plus what the queue needs, unless Redis said to wait.
void FleetSim::MaybeLease(uint32_t h) {
  Host& host = hosts_[h];
  if (host.crashed || host.in_flight) return;
  ServeQueue(host);
  const LeasePlan plan = PlanLease({.capacity = config_.capacity,
                                    .demand_per_second = DemandNow(host),
                                    .round_trip = config_.round_trip,
                                    .hosts_alive = host.hosts_alive,
                                    .rate_per_second = rate_per_second_});
  if (host.pool >= plan.watermark) return;
  // An idle host whose pool ran low waits for its next request.
  if (host.queue.empty() && now_ - host.last_use_ns >= Nanos(config_.idle_return)) return;
  if (now_ < host.next_lease_ns) {
    if (!host.retry_pending) {
      host.retry_pending = true;
      Push({.t = host.next_lease_ns, .kind = Kind::kRetry, .host = h, .epoch = host.epoch});
    }
    return;
  }
  host.in_flight = true;
  host.sent_plan = plan;
  host.sent_queued = host.queue.size();
  const uint64_t want = std::min<uint64_t>(plan.lease + host.sent_queued, config_.capacity);
  Push({.t = now_ + half_trip_ns_,
        .kind = Kind::kLeaseAtRedis,
        .host = h,
        .epoch = host.epoch,
        .n = want,
        .aux = static_cast<int64_t>(host.used_unreported)});
  host.used_unreported = 0;
}

// Redis: grant what is there, up to the want, and say when the rest will be.
void FleetSim::OnLeaseAtRedis(const Event& e) {
  ++trace_.lease_calls;
  const FleetRedis::Grant grant =
      redis_.Lease(CallerId(e.host, e.epoch), e.n, static_cast<uint64_t>(e.aux), now_);
  granted_ += static_cast<int64_t>(grant.granted);
  if (granted_ - returned_ > AllowedBy(config_, now_)) ++trace_.cumulative_breaches;
  Push({.t = now_ + (trip_ns_ - half_trip_ns_),
        .kind = Kind::kGrantAtHost,
        .host = e.host,
        .epoch = e.epoch,
        .alive = grant.hosts_alive,
        .n = grant.granted,
        .aux = grant.rest_at_ns});
}

void FleetSim::OnGrant(const Event& e) {
  Host& host = hosts_[e.host];
  if (e.epoch != host.epoch) {
    trace_.lost_in_crashes += static_cast<int64_t>(e.n);
    return;
  }
  host.in_flight = false;
  host.hosts_alive = e.alive;
  AddToPool(host, e.n);
  if (host.pool + 1 > host.sent_plan.lease + host.sent_plan.watermark + host.sent_queued) {
    ++trace_.pool_breaches;
  }
  if (e.aux != 0) {
    const int64_t backoff = Nanos(host.sent_plan.backoff);
    const int64_t drawn = backoff + std::uniform_int_distribution<int64_t>(
                                        0, std::max<int64_t>(0, backoff - 1))(rng_);
    host.next_lease_ns = std::max({e.aux, now_ + trip_ns_, now_ + drawn});
  }
  if (e.n > 0) host.last_use_ns = now_;
  ScheduleIdleCheck(e.host);
  MaybeLease(e.host);
}

// Adds n permits to the pool and admits what waits on them: the pools are
// measured once the queue has taken its share.
void FleetSim::AddToPool(Host& host, uint64_t n) {
  host.pool += n;
  pooled_ += static_cast<int64_t>(n);
  ServeQueue(host);
  trace_.most_pooled = std::max(trace_.most_pooled, pooled_);
}

void FleetSim::OnReturnAtRedis(const Event& e) {
  redis_.Return(CallerId(e.host, e.epoch), e.n, static_cast<uint64_t>(e.aux), now_);
}

void FleetSim::ScheduleIdleCheck(uint32_t h) {
  Host& host = hosts_[h];
  if (host.idle_check_pending || host.pool == 0) return;
  host.idle_check_pending = true;
  // Never now again: a check put off by a lease in flight comes back later.
  const int64_t t = std::max(host.last_use_ns + Nanos(config_.idle_return), now_ + trip_ns_ + 1);
  Push({.t = t, .kind = Kind::kIdleCheck, .host = h, .epoch = host.epoch});
}

// No admit for idle_return: RETURN the whole pool.
void FleetSim::OnIdleCheck(uint32_t h) {
  Host& host = hosts_[h];
  host.idle_check_pending = false;
  if (host.pool == 0) return;
  if (now_ - host.last_use_ns < Nanos(config_.idle_return) || host.in_flight) {
    return ScheduleIdleCheck(h);
  }
  ++trace_.return_calls;
  returned_ += static_cast<int64_t>(host.pool);
  Push({.t = now_ + half_trip_ns_,
        .kind = Kind::kReturnAtRedis,
        .host = h,
        .epoch = host.epoch,
        .n = host.pool,
        .aux = static_cast<int64_t>(host.used_unreported)});
  host.used_unreported = 0;
  pooled_ -= static_cast<int64_t>(host.pool);
  host.pool = 0;
}

void FleetSim::OnCrash(uint32_t h) {
  Host& host = hosts_[h];
  if (host.crashed) return;
  trace_.lost_in_crashes += static_cast<int64_t>(host.pool);
  pooled_ -= static_cast<int64_t>(host.pool);
  trace_.lost_queued += static_cast<int64_t>(host.queue.size());
  const int64_t offered = host.offered;
  const int64_t admitted = host.admitted;
  const double rate = host.rate;
  const int64_t phase = host.phase_ns;
  const uint32_t epoch = host.epoch;
  host = Host{};
  host.crashed = true;
  host.epoch = epoch + 1;
  host.offered = offered;
  host.admitted = admitted;
  host.rate = rate;
  host.phase_ns = phase;
  Push({.t = now_ + kCrashDownNs, .kind = Kind::kRestart, .host = h});
}

void FleetSim::OnRestart(uint32_t h) { hosts_[h].crashed = false; }

// The broken refiller: the pool also refills by itself, at R / H.
void FleetSim::OnSelfRefill(uint32_t h) {
  Host& host = hosts_[h];
  Push({.t = now_ + kSelfRefillEveryNs, .kind = Kind::kSelfRefill, .host = h});
  if (host.crashed) return;
  const __int128 tick = static_cast<__int128>(config_.limit.permits()) * kSelfRefillEveryNs /
                        Nanos(config_.limit.period()) / config_.hosts;
  AddToPool(host, std::max<uint64_t>(1, static_cast<uint64_t>(tick)));
}

// The end of the run: what waits gives up; pools, and grants still on their
// way, go back to Redis (leased but unused).
void FleetSim::Finish() {
  for (Host& host : hosts_) {
    trace_.gave_up += static_cast<int64_t>(host.queue.size());
    host.queue.clear();
  }
  trace_.returned_at_end = pooled_;
  while (!events_.empty()) {
    const Event& e = events_.top();
    if (e.kind == Kind::kGrantAtHost && e.epoch == hosts_[e.host].epoch) {
      trace_.returned_at_end += static_cast<int64_t>(e.n);
    }
    events_.pop();
  }
  trace_.granted = granted_;
  trace_.returned = returned_;
  trace_.duration_ns = end_ns_;
  for (uint32_t h = 0; h < config_.hosts; ++h) {
    const bool equal_demand = h < hot_hosts_;
    trace_.hosts.push_back(
        {.offered = hosts_[h].offered, .admitted = hosts_[h].admitted, .hot = equal_demand});
  }
  trace_.skewed = workload_ == FleetWorkload::kSkewed;
}

}  // namespace

absl::string_view FleetWorkloadName(FleetWorkload workload) {
  switch (workload) {
    case FleetWorkload::kSteady:
      return "steady";
    case FleetWorkload::kBursty:
      return "bursty";
    case FleetWorkload::kSkewed:
      return "skewed";
    case FleetWorkload::kCrash:
      return "crash";
  }
  return "?";
}

absl::StatusOr<FleetWorkload> ParseFleetWorkload(absl::string_view name) {
  std::vector<absl::string_view> names;
  for (FleetWorkload w : kAllFleetWorkloads) {
    if (FleetWorkloadName(w) == name) return w;
    names.push_back(FleetWorkloadName(w));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown fleet workload \"", name, "\"; known: ", absl::StrJoin(names, ", ")));
}

absl::Status ValidateFleetConfig(const FleetConfig& c) {
  auto bad = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("fleet: ", what));
  };
  if (c.hosts < 1 || c.hosts > kMaxFleetHosts) {
    return bad(absl::StrCat("hosts must be 1 .. ", kMaxFleetHosts));
  }
  if (absl::Status s = c.limit.Validate(); !s.ok()) return bad(s.message());
  if (c.capacity < 1 || c.capacity > kMaxExactBucketParameter) return bad("capacity out of range");
  if (c.round_trip < absl::ZeroDuration() || c.round_trip > absl::Seconds(10)) {
    return bad("round trip must be 0 .. 10s");
  }
  if (c.duration <= absl::ZeroDuration() || c.duration > absl::Hours(24)) {
    return bad("duration must be over 0 and at most 24h");
  }
  if (!(c.load > 0) || c.load > 100) return bad("load must be over 0 and at most 100");
  if (c.max_wait < absl::ZeroDuration()) return bad("max wait must not be negative");
  if (c.idle_return <= absl::ZeroDuration()) return bad("idle return must be over 0");
  if (c.demand_window <= absl::ZeroDuration()) return bad("demand window must be over 0");
  const double offered = c.load * static_cast<double>(c.limit.permits()) *
                         absl::FDivDuration(c.duration, c.limit.period());
  if (offered > 1e8) return bad("the run would offer more than 100 million requests");
  return absl::OkStatus();
}

absl::StatusOr<FleetResult> SimulateFleet(const FleetConfig& config, FleetWorkload workload) {
  if (absl::Status s = ValidateFleetConfig(config); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<ExactBucket>> bucket =
      ExactBucket::Create({.permits = config.limit.permits(),
                           .period_ns = Nanos(config.limit.period()),
                           .capacity = config.capacity},
                          0);
  if (!bucket.ok()) return bucket.status();
  return FleetSim(config, workload, *std::move(bucket)).Run();
}

absl::StatusOr<std::vector<FleetResult>> RunFleetLab(const FleetConfig& config,
                                                     absl::Span<const uint32_t> hosts,
                                                     absl::Span<const FleetWorkload> workloads) {
  std::vector<FleetResult> results;
  for (uint32_t n : hosts) {
    FleetConfig c = config;
    c.hosts = n;
    for (FleetWorkload w : workloads) {
      absl::StatusOr<FleetResult> r = SimulateFleet(c, w);
      if (!r.ok()) return r.status();
      results.push_back(*std::move(r));
    }
  }
  return results;
}

}  // namespace sluice::lab
