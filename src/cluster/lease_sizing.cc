// The lease sizing rule (sluice/lease_sizing.h).

#include "sluice/lease_sizing.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace sluice {

LeasePlan PlanLease(const LeaseInputs& in) {
  const uint64_t hosts = std::max<uint32_t>(in.hosts_alive, 1);
  const absl::Duration horizon = std::min(
      kMaxLeaseHorizon,
      std::max({kMinLeaseHorizon, kLeaseRoundTrips * in.round_trip,
                absl::Seconds(1) * static_cast<double>(hosts) / kFleetLeaseCallsPerSecond}));
  const uint64_t share = std::max<uint64_t>(in.capacity / (2 * hosts), 1);
  // Demand is clamped before it meets arithmetic: negative, NaN or absurd
  // figures read as none or as the share.
  double wanted = in.demand_per_second * absl::ToDoubleSeconds(horizon);
  if (!(wanted > 0)) wanted = 0;
  const uint64_t lease = wanted >= static_cast<double>(share)
                             ? share
                             : std::max<uint64_t>(static_cast<uint64_t>(std::ceil(wanted)), 1);
  absl::Duration backoff = horizon / 2;
  if (in.rate_per_second > 0) {  // false for NaN too
    backoff = std::min(backoff,
                       absl::Seconds(static_cast<double>(in.capacity) / (4 * in.rate_per_second)));
  }
  return {.lease = lease, .watermark = (lease + 1) / 2, .backoff = backoff};
}

}  // namespace sluice
