// What the policy learns from a provider's rate-limit headers beyond the
// limit itself (policy.cc's LearnProviderRate): the burst its bucket holds
// (the cold start), and, for a provider the configuration does not name, its
// limits. See policy.h for the rules.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "sluice/bucket_key.h"
#include "sluice/policy.h"
#include "src/policy/limit_specs.h"
#include "src/policy/policy_internal.h"

namespace sluice {
namespace internal_policy {
namespace {

// The most a learned limit may state a minute: far above any provider's,
// and small enough that every bucket arithmetic stays exact.
constexpr double kMaxLearnedPerMinute = 1e12;

// a + b, or INT64_MAX when it does not fit.
int64_t SaturatingSum(int64_t a, int64_t b) {
  int64_t sum;
  return __builtin_add_overflow(a, b, &sum) ? std::numeric_limits<int64_t>::max() : sum;
}

std::string LearnedOwner(absl::string_view provider, absl::string_view account) {
  return account.empty() ? std::string(provider) : absl::StrCat(provider, "@", account);
}

}  // namespace

absl::StatusOr<BucketSpec> PolicyImpl::ForAccount(BucketSpec spec, absl::string_view account) {
  if (account.empty()) return spec;
  const absl::StatusOr<BucketKey> parsed = BucketKey::Parse(spec.key);
  if (!parsed.ok()) return parsed.status();
  const BucketKey key =
      BucketKey::ProviderLimit(parsed->provider(), parsed->model_class(), spec.kind, account);
  spec.key = key.ToString();
  spec.owner = key.OwnerName();
  return spec;
}

void PolicyImpl::AddLearnedProvider(absl::string_view provider, absl::string_view account,
                                    RouteRep* route) const {
  route->provider = std::string(provider);
  route->account = std::string(account);
  route->provider_configured = config_.providers.contains(std::string(provider));
  if (route->provider_configured) {
    for (const Charge& c : route->charges) {
      if (c.is_provider) {
        route->provider_owner = c.opened->spec.owner;
        break;
      }
    }
    return;
  }
  route->provider_owner = LearnedOwner(provider, account);
  auto it = learned_providers_.find(route->provider_owner);
  if (it == learned_providers_.end()) return;
  for (const OpenedBucket& opened : it->second) {
    const BucketSpec& spec = opened.spec;
    route->charges.push_back({spec.key, MeterOf(spec.kind, provider == "openai"), true, spec.kind,
                              false, BudgetPeriod::kDay, 0, opened.handle.bucket, NoCounter(),
                              opened.handle.bottlenecks, &opened});
  }
}

void PolicyImpl::LearnProviderBurst(const Route& route, LimitKind kind, int64_t remaining,
                                    int64_t charged) const {
  if (remaining < 0) return;
  charged = std::max<int64_t>(charged, 0);
  const int64_t held = SaturatingSum(remaining, charged);
  if (held == 0) return;  // a refusal with nothing left says nothing of the size
  // Half the headroom's share: the other half absorbs jitter (policy.h).
  const double scaled = std::floor(static_cast<double>(held) * config_.headroom / 2);
  const uint64_t target = std::max<uint64_t>(
      {1, static_cast<uint64_t>(charged), static_cast<uint64_t>(std::min(scaled, 9.2e18))});
  for (const Charge& c : route.rep_->charges) {
    if (!c.is_provider || c.kind != kind || c.opened->spec.explicit_burst) continue;
    std::atomic<uint64_t>& known = *c.opened->burst;
    uint64_t seen = known.load(std::memory_order_relaxed);
    // Only evidence of a larger bucket is worth the store's lock.
    do {
      if (target <= seen) break;
    } while (!known.compare_exchange_weak(seen, target, std::memory_order_relaxed));
    if (target <= seen) continue;
    store_->LearnBurst(c.key, target).IgnoreError();
  }
}

bool PolicyImpl::ProviderCold(const Route& route) const {
  bool has_provider = false;
  for (const Charge& c : route.rep_->charges) {
    if (!c.is_provider) continue;
    // A burst the file states, or one learned: the provider's bucket is known.
    if (c.opened->spec.explicit_burst) return false;
    if (c.opened->burst->load(std::memory_order_relaxed) != 0) return false;
    has_provider = true;
  }
  return has_provider;
}

absl::Status PolicyImpl::LearnProviderLimits(
    const Route& route, const std::vector<std::pair<LimitKind, double>>& per_minute) {
  const RouteRep& rep = *route.rep_;
  if (rep.provider_configured || rep.superseded.load(std::memory_order_acquire)) {
    return absl::OkStatus();
  }
  for (const Charge& c : rep.charges) {
    if (c.is_provider) return absl::OkStatus();  // learned already
  }
  // The limits as a provider table naming no model classes would give them.
  ProviderLimits provider;
  provider.name = rep.provider;
  for (const auto& [kind, limit] : per_minute) {
    if (!(limit >= 1) || kind == LimitKind::kTokensPerDay) continue;
    provider.limits.per_period[kind] =
        static_cast<uint64_t>(std::min(std::floor(limit), kMaxLearnedPerMinute));
  }
  if (provider.limits.per_period.empty()) return absl::OkStatus();
  std::lock_guard<std::shared_mutex> lock(mu_);
  if (learned_providers_.contains(rep.provider_owner)) return absl::OkStatus();
  std::vector<OpenedBucket> opened;
  for (const BucketSpec& shared : ProviderBuckets(config_, provider, nullptr)) {
    if (!ValidateBucketConfig(shared.config).ok()) continue;
    absl::StatusOr<BucketSpec> spec = ForAccount(shared, rep.account);
    if (!spec.ok()) return spec.status();
    absl::StatusOr<OpenedBucket> bucket = OpenStored(*spec);
    if (!bucket.ok()) return bucket.status();
    opened.push_back(*std::move(bucket));
  }
  learned_providers_.emplace(rep.provider_owner, std::move(opened));
  // Routes without them are replaced: Resolve makes them again.
  for (auto it = routes_.begin(); it != routes_.end();) {
    const RouteRep& cached = *it->second->rep_;
    if (cached.provider_configured || cached.provider_owner != rep.provider_owner) {
      ++it;
      continue;
    }
    cached.superseded.store(true, std::memory_order_release);
    retired_.push_back(std::move(it->second));
    routes_.erase(it++);
  }
  return absl::OkStatus();
}

}  // namespace internal_policy
}  // namespace sluice
