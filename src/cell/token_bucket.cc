#include "sluice/token_bucket.h"

#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "sluice/pool.h"
#include "src/cell/bucket_params.h"
#include "src/cell/wide_math.h"

namespace sluice {

using internal_cell::Derive;
using internal_cell::Derived;
using internal_cell::kMaxCapacity;
using internal_cell::kMaxInterval;
using internal_cell::kMaxTat;
using internal_cell::kMaxUnitsPerNs;
using internal_cell::MulDiv;
using internal_cell::u128;

namespace {

// The longest span of refill a burst may hold, about 2.28 years.
constexpr int64_t kMaxSpanNs = int64_t{1} << 56;

}  // namespace

absl::StatusOr<Derived> internal_cell::Derive(const BucketConfig& config) {
  if (absl::Status s = config.rate.Validate(); !s.ok()) return s;
  if (config.capacity == 0) {
    return absl::InvalidArgumentError("bucket capacity must be >= 1 permit");
  }
  const absl::Duration max_period = absl::Nanoseconds(kMaxSpanNs);
  if (config.rate.period() > max_period) {
    return absl::InvalidArgumentError(absl::StrCat("rate ", config.rate.ToString(),
                                                   ": the period must be at most ",
                                                   absl::FormatDuration(max_period)));
  }
  // At most 2^56 ns, so 16 times it fits easily.
  const uint64_t period_ns = static_cast<uint64_t>(absl::ToInt64Nanoseconds(config.rate.period()));
  if (config.rate.permits() > 16 * period_ns) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rate ", config.rate.ToString(), " is faster than the fastest bucket, 16e9 permits/s"));
  }
  const uint64_t g = std::gcd(config.rate.permits(), period_ns);
  const Derived d{static_cast<int64_t>(period_ns / g),
                  static_cast<int64_t>(config.rate.permits() / g), config.capacity};
  // The span, capacity * interval units, against the longest in the same units.
  const __int128 tau = static_cast<__int128>(d.capacity) * d.interval;
  if (tau > static_cast<__int128>(kMaxSpanNs) * d.units_per_ns) {
    return absl::InvalidArgumentError(absl::StrCat(
        "capacity ", config.capacity, " at rate ", config.rate.ToString(), " spans ",
        absl::FormatDuration(absl::Nanoseconds(static_cast<double>(tau / d.units_per_ns))),
        " of refill, over the longest burst a bucket can hold (",
        absl::FormatDuration(absl::Nanoseconds(kMaxSpanNs)), ")"));
  }
  return d;
}

int64_t internal_cell::WaitNanosWide(__int128 units, int64_t units_per_ns) {
  if (units <= 0) return 0;
  if (units_per_ns <= 0 || units_per_ns > kMaxUnitsPerNs) return kMaxWaitNs;  // unsound
  const u128 u = static_cast<u128>(units);
  const u128 wait = u / static_cast<u128>(units_per_ns) + (u % units_per_ns != 0);
  return wait >= static_cast<u128>(kMaxWaitNs) ? kMaxWaitNs : static_cast<int64_t>(wait);
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

namespace {

using Values = BucketCell::Values;

// Whether a slot's parameters are ones Derive could have produced (for a
// bucket: time_scale == units_per_ns; for a pool: 0). Anything else is a
// wiped or corrupted cell, which holds nothing and grants nothing.
bool Sound(const Values& v) {
  return v.interval >= 1 && v.interval <= kMaxInterval && v.units_per_ns >= 1 && v.capacity >= 1 &&
         v.units_per_ns <= kMaxUnitsPerNs && v.capacity <= kMaxCapacity &&
         (v.time_scale == v.units_per_ns || v.time_scale == 0);
}

// The span, capacity * interval units: at most 2^116 for sound parameters.
__int128 TauOf(const Values& v) { return static_cast<__int128>(v.capacity) * v.interval; }

// `now_ns` in the word's units: at most 2^123 in size for sound parameters.
__int128 UnitsAt(int64_t now_ns, const Values& v) {
  return static_cast<__int128>(now_ns) * v.time_scale;
}

// The TAT below which a hold that has not ended yet keeps the word: its first
// permit comes back at `until`, so TAT = until + tau - interval. -kMaxTat
// (below any TAT) when no hold is in force at `now_ns`.
__int128 HeldTat(int64_t hold_until_ns, int64_t now_ns, const Values& v) {
  if (hold_until_ns <= now_ns || v.time_scale == 0) return -kMaxTat;
  return std::min(UnitsAt(hold_until_ns, v) + TauOf(v) - v.interval, kMaxTat);
}

Values ValuesOf(const Derived& d, bool pool) {
  return {d.interval, d.units_per_ns, d.capacity, pool ? 0 : d.units_per_ns};
}

}  // namespace

absl::Status BucketRef::Init(BucketCell* cell, const BucketConfig& config, int64_t now_ns) {
  absl::StatusOr<Derived> d = Derive(config);
  if (!d.ok()) return d.status();
  const Values v = ValuesOf(*d, /*pool=*/false);
  cell->Reset(v, UnitsAt(now_ns, v));  // TAT = now: full
  return absl::OkStatus();
}

BucketCell::Values BucketCell::Read(int slot) const {
  const Params& p = params_[slot & 1];
  return {p.interval.load(std::memory_order_relaxed),
          p.units_per_ns.load(std::memory_order_relaxed),
          p.capacity.load(std::memory_order_relaxed), p.time_scale.load(std::memory_order_relaxed)};
}

void BucketCell::Reset(const Values& v, __int128 tat) {
  for (Params& p : params_) {
    p.interval.store(v.interval, std::memory_order_relaxed);
    p.units_per_ns.store(v.units_per_ns, std::memory_order_relaxed);
    p.capacity.store(v.capacity, std::memory_order_relaxed);
    p.time_scale.store(v.time_scale, std::memory_order_relaxed);
  }
  hold_until_ns_.store(std::numeric_limits<int64_t>::min(), std::memory_order_relaxed);
  // The CAS publishes the parameters with the word; slot 0 in use.
  word_.Store(tat << 1);
}

int BucketCell::StageParams(__int128 word, const Values& v) {
  // The idle slot may still be read by an acquirer holding a word two
  // generations old; the release fence pairs with its acquire fence so that
  // it sees the word move and retries rather than trusting a torn read.
  std::atomic_thread_fence(std::memory_order_release);
  const int slot = static_cast<int>(word & 1) ^ 1;
  Params& p = params_[slot];
  p.interval.store(v.interval, std::memory_order_relaxed);
  p.units_per_ns.store(v.units_per_ns, std::memory_order_relaxed);
  p.capacity.store(v.capacity, std::memory_order_relaxed);
  p.time_scale.store(v.time_scale, std::memory_order_relaxed);
  return slot;
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

void BucketRef::Refund(uint64_t n, const Terms& taken, int64_t now_ns) const {
  __int128 word = cell_->word_.Load();
  for (;;) {
    const Values v = cell_->Read(static_cast<int>(word & 1));
    if (!Sound(v) || taken.capacity == 0) return;
    // A full bucket is TAT <= now; a held one stays held: never go below that.
    const __int128 floor =
        std::max(UnitsAt(now_ns, v),
                 HeldTat(cell_->hold_until_ns_.load(std::memory_order_acquire), now_ns, v));
    const __int128 tat = word >> 1;
    if (tat <= floor) return;  // nothing to give back
    // A pool counts permits whatever its configuration (pool.h): all n come
    // back. A bucket gets back n / taken.capacity of its span now, rounded
    // down: exactly n intervals when it was not reconfigured since.
    const u128 back = v.time_scale == 0 ? static_cast<u128>(n) * static_cast<u128>(v.interval)
                                        : MulDiv(n, static_cast<u128>(TauOf(v)), taken.capacity,
                                                 false, static_cast<u128>(kMaxTat));
    const __int128 next =
        back >= static_cast<u128>(tat - floor) ? floor : tat - static_cast<__int128>(back);
    if (cell_->word_.CompareExchange(word, (next << 1) | (word & 1))) return;
  }
}

void BucketRef::Debit(uint64_t n, int64_t now_ns) const {
  __int128 word = cell_->word_.Load();
  for (;;) {
    const Values v = cell_->Read(static_cast<int>(word & 1));
    if (!Sound(v)) return;
    const __int128 base = std::max(word >> 1, UnitsAt(now_ns, v));
    // n * interval < 2^120: the sum stays in range before saturating.
    const __int128 next = std::min(base + static_cast<__int128>(n) * v.interval, kMaxTat);
    if (cell_->word_.CompareExchange(word, (next << 1) | (word & 1))) return;
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
  __int128 word = cell_->word_.Load();
  for (;;) {
    const Values v = cell_->Read(static_cast<int>(word & 1));
    if (!Sound(v)) return;
    const __int128 held = HeldTat(until_ns, now_ns, v);
    if ((word >> 1) >= held) return;
    if (cell_->word_.CompareExchange(word, (held << 1) | (word & 1))) return;
  }
}

int64_t BucketRef::Available(int64_t now_ns) const {
  const __int128 word = cell_->word_.Load();
  const Values v = cell_->Read(static_cast<int>(word & 1));
  if (!Sound(v)) return 0;
  const __int128 tau = TauOf(v);
  const __int128 ahead = std::max<__int128>(0, (word >> 1) - UnitsAt(now_ns, v));
  // At most the capacity, 2^60.
  return ahead >= tau ? 0 : static_cast<int64_t>((tau - ahead) / v.interval);
}

int64_t BucketRef::Capacity() const {
  const Values v = cell_->Read(ParamSlot(*cell_));
  return Sound(v) ? static_cast<int64_t>(v.capacity) : 0;
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
  const __int128 word = cell_->word_.Load();
  const Values v = cell_->Read(static_cast<int>(word & 1));
  if (!Sound(v) || v.time_scale == 0) return 0;  // a pool is never full for a while
  const __int128 since = UnitsAt(now_ns, v) - (word >> 1);
  if (since <= 0) return 0;
  const __int128 ns = since / v.units_per_ns;
  return ns > std::numeric_limits<int64_t>::max() ? std::numeric_limits<int64_t>::max()
                                                  : static_cast<int64_t>(ns);
}

int BucketRef::ParamSlot(const BucketCell& cell) { return static_cast<int>(cell.word_.Load() & 1); }

absl::Status BucketRef::ValidateParamSlot(const BucketCell& cell, int slot,
                                          const BucketConfig& config) {
  absl::StatusOr<Derived> d = Derive(config);
  if (!d.ok()) return absl::FailedPreconditionError(d.status().message());
  const Values v = cell.Read(slot);
  if (v.interval != d->interval || v.units_per_ns != d->units_per_ns || v.capacity != d->capacity ||
      (v.time_scale != d->units_per_ns && v.time_scale != 0)) {
    return absl::FailedPreconditionError(
        absl::StrCat("bucket parameters (interval ", v.interval, " units of 1/", v.units_per_ns,
                     " ns, capacity ", v.capacity, ", ", v.time_scale,
                     " units per ns of clock) do not match its configuration ",
                     config.rate.ToString(), " burst ", config.capacity, " (interval ", d->interval,
                     " units of 1/", d->units_per_ns, " ns, capacity ", d->capacity, ")"));
  }
  return absl::OkStatus();
}

absl::Status BucketRef::Validate(const BucketCell& cell, const BucketConfig& config) {
  const __int128 tat = cell.word_.Load() >> 1;
  if (tat > kMaxTat || tat < -kMaxTat) {
    return absl::FailedPreconditionError(absl::StrCat(
        "bucket word is out of range (", static_cast<double>(tat), " units, past +-2^125)"));
  }
  return ValidateParamSlot(cell, ParamSlot(cell), config);
}

absl::Status BucketRef::Reconfigure(BucketCell* cell, const BucketConfig& config, int64_t now_ns) {
  if (PoolRef::IsPool(*cell)) return PoolRef::Reconfigure(cell, config).status();
  absl::StatusOr<Derived> d = Derive(config);
  if (!d.ok()) return d.status();
  __int128 word = cell->word_.Load();
  const Values old = cell->Read(static_cast<int>(word & 1));
  const Values now_v = ValuesOf(*d, /*pool=*/false);
  const int slot = cell->StageParams(word, now_v);
  // A hold in force keeps its deadline: its part of the TAT becomes the same
  // hold under the new parameters; only what is owed beyond it is rescaled.
  // A cell with unsound parameters (wiped) counts as full.
  const bool sound = Sound(old);
  const int64_t hold_until = cell->hold_until_ns_.load(std::memory_order_acquire);
  const __int128 old_base =
      sound ? std::max(UnitsAt(now_ns, old), HeldTat(hold_until, now_ns, old)) : 0;
  const __int128 new_base = std::max(UnitsAt(now_ns, now_v), HeldTat(hold_until, now_ns, now_v));
  const u128 old_tau = sound ? static_cast<u128>(TauOf(old)) : 0;
  for (;;) {
    // How far the TAT is ahead of now (or of the hold), scaled from the old
    // span to the new one, rounded up: the same fraction of capacity stays
    // available (or owed).
    const __int128 ahead = sound ? std::max<__int128>(0, (word >> 1) - old_base) : 0;
    const u128 scaled = ahead == 0
                            ? 0
                            : MulDiv(static_cast<u128>(ahead), static_cast<u128>(TauOf(now_v)),
                                     old_tau, true, static_cast<u128>(kMaxTat));
    const __int128 next = std::min(new_base + static_cast<__int128>(scaled), kMaxTat);
    if (cell->word_.CompareExchange(word, (next << 1) | slot)) return absl::OkStatus();
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
