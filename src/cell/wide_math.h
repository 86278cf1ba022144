// Arithmetic on the cell's 128-bit quantities that needs a 256-bit product:
// rescaling a TAT from one span to another (reconfiguration) and a refund's
// share of a span. Off the admit path.
//
// Thread safety: pure functions.

#ifndef SLUICE_SRC_CELL_WIDE_MATH_H_
#define SLUICE_SRC_CELL_WIDE_MATH_H_

#include <cstdint>

namespace sluice::internal_cell {

using u128 = unsigned __int128;

// a * b / c, rounded down (or up when `round_up`), saturated at `limit`.
// REQUIRES: c > 0.
inline u128 MulDiv(u128 a, u128 b, u128 c, bool round_up, u128 limit) {
  constexpr u128 kLow = ~uint64_t{0};
  // The 256-bit product as hi:lo, from four 64 x 64 -> 128 products.
  const u128 p00 = (a & kLow) * (b & kLow);
  const u128 p01 = (a & kLow) * (b >> 64);
  const u128 p10 = (a >> 64) * (b & kLow);
  const u128 p11 = (a >> 64) * (b >> 64);
  const u128 mid = (p00 >> 64) + (p01 & kLow) + (p10 & kLow);
  const u128 lo = (p00 & kLow) | (mid << 64);
  const u128 hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
  if (hi >= c) return limit;  // the quotient needs more than 128 bits
  u128 q = 0;
  u128 r = hi;
  if (hi == 0) {
    q = lo / c;
    r = lo % c;
  } else {
    // Long division, one bit at a time: r < c throughout, and a bit that
    // falls off the top of r << 1 means r * 2 + bit >= 2^128 > c.
    for (int i = 127; i >= 0; --i) {
      const bool carry = (r >> 127) != 0;
      r = (r << 1) | ((lo >> i) & 1);
      q <<= 1;
      if (carry || r >= c) {
        r -= c;
        q |= 1;
      }
    }
  }
  if (round_up && r != 0 && q < limit) ++q;
  return q < limit ? q : limit;
}

}  // namespace sluice::internal_cell

#endif  // SLUICE_SRC_CELL_WIDE_MATH_H_
