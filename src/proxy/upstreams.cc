#include "src/proxy/upstreams.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sluice/rate.h"

namespace sluice {
namespace proxy_internal {
namespace {

// The count_tokens bucket's key: not a policy key (it belongs to no route).
constexpr char kCountTokensKey[] = "proxy:anthropic:count_tokens:rpm";

ClientOptions ClientOptionsFor(const ProxyOptions& options, const LimitsConfig& config,
                               Provider provider) {
  ClientOptions client;
  client.provider = provider;
  client.base_url = provider == Provider::kAnthropic ? options.anthropic_url : options.openai_url;
  // Every request brings its caller's credentials; the proxy's own
  // environment must never lend a key to a request that has none.
  client.key_from_environment = false;
  client.require_api_key = false;
  client.account_per_key = true;
  client.throttle_timeout = options.queue_timeout;
  client.connect_timeout = options.connect_timeout;
  client.request_timeout = options.request_timeout;
  client.provider_time_scale = options.provider_time_scale;
  // Errors pass through: the caller's SDK decides about retrying, and no
  // request is charged twice unseen.
  client.retry.max_attempts = config.proxy.retry_upstream ? ClientOptions().retry.max_attempts : 1;
  return client;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Upstreams>> Upstreams::Start(const ProxyOptions& options,
                                                            const LimitsConfig& config,
                                                            Store* store) {
  std::unique_ptr<Upstreams> up(new Upstreams(config));
  absl::StatusOr<std::unique_ptr<Policy>> policy = Policy::Create(up->config_, store);
  if (!policy.ok()) return policy.status();
  up->policy_ = *std::move(policy);
  if (const std::optional<uint64_t> rpm = config.proxy.count_tokens_requests_per_minute) {
    // As a minute limit's default burst: minute_burst's share, at least 1.
    const uint64_t burst = std::max<uint64_t>(
        1, static_cast<uint64_t>(static_cast<double>(*rpm) *
                                 absl::FDivDuration(config.minute_burst, absl::Minutes(1))));
    absl::StatusOr<StoredBucket> bucket =
        store->Bucket(kCountTokensKey, {.rate = Rate::PerMinute(*rpm), .capacity = burst});
    if (!bucket.ok()) return bucket.status();
    up->count_tokens_ = *bucket;
  }
  for (Provider provider : {Provider::kAnthropic, Provider::kOpenAi}) {
    absl::StatusOr<std::unique_ptr<sluice::Client>> client =
        sluice::Client::Create(ClientOptionsFor(options, config, provider), up->policy_.get());
    if (!client.ok()) return client.status();
    up->clients_[provider == Provider::kAnthropic ? 0 : 1] = *std::move(client);
  }
  for (size_t i = 0; i < up->clients_.size(); ++i) {
    up->loops_[i] = std::thread([client = up->clients_[i].get()] { client->Serve(); });
  }
  return up;
}

Upstreams::~Upstreams() {
  for (size_t i = 0; i < clients_.size(); ++i) {
    if (clients_[i] != nullptr) clients_[i]->Stop();
    if (loops_[i].joinable()) loops_[i].join();
  }
}

}  // namespace proxy_internal
}  // namespace sluice
