// File: window_counter.h
// -----------------------------------------------------------------------------
// A fixed-window counter in one atomic 64-bit word: the window's id in the
// high 21 bits, the amount used in it in the low 43. A new window starts at
// zero the first time anyone touches it. Used for calendar budgets (window =
// UTC day or month, amount = micro-dollars, up to 8.7 million USD a window)
// and as the lab's fixed-window limiter.
//
// The caller names the window (so a day, a month or a minute are all just
// ids); the counter never moves backwards to an older window: an older id
// counts against the newer window, which can only make it stricter.
//
// Thread safety: every operation is lock-free (one load and one CAS) and safe
// from any number of threads and processes; the cell may live in shared memory.

#ifndef SLUICE_WINDOW_COUNTER_H_
#define SLUICE_WINDOW_COUNTER_H_

#include <atomic>
#include <cstdint>

namespace sluice {

class alignas(64) WindowCounterCell {
 public:
  WindowCounterCell() = default;
  WindowCounterCell(const WindowCounterCell&) = delete;
  WindowCounterCell& operator=(const WindowCounterCell&) = delete;

 private:
  friend class WindowCounterRef;
  std::atomic<int64_t> word_{0};
};

class WindowCounterRef {
 public:
  static constexpr int kAmountBits = 43;
  static constexpr int64_t kMaxAmount = (int64_t{1} << kAmountBits) - 1;
  static constexpr int64_t kMaxWindow = (int64_t{1} << (63 - kAmountBits)) - 1;

  // REQUIRES: `cell` outlives this WindowCounterRef.
  explicit WindowCounterRef(WindowCounterCell* cell) : cell_(cell) {}

  // Adds `amount` to window `window` if the total stays within `limit` and
  // within kMaxAmount (a larger `limit` is no larger than kMaxAmount).
  // Returns false, changing nothing, when it would not, or for a negative
  // amount. REQUIRES: 0 <= window <= kMaxWindow.
  bool TryAdd(int64_t window, int64_t amount, int64_t limit) const;

  // Gives back `amount` taken in `window`, never below zero. Once that window
  // has ended the refund is dropped: the next window owes nothing to it.
  void Refund(int64_t window, int64_t amount) const;

  // Adds `amount` unconditionally (saturating): for settling an estimate. An
  // amount for an ended window counts against the current one.
  void Debit(int64_t window, int64_t amount) const;

  // The amount used in `window` (0 if the counter has not reached it yet).
  int64_t Used(int64_t window) const;

  // The window the counter is in and the amount used in it, read together:
  // for monitors, which do not know which window the writers are in.
  struct Reading {
    int64_t window;
    int64_t used;
  };
  Reading Load() const;

 private:
  WindowCounterCell* cell_;
};

}  // namespace sluice

#endif  // SLUICE_WINDOW_COUNTER_H_
