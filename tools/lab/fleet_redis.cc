// The fleet lab's Redis (tools/lab/fleet_redis.h).

#include "tools/lab/fleet_redis.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>

namespace sluice::lab {
namespace {

constexpr int64_t kAliveWindowNs = 60'000'000'000;  // "alive": a call in the last minute

}  // namespace

FleetRedis::FleetRedis(std::unique_ptr<ExactBucket> bucket, bool cap_outstanding)
    : bucket_(std::move(bucket)), cap_outstanding_(cap_outstanding) {}

FleetRedis::Caller& FleetRedis::Touch(uint64_t caller, int64_t now_ns) {
  while (!calls_.empty() && calls_.front().first < now_ns - kAliveWindowNs) {
    const auto [t, old] = calls_.front();
    calls_.pop_front();
    auto it = callers_.find(old);
    if (it != callers_.end() && it->second.last_call_ns == t) {
      outstanding_ -= it->second.out;
      callers_.erase(it);
      --alive_;
    }
  }
  Caller& c = callers_[caller];
  if (c.last_call_ns < 0) ++alive_;
  c.last_call_ns = now_ns;
  calls_.emplace_back(now_ns, caller);
  return c;
}

uint64_t FleetRedis::Cap() const {
  return static_cast<uint64_t>(
      std::max<int64_t>(0, static_cast<int64_t>(bucket_->Capacity()) - outstanding_));
}

void FleetRedis::Trim(int64_t now_ns) {
  // With nothing out the bucket's own capacity is the cap.
  if (!cap_outstanding_ || outstanding_ == 0) return;
  const int64_t cap = static_cast<int64_t>(Cap());
  const int64_t level = bucket_->Available(now_ns);
  // The level may hold a fraction of a permit that Available does not show:
  // from floor(level) >= cap, down to cap - 1 and that fraction, below the
  // cap (at the cost of at most one permit).
  if (level >= cap) {
    bucket_->Debit(static_cast<uint64_t>(level - cap + 1), now_ns);
  }
}

FleetRedis::Grant FleetRedis::Lease(uint64_t caller, uint64_t want, uint64_t used, int64_t now_ns) {
  Caller& c = Touch(caller, now_ns);
  Grant grant{.hosts_alive = alive_};
  if (cap_outstanding_) {
    const int64_t reported = std::min<int64_t>(static_cast<int64_t>(used), c.out);
    c.out -= reported;
    outstanding_ -= reported;
  }
  Trim(now_ns);
  const int64_t available = std::max<int64_t>(0, bucket_->Available(now_ns));
  grant.granted = std::min<uint64_t>(want, static_cast<uint64_t>(available));
  if (grant.granted > 0) bucket_->TryTake(grant.granted, now_ns);
  if (cap_outstanding_) {
    c.out += static_cast<int64_t>(grant.granted);
    outstanding_ += static_cast<int64_t>(grant.granted);
  }
  if (grant.granted < want) {
    // With the cap, the level never reaches more than cap - 1: say when
    // that much is there if the rest is more.
    uint64_t rest = want - grant.granted;
    if (cap_outstanding_) rest = std::clamp<uint64_t>(Cap() - 1, 1, rest);
    grant.rest_at_ns = now_ns + bucket_->TryTake(rest, now_ns).wait_ns;
  }
  return grant;
}

void FleetRedis::Return(uint64_t caller, uint64_t n, uint64_t used, int64_t now_ns) {
  Caller& c = Touch(caller, now_ns);
  if (cap_outstanding_) {
    const int64_t gone = std::min<int64_t>(static_cast<int64_t>(used + n), c.out);
    c.out -= gone;
    outstanding_ -= gone;
  }
  bucket_->Refund(n, now_ns);
  Trim(now_ns);
}

}  // namespace sluice::lab
