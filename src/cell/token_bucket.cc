#include "sluice/token_bucket.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace sluice {

using internal_gcra::kMaxSinceEpochNs;
using internal_gcra::kMaxTat;
using internal_gcra::kMaxTau;
using internal_gcra::kUnitsPerNano;
using internal_gcra::ToUnits;

namespace {

struct Derived {
  int64_t interval;  // 1/16 ns per permit
  int64_t tau;       // capacity * interval
};

// The per-permit interval, period / permits in 1/16 ns, rounded up so that
// rounding can only slow the bucket, never speed it up.
absl::StatusOr<Derived> Derive(const BucketConfig& config) {
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

}  // namespace

absl::Status ValidateBucketConfig(const BucketConfig& config) { return Derive(config).status(); }

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
  for (BucketCell::Params& p : cell->params_) {
    p.interval.store(d->interval, std::memory_order_relaxed);
    p.tau.store(d->tau, std::memory_order_relaxed);
    p.epoch_ns.store(now_ns, std::memory_order_relaxed);
  }
  // TAT = now: full. Release publishes the parameters with the word.
  cell->word_.store(0, std::memory_order_release);
  return absl::OkStatus();
}

absl::Status BucketRef::Acquire(uint64_t n, absl::Duration timeout) const {
  const int64_t now = clock_.Now();
  const int64_t max_wait = timeout == absl::InfiniteDuration()
                               ? std::numeric_limits<int64_t>::max()
                               : absl::ToInt64Nanoseconds(std::max(timeout, absl::ZeroDuration()));
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

void BucketRef::Refund(uint64_t n, int64_t now_ns) const {
  int64_t word = cell_->word_.load(std::memory_order_acquire);
  for (;;) {
    const BucketCell::Params& p = cell_->params_[word & 1];
    const int64_t interval = p.interval.load(std::memory_order_relaxed);
    const int64_t now = ToUnits(now_ns, p.epoch_ns.load(std::memory_order_relaxed));
    const int64_t tat = word >> 1;
    if (tat <= now) return;  // already full: nothing to give back
    int64_t cost;
    if (__builtin_mul_overflow(n, interval, &cost)) cost = kMaxTat;
    // A full bucket is TAT <= now; never go below that.
    const int64_t next = std::max(tat - cost, now);
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
  int64_t word = cell_->word_.load(std::memory_order_acquire);
  for (;;) {
    const BucketCell::Params& p = cell_->params_[word & 1];
    const int64_t epoch = p.epoch_ns.load(std::memory_order_relaxed);
    const int64_t interval = p.interval.load(std::memory_order_relaxed);
    const int64_t tau = p.tau.load(std::memory_order_relaxed);
    // The first permit comes back at `until`: TAT = until + tau - interval.
    const int64_t until = ToUnits(std::max(until_ns, now_ns), epoch);
    const int64_t held = std::min(until + tau - interval, kMaxTat);
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
  return ahead >= tau ? 0 : (tau - ahead) / interval;
}

int64_t BucketRef::Capacity() const {
  const int64_t word = cell_->word_.load(std::memory_order_acquire);
  const BucketCell::Params& p = cell_->params_[word & 1];
  return p.tau.load(std::memory_order_relaxed) / p.interval.load(std::memory_order_relaxed);
}

Pressure BucketRef::GetPressure(int64_t now_ns) const {
  const __int128 available = Available(now_ns);
  const __int128 capacity = Capacity();
  if (available * 10 >= capacity * 6) return Pressure::kLow;
  if (available * 10 >= capacity * 3) return Pressure::kMedium;
  return Pressure::kHigh;
}

int64_t BucketRef::FullForNanos(int64_t now_ns) const {
  const int64_t word = cell_->word_.load(std::memory_order_acquire);
  const BucketCell::Params& p = cell_->params_[word & 1];
  const int64_t now = ToUnits(now_ns, p.epoch_ns.load(std::memory_order_relaxed));
  const int64_t tat = word >> 1;
  return tat >= now ? 0 : (now - tat) >> internal_gcra::kFracBits;
}

absl::Status BucketRef::Validate(const BucketCell& cell, const BucketConfig& config) {
  absl::StatusOr<Derived> d = Derive(config);
  if (!d.ok()) return absl::FailedPreconditionError(d.status().message());
  const int64_t word = cell.word_.load(std::memory_order_acquire);
  if (word < 0) {
    return absl::FailedPreconditionError(absl::StrCat("bucket word ", word, " is negative"));
  }
  const BucketCell::Params& p = cell.params_[word & 1];
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

absl::Status BucketRef::Reconfigure(const BucketConfig& config, int64_t now_ns) const {
  absl::StatusOr<Derived> d = Derive(config);
  if (!d.ok()) return d.status();
  int64_t word = cell_->word_.load(std::memory_order_acquire);
  const int slot = static_cast<int>(word & 1) ^ 1;
  const BucketCell::Params& old = cell_->params_[word & 1];
  const int64_t old_tau = old.tau.load(std::memory_order_relaxed);
  const int64_t old_epoch = old.epoch_ns.load(std::memory_order_relaxed);
  // Move the epoch forward once half the word's range is used, so a bucket
  // that lives for years keeps counting.
  const int64_t epoch = now_ns - old_epoch > kMaxSinceEpochNs / 2 ? now_ns : old_epoch;

  // The idle slot may still be read by an acquirer holding a word two
  // generations old; the release fence pairs with its acquire fence so that
  // it sees the word move and retries rather than trusting a torn read.
  std::atomic_thread_fence(std::memory_order_release);
  BucketCell::Params& next_params = cell_->params_[slot];
  next_params.interval.store(d->interval, std::memory_order_relaxed);
  next_params.tau.store(d->tau, std::memory_order_relaxed);
  next_params.epoch_ns.store(epoch, std::memory_order_relaxed);

  const int64_t old_now = ToUnits(now_ns, old_epoch);
  const int64_t new_now = ToUnits(now_ns, epoch);
  for (;;) {
    // How far the TAT is ahead of now, scaled from the old span to the new
    // one: the same fraction of capacity stays available (or owed).
    const __int128 ahead = std::max<int64_t>(0, (word >> 1) - old_now);
    const __int128 scaled = (ahead * d->tau + old_tau - 1) / old_tau;
    const int64_t next = static_cast<int64_t>(std::min<__int128>(new_now + scaled, kMaxTat));
    if (cell_->word_.compare_exchange_weak(word, (next << 1) | slot, std::memory_order_acq_rel,
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
    : BucketRef(&cell_, clock), config_(config) {
  // Validated by Create, so Init cannot fail.
  BucketRef::Init(&cell_, config, clock.Now()).IgnoreError();
}

absl::Status TokenBucket::Reconfigure(const BucketConfig& config, int64_t now_ns) {
  absl::MutexLock lock(&mu_);
  absl::Status s = BucketRef::Reconfigure(config, now_ns);
  if (s.ok()) config_ = config;
  return s;
}

BucketConfig TokenBucket::config() const {
  absl::MutexLock lock(&mu_);
  return config_;
}

}  // namespace sluice
