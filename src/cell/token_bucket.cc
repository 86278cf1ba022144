#include "sluice/token_bucket.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "sluice/pool.h"
#include "src/cell/bucket_params.h"

namespace sluice {

using internal_gcra::Derive;
using internal_gcra::Derived;
using internal_gcra::kMaxSinceEpochNs;
using internal_gcra::kMaxTat;
using internal_gcra::kMaxTau;
using internal_gcra::kUnitsPerNano;
using internal_gcra::ToUnits;

// The per-permit interval, period / permits in 1/16 ns, rounded up so that
// rounding can only slow the bucket, never speed it up.
absl::StatusOr<Derived> internal_gcra::Derive(const BucketConfig& config) {
  if (absl::Status s = config.rate.Validate(); !s.ok()) return s;
  if (config.capacity == 0) {
    return absl::InvalidArgumentError("bucket capacity must be >= 1 permit");
  }
  const absl::Duration max_period = absl::Nanoseconds(kMaxTau / kUnitsPerNano);
  if (config.rate.period() > max_period) {
    return absl::InvalidArgumentError(absl::StrCat("rate ", config.rate.ToString(),
                                                   ": the period must be at most ",
                                                   absl::FormatDuration(max_period)));
  }
  const __int128 interval = internal_gcra::IntervalUnits(config.rate);
  if (static_cast<__int128>(absl::ToInt64Nanoseconds(config.rate.period())) * kUnitsPerNano <
      config.rate.permits()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rate ", config.rate.ToString(), " is faster than the fastest bucket, 16e9 permits/s"));
  }
  const __int128 tau = interval * static_cast<__int128>(config.capacity);
  if (tau > kMaxTau) {
    return absl::InvalidArgumentError(absl::StrCat(
        "capacity ", config.capacity, " at rate ", config.rate.ToString(), " spans ",
        absl::FormatDuration(absl::Nanoseconds(static_cast<double>(tau / kUnitsPerNano))),
        " of refill, over the longest burst a bucket can hold (",
        absl::FormatDuration(absl::Nanoseconds(kMaxTau / kUnitsPerNano)), ")"));
  }
  return Derived{static_cast<int64_t>(interval), static_cast<int64_t>(tau)};
}

absl::Status ValidateBucketConfig(const BucketConfig& config) { return Derive(config).status(); }

BucketConfig LowerTo(const BucketConfig& config, const Rate& rate) {
  if (!rate.Validate().ok() || !config.rate.Validate().ok()) return config;
  // Both rates per nanosecond, cross-multiplied: rate / config.rate.
  const __int128 num =
      static_cast<__int128>(rate.permits()) * absl::ToInt64Nanoseconds(config.rate.period());
  const __int128 den =
      static_cast<__int128>(config.rate.permits()) * absl::ToInt64Nanoseconds(rate.period());
  if (num >= den) return config;
  const __int128 burst = static_cast<__int128>(config.capacity) * num / den;
  BucketConfig lowered{rate, static_cast<uint64_t>(std::max<__int128>(1, burst))};
  return ValidateBucketConfig(lowered).ok() ? lowered : config;
}

BucketConfig CapBurst(const BucketConfig& config, uint64_t burst) {
  if (burst == 0 || burst >= config.capacity) return config;
  return {config.rate, burst};
}

const char* PressureName(Pressure p) {
  switch (p) {
    case Pressure::kLow:
      return "low";
    case Pressure::kMedium:
      return "medium";
    case Pressure::kHigh:
      return "high";
  }
  return "unknown";
}

absl::Status BucketRef::Init(BucketCell* cell, const BucketConfig& config, int64_t now_ns) {
  absl::StatusOr<Derived> d = Derive(config);
  if (!d.ok()) return d.status();
  cell->Reset(d->interval, d->tau, now_ns, 0);  // TAT = now: full
  return absl::OkStatus();
}

void BucketCell::Reset(int64_t interval, int64_t tau, int64_t epoch_ns, int64_t tat) {
  for (Params& p : params_) {
    p.interval.store(interval, std::memory_order_relaxed);
    p.tau.store(tau, std::memory_order_relaxed);
    p.epoch_ns.store(epoch_ns, std::memory_order_relaxed);
  }
  hold_until_ns_.store(std::numeric_limits<int64_t>::min(), std::memory_order_relaxed);
  // Release publishes the parameters with the word; slot 0 in use.
  word_.store(tat << 1, std::memory_order_release);
}

absl::Status BucketRef::Acquire(uint64_t n, absl::Duration timeout) const {
  const int64_t now = clock_.Now();
  int64_t max_wait = timeout == absl::InfiniteDuration()
                         ? std::numeric_limits<int64_t>::max()
                         : absl::ToInt64Nanoseconds(std::max(timeout, absl::ZeroDuration()));
  // A pool refills only by Credit: a wait for it would be a wait into debt.
  if (PoolRef::IsPool(*cell_)) max_wait = 0;
  const Decision d = Reserve(n, max_wait, now);
  switch (d.outcome) {
    case Outcome::kGranted:
      if (d.wait_ns > 0) clock_.SleepUntil(now + d.wait_ns);
      return absl::OkStatus();
    case Outcome::kRefused:
      return absl::DeadlineExceededError(absl::StrCat(
          n, " permits would be available in ", absl::FormatDuration(absl::Nanoseconds(d.wait_ns)),
          ", past the timeout of ", absl::FormatDuration(timeout)));
    case Outcome::kNeverFits:
      break;
  }
  return absl::OutOfRangeError(
      absl::StrCat(n, " permits can never fit in a bucket of capacity ", Capacity()));
}

namespace {

// The TAT below which a hold that has not ended yet keeps the word: its first
// permit comes back at `until`, so TAT = until + tau - interval (units since
// `epoch`). 0 when no hold is in force at `now_ns`.
int64_t HeldTat(int64_t hold_until_ns, int64_t now_ns, int64_t epoch_ns, int64_t interval,
                int64_t tau) {
  if (hold_until_ns <= now_ns) return 0;
  return std::min(ToUnits(hold_until_ns, epoch_ns) + tau - interval, kMaxTat);
}

// `cost` units taken at `taken` terms, as units of a bucket whose span is now
// `tau`: the same share of the span, rounded down.
int64_t ShareNow(__int128 cost, const Terms& taken, int64_t tau) {
  if (taken.tau <= 0) return 0;
  const __int128 now_units = cost * tau / taken.tau;
  return static_cast<int64_t>(std::min<__int128>(now_units, kMaxTat));
}

// n permits taken at `taken` terms from a pool whose interval is now
// `interval`: a pool counts permits whatever its configuration (pool.h), so
// all n come back, as units of the pool now.
int64_t PermitsNow(uint64_t n, const Terms& taken, int64_t interval) {
  if (taken.tau <= 0) return 0;
  const __int128 now_units = static_cast<__int128>(n) * std::max<int64_t>(interval, 0);
  return static_cast<int64_t>(std::min<__int128>(now_units, kMaxTat));
}

}  // namespace

void BucketRef::Refund(uint64_t n, const Terms& taken, int64_t now_ns) const {
  const __int128 cost = static_cast<__int128>(n) * std::max<int64_t>(taken.interval, 0);
  int64_t word = cell_->word_.load(std::memory_order_acquire);
  for (;;) {
    const BucketCell::Params& p = cell_->params_[word & 1];
    const int64_t interval = p.interval.load(std::memory_order_relaxed);
    const int64_t tau = p.tau.load(std::memory_order_relaxed);
    const int64_t epoch = p.epoch_ns.load(std::memory_order_relaxed);
    const int64_t now = ToUnits(now_ns, epoch);
    // A full bucket is TAT <= now; a held one stays held: never go below that.
    const int64_t floor =
        std::max(now, HeldTat(cell_->hold_until_ns_.load(std::memory_order_acquire), now_ns, epoch,
                              interval, tau));
    const int64_t tat = word >> 1;
    if (tat <= floor) return;  // nothing to give back
    const int64_t back = epoch == internal_gcra::kPoolEpoch ? PermitsNow(n, taken, interval)
                                                            : ShareNow(cost, taken, tau);
    const int64_t next = std::max(tat - back, floor);
    if (cell_->word_.compare_exchange_weak(word, (next << 1) | (word & 1),
                                           std::memory_order_acq_rel, std::memory_order_acquire)) {
      return;
    }
  }
}

void BucketRef::Debit(uint64_t n, int64_t now_ns) const {
  int64_t word = cell_->word_.load(std::memory_order_acquire);
  for (;;) {
    const BucketCell::Params& p = cell_->params_[word & 1];
    const int64_t interval = p.interval.load(std::memory_order_relaxed);
    const int64_t now = ToUnits(now_ns, p.epoch_ns.load(std::memory_order_relaxed));
    const int64_t base = std::max(word >> 1, now);
    int64_t cost;
    if (__builtin_mul_overflow(n, interval, &cost)) cost = kMaxTat;
    const int64_t next = cost > kMaxTat - base ? kMaxTat : base + cost;  // saturate
    if (cell_->word_.compare_exchange_weak(word, (next << 1) | (word & 1),
                                           std::memory_order_acq_rel, std::memory_order_acquire)) {
      return;
    }
  }
}

void BucketRef::HoldUntil(int64_t until_ns, int64_t now_ns) const {
  // A pool's time stands still: a hold could only throw leased permits away.
  if (PoolRef::IsPool(*cell_)) return;
  // Record the deadline first, so that a refund or reconfiguration racing the
  // word's update below already respects it.
  int64_t recorded = cell_->hold_until_ns_.load(std::memory_order_acquire);
  while (recorded < until_ns && !cell_->hold_until_ns_.compare_exchange_weak(
                                    recorded, until_ns, std::memory_order_acq_rel)) {
  }
  int64_t word = cell_->word_.load(std::memory_order_acquire);
  for (;;) {
    const BucketCell::Params& p = cell_->params_[word & 1];
    const int64_t epoch = p.epoch_ns.load(std::memory_order_relaxed);
    const int64_t interval = p.interval.load(std::memory_order_relaxed);
    const int64_t tau = p.tau.load(std::memory_order_relaxed);
    const int64_t held = HeldTat(until_ns, now_ns, epoch, interval, tau);
    if ((word >> 1) >= held) return;
    if (cell_->word_.compare_exchange_weak(word, (held << 1) | (word & 1),
                                           std::memory_order_acq_rel, std::memory_order_acquire)) {
      return;
    }
  }
}

int64_t BucketRef::Available(int64_t now_ns) const {
  const int64_t word = cell_->word_.load(std::memory_order_acquire);
  const BucketCell::Params& p = cell_->params_[word & 1];
  const int64_t interval = p.interval.load(std::memory_order_relaxed);
  const int64_t tau = p.tau.load(std::memory_order_relaxed);
  const int64_t now = ToUnits(now_ns, p.epoch_ns.load(std::memory_order_relaxed));
  const int64_t ahead = std::max<int64_t>(0, (word >> 1) - now);
  // A cell with zero parameters (never initialized, or wiped) has nothing.
  if (interval <= 0) return 0;
  return ahead >= tau ? 0 : (tau - ahead) / interval;
}

int64_t BucketRef::Capacity() const {
  const int64_t word = cell_->word_.load(std::memory_order_acquire);
  const BucketCell::Params& p = cell_->params_[word & 1];
  const int64_t interval = p.interval.load(std::memory_order_relaxed);
  return interval <= 0 ? 0 : p.tau.load(std::memory_order_relaxed) / interval;
}

Pressure PressureOf(int64_t available_permits, int64_t capacity_permits) {
  const __int128 available = available_permits;
  const __int128 capacity = capacity_permits;
  if (capacity <= 0) return Pressure::kHigh;  // a cell with zero parameters
  if (available * 10 >= capacity * 6) return Pressure::kLow;
  if (available * 10 >= capacity * 3) return Pressure::kMedium;
  return Pressure::kHigh;
}

Pressure BucketRef::GetPressure(int64_t now_ns) const {
  return PressureOf(Available(now_ns), Capacity());
}

int64_t BucketRef::FullForNanos(int64_t now_ns) const {
  const int64_t word = cell_->word_.load(std::memory_order_acquire);
  const BucketCell::Params& p = cell_->params_[word & 1];
  const int64_t now = ToUnits(now_ns, p.epoch_ns.load(std::memory_order_relaxed));
  const int64_t tat = word >> 1;
  return tat >= now ? 0 : (now - tat) >> internal_gcra::kFracBits;
}

int BucketRef::ParamSlot(const BucketCell& cell) {
  return static_cast<int>(cell.word_.load(std::memory_order_acquire) & 1);
}

absl::Status BucketRef::ValidateParamSlot(const BucketCell& cell, int slot,
                                          const BucketConfig& config) {
  absl::StatusOr<Derived> d = Derive(config);
  if (!d.ok()) return absl::FailedPreconditionError(d.status().message());
  const BucketCell::Params& p = cell.params_[slot & 1];
  const int64_t interval = p.interval.load(std::memory_order_relaxed);
  const int64_t tau = p.tau.load(std::memory_order_relaxed);
  if (interval != d->interval || tau != d->tau) {
    return absl::FailedPreconditionError(absl::StrCat(
        "bucket parameters (interval ", interval, ", span ", tau,
        " in 1/16 ns) do not match its configuration ", config.rate.ToString(), " burst ",
        config.capacity, " (interval ", d->interval, ", span ", d->tau, ")"));
  }
  if (p.epoch_ns.load(std::memory_order_relaxed) < 0) {
    return absl::FailedPreconditionError("bucket epoch is negative");
  }
  return absl::OkStatus();
}

absl::Status BucketRef::Validate(const BucketCell& cell, const BucketConfig& config) {
  const int64_t word = cell.word_.load(std::memory_order_acquire);
  if (word < 0) {
    return absl::FailedPreconditionError(absl::StrCat("bucket word ", word, " is negative"));
  }
  return ValidateParamSlot(cell, static_cast<int>(word & 1), config);
}

int BucketCell::StageParams(int64_t word, int64_t interval, int64_t tau, int64_t epoch_ns) {
  // The idle slot may still be read by an acquirer holding a word two
  // generations old; the release fence pairs with its acquire fence so that
  // it sees the word move and retries rather than trusting a torn read.
  std::atomic_thread_fence(std::memory_order_release);
  const int slot = static_cast<int>(word & 1) ^ 1;
  params_[slot].interval.store(interval, std::memory_order_relaxed);
  params_[slot].tau.store(tau, std::memory_order_relaxed);
  params_[slot].epoch_ns.store(epoch_ns, std::memory_order_relaxed);
  return slot;
}

absl::Status BucketRef::Reconfigure(BucketCell* cell, const BucketConfig& config, int64_t now_ns) {
  if (PoolRef::IsPool(*cell)) return PoolRef::Reconfigure(cell, config).status();
  absl::StatusOr<Derived> d = Derive(config);
  if (!d.ok()) return d.status();
  int64_t word = cell->word_.load(std::memory_order_acquire);
  const BucketCell::Params& old = cell->params_[word & 1];
  const int64_t old_tau = old.tau.load(std::memory_order_relaxed);
  const int64_t old_epoch = old.epoch_ns.load(std::memory_order_relaxed);
  // Move the epoch forward once half the word's range is used, so a bucket
  // that lives for years keeps counting.
  const int64_t epoch = now_ns - old_epoch > kMaxSinceEpochNs / 2 ? now_ns : old_epoch;
  const int slot = cell->StageParams(word, d->interval, d->tau, epoch);

  const int64_t old_now = ToUnits(now_ns, old_epoch);
  const int64_t new_now = ToUnits(now_ns, epoch);
  // A hold in force keeps its deadline: its part of the TAT becomes the same
  // hold under the new parameters; only what is owed beyond it is rescaled.
  const int64_t hold_until = cell->hold_until_ns_.load(std::memory_order_acquire);
  const int64_t old_base =
      std::max(old_now, HeldTat(hold_until, now_ns, old_epoch,
                                old.interval.load(std::memory_order_relaxed), old_tau));
  const int64_t new_base =
      std::max(new_now, HeldTat(hold_until, now_ns, epoch, d->interval, d->tau));
  for (;;) {
    // How far the TAT is ahead of now (or of the hold), scaled from the old
    // span to the new one: the same fraction of capacity stays available (or
    // owed). A cell with zero parameters counts as full.
    const __int128 ahead = std::max<int64_t>(0, (word >> 1) - old_base);
    const __int128 scaled = old_tau > 0 ? (ahead * d->tau + old_tau - 1) / old_tau : 0;
    const int64_t next = static_cast<int64_t>(std::min<__int128>(new_base + scaled, kMaxTat));
    if (cell->word_.compare_exchange_weak(word, (next << 1) | slot, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
      return absl::OkStatus();
    }
  }
}

absl::StatusOr<std::unique_ptr<TokenBucket>> TokenBucket::Create(const BucketConfig& config,
                                                                 Clock clock) {
  if (absl::Status s = ValidateBucketConfig(config); !s.ok()) return s;
  return std::unique_ptr<TokenBucket>(new TokenBucket(config, clock));
}

TokenBucket::TokenBucket(const BucketConfig& config, Clock clock)
    : ref_(&cell_, clock), config_(config) {
  // Validated by Create, so Init cannot fail.
  BucketRef::Init(&cell_, config, clock.Now()).IgnoreError();
}

absl::Status TokenBucket::Reconfigure(const BucketConfig& config, int64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status s = BucketRef::Reconfigure(&cell_, config, now_ns);
  if (s.ok()) config_ = config;
  return s;
}

BucketConfig TokenBucket::config() const {
  std::lock_guard<std::mutex> lock(mu_);
  return config_;
}

}  // namespace sluice
