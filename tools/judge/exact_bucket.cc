#include "tools/judge/exact_bucket.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>

#include "absl/strings/str_cat.h"

namespace sluice {
namespace {

using Parts = __int128;
using UnsignedParts = unsigned __int128;

// The deepest debt kept: Debit saturates here rather than wrapping.
constexpr Parts kMinLevelParts = -(Parts{1} << 126);

absl::Status OutOfRange(const char* field, const absl::AlphaNum& got) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be in [1, 2^62], got ", got));
}

int64_t SaturateToInt64(Parts ns) {
  return static_cast<int64_t>(std::min<Parts>(ns, std::numeric_limits<int64_t>::max()));
}

}  // namespace

absl::Status ExactBucket::Validate(const ExactBucketConfig& config) {
  constexpr uint64_t kMax = kMaxExactBucketParameter;
  if (config.permits < 1 || config.permits > kMax) return OutOfRange("permits", config.permits);
  if (config.period_ns < 1 || static_cast<uint64_t>(config.period_ns) > kMax) {
    return OutOfRange("period_ns", config.period_ns);
  }
  if (config.capacity < 1 || config.capacity > kMax) return OutOfRange("capacity", config.capacity);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ExactBucket>> ExactBucket::Create(const ExactBucketConfig& config,
                                                                 int64_t now_ns) {
  if (absl::Status s = Validate(config); !s.ok()) return s;
  return std::unique_ptr<ExactBucket>(new ExactBucket(config, now_ns));
}

ExactBucket::ExactBucket(const ExactBucketConfig& config, int64_t now_ns)
    : config_(config),
      capacity_parts_(Parts{config.capacity} * config.period_ns),
      level_(capacity_parts_),
      last_ns_(now_ns) {}

ExactBucket::Parts ExactBucket::LevelAt(int64_t now_ns) const {
  if (now_ns <= last_ns_) return level_;
  // The difference of two int64s fits in a uint64 once the order is known.
  const UnsignedParts elapsed_ns = static_cast<uint64_t>(now_ns) - static_cast<uint64_t>(last_ns_);
  const UnsignedParts gain = elapsed_ns * config_.permits;                          // < 2^126
  const UnsignedParts room = static_cast<UnsignedParts>(capacity_parts_ - level_);  // < 2^127
  return gain >= room ? capacity_parts_ : level_ + static_cast<Parts>(gain);
}

void ExactBucket::AdvanceTo(int64_t now_ns) {
  level_ = LevelAt(now_ns);
  last_ns_ = std::max(last_ns_, now_ns);
}

int64_t ExactBucket::WaitFor(Parts shortfall, int64_t now_ns) const {
  if (shortfall <= 0) return 0;
  const Parts permits = config_.permits;
  Parts wait_ns = (shortfall + permits - 1) / permits;
  // The level is last_ns_'s: a caller whose now is older waits the gap too.
  if (now_ns < last_ns_) wait_ns += Parts{last_ns_} - now_ns;
  return SaturateToInt64(wait_ns);
}

ExactBucket::TakeResult ExactBucket::TryTake(uint64_t n, int64_t now_ns) {
  absl::MutexLock lock(&mu_);
  AdvanceTo(now_ns);
  if (n > config_.capacity) return {.never_fits = true};
  const Parts cost = Parts{n} * config_.period_ns;  // <= 2^124
  if (level_ >= cost) {
    level_ -= cost;
    return {.taken = true};
  }
  return {.wait_ns = WaitFor(cost - level_, now_ns)};
}

void ExactBucket::Refund(uint64_t n, int64_t now_ns) {
  absl::MutexLock lock(&mu_);
  AdvanceTo(now_ns);
  const Parts back = Parts{n} * config_.period_ns;  // < 2^126
  level_ = back >= capacity_parts_ - level_ ? capacity_parts_ : level_ + back;
}

void ExactBucket::Debit(uint64_t n, int64_t now_ns) {
  absl::MutexLock lock(&mu_);
  AdvanceTo(now_ns);
  // Both terms are within 2^126 of zero, so the difference cannot overflow.
  level_ = std::max(level_ - Parts{n} * config_.period_ns, kMinLevelParts);
}

int64_t ExactBucket::Available(int64_t now_ns) const {
  absl::ReaderMutexLock lock(&mu_);
  const Parts level = LevelAt(now_ns);
  return level <= 0 ? 0 : static_cast<int64_t>(level / config_.period_ns);
}

int64_t ExactBucket::NanosUntilFull(int64_t now_ns) const {
  absl::ReaderMutexLock lock(&mu_);
  return WaitFor(capacity_parts_ - LevelAt(now_ns), now_ns);
}

}  // namespace sluice
