// File: policy.h
// -----------------------------------------------------------------------------
// What an AI request must pay before it may run, and the settling up after.
//
// A Policy is built from a LimitsConfig over a Store. For each request shape
// (scope, provider, model) it resolves a Route once: every bucket the request
// draws from, in a fixed order —
//   * each scope on the path (workflow -> team -> global): requests per
//     minute, token limits, the USD budget's worst case, a concurrency lease;
//   * the provider's model class: RPM, ITPM/OTPM or TPM, tokens per day
//     (one provider account's own, when the route names one).
// Reserving takes from all of them or from none: if any bucket cannot grant
// within the allowed wait, what was already taken is given back exactly. The
// wait is the longest among the buckets, and the one that set it (or refused)
// is named: the bottleneck. A request that can never fit in some bucket fails
// at once with an error naming that bucket.
//
// The result is a Permit. After the call the caller settles it with the usage
// the provider reported; the difference from the estimate is refunded or
// debited in every token and cost bucket, counting tokens the way each
// provider does:
//   * input-token limits count input_tokens + cache_creation_input_tokens,
//     plus cache_read_input_tokens when the model class counts cache reads
//     (count_cache_reads) and always for a provider named "openai" (its TPM
//     counts every prompt token);
//   * output-token limits are pre-charged max_tokens, or 0 when the provider
//     says output_precharge = "none", and settled to output_tokens;
//   * a provider named "openai" pre-charges its TPM and TPD buckets
//     max(max_tokens, input estimate), as OpenAI does; every other combined
//     token bucket pre-charges input + the output pre-charge;
//   * USD budgets reserve the worst case (input at the higher of the input and
//     cache-write prices, all of max_tokens at the output price) and settle to
//     the priced usage. The guarantee that settled spend never exceeds a budget
//     holds when actual usage stays within the reservation; an estimate that
//     was too low is debited, and later requests wait for it.
// A Permit dropped without Settle or Cancel (an error, an exception, a crashed
// call) keeps everything it reserved — the provider counts failed requests
// too — and always returns its concurrency lease.
//
// Thread safety: a Policy is safe for concurrent use from any number of
// threads; Routes it returns live as long as it does. A Permit belongs to one
// thread at a time.
//
// Example:
//   auto store = sluice::NewSegmentStore(segment.get());
//   auto policy = sluice::Policy::Create(config, store.get());
//   auto permit = (*policy)->Acquire({.scope = "team:marketing",
//                                     .provider = "anthropic",
//                                     .model = "claude-sonnet-4",
//                                     .input_tokens = 1200,
//                                     .max_output_tokens = 800},
//                                    absl::Seconds(30));
//   if (!permit.ok()) return permit.status();  // names the bottleneck
//   ... call the model ...
//   permit->Settle({.input_tokens = 1187, .output_tokens = 412});

#ifndef SLUICE_POLICY_H_
#define SLUICE_POLICY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/limits.h"
#include "sluice/store.h"

namespace sluice {

// One request's shape and estimate.
struct Request {
  std::string scope;     // "team:marketing"; unknown scopes fall back (limits.h)
  std::string provider;  // "anthropic", "openai", ...; unconfigured: scope limits only
  std::string model;
  uint64_t input_tokens = 0;       // estimated prompt tokens (see TokenEstimator)
  uint64_t max_output_tokens = 0;  // the request's max_tokens
};

// What the provider reported (Anthropic's usage fields; the OpenAI client maps
// prompt_tokens - cached_tokens to input_tokens and cached_tokens to
// cache_read_input_tokens).
struct Usage {
  uint64_t input_tokens = 0;
  uint64_t output_tokens = 0;
  uint64_t cache_creation_input_tokens = 0;
  uint64_t cache_read_input_tokens = 0;
};

// TokenEstimator
//
// Estimates a prompt's input tokens before the call. Pluggable: Anthropic's
// count_tokens endpoint can stand behind this interface.
class TokenEstimator {
 public:
  virtual ~TokenEstimator() = default;
  virtual uint64_t EstimateInputTokens(absl::string_view provider, absl::string_view model,
                                       absl::string_view prompt) const = 0;
};

// The default estimator, a documented heuristic: one token per 3.5 bytes of
// prompt text for Anthropic models and per 4 bytes for others (both
// providers' rules of thumb for English; rounded up), plus 8 tokens of message
// framing. It overestimates code and underestimates CJK text; settling
// corrects either.
class CharacterEstimator final : public TokenEstimator {
 public:
  uint64_t EstimateInputTokens(absl::string_view provider, absl::string_view model,
                               absl::string_view prompt) const override;
};

class Policy;

// Implementation details, defined in src/policy/policy_internal.h.
namespace internal_policy {
struct RouteRep;
struct PermitState;
class PolicyImpl;
}  // namespace internal_policy

// Route
//
// The resolved charges of one (scope, provider, model). Opaque to callers;
// obtained from Policy::Resolve and reused. Lives as long as its Policy.
class Route {
 public:
  ~Route();
  Route(const Route&) = delete;
  Route& operator=(const Route&) = delete;

  const std::string& scope() const;
  // The scope path actually used, requested (or fallback) first.
  const std::vector<std::string>& path() const;
  bool fell_back() const;
  // The provider buckets the route draws from, named as their owner
  // ("anthropic/default", "anthropic@1f2e/claude-opus"); for a provider the
  // configuration does not name, "anthropic" or "anthropic@1f2e" (the
  // buckets Policy::LearnProviderLimits makes). Routes that share provider
  // buckets share this name.
  const std::string& provider_owner() const;
  // True once Policy::LearnProviderLimits has made provider buckets this
  // route lacks: Resolve it again to draw from them.
  bool superseded() const;

 private:
  friend class internal_policy::PolicyImpl;
  explicit Route(std::unique_ptr<internal_policy::RouteRep> rep);
  std::unique_ptr<internal_policy::RouteRep> rep_;
};

// Permit
//
// Everything one request reserved. Move-only; a moved-from Permit may only be
// assigned to or destroyed. Settle, Cancel, or let it go (see the file
// comment for what dropping an unsettled permit does).
class Permit {
 public:
  Permit(Permit&& other) noexcept;
  Permit& operator=(Permit&& other) noexcept;
  Permit(const Permit&) = delete;
  Permit& operator=(const Permit&) = delete;
  ~Permit();

  // When the request may start (ns on the store's clock, as `now_ns`), and
  // how long after the reservation that is.
  int64_t ready_at_ns() const;
  absl::Duration wait() const;
  int64_t wait_ns() const;  // wait() in ns, for callers doing clock arithmetic
  // The bucket whose wait was the longest ("" when nothing waited).
  absl::string_view bottleneck() const;

  // Reconciles every charge with what the provider reported, and returns the
  // concurrency lease. At most once; later calls do nothing.
  void Settle(const Usage& usage);
  // Gives back everything (the request was never sent).
  void Cancel();

  // The amounts reserved, in route order (for tests and stats).
  const absl::InlinedVector<int64_t, 16>& reserved() const;

 private:
  friend class internal_policy::PolicyImpl;
  explicit Permit(std::unique_ptr<internal_policy::PermitState> state);
  std::unique_ptr<internal_policy::PermitState> state_;
};

struct PolicyOptions {
  // UTC wall time for calendar budgets; empty: the store's (Store::WallTime:
  // this host's clock, or a fleet's Redis's, so that every host of a fleet
  // is in the same budget window). Tests inject their own.
  std::function<absl::Time()> wall_clock;
};

struct PolicyStats {
  struct Bucket {
    std::string key;
    std::string owner;  // scope name, "provider/class" or "provider@account/class"
    LimitKind kind;
    uint64_t limit;  // per minute or per day, after headroom
    int64_t available;
    int64_t capacity;
    double percent_available;
    Pressure pressure;
    uint64_t bottlenecks;
  };
  struct Budget {
    std::string key;
    std::string scope;
    BudgetPeriod period;
    uint64_t limit_micro_usd;
    uint64_t spent_micro_usd;  // this UTC day or month
    uint64_t bottlenecks;
  };
  struct Concurrency {
    std::string key;
    std::string scope;
    uint32_t max_in_flight;
    uint32_t in_flight;
    uint64_t bottlenecks;
  };
  std::vector<Bucket> buckets;
  std::vector<Budget> budgets;
  std::vector<Concurrency> concurrency;
  // Requests per requested scope name that fell back to another scope, as
  // "name -> used scope", in this process.
  std::map<std::string, uint64_t> fallbacks;
  uint64_t rollbacks = 0;   // all-or-nothing reservations undone, this process
  uint64_t never_fits = 0;  // requests larger than some bucket, this process
};

// True for Policy::Reserve's refusal because a concurrency cap on the route
// has every lease out: unlike the other refusals, it clears as soon as a
// request finishes. (Marked with a status payload, not by its message.)
bool IsConcurrencyFull(const absl::Status& status);
// The key of the cap such a refusal names ("" for any other status).
std::string FullConcurrencyCap(const absl::Status& status);
// True for Policy::Reserve's refusal because a pool on the route (lease mode,
// sluice/fleet_store.h) holds too little now: it clears when the host's
// refiller tops the pool up from the fleet, typically within milliseconds.
bool IsPoolShort(const absl::Status& status);

class Policy {
 public:
  // Opens every bucket, budget and cap the configuration names in `store`
  // (creating or reconfiguring them), and takes back the leases that dead
  // processes hold in its caps. REQUIRES: `store` outlives the Policy.
  static absl::StatusOr<std::unique_ptr<Policy>> Create(const LimitsConfig& config, Store* store,
                                                        PolicyOptions options = {});

  // The route of a request shape, resolved once and cached (an unknown scope
  // falls back, finally to "global", which is implicit and unlimited when the
  // config has none). FailedPrecondition when a scope on the path has a USD
  // budget and the model has no price: a problem of the configuration, not of
  // one request.
  //
  // Provider accounts: with a non-empty `account` (one API key's, say: a
  // provider meters each key on its own), the route draws from that
  // account's own provider buckets instead of the provider's: the same
  // limits, headroom, bursts and learned-limit rules as the provider's model
  // class, under keys "provider:<provider>@<account>:<class>:<kind>"
  // (bucket_key.h). They are opened in the store the first time an account
  // is resolved, by whichever process resolves it first, as Create opens the
  // configured ones. Feedback on such a route (ClampProvider, HoldProvider,
  // LearnProviderRate) touches that account's buckets only. Scope buckets,
  // budgets and caps stay shared by every account. InvalidArgument when
  // `account` is not 1 to BucketKey::kMaxAccountLength characters of
  // [0-9a-z]; the store's error when it cannot open the account's buckets
  // (ResourceExhausted, naming the segment, when its slots are all taken).
  absl::StatusOr<const Route*> Resolve(absl::string_view scope, absl::string_view provider,
                                       absl::string_view model, absl::string_view account = "");

  // Reserves without sleeping: all-or-nothing, each bucket waiting at most
  // `max_wait`; concurrency leases must be free now. The permit says when the
  // request may start. Errors: OutOfRange (can never fit; names the bucket),
  // DeadlineExceeded (the wait, or a full concurrency cap; names it),
  // ResourceExhausted (a USD budget is spent for this period; names it and
  // when it resets).
  absl::StatusOr<Permit> Reserve(const Route& route, uint64_t input_tokens,
                                 uint64_t max_output_tokens, absl::Duration max_wait,
                                 int64_t now_ns);

  // Resolves, waits for concurrency leases, reserves, and sleeps once until
  // the permit's start: everything within `timeout`.
  absl::StatusOr<Permit> Acquire(const Request& request, absl::Duration timeout);

  PolicyStats Stats() const;

  // The concurrency cap `key` (as FullConcurrencyCap names it), for callers
  // that wait for one of its leases to come back; nullopt for another key.
  std::optional<StoredLeases> ConcurrencyCap(absl::string_view key) const;

  // Feedback from a provider's response headers. Clamp: the provider says
  // `remaining` permits of `kind` are left; a provider bucket on the route
  // that holds more gives the difference up. Hold: a quota 429 asked to wait
  // until `until_ns`; the route's provider request bucket (or, without one,
  // its provider buckets) hold nothing until then, for every process sharing
  // the store.
  void ClampProvider(const Route& route, LimitKind kind, int64_t remaining, int64_t now_ns) const;
  void HoldProvider(const Route& route, int64_t until_ns, int64_t now_ns) const;
  // Learn: the provider's headers state its limit for `kind` as
  // `per_minute` permits a minute. When that (times the headroom) clearly
  // differs from what the route's provider bucket runs at, it is recorded in
  // the store as the bucket's learned limit and the bucket is reconfigured
  // live to it, for every process on the store: a key whose real tier is
  // lower than the config says converges on the real limit instead of
  // drawing 429s. The learned limit stays when other processes start (they
  // never raise it); only new evidence changes it, and never above the
  // configured limit.
  void LearnProviderRate(const Route& route, LimitKind kind, double per_minute) const;

  // Cold start. A provider's bucket may hold far less than the configured
  // burst (minute_burst, 6 s of the rate by default): a provider that
  // enforces its per-minute limit over one second refuses most of a 6 s
  // burst. Nobody can read the provider's burst off its documentation, but
  // every response says what its bucket holds: right after the provider
  // counted a request costing `charged` permits of `kind`, `remaining` were
  // left, so its bucket holds at least remaining + charged (exactly that
  // when nothing else drew from it, a lower bound otherwise: never more than
  // it holds). The rule: the route's provider bucket of `kind` takes as its
  // learned burst half of that times the headroom, floor((remaining +
  // charged) * headroom / 2), at least `charged` (a request the provider
  // just took must fit again) and 1, and runs with no more capacity than
  // that, at its rate otherwise. So sluice never holds more burst than the
  // provider's own bucket, and a burst after a quiet spell leaves the other
  // half of the provider's bucket to absorb requests that reach it closer
  // together than they were sent (network and scheduling jitter); at the
  // rate, pacing is what counts, not the burst. Evidence only raises a
  // learned burst (each is a lower bound of the same bucket), never above
  // the configured burst; it is kept in the store for every process
  // (Store::LearnBurst), and a process starting later uses it and never
  // raises it by opening. `remaining` < 0 (unknown) is ignored, and so is
  // remaining + charged = 0 (a refusal with nothing left says nothing of the
  // bucket's size). A bucket whose burst the file states (an explicit
  // [providers.P.burst] entry) is the user's word and is left as it is.
  void LearnProviderBurst(const Route& route, LimitKind kind, int64_t remaining,
                          int64_t charged) const;
  // Whether the route's provider buckets still wait for the provider's
  // first rate-limit headers: it has provider buckets and none of them has a
  // learned burst (in this process, or in the store when it was opened) or
  // a burst the file states. A
  // client sends one request at a time to such buckets until a response
  // comes back (sluice/client.h). A route without provider buckets (its
  // provider is not in the configuration, and LearnProviderLimits has not
  // made them yet) is not cold: there is nothing to size, and a
  // configuration of scopes alone keeps its concurrency from the start.
  bool ProviderCold(const Route& route) const;
  // Learning the limits of a provider the configuration does not name at
  // all: `per_minute` holds what the provider's `*-limit` headers state for
  // the route's provider account, per kind (per minute of its clock). The
  // first call for a (provider, account) makes that account's provider
  // buckets, as a [providers.P] table with those limits and no model classes
  // would (keys "provider:P[@account]:default:<kind>", the limit times the
  // headroom, the default burst until LearnProviderBurst sizes it); routes
  // resolved before are superseded (Route::superseded) and later ones draw
  // from them. Later calls, and calls for a configured provider, do nothing
  // (LearnProviderRate follows the provider's limit from then on, never
  // above the first). Limits are clamped to [1, 1e12] a minute; a kind
  // whose bucket would be invalid is left out. The store's error when it
  // cannot open them.
  absl::Status LearnProviderLimits(const Route& route,
                                   const std::vector<std::pair<LimitKind, double>>& per_minute);

  Store* store() const;
  const LimitsConfig& config() const;

  ~Policy();
  Policy(const Policy&) = delete;
  Policy& operator=(const Policy&) = delete;

 private:
  explicit Policy(std::unique_ptr<internal_policy::PolicyImpl> impl);
  std::unique_ptr<internal_policy::PolicyImpl> impl_;
};

}  // namespace sluice

#endif  // SLUICE_POLICY_H_
