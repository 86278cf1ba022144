// Reserving with remote buckets (sluice/store.h RemoteBuckets: a fleet's
// Redis in exact mode): budgets on the store's counters first, then every
// token bucket of the route in one round trip, so that a refusal there costs
// no second round trip (only the budgets, taken here, are given back). While
// the remote is away, the remote's on_down() decides: the host's share (the
// store's cells, owed to the remote), a refusal, or an unmetered admit.
// Settling, cancelling and provider feedback go to where the permit was
// decided.

#include <algorithm>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "sluice/policy.h"
#include "src/policy/policy_internal.h"

namespace sluice {
namespace internal_policy {
namespace {

using RemoteCharges = absl::InlinedVector<RemoteCharge, 8>;

RemoteCharge ChargeOf(const Charge& c, int64_t permits) {
  return {c.key, RemoteConfig(*c.opened), permits};
}

}  // namespace

BucketConfig RemoteConfig(const OpenedBucket& opened) {
  const BucketSpec& spec = opened.spec;
  const uint64_t applied = opened.applied->load(std::memory_order_relaxed);
  BucketConfig config = spec.config;
  if (applied < spec.limit) config = LowerTo(config, Rate(applied, config.rate.period()));
  return CapBurst(config, opened.burst->load(std::memory_order_relaxed));
}

void PermitState::AdjustElsewhere(absl::Span<const int64_t> diffs, int64_t now_ns) const {
  if (decided == Decided::kUnmetered) return;
  RemoteBuckets* remote = store->remote_buckets();
  RemoteCharges changes;
  for (size_t i = 0; i < diffs.size(); ++i) {
    const Charge& c = route->charges[i];
    if (c.is_budget || diffs[i] == 0) continue;
    if (decided == Decided::kShare) {
      // The share's cell gives back exactly what it took; the remote is owed
      // the difference as well.
      if (diffs[i] > 0) c.bucket.Debit(static_cast<uint64_t>(diffs[i]), now_ns);
      if (diffs[i] < 0) c.bucket.Refund(static_cast<uint64_t>(-diffs[i]), terms[i], now_ns);
      remote->Owe(ChargeOf(c, diffs[i]));
      continue;
    }
    changes.push_back(ChargeOf(c, diffs[i]));
  }
  if (!changes.empty()) remote->Adjust(changes);
}

absl::StatusOr<Permit> PolicyImpl::ReserveRemote(const RouteRep& route, uint64_t input_tokens,
                                                 uint64_t max_output_tokens,
                                                 absl::Duration max_wait, int64_t now_ns,
                                                 std::unique_ptr<PermitState> permit) {
  // Until the remote grants, a rollback gives back the budgets only.
  permit->decided = Decided::kUnmetered;
  RemoteCharges charges;
  absl::InlinedVector<const Charge*, 8> of;  // the route's charge of each
  for (size_t i = 0; i < route.charges.size(); ++i) {
    const Charge& c = route.charges[i];
    const int64_t amount = ReservedAmount(route, c.meter, input_tokens, max_output_tokens);
    if (c.is_budget) {
      if (absl::Status s = TakeBudget(c, amount, permit.get()); !s.ok()) {
        permit->Refund(i, now_ns);
        rollbacks_.fetch_add(1, std::memory_order_relaxed);
        c.bottlenecks->fetch_add(1, std::memory_order_relaxed);
        permit->ReleaseLeases();
        return s;
      }
      continue;
    }
    permit->reserved.push_back(amount);
    permit->terms.push_back({});
    charges.push_back(ChargeOf(c, amount));
    of.push_back(&c);
  }
  absl::StatusOr<RemoteDecision> d = charges.empty() ? RemoteDecision{Outcome::kGranted, 0, -1}
                                                     : remote_->Reserve(charges, max_wait);
  if (!d.ok() && d.status().code() == absl::StatusCode::kUnavailable) {
    return ReserveWhileDown(route, input_tokens, max_output_tokens, max_wait, now_ns,
                            std::move(permit), d.status());
  }
  if (route.fell_back) route.uses.fetch_add(1, std::memory_order_relaxed);
  const Charge* bottleneck =
      d.ok() && d->bottleneck >= 0 && d->bottleneck < static_cast<int>(of.size())
          ? of[d->bottleneck]
          : nullptr;
  if (!d.ok() || !d->granted()) {
    permit->Refund(route.charges.size(), now_ns);
    rollbacks_.fetch_add(1, std::memory_order_relaxed);
    permit->ReleaseLeases();
    if (!d.ok()) return d.status();
    if (bottleneck == nullptr) return absl::InternalError("the remote refused naming no bucket");
    bottleneck->bottlenecks->fetch_add(1, std::memory_order_relaxed);
    const RemoteCharge& refused = charges[d->bottleneck];
    return BucketRefusal(*bottleneck, d->outcome, refused.permits, d->wait_ns, MaxWaitNs(max_wait),
                         static_cast<int64_t>(refused.config.capacity));
  }
  permit->decided = Decided::kRemote;
  if (bottleneck != nullptr && d->wait_ns > 0) {
    bottleneck->bottlenecks->fetch_add(1, std::memory_order_relaxed);
    permit->bottleneck = &bottleneck->key;
  }
  permit->wait_ns = d->wait_ns;
  permit->ready_at_ns = now_ns + d->wait_ns;
  return Permit(std::move(permit));
}

absl::StatusOr<Permit> PolicyImpl::ReserveWhileDown(const RouteRep& route, uint64_t input_tokens,
                                                    uint64_t max_output_tokens,
                                                    absl::Duration max_wait, int64_t now_ns,
                                                    std::unique_ptr<PermitState> permit,
                                                    const absl::Status& down) {
  switch (remote_->on_down()) {
    case RemoteDown::kAdmit:
      // The budgets stand; the token buckets are not metered.
      if (route.fell_back) route.uses.fetch_add(1, std::memory_order_relaxed);
      permit->ready_at_ns = now_ns;
      return Permit(std::move(permit));
    case RemoteDown::kRefuse:
      permit->Refund(route.charges.size(), now_ns);
      permit->ReleaseLeases();
      return absl::UnavailableError(
          absl::StrCat("the fleet's buckets are in ", remote_->Describe(),
                       ", which is down: on_redis_down = fail_closed refuses until it answers (",
                       down.message(), ")"));
    case RemoteDown::kDecideLocally:
      break;
  }
  // Again from the start, on the host's share; the budgets go back first.
  permit->Refund(route.charges.size(), now_ns);
  permit->reserved.clear();
  permit->terms.clear();
  permit->windows.clear();
  // Decided here, rollbacks included; owed to the remote once granted.
  permit->decided = Decided::kHere;
  absl::StatusOr<Permit> local =
      ReserveCharges(route, input_tokens, max_output_tokens, max_wait, now_ns, std::move(permit));
  if (!local.ok()) return local;
  local->state_->decided = Decided::kShare;
  for (size_t i = 0; i < route.charges.size(); ++i) {
    const Charge& c = route.charges[i];
    if (!c.is_budget) remote_->Owe(ChargeOf(c, local->reserved()[i]));
  }
  return local;
}

void PolicyImpl::ClampRemote(const Route& route, LimitKind kind, int64_t remaining) const {
  RemoteCharges clamps;
  for (const Charge& c : route.rep_->charges) {
    if (c.is_provider && c.kind == kind)
      clamps.push_back(ChargeOf(c, std::max<int64_t>(remaining, 0)));
  }
  if (!clamps.empty()) remote_->Clamp(clamps);
}

void PolicyImpl::HoldRemote(const Route& route, int64_t until_ns, int64_t now_ns) const {
  // As HoldProvider: the request bucket holds them all; without one, every
  // provider bucket.
  bool has_requests = false;
  for (const Charge& c : route.rep_->charges) {
    has_requests |= c.is_provider && c.kind == LimitKind::kRequestsPerMinute;
  }
  RemoteCharges holds;
  for (const Charge& c : route.rep_->charges) {
    if (!c.is_provider || (has_requests && c.kind != LimitKind::kRequestsPerMinute)) continue;
    holds.push_back(ChargeOf(c, 0));
  }
  if (!holds.empty()) remote_->Hold(holds, absl::Nanoseconds(until_ns - now_ns));
}

void PolicyImpl::RemoteLevels(const std::vector<const OpenedBucket*>& opened,
                              std::vector<PolicyStats::Bucket>* buckets) const {
  RemoteCharges reads;
  for (const OpenedBucket* o : opened) reads.push_back({o->spec.key, RemoteConfig(*o), 0});
  if (reads.empty()) return;
  // Redis away: the levels shown are the host's shares.
  absl::StatusOr<std::vector<int64_t>> levels = remote_->Available(reads);
  if (!levels.ok() || levels->size() != buckets->size()) return;
  for (size_t i = 0; i < buckets->size(); ++i) {
    PolicyStats::Bucket& b = (*buckets)[i];
    b.capacity = static_cast<int64_t>(reads[i].config.capacity);
    b.available = (*levels)[i];
    b.percent_available =
        b.capacity > 0 ? 100.0 * static_cast<double>(b.available) / b.capacity : 0.0;
    b.pressure = PressureOf(b.available, b.capacity);
  }
}

}  // namespace internal_policy
}  // namespace sluice
