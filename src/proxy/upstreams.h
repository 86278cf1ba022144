// One limits configuration at work: its Policy over the store, one Client
// per provider (each on a loop thread of its own) and the count_tokens
// bucket. The proxy swaps in a new one on reload; requests already handed to
// the old one finish there, and the old one is destroyed when its last
// request has. Internal to src/proxy.
//
// Thread safety: Client() may be used from any thread (a Client's Submit,
// Withdraw and Cancel are thread-safe); `in_flight` is the proxy loop's.

#ifndef SLUICE_SRC_PROXY_UPSTREAMS_H_
#define SLUICE_SRC_PROXY_UPSTREAMS_H_

#include <array>
#include <cstddef>
#include <memory>
#include <optional>
#include <thread>

#include "absl/status/statusor.h"
#include "sluice/client.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/provider.h"
#include "sluice/proxy.h"
#include "sluice/store.h"

namespace sluice {
namespace proxy_internal {

class Upstreams {
 public:
  // Opens `config` in `store` and starts the clients' loops. The policy's
  // errors, or the client's (an upstream URL that is not http(s)).
  static absl::StatusOr<std::unique_ptr<Upstreams>> Start(const ProxyOptions& options,
                                                          const LimitsConfig& config, Store* store);
  // Stops the clients (requests still in them end Cancelled) and joins their
  // loops.
  ~Upstreams();
  Upstreams(const Upstreams&) = delete;
  Upstreams& operator=(const Upstreams&) = delete;

  sluice::Client& Client(Provider provider) {
    return *clients_[provider == Provider::kAnthropic ? 0 : 1];
  }
  const LimitsConfig& config() const { return config_; }
  // Anthropic's count_tokens bucket, when [proxy] gives it a rate.
  const std::optional<StoredBucket>& count_tokens() const { return count_tokens_; }

  size_t in_flight = 0;  // requests handed to a client and not yet done

 private:
  explicit Upstreams(const LimitsConfig& config) : config_(config) {}

  LimitsConfig config_;
  std::unique_ptr<Policy> policy_;
  std::array<std::unique_ptr<sluice::Client>, 2> clients_;
  std::array<std::thread, 2> loops_;
  std::optional<StoredBucket> count_tokens_;
};

}  // namespace proxy_internal
}  // namespace sluice

#endif  // SLUICE_SRC_PROXY_UPSTREAMS_H_
