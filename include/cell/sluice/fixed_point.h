// File: fixed_point.h
// -----------------------------------------------------------------------------
// Time as 64-bit fixed point, 1/16 ns units counted from an epoch, with
// per-permit intervals rounded up to a whole unit: the representation of the
// GCRA words that stay 64 bits wide, the lab's pacer and adaptive cells
// (sluice/lab/algorithms.h) and the fleet's Redis script. A rounded interval
// can only slow such a word down, never speed it up; the token bucket's own
// cell (token_bucket.h) is exact instead and does not use this.
//
// Thread safety: pure functions and constants.

#ifndef SLUICE_FIXED_POINT_H_
#define SLUICE_FIXED_POINT_H_

#include <algorithm>
#include <cstdint>

#include "absl/time/time.h"
#include "sluice/rate.h"

namespace sluice {

namespace internal_gcra {

// Fixed point: 2^kFracBits units per nanosecond.
inline constexpr int kFracBits = 4;
inline constexpr int64_t kUnitsPerNano = int64_t{1} << kFracBits;
// The TAT must fit in a 64-bit word above a slot bit.
inline constexpr int64_t kMaxTat = (int64_t{1} << 62) - 1;
// Longest burst span (tau), about 2.28 years; keeps now + tau + cost in range.
inline constexpr int64_t kMaxTau = int64_t{1} << 60;
// How far past its epoch a word can count, about 4.57 years. A later `now`
// reads as this much (the word stops refilling: it can only under-admit).
inline constexpr int64_t kMaxSinceEpochNs = (int64_t{1} << 57) - 1;

inline int64_t ToUnits(int64_t now_ns, int64_t epoch_ns) {
  int64_t since;
  if (__builtin_sub_overflow(now_ns, epoch_ns, &since)) since = now_ns < 0 ? 0 : kMaxSinceEpochNs;
  return std::clamp<int64_t>(since, 0, kMaxSinceEpochNs) << kFracBits;
}

inline int64_t UnitsToNanosCeil(int64_t units) {
  return (units >> kFracBits) + ((units & (kUnitsPerNano - 1)) != 0);
}

// period / permits in units, rounded up (so a non-exact interval can only
// slow a bucket down). Wide: the caller checks it against its range.
inline __int128 IntervalUnits(const Rate& rate) {
  const __int128 period_units =
      static_cast<__int128>(absl::ToInt64Nanoseconds(rate.period())) * kUnitsPerNano;
  const __int128 permits = rate.permits();
  return (period_units + permits - 1) / permits;
}

// A wait in ns as units, saturated so that now + tau + wait stays in range.
inline int64_t WaitToUnits(int64_t wait_ns) {
  return std::clamp<int64_t>(wait_ns, 0, kMaxTat >> (kFracBits + 1)) << kFracBits;
}

}  // namespace internal_gcra

}  // namespace sluice

#endif  // SLUICE_FIXED_POINT_H_
