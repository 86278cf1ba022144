// A fleet's concurrency caps in Redis (redis_leases.h).

#include "src/cluster/redis_leases.h"

#include <unistd.h>

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "sluice/clock.h"
#include "src/cluster/lease_scripts.h"

namespace sluice {
namespace internal_cluster {
namespace {

// After a failed command, how long calls go by on_redis_down without trying
// Redis (the keeper's refresh still probes): a Redis that hangs then costs
// a caller the timeout once per interval, not once per call.
constexpr int64_t kProbeEveryNs = 100'000'000;

// Acquire's wait between tries, drawn from [1, 10) ms.
constexpr int64_t kPollMinUs = 1'000;
constexpr int64_t kPollMaxUs = 10'000;

// Indexes: a lease in Redis is its slot in the holder's table (< 2^20); one
// taken while Redis was down is kShareBit | the local cap's slot << 20 | its
// index there; one granted with no limit is kOpenIndex.
constexpr uint32_t kShareBit = 1u << 29;
constexpr uint32_t kShareShift = 20;
constexpr uint32_t kMaxShares = 1u << 9;
constexpr uint32_t kLocalMask = (1u << kShareShift) - 1;
constexpr uint32_t kOpenIndex = 1u << 30;

int64_t Integer(const RedisValue& v) {
  return v.type == RedisValue::Type::kInteger ? static_cast<int64_t>(v.integer) : 0;
}

std::string Token(const std::string& host) {
  static std::atomic<uint64_t> next{0};
  return absl::StrCat(host, "/", getpid(), "/", next.fetch_add(1));
}

int64_t DeadlineAfter(absl::Duration timeout) {
  if (timeout >= absl::Hours(24 * 365)) return std::numeric_limits<int64_t>::max();
  return Clock::MonotonicNanos() +
         absl::ToInt64Nanoseconds(std::max(timeout, absl::ZeroDuration()));
}

}  // namespace

// One cap of the fleet, as a StoredLeases backend.
class RedisCap final : public LeaseBackend {
 public:
  RedisCap(std::shared_ptr<RedisLeases> core, std::string key, uint32_t count)
      : core_(std::move(core)),
        key_(std::move(key)),
        redis_key_(absl::StrCat("{", core_->options_.redis.key_prefix, "}cap:", key_)),
        count_(count) {}

  absl::StatusOr<uint32_t> Acquire(absl::Duration timeout) override;
  absl::StatusOr<int32_t> TryAcquire() override { return TryOnce(nullptr); }
  void Release(uint32_t index) override;
  uint32_t Reclaim() override;
  uint32_t Generation() const override { return generation_.load(std::memory_order_acquire); }
  void WaitForRelease(uint32_t seen, absl::Duration timeout) override {
    core_->WaitForRelease(generation_, seen, timeout);
  }
  uint32_t InFlight() const override;
  uint32_t capacity() const override { return count_; }
  std::atomic<uint64_t>* bottlenecks() { return &bottlenecks_; }

 private:
  // A lease now; `*down` (if not null) says whether Redis was down.
  absl::StatusOr<int32_t> TryOnce(bool* down);
  absl::StatusOr<int32_t> TryWhileDown();
  absl::StatusOr<int32_t> TryLocalShare();
  // The local caps taken while Redis was down, and in flight there.
  std::vector<StoredLeases> Shares() const;

  const std::shared_ptr<RedisLeases> core_;
  const std::string key_;
  const std::string redis_key_;
  const uint32_t count_;
  std::atomic<uint32_t> generation_{0};
  std::atomic<uint32_t> open_{0};  // kFailOpen grants held
  std::atomic<uint64_t> bottlenecks_{0};
  mutable std::mutex mu_;
  // The local caps of each share used so far (a share follows the hosts
  // alive, so it may differ between outages).
  std::vector<std::pair<uint32_t, StoredLeases>> shares_;  // guarded by mu_
};

absl::StatusOr<int32_t> RedisCap::TryOnce(bool* down) {
  absl::StatusOr<int32_t> got = core_->TryRedis(redis_key_, count_);
  const bool unreachable = !got.ok() && got.status().code() == absl::StatusCode::kUnavailable;
  if (down != nullptr) *down = unreachable;
  if (!unreachable) return got;
  return TryWhileDown();
}

absl::StatusOr<int32_t> RedisCap::TryWhileDown() {
  switch (core_->options_.on_redis_down) {
    case RedisDown::kFailClosed:
      return -1;
    case RedisDown::kFailOpen:
      open_.fetch_add(1, std::memory_order_relaxed);
      return static_cast<int32_t>(kOpenIndex);
    case RedisDown::kLocalShare:
      break;
  }
  return TryLocalShare();
}

absl::StatusOr<int32_t> RedisCap::TryLocalShare() {
  const uint32_t share = std::max<uint32_t>(1, count_ / core_->Hosts());
  std::optional<StoredLeases> local;
  uint32_t slot = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (; slot < shares_.size() && shares_[slot].first != share; ++slot) {
    }
    if (slot == shares_.size()) {
      if (slot == kMaxShares) return -1;  // shares that changed 512 times: hold off
      absl::StatusOr<StoredLeases> opened =
          core_->local_->Leases(absl::StrCat("fleet:cap-down:", key_, "/", share), share);
      if (!opened.ok()) return opened.status();
      shares_.emplace_back(share, *opened);
    }
    local = shares_[slot].second;
  }
  absl::StatusOr<int32_t> got = local->TryAcquire();
  if (!got.ok() || *got < 0) return got;
  return static_cast<int32_t>(kShareBit | slot << kShareShift | static_cast<uint32_t>(*got));
}

absl::StatusOr<uint32_t> RedisCap::Acquire(absl::Duration timeout) {
  const int64_t deadline = DeadlineAfter(timeout);
  absl::InsecureBitGen rng;
  bool down = false;
  for (;;) {
    absl::StatusOr<int32_t> got = TryOnce(&down);
    if (!got.ok()) return got.status();
    if (*got >= 0) return static_cast<uint32_t>(*got);
    const int64_t left = deadline - Clock::MonotonicNanos();
    if (left <= 0) break;
    const int64_t pause = absl::Uniform<int64_t>(rng, kPollMinUs, kPollMaxUs) * 1'000;
    absl::SleepFor(absl::Nanoseconds(std::min(left, pause)));
  }
  if (down && core_->options_.on_redis_down == RedisDown::kFailClosed) {
    return absl::DeadlineExceededError(
        absl::StrCat("Redis is down, and on_redis_down = fail_closed: no new lease of the ", count_,
                     " shared by the fleet"));
  }
  if (down) {
    return absl::DeadlineExceededError(
        absl::StrCat("Redis is down, and this host's share of the fleet's ", count_,
                     " leases is held (for ", absl::FormatDuration(timeout), ")"));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "all ", count_, " leases held across the fleet for ", absl::FormatDuration(timeout)));
}

void RedisCap::Release(uint32_t index) {
  if (index == kOpenIndex) {
    open_.fetch_sub(1, std::memory_order_relaxed);
  } else if ((index & kShareBit) != 0) {
    const uint32_t slot = (index & ~kShareBit) >> kShareShift;
    std::optional<StoredLeases> local;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (slot < shares_.size()) local = shares_[slot].second;
    }
    if (local) local->Release(index & kLocalMask);
  } else {
    core_->ReleaseRedis(index);
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
  core_->NotifyReleased();
}

std::vector<StoredLeases> RedisCap::Shares() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<StoredLeases> out;
  for (const auto& [share, leases] : shares_) out.push_back(leases);
  return out;
}

uint32_t RedisCap::Reclaim() {
  uint32_t n = 0;
  if (absl::StatusOr<int64_t> r = core_->RunOn(CapReclaimScript(), redis_key_); r.ok()) {
    n += static_cast<uint32_t>(std::clamp<int64_t>(*r, 0, RedisLeases::kMaxCount));
  }
  for (const StoredLeases& local : Shares()) n += local.Reclaim();
  return n;
}

uint32_t RedisCap::InFlight() const {
  absl::StatusOr<int64_t> live = core_->RunOn(CapCountScript(), redis_key_);
  uint32_t n = live.ok() ? static_cast<uint32_t>(std::clamp<int64_t>(*live, 0, 1 << 30))
                         : core_->HeldOf(redis_key_);
  n += open_.load(std::memory_order_relaxed);
  for (const StoredLeases& local : Shares()) n += local.InFlight();
  return n;
}

RedisLeases::RedisLeases(Store* local, const FleetOptions& options)
    : local_(local),
      options_(options),
      link_(RedisLink::Lazy(LinkOptionsFor(options.redis))),
      keeper_link_(RedisLink::Lazy(LinkOptionsFor(options.redis))),
      token_(Token(options.host)) {}

std::shared_ptr<RedisLeases> RedisLeases::Create(Store* local, const FleetOptions& options) {
  return std::shared_ptr<RedisLeases>(new RedisLeases(local, options));
}

RedisLeases::~RedisLeases() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  keeper_cv_.notify_all();
  if (keeper_.joinable()) keeper_.join();
  GiveBackAll();
}

absl::StatusOr<StoredLeases> RedisLeases::Cap(absl::string_view key, uint32_t count) {
  if (count < 1) return absl::InvalidArgumentError("a concurrency cap needs at least 1 lease");
  if (count > kMaxCount) {
    return absl::InvalidArgumentError(absl::StrCat("concurrency cap '", key, "': ", count,
                                                   " leases; a fleet's cap holds at most ",
                                                   kMaxCount));
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::weak_ptr<RedisCap>& cached = caps_[key];
  std::shared_ptr<RedisCap> cap = cached.lock();
  if (cap == nullptr || cap->capacity() != count) {
    cap = std::make_shared<RedisCap>(shared_from_this(), std::string(key), count);
    cached = cap;
  }
  std::atomic<uint64_t>* bottlenecks = cap->bottlenecks();
  return StoredLeases(std::move(cap), bottlenecks);
}

bool RedisLeases::Skipping() const {
  return Clock::MonotonicNanos() < skip_until_ns_.load(std::memory_order_relaxed);
}

void RedisLeases::MarkDown() {
  skip_until_ns_.store(Clock::MonotonicNanos() + kProbeEveryNs, std::memory_order_relaxed);
}

void RedisLeases::Answered(int64_t hosts) {
  skip_until_ns_.store(0, std::memory_order_relaxed);
  if (hosts > 0) {
    hosts_seen_.store(static_cast<uint32_t>(std::min<int64_t>(hosts, 1 << 30)),
                      std::memory_order_relaxed);
  }
}

uint32_t RedisLeases::Hosts() const {
  const uint32_t seen = hosts_seen_.load(std::memory_order_relaxed);
  return std::max<uint32_t>(seen > 0 ? seen : options_.expected_hosts, 1);
}

absl::StatusOr<int32_t> RedisLeases::TryRedis(const std::string& redis_key, uint32_t count) {
  if (Skipping()) return absl::UnavailableError("Redis was down moments ago");
  std::string member = absl::StrCat(token_, "#", serial_.fetch_add(1, std::memory_order_relaxed));
  absl::StatusOr<RedisValue> r = link_->Eval(
      CapAcquireScript(), {redis_key, absl::StrCat("{", options_.redis.key_prefix, "}hosts")},
      {absl::StrCat(count), absl::StrCat(absl::ToInt64Milliseconds(options_.concurrency_lease_ttl)),
       member});
  if (!r.ok()) {
    if (r.status().code() == absl::StatusCode::kUnavailable) MarkDown();
    return r.status();
  }
  if (r->type != RedisValue::Type::kArray || r->elements.size() < 3) {
    return absl::InternalError("Redis answered a concurrency lease with an unexpected reply");
  }
  Answered(Integer(r->elements[2]));
  if (Integer(r->elements[0]) != 1) return -1;
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t index;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    index = static_cast<uint32_t>(held_.size());
    held_.emplace_back();
  }
  held_[index] = {redis_key, std::move(member), /*used=*/true, /*lost=*/false};
  if (!keeper_.joinable() && !stopping_) keeper_ = std::thread([this] { Keep(); });
  return static_cast<int32_t>(index);
}

void RedisLeases::ReleaseRedis(uint32_t index) {
  Held taken;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (index >= held_.size() || !held_[index].used) return;
    taken = std::move(held_[index]);
    held_[index] = Held{};
    free_.push_back(index);
  }
  // A lost lease is no longer ours to remove; one Redis cannot hear of now
  // expires with its time to live.
  if (taken.lost || Skipping()) return;
  absl::StatusOr<RedisValue> r = link_->Command({"ZREM", taken.cap, taken.member});
  if (!r.ok() && r.status().code() == absl::StatusCode::kUnavailable) MarkDown();
}

uint32_t RedisLeases::HeldOf(const std::string& redis_key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<uint32_t>(std::count_if(held_.begin(), held_.end(), [&](const Held& h) {
    return h.used && !h.lost && h.cap == redis_key;
  }));
}

absl::StatusOr<int64_t> RedisLeases::RunOn(const std::string& script,
                                           const std::string& redis_key) {
  if (Skipping()) return absl::UnavailableError("Redis was down moments ago");
  absl::StatusOr<RedisValue> r = link_->Eval(script, {redis_key}, {});
  if (!r.ok()) {
    if (r.status().code() == absl::StatusCode::kUnavailable) MarkDown();
    return r.status();
  }
  return Integer(*r);
}

void RedisLeases::NotifyReleased() {
  // Under the lock, so a waiter between its check and its wait is not missed.
  std::lock_guard<std::mutex> lock(mu_);
  released_.notify_all();
}

void RedisLeases::WaitForRelease(const std::atomic<uint32_t>& generation, uint32_t seen,
                                 absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const absl::Duration wait = std::clamp(timeout, absl::ZeroDuration(), absl::Hours(1));
  released_.wait_for(lock, absl::ToChronoNanoseconds(wait),
                     [&] { return generation.load(std::memory_order_acquire) != seen; });
}

uint32_t RedisLeases::held() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<uint32_t>(
      std::count_if(held_.begin(), held_.end(), [](const Held& h) { return h.used && !h.lost; }));
}

uint64_t RedisLeases::lost() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lost_;
}

void RedisLeases::Keep() {
  const absl::Duration period = std::max(options_.concurrency_lease_ttl / 3, absl::Milliseconds(1));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    keeper_cv_.wait_for(lock, absl::ToChronoNanoseconds(period), [this] { return stopping_; });
    if (stopping_) return;
    RefreshOnce(lock);
  }
}

// One refresh of every lease held, in one command. REQUIRES: `lock` holds
// mu_; it is let go during the command.
void RedisLeases::RefreshOnce(std::unique_lock<std::mutex>& lock) {
  // By cap, so the script gets each cap's members together.
  std::map<std::string, std::vector<std::string>> by_cap;
  for (const Held& h : held_) {
    if (h.used && !h.lost) by_cap[h.cap].push_back(h.member);
  }
  if (by_cap.empty()) return;
  std::vector<std::string> keys,
      args = {absl::StrCat(absl::ToInt64Milliseconds(options_.concurrency_lease_ttl))};
  std::vector<const std::string*> members;
  for (const auto& [cap, names] : by_cap) {
    keys.push_back(cap);
    args.push_back(absl::StrCat(names.size()));
    for (const std::string& m : names) {
      args.push_back(m);
      members.push_back(&m);
    }
  }
  keys.push_back(absl::StrCat("{", options_.redis.key_prefix, "}hosts"));
  lock.unlock();
  // The keeper probes even while calls leave Redis alone: it is what sees
  // Redis back.
  absl::StatusOr<RedisValue> r = keeper_link_->Eval(CapRefreshScript(), keys, args);
  lock.lock();
  if (!r.ok()) {
    if (r.status().code() == absl::StatusCode::kUnavailable) MarkDown();
    return;
  }
  if (r->type != RedisValue::Type::kArray || r->elements.size() != members.size() + 1) return;
  Answered(Integer(r->elements[0]));
  for (size_t i = 0; i < members.size(); ++i) {
    if (Integer(r->elements[i + 1]) == 1) continue;
    // Lost: matched by name, since the slot may have been released and
    // taken again while the command ran.
    for (Held& h : held_) {
      if (h.used && !h.lost && h.member == *members[i]) {
        h.lost = true;
        ++lost_;
      }
    }
  }
}

void RedisLeases::GiveBackAll() {
  std::map<std::string, std::vector<std::string>> by_cap;
  for (const Held& h : held_) {
    if (h.used && !h.lost) by_cap[h.cap].push_back(h.member);
  }
  for (const auto& [cap, names] : by_cap) {
    std::vector<std::string> argv = {"ZREM", cap};
    argv.insert(argv.end(), names.begin(), names.end());
    if (!link_->Command(argv).ok()) return;
  }
}

}  // namespace internal_cluster
}  // namespace sluice
