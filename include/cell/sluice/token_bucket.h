// File: token_bucket.h
// -----------------------------------------------------------------------------
// A token bucket kept in GCRA form in one atomic 128-bit word.
//
// A bucket refills at a Rate (permits per period) up to a capacity (its burst).
// Instead of a token count and a last-refill time, the word holds the bucket's
// "theoretical arrival time" (TAT): the moment the bucket would be full again.
// Admitting n permits moves the TAT forward by n intervals (interval = period /
// permits); the bucket has room when the new TAT is no further ahead of now
// than the bucket's whole span (tau = capacity * interval). So an admit is one
// read and one compare-and-swap, a refusal is two reads (a guess, then the
// whole word) and no write, and the available permits are derived from the
// word at any time, for free.
//
// The word counts time exactly. A rate of P permits per T ns, reduced to
// lowest terms, makes one permit's interval T/P ns; the word counts in units
// of 1/P ns, where that interval is the whole number T. So every interval is
// exact (1 s / 7 costs 1e9 units of 1/7 ns, with nothing rounded), a bucket
// that stays saturated never drifts, and every decision is the one exact
// rational arithmetic would make. The word is 128 bits, compare-and-swapped
// whole (wide_atomic.h), and counts from the clock's origin: it cannot
// saturate for 292 years of clock readings at the fastest rate. Rates up to
// 16e9 permits/s and bursts spanning up to about 2.28 years of refill are
// accepted; requests up to 2^64 permits; all arithmetic is integer and checked.
//
// BucketCell is the word plus the parameters it is read with, laid out in two
// cache lines (the word and a hold's deadline, then the parameters, which
// only a reconfiguration writes) so that it can live in process memory (TokenBucket) or in a
// shared-memory segment that every process on the host maps (BucketRef over a
// cell someone else owns). The same code runs on both.
//
// Pools: a cell set up by PoolRef::Init (sluice/pool.h) is a host's pool of
// permits leased from a fleet's bucket, whose time stands still: it never
// refills by itself, only by PoolRef::Credit. BucketRef admits from it with
// the same code; where a pool behaves differently (Acquire, Refund,
// HoldUntil, Reconfigure), the operation says so.
//
// Thread safety: every BucketRef and TokenBucket operation is safe to call
// concurrently from any number of threads and processes, except
// BucketRef::Reconfigure, which REQUIRES that reconfigurations of one cell be
// serialized by the caller (TokenBucket::Reconfigure does that itself).
// Concurrent acquires never need a lock: a reconfiguration publishes its
// parameters with the same compare-and-swap that rescales the word.
//
// Example:
//   auto bucket = sluice::TokenBucket::Create(
//       {.rate = sluice::Rate::PerMinute(1000), .capacity = 50});
//   if (!bucket.ok()) return bucket.status();
//   if ((*bucket)->TryAcquire(1).granted()) CallTheModel();
//   // Or wait up to two seconds, sleeping once:
//   absl::Status s = (*bucket)->Acquire(1, absl::Seconds(2));

#ifndef SLUICE_TOKEN_BUCKET_H_
#define SLUICE_TOKEN_BUCKET_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sluice/clock.h"
#include "sluice/rate.h"
#include "sluice/wide_atomic.h"

namespace sluice {

// BucketConfig
//
// A bucket refills at `rate` and holds at most `capacity` permits (the most
// that can be taken in one burst). A new bucket starts full.
struct BucketConfig {
  Rate rate = Rate::PerSecond(1);
  uint64_t capacity = 1;
};

// OK, or InvalidArgument saying which field is wrong: a zero permit count or
// non-positive period, a zero capacity, a rate faster than 16e9/s, or a burst
// span (capacity / rate) longer than about 2.28 years.
absl::Status ValidateBucketConfig(const BucketConfig& config);

// `config` lowered to `rate` (a limit learned from a provider): that rate,
// with the burst scaled down by the same factor (at least 1 permit). A rate
// at or above the config's, or an invalid one, leaves `config` as it is.
BucketConfig LowerTo(const BucketConfig& config, const Rate& rate);

// `config` with its capacity no larger than `burst` (a burst learned from a
// provider, in permits); 0, or a burst at or above the capacity, leaves it.
BucketConfig CapBurst(const BucketConfig& config, uint64_t burst);

// Decision
//
// The answer to a TryAcquire or Reserve.
enum class Outcome : uint8_t {
  kGranted,    // the permits are taken
  kRefused,    // not enough permits within the allowed wait; nothing changed
  kNeverFits,  // more permits than the bucket's capacity: no wait will ever do
};

// Terms
//
// The bucket's capacity when permits were taken. A refund of n permits
// returns n / capacity of the bucket's span now: the same share of the
// capacity that was taken, never more, whatever reconfigured the bucket in
// between (exactly n permits when nothing did).
struct Terms {
  uint64_t capacity = 0;
};

struct Decision {
  Outcome outcome;
  // kGranted: ns from `now` until the caller may proceed (always 0 for
  // TryAcquire; the reservation's wait for Reserve).
  // kRefused: ns from `now` until the permits would be available.
  // kNeverFits: 0.
  int64_t wait_ns;
  // kGranted: the terms the permits were taken at, for Refund.
  Terms terms = {};

  bool granted() const { return outcome == Outcome::kGranted; }
};

// Pressure
//
// How full a bucket is, as the reference design reports it: low when at least
// 60% of the capacity is available, medium from 30% to 60%, high below 30%.
enum class Pressure : uint8_t { kLow, kMedium, kHigh };
const char* PressureName(Pressure p);  // "low", "medium", "high"
// The pressure of a bucket holding `available` of `capacity` permits: low
// from 60% available, medium from 30%, high below (and for no capacity).
Pressure PressureOf(int64_t available, int64_t capacity);

// BucketCell
//
// The bucket's state: one cache line, position independent, with no pointers,
// so it can be placed in shared memory. Treat it as opaque; construct it with
// BucketRef::Init before use.
class PoolRef;

class alignas(64) BucketCell {
 public:
  BucketCell() = default;
  BucketCell(const BucketCell&) = delete;
  BucketCell& operator=(const BucketCell&) = delete;

  // One parameter slot as plain values, for the cell's own code (see Params).
  struct Values {
    int64_t interval;
    int64_t units_per_ns;
    uint64_t capacity;
    int64_t time_scale;
  };

 private:
  friend class BucketRef;
  friend class PoolRef;

  // Parameters of one configuration generation. Two slots: a reconfiguration
  // writes the idle one, then flips the word's low bit to select it.
  struct Params {
    std::atomic<int64_t> interval;      // units per permit (T in lowest terms), >= 1
    std::atomic<int64_t> units_per_ns;  // P in lowest terms, >= 1
    std::atomic<uint64_t> capacity;     // permits; the span tau = capacity * interval
    // Units the word counts per ns of clock: units_per_ns for a bucket, 0 for
    // a pool (pool.h), whose time stands still.
    std::atomic<int64_t> time_scale;
  };

  Values Read(int slot) const;

  // Sets both parameter slots and the TAT (in units), with no hold,
  // publishing them with the word. REQUIRES: no other thread uses the cell
  // yet.
  void Reset(const Values& v, __int128 tat);

  // The first half of a reconfiguration: writes the parameter slot that
  // `word` does not select and returns its index (0 or 1), for the CAS that
  // then selects it. REQUIRES: reconfigurations of the cell are serialized.
  int StageParams(__int128 word, const Values& v);

  // The first line: the word, the only thing an admit writes, and the hold.
  // (TAT in units since the clock's origin) << 1 | parameter slot in use.
  WideAtomic word_;
  // The latest HoldUntil deadline (ns on the bucket's clock; INT64_MIN: none,
  // so that any clock reading, negative ones included, is past it). Off the
  // admit path: refunds and reconfigurations read it so that neither shortens
  // a hold.
  std::atomic<int64_t> hold_until_ns_{std::numeric_limits<int64_t>::min()};
  // The second line, read by every admit and written only by Reset and
  // reconfigurations: it stays in every core's cache while the word moves.
  alignas(64) Params params_[2] = {};
};

static_assert(sizeof(BucketCell) == 128, "a bucket is two cache lines: its word, its parameters");

// BucketRef
//
// The bucket operations, acting on a BucketCell that the BucketRef does not
// own. Every operation has a form that reads the bucket's clock and a form
// taking an explicit `now_ns` (nanoseconds on that clock), so that callers who
// batch can read the clock once. A `now` older than the bucket's state never
// rewinds it: stale readings can only make the bucket stricter.
class BucketRef {
 public:
  // REQUIRES: `cell` outlives this BucketRef and was initialized with Init.
  BucketRef(BucketCell* cell, Clock clock) : cell_(cell), clock_(clock) {}

  // Initializes `cell` as a full bucket with `config` at `now_ns`.
  // Returns InvalidArgument (see ValidateBucketConfig) and leaves the cell
  // untouched on bad input. REQUIRES: no other thread uses the cell yet.
  static absl::Status Init(BucketCell* cell, const BucketConfig& config, int64_t now_ns);

  // Takes n permits if they are available now: kGranted (wait 0) after one
  // read and one CAS, or kRefused with the exact wait until they will be,
  // after two reads and no write. kNeverFits when n exceeds the capacity.
  Decision TryAcquire(uint64_t n, int64_t now_ns) const { return Reserve(n, 0, now_ns); }
  Decision TryAcquire(uint64_t n) const { return TryAcquire(n, clock_.Now()); }

  // Takes n permits now if they will be available within `max_wait_ns`,
  // letting the bucket go into debt; the caller may proceed `wait_ns` after
  // `now_ns`. Reservations are served in the order their CAS lands (FIFO):
  // each one's ready time is at or after the previous one's. Refused (no
  // write) when the wait would exceed `max_wait_ns`.
  Decision Reserve(uint64_t n, int64_t max_wait_ns, int64_t now_ns) const;
  Decision Reserve(uint64_t n, int64_t max_wait_ns) const {
    return Reserve(n, max_wait_ns, clock_.Now());
  }

  // Blocks until n permits are taken, or fails at once without waiting:
  // DeadlineExceeded when the wait would exceed `timeout` (the message says
  // how long it would have been), OutOfRange when n exceeds the capacity
  // ("can never fit"). Reserves, then sleeps once until the reserved time;
  // a zero timeout tries once. On a pool it always tries once: no wait
  // brings permits into a pool.
  absl::Status Acquire(uint64_t n, absl::Duration timeout) const;

  // Returns n permits taken by a Reserve or TryAcquire (whose Decision gave
  // `taken`) that went unused. The bucket gets back the share of its capacity
  // that n permits were at `taken` (exactly the permits, when it was not
  // reconfigured since), rounded down, except that it never holds more than
  // its capacity and never ends a hold (HoldUntil) early. Never fails.
  // A pool counts permits rather than shares: it gets back all n, whatever
  // reconfigured it, up to its capacity.
  void Refund(uint64_t n, const Terms& taken, int64_t now_ns) const;
  void Refund(uint64_t n, const Terms& taken) const { Refund(n, taken, clock_.Now()); }

  // Takes n permits unconditionally, possibly into debt: for settling an
  // estimate against actual usage. Saturates rather than overflowing.
  void Debit(uint64_t n, int64_t now_ns) const;
  void Debit(uint64_t n) const { Debit(n, clock_.Now()); }

  // Makes nothing available before `until_ns`: the bucket is held empty until
  // then and refills at its rate after (a provider's retry-after, applied to
  // every process sharing the bucket). A hold ending sooner than the bucket's
  // own debt changes nothing. Later refunds and reconfigurations keep the
  // hold: nothing becomes available before `until_ns`. Does nothing to a
  // pool: its time stands still, so a hold could only throw permits away.
  void HoldUntil(int64_t until_ns, int64_t now_ns) const;

  // Permits available at `now_ns` (0 while in debt), the capacity, and the
  // pressure derived from them. Reads only; never writes.
  int64_t Available(int64_t now_ns) const;
  int64_t Available() const { return Available(clock_.Now()); }
  int64_t Capacity() const;
  Pressure GetPressure(int64_t now_ns) const;
  Pressure GetPressure() const { return GetPressure(clock_.Now()); }

  // How long the bucket has been full at `now_ns` (ns), 0 when it is not. A
  // bucket full for a long time is indistinguishable from a new one.
  int64_t FullForNanos(int64_t now_ns) const;

  // Checks a cell read from untrusted memory (a shared segment) against the
  // configuration it should hold: the parameters in use must be the ones
  // `config` derives and the word must be in range. OK, or FailedPrecondition
  // saying which value is wrong.
  static absl::Status Validate(const BucketCell& cell, const BucketConfig& config);

  // Changes `cell`'s rate and capacity live, keeping the fraction of capacity
  // that is available (a bucket 40% full stays 40% full; debt scales the same
  // way) and any hold. Returns InvalidArgument and changes nothing on a bad
  // config. REQUIRES: reconfigurations of this cell are serialized by the
  // caller. A static function on the cell, not a member: whoever holds a
  // BucketRef may admit through it but cannot reconfigure past the owner's
  // serialization (TokenBucket's mutex, the segment lock). A pool stays a
  // pool and keeps its count of permits (PoolRef::Reconfigure, less the
  // report of what no longer fits).
  static absl::Status Reconfigure(BucketCell* cell, const BucketConfig& config, int64_t now_ns);

  // Which of the cell's two parameter slots is in use (0 or 1), and so which
  // one the next Reconfigure writes (the other). For stores that keep a copy
  // of each slot's configuration beside the cell: writing the copy of the
  // idle slot before reconfiguring keeps the copy of the slot in use equal to
  // the cell's parameters at every instant, so a kill at any point leaves
  // them consistent.
  static int ParamSlot(const BucketCell& cell);
  // Checks that parameter slot `slot` (0 or 1) holds what `config` derives;
  // FailedPrecondition naming both otherwise.
  static absl::Status ValidateParamSlot(const BucketCell& cell, int slot,
                                        const BucketConfig& config);

  const Clock& clock() const { return clock_; }
  // The cell this BucketRef acts on (for PoolRef, sluice/pool.h).
  BucketCell* cell() const { return cell_; }

 private:
  BucketCell* cell_;
  Clock clock_;
};

// TokenBucket
//
// A bucket in process memory: it owns its cell, admits through a BucketRef
// over it, and serializes its own reconfigurations. Not copyable or movable
// (the BucketRef points into it); Create returns it on the heap.
class TokenBucket final {
 public:
  // Returns InvalidArgument on a bad config (see ValidateBucketConfig).
  static absl::StatusOr<std::unique_ptr<TokenBucket>> Create(const BucketConfig& config,
                                                             Clock clock = Clock::Monotonic());
  TokenBucket(const TokenBucket&) = delete;
  TokenBucket& operator=(const TokenBucket&) = delete;

  // The bucket operations, as BucketRef's.
  Decision TryAcquire(uint64_t n, int64_t now_ns) const { return ref_.TryAcquire(n, now_ns); }
  Decision TryAcquire(uint64_t n) const { return ref_.TryAcquire(n); }
  Decision Reserve(uint64_t n, int64_t max_wait_ns, int64_t now_ns) const {
    return ref_.Reserve(n, max_wait_ns, now_ns);
  }
  Decision Reserve(uint64_t n, int64_t max_wait_ns) const { return ref_.Reserve(n, max_wait_ns); }
  absl::Status Acquire(uint64_t n, absl::Duration timeout) const {
    return ref_.Acquire(n, timeout);
  }
  void Refund(uint64_t n, const Terms& taken, int64_t now_ns) const {
    ref_.Refund(n, taken, now_ns);
  }
  void Refund(uint64_t n, const Terms& taken) const { ref_.Refund(n, taken); }
  void Debit(uint64_t n, int64_t now_ns) const { ref_.Debit(n, now_ns); }
  void Debit(uint64_t n) const { ref_.Debit(n); }
  void HoldUntil(int64_t until_ns, int64_t now_ns) const { ref_.HoldUntil(until_ns, now_ns); }
  int64_t Available(int64_t now_ns) const { return ref_.Available(now_ns); }
  int64_t Available() const { return ref_.Available(); }
  int64_t Capacity() const { return ref_.Capacity(); }
  Pressure GetPressure(int64_t now_ns) const { return ref_.GetPressure(now_ns); }
  Pressure GetPressure() const { return ref_.GetPressure(); }
  int64_t FullForNanos(int64_t now_ns) const { return ref_.FullForNanos(now_ns); }
  const Clock& clock() const { return ref_.clock(); }

  // The bucket as a BucketRef, for code written against the cell API. It
  // cannot reconfigure: that goes through Reconfigure below.
  const BucketRef& ref() const { return ref_; }

  // As BucketRef::Reconfigure, serialized by the bucket's mutex: safe to call
  // from any thread.
  absl::Status Reconfigure(const BucketConfig& config, int64_t now_ns);
  absl::Status Reconfigure(const BucketConfig& config) {
    return Reconfigure(config, clock().Now());
  }

  // The configuration last set.
  BucketConfig config() const;

 private:
  TokenBucket(const BucketConfig& config, Clock clock);

  BucketCell cell_;
  const BucketRef ref_;
  // A standard mutex rather than absl's: ThreadSanitizer sees through the
  // pthread calls under it, and the packaged Abseil is not instrumented.
  mutable std::mutex mu_;
  BucketConfig config_;  // guarded by mu_
};

// Implementation details follow.

namespace internal_cell {

// The TAT stays within +-2^125 units, so that it fits the word above the slot
// bit and now + tau + a wait never overflows: clock readings are within
// 2^63 ns, units_per_ns <= 2^60 (16e9/s), tau <= 2^116 (2^56 ns of refill).
inline constexpr __int128 kMaxTat = static_cast<__int128>(1) << 125;
// The longest wait a reservation may be granted, about 146 years.
inline constexpr int64_t kMaxWaitNs = int64_t{1} << 62;
// Parameters beyond these are never derived from a config; a cell holding
// them (wiped or corrupted shared memory) grants nothing.
inline constexpr int64_t kMaxInterval = int64_t{1} << 56;
inline constexpr int64_t kMaxUnitsPerNs = int64_t{1} << 60;
inline constexpr uint64_t kMaxCapacity = uint64_t{1} << 60;

// ceil(units / units_per_ns) for units > 0, saturated at kMaxWaitNs: a wait in
// whole ns, for a refusal or a reservation that waits. Inline for the common
// cases (one unit per ns, a 64-bit quotient); the rest out of line.
int64_t WaitNanosWide(__int128 units, int64_t units_per_ns);
inline int64_t WaitNanos(__int128 units, int64_t units_per_ns) {
  if (units > 0 && units < kMaxWaitNs && units_per_ns >= 1) {
    const uint64_t u = static_cast<uint64_t>(units);
    if (units_per_ns == 1) return static_cast<int64_t>(u);
    const uint64_t d = static_cast<uint64_t>(units_per_ns);
    return static_cast<int64_t>(u / d + (u % d != 0));
  }
  return WaitNanosWide(units, units_per_ns);
}

}  // namespace internal_cell

inline Decision BucketRef::Reserve(uint64_t n, int64_t max_wait_ns, int64_t now_ns) const {
  using internal_cell::kMaxCapacity;
  using internal_cell::kMaxInterval;
  using internal_cell::kMaxUnitsPerNs;
  // A guess, possibly torn: the CAS confirms a grant, and a refusal reads the
  // word whole before it is given.
  __int128 word = cell_->word_.LoadHalves();
  for (;;) {
    // The word's low bit selects the parameters it was written with; the
    // load above (or the failed CAS below) makes them visible.
    const BucketCell::Params& p = cell_->params_[static_cast<int>(word & 1)];
    const int64_t interval = p.interval.load(std::memory_order_relaxed);
    const uint64_t capacity = p.capacity.load(std::memory_order_relaxed);
    const int64_t scale = p.time_scale.load(std::memory_order_relaxed);
    // A cell whose parameters are zero (never initialized, or wiped) or out
    // of range grants nothing: it answers kNeverFits, like a request too
    // large.
    if (n > capacity || capacity > kMaxCapacity ||
        static_cast<uint64_t>(interval - 1) >= static_cast<uint64_t>(kMaxInterval) ||
        static_cast<uint64_t>(scale) > kMaxUnitsPerNs) [[unlikely]] {
      // Rule out parameters torn by two reconfigurations racing this read:
      // if the word moved, read again.
      std::atomic_thread_fence(std::memory_order_acquire);
      const __int128 again = cell_->word_.Load();
      if (again != word) {
        word = again;
        continue;
      }
      return {Outcome::kNeverFits, 0};
    }
    const __int128 now = static_cast<__int128>(now_ns) * scale;
    // How far the TAT will be ahead of now (a full bucket's is at or behind
    // it), and how far that is past the bucket's span.
    const __int128 ahead =
        std::max<__int128>((word >> 1) - now, 0) + static_cast<__int128>(n) * interval;
    const __int128 excess = ahead - static_cast<__int128>(capacity) * interval;
    __int128 next = now + ahead;
    int64_t wait_ns = 0;
    if (excess > 0) [[unlikely]] {
      const int64_t units_per_ns = p.units_per_ns.load(std::memory_order_relaxed);
      wait_ns = internal_cell::WaitNanos(excess, units_per_ns);
      if (wait_ns > max_wait_ns || wait_ns >= internal_cell::kMaxWaitNs ||
          next > internal_cell::kMaxTat) {
        const __int128 whole = cell_->word_.Load();
        if (whole != word) {
          word = whole;
          continue;
        }
        return {Outcome::kRefused, wait_ns};
      }
      // A reservation's holder proceeds on a whole nanosecond; move the TAT
      // to match, so the next caller is spaced from when it really proceeds.
      next = now + static_cast<__int128>(capacity) * interval +
             static_cast<__int128>(wait_ns) * units_per_ns;
    }
    if (cell_->word_.CompareExchange(word, (next << 1) | (word & 1))) {
      return {Outcome::kGranted, wait_ns, {capacity}};
    }
  }
}

}  // namespace sluice

#endif  // SLUICE_TOKEN_BUCKET_H_
