// The policy: opens every bucket, budget and cap of a configuration, resolves
// and caches routes, reserves all-or-nothing, feeds provider headers back,
// and reports stats. (Settling a permit is permit.cc.)

#include "sluice/policy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/civil_time.h"
#include "sluice/bucket_key.h"
#include "src/policy/policy_internal.h"

namespace sluice {
namespace internal_policy {
namespace {

constexpr int64_t kDaySeconds = 86'400;

}  // namespace

Meter MeterOf(LimitKind kind, bool openai_provider_bucket) {
  switch (kind) {
    case LimitKind::kRequestsPerMinute:
      return Meter::kRequests;
    case LimitKind::kInputTokensPerMinute:
      return Meter::kInputTokens;
    case LimitKind::kOutputTokensPerMinute:
      return Meter::kOutputTokens;
    case LimitKind::kTokensPerMinute:
    case LimitKind::kTokensPerDay:
      break;
  }
  return openai_provider_bucket ? Meter::kOpenAiTokens : Meter::kTotalTokens;
}

namespace {

const char* UnitOf(Meter meter) {
  switch (meter) {
    case Meter::kRequests:
      return "requests";
    case Meter::kMicroUsd:
      return "micro-USD";
    default:
      return "tokens";
  }
}

std::string Usd(int64_t micro_usd) {
  return absl::StrFormat("%.6f USD", static_cast<double>(micro_usd) / 1e6);
}

constexpr absl::string_view kConcurrencyFullPayload = "type.sluice/concurrency-full";
constexpr absl::string_view kPoolShortPayload = "type.sluice/pool-short";

}  // namespace

int64_t ReservedAmount(const RouteRep& route, Meter meter, uint64_t input_tokens,
                       uint64_t max_output_tokens) {
  const uint64_t output_precharge = route.precharge_output ? max_output_tokens : 0;
  switch (meter) {
    case Meter::kRequests:
      return 1;
    case Meter::kInputTokens:
      return Saturate(input_tokens);
    case Meter::kOutputTokens:
      return Saturate(output_precharge);
    case Meter::kTotalTokens:
      return Saturate(input_tokens + output_precharge);
    case Meter::kOpenAiTokens:
      return Saturate(std::max(max_output_tokens, input_tokens));
    case Meter::kMicroUsd: {
      const Price& p = *route.price;
      return CeilMicroUsd(MicroUsd(input_tokens, std::max(p.input, p.cache_write)) +
                          MicroUsd(max_output_tokens, p.output));
    }
  }
  return 0;
}

int64_t MaxWaitNs(absl::Duration max_wait) {
  return max_wait == absl::InfiniteDuration()
             ? std::numeric_limits<int64_t>::max()
             : absl::ToInt64Nanoseconds(std::max(max_wait, absl::ZeroDuration()));
}

PolicyImpl::PolicyImpl(const LimitsConfig& config, Store* store, PolicyOptions options)
    : config_(config),
      limits_(config_),
      store_(store),
      remote_(store->remote_buckets()),
      options_(std::move(options)) {}

std::optional<StoredLeases> PolicyImpl::ConcurrencyCap(absl::string_view key) const {
  auto it = leases_.find(key);
  if (it == leases_.end()) return std::nullopt;
  return it->second.handle;
}

absl::StatusOr<OpenedBucket> PolicyImpl::OpenStored(const BucketSpec& spec) const {
  absl::StatusOr<StoredBucket> handle = store_->Bucket(spec.key, spec.config);
  if (!handle.ok()) return handle.status();
  // The limit it runs at: the configured one, or one a process learned
  // from the provider's headers before this one started.
  const uint64_t applied = handle->learned && handle->learned->period() == spec.config.rate.period()
                               ? std::min(spec.limit, handle->learned->permits())
                               : spec.limit;
  return OpenedBucket{spec, *handle, std::make_unique<std::atomic<uint64_t>>(applied),
                      std::make_unique<std::atomic<uint64_t>>(handle->learned_burst)};
}

absl::Status PolicyImpl::OpenBucket(const BucketSpec& spec) {
  if (buckets_.contains(spec.key)) return absl::OkStatus();
  absl::StatusOr<OpenedBucket> opened = OpenStored(spec);
  if (!opened.ok()) return opened.status();
  buckets_.emplace(spec.key, *std::move(opened));
  order_.push_back(spec.key);
  return absl::OkStatus();
}

absl::Status PolicyImpl::OpenOwner(const OwnerLimits& owner) {
  for (const BucketSpec& spec : owner.buckets) {
    if (absl::Status s = OpenBucket(spec); !s.ok()) return s;
  }
  for (const BudgetSpec& spec : owner.budgets) {
    absl::StatusOr<StoredCounter> handle = store_->Counter(spec.key);
    if (!handle.ok()) return handle.status();
    budgets_.emplace(spec.key, OpenedBudget{spec, *handle});
    order_.push_back(spec.key);
  }
  if (const std::optional<ConcurrencySpec>& spec = owner.concurrency) {
    absl::StatusOr<StoredLeases> handle = store_->Leases(spec->key, spec->max_in_flight);
    if (!handle.ok()) return handle.status();
    // A process starting after one that died cleans up after it, whether
    // or not the cap is ever full again.
    handle->Reclaim();
    leases_.emplace(spec->key, OpenedLeases{*spec, *handle});
    order_.push_back(spec->key);
  }
  return absl::OkStatus();
}

absl::Status PolicyImpl::OpenAll() {
  for (const OwnerLimits& owner : limits_.owners()) {
    if (absl::Status s = OpenOwner(owner); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<const OpenedBucket*>> PolicyImpl::OwnerBuckets(
    const OwnerLimits& owner, absl::string_view account) {
  std::vector<const OpenedBucket*> opened;
  if (account.empty() || owner.type != BucketKey::Owner::kProvider) {
    for (const BucketSpec& spec : owner.buckets) opened.push_back(&buckets_.at(spec.key));
    return opened;
  }
  std::lock_guard<std::shared_mutex> lock(mu_);
  for (const BucketSpec& shared : owner.buckets) {
    // The provider's bucket, configured the same, under the account's key.
    absl::StatusOr<BucketSpec> spec = ForAccount(shared, account);
    if (!spec.ok()) return spec.status();
    auto it = account_buckets_.find(spec->key);
    if (it == account_buckets_.end()) {
      absl::StatusOr<OpenedBucket> bucket = OpenStored(*spec);
      if (!bucket.ok()) return bucket.status();
      it = account_buckets_.emplace(spec->key, *std::move(bucket)).first;
      account_order_.push_back(spec->key);
    }
    opened.push_back(&it->second);
  }
  return opened;
}

// Appends what `owner` charges, in order: buckets (`buckets`, opened for
// its specs), budgets; and its cap.
void PolicyImpl::AddCharges(const OwnerLimits& owner,
                            const std::vector<const OpenedBucket*>& buckets,
                            absl::string_view provider, RouteRep* route) const {
  const bool is_provider = owner.type == BucketKey::Owner::kProvider;
  for (const OpenedBucket* opened : buckets) {
    const BucketSpec& spec = opened->spec;
    route->charges.push_back({spec.key, MeterOf(spec.kind, is_provider && provider == "openai"),
                              is_provider, spec.kind, false, BudgetPeriod::kDay, 0,
                              opened->handle.bucket, NoCounter(), opened->handle.bottlenecks,
                              opened});
  }
  for (const BudgetSpec& spec : owner.budgets) {
    const OpenedBudget& opened = budgets_.at(spec.key);
    route->charges.push_back({spec.key, Meter::kMicroUsd, false, LimitKind::kRequestsPerMinute,
                              true, spec.period, static_cast<int64_t>(spec.limit_micro_usd),
                              BucketRef(nullptr, Clock::Monotonic()), opened.handle,
                              opened.handle.bottlenecks});
  }
  if (owner.concurrency) {
    route->leases.push_back({owner.concurrency->key, leases_.at(owner.concurrency->key).handle});
  }
}

absl::StatusOr<const Route*> PolicyImpl::Resolve(absl::string_view scope,
                                                 absl::string_view provider,
                                                 absl::string_view model,
                                                 absl::string_view account) {
  if (!account.empty()) {
    if (absl::Status s = BucketKey::ValidateName(BucketKey::Part::kAccount, account); !s.ok()) {
      return s;
    }
  }
  const std::string key = absl::StrCat(scope, "\n", provider, "\n", model, "\n", account);
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    if (auto it = routes_.find(key); it != routes_.end()) return it->second.get();
  }
  const RouteLimits limits = limits_.Route(scope, provider, model);
  auto route = std::make_unique<RouteRep>();
  route->scope = std::string(scope);
  route->fell_back = limits.path.fell_back;
  for (const ScopeLimits* s : limits.path.scopes) route->path.push_back(s->name);
  bool has_budget = false;
  for (const OwnerLimits* owner : limits.owners) {
    absl::StatusOr<std::vector<const OpenedBucket*>> buckets = OwnerBuckets(*owner, account);
    if (!buckets.ok()) return buckets.status();
    AddCharges(*owner, *buckets, provider, route.get());
    has_budget |= !owner->budgets.empty();
  }
  if (const OwnerLimits* model_class = limits.model_class) {
    route->count_cache_reads =
        model_class->model_class != nullptr && model_class->model_class->count_cache_reads
            ? *model_class->model_class->count_cache_reads
            : model_class->provider->count_cache_reads;
    route->precharge_output =
        model_class->provider->output_precharge == OutputPrecharge::kMaxTokens;
  }
  route->price = FindPrice(config_, model);
  if (has_budget && route->price == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("scope path of '", scope, "' has a USD budget, but model '", model,
                     "' has no entry in [prices]: its cost cannot be bounded"));
  }
  std::lock_guard<std::shared_mutex> lock(mu_);
  AddLearnedProvider(provider, account, route.get());
  auto [it, inserted] = routes_.emplace(key, std::unique_ptr<Route>(new Route(std::move(route))));
  return it->second.get();
}

absl::Time PolicyImpl::WallNow() const {
  return options_.wall_clock ? options_.wall_clock() : store_->WallTime();
}

int64_t PolicyImpl::WindowId(BudgetPeriod period) const {
  return BudgetWindowId(period, WallNow());
}

absl::Time PolicyImpl::NextWindowStart(BudgetPeriod period) const {
  const absl::Time now = WallNow();
  if (period == BudgetPeriod::kDay) {
    return absl::FromUnixSeconds((absl::ToUnixSeconds(now) / kDaySeconds + 1) * kDaySeconds);
  }
  return absl::FromCivil(absl::ToCivilMonth(now, absl::UTCTimeZone()) + 1, absl::UTCTimeZone());
}

std::unique_ptr<PermitState> PolicyImpl::NewPermit(const RouteRep& route) const {
  auto permit = std::make_unique<PermitState>();
  permit->route = &route;
  permit->store = store_;
  permit->open = true;  // so that a failure returns the leases taken
  if (remote_ != nullptr) permit->decided = Decided::kRemote;
  return permit;
}

absl::StatusOr<Permit> PolicyImpl::Reserve(const Route& route, uint64_t input_tokens,
                                           uint64_t max_output_tokens, absl::Duration max_wait,
                                           int64_t now_ns) {
  std::unique_ptr<PermitState> permit = NewPermit(*route.rep_);
  for (const RouteLease& lease : route.rep_->leases) {
    // Takes back the leases of dead holders when all are held.
    absl::StatusOr<int32_t> index = lease.leases.TryAcquire();
    if (!index.ok()) {
      permit->ReleaseLeases();
      return absl::Status(index.status().code(), absl::StrCat("concurrency cap ", lease.key, ": ",
                                                              index.status().message()));
    }
    permit->leases.push_back(*index);
    if (*index < 0) {
      permit->ReleaseLeases();
      lease.leases.bottlenecks()->fetch_add(1, std::memory_order_relaxed);
      absl::Status full = absl::DeadlineExceededError(absl::StrCat(
          "concurrency cap ", lease.key, ": all ", lease.leases.capacity(), " requests in flight"));
      full.SetPayload(kConcurrencyFullPayload, absl::Cord(lease.key));
      return full;
    }
  }
  return ReserveCharges(*route.rep_, input_tokens, max_output_tokens, max_wait, now_ns,
                        std::move(permit));
}

// Takes `amount` micro-USD from budget `c` for this window, or says why not.
absl::Status PolicyImpl::TakeBudget(const Charge& c, int64_t amount, PermitState* permit) {
  const int64_t window = WindowId(c.period);
  if (c.counter.TryAdd(window, amount, c.limit)) {
    permit->windows.push_back(window);
    permit->reserved.push_back(amount);
    permit->terms.push_back({});
    return absl::OkStatus();
  }
  if (amount > c.limit) {
    never_fits_.fetch_add(1, std::memory_order_relaxed);
    return absl::OutOfRangeError(absl::StrCat("budget ", c.key, ": this request may cost up to ",
                                              Usd(amount), ", more than the whole budget of ",
                                              Usd(c.limit), ": it can never fit"));
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "budget ", c.key, ": ", Usd(c.counter.Used(window)), " of ", Usd(c.limit), " spent this ",
      c.period == BudgetPeriod::kDay ? "UTC day" : "UTC month", "; this request may cost up to ",
      Usd(amount), "; it resets in ",
      absl::FormatDuration(absl::Trunc(NextWindowStart(c.period) - WallNow(), absl::Seconds(1)))));
}

absl::StatusOr<Permit> PolicyImpl::ReserveCharges(const RouteRep& route, uint64_t input_tokens,
                                                  uint64_t max_output_tokens,
                                                  absl::Duration max_wait, int64_t now_ns,
                                                  std::unique_ptr<PermitState> permit) {
  if (permit->decided == Decided::kRemote) {
    return ReserveRemote(route, input_tokens, max_output_tokens, max_wait, now_ns,
                         std::move(permit));
  }
  if (route.fell_back) route.uses.fetch_add(1, std::memory_order_relaxed);
  const int64_t max_wait_ns = MaxWaitNs(max_wait);
  int64_t worst = 0;
  const Charge* bottleneck = nullptr;
  // Undoes charges [0, taken) exactly, and the leases.
  auto roll_back = [&](size_t taken, const Charge& refused) {
    permit->Refund(taken, now_ns);
    rollbacks_.fetch_add(1, std::memory_order_relaxed);
    refused.bottlenecks->fetch_add(1, std::memory_order_relaxed);
    permit->ReleaseLeases();
  };
  for (size_t i = 0; i < route.charges.size(); ++i) {
    const Charge& c = route.charges[i];
    const int64_t amount = ReservedAmount(route, c.meter, input_tokens, max_output_tokens);
    if (c.is_budget) {
      if (absl::Status s = TakeBudget(c, amount, permit.get()); !s.ok()) {
        roll_back(i, c);
        return s;
      }
      continue;
    }
    // A pool (lease mode) is never reserved into: waiting brings it nothing.
    const bool pool = c.opened != nullptr && c.opened->handle.pool;
    const Decision d =
        c.bucket.Reserve(static_cast<uint64_t>(amount), pool ? 0 : max_wait_ns, now_ns);
    if (!d.granted()) {
      roll_back(i, c);
      if (pool && d.outcome == Outcome::kRefused) {
        store_->Want(c.key, static_cast<uint64_t>(amount));
        absl::Status short_of_permits = absl::DeadlineExceededError(
            absl::StrCat("bucket ", c.key, ": this host's pool holds fewer than ", amount, " ",
                         UnitOf(c.meter), " (the fleet's refiller tops it up from Redis)"));
        short_of_permits.SetPayload(kPoolShortPayload, absl::Cord(c.key));
        return short_of_permits;
      }
      return BucketRefusal(c, d.outcome, amount, d.wait_ns, max_wait_ns, c.bucket.Capacity());
    }
    permit->reserved.push_back(amount);
    permit->terms.push_back(d.terms);
    if (d.wait_ns > worst) {
      worst = d.wait_ns;
      bottleneck = &c;
    }
  }
  if (bottleneck != nullptr) {
    bottleneck->bottlenecks->fetch_add(1, std::memory_order_relaxed);
    permit->bottleneck = &bottleneck->key;
  }
  permit->wait_ns = worst;
  permit->ready_at_ns = now_ns + worst;
  return Permit(std::move(permit));
}

absl::Status PolicyImpl::BucketRefusal(const Charge& c, Outcome outcome, int64_t amount,
                                       int64_t wait_ns, int64_t max_wait_ns,
                                       int64_t capacity) const {
  if (outcome == Outcome::kNeverFits) {
    never_fits_.fetch_add(1, std::memory_order_relaxed);
    return absl::OutOfRangeError(absl::StrCat("bucket ", c.key, ": the request needs ", amount, " ",
                                              UnitOf(c.meter), " but the bucket holds at most ",
                                              capacity, ": it can never fit (raise its burst)"));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("bucket ", c.key, " would make the request wait ",
                   absl::FormatDuration(absl::Nanoseconds(wait_ns)), ", over the ",
                   absl::FormatDuration(absl::Nanoseconds(max_wait_ns)), " allowed"));
}

// Lease mode: a pool fills only when the host's refiller leases from the
// fleet, so a request whose pools hold too little waits for them, looking
// every millisecond, until `deadline_ns` (then reserving reports which).
void PolicyImpl::WaitForPools(const RouteRep& route, const Request& request,
                              int64_t deadline_ns) const {
  const Clock clock = store_->clock();
  for (int64_t now = clock.Now();; now = clock.Now()) {
    bool short_of_permits = false;
    for (const Charge& c : route.charges) {
      if (c.opened == nullptr || !c.opened->handle.pool) continue;
      const int64_t amount =
          ReservedAmount(route, c.meter, request.input_tokens, request.max_output_tokens);
      if (c.bucket.Available(now) >= amount) continue;
      short_of_permits = true;
      store_->Want(c.key, static_cast<uint64_t>(amount));
    }
    if (!short_of_permits || now >= deadline_ns) return;
    clock.SleepUntil(std::min(deadline_ns, now + 1'000'000));
  }
}

absl::StatusOr<Permit> PolicyImpl::Acquire(const Request& request, absl::Duration timeout) {
  absl::StatusOr<const Route*> route =
      Resolve(request.scope, request.provider, request.model, /*account=*/"");
  if (!route.ok()) return route.status();
  const RouteRep& rep = *(*route)->rep_;
  const Clock clock = store_->clock();
  const int64_t start = clock.Now();
  const int64_t timeout_ns =
      timeout == absl::InfiniteDuration()
          ? std::numeric_limits<int64_t>::max() / 2
          : absl::ToInt64Nanoseconds(std::max(timeout, absl::ZeroDuration()));
  std::unique_ptr<PermitState> permit = NewPermit(rep);
  for (const RouteLease& lease : rep.leases) {
    const int64_t left = std::max<int64_t>(0, start + timeout_ns - clock.Now());
    absl::StatusOr<uint32_t> index = lease.leases.Acquire(absl::Nanoseconds(left));
    if (!index.ok()) {
      permit->ReleaseLeases();
      lease.leases.bottlenecks()->fetch_add(1, std::memory_order_relaxed);
      return absl::Status(index.status().code(), absl::StrCat("concurrency cap ", lease.key, ": ",
                                                              index.status().message()));
    }
    permit->leases.push_back(static_cast<int32_t>(*index));
  }
  WaitForPools(rep, request, start + timeout_ns);
  const int64_t now = clock.Now();
  absl::StatusOr<Permit> reserved = ReserveCharges(
      rep, request.input_tokens, request.max_output_tokens,
      absl::Nanoseconds(std::max<int64_t>(0, start + timeout_ns - now)), now, std::move(permit));
  if (!reserved.ok()) return reserved.status();
  if (reserved->wait_ns() > 0) clock.SleepUntil(reserved->ready_at_ns());
  return reserved;
}

void PolicyImpl::ClampProvider(const Route& route, LimitKind kind, int64_t remaining,
                               int64_t now_ns) const {
  if (remote_ != nullptr) return ClampRemote(route, kind, remaining);
  for (const Charge& c : route.rep_->charges) {
    if (!c.is_provider || c.kind != kind) continue;
    const int64_t excess = c.bucket.Available(now_ns) - std::max<int64_t>(remaining, 0);
    if (excess > 0) c.bucket.Debit(static_cast<uint64_t>(excess), now_ns);
  }
}

void PolicyImpl::LearnProviderRate(const Route& route, LimitKind kind, double per_minute) const {
  if (!(per_minute > 0) || kind == LimitKind::kTokensPerDay) return;
  for (const Charge& c : route.rep_->charges) {
    if (!c.is_provider || c.kind != kind) continue;
    const OpenedBucket& opened = *c.opened;
    const double scaled = std::min(per_minute * config_.headroom, 1e18);
    const uint64_t target =
        std::min<uint64_t>(opened.spec.limit, std::max<uint64_t>(1, static_cast<uint64_t>(scaled)));
    const uint64_t applied = opened.applied->load(std::memory_order_relaxed);
    // Only a clear change (10%) is worth recording, which takes the store's
    // lock; and never above the configured limit.
    if (target * 10 >= applied * 9 && target * 10 <= applied * 11) continue;
    uint64_t expected = applied;
    if (!opened.applied->compare_exchange_strong(expected, target)) continue;  // another won
    // Recorded in the store for every process; a limit at the configured one
    // is no longer a learned limit.
    std::optional<Rate> learned;
    if (target < opened.spec.limit) learned = Rate(target, opened.spec.config.rate.period());
    store_->Learn(c.key, learned).IgnoreError();
  }
}

void PolicyImpl::HoldProvider(const Route& route, int64_t until_ns, int64_t now_ns) const {
  if (remote_ != nullptr) return HoldRemote(route, until_ns, now_ns);
  // Every request pays the request bucket, so holding it holds them all;
  // without one, hold whatever the provider meters.
  bool has_requests = false;
  for (const Charge& c : route.rep_->charges) {
    has_requests |= c.is_provider && c.kind == LimitKind::kRequestsPerMinute;
  }
  for (const Charge& c : route.rep_->charges) {
    if (!c.is_provider) continue;
    if (has_requests && c.kind != LimitKind::kRequestsPerMinute) continue;
    c.bucket.HoldUntil(until_ns, now_ns);
  }
}

PolicyStats::Bucket PolicyImpl::BucketStats(const OpenedBucket& opened, int64_t now) const {
  const BucketRef& bucket = opened.handle.bucket;
  const int64_t capacity = bucket.Capacity();
  const int64_t available = bucket.Available(now);
  return {opened.spec.key,
          opened.spec.owner,
          opened.spec.kind,
          opened.spec.limit,
          available,
          capacity,
          capacity > 0 ? 100.0 * static_cast<double>(available) / capacity : 0.0,
          bucket.GetPressure(now),
          opened.handle.bottlenecks->load(std::memory_order_relaxed)};
}

PolicyStats PolicyImpl::Stats() const {
  PolicyStats stats;
  std::vector<const OpenedBucket*> opened;  // of stats.buckets
  const int64_t now = store_->clock().Now();
  for (const std::string& key : order_) {
    if (auto b = buckets_.find(key); b != buckets_.end()) {
      stats.buckets.push_back(BucketStats(b->second, now));
      opened.push_back(&b->second);
    } else if (auto g = budgets_.find(key); g != budgets_.end()) {
      const BudgetSpec& spec = g->second.spec;
      stats.budgets.push_back({key, spec.scope, spec.period, spec.limit_micro_usd,
                               static_cast<uint64_t>(g->second.handle.Used(WindowId(spec.period))),
                               g->second.handle.bottlenecks->load(std::memory_order_relaxed)});
    } else if (auto l = leases_.find(key); l != leases_.end()) {
      const ConcurrencySpec& spec = l->second.spec;
      stats.concurrency.push_back(
          {key, spec.scope, spec.max_in_flight, l->second.handle.InFlight(),
           l->second.handle.bottlenecks()->load(std::memory_order_relaxed)});
    }
  }
  std::shared_lock<std::shared_mutex> lock(mu_);
  for (const std::string& key : account_order_) {
    stats.buckets.push_back(BucketStats(account_buckets_.at(key), now));
    opened.push_back(&account_buckets_.at(key));
  }
  for (const auto& [owner, buckets] : learned_providers_) {
    for (const OpenedBucket& bucket : buckets) {
      stats.buckets.push_back(BucketStats(bucket, now));
      opened.push_back(&bucket);
    }
  }
  if (remote_ != nullptr) RemoteLevels(opened, &stats.buckets);
  for (const auto& [key, route] : routes_) {
    const RouteRep& rep = *route->rep_;
    const uint64_t uses = rep.uses.load(std::memory_order_relaxed);
    if (rep.fell_back && uses > 0) {
      stats.fallbacks[absl::StrCat(rep.scope, " -> ", rep.path.front())] += uses;
    }
  }
  stats.rollbacks = rollbacks_.load(std::memory_order_relaxed);
  stats.never_fits = never_fits_.load(std::memory_order_relaxed);
  return stats;
}

}  // namespace internal_policy

using internal_policy::kConcurrencyFullPayload;
using internal_policy::PolicyImpl;

bool IsPoolShort(const absl::Status& status) {
  return status.GetPayload(internal_policy::kPoolShortPayload).has_value();
}

bool IsConcurrencyFull(const absl::Status& status) {
  return status.GetPayload(kConcurrencyFullPayload).has_value();
}

std::string FullConcurrencyCap(const absl::Status& status) {
  const absl::optional<absl::Cord> key = status.GetPayload(kConcurrencyFullPayload);
  return key ? std::string(*key) : std::string();
}

uint64_t CharacterEstimator::EstimateInputTokens(absl::string_view provider,
                                                 absl::string_view /*model*/,
                                                 absl::string_view prompt) const {
  constexpr uint64_t kFraming = 8;
  const uint64_t bytes = prompt.size();
  // 3.5 bytes a token is 2 tokens per 7 bytes; both rounded up.
  const uint64_t tokens = provider == "anthropic" ? (2 * bytes + 6) / 7 : (bytes + 3) / 4;
  return tokens + kFraming;
}

// Policy ------------------------------------------------------------------------

Policy::Policy(std::unique_ptr<PolicyImpl> impl) : impl_(std::move(impl)) {}
Policy::~Policy() = default;

absl::StatusOr<std::unique_ptr<Policy>> Policy::Create(const LimitsConfig& config, Store* store,
                                                       PolicyOptions options) {
  auto impl = std::make_unique<PolicyImpl>(config, store, std::move(options));
  if (absl::Status s = impl->OpenAll(); !s.ok()) return s;
  return std::unique_ptr<Policy>(new Policy(std::move(impl)));
}

absl::StatusOr<const Route*> Policy::Resolve(absl::string_view scope, absl::string_view provider,
                                             absl::string_view model, absl::string_view account) {
  return impl_->Resolve(scope, provider, model, account);
}

absl::StatusOr<Permit> Policy::Reserve(const Route& route, uint64_t input_tokens,
                                       uint64_t max_output_tokens, absl::Duration max_wait,
                                       int64_t now_ns) {
  return impl_->Reserve(route, input_tokens, max_output_tokens, max_wait, now_ns);
}

absl::StatusOr<Permit> Policy::Acquire(const Request& request, absl::Duration timeout) {
  return impl_->Acquire(request, timeout);
}

PolicyStats Policy::Stats() const { return impl_->Stats(); }

std::optional<StoredLeases> Policy::ConcurrencyCap(absl::string_view key) const {
  return impl_->ConcurrencyCap(key);
}

void Policy::ClampProvider(const Route& route, LimitKind kind, int64_t remaining,
                           int64_t now_ns) const {
  impl_->ClampProvider(route, kind, remaining, now_ns);
}

void Policy::LearnProviderBurst(const Route& route, LimitKind kind, int64_t remaining,
                                int64_t charged) const {
  impl_->LearnProviderBurst(route, kind, remaining, charged);
}

bool Policy::ProviderCold(const Route& route) const { return impl_->ProviderCold(route); }

absl::Status Policy::LearnProviderLimits(
    const Route& route, const std::vector<std::pair<LimitKind, double>>& per_minute) {
  return impl_->LearnProviderLimits(route, per_minute);
}

void Policy::HoldProvider(const Route& route, int64_t until_ns, int64_t now_ns) const {
  impl_->HoldProvider(route, until_ns, now_ns);
}

void Policy::LearnProviderRate(const Route& route, LimitKind kind, double per_minute) const {
  impl_->LearnProviderRate(route, kind, per_minute);
}

Store* Policy::store() const { return impl_->store(); }
const LimitsConfig& Policy::config() const { return impl_->config(); }

}  // namespace sluice
