#include "sluice/window_counter.h"

#include <algorithm>

namespace sluice {
namespace {

constexpr int kBits = WindowCounterRef::kAmountBits;
constexpr int64_t kMask = WindowCounterRef::kMaxAmount;

int64_t WindowOf(int64_t word) { return word >> kBits; }
int64_t AmountOf(int64_t word) { return word & kMask; }
int64_t Pack(int64_t window, int64_t amount) { return (window << kBits) | amount; }

}  // namespace

bool WindowCounterRef::TryAdd(int64_t window, int64_t amount, int64_t limit) const {
  int64_t word = cell_->word_.load(std::memory_order_acquire);
  for (;;) {
    // An older window id counts against the newer window the word holds.
    const int64_t current = std::max(WindowOf(word), window);
    const int64_t used = current == WindowOf(word) ? AmountOf(word) : 0;
    // Whatever the caller's limit, the amount field holds at most kMaxAmount:
    // anything more would carry into the window bits.
    if (amount < 0 || amount > std::min(limit, kMask) - used) return false;
    if (cell_->word_.compare_exchange_weak(word, Pack(current, used + amount),
                                           std::memory_order_acq_rel, std::memory_order_acquire)) {
      return true;
    }
  }
}

void WindowCounterRef::Refund(int64_t window, int64_t amount) const {
  int64_t word = cell_->word_.load(std::memory_order_acquire);
  for (;;) {
    if (WindowOf(word) != window) return;  // that window is over (or not begun)
    const int64_t used = AmountOf(word) - std::min(amount, AmountOf(word));
    if (cell_->word_.compare_exchange_weak(word, Pack(window, used), std::memory_order_acq_rel,
                                           std::memory_order_acquire)) {
      return;
    }
  }
}

void WindowCounterRef::Debit(int64_t window, int64_t amount) const {
  int64_t word = cell_->word_.load(std::memory_order_acquire);
  for (;;) {
    const int64_t current = std::max(WindowOf(word), window);
    const int64_t used = current == WindowOf(word) ? AmountOf(word) : 0;
    const int64_t total = amount > kMask - used ? kMask : used + amount;
    if (cell_->word_.compare_exchange_weak(word, Pack(current, total), std::memory_order_acq_rel,
                                           std::memory_order_acquire)) {
      return;
    }
  }
}

int64_t WindowCounterRef::Used(int64_t window) const {
  const int64_t word = cell_->word_.load(std::memory_order_acquire);
  return WindowOf(word) == window ? AmountOf(word) : 0;
}

WindowCounterRef::Reading WindowCounterRef::Load() const {
  const int64_t word = cell_->word_.load(std::memory_order_acquire);
  return {WindowOf(word), AmountOf(word)};
}

}  // namespace sluice
