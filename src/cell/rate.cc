#include "sluice/rate.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sluice {
namespace {

// The units a rate may be written in, with every spelling accepted.
constexpr std::pair<absl::string_view, absl::Duration> kUnits[] = {
    {"s", absl::Seconds(1)},       {"sec", absl::Seconds(1)}, {"second", absl::Seconds(1)},
    {"seconds", absl::Seconds(1)}, {"min", absl::Minutes(1)}, {"minute", absl::Minutes(1)},
    {"minutes", absl::Minutes(1)}, {"h", absl::Hours(1)},     {"hour", absl::Hours(1)},
    {"hours", absl::Hours(1)},     {"day", absl::Hours(24)},  {"days", absl::Hours(24)},
};

}  // namespace

absl::StatusOr<Rate> Rate::Parse(absl::string_view text) {
  const size_t slash = text.find('/');
  if (slash == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate '", text, "' must be N/UNIT with UNIT one of s, min, h, day"));
  }
  const absl::string_view count = absl::StripAsciiWhitespace(text.substr(0, slash));
  const absl::string_view unit = absl::StripAsciiWhitespace(text.substr(slash + 1));
  uint64_t permits = 0;
  if (!absl::SimpleAtoi(count, &permits) || permits == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate '", text, "': '", count, "' is not a positive whole number"));
  }
  for (const auto& [name, period] : kUnits) {
    if (unit == name) return Rate(permits, period);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("rate '", text, "': unknown unit '", unit, "' (expected s, min, h or day)"));
}

absl::Status Rate::Validate() const {
  if (permits_ == 0) {
    return absl::InvalidArgumentError(absl::StrCat("rate ", ToString(), ": permits must be >= 1"));
  }
  if (period_ <= absl::ZeroDuration() || period_ == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate ", ToString(), ": the period must be positive and finite"));
  }
  return absl::OkStatus();
}

std::string Rate::ToString() const {
  if (period_ == absl::Seconds(1)) return absl::StrCat(permits_, "/s");
  if (period_ == absl::Minutes(1)) return absl::StrCat(permits_, "/min");
  if (period_ == absl::Hours(1)) return absl::StrCat(permits_, "/h");
  if (period_ == absl::Hours(24)) return absl::StrCat(permits_, "/day");
  return absl::StrCat(permits_, "/", absl::FormatDuration(period_));
}

}  // namespace sluice
