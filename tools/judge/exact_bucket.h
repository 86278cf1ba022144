// File: tools/judge/exact_bucket.h
// -----------------------------------------------------------------------------
// An ExactBucket is a continuously refilling token bucket kept in exact
// integer arithmetic under a mutex: the limiter that the simulated provider
// and the lab's provider model enforce, and that tests hold sluice's own
// bucket cell against.
//
// Why it exists: a provider that judged its 429s with sluice's GCRA cell
// would share every bug of the cell it is meant to judge, and no test using
// it could see one. So this is an independent judge: it never includes or
// calls the cell's code, keeps the plain "level and last refill time"
// representation instead of a theoretical arrival time, and is written to be
// obviously right rather than fast.
//
// The arithmetic. A bucket refills `permits` permits every `period_ns`
// nanoseconds up to `capacity` permits. The level is kept in parts of a
// permit: one permit is period_ns parts, so the bucket gains exactly
// `permits` parts per nanosecond and no refill is ever rounded. Levels are
// 128-bit: with every parameter at most 2^62, capacity * period_ns and
// elapsed_ns * permits fit with room to spare, and debt saturates at
// -2^126 parts rather than wrapping. A request for n permits fits when the
// level holds n * period_ns parts; a wait is the shortfall divided by
// `permits`, rounded up to the next whole nanosecond, so a caller who waits
// it is never early. Nothing is floating point.
//
// Time never goes backwards: a now_ns older than the latest one seen reads as
// that latest time (the bucket neither refills nor rewinds), and waits are
// still counted from the caller's now_ns.
//
// Thread safety: every method is safe to call concurrently from any number of
// threads; each holds the bucket's one mutex for its whole operation, so each
// operation is atomic with respect to the others.
//
// Example:
//   auto bucket = sluice::ExactBucket::Create(
//       {.permits = 60, .period_ns = 60'000'000'000, .capacity = 60}, now_ns);
//   if (!bucket.ok()) return bucket.status();
//   ExactBucket::TakeResult r = (*bucket)->TryTake(1, now_ns);
//   if (!r.taken) Answer429(absl::Nanoseconds(r.wait_ns));

#ifndef SLUICE_TOOLS_JUDGE_EXACT_BUCKET_H_
#define SLUICE_TOOLS_JUDGE_EXACT_BUCKET_H_

#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace sluice {

// ExactBucketConfig
//
// `permits` permits every `period_ns` nanoseconds, at most `capacity` held.
// Each must be at least 1 and at most kMaxExactBucketParameter.
struct ExactBucketConfig {
  uint64_t permits = 1;
  int64_t period_ns = 1'000'000'000;
  uint64_t capacity = 1;
};

// 2^62: keeps every product of two parameters, and of a parameter and an
// elapsed time, inside 128 bits.
inline constexpr uint64_t kMaxExactBucketParameter = uint64_t{1} << 62;

class ExactBucket {
 public:
  // OK, or InvalidArgument naming the field out of [1, 2^62].
  static absl::Status Validate(const ExactBucketConfig& config);

  // A full bucket whose clock starts at `now_ns`. InvalidArgument as Validate.
  static absl::StatusOr<std::unique_ptr<ExactBucket>> Create(const ExactBucketConfig& config,
                                                             int64_t now_ns);

  ExactBucket(const ExactBucket&) = delete;
  ExactBucket& operator=(const ExactBucket&) = delete;

  struct TakeResult {
    bool taken = false;       // the n permits were taken
    bool never_fits = false;  // n > Capacity(): no wait will ever do
    // Refused but fits: ns from now_ns until n permits will be there,
    // rounded up (saturated at INT64_MAX). 0 otherwise.
    int64_t wait_ns = 0;
  };

  // Takes n permits if the level holds them at `now_ns`; otherwise changes
  // nothing and says how long until it will.
  TakeResult TryTake(uint64_t n, int64_t now_ns);

  // Gives back n permits, but never more than makes the bucket full.
  void Refund(uint64_t n, int64_t now_ns);

  // Takes n permits unconditionally: the level may go below zero (debt),
  // and the bucket refills from there.
  void Debit(uint64_t n, int64_t now_ns);

  // Whole permits held at `now_ns`, rounded down; 0 while in debt.
  int64_t Available(int64_t now_ns) const;

  // Ns from `now_ns` until the bucket is full again, rounded up; 0 when full.
  int64_t NanosUntilFull(int64_t now_ns) const;

  // The most permits the bucket holds.
  uint64_t Capacity() const { return config_.capacity; }

 private:
  using Parts = __int128;  // 1/period_ns of a permit

  ExactBucket(const ExactBucketConfig& config, int64_t now_ns);

  // The level at `now_ns`, refilled since last_ns_ (no refill for a stale now).
  Parts LevelAt(int64_t now_ns) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Moves the bucket's clock to `now_ns`, refilling, unless it is stale.
  void AdvanceTo(int64_t now_ns) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ns from `now_ns` until `shortfall` parts have refilled, rounded up.
  int64_t WaitFor(Parts shortfall, int64_t now_ns) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const ExactBucketConfig config_;
  const Parts capacity_parts_;  // capacity * period_ns

  mutable absl::Mutex mu_;
  Parts level_ ABSL_GUARDED_BY(mu_);  // may be negative: debt
  int64_t last_ns_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice

#endif  // SLUICE_TOOLS_JUDGE_EXACT_BUCKET_H_
