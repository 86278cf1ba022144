// File: stats_exposition.h
// -----------------------------------------------------------------------------
// The machine-readable forms of a stats snapshot (stats.h): one JSON document,
// and the Prometheus text exposition format 0.0.4 that a /metrics endpoint
// serves. (The CLI's text table is a rendering of its own, in tools/stats.)
//
// JSON: nlohmann ordered_json dumped with a 2-space indent, UTC RFC 3339
// times; bytes of names that are not UTF-8 become U+FFFD. Prometheus: one
// HELP and one TYPE line before each metric family's samples, families
// without samples left out, label values escaped and made valid UTF-8, all
// metric names prefixed sluice_ and counters suffixed _total.
//
// Thread safety: the functions are pure.

#ifndef SLUICE_STATS_EXPOSITION_H_
#define SLUICE_STATS_EXPOSITION_H_

#include <string>

#include "absl/strings/string_view.h"
#include "sluice/stats.h"

namespace sluice {

std::string FormatStatsJson(const StatsSnapshot& snapshot);
std::string FormatPrometheus(const StatsSnapshot& snapshot);

// The Content-Type of FormatPrometheus's output.
inline constexpr absl::string_view kPrometheusContentType =
    "text/plain; version=0.0.4; charset=utf-8";

}  // namespace sluice

#endif  // SLUICE_STATS_EXPOSITION_H_
