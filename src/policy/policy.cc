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

namespace sluice {
namespace {

constexpr int64_t kDaySeconds = 86'400;

// Cost in micro-dollars of `tokens` at `usd_per_million` (USD per million
// tokens is exactly micro-dollars per token), rounded up.
double MicroUsd(uint64_t tokens, double usd_per_million) {
  return static_cast<double>(tokens) * usd_per_million;
}

int64_t CeilMicroUsd(double micro_usd) {
  const double c = std::ceil(micro_usd);
  return c >= 9.0e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(c);
}

int64_t Saturate(uint64_t v) {
  return v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
             ? std::numeric_limits<int64_t>::max()
             : static_cast<int64_t>(v);
}

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

}  // namespace

bool IsConcurrencyFull(const absl::Status& status) {
  return status.GetPayload(kConcurrencyFullPayload).has_value();
}

std::string FullConcurrencyCap(const absl::Status& status) {
  const absl::optional<absl::Cord> key = status.GetPayload(kConcurrencyFullPayload);
  return key ? std::string(*key) : std::string();
}

std::optional<StoredLeases> Policy::ConcurrencyCap(absl::string_view key) const {
  auto it = leases_.find(key);
  if (it == leases_.end()) return std::nullopt;
  return it->second.handle;
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

// Permit ------------------------------------------------------------------------

Permit::Permit(Permit&& other) noexcept { *this = std::move(other); }

Permit& Permit::operator=(Permit&& other) noexcept {
  if (this == &other) return *this;
  if (open_) ReleaseLeases();
  route_ = other.route_;
  policy_ = other.policy_;
  reserved_ = std::move(other.reserved_);
  terms_ = std::move(other.terms_);
  windows_ = std::move(other.windows_);
  leases_ = std::move(other.leases_);
  ready_at_ns_ = other.ready_at_ns_;
  wait_ns_ = other.wait_ns_;
  bottleneck_ = other.bottleneck_;
  open_ = other.open_;
  other.open_ = false;
  other.leases_.clear();
  return *this;
}

Permit::~Permit() {
  // Unsettled: the charges stand (the provider counts failed requests too);
  // the concurrency lease always comes back.
  if (open_) ReleaseLeases();
}

void Permit::ReleaseLeases() {
  for (size_t i = 0; i < leases_.size(); ++i) {
    if (leases_[i] >= 0) route_->leases_[i].leases.Release(static_cast<uint32_t>(leases_[i]));
  }
  leases_.clear();
}

void Permit::Settle(const Usage& usage) {
  if (!open_) return;
  open_ = false;
  const Route& route = *route_;
  const int64_t now = policy_->store_->clock().Now();
  const uint64_t counted_input = usage.input_tokens + usage.cache_creation_input_tokens +
                                 (route.count_cache_reads_ ? usage.cache_read_input_tokens : 0);
  const uint64_t all_input =
      usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens;
  size_t window = 0;
  for (size_t i = 0; i < route.charges_.size(); ++i) {
    const Route::Charge& c = route.charges_[i];
    int64_t actual = 0;
    switch (c.meter) {
      case Meter::kRequests:
        actual = 1;
        break;
      case Meter::kInputTokens:
        actual = Saturate(counted_input);
        break;
      case Meter::kOutputTokens:
        actual = Saturate(usage.output_tokens);
        break;
      case Meter::kTotalTokens:
        actual = Saturate(counted_input + usage.output_tokens);
        break;
      case Meter::kOpenAiTokens:
        actual = Saturate(all_input + usage.output_tokens);
        break;
      case Meter::kMicroUsd: {
        const Price& p = *route.price_;
        actual = CeilMicroUsd(MicroUsd(usage.input_tokens, p.input) +
                              MicroUsd(usage.output_tokens, p.output) +
                              MicroUsd(usage.cache_creation_input_tokens, p.cache_write) +
                              MicroUsd(usage.cache_read_input_tokens, p.cache_read));
        break;
      }
    }
    const int64_t diff = actual - reserved_[i];
    if (c.is_budget) {
      const int64_t w = windows_[window++];
      if (diff > 0) c.counter.Debit(w, diff);
      if (diff < 0) c.counter.Refund(w, -diff);
    } else {
      if (diff > 0) c.bucket.Debit(static_cast<uint64_t>(diff), now);
      if (diff < 0) c.bucket.Refund(static_cast<uint64_t>(-diff), terms_[i], now);
    }
  }
  ReleaseLeases();
}

void Permit::Cancel() {
  if (!open_) return;
  open_ = false;
  const int64_t now = policy_->store_->clock().Now();
  size_t window = 0;
  for (size_t i = 0; i < route_->charges_.size(); ++i) {
    const Route::Charge& c = route_->charges_[i];
    if (c.is_budget) {
      c.counter.Refund(windows_[window++], reserved_[i]);
    } else {
      c.bucket.Refund(static_cast<uint64_t>(reserved_[i]), terms_[i], now);
    }
  }
  ReleaseLeases();
}

// Policy ------------------------------------------------------------------------

Policy::Policy(const LimitsConfig& config, Store* store, PolicyOptions options)
    : config_(config), store_(store), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<Policy>> Policy::Create(const LimitsConfig& config, Store* store,
                                                       PolicyOptions options) {
  std::unique_ptr<Policy> policy(new Policy(config, store, std::move(options)));
  if (absl::Status s = policy->OpenAll(); !s.ok()) return s;
  return policy;
}

absl::Status Policy::OpenAll() {
  auto open_bucket = [&](const BucketSpec& spec) -> absl::Status {
    if (buckets_.contains(spec.key)) return absl::OkStatus();
    absl::StatusOr<StoredBucket> handle = store_->Bucket(spec.key, spec.config);
    if (!handle.ok()) return handle.status();
    // The limit it runs at: the configured one, or one a process learned
    // from the provider's headers before this one started.
    const uint64_t applied =
        handle->learned && handle->learned->period() == spec.config.rate.period()
            ? std::min(spec.limit, handle->learned->permits())
            : spec.limit;
    buckets_.emplace(spec.key,
                     Opened{spec, *handle, std::make_unique<std::atomic<uint64_t>>(applied)});
    order_.push_back(spec.key);
    return absl::OkStatus();
  };
  for (const auto& [name, provider] : config_.providers) {
    for (const BucketSpec& spec : ProviderBuckets(config_, provider, nullptr)) {
      if (absl::Status s = open_bucket(spec); !s.ok()) return s;
    }
    for (const ModelClass& model_class : provider.models) {
      for (const BucketSpec& spec : ProviderBuckets(config_, provider, &model_class)) {
        if (absl::Status s = open_bucket(spec); !s.ok()) return s;
      }
    }
  }
  for (const auto& [name, scope] : config_.scopes) {
    for (const BucketSpec& spec : ScopeBuckets(config_, scope)) {
      if (absl::Status s = open_bucket(spec); !s.ok()) return s;
    }
    for (const BudgetSpec& spec : ScopeBudgets(scope)) {
      absl::StatusOr<StoredCounter> handle = store_->Counter(spec.key);
      if (!handle.ok()) return handle.status();
      budgets_.emplace(spec.key, OpenedBudget{spec, *handle});
      order_.push_back(spec.key);
    }
    if (std::optional<ConcurrencySpec> spec = ScopeConcurrency(scope)) {
      absl::StatusOr<StoredLeases> handle = store_->Leases(spec->key, spec->max_in_flight);
      if (!handle.ok()) return handle.status();
      // A process starting after one that died cleans up after it, whether
      // or not the cap is ever full again.
      handle->Reclaim();
      leases_.emplace(spec->key, OpenedLeases{*spec, *handle});
      order_.push_back(spec->key);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<const Route*> Policy::Resolve(absl::string_view scope, absl::string_view provider,
                                             absl::string_view model) {
  const std::string key = absl::StrCat(scope, "\n", provider, "\n", model);
  {
    absl::ReaderMutexLock lock(&mu_);
    if (auto it = routes_.find(key); it != routes_.end()) return it->second.get();
  }
  const ScopePath path = ResolveScope(config_, scope);
  auto route = std::make_unique<Route>();
  route->scope_ = std::string(scope);
  route->fell_back_ = path.fell_back;
  bool has_budget = false;
  auto add_bucket = [&](const BucketSpec& spec, bool is_provider, bool openai) {
    const Opened& opened = buckets_.at(spec.key);
    Route::Charge c{spec.key,
                    MeterOf(spec.kind, openai),
                    is_provider,
                    spec.kind,
                    false,
                    BudgetPeriod::kDay,
                    0,
                    opened.handle.bucket,
                    WindowCounterRef(nullptr),
                    opened.handle.bottlenecks};
    route->charges_.push_back(std::move(c));
  };
  for (const ScopeLimits* s : path.scopes) {
    route->path_.push_back(s->name);
    for (const BucketSpec& spec : ScopeBuckets(config_, *s)) add_bucket(spec, false, false);
    for (const BudgetSpec& spec : ScopeBudgets(*s)) {
      const OpenedBudget& opened = budgets_.at(spec.key);
      route->charges_.push_back({spec.key, Meter::kMicroUsd, false, LimitKind::kRequestsPerMinute,
                                 true, spec.period, static_cast<int64_t>(spec.limit_micro_usd),
                                 BucketRef(nullptr, Clock::Monotonic()), opened.handle.counter,
                                 opened.handle.bottlenecks});
      has_budget = true;
    }
    if (std::optional<ConcurrencySpec> spec = ScopeConcurrency(*s)) {
      route->leases_.push_back({spec->key, leases_.at(spec->key).handle});
    }
  }
  if (auto it = config_.providers.find(std::string(provider)); it != config_.providers.end()) {
    const ProviderLimits& p = it->second;
    const ModelClass* model_class = FindModelClass(p, model);
    for (const BucketSpec& spec : ProviderBuckets(config_, p, model_class)) {
      add_bucket(spec, true, provider == "openai");
    }
    route->count_cache_reads_ = model_class != nullptr && model_class->count_cache_reads
                                    ? *model_class->count_cache_reads
                                    : p.count_cache_reads;
    route->precharge_output_ = p.output_precharge == OutputPrecharge::kMaxTokens;
  }
  route->price_ = FindPrice(config_, model);
  if (has_budget && route->price_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("scope path of '", scope, "' has a USD budget, but model '", model,
                     "' has no entry in [prices]: its cost cannot be bounded"));
  }
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = routes_.emplace(key, std::move(route));
  return it->second.get();
}

int64_t Policy::WindowId(BudgetPeriod period) const {
  return BudgetWindowId(period, options_.wall_clock());
}

absl::Time Policy::NextWindowStart(BudgetPeriod period) const {
  const absl::Time now = options_.wall_clock();
  if (period == BudgetPeriod::kDay) {
    return absl::FromUnixSeconds((absl::ToUnixSeconds(now) / kDaySeconds + 1) * kDaySeconds);
  }
  return absl::FromCivil(absl::ToCivilMonth(now, absl::UTCTimeZone()) + 1, absl::UTCTimeZone());
}

absl::StatusOr<Permit> Policy::Reserve(const Route& route, uint64_t input_tokens,
                                       uint64_t max_output_tokens, absl::Duration max_wait,
                                       int64_t now_ns) {
  Permit permit;
  permit.route_ = &route;
  permit.policy_ = this;
  permit.open_ = true;  // so that a failure below returns the leases taken
  for (const Route::Lease& lease : route.leases_) {
    // Takes back the leases of dead holders when all are held.
    absl::StatusOr<int32_t> index = lease.leases.TryAcquire();
    if (!index.ok()) {
      return absl::Status(index.status().code(), absl::StrCat("concurrency cap ", lease.key, ": ",
                                                              index.status().message()));
    }
    permit.leases_.push_back(*index);
    if (*index < 0) {
      lease.leases.bottlenecks()->fetch_add(1, std::memory_order_relaxed);
      absl::Status full = absl::DeadlineExceededError(absl::StrCat(
          "concurrency cap ", lease.key, ": all ", lease.leases.capacity(), " requests in flight"));
      full.SetPayload(kConcurrencyFullPayload, absl::Cord(lease.key));
      return full;
    }
  }
  return ReserveCharges(route, input_tokens, max_output_tokens, max_wait, now_ns,
                        std::move(permit));
}

absl::StatusOr<Permit> Policy::ReserveCharges(const Route& route, uint64_t input_tokens,
                                              uint64_t max_output_tokens, absl::Duration max_wait,
                                              int64_t now_ns, Permit permit) {
  if (route.fell_back_) route.uses_.fetch_add(1, std::memory_order_relaxed);
  const int64_t max_wait_ns =
      max_wait == absl::InfiniteDuration()
          ? std::numeric_limits<int64_t>::max()
          : absl::ToInt64Nanoseconds(std::max(max_wait, absl::ZeroDuration()));
  const uint64_t output_precharge = route.precharge_output_ ? max_output_tokens : 0;
  int64_t worst = 0;
  const Route::Charge* bottleneck = nullptr;

  // Undoes charges [0, taken) exactly, and the leases.
  auto roll_back = [&](size_t taken) {
    size_t window = 0;
    for (size_t j = 0; j < taken; ++j) {
      const Route::Charge& c = route.charges_[j];
      if (c.is_budget) {
        c.counter.Refund(permit.windows_[window++], permit.reserved_[j]);
      } else {
        c.bucket.Refund(static_cast<uint64_t>(permit.reserved_[j]), permit.terms_[j], now_ns);
      }
    }
    rollbacks_.fetch_add(1, std::memory_order_relaxed);
  };

  for (size_t i = 0; i < route.charges_.size(); ++i) {
    const Route::Charge& c = route.charges_[i];
    int64_t amount = 0;
    switch (c.meter) {
      case Meter::kRequests:
        amount = 1;
        break;
      case Meter::kInputTokens:
        amount = Saturate(input_tokens);
        break;
      case Meter::kOutputTokens:
        amount = Saturate(output_precharge);
        break;
      case Meter::kTotalTokens:
        amount = Saturate(input_tokens + output_precharge);
        break;
      case Meter::kOpenAiTokens:
        amount = Saturate(std::max(max_output_tokens, input_tokens));
        break;
      case Meter::kMicroUsd: {
        const Price& p = *route.price_;
        amount = CeilMicroUsd(MicroUsd(input_tokens, std::max(p.input, p.cache_write)) +
                              MicroUsd(max_output_tokens, p.output));
        break;
      }
    }
    if (c.is_budget) {
      const int64_t window = WindowId(c.period);
      if (!c.counter.TryAdd(window, amount, c.limit)) {
        roll_back(i);
        c.bottlenecks->fetch_add(1, std::memory_order_relaxed);
        if (amount > c.limit) {
          never_fits_.fetch_add(1, std::memory_order_relaxed);
          return absl::OutOfRangeError(
              absl::StrCat("budget ", c.key, ": this request may cost up to ", Usd(amount),
                           ", more than the whole budget of ", Usd(c.limit), ": it can never fit"));
        }
        return absl::ResourceExhaustedError(absl::StrCat(
            "budget ", c.key, ": ", Usd(c.counter.Used(window)), " of ", Usd(c.limit),
            " spent this ", c.period == BudgetPeriod::kDay ? "UTC day" : "UTC month",
            "; this request may cost up to ", Usd(amount), "; it resets in ",
            absl::FormatDuration(
                absl::Trunc(NextWindowStart(c.period) - options_.wall_clock(), absl::Seconds(1)))));
      }
      permit.windows_.push_back(window);
      permit.reserved_.push_back(amount);
      permit.terms_.push_back({});
      continue;
    }
    const Decision d = c.bucket.Reserve(static_cast<uint64_t>(amount), max_wait_ns, now_ns);
    if (!d.granted()) {
      roll_back(i);
      c.bottlenecks->fetch_add(1, std::memory_order_relaxed);
      if (d.outcome == Outcome::kNeverFits) {
        never_fits_.fetch_add(1, std::memory_order_relaxed);
        return absl::OutOfRangeError(
            absl::StrCat("bucket ", c.key, ": the request needs ", amount, " ", UnitOf(c.meter),
                         " but the bucket holds at most ", c.bucket.Capacity(),
                         ": it can never fit (raise its burst)"));
      }
      return absl::DeadlineExceededError(
          absl::StrCat("bucket ", c.key, " would make the request wait ",
                       absl::FormatDuration(absl::Nanoseconds(d.wait_ns)), ", over the ",
                       absl::FormatDuration(absl::Nanoseconds(max_wait_ns)), " allowed"));
    }
    permit.reserved_.push_back(amount);
    permit.terms_.push_back(d.terms);
    if (d.wait_ns > worst) {
      worst = d.wait_ns;
      bottleneck = &c;
    }
  }
  if (bottleneck != nullptr) {
    bottleneck->bottlenecks->fetch_add(1, std::memory_order_relaxed);
    permit.bottleneck_ = &bottleneck->key;
  }
  permit.wait_ns_ = worst;
  permit.ready_at_ns_ = now_ns + worst;
  return permit;
}

absl::StatusOr<Permit> Policy::Acquire(const Request& request, absl::Duration timeout) {
  absl::StatusOr<const Route*> route = Resolve(request.scope, request.provider, request.model);
  if (!route.ok()) return route.status();
  const Clock clock = store_->clock();
  const int64_t start = clock.Now();
  const int64_t timeout_ns =
      timeout == absl::InfiniteDuration()
          ? std::numeric_limits<int64_t>::max() / 2
          : absl::ToInt64Nanoseconds(std::max(timeout, absl::ZeroDuration()));
  Permit permit;
  permit.route_ = *route;
  permit.policy_ = this;
  permit.open_ = true;
  for (const Route::Lease& lease : (*route)->leases_) {
    const int64_t left = std::max<int64_t>(0, start + timeout_ns - clock.Now());
    absl::StatusOr<uint32_t> index = lease.leases.Acquire(absl::Nanoseconds(left));
    if (!index.ok()) {
      lease.leases.bottlenecks()->fetch_add(1, std::memory_order_relaxed);
      return absl::Status(index.status().code(), absl::StrCat("concurrency cap ", lease.key, ": ",
                                                              index.status().message()));
    }
    permit.leases_.push_back(static_cast<int32_t>(*index));
  }
  const int64_t now = clock.Now();
  absl::StatusOr<Permit> reserved = ReserveCharges(
      **route, request.input_tokens, request.max_output_tokens,
      absl::Nanoseconds(std::max<int64_t>(0, start + timeout_ns - now)), now, std::move(permit));
  if (!reserved.ok()) return reserved.status();
  if (reserved->wait_ns() > 0) clock.SleepUntil(reserved->ready_at_ns());
  return reserved;
}

void Policy::ClampProvider(const Route& route, LimitKind kind, int64_t remaining,
                           int64_t now_ns) const {
  for (const Route::Charge& c : route.charges_) {
    if (!c.is_provider || c.kind != kind) continue;
    const int64_t excess = c.bucket.Available(now_ns) - std::max<int64_t>(remaining, 0);
    if (excess > 0) c.bucket.Debit(static_cast<uint64_t>(excess), now_ns);
  }
}

void Policy::LearnProviderRate(const Route& route, LimitKind kind, double per_minute) const {
  if (!(per_minute > 0) || kind == LimitKind::kTokensPerDay) return;
  for (const Route::Charge& c : route.charges_) {
    if (!c.is_provider || c.kind != kind) continue;
    const Opened& opened = buckets_.at(c.key);
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

void Policy::HoldProvider(const Route& route, int64_t until_ns, int64_t now_ns) const {
  // Every request pays the request bucket, so holding it holds them all;
  // without one, hold whatever the provider meters.
  bool has_requests = false;
  for (const Route::Charge& c : route.charges_) {
    has_requests |= c.is_provider && c.kind == LimitKind::kRequestsPerMinute;
  }
  for (const Route::Charge& c : route.charges_) {
    if (!c.is_provider) continue;
    if (has_requests && c.kind != LimitKind::kRequestsPerMinute) continue;
    c.bucket.HoldUntil(until_ns, now_ns);
  }
}

PolicyStats Policy::Stats() const {
  PolicyStats stats;
  const int64_t now = store_->clock().Now();
  for (const std::string& key : order_) {
    if (auto b = buckets_.find(key); b != buckets_.end()) {
      const BucketRef& bucket = b->second.handle.bucket;
      const int64_t capacity = bucket.Capacity();
      const int64_t available = bucket.Available(now);
      stats.buckets.push_back(
          {key, b->second.spec.owner, b->second.spec.kind, b->second.spec.limit, available,
           capacity, capacity > 0 ? 100.0 * static_cast<double>(available) / capacity : 0.0,
           bucket.GetPressure(now), b->second.handle.bottlenecks->load(std::memory_order_relaxed)});
    } else if (auto g = budgets_.find(key); g != budgets_.end()) {
      const BudgetSpec& spec = g->second.spec;
      stats.budgets.push_back(
          {key, spec.scope, spec.period, spec.limit_micro_usd,
           static_cast<uint64_t>(g->second.handle.counter.Used(WindowId(spec.period))),
           g->second.handle.bottlenecks->load(std::memory_order_relaxed)});
    } else if (auto l = leases_.find(key); l != leases_.end()) {
      const ConcurrencySpec& spec = l->second.spec;
      stats.concurrency.push_back(
          {key, spec.scope, spec.max_in_flight, l->second.handle.InFlight(),
           l->second.handle.bottlenecks()->load(std::memory_order_relaxed)});
    }
  }
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [key, route] : routes_) {
    const uint64_t uses = route->uses_.load(std::memory_order_relaxed);
    if (route->fell_back_ && uses > 0) {
      stats.fallbacks[absl::StrCat(route->scope_, " -> ", route->path_.front())] += uses;
    }
  }
  stats.rollbacks = rollbacks_.load(std::memory_order_relaxed);
  stats.never_fits = never_fits_.load(std::memory_order_relaxed);
  return stats;
}

}  // namespace sluice
