#include "sluice/lab/algorithms.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "sluice/fixed_point.h"

namespace sluice {

using internal_gcra::kMaxTau;
using internal_gcra::kUnitsPerNano;
using internal_gcra::ToUnits;
using internal_gcra::UnitsToNanosCeil;

namespace {

// ns since `epoch_ns`, never negative, saturating.
int64_t SinceEpoch(int64_t now_ns, int64_t epoch_ns) {
  int64_t since;
  if (__builtin_sub_overflow(now_ns, epoch_ns, &since)) {
    return now_ns < epoch_ns ? 0 : std::numeric_limits<int64_t>::max();
  }
  return std::max<int64_t>(since, 0);
}

// A window length in ns: positive, finite and at least 1 ns.
absl::StatusOr<int64_t> WindowNanos(absl::Duration window) {
  if (window <= absl::ZeroDuration() || window == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("window ", absl::FormatDuration(window), " must be positive and finite"));
  }
  const int64_t ns = absl::ToInt64Nanoseconds(window);
  if (ns < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("window ", absl::FormatDuration(window), " is shorter than 1ns"));
  }
  return ns;
}

absl::Status CheckLimit(uint64_t limit, uint64_t max) {
  if (limit == 0 || limit > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit ", limit, " must be from 1 to ", max, " permits per window"));
  }
  return absl::OkStatus();
}

}  // namespace

// PacerRef ---------------------------------------------------------------------

absl::StatusOr<PacerRef> PacerRef::Create(PacerCell* cell, const PacerConfig& config) {
  if (absl::Status s = ValidateBucketConfig({.rate = config.rate, .capacity = 1}); !s.ok()) {
    return s;
  }
  // Validated above: the interval fits in 64 bits.
  return PacerRef(cell, static_cast<int64_t>(internal_gcra::IntervalUnits(config.rate)),
                  config.epoch_ns);
}

Decision PacerRef::TryAcquire(uint64_t n, int64_t now_ns) const {
  int64_t cost;
  if (__builtin_mul_overflow(n, interval_, &cost) || cost > kMaxTau) [[unlikely]] {
    return {Outcome::kNeverFits, 0};
  }
  const int64_t now = ToUnits(now_ns, epoch_ns_);
  int64_t next = cell_->next_.load(std::memory_order_acquire);
  for (;;) {
    if (next > now) return {Outcome::kRefused, UnitsToNanosCeil(next - now)};
    if (cell_->next_.compare_exchange_weak(next, now + cost, std::memory_order_acq_rel,
                                           std::memory_order_acquire)) {
      return {Outcome::kGranted, 0};
    }
  }
}

int64_t PacerRef::IntervalNanos() const { return UnitsToNanosCeil(interval_); }

// FixedWindowRef ---------------------------------------------------------------

absl::StatusOr<FixedWindowRef> FixedWindowRef::Create(WindowCounterCell* cell,
                                                      const FixedWindowConfig& config) {
  if (absl::Status s = CheckLimit(config.limit, WindowCounterRef::kMaxAmount); !s.ok()) return s;
  absl::StatusOr<int64_t> window_ns = WindowNanos(config.window);
  if (!window_ns.ok()) return window_ns.status();
  return FixedWindowRef(cell, config, *window_ns);
}

int64_t FixedWindowRef::WindowOf(int64_t now_ns) const {
  return std::min(SinceEpoch(now_ns, epoch_ns_) / window_ns_, WindowCounterRef::kMaxWindow);
}

Decision FixedWindowRef::TryAcquire(uint64_t n, int64_t now_ns) const {
  if (n > static_cast<uint64_t>(limit_)) return {Outcome::kNeverFits, 0};
  if (counter_.TryAdd(WindowOf(now_ns), static_cast<int64_t>(n), limit_)) {
    return {Outcome::kGranted, 0};
  }
  return {Outcome::kRefused, window_ns_ - SinceEpoch(now_ns, epoch_ns_) % window_ns_};
}

// SlidingWindowRef -------------------------------------------------------------

namespace {

constexpr int kSlidingCountBits = SlidingWindowRef::kCountBits;
constexpr uint64_t kSlidingMask = SlidingWindowRef::kMaxLimit;

uint64_t PackSliding(int64_t window, int64_t prev, int64_t cur) {
  return static_cast<uint64_t>(window) << (2 * kSlidingCountBits) |
         static_cast<uint64_t>(prev) << kSlidingCountBits | static_cast<uint64_t>(cur);
}

}  // namespace

absl::StatusOr<SlidingWindowRef> SlidingWindowRef::Create(SlidingWindowCell* cell,
                                                          const SlidingWindowConfig& config) {
  if (absl::Status s = CheckLimit(config.limit, kMaxLimit); !s.ok()) return s;
  absl::StatusOr<int64_t> window_ns = WindowNanos(config.window);
  if (!window_ns.ok()) return window_ns.status();
  return SlidingWindowRef(cell, config, *window_ns);
}

SlidingWindowRef::View SlidingWindowRef::Read(uint64_t word, int64_t now_ns) const {
  const int64_t since = SinceEpoch(now_ns, epoch_ns_);
  int64_t window = since / window_ns_;
  int64_t elapsed = since % window_ns_;
  if (window > kMaxWindow) {
    window = kMaxWindow;
    elapsed = window_ns_ - 1;
  }
  const int64_t stored = static_cast<int64_t>(word >> (2 * kSlidingCountBits));
  const int64_t prev = static_cast<int64_t>((word >> kSlidingCountBits) & kSlidingMask);
  const int64_t cur = static_cast<int64_t>(word & kSlidingMask);
  // A `now` in an older window counts against the word's window, at its
  // start, where the previous window weighs most: stricter, never looser.
  if (window <= stored) return {stored, window == stored ? elapsed : 0, prev, cur};
  if (window == stored + 1) return {window, elapsed, cur, 0};
  return {window, elapsed, 0, 0};
}

int64_t SlidingWindowRef::Weighted(int64_t prev, int64_t elapsed) const {
  const __int128 product = static_cast<__int128>(prev) * (window_ns_ - elapsed);
  return static_cast<int64_t>((product + window_ns_ - 1) / window_ns_);
}

Decision SlidingWindowRef::TryAcquire(uint64_t n, int64_t now_ns) const {
  if (n > static_cast<uint64_t>(limit_)) return {Outcome::kNeverFits, 0};
  const int64_t need = static_cast<int64_t>(n);
  uint64_t word = cell_->word_.load(std::memory_order_acquire);
  for (;;) {
    const View v = Read(word, now_ns);
    if (Weighted(v.prev, v.elapsed) + v.cur + need > limit_) {
      // When does the estimate leave room? Within this window if the
      // current count allows (the weighted part only shrinks), else in the
      // next, where this window's count becomes the weighted one.
      const int64_t room = limit_ - v.cur - need;
      int64_t wait;
      if (room >= 0) {
        const int64_t reach =
            window_ns_ - static_cast<int64_t>(static_cast<__int128>(room) * window_ns_ / v.prev);
        wait = reach - v.elapsed;
      } else {
        const int64_t reach =
            window_ns_ -
            static_cast<int64_t>(static_cast<__int128>(limit_ - need) * window_ns_ / v.cur);
        wait = window_ns_ - v.elapsed + reach;
      }
      return {Outcome::kRefused, std::max<int64_t>(wait, 1)};
    }
    if (cell_->word_.compare_exchange_weak(word, PackSliding(v.window, v.prev, v.cur + need),
                                           std::memory_order_acq_rel, std::memory_order_acquire)) {
      return {Outcome::kGranted, 0};
    }
  }
}

int64_t SlidingWindowRef::Estimate(int64_t now_ns) const {
  const View v = Read(cell_->word_.load(std::memory_order_acquire), now_ns);
  return Weighted(v.prev, v.elapsed) + v.cur;
}

// AdaptiveRef ------------------------------------------------------------------

absl::StatusOr<AdaptiveRef> AdaptiveRef::Create(AdaptiveCell* cell, const AdaptiveConfig& config) {
  if (absl::Status s = config.initial.Validate(); !s.ok()) return s;
  const uint64_t permits = config.initial.permits();
  const uint64_t max_permits = config.max_permits != 0 ? config.max_permits : 2 * permits;
  constexpr uint64_t kMaxPermits = uint64_t{1} << 40;  // keeps thousandths and products in range
  if (config.burst == 0) {
    return absl::InvalidArgumentError("adaptive burst must be >= 1 permit");
  }
  if (config.min_permits == 0) {
    return absl::InvalidArgumentError("adaptive min_permits must be >= 1 per period");
  }
  if (max_permits > kMaxPermits || permits > kMaxPermits) {
    return absl::InvalidArgumentError(
        absl::StrCat("adaptive rates must be at most ", kMaxPermits, " permits per period"));
  }
  if (permits < config.min_permits || permits > max_permits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adaptive initial rate ", config.initial.ToString(), " is outside min_permits ",
        config.min_permits, " .. max_permits ", max_permits));
  }
  if (config.decrease_permille == 0 || config.decrease_permille >= 1000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adaptive decrease_permille ", config.decrease_permille, " must be from 1 to 999"));
  }
  if (config.cooldown < absl::ZeroDuration() || config.cooldown == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adaptive cooldown ", absl::FormatDuration(config.cooldown), " must be >= 0 and finite"));
  }
  // The slowest rate must hold the burst; the fastest must be a bucket.
  const absl::Duration period = config.initial.period();
  if (absl::Status s = ValidateBucketConfig(
          {.rate = Rate(config.min_permits, period), .capacity = config.burst});
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateBucketConfig({.rate = Rate(max_permits, period), .capacity = 1});
      !s.ok()) {
    return s;
  }
  AdaptiveConfig resolved = config;
  resolved.max_permits = max_permits;
  if (resolved.increase_permits == 0)
    resolved.increase_permits = std::max<uint64_t>(1, permits / 10);
  if (resolved.increase_permits > kMaxPermits) {
    return absl::InvalidArgumentError(
        absl::StrCat("adaptive increase_permits must be at most ", kMaxPermits, " per period"));
  }
  return AdaptiveRef(cell, resolved);
}

AdaptiveRef::AdaptiveRef(AdaptiveCell* cell, const AdaptiveConfig& config)
    : cell_(cell),
      period_ns_(absl::ToInt64Nanoseconds(config.initial.period())),
      initial_milli_(static_cast<int64_t>(config.initial.permits()) * 1000),
      min_milli_(static_cast<int64_t>(config.min_permits) * 1000),
      max_milli_(static_cast<int64_t>(config.max_permits) * 1000),
      increase_milli_(static_cast<int64_t>(config.increase_permits) * 1000),
      decrease_permille_(config.decrease_permille),
      cooldown_ns_(absl::ToInt64Nanoseconds(config.cooldown)),
      burst_(static_cast<int64_t>(config.burst)),
      epoch_ns_(config.epoch_ns) {}

int64_t AdaptiveRef::RateMilli() const {
  const int64_t m = cell_->rate_milli_.load(std::memory_order_acquire);
  return m == 0 ? initial_milli_ : m;
}

namespace {

// period / (m / 1000) in 1/16 ns, rounded up. Create bounded m to rates
// whose interval and burst span fit.
int64_t AdaptiveInterval(int64_t period_ns, int64_t milli) {
  const unsigned __int128 numerator =
      static_cast<unsigned __int128>(period_ns) * kUnitsPerNano * 1000 + milli - 1;
  if (numerator >> 64 == 0) {
    return static_cast<int64_t>(static_cast<uint64_t>(numerator) / static_cast<uint64_t>(milli));
  }
  return static_cast<int64_t>(numerator / static_cast<uint64_t>(milli));
}

}  // namespace

Decision AdaptiveRef::TryAcquire(uint64_t n, int64_t now_ns) const {
  const int64_t interval = AdaptiveInterval(period_ns_, RateMilli());
  const int64_t tau = burst_ * interval;
  int64_t cost;
  if (__builtin_mul_overflow(n, interval, &cost) || cost > tau) [[unlikely]] {
    return {Outcome::kNeverFits, 0};
  }
  const int64_t now = ToUnits(now_ns, epoch_ns_);
  int64_t tat = cell_->tat_.load(std::memory_order_acquire);
  for (;;) {
    const int64_t next = std::max(tat, now) + cost;
    const int64_t excess = next - now - tau;
    if (excess > 0) return {Outcome::kRefused, UnitsToNanosCeil(excess)};
    if (cell_->tat_.compare_exchange_weak(tat, next, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
      return {Outcome::kGranted, 0};
    }
  }
}

void AdaptiveRef::OnSuccess() const {
  int64_t stored = cell_->rate_milli_.load(std::memory_order_acquire);
  for (;;) {
    const int64_t m = stored == 0 ? initial_milli_ : stored;
    const int64_t step = std::max<int64_t>(
        1, static_cast<int64_t>(static_cast<__int128>(increase_milli_) * 1000 / m));
    const int64_t next = std::min(max_milli_, m + step);
    if (next == stored) return;
    if (cell_->rate_milli_.compare_exchange_weak(stored, next, std::memory_order_acq_rel,
                                                 std::memory_order_acquire)) {
      return;
    }
  }
}

bool AdaptiveRef::OnRateLimited(int64_t now_ns) const {
  int64_t next_allowed = cell_->next_decrease_.load(std::memory_order_acquire);
  for (;;) {
    if (now_ns < next_allowed) return false;
    int64_t until;
    if (__builtin_add_overflow(now_ns, cooldown_ns_, &until)) {
      until = std::numeric_limits<int64_t>::max();
    }
    if (cell_->next_decrease_.compare_exchange_weak(next_allowed, until, std::memory_order_acq_rel,
                                                    std::memory_order_acquire)) {
      break;
    }
  }
  int64_t stored = cell_->rate_milli_.load(std::memory_order_acquire);
  int64_t lowered;
  for (;;) {
    const int64_t m = stored == 0 ? initial_milli_ : stored;
    lowered = std::max(min_milli_, m * decrease_permille_ / 1000);
    if (cell_->rate_milli_.compare_exchange_weak(stored, lowered, std::memory_order_acq_rel,
                                                 std::memory_order_acquire)) {
      break;
    }
  }
  // The provider says its bucket is empty: empty ours too, so the lower rate
  // starts from nothing rather than from the burst the old rate left.
  const int64_t interval = AdaptiveInterval(period_ns_, lowered);
  const int64_t empty = ToUnits(now_ns, epoch_ns_) + burst_ * interval;
  int64_t tat = cell_->tat_.load(std::memory_order_acquire);
  while (tat < empty && !cell_->tat_.compare_exchange_weak(tat, empty, std::memory_order_acq_rel,
                                                           std::memory_order_acquire)) {
  }
  return true;
}

// SlidingLog -------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<SlidingLog>> SlidingLog::Create(const SlidingLogConfig& config) {
  if (absl::Status s = CheckLimit(config.limit, kMaxLimit); !s.ok()) return s;
  absl::StatusOr<int64_t> window_ns = WindowNanos(config.window);
  if (!window_ns.ok()) return window_ns.status();
  return std::unique_ptr<SlidingLog>(new SlidingLog(config.limit, *window_ns));
}

SlidingLog::SlidingLog(uint64_t limit, int64_t window_ns)
    : limit_(limit), window_ns_(window_ns), ring_(limit) {}

void SlidingLog::ExpireLocked(int64_t now_ns) {
  // An entry at t counts during [t, t + window).
  while (size_ > 0 && now_ns - ring_[head_].time_ns >= window_ns_) {
    total_ -= ring_[head_].permits;
    head_ = (head_ + 1) % ring_.size();
    --size_;
  }
}

Decision SlidingLog::TryAcquire(uint64_t n, int64_t now_ns) {
  if (n > limit_) return {Outcome::kNeverFits, 0};
  std::lock_guard<std::mutex> lock(mu_);
  // A stale `now` is taken as the latest one seen: never rewinds the log.
  now_ns = std::max(now_ns, last_ns_);
  ExpireLocked(now_ns);
  if (total_ + n <= limit_) {
    if (n == 0) return {Outcome::kGranted, 0};
    // Every entry holds >= 1 permit and the total is <= limit_, so the ring
    // of limit_ entries never overflows.
    ring_[(head_ + size_) % ring_.size()] = {now_ns, n};
    ++size_;
    total_ += n;
    last_ns_ = now_ns;
    return {Outcome::kGranted, 0};
  }
  // The exact wait: until the oldest entries that make room expire.
  const uint64_t must_free = total_ + n - limit_;
  uint64_t freed = 0;
  for (size_t i = 0; i < size_; ++i) {
    const Entry& e = ring_[(head_ + i) % ring_.size()];
    freed += e.permits;
    if (freed >= must_free) return {Outcome::kRefused, e.time_ns + window_ns_ - now_ns};
  }
  return {Outcome::kRefused, window_ns_};  // unreachable: n <= limit_
}

uint64_t SlidingLog::InWindow(int64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLocked(std::max(now_ns, last_ns_));
  return total_;
}

// Algorithm names ----------------------------------------------------------------

absl::string_view AlgorithmName(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::kTokenBucket:
      return "token-bucket";
    case Algorithm::kPacer:
      return "pacer";
    case Algorithm::kFixedWindow:
      return "fixed-window";
    case Algorithm::kSlidingLog:
      return "sliding-log";
    case Algorithm::kSlidingWindow:
      return "sliding-window";
    case Algorithm::kConcurrency:
      return "concurrency";
    case Algorithm::kAdaptive:
      return "adaptive";
    case Algorithm::kCustom:
      return "custom";
  }
  return "unknown";
}

absl::StatusOr<Algorithm> ParseAlgorithm(absl::string_view name) {
  for (Algorithm a : kAllAlgorithms) {
    if (AlgorithmName(a) == name) return a;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown algorithm '", name, "'; algorithms are ",
                   absl::StrJoin(kAllAlgorithms, ", ", [](std::string* out, Algorithm a) {
                     absl::StrAppend(out, AlgorithmName(a));
                   })));
}

// Limiter ------------------------------------------------------------------------

void Limiter::Release(const Admission&, int64_t) {}
void Limiter::OnResponse(bool, int64_t) {}

namespace {

Admission FromDecision(Decision d) { return {d.outcome, d.wait_ns}; }

class TokenBucketLimiter final : public Limiter {
 public:
  explicit TokenBucketLimiter(Clock clock) : ref_(&cell_, clock) {}
  absl::Status Init(const BucketConfig& config, int64_t now_ns) {
    return BucketRef::Init(&cell_, config, now_ns);
  }
  Admission TryAcquire(uint64_t n, int64_t now_ns) override {
    return FromDecision(ref_.TryAcquire(n, now_ns));
  }
  Algorithm algorithm() const override { return Algorithm::kTokenBucket; }

 private:
  BucketCell cell_;
  BucketRef ref_;
};

// A limiter over one Ref type and its cell, both owned.
template <typename Cell, typename Ref, Algorithm kAlgorithm>
class CellLimiter final : public Limiter {
 public:
  template <typename Config>
  static absl::StatusOr<std::unique_ptr<Limiter>> Create(const Config& config) {
    auto limiter = std::unique_ptr<CellLimiter>(new CellLimiter());
    absl::StatusOr<Ref> ref = Ref::Create(&limiter->cell_, config);
    if (!ref.ok()) return ref.status();
    limiter->ref_.emplace(*ref);
    return limiter;
  }
  Admission TryAcquire(uint64_t n, int64_t now_ns) override {
    return FromDecision(ref_->TryAcquire(n, now_ns));
  }
  void OnResponse(bool rate_limited, int64_t now_ns) override {
    if constexpr (kAlgorithm == Algorithm::kAdaptive) {
      if (rate_limited) {
        ref_->OnRateLimited(now_ns);
      } else {
        ref_->OnSuccess();
      }
    }
  }
  Algorithm algorithm() const override { return kAlgorithm; }

 private:
  CellLimiter() = default;
  Cell cell_;
  std::optional<Ref> ref_;
};

class SlidingLogLimiter final : public Limiter {
 public:
  explicit SlidingLogLimiter(std::unique_ptr<SlidingLog> log) : log_(std::move(log)) {}
  Admission TryAcquire(uint64_t n, int64_t now_ns) override {
    return FromDecision(log_->TryAcquire(n, now_ns));
  }
  Algorithm algorithm() const override { return Algorithm::kSlidingLog; }

 private:
  std::unique_ptr<SlidingLog> log_;
};

class ConcurrencyLimiter final : public Limiter {
 public:
  explicit ConcurrencyLimiter(uint32_t max_in_flight)
      : words_(max_in_flight), leases_(words_.data(), max_in_flight, &generation_) {}
  // Counts calls, whatever their cost.
  Admission TryAcquire(uint64_t, int64_t) override {
    const int32_t lease = leases_.TryAcquire(kTag, hint_.fetch_add(1, std::memory_order_relaxed));
    if (lease < 0) return {Outcome::kRefused, kWaitForRelease};
    return {Outcome::kGranted, 0, lease};
  }
  void Release(const Admission& admission, int64_t) override {
    if (admission.granted() && admission.lease >= 0) {
      leases_.Release(static_cast<uint32_t>(admission.lease), kTag);
    }
  }
  Algorithm algorithm() const override { return Algorithm::kConcurrency; }

 private:
  static constexpr uint64_t kTag = 1;  // one process: any nonzero tag
  std::vector<std::atomic<uint64_t>> words_;
  std::atomic<uint32_t> generation_{0};
  std::atomic<uint32_t> hint_{0};
  LeaseSetRef leases_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Limiter>> Limiter::Create(const LimiterConfig& config,
                                                         int64_t now_ns) {
  if (absl::Status s = config.rate.Validate(); !s.ok()) return s;
  const uint64_t permits = config.rate.permits();
  const absl::Duration period = config.rate.period();
  switch (config.algorithm) {
    case Algorithm::kTokenBucket: {
      auto limiter = std::make_unique<TokenBucketLimiter>(Clock::Monotonic());
      const BucketConfig bucket{.rate = config.rate,
                                .capacity = config.burst != 0 ? config.burst : permits};
      if (absl::Status s = limiter->Init(bucket, now_ns); !s.ok()) return s;
      return limiter;
    }
    case Algorithm::kPacer:
      return CellLimiter<PacerCell, PacerRef, Algorithm::kPacer>::Create(
          PacerConfig{.rate = config.rate, .epoch_ns = now_ns});
    case Algorithm::kFixedWindow:
      return CellLimiter<WindowCounterCell, FixedWindowRef, Algorithm::kFixedWindow>::Create(
          FixedWindowConfig{.limit = permits, .window = period, .epoch_ns = now_ns});
    case Algorithm::kSlidingWindow:
      return CellLimiter<SlidingWindowCell, SlidingWindowRef, Algorithm::kSlidingWindow>::Create(
          SlidingWindowConfig{.limit = permits, .window = period, .epoch_ns = now_ns});
    case Algorithm::kSlidingLog: {
      absl::StatusOr<std::unique_ptr<SlidingLog>> log =
          SlidingLog::Create({.limit = permits, .window = period});
      if (!log.ok()) return log.status();
      return std::make_unique<SlidingLogLimiter>(*std::move(log));
    }
    case Algorithm::kConcurrency:
      if (config.max_in_flight == 0) {
        return absl::InvalidArgumentError("max_in_flight must be >= 1 call");
      }
      return std::make_unique<ConcurrencyLimiter>(config.max_in_flight);
    case Algorithm::kAdaptive: {
      AdaptiveConfig adaptive = config.adaptive;
      adaptive.initial = config.rate;
      adaptive.epoch_ns = now_ns;
      return CellLimiter<AdaptiveCell, AdaptiveRef, Algorithm::kAdaptive>::Create(adaptive);
    }
    case Algorithm::kCustom:
      return absl::InvalidArgumentError(
          "custom: a Limiter of a user's own, which Limiter::Create does not build");
  }
  return absl::InvalidArgumentError("unknown algorithm");
}

}  // namespace sluice
