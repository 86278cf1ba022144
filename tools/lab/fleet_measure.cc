// The fleet lab's judge and figures (tools/lab/fleet_measure.h), and its
// table and JSON (tools/lab/fleet.h).

#include "tools/lab/fleet_measure.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/lab/fleet.h"
#include "tools/lab/lab.h"

namespace sluice::lab {
namespace {

int64_t Nanos(absl::Duration d) { return absl::ToInt64Nanoseconds(d); }

std::string Millis(int64_t ns) { return absl::StrFormat("%.2fms", static_cast<double>(ns) / 1e6); }

// The window lengths judged: 10 ms, 1 s, 10 s and the whole run, those no
// longer than the run.
std::vector<int64_t> WindowLengths(int64_t duration_ns) {
  std::vector<int64_t> lengths;
  for (int64_t w : {int64_t{10'000'000}, int64_t{1'000'000'000}, int64_t{10'000'000'000}}) {
    if (w < duration_ns) lengths.push_back(w);
  }
  lengths.push_back(duration_ns);
  return lengths;
}

// Admissions by each admission's time past C + R t, and a conservation
// check: admitted + returned + lost + left in pools = granted, so a pool
// that grew by itself shows.
int64_t CumulativeBreaches(const FleetConfig& config, const FleetTrace& trace) {
  int64_t breaches = trace.cumulative_breaches;
  for (size_t i = 0; i < trace.admitted_ns.size(); ++i) {
    if (static_cast<int64_t>(i + 1) > AllowedBy(config, trace.admitted_ns[i])) ++breaches;
  }
  const int64_t accounted = static_cast<int64_t>(trace.admitted_ns.size()) + trace.returned +
                            trace.lost_in_crashes + trace.returned_at_end;
  if (accounted > trace.granted) ++breaches;
  return breaches;
}

void MeasureFairness(const FleetTrace& trace, FleetMetrics& m) {
  std::vector<double> shares;
  int64_t hot_admitted = 0;
  for (const FleetHostTally& host : trace.hosts) {
    if (!host.hot) continue;
    hot_admitted += host.admitted;
    if (host.offered > 0) {
      shares.push_back(static_cast<double>(host.admitted) / static_cast<double>(host.offered));
    }
  }
  m.fairness = JainIndex(shares);
  if (trace.skewed && m.allowed > 0) {
    m.hot_share = static_cast<double>(hot_admitted) / static_cast<double>(m.allowed);
  }
}

}  // namespace

int64_t AllowedBy(const FleetConfig& config, int64_t t_ns) {
  const __int128 refilled = static_cast<__int128>(config.limit.permits()) *
                            std::max<int64_t>(0, t_ns) / Nanos(config.limit.period());
  const __int128 allowed = refilled + config.capacity;
  return allowed > INT64_MAX ? INT64_MAX : static_cast<int64_t>(allowed);
}

FleetWindow JudgeWindow(absl::Span<const int64_t> sorted_ns, int64_t window_ns, int64_t bound) {
  FleetWindow verdict{.window_ns = window_ns, .bound = bound};
  size_t first = 0;
  for (size_t last = 0; last < sorted_ns.size(); ++last) {
    while (sorted_ns[last] - sorted_ns[first] >= window_ns) ++first;
    const int64_t in_window = static_cast<int64_t>(last - first + 1);
    verdict.most = std::max(verdict.most, in_window);
    if (in_window > bound) ++verdict.over;
  }
  return verdict;
}

FleetMetrics JudgeFleet(const FleetConfig& config, FleetTrace& trace) {
  FleetMetrics m;
  m.admitted = static_cast<int64_t>(trace.admitted_ns.size());
  for (const FleetHostTally& host : trace.hosts) m.offered += host.offered;
  m.gave_up = trace.gave_up;
  m.lost_queued = trace.lost_queued;
  m.allowed = AllowedBy(config, trace.duration_ns);
  m.utilization =
      m.allowed > 0 ? static_cast<double>(m.admitted) / static_cast<double>(m.allowed) : 0;
  m.over_admissions = CumulativeBreaches(config, trace);
  for (int64_t w : WindowLengths(trace.duration_ns)) {
    m.windows.push_back(JudgeWindow(trace.admitted_ns, w, AllowedBy(config, w)));
    m.over_admissions += m.windows.back().over;
  }
  m.leased = trace.granted - trace.returned;
  m.returned_at_end = trace.returned_at_end;
  m.lost_in_crashes = trace.lost_in_crashes;
  m.most_pooled = trace.most_pooled;
  m.pool_breaches = trace.pool_breaches;
  MeasureFairness(trace, m);
  m.lease_calls = trace.lease_calls;
  m.return_calls = trace.return_calls;
  const double seconds = static_cast<double>(trace.duration_ns) / 1e9;
  const double calls = static_cast<double>(m.lease_calls + m.return_calls);
  m.commands_per_second = seconds > 0 ? calls / seconds : 0;
  m.commands_per_1000 = m.admitted > 0 ? 1000 * calls / static_cast<double>(m.admitted) : 0;
  std::sort(trace.waits_ns.begin(), trace.waits_ns.end());
  m.wait_p50_ns = Percentile(trace.waits_ns, 0.50);
  m.wait_p99_ns = Percentile(trace.waits_ns, 0.99);
  m.wait_max_ns = trace.waits_ns.empty() ? 0 : trace.waits_ns.back();
  return m;
}

std::vector<std::vector<std::string>> FleetRows(absl::Span<const FleetResult> results) {
  std::vector<std::vector<std::string>> rows = {{"hosts", "workload", "admitted", "util", "over",
                                                 "unused@end", "lost", "most pooled", "fairness",
                                                 "hot share", "redis/s", "per 1k", "wait p50",
                                                 "wait p99", "wait max", "gave up"}};
  for (const FleetResult& r : results) {
    const FleetMetrics& m = r.metrics;
    rows.push_back({absl::StrCat(r.hosts), std::string(FleetWorkloadName(r.workload)),
                    absl::StrCat(m.admitted), absl::StrFormat("%.3f", m.utilization),
                    absl::StrCat(m.over_admissions), absl::StrCat(m.returned_at_end),
                    absl::StrCat(m.lost_in_crashes), absl::StrCat(m.most_pooled),
                    absl::StrFormat("%.3f", m.fairness),
                    r.workload == FleetWorkload::kSkewed ? absl::StrFormat("%.3f", m.hot_share)
                                                         : std::string("-"),
                    absl::StrFormat("%.0f", m.commands_per_second),
                    absl::StrFormat("%.1f", m.commands_per_1000), Millis(m.wait_p50_ns),
                    Millis(m.wait_p99_ns), Millis(m.wait_max_ns), absl::StrCat(m.gave_up)});
  }
  return rows;
}

nlohmann::ordered_json FleetToJson(const FleetConfig& config,
                                   absl::Span<const FleetResult> results) {
  nlohmann::ordered_json doc;
  doc["config"] = {{"limit", config.limit.ToString()},
                   {"capacity", config.capacity},
                   {"round_trip_ns", Nanos(config.round_trip)},
                   {"duration_ns", Nanos(config.duration)},
                   {"load", config.load},
                   {"max_wait_ns", Nanos(config.max_wait)},
                   {"idle_return_ns", Nanos(config.idle_return)},
                   {"demand_window_ns", Nanos(config.demand_window)},
                   {"cap_outstanding", config.cap_outstanding},
                   {"seed", config.seed}};
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const FleetResult& r : results) {
    const FleetMetrics& m = r.metrics;
    nlohmann::ordered_json windows = nlohmann::ordered_json::array();
    for (const FleetWindow& w : m.windows) {
      windows.push_back(
          {{"window_ns", w.window_ns}, {"most", w.most}, {"bound", w.bound}, {"over", w.over}});
    }
    list.push_back(
        {{"hosts", r.hosts},
         {"workload", FleetWorkloadName(r.workload)},
         {"offered", m.offered},
         {"admitted", m.admitted},
         {"allowed", m.allowed},
         {"utilization", m.utilization},
         {"over_admissions", m.over_admissions},
         {"windows", windows},
         {"leased", m.leased},
         {"returned_at_end", m.returned_at_end},
         {"lost_in_crashes", m.lost_in_crashes},
         {"most_pooled", m.most_pooled},
         {"pool_breaches", m.pool_breaches},
         {"fairness", m.fairness},
         {"hot_share", m.hot_share},
         {"lease_calls", m.lease_calls},
         {"return_calls", m.return_calls},
         {"commands_per_second", m.commands_per_second},
         {"commands_per_1000_admits", m.commands_per_1000},
         {"wait_ns", {{"p50", m.wait_p50_ns}, {"p99", m.wait_p99_ns}, {"max", m.wait_max_ns}}},
         {"gave_up", m.gave_up},
         {"lost_queued", m.lost_queued}});
  }
  doc["results"] = list;
  return doc;
}

}  // namespace sluice::lab
