// File: rate.h
// -----------------------------------------------------------------------------
// A Rate is "N permits per period": 1000 requests per minute, 2,500,000 tokens
// per day. Kept as the integer pair the user wrote, never as a floating-point
// quotient, so that a bucket can derive its exact per-permit interval.
//
// Thread safety: Rate is an immutable value type.
//
// Example:
//   absl::StatusOr<sluice::Rate> rate = sluice::Rate::Parse("50/min");
//   sluice::Rate same = sluice::Rate::PerMinute(50);

#ifndef SLUICE_RATE_H_
#define SLUICE_RATE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sluice {

class Rate {
 public:
  // `permits` permits every `period`. Validity (permits >= 1, period > 0) is
  // checked where a Rate is used, by Validate().
  constexpr Rate(uint64_t permits, absl::Duration period) : permits_(permits), period_(period) {}

  static constexpr Rate PerSecond(uint64_t n) { return Rate(n, absl::Seconds(1)); }
  static constexpr Rate PerMinute(uint64_t n) { return Rate(n, absl::Minutes(1)); }
  static constexpr Rate PerHour(uint64_t n) { return Rate(n, absl::Hours(1)); }
  static constexpr Rate PerDay(uint64_t n) { return Rate(n, absl::Hours(24)); }

  // Parses "N/UNIT", UNIT one of s, sec, min, h, hour, day (and their plurals),
  // e.g. "50/min" or "2500000/day". Returns InvalidArgument naming the text and
  // what was wrong with it.
  static absl::StatusOr<Rate> Parse(absl::string_view text);

  uint64_t permits() const { return permits_; }
  absl::Duration period() const { return period_; }

  // OK, or InvalidArgument when permits is 0 or the period is not positive.
  absl::Status Validate() const;

  // "50/min" style; periods that are not one unit print as Abseil durations
  // ("7/1m30s").
  std::string ToString() const;

  friend bool operator==(const Rate& a, const Rate& b) = default;

 private:
  uint64_t permits_;
  absl::Duration period_;
};

}  // namespace sluice

#endif  // SLUICE_RATE_H_
