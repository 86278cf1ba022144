// What the limits parser and the spec functions share: how a limit becomes a
// bucket (its rate, headroom, default burst) and which limit applies to a
// kind; and the spec functions themselves, from which EffectiveLimits makes
// every owner's buckets, budgets and cap. Internal to src/policy.
#ifndef SLUICE_SRC_POLICY_LIMIT_SPECS_H_
#define SLUICE_SRC_POLICY_LIMIT_SPECS_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "sluice/limits.h"
#include "sluice/rate.h"

namespace sluice {
namespace internal_limits {

bool IsPerDay(LimitKind kind);

// Per minute, or per day for tokens_per_day.
Rate RateOf(LimitKind kind, uint64_t limit);

// floor(limit * headroom), at least 1 (a product within rounding error of a
// whole number is taken as that number).
uint64_t ApplyHeadroom(uint64_t limit, double headroom);

// The burst of a limit without an explicit one: minute_burst (or day_burst)
// of it, at least 1.
uint64_t DefaultBurst(const LimitsConfig& config, LimitKind kind, uint64_t limit);

// The (limit, explicit burst) pair that applies to `kind` from `own`, falling
// back to `base` (a class's provider). A burst is taken from `base` only with
// its limit: it was sized for that limit, not for an override.
struct KindLimit {
  uint64_t limit;
  std::optional<uint64_t> burst;
};
std::optional<KindLimit> Merge(const LimitSet& own, const LimitSet* base, LimitKind kind);

}  // namespace internal_limits

// The building blocks of EffectiveLimits (sluice/effective_limits.h); code
// outside src/policy uses that instead.
//
// The buckets of one provider model class: the provider's limits with the
// class's overrides, after headroom, with bursts, in kAllLimitKinds order.
// "default" (model_class == nullptr) is the class of models no [models]
// table matches.
//
// Effective limit = floor(limit * headroom), at least 1. Burst = the explicit
// one, else max(1, floor(effective limit * minute_burst / 1m)) for the
// per-minute kinds and max(1, floor(effective limit * day_burst / 24h)) for
// tokens_per_day.
//
// These functions do not validate: REQUIRES a config from ParseLimitsConfig
// (which has checked that every spec they can return is valid) or one that
// is as valid.
std::vector<BucketSpec> ProviderBuckets(const LimitsConfig& config, const ProviderLimits& provider,
                                        const ModelClass* model_class);

// The buckets, budgets and concurrency cap of one scope (its own, not its
// parents').
std::vector<BucketSpec> ScopeBuckets(const LimitsConfig& config, const ScopeLimits& scope);
std::vector<BudgetSpec> ScopeBudgets(const ScopeLimits& scope);
std::optional<ConcurrencySpec> ScopeConcurrency(const ScopeLimits& scope);

}  // namespace sluice

#endif  // SLUICE_SRC_POLICY_LIMIT_SPECS_H_
