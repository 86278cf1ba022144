// Permits and routes: what one request reserved, settled against the usage
// the provider reported, cancelled, or dropped (keeping its charges and
// returning its concurrency lease).

#include <cmath>
#include <limits>
#include <utility>

#include "sluice/policy.h"
#include "src/policy/policy_internal.h"

namespace sluice {
namespace internal_policy {

double MicroUsd(uint64_t tokens, double usd_per_million) {
  return static_cast<double>(tokens) * usd_per_million;
}

int64_t CeilMicroUsd(double micro_usd) {
  const double c = std::ceil(micro_usd);
  return c >= 9.0e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(c);
}

int64_t Saturate(uint64_t v) {
  return v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
             ? std::numeric_limits<int64_t>::max()
             : static_cast<int64_t>(v);
}

void PermitState::ReleaseLeases() {
  for (size_t i = 0; i < leases.size(); ++i) {
    if (leases[i] >= 0) route->leases[i].leases.Release(static_cast<uint32_t>(leases[i]));
  }
  leases.clear();
}

void PermitState::Refund(size_t taken, int64_t now_ns) const {
  size_t window = 0;
  absl::InlinedVector<int64_t, 16> elsewhere;  // per charge, when not decided here
  for (size_t i = 0; i < taken; ++i) {
    const Charge& c = route->charges[i];
    if (c.is_budget) {
      c.counter.Refund(windows[window++], reserved[i]);
    } else if (decided == Decided::kHere) {
      c.bucket.Refund(static_cast<uint64_t>(reserved[i]), terms[i], now_ns);
    } else {
      elsewhere.resize(i + 1);
      elsewhere[i] = -reserved[i];
    }
  }
  if (!elsewhere.empty()) AdjustElsewhere(elsewhere, now_ns);
}

namespace {

// What a charge of `meter` comes to for the usage the provider reported.
int64_t ActualAmount(const RouteRep& route, Meter meter, const Usage& usage) {
  const uint64_t counted_input = usage.input_tokens + usage.cache_creation_input_tokens +
                                 (route.count_cache_reads ? usage.cache_read_input_tokens : 0);
  const uint64_t all_input =
      usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens;
  switch (meter) {
    case Meter::kRequests:
      return 1;
    case Meter::kInputTokens:
      return Saturate(counted_input);
    case Meter::kOutputTokens:
      return Saturate(usage.output_tokens);
    case Meter::kTotalTokens:
      return Saturate(counted_input + usage.output_tokens);
    case Meter::kOpenAiTokens:
      return Saturate(all_input + usage.output_tokens);
    case Meter::kMicroUsd: {
      const Price& p = *route.price;
      return CeilMicroUsd(MicroUsd(usage.input_tokens, p.input) +
                          MicroUsd(usage.output_tokens, p.output) +
                          MicroUsd(usage.cache_creation_input_tokens, p.cache_write) +
                          MicroUsd(usage.cache_read_input_tokens, p.cache_read));
    }
  }
  return 0;
}

}  // namespace
}  // namespace internal_policy

using internal_policy::Charge;
using internal_policy::PermitState;

// Route ---------------------------------------------------------------------------

Route::Route(std::unique_ptr<internal_policy::RouteRep> rep) : rep_(std::move(rep)) {}
Route::~Route() = default;
const std::string& Route::scope() const { return rep_->scope; }
const std::vector<std::string>& Route::path() const { return rep_->path; }
bool Route::fell_back() const { return rep_->fell_back; }
const std::string& Route::provider_owner() const { return rep_->provider_owner; }
bool Route::superseded() const { return rep_->superseded.load(std::memory_order_acquire); }

// Permit --------------------------------------------------------------------------

Permit::Permit(std::unique_ptr<PermitState> state) : state_(std::move(state)) {}

Permit::Permit(Permit&& other) noexcept : state_(std::move(other.state_)) {}

Permit& Permit::operator=(Permit&& other) noexcept {
  if (this == &other) return *this;
  if (state_ != nullptr && state_->open) state_->ReleaseLeases();
  state_ = std::move(other.state_);
  return *this;
}

Permit::~Permit() {
  // Unsettled: the charges stand (the provider counts failed requests too);
  // the concurrency lease always comes back.
  if (state_ != nullptr && state_->open) state_->ReleaseLeases();
}

int64_t Permit::ready_at_ns() const { return state_->ready_at_ns; }
absl::Duration Permit::wait() const { return absl::Nanoseconds(state_->wait_ns); }
int64_t Permit::wait_ns() const { return state_->wait_ns; }
absl::string_view Permit::bottleneck() const {
  return state_->bottleneck == nullptr ? absl::string_view() : *state_->bottleneck;
}
const absl::InlinedVector<int64_t, 16>& Permit::reserved() const { return state_->reserved; }

void Permit::Settle(const Usage& usage) {
  if (state_ == nullptr || !state_->open) return;
  PermitState& s = *state_;
  s.open = false;
  const int64_t now = s.store->clock().Now();
  size_t window = 0;
  absl::InlinedVector<int64_t, 16> elsewhere;  // per charge, when not decided here
  for (size_t i = 0; i < s.route->charges.size(); ++i) {
    const Charge& c = s.route->charges[i];
    const int64_t diff = internal_policy::ActualAmount(*s.route, c.meter, usage) - s.reserved[i];
    if (c.is_budget) {
      const int64_t w = s.windows[window++];
      if (diff > 0) c.counter.Debit(w, diff);
      if (diff < 0) c.counter.Refund(w, -diff);
    } else if (s.decided == internal_policy::Decided::kHere) {
      if (diff > 0) c.bucket.Debit(static_cast<uint64_t>(diff), now);
      if (diff < 0) c.bucket.Refund(static_cast<uint64_t>(-diff), s.terms[i], now);
    } else {
      elsewhere.resize(i + 1);
      elsewhere[i] = diff;
    }
  }
  if (!elsewhere.empty()) s.AdjustElsewhere(elsewhere, now);
  s.ReleaseLeases();
}

void Permit::Cancel() {
  if (state_ == nullptr || !state_->open) return;
  PermitState& s = *state_;
  s.open = false;
  s.Refund(s.route->charges.size(), s.store->clock().Now());
  s.ReleaseLeases();
}

}  // namespace sluice
