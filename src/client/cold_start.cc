#include "src/client/cold_start.h"

namespace sluice {

bool ColdStart::Cold(const Route& route) const {
  const std::string& owner = route.provider_owner();
  return !owner.empty() && !heard_.contains(owner) && policy_->ProviderCold(route);
}

bool ColdStart::MustWait(const Route& route, uint64_t id) const {
  auto it = probes_.find(route.provider_owner());
  return it != probes_.end() && it->second != id && Cold(route);
}

bool ColdStart::Go(const Route& route, uint64_t id) {
  if (!Cold(route)) return false;
  return probes_.try_emplace(route.provider_owner(), id).first->second == id;
}

void ColdStart::End(const Route& route, uint64_t id, bool responded) {
  const std::string& owner = route.provider_owner();
  if (owner.empty()) return;
  if (responded) heard_.insert(owner);
  if (auto it = probes_.find(owner); it != probes_.end() && it->second == id) probes_.erase(it);
}

}  // namespace sluice
