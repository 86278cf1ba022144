// File: effective_limits.h
// -----------------------------------------------------------------------------
// Every bucket, USD budget and concurrency cap a limits configuration makes,
// with its key, its effective rate and burst (after headroom), and the models
// it applies to: the one walk from a LimitsConfig to its buckets. The policy
// opens what this lists, `sluice config check` and the stats show it, and a
// request's route is a selection from it.
//
// The owners come in a fixed order: each provider (by name) with its default
// class first and then its [models] classes in file order; then each scope
// (by name). Within an owner, buckets are in kAllLimitKinds order and budgets
// day before month.
//
// Thread safety: an EffectiveLimits is immutable after construction and safe
// to read from any number of threads. It points into the LimitsConfig it was
// made from. REQUIRES: that config outlives it and does not change.
//
// Example:
//   const EffectiveLimits limits(config);
//   for (const OwnerLimits& owner : limits.owners()) {
//     for (const BucketSpec& b : owner.buckets) {
//       absl::PrintF("%s %s burst %d\n", b.key, b.config.rate.ToString(), b.config.capacity);
//     }
//   }
//   const RouteLimits route = limits.Route("team:marketing", "anthropic", "claude-sonnet-4");

#ifndef SLUICE_EFFECTIVE_LIMITS_H_
#define SLUICE_EFFECTIVE_LIMITS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "sluice/bucket_key.h"
#include "sluice/limits.h"

namespace sluice {

// OwnerLimits
//
// What one scope or one provider model class pays into.
struct OwnerLimits {
  BucketKey::Owner type = BucketKey::Owner::kScope;
  // The scope's name, or "provider/class" ("anthropic/default"): the keys'
  // BucketKey::OwnerName and the specs' `owner`.
  std::string name;
  const ScopeLimits* scope = nullptr;        // for a scope
  const ProviderLimits* provider = nullptr;  // for a model class
  const ModelClass* model_class = nullptr;   // nullptr: the provider's default class
  // The model patterns a class applies to (a trailing '*' is a prefix);
  // empty for the default class, which takes every model no other class
  // matches, and for scopes.
  std::vector<std::string> models;
  std::vector<BucketSpec> buckets;             // headroom applies to a provider's only
  std::vector<BudgetSpec> budgets;             // scopes only
  std::optional<ConcurrencySpec> concurrency;  // scopes only
};

// RouteLimits
//
// What a request of one (scope, provider, model) pays into, in the order the
// policy reserves it: each scope on the scope's path (ResolveScope), then the
// model class of the provider, when the provider is configured.
struct RouteLimits {
  ScopePath path;
  // Scopes of the path with limits of their own, then the model class. An
  // implicit "global" (a config without one) has no limits and no entry.
  std::vector<const OwnerLimits*> owners;
  const OwnerLimits* model_class = nullptr;  // also the last of `owners`; nullptr: none
};

class EffectiveLimits {
 public:
  // Walks the whole configuration once. Does not validate: REQUIRES a config
  // from ParseLimitsConfig, or one that is as valid (names within limits, rates valid).
  explicit EffectiveLimits(const LimitsConfig& config);

  EffectiveLimits(const EffectiveLimits&) = delete;
  EffectiveLimits& operator=(const EffectiveLimits&) = delete;

  const LimitsConfig& config() const { return config_; }
  // Every owner, in the order of the file comment.
  const std::vector<OwnerLimits>& owners() const { return owners_; }

  // The configured scope `name`, or the model class `model_class` of
  // `provider` (nullptr: its default class); nullptr when not configured.
  const OwnerLimits* FindScope(absl::string_view name) const;
  const OwnerLimits* FindProviderClass(absl::string_view provider,
                                       const ModelClass* model_class) const;

  // The route of a request (see RouteLimits). An unknown scope falls back as
  // ResolveScope says; an unconfigured provider adds no model class.
  RouteLimits Route(absl::string_view scope, absl::string_view provider,
                    absl::string_view model) const;

 private:
  const LimitsConfig& config_;
  std::vector<OwnerLimits> owners_;
};

}  // namespace sluice

#endif  // SLUICE_EFFECTIVE_LIMITS_H_
