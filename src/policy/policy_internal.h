// What policy.h keeps out of sight: a route's charges, a permit's
// reservations, and the policy's opened buckets and route cache. Internal to
// src/policy (policy.cc builds routes and reserves; permit.cc settles).
//
// Thread safety: as policy.h says. A RouteRep is immutable once published
// (apart from its atomic counter); PolicyImpl's route cache is guarded by
// its mutex.
#ifndef SLUICE_SRC_POLICY_POLICY_INTERNAL_H_
#define SLUICE_SRC_POLICY_POLICY_INTERNAL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "sluice/effective_limits.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/store.h"

namespace sluice {
namespace internal_policy {

// What a request is metered in, per charge.
enum class Meter : uint8_t {
  kRequests,      // 1 per request
  kInputTokens,   // ITPM
  kOutputTokens,  // OTPM
  kTotalTokens,   // TPM / TPD: input + output pre-charge
  kOpenAiTokens,  // OpenAI TPM / TPD: max(max_tokens, input estimate)
  kMicroUsd,      // a budget: worst-case cost in micro-dollars
};

// What a bucket of `kind` meters (a provider's bucket named "openai" meters
// OpenAI's way).
Meter MeterOf(LimitKind kind, bool openai_provider_bucket);

// A token bucket the policy opened in the store.
struct OpenedBucket {
  BucketSpec spec;
  StoredBucket handle;
  // The per-minute (or per-day) limit the bucket runs at now: the spec's,
  // or a lower one learned from the provider.
  std::unique_ptr<std::atomic<uint64_t>> applied;
  // The burst learned from the provider as far as this process knows
  // (permits; 0: none yet).
  std::unique_ptr<std::atomic<uint64_t>> burst;
};

// A token bucket's charge has no counter.
inline StoredCounter NoCounter() { return StoredCounter{WindowCounterRef(nullptr), nullptr}; }

// One bucket or budget a route pays into.
struct Charge {
  std::string key;
  Meter meter;
  bool is_provider;  // a provider bucket (fed back from response headers)
  LimitKind kind;
  bool is_budget;  // a window counter (USD budget) rather than a token bucket
  BudgetPeriod period;
  int64_t limit;  // budgets: micro-USD per period
  BucketRef bucket{nullptr, Clock::Monotonic()};
  // A budget's counter, where the store keeps it (a fleet's: in Redis).
  StoredCounter counter = NoCounter();
  std::atomic<uint64_t>* bottlenecks;
  const OpenedBucket* opened = nullptr;  // a bucket's; lives as long as the policy
};

struct RouteLease {
  std::string key;
  StoredLeases leases;
};

struct RouteRep {
  std::string scope;
  std::vector<std::string> path;
  bool fell_back = false;
  std::vector<Charge> charges;
  std::vector<RouteLease> leases;
  bool count_cache_reads = false;
  bool precharge_output = true;
  const Price* price = nullptr;
  mutable std::atomic<uint64_t> uses{0};  // reservations made while fallen back
  std::string provider;
  std::string account;
  bool provider_configured = false;  // the configuration names the provider
  std::string provider_owner;        // Route::provider_owner
  // Replaced by a route with learned provider buckets (Route::superseded).
  mutable std::atomic<bool> superseded{false};
};

// Where a permit's token buckets were decided (a store with remote buckets,
// sluice/store.h, decides there unless the remote is away).
enum class Decided : uint8_t {
  kHere,       // on the store's cells (no remote buckets)
  kRemote,     // on the remote buckets, in one round trip
  kShare,      // on the host's share while the remote was away: owed to it
  kUnmetered,  // not at all: the remote was away and admits (or not yet taken)
};

struct PermitState {
  const RouteRep* route = nullptr;
  Store* store = nullptr;
  absl::InlinedVector<int64_t, 16> reserved;
  absl::InlinedVector<Terms, 16> terms;     // per charge: what its permits cost when taken
  absl::InlinedVector<int64_t, 4> windows;  // per budget charge, in order
  absl::InlinedVector<int32_t, 2> leases;   // lease index per route lease
  int64_t ready_at_ns = 0;
  int64_t wait_ns = 0;
  const std::string* bottleneck = nullptr;  // a key in the route
  bool open = false;
  Decided decided = Decided::kHere;

  // Returns the concurrency leases held.
  void ReleaseLeases();
  // Gives back charges [0, taken) exactly, at `now_ns`.
  void Refund(size_t taken, int64_t now_ns) const;
  // Not decided here: takes (diffs[i] > 0) or gives back (< 0) the token
  // bucket charges' differences where they were decided (remote_reserve.cc).
  void AdjustElsewhere(absl::Span<const int64_t> diffs, int64_t now_ns) const;
};

// The configuration a remote bucket decides with: the opened bucket's,
// lowered to a limit and capped at a burst learned from the provider.
BucketConfig RemoteConfig(const OpenedBucket& opened);

// Amount of a charge of `meter` reserved for a request's estimate.
int64_t ReservedAmount(const RouteRep& route, Meter meter, uint64_t input_tokens,
                       uint64_t max_output_tokens);
// `max_wait` in ns (INT64_MAX for an infinite one).
int64_t MaxWaitNs(absl::Duration max_wait);

// Micro-dollars of `tokens` at `usd_per_million` (USD per million tokens is
// exactly micro-dollars per token), and the ceiling of a sum of them.
double MicroUsd(uint64_t tokens, double usd_per_million);
int64_t CeilMicroUsd(double micro_usd);
// `v`, or INT64_MAX when it does not fit.
int64_t Saturate(uint64_t v);

class PolicyImpl {
 public:
  PolicyImpl(const LimitsConfig& config, Store* store, PolicyOptions options);

  absl::Status OpenAll();
  absl::StatusOr<const Route*> Resolve(absl::string_view scope, absl::string_view provider,
                                       absl::string_view model, absl::string_view account);
  void WaitForPools(const RouteRep& route, const Request& request, int64_t deadline_ns) const;
  absl::StatusOr<Permit> Reserve(const Route& route, uint64_t input_tokens,
                                 uint64_t max_output_tokens, absl::Duration max_wait,
                                 int64_t now_ns);
  absl::StatusOr<Permit> Acquire(const Request& request, absl::Duration timeout);
  PolicyStats Stats() const;
  std::optional<StoredLeases> ConcurrencyCap(absl::string_view key) const;
  void ClampProvider(const Route& route, LimitKind kind, int64_t remaining, int64_t now_ns) const;
  void HoldProvider(const Route& route, int64_t until_ns, int64_t now_ns) const;
  void LearnProviderRate(const Route& route, LimitKind kind, double per_minute) const;
  void LearnProviderBurst(const Route& route, LimitKind kind, int64_t remaining,
                          int64_t charged) const;
  bool ProviderCold(const Route& route) const;
  absl::Status LearnProviderLimits(const Route& route,
                                   const std::vector<std::pair<LimitKind, double>>& per_minute);

  Store* store() const { return store_; }
  const LimitsConfig& config() const { return config_; }

 private:
  struct OpenedBudget {
    BudgetSpec spec;
    StoredCounter handle;
  };
  struct OpenedLeases {
    ConcurrencySpec spec;
    StoredLeases handle;
  };

  absl::StatusOr<OpenedBucket> OpenStored(const BucketSpec& spec) const;
  // `spec` for provider account `account` (its key and owner); as it is
  // for an empty account.
  static absl::StatusOr<BucketSpec> ForAccount(BucketSpec spec, absl::string_view account);
  // Sets the route's provider, account and provider owner, and, for a
  // provider the configuration does not name, adds the buckets learned for
  // it (LearnProviderLimits). REQUIRES: mu_ held exclusively.
  void AddLearnedProvider(absl::string_view provider, absl::string_view account,
                          RouteRep* route) const;
  absl::Status OpenBucket(const BucketSpec& spec);
  absl::Status OpenOwner(const OwnerLimits& owner);
  // The opened buckets `owner` charges, in its order: its own, or for a
  // provider model class and a non-empty `account`, that account's (opened
  // in the store the first time).
  absl::StatusOr<std::vector<const OpenedBucket*>> OwnerBuckets(const OwnerLimits& owner,
                                                                absl::string_view account);
  void AddCharges(const OwnerLimits& owner, const std::vector<const OpenedBucket*>& buckets,
                  absl::string_view provider, RouteRep* route) const;
  PolicyStats::Bucket BucketStats(const OpenedBucket& opened, int64_t now) const;
  std::unique_ptr<PermitState> NewPermit(const RouteRep& route) const;
  absl::StatusOr<Permit> ReserveCharges(const RouteRep& route, uint64_t input_tokens,
                                        uint64_t max_output_tokens, absl::Duration max_wait,
                                        int64_t now_ns, std::unique_ptr<PermitState> permit);
  absl::Status TakeBudget(const Charge& c, int64_t amount, PermitState* permit);
  // Why token bucket `c` refused `amount` (outcome kRefused with `wait_ns`,
  // or kNeverFits with `capacity`), counting a never-fits.
  absl::Status BucketRefusal(const Charge& c, Outcome outcome, int64_t amount, int64_t wait_ns,
                             int64_t max_wait_ns, int64_t capacity) const;
  // ReserveCharges with remote buckets (remote_reserve.cc): budgets on the
  // store's counters, then every token bucket in one round trip.
  absl::StatusOr<Permit> ReserveRemote(const RouteRep& route, uint64_t input_tokens,
                                       uint64_t max_output_tokens, absl::Duration max_wait,
                                       int64_t now_ns, std::unique_ptr<PermitState> permit);
  // While the remote is away: by on_down(); `down` is the remote's error.
  absl::StatusOr<Permit> ReserveWhileDown(const RouteRep& route, uint64_t input_tokens,
                                          uint64_t max_output_tokens, absl::Duration max_wait,
                                          int64_t now_ns, std::unique_ptr<PermitState> permit,
                                          const absl::Status& down);
  void ClampRemote(const Route& route, LimitKind kind, int64_t remaining) const;
  void HoldRemote(const Route& route, int64_t until_ns, int64_t now_ns) const;
  // Replaces the levels of `buckets` (of `opened`, in order) by the remote's.
  void RemoteLevels(const std::vector<const OpenedBucket*>& opened,
                    std::vector<PolicyStats::Bucket>* buckets) const;
  // UTC wall time for budget windows: PolicyOptions::wall_clock, or the
  // store's (Store::WallTime).
  absl::Time WallNow() const;
  int64_t WindowId(BudgetPeriod period) const;
  absl::Time NextWindowStart(BudgetPeriod period) const;

  const LimitsConfig config_;
  const EffectiveLimits limits_;  // of config_
  Store* const store_;
  RemoteBuckets* const remote_;  // store_'s, or nullptr
  const PolicyOptions options_;

  // Opened by Create and never changed after: read without the lock.
  absl::node_hash_map<std::string, OpenedBucket> buckets_;
  absl::flat_hash_map<std::string, OpenedBudget> budgets_;
  absl::flat_hash_map<std::string, OpenedLeases> leases_;
  std::vector<std::string> order_;  // keys in configuration order, for stats

  // A standard mutex rather than absl's: ThreadSanitizer sees through the
  // pthread calls under it, and the packaged Abseil is not instrumented.
  mutable std::shared_mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Route>> routes_;  // guarded by mu_
  // Provider accounts' buckets, opened by Resolve as accounts appear (the
  // nodes stay put: routes point at them).
  absl::node_hash_map<std::string, OpenedBucket> account_buckets_;  // guarded by mu_
  std::vector<std::string> account_order_;                          // guarded by mu_
  // Buckets learned for providers the configuration does not name, by
  // provider owner ("anthropic", "anthropic@1f2e"); and the routes they
  // superseded, kept alive as Resolve promised.
  absl::node_hash_map<std::string, std::vector<OpenedBucket>> learned_providers_;  // guarded by mu_
  std::vector<std::unique_ptr<Route>> retired_;                                    // guarded by mu_
  mutable std::atomic<uint64_t> rollbacks_{0};
  mutable std::atomic<uint64_t> never_fits_{0};
};

}  // namespace internal_policy
}  // namespace sluice

#endif  // SLUICE_SRC_POLICY_POLICY_INTERNAL_H_
