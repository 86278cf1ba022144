#include "src/proxy/proxy_metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sluice/stats.h"
#include "sluice/stats_exposition.h"

namespace sluice {
namespace proxy_internal {

ProxyStats ProxyCounters::Snapshot() const {
  ProxyStats s;
  s.requests = requests.load();
  s.throttled = throttled.load();
  s.queued_now = queued_now.load();
  s.rejected_queue_full = rejected_queue_full.load();
  s.rejected_timeout = rejected_timeout.load();
  s.client_gone = client_gone.load();
  s.bad_requests = bad_requests.load();
  s.upstream_errors = upstream_errors.load();
  s.upstream_rate_limited = upstream_rate_limited.load();
  s.reloads = reloads.load();
  return s;
}

std::string MetricsText(const std::string& segment, const LimitsConfig& config,
                        const ProxyStats& stats) {
  std::string text;
  if (!segment.empty()) {
    absl::StatusOr<StatsSnapshot> snapshot = TakeStatsSnapshot(segment, &config);
    if (snapshot.ok()) {
      text = FormatPrometheus(*snapshot);
    } else {
      absl::StrAppend(&text, "# segment not readable: ", snapshot.status().message(), "\n");
    }
  }
  const struct {
    const char* name;
    const char* type;
    const char* help;
    uint64_t value;
  } rows[] = {
      {"requests_total", "counter", "Requests received.", stats.requests},
      {"throttled_total", "counter", "Requests routed through the queue.", stats.throttled},
      {"queued", "gauge", "Requests waiting in the queue or the throttle now.", stats.queued_now},
      {"rejected_queue_full_total", "counter", "Requests answered 429: the queue was full.",
       stats.rejected_queue_full},
      {"rejected_timeout_total", "counter",
       "Requests answered 429: not served within the queue timeout, never fitting, or over "
       "budget.",
       stats.rejected_timeout},
      {"client_gone_total", "counter", "Clients that went away before their answer.",
       stats.client_gone},
      {"bad_requests_total", "counter", "Requests answered 400, 401 or 413 by the proxy.",
       stats.bad_requests},
      {"upstream_errors_total", "counter", "Requests answered 502 or 504: upstream unreachable.",
       stats.upstream_errors},
      {"upstream_rate_limited_total", "counter", "429s the providers sent.",
       stats.upstream_rate_limited},
      {"reloads_total", "counter", "Limits reloads.", stats.reloads},
  };
  for (const auto& row : rows) {
    absl::StrAppendFormat(&text, "# HELP sluice_proxy_%s %s\n# TYPE sluice_proxy_%s %s\n", row.name,
                          row.help, row.name, row.type);
    absl::StrAppendFormat(&text, "sluice_proxy_%s %d\n", row.name, row.value);
  }
  return text;
}

}  // namespace proxy_internal
}  // namespace sluice
