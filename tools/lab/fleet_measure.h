// File: tools/lab/fleet_measure.h
// -----------------------------------------------------------------------------
// What a fleet run (tools/lab/fleet.h) leaves behind, and the judge that
// turns it into figures: the windowed over-admission check against
// C + R W, utilization, fairness, Redis calls and waits.
//
// The judge reads only the trace: it never asks the simulated hosts or the
// bucket whether they behaved, so a broken refiller is caught by what it
// admitted.
//
// Thread safety: pure functions.

#ifndef SLUICE_TOOLS_LAB_FLEET_MEASURE_H_
#define SLUICE_TOOLS_LAB_FLEET_MEASURE_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "tools/lab/fleet.h"

namespace sluice::lab {

struct FleetHostTally {
  int64_t offered = 0;
  int64_t admitted = 0;
  bool hot = false;  // of the group of equal demand (every host, or skewed's hot ones)
};

struct FleetTrace {
  std::vector<int64_t> admitted_ns;  // every admission, in time order
  std::vector<int64_t> waits_ns;     // the same admissions' waits
  std::vector<FleetHostTally> hosts;
  bool skewed = false;
  int64_t duration_ns = 0;
  int64_t gave_up = 0;
  int64_t lost_queued = 0;
  int64_t lease_calls = 0;
  int64_t return_calls = 0;
  int64_t granted = 0;          // by Redis, all told
  int64_t returned = 0;         // sent back at idle
  int64_t returned_at_end = 0;  // in pools, or on the way to one, at the end
  int64_t lost_in_crashes = 0;
  int64_t most_pooled = 0;
  int64_t pool_breaches = 0;
  int64_t cumulative_breaches = 0;  // Redis granted past C + R t (the bucket's own check)
};

// floor(C + R t): what the bucket allows from time 0 to t_ns, or in any
// window of length t_ns.
int64_t AllowedBy(const FleetConfig& config, int64_t t_ns);

// The most of `sorted_ns` in a window (t - window_ns, t] and how many such
// windows, one ending at each admission t, hold more than `bound`.
FleetWindow JudgeWindow(absl::Span<const int64_t> sorted_ns, int64_t window_ns, int64_t bound);

// The figures of one run. Sorts trace.waits_ns.
FleetMetrics JudgeFleet(const FleetConfig& config, FleetTrace& trace);

}  // namespace sluice::lab

#endif  // SLUICE_TOOLS_LAB_FLEET_MEASURE_H_
