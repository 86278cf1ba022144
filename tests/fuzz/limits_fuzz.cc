// libFuzzer target for the TOML limits parser and what is built from a
// config it accepts: every provider's and scope's bucket specs, scope
// resolution, and a policy over a process-local store (which opens every
// bucket, budget and cap the config names). Seeds: tests/fuzz/corpus/limits.
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<sluice::LimitsConfig> config = sluice::ParseLimitsConfig(text, "fuzz.toml");
  if (!config.ok()) {
    // Every refusal names where: "fuzz.toml:line:column: ...".
    if (config.status().message().find("fuzz.toml") == absl::string_view::npos) __builtin_trap();
    return 0;
  }
  for (const auto& [name, provider] : config->providers) {
    sluice::ProviderBuckets(*config, provider, nullptr);
    for (const sluice::ModelClass& model_class : provider.models) {
      sluice::ProviderBuckets(*config, provider, &model_class);
    }
  }
  for (const auto& [name, scope] : config->scopes) {
    sluice::ScopeBuckets(*config, scope);
    sluice::ScopeBudgets(scope);
    sluice::ResolveScope(*config, name);
  }
  sluice::ResolveScope(*config, "team:unknown:x");
  auto store = sluice::NewLocalStore(sluice::Clock::Monotonic());
  auto policy = sluice::Policy::Create(*config, store.get());
  // A config the parser accepted opens: every spec it makes is valid.
  if (!policy.ok()) __builtin_trap();
  for (const auto& [name, scope] : config->scopes) {
    auto route = (*policy)->Resolve(name, "anthropic", "claude-sonnet-4");
    if (route.ok()) {
      auto permit = (*policy)->Reserve(**route, 100, 100, absl::ZeroDuration(), 0);
      if (permit.ok()) permit->Settle({.input_tokens = 90, .output_tokens = 120});
    }
  }
  return 0;
}
