// The walk from a limits configuration to every owner's buckets, budgets and
// cap, and the selection of a request's route from it.

#include "sluice/effective_limits.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "src/policy/limit_specs.h"

namespace sluice {
namespace {

OwnerLimits ModelClassLimits(const LimitsConfig& config, const ProviderLimits& provider,
                             const ModelClass* model_class) {
  OwnerLimits owner;
  owner.type = BucketKey::Owner::kProvider;
  owner.name =
      absl::StrCat(provider.name, "/", model_class != nullptr ? model_class->name : "default");
  owner.provider = &provider;
  owner.model_class = model_class;
  if (model_class != nullptr) owner.models = model_class->match;
  owner.buckets = ProviderBuckets(config, provider, model_class);
  return owner;
}

OwnerLimits ScopeOwnerLimits(const LimitsConfig& config, const ScopeLimits& scope) {
  OwnerLimits owner;
  owner.type = BucketKey::Owner::kScope;
  owner.name = scope.name;
  owner.scope = &scope;
  owner.buckets = ScopeBuckets(config, scope);
  owner.budgets = ScopeBudgets(scope);
  owner.concurrency = ScopeConcurrency(scope);
  return owner;
}

}  // namespace

EffectiveLimits::EffectiveLimits(const LimitsConfig& config) : config_(config) {
  for (const auto& [name, provider] : config.providers) {
    owners_.push_back(ModelClassLimits(config, provider, nullptr));
    for (const ModelClass& model_class : provider.models) {
      owners_.push_back(ModelClassLimits(config, provider, &model_class));
    }
  }
  for (const auto& [name, scope] : config.scopes) {
    owners_.push_back(ScopeOwnerLimits(config, scope));
  }
}

const OwnerLimits* EffectiveLimits::FindScope(absl::string_view name) const {
  for (const OwnerLimits& owner : owners_) {
    if (owner.type == BucketKey::Owner::kScope && owner.name == name) return &owner;
  }
  return nullptr;
}

const OwnerLimits* EffectiveLimits::FindProviderClass(absl::string_view provider,
                                                      const ModelClass* model_class) const {
  for (const OwnerLimits& owner : owners_) {
    if (owner.type == BucketKey::Owner::kProvider && owner.provider->name == provider &&
        owner.model_class == model_class) {
      return &owner;
    }
  }
  return nullptr;
}

RouteLimits EffectiveLimits::Route(absl::string_view scope, absl::string_view provider,
                                   absl::string_view model) const {
  RouteLimits route;
  route.path = ResolveScope(config_, scope);
  for (const ScopeLimits* s : route.path.scopes) {
    if (const OwnerLimits* owner = FindScope(s->name)) route.owners.push_back(owner);
  }
  auto it = config_.providers.find(std::string(provider));
  if (it != config_.providers.end()) {
    route.model_class = FindProviderClass(provider, FindModelClass(it->second, model));
    if (route.model_class != nullptr) route.owners.push_back(route.model_class);
  }
  return route;
}

}  // namespace sluice
