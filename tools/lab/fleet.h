// File: tools/lab/fleet.h
// -----------------------------------------------------------------------------
// The fleet lab (`sluice lab --fleet`): H hosts (up to a few thousand) leasing
// permits from one bucket on Redis, simulated on simulated time, so that the
// lease sizing rule (sluice/lease_sizing.h) is chosen from figures rather than
// guessed, for fleets larger than one machine can test.
//
// The protocol simulated, the one the refiller follows:
//   * Redis holds one bucket, rate R and capacity C, full at time 0
//     (tools/lab/fleet_redis.h: exact integer arithmetic that shares no code
//     with sluice's cells). With `cap_outstanding`, every call also reports
//     what the host admitted since its last one, and Redis keeps the
//     bucket's level below C minus the permits out in pools.
//   * Each host admits a request (one permit) from its local pool if the pool
//     holds a permit and no earlier request waits; otherwise the request waits
//     in the host's FIFO queue and is admitted when a lease tops the pool up.
//     A request that has waited longer than `max_wait` gives up. The pool
//     never refills by itself.
//   * The refiller: while the pool holds fewer than the plan's watermark and
//     no lease is in flight, the host sends LEASE(plan.lease + what its queue
//     needs). Redis grants g = min(want, whole permits available) when the
//     request arrives, a round trip / 2 after it was sent, and marks the host
//     alive; the grant reaches the host a round trip / 2 later. When g < want
//     Redis also says when the rest would be there; the host asks again no
//     sooner than that, no sooner than one round trip after the answer, and
//     no sooner than a uniform draw from [plan.backoff, 2 plan.backoff).
//   * plan = PlanLease({C, demand, round trip, hosts alive, R}): demand is the
//     host's requests per second (admitted or not), an exponentially weighted
//     rate with a time constant of `demand_window`; hosts alive is what Redis
//     counted in its last answer (hosts that called it in the last minute).
//   * A host whose pool has had no admit (nor grant) for `idle_return` sends
//     RETURN(pool); Redis adds it back, never above C. At the end of the run
//     every host returns its pool.
//   * A crashed host loses its pool and its queue, and any grant on its way;
//     it restarts later with an empty pool.
//
// The judge: over every window ending at an admission, for a few lengths W,
// permits admitted by all hosts <= C + R W; and total admitted <= total
// leased <= C + R t. Every window over the bound is an over-admission.
//
// Everything is integer nanoseconds and a seeded generator: the same config
// gives the same numbers.
//
// Thread safety: the functions are pure; call them from any thread.

#ifndef SLUICE_TOOLS_LAB_FLEET_H_
#define SLUICE_TOOLS_LAB_FLEET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "sluice/rate.h"

namespace sluice::lab {

// FleetWorkload
//
// Demand over the hosts, relative to the fleet's offered load L (requests
// per second across all hosts, `load` times the rate R).
enum class FleetWorkload : uint8_t {
  kSteady,  // "steady": every host Poisson at L / H
  kBursty,  // "bursty": every host on 2 s at 4 L / H, off 6 s, random phase
  kSkewed,  // "skewed": H / 20 hot hosts (at least 1) share L; the rest share 1% of R
  kCrash,   // "crash": steady, and a tenth of the hosts (at least 1) crash once, down 5 s
};
inline constexpr FleetWorkload kAllFleetWorkloads[] = {
    FleetWorkload::kSteady, FleetWorkload::kBursty, FleetWorkload::kSkewed, FleetWorkload::kCrash};

absl::string_view FleetWorkloadName(FleetWorkload workload);
// InvalidArgument naming `name` and listing the known names.
absl::StatusOr<FleetWorkload> ParseFleetWorkload(absl::string_view name);

// A deliberately broken refiller, for tests that the judge can fail.
enum class FleetFault : uint8_t {
  kNone,
  // Each pool also refills on its own at R / H, as a local token bucket
  // would: admits past the leases.
  kPoolRefillsItself,
};

struct FleetConfig {
  uint32_t hosts = 10;                    // 1 .. kMaxFleetHosts
  Rate limit = Rate::PerSecond(100'000);  // R
  uint64_t capacity = 600'000;            // C, permits
  absl::Duration round_trip = absl::Milliseconds(1);
  absl::Duration duration = absl::Minutes(1);
  double load = 1.2;  // offered requests per second, over R, the whole fleet
  absl::Duration max_wait = absl::Seconds(1);       // a request waiting longer gives up
  absl::Duration idle_return = absl::Seconds(1);    // no admit this long: return the pool
  absl::Duration demand_window = absl::Seconds(1);  // time constant of the demand estimate
  uint64_t seed = 1;
  // Redis caps its bucket's level at C minus the permits out in pools, as
  // the hosts report them (see tools/lab/fleet_redis.h); false: the plain
  // protocol, which can admit past C + R W when pools outlive a refill.
  bool cap_outstanding = true;
  FleetFault fault = FleetFault::kNone;
};

inline constexpr uint32_t kMaxFleetHosts = 10'000;

// OK, or InvalidArgument naming the field that is wrong (including a run
// that would offer more than 100 million requests).
absl::Status ValidateFleetConfig(const FleetConfig& config);

// The judge's verdict on windows of one length.
struct FleetWindow {
  int64_t window_ns = 0;
  int64_t most = 0;   // the most admitted in one window
  int64_t bound = 0;  // floor(C + R W)
  int64_t over = 0;   // windows (ending at an admission) above the bound
};

struct FleetMetrics {
  int64_t offered = 0;
  int64_t admitted = 0;
  int64_t gave_up = 0;          // waited longer than max_wait, or still waiting at the end
  int64_t lost_queued = 0;      // waiting on a host when it crashed
  int64_t allowed = 0;          // floor(C + R t), t the duration
  double utilization = 0;       // admitted / allowed
  int64_t over_admissions = 0;  // windows above their bound, plus cumulative breaches
  std::vector<FleetWindow> windows;
  int64_t leased = 0;           // granted by Redis, net of what came back
  int64_t returned_at_end = 0;  // in pools at the end (leased but unused), returned
  int64_t lost_in_crashes = 0;  // in pools (or on their way) when a host crashed
  int64_t most_pooled = 0;      // the most held in all pools at once
  int64_t pool_breaches = 0;    // grants leaving a pool above lease + watermark + queued
  double fairness = 1;          // Jain's index of admitted / offered over the hosts of equal demand
  double hot_share = 0;         // skewed: what the hot hosts admitted, over `allowed`
  int64_t lease_calls = 0;
  int64_t return_calls = 0;
  double commands_per_second = 0;  // (lease + return calls) / t
  double commands_per_1000 = 0;    // per 1,000 admitted
  int64_t wait_p50_ns = 0;         // admitted requests, arrival to admission
  int64_t wait_p99_ns = 0;
  int64_t wait_max_ns = 0;
};

struct FleetResult {
  FleetWorkload workload = FleetWorkload::kSteady;
  uint32_t hosts = 0;
  absl::Duration round_trip;
  FleetMetrics metrics = {};
};

// One workload on one fleet (see the file comment). InvalidArgument as
// ValidateFleetConfig.
absl::StatusOr<FleetResult> SimulateFleet(const FleetConfig& config, FleetWorkload workload);

// Every workload on every host count, in the order given: `config.hosts` is
// replaced by each of `hosts` in turn.
absl::StatusOr<std::vector<FleetResult>> RunFleetLab(const FleetConfig& config,
                                                     absl::Span<const uint32_t> hosts,
                                                     absl::Span<const FleetWorkload> workloads);

// The summary table: a heading row, then one row per result.
std::vector<std::vector<std::string>> FleetRows(absl::Span<const FleetResult> results);
// The config and every result's metrics.
nlohmann::ordered_json FleetToJson(const FleetConfig& config,
                                   absl::Span<const FleetResult> results);

}  // namespace sluice::lab

#endif  // SLUICE_TOOLS_LAB_FLEET_H_
