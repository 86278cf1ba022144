// What the limits parser and the spec functions share: how a limit becomes a
// bucket (its rate, headroom, default burst) and which limit applies to a
// kind. Internal to src/policy.
#ifndef SLUICE_SRC_POLICY_LIMIT_SPECS_H_
#define SLUICE_SRC_POLICY_LIMIT_SPECS_H_

#include <cstdint>
#include <optional>

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
}  // namespace sluice

#endif  // SLUICE_SRC_POLICY_LIMIT_SPECS_H_
