// libFuzzer target for the TOML limits parser and what is built from a
// config it accepts: its effective limits (every key of which must parse back
// as a BucketKey naming its owner), scope resolution, and a policy over a
// process-local store (which opens every bucket, budget and cap the config
// names); and Redis URLs, the input itself and a [cluster] table's, each of
// which must format back to an endpoint that parses the same. Seeds:
// tests/fuzz/corpus/limits.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "sluice/bucket_key.h"
#include "sluice/effective_limits.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/redis_url.h"
#include "sluice/store.h"

namespace {

// An endpoint formats to a URL that parses back to it.
void CheckRoundTrip(const sluice::RedisEndpoint& endpoint) {
  absl::StatusOr<sluice::RedisEndpoint> again = sluice::ParseRedisUrl(endpoint.ToString());
  if (!again.ok() || !(*again == endpoint)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  if (absl::StatusOr<sluice::RedisEndpoint> endpoint = sluice::ParseRedisUrl(text); endpoint.ok()) {
    CheckRoundTrip(*endpoint);
  }
  // Any text that parses as a key formats back to itself.
  if (absl::StatusOr<sluice::BucketKey> key = sluice::BucketKey::Parse(text);
      key.ok() && key->ToString() != text) {
    __builtin_trap();
  }
  absl::StatusOr<sluice::LimitsConfig> config = sluice::ParseLimitsConfig(text, "fuzz.toml");
  if (!config.ok()) {
    // Every refusal names where: "fuzz.toml:line:column: ...".
    if (config.status().message().find("fuzz.toml") == absl::string_view::npos) __builtin_trap();
    return 0;
  }
  if (config->cluster) CheckRoundTrip(config->cluster->redis);
  const sluice::EffectiveLimits limits(*config);
  for (const sluice::OwnerLimits& owner : limits.owners()) {
    std::vector<std::string> keys;
    for (const sluice::BucketSpec& spec : owner.buckets) keys.push_back(spec.key);
    for (const sluice::BudgetSpec& spec : owner.budgets) keys.push_back(spec.key);
    if (owner.concurrency) keys.push_back(owner.concurrency->key);
    // Every key of an accepted config round-trips and names its owner.
    for (const std::string& key : keys) {
      absl::StatusOr<sluice::BucketKey> parsed = sluice::BucketKey::Parse(key);
      if (!parsed.ok() || parsed->ToString() != key || parsed->OwnerName() != owner.name) {
        __builtin_trap();
      }
    }
  }
  for (const auto& [name, scope] : config->scopes) sluice::ResolveScope(*config, name);
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
