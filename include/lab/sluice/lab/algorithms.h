// File: sluice/lab/algorithms.h
// -----------------------------------------------------------------------------
// The throttle algorithms besides the token bucket, and one interface over all
// of them (Limiter) so that they can be compared: the algorithm lab's library
// (CMake target sluice::lab, `find_package(sluice COMPONENTS lab)`; pkg-config
// sluice-lab). The product itself throttles with the cells of sluice::sluice
// (token_bucket.h, window_counter.h, lease_set.h) and never links this; it is
// for the lab, its benchmarks, and users comparing algorithms of their own
// with these (a Limiter of their own).
//
// As with the token bucket, each algorithm is a cell (its state, in memory the
// caller owns: process memory or a shared segment) and a Ref that acts on it.
// Here a cell holds only state, in one atomic word on its own cache line, and
// the Ref carries the configuration: every process that shares a cell builds
// its Ref from the same configuration (the store's rule: the configuration is
// the source of truth). A zero-filled cell is a fresh one, so a cell in a new
// mapping needs no initialization.
//
//   BucketRef (token_bucket.h)  token bucket in GCRA form: the reference.
//   PacerRef                    leaky bucket as a pacer: no burst; after
//                               admitting n permits, nothing more for n
//                               intervals, so admissions are evenly spaced.
//   FixedWindowRef              at most `limit` per window, counted in one word
//                               (WindowCounterCell: window id and count). Up to
//                               2x the limit can pass in a short span around a
//                               window boundary: the reference design's
//                               tokens-per-minute throttle does this.
//   SlidingWindowRef            two-window weighted estimate: the previous
//                               window's count, weighted by how much of it the
//                               sliding window still covers, plus the current
//                               one's; all in one word.
//   LeaseSetRef (lease_set.h)   concurrency: at most N calls in flight.
//   AdaptiveRef                 AIMD: a GCRA bucket whose rate halves (by
//                               default) on a provider's 429 and climbs back
//                               with each success, like TCP's congestion window.
//   SlidingLog                  exact sliding window: a log of admission times
//                               in a ring buffer under a mutex. Process memory
//                               only: its state is O(limit), not one word.
//
// Every operation takes an explicit `now_ns` (nanoseconds on a Clock), so the
// same code runs on the monotonic clock and on simulated time. A `now` older
// than the state never rewinds it; it can only make a decision stricter.
//
// Thread safety: every Ref operation is lock-free (loads and CAS on the
// cell's word) and safe from any number of threads and processes; Ref
// configuration is immutable. SlidingLog and every Limiter are safe for
// concurrent use; SlidingLog takes a mutex on every decision.
//
// Example:
//   sluice::PacerCell cell;  // or one in shared memory
//   auto pacer = sluice::PacerRef::Create(&cell, {.rate = sluice::Rate::PerSecond(10)});
//   if (!pacer.ok()) return pacer.status();
//   sluice::Decision d = pacer->TryAcquire(1, sluice::Clock::MonotonicNanos());
//   // d.granted(), or d.wait_ns until the next evenly spaced slot.

#ifndef SLUICE_LAB_ALGORITHMS_H_
#define SLUICE_LAB_ALGORITHMS_H_

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/lease_set.h"
#include "sluice/rate.h"
#include "sluice/token_bucket.h"
#include "sluice/window_counter.h"

namespace sluice {

// PacerRef
//
// A leaky bucket used as a pacer: it admits a request when the previous one
// has drained, then holds the next for n intervals (interval = period /
// permits, 1/16 ns fixed point rounded up as in the token bucket). There is no
// burst credit: an idle pacer still admits one request at a time.
class alignas(64) PacerCell {
 public:
  PacerCell() = default;
  PacerCell(const PacerCell&) = delete;
  PacerCell& operator=(const PacerCell&) = delete;

 private:
  friend class PacerRef;
  // The earliest time of the next admission, 1/16 ns since the epoch.
  std::atomic<int64_t> next_{0};
};

struct PacerConfig {
  Rate rate = Rate::PerSecond(1);
  int64_t epoch_ns = 0;  // the clock reading the cell counts from
};

class PacerRef {
 public:
  // InvalidArgument for a bad rate (see ValidateBucketConfig).
  // REQUIRES: `cell` outlives the PacerRef.
  static absl::StatusOr<PacerRef> Create(PacerCell* cell, const PacerConfig& config);

  // Admits n permits if the previous admission has drained (one load, one
  // CAS), holding the next one for n intervals; else kRefused with the wait
  // until it drains (one load, no write). kNeverFits when n intervals exceed
  // about 2.28 years.
  Decision TryAcquire(uint64_t n, int64_t now_ns) const;

  // The spacing of one permit, in ns (rounded up).
  int64_t IntervalNanos() const;

 private:
  PacerRef(PacerCell* cell, int64_t interval, int64_t epoch_ns)
      : cell_(cell), interval_(interval), epoch_ns_(epoch_ns) {}

  PacerCell* cell_;
  int64_t interval_;  // 1/16 ns per permit
  int64_t epoch_ns_;
};

// FixedWindowRef
//
// At most `limit` permits in each window [epoch + k*window, epoch + (k+1)*
// window), counted in a WindowCounterCell (window id and count in one word).
// Windows are numbered from the epoch; a limiter used past 2^20 windows (two
// years of minute windows) stays in its last window and stops refilling: it
// can then only under-admit.
struct FixedWindowConfig {
  uint64_t limit = 1;  // permits per window, 1 .. WindowCounterRef::kMaxAmount
  absl::Duration window = absl::Minutes(1);
  int64_t epoch_ns = 0;
};

class FixedWindowRef {
 public:
  // InvalidArgument naming the field: a zero or too large limit, a window
  // that is not positive and finite. REQUIRES: `cell` outlives the Ref.
  static absl::StatusOr<FixedWindowRef> Create(WindowCounterCell* cell,
                                               const FixedWindowConfig& config);

  // Counts n permits in the window of `now_ns` if they fit (one load, one
  // CAS); else kRefused with the wait until the next window begins (one load,
  // no write). kNeverFits when n exceeds the limit.
  Decision TryAcquire(uint64_t n, int64_t now_ns) const;

  // The window `now_ns` falls in, and the permits counted in it.
  int64_t WindowOf(int64_t now_ns) const;
  int64_t Used(int64_t now_ns) const { return counter_.Used(WindowOf(now_ns)); }

 private:
  FixedWindowRef(WindowCounterCell* cell, const FixedWindowConfig& config, int64_t window_ns)
      : counter_(cell),
        limit_(static_cast<int64_t>(config.limit)),
        window_ns_(window_ns),
        epoch_ns_(config.epoch_ns) {}

  WindowCounterRef counter_;
  int64_t limit_;
  int64_t window_ns_;
  int64_t epoch_ns_;
};

// SlidingWindowRef
//
// The sliding window counter: at time t, e ns into window k, the estimate of
// the permits taken in the last `window` is
//     used(k-1) * (window - e) / window  +  used(k)
// (the previous window's count assumed spread evenly over it, the weighted
// part rounded up). A request fits when the estimate plus n is within the
// limit. The word packs the window id (20 bits), the previous window's count
// and the current one's (22 bits each), so limits go up to 4,194,303 permits
// per window; count tokens in larger units for more. The estimate is exact
// for evenly spread traffic and can overshoot the limit when the previous
// window's traffic was bunched at its end: the lab measures by how much.
struct SlidingWindowConfig {
  uint64_t limit = 1;  // permits per window, 1 .. SlidingWindowRef::kMaxLimit
  absl::Duration window = absl::Minutes(1);
  int64_t epoch_ns = 0;
};

class alignas(64) SlidingWindowCell {
 public:
  SlidingWindowCell() = default;
  SlidingWindowCell(const SlidingWindowCell&) = delete;
  SlidingWindowCell& operator=(const SlidingWindowCell&) = delete;

 private:
  friend class SlidingWindowRef;
  // window id << 44 | previous count << 22 | current count.
  std::atomic<uint64_t> word_{0};
};

class SlidingWindowRef {
 public:
  static constexpr int kCountBits = 22;
  static constexpr uint64_t kMaxLimit = (uint64_t{1} << kCountBits) - 1;
  static constexpr int64_t kMaxWindow = (int64_t{1} << (64 - 2 * kCountBits)) - 1;

  // InvalidArgument naming the field, as FixedWindowRef::Create.
  static absl::StatusOr<SlidingWindowRef> Create(SlidingWindowCell* cell,
                                                 const SlidingWindowConfig& config);

  // Takes n permits if the estimate allows (one load, one CAS); else
  // kRefused with the wait until it will (one load, no write). kNeverFits
  // when n exceeds the limit.
  Decision TryAcquire(uint64_t n, int64_t now_ns) const;

  // The estimate of permits taken in the sliding window ending at `now_ns`.
  int64_t Estimate(int64_t now_ns) const;

 private:
  SlidingWindowRef(SlidingWindowCell* cell, const SlidingWindowConfig& config, int64_t window_ns)
      : cell_(cell),
        limit_(static_cast<int64_t>(config.limit)),
        window_ns_(window_ns),
        epoch_ns_(config.epoch_ns) {}

  struct View {
    int64_t window;   // the window `now` falls in
    int64_t elapsed;  // ns into it
    int64_t prev;     // permits counted in the window before
    int64_t cur;      // permits counted in it
  };
  View Read(uint64_t word, int64_t now_ns) const;
  int64_t Weighted(int64_t prev, int64_t elapsed) const;

  SlidingWindowCell* cell_;
  int64_t limit_;
  int64_t window_ns_;
  int64_t epoch_ns_;
};

// AdaptiveRef
//
// An AIMD limiter: a GCRA bucket (see token_bucket.h) whose rate it learns
// from the provider's answers. It starts at `initial`; each 429 multiplies the
// rate by decrease_permille / 1000 (at most once per `cooldown`, as TCP halves
// its window once per round trip, however many losses it saw), down to
// `min_permits` per period; each success adds increase_permits / rate, so one
// period's worth of successes raises the rate by `increase_permits` per
// period, up to `max_permits`. It probes above a documented limit and backs
// off when the provider pushes back, which is why it draws some 429s by
// design.
struct AdaptiveConfig {
  Rate initial = Rate::PerMinute(60);  // the starting rate; its period is the unit
  uint64_t burst = 1;                  // bucket capacity, permits
  uint64_t min_permits = 1;            // per period; >= 1
  uint64_t max_permits = 0;            // per period; 0: twice initial
  uint64_t increase_permits = 0;       // per period per period of successes; 0: initial / 10
  uint32_t decrease_permille = 500;    // on a 429, rate *= this / 1000; 1 .. 999
  absl::Duration cooldown = absl::Seconds(1);
  int64_t epoch_ns = 0;
};

class alignas(64) AdaptiveCell {
 public:
  AdaptiveCell() = default;
  AdaptiveCell(const AdaptiveCell&) = delete;
  AdaptiveCell& operator=(const AdaptiveCell&) = delete;

 private:
  friend class AdaptiveRef;
  std::atomic<int64_t> tat_{0};            // GCRA TAT, 1/16 ns since the epoch
  std::atomic<int64_t> rate_milli_{0};     // thousandths of a permit per period; 0: initial
  std::atomic<int64_t> next_decrease_{0};  // ns; no decrease before it
};

class AdaptiveRef {
 public:
  // InvalidArgument naming the field: a bad initial rate, zero burst or
  // minimum, a maximum below the minimum, a decrease outside 1..999 permille,
  // a negative cooldown. REQUIRES: `cell` outlives the Ref.
  static absl::StatusOr<AdaptiveRef> Create(AdaptiveCell* cell, const AdaptiveConfig& config);

  // As BucketRef::TryAcquire at the current rate: one load of the rate, one
  // of the bucket, one CAS to admit; no write to refuse.
  Decision TryAcquire(uint64_t n, int64_t now_ns) const;

  // The provider accepted a call: the additive increase (one CAS).
  void OnSuccess() const;
  // The provider answered 429: the multiplicative decrease, unless one
  // happened within the cooldown. Returns whether the rate went down.
  bool OnRateLimited(int64_t now_ns) const;

  // The current rate, in thousandths of a permit per period.
  int64_t RateMilli() const;
  absl::Duration period() const { return absl::Nanoseconds(period_ns_); }

 private:
  AdaptiveRef(AdaptiveCell* cell, const AdaptiveConfig& config);

  AdaptiveCell* cell_;
  int64_t period_ns_;
  int64_t initial_milli_;
  int64_t min_milli_;
  int64_t max_milli_;
  int64_t increase_milli_;
  int64_t decrease_permille_;
  int64_t cooldown_ns_;
  int64_t burst_;
  int64_t epoch_ns_;
};

// SlidingLog
//
// The exact sliding window: at most `limit` permits in any window of length
// `window` (an admission at t counts during [t, t + window)). Keeps one
// (time, permits) entry per admission in a ring buffer of `limit` entries,
// allocated once, under a mutex: the lock and the O(limit) memory are the
// price of exactness.
struct SlidingLogConfig {
  uint64_t limit = 1;  // permits per window, 1 .. SlidingLog::kMaxLimit
  absl::Duration window = absl::Minutes(1);
};

class SlidingLog {
 public:
  static constexpr uint64_t kMaxLimit = uint64_t{1} << 20;

  // InvalidArgument naming the field: a zero or too large limit (the ring
  // holds one entry per permit at worst), a window not positive and finite.
  static absl::StatusOr<std::unique_ptr<SlidingLog>> Create(const SlidingLogConfig& config);

  // Takes n permits if the window ending at `now_ns` holds at most limit - n;
  // else kRefused with the exact wait until enough entries expire.
  // kNeverFits when n exceeds the limit.
  Decision TryAcquire(uint64_t n, int64_t now_ns);

  // Permits admitted in the window ending at `now_ns`.
  uint64_t InWindow(int64_t now_ns);

 private:
  struct Entry {
    int64_t time_ns;
    uint64_t permits;
  };
  SlidingLog(uint64_t limit, int64_t window_ns);
  void ExpireLocked(int64_t now_ns);  // REQUIRES: mu_ held

  const uint64_t limit_;
  const int64_t window_ns_;
  // A standard mutex rather than absl's: ThreadSanitizer sees through the
  // pthread calls under it, and the packaged Abseil is not instrumented.
  std::mutex mu_;
  // The log, all guarded by mu_.
  std::vector<Entry> ring_;
  size_t head_ = 0;  // oldest entry
  size_t size_ = 0;
  uint64_t total_ = 0;
  int64_t last_ns_ = std::numeric_limits<int64_t>::min();
};

// Algorithm
//
// The algorithms the lab compares, and their command-line names.
enum class Algorithm : uint8_t {
  kTokenBucket,    // "token-bucket"
  kPacer,          // "pacer"
  kFixedWindow,    // "fixed-window"
  kSlidingLog,     // "sliding-log"
  kSlidingWindow,  // "sliding-window"
  kConcurrency,    // "concurrency"
  kAdaptive,       // "adaptive"
  kCustom,         // "custom": a user's own Limiter; not in kAllAlgorithms
};
inline constexpr Algorithm kAllAlgorithms[] = {
    Algorithm::kTokenBucket, Algorithm::kPacer,         Algorithm::kFixedWindow,
    Algorithm::kSlidingLog,  Algorithm::kSlidingWindow, Algorithm::kConcurrency,
    Algorithm::kAdaptive,
};

absl::string_view AlgorithmName(Algorithm algorithm);
// InvalidArgument naming `name` and listing the known names.
absl::StatusOr<Algorithm> ParseAlgorithm(absl::string_view name);

// LimiterConfig
//
// One limit, "rate.permits() per rate.period()", as each algorithm reads it:
// the token bucket refills at `rate` up to `burst`; the pacer spaces permits
// at period / permits; the window algorithms allow permits per window of one
// period; the adaptive limiter starts at `rate` (tuned by `adaptive`, whose
// `initial` and `epoch_ns` are ignored); the concurrency limiter ignores the
// rate and allows `max_in_flight` calls at once.
struct LimiterConfig {
  Algorithm algorithm = Algorithm::kTokenBucket;
  Rate rate = Rate::PerMinute(1000);
  uint64_t burst = 0;  // token bucket capacity; 0: rate.permits()
  uint32_t max_in_flight = 1;
  AdaptiveConfig adaptive = {};
};

// Admission
//
// A Limiter's answer. For kRefused, wait_ns is when trying again may succeed,
// or kWaitForRelease when only a call finishing can make room (concurrency).
struct Admission {
  Outcome outcome;
  int64_t wait_ns;
  int32_t lease = -1;  // the concurrency lease taken; Release returns it

  bool granted() const { return outcome == Outcome::kGranted; }
};
inline constexpr int64_t kWaitForRelease = std::numeric_limits<int64_t>::max();

// Limiter
//
// Every algorithm behind one interface, over a cell in process memory. The
// interface dispatches virtually: it is for comparing algorithms, not for the
// hot path (use the Refs there).
//
// A user's own algorithm joins the lab by implementing it: TryAcquire on the
// `now_ns` the lab passes (simulated time, never decreasing), Release and
// OnResponse if it cares, and algorithm() returning Algorithm::kCustom; the
// lab names it by the name it was registered under (see the lab's
// LabLimiter, and examples/lab-trace).
class Limiter {
 public:
  virtual ~Limiter() = default;

  // A limiter per `config`, fresh (full, empty windows) at `now_ns`.
  // InvalidArgument naming what is wrong with the config, or for
  // Algorithm::kCustom (a user's own, which only its user can build).
  static absl::StatusOr<std::unique_ptr<Limiter>> Create(const LimiterConfig& config,
                                                         int64_t now_ns);

  virtual Admission TryAcquire(uint64_t n, int64_t now_ns) = 0;
  // The call that `admission` let through has finished (the concurrency
  // limiter returns its lease; the others ignore it).
  virtual void Release(const Admission& admission, int64_t now_ns);
  // The provider's answer to an admitted call (the adaptive limiter learns
  // from it; the others ignore it).
  virtual void OnResponse(bool rate_limited, int64_t now_ns);

  virtual Algorithm algorithm() const = 0;
};

}  // namespace sluice

#endif  // SLUICE_LAB_ALGORITHMS_H_
