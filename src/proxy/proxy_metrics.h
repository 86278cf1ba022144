// The proxy's counters, and GET /metrics: the segment's buckets (the stats
// layer's Prometheus text) followed by the proxy's own counters. Internal to
// src/proxy.
//
// Thread safety: ProxyCounters may be updated and read from any thread.

#ifndef SLUICE_SRC_PROXY_PROXY_METRICS_H_
#define SLUICE_SRC_PROXY_PROXY_METRICS_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "sluice/limits.h"
#include "sluice/proxy.h"

namespace sluice {
namespace proxy_internal {

struct ProxyCounters {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> throttled{0};
  std::atomic<uint64_t> queued_now{0};
  std::atomic<uint64_t> rejected_queue_full{0};
  std::atomic<uint64_t> rejected_timeout{0};
  std::atomic<uint64_t> client_gone{0};
  std::atomic<uint64_t> bad_requests{0};
  std::atomic<uint64_t> upstream_errors{0};
  std::atomic<uint64_t> upstream_rate_limited{0};
  std::atomic<uint64_t> reloads{0};

  ProxyStats Snapshot() const;
};

// Prometheus text: the buckets of segment `segment` under `config` (none
// when `segment` is empty or cannot be read: a comment says why), then the
// proxy's counters as sluice_proxy_*.
std::string MetricsText(const std::string& segment, const LimitsConfig& config,
                        const ProxyStats& stats);

}  // namespace proxy_internal
}  // namespace sluice

#endif  // SLUICE_SRC_PROXY_PROXY_METRICS_H_
