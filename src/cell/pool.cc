#include "sluice/pool.h"

#include <algorithm>

#include "src/cell/bucket_params.h"

namespace sluice {

using internal_gcra::Derive;
using internal_gcra::Derived;
using internal_gcra::kMaxTat;
using internal_gcra::kMaxTau;
using internal_gcra::kPoolEpoch;

namespace {

// The permits a pool holds at TAT `tat` (negative: the permits it owes):
// floor((tau - tat) / interval), as BucketRef::Available reads it at a now of
// 0. Every operation here reads the word through it and moves it by exactly
// the permits it reports. A cell with parameters out of range (wiped, say)
// reads as holding nothing and owing nothing.
struct Level {
  bool sound;        // the parameters are in range
  int64_t held;      // permits held, negative when owed
  int64_t capacity;  // tau / interval
};

Level LevelOf(int64_t word, int64_t interval, int64_t tau) {
  if (interval <= 0 || tau < interval || tau > kMaxTau) return {false, 0, 0};
  // A TAT below 0 (the now of a pool) is a full pool, as Reserve reads it.
  const int64_t room = tau - std::max<int64_t>(word >> 1, 0);
  const int64_t held = room >= 0 ? room / interval : -((-room + interval - 1) / interval);
  return {true, held, tau / interval};
}

}  // namespace

absl::Status PoolRef::Init(BucketCell* cell, const BucketConfig& config) {
  absl::StatusOr<Derived> d = Derive(config);
  if (!d.ok()) return d.status();
  cell->Reset(d->interval, d->tau, kPoolEpoch, d->tau);  // TAT = tau: empty
  return absl::OkStatus();
}

bool PoolRef::IsPool(const BucketCell& cell) {
  const int64_t word = cell.word_.load(std::memory_order_acquire);
  return cell.params_[word & 1].epoch_ns.load(std::memory_order_relaxed) == kPoolEpoch;
}

absl::StatusOr<uint64_t> PoolRef::Reconfigure(BucketCell* cell, const BucketConfig& config) {
  absl::StatusOr<Derived> d = Derive(config);
  if (!d.ok()) return d.status();
  if (!IsPool(*cell)) {
    return absl::FailedPreconditionError("the cell is a bucket, not a pool");
  }
  int64_t word = cell->word_.load(std::memory_order_acquire);
  // Reconfigurations are serialized, so the slot in use stays the same while
  // admits move the word: its parameters can be read once.
  const BucketCell::Params& old = cell->params_[word & 1];
  const int64_t old_interval = old.interval.load(std::memory_order_relaxed);
  const int64_t old_tau = old.tau.load(std::memory_order_relaxed);
  const int slot = cell->StageParams(word, d->interval, d->tau, kPoolEpoch);
  const int64_t capacity = d->tau / d->interval;
  for (;;) {
    const Level level = LevelOf(word, old_interval, old_tau);
    const int64_t kept = std::min(level.held, capacity);
    // Held permits, or debt, counted under the new interval; debt saturates.
    const __int128 tat = static_cast<__int128>(d->tau) - static_cast<__int128>(kept) * d->interval;
    const int64_t next = static_cast<int64_t>(std::clamp<__int128>(tat, 0, kMaxTat));
    if (cell->word_.compare_exchange_weak(word, (next << 1) | slot, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
      return static_cast<uint64_t>(level.held - kept);
    }
  }
}

uint64_t PoolRef::Credit(uint64_t n) const { return Move(n, /*into=*/true); }

uint64_t PoolRef::Drain(uint64_t n) const { return Move(n, /*into=*/false); }

uint64_t PoolRef::Move(uint64_t n, bool into) const {
  int64_t word = cell_->word_.load(std::memory_order_acquire);
  for (;;) {
    const BucketCell::Params& p = cell_->params_[word & 1];
    const int64_t interval = p.interval.load(std::memory_order_relaxed);
    const Level level = LevelOf(word, interval, p.tau.load(std::memory_order_relaxed));
    // Into: room for the debt and the capacity; out: what is held. Both fit
    // in int64 by LevelOf's range.
    const int64_t limit = !level.sound ? 0 : into ? level.capacity - level.held : level.held;
    const int64_t moved = static_cast<int64_t>(std::min<uint64_t>(n, std::max<int64_t>(limit, 0)));
    if (moved == 0) return 0;
    const int64_t tat = std::max<int64_t>(word >> 1, 0);
    // Into: room * interval < tat + interval, so clamping at 0 (full) drops
    // at most a fraction of a permit and the pool gains exactly `moved`.
    // Out: held * interval <= tau - tat, so the TAT stays at or below tau.
    const int64_t next =
        into ? std::max<int64_t>(tat - moved * interval, 0) : tat + moved * interval;
    if (cell_->word_.compare_exchange_weak(word, (next << 1) | (word & 1),
                                           std::memory_order_acq_rel, std::memory_order_acquire)) {
      return static_cast<uint64_t>(moved);
    }
  }
}

int64_t PoolRef::Debt() const {
  const int64_t word = cell_->word_.load(std::memory_order_acquire);
  const BucketCell::Params& p = cell_->params_[word & 1];
  const Level level = LevelOf(word, p.interval.load(std::memory_order_relaxed),
                              p.tau.load(std::memory_order_relaxed));
  return level.held < 0 ? -level.held : 0;
}

}  // namespace sluice
