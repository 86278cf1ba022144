#include "sluice/pool.h"

#include <algorithm>
#include <limits>

#include "src/cell/bucket_params.h"

namespace sluice {

using internal_cell::Derive;
using internal_cell::Derived;
using internal_cell::kMaxCapacity;
using internal_cell::kMaxInterval;
using internal_cell::kMaxTat;
using internal_cell::kMaxUnitsPerNs;

namespace {

// The permits a pool holds at TAT `tat` (negative: the permits it owes):
// floor((tau - tat) / interval), as BucketRef::Available reads it at a now of
// 0. Every operation here reads the word through it and moves it by exactly
// the permits it reports. A cell with parameters out of range (wiped, say)
// reads as holding nothing and owing nothing.
struct Level {
  bool sound;         // the parameters are in range
  __int128 held;      // permits held, negative when owed
  __int128 capacity;  // permits
};

Level LevelOf(__int128 word, const BucketCell::Values& v) {
  if (v.interval < 1 || v.interval > kMaxInterval || v.capacity < 1 || v.capacity > kMaxCapacity ||
      v.units_per_ns < 1 || v.units_per_ns > kMaxUnitsPerNs) {
    return {false, 0, 0};
  }
  // A TAT below 0 (the now of a pool) is a full pool, as Reserve reads it.
  const __int128 room =
      static_cast<__int128>(v.capacity) * v.interval - std::max<__int128>(word >> 1, 0);
  const __int128 held = room >= 0 ? room / v.interval : -((-room + v.interval - 1) / v.interval);
  return {true, held, v.capacity};
}

BucketCell::Values PoolValues(const Derived& d) {
  return {d.interval, d.units_per_ns, d.capacity, /*time_scale=*/0};
}

}  // namespace

absl::Status PoolRef::Init(BucketCell* cell, const BucketConfig& config) {
  absl::StatusOr<Derived> d = Derive(config);
  if (!d.ok()) return d.status();
  // TAT = tau: empty.
  cell->Reset(PoolValues(*d), static_cast<__int128>(d->capacity) * d->interval);
  return absl::OkStatus();
}

bool PoolRef::IsPool(const BucketCell& cell) {
  const BucketCell::Values v = cell.Read(static_cast<int>(cell.word_.Load() & 1));
  return v.time_scale == 0 && v.interval > 0;
}

absl::StatusOr<uint64_t> PoolRef::Reconfigure(BucketCell* cell, const BucketConfig& config) {
  absl::StatusOr<Derived> d = Derive(config);
  if (!d.ok()) return d.status();
  if (!IsPool(*cell)) {
    return absl::FailedPreconditionError("the cell is a bucket, not a pool");
  }
  __int128 word = cell->word_.Load();
  // Reconfigurations are serialized, so the slot in use stays the same while
  // admits move the word: its parameters can be read once.
  const BucketCell::Values old = cell->Read(static_cast<int>(word & 1));
  const int slot = cell->StageParams(word, PoolValues(*d));
  const __int128 capacity = d->capacity;
  for (;;) {
    const Level level = LevelOf(word, old);
    const __int128 kept = std::min(level.held, capacity);
    // Held permits, or debt, counted under the new interval; debt saturates.
    const __int128 tat = (capacity - kept) * d->interval;
    const __int128 next = std::clamp<__int128>(tat, 0, kMaxTat);
    if (cell->word_.CompareExchange(word, (next << 1) | slot)) {
      return static_cast<uint64_t>(level.held - kept);  // at most the old capacity
    }
  }
}

uint64_t PoolRef::Credit(uint64_t n) const { return Move(n, /*into=*/true); }

uint64_t PoolRef::Drain(uint64_t n) const { return Move(n, /*into=*/false); }

uint64_t PoolRef::Move(uint64_t n, bool into) const {
  __int128 word = cell_->word_.Load();
  for (;;) {
    const BucketCell::Values v = cell_->Read(static_cast<int>(word & 1));
    const Level level = LevelOf(word, v);
    // Into: room for the debt and the capacity; out: what is held.
    const __int128 limit = !level.sound ? 0 : into ? level.capacity - level.held : level.held;
    const uint64_t moved = static_cast<uint64_t>(std::clamp<__int128>(limit, 0, n));
    if (moved == 0) return 0;
    const __int128 tat = std::max<__int128>(word >> 1, 0);
    // Into: room * interval < tat + interval, so clamping at 0 (full) drops
    // at most a fraction of a permit and the pool gains exactly `moved`.
    // Out: held * interval <= tau - tat, so the TAT stays at or below tau.
    const __int128 cost = static_cast<__int128>(moved) * v.interval;
    const __int128 next = into ? std::max<__int128>(tat - cost, 0) : tat + cost;
    if (cell_->word_.CompareExchange(word, (next << 1) | (word & 1))) {
      return moved;
    }
  }
}

int64_t PoolRef::Debt() const {
  const __int128 word = cell_->word_.Load();
  const Level level = LevelOf(word, cell_->Read(static_cast<int>(word & 1)));
  const __int128 most = std::numeric_limits<int64_t>::max();
  return level.held < 0 ? static_cast<int64_t>(std::min(-level.held, most)) : 0;
}

}  // namespace sluice
