// The text view of a stats snapshot: the tables `sluice stats` prints and
// `sluice top` redraws.

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "tools/stats/stats.h"

namespace sluice {
namespace {

using Group = StatsSnapshot::Group;
using GroupType = StatsSnapshot::GroupType;

std::string Usd(uint64_t micro_usd) {
  return absl::StrFormat("%d.%06d", micro_usd / 1'000'000, micro_usd % 1'000'000);
}

std::string LocalTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S %Z", t, absl::LocalTimeZone());
}

std::string LimitText(const StatsSnapshot::Bucket& b) {
  if (!b.limit) return "-";
  return absl::StrCat(*b.limit, b.limit_period == "day" ? "/day" : "/min");
}

std::string GroupLabel(const Group& g) { return absl::StrCat(GroupTypeName(g.type), " ", g.name); }

// Columns padded to their widest cell; `align` has one 'l' or 'r' per column.
void AppendTable(const std::vector<std::vector<std::string>>& rows, absl::string_view align,
                 std::string* out) {
  std::vector<size_t> widths(align.size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      if (i > 0) line += "  ";
      const std::string pad(widths[i] - row[i].size(), ' ');
      line += align[i] == 'r' ? pad + row[i] : row[i] + (i + 1 < row.size() ? pad : "");
    }
    absl::StrAppend(out, line, "\n");
  }
}

void AppendBuckets(const StatsSnapshot& s, std::string* out) {
  const bool with_limits = !s.config.empty();
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"GROUP", "BUCKET", "LIMIT", "RATE", "BURST", "AVAILABLE", "AVAIL%", "PRESSURE",
                  "BOTTLENECKS"});
  for (const Group& g : s.groups) {
    bool first = true;
    for (const StatsSnapshot::Bucket& b : g.buckets) {
      std::vector<std::string> row = {first ? GroupLabel(g) : "", b.kind.empty() ? b.key : b.kind,
                                      LimitText(b), b.rate.ToString(), absl::StrCat(b.capacity)};
      if (b.in_segment) {
        row.insert(row.end(),
                   {absl::StrCat(b.available), absl::StrFormat("%.1f%%", b.percent_available),
                    PressureName(b.pressure), absl::StrCat(b.bottlenecks)});
      } else {
        row.insert(row.end(), {"-", "-", "not opened", "-"});
      }
      if (!with_limits) row.erase(row.begin() + 2);
      rows.push_back(std::move(row));
      first = false;
    }
  }
  if (rows.size() == 1) {
    absl::StrAppend(out, "\nbuckets: none\n");
    return;
  }
  if (!with_limits) rows[0].erase(rows[0].begin() + 2);
  absl::StrAppend(out, "\n");
  AppendTable(rows, with_limits ? "llrrrrrlr" : "llrrrrlr", out);
}

void AppendBudgets(const StatsSnapshot& s, std::string* out) {
  // Limits come from the config only.
  const bool with_limits = !s.config.empty();
  std::vector<std::vector<std::string>> rows = {{"BUDGET", "PERIOD", "WINDOW", "SPENT USD"}};
  if (with_limits) rows[0].insert(rows[0].end(), {"LIMIT USD", "SPENT%"});
  rows[0].push_back("BOTTLENECKS");
  for (const Group& g : s.groups) {
    for (const StatsSnapshot::Budget& b : g.budgets) {
      std::vector<std::string> row = {GroupLabel(g), std::string(BudgetPeriodName(b.period)),
                                      b.window, Usd(b.spent_micro_usd)};
      if (with_limits && b.limit_micro_usd) {
        row.insert(row.end(),
                   {Usd(*b.limit_micro_usd), absl::StrFormat("%.1f%%", *b.PercentSpent())});
      } else if (with_limits) {
        row.insert(row.end(), {"-", "-"});
      }
      row.push_back(absl::StrCat(b.bottlenecks));
      rows.push_back(std::move(row));
    }
  }
  if (rows.size() == 1) return;
  absl::StrAppend(out, "\n");
  AppendTable(rows, with_limits ? "lllrrrr" : "lllrr", out);
}

void AppendConcurrency(const StatsSnapshot& s, std::string* out) {
  std::vector<std::vector<std::string>> rows = {{"CONCURRENCY", "IN FLIGHT", "MAX", "BOTTLENECKS"}};
  for (const Group& g : s.groups) {
    for (const StatsSnapshot::Concurrency& c : g.concurrency) {
      rows.push_back({GroupLabel(g), c.in_segment ? absl::StrCat(c.in_flight) : "-",
                      absl::StrCat(c.max_in_flight), absl::StrCat(c.bottlenecks)});
    }
  }
  if (rows.size() == 1) return;
  absl::StrAppend(out, "\n");
  AppendTable(rows, "lrrr", out);
}

void AppendScopePaths(const StatsSnapshot& s, std::string* out) {
  std::vector<std::vector<std::string>> rows = {{"SCOPE", "PARENT", "PATH"}};
  for (const Group& g : s.groups) {
    if (g.type != GroupType::kScope || !g.configured) continue;
    rows.push_back({g.name, g.parent.empty() ? "-" : g.parent, absl::StrJoin(g.path, " -> ")});
  }
  if (rows.size() == 1) return;
  absl::StrAppend(out, "\n");
  AppendTable(rows, "lll", out);
}

void AppendProcesses(const StatsSnapshot& s, std::string* out) {
  if (s.processes.empty()) {
    absl::StrAppend(out, "\nprocesses: none attached\n");
    return;
  }
  std::vector<std::vector<std::string>> rows = {{"PID", "ALIVE", "ATTACHED"}};
  for (const StatsSnapshot::Process& p : s.processes) {
    rows.push_back({absl::StrCat(p.pid), p.alive ? "yes" : "no",
                    LocalTime(absl::FromUnixNanos(p.attached_unix_ns))});
  }
  absl::StrAppend(out, "\n");
  AppendTable(rows, "rll", out);
}

// The hosts a text line names; the JSON document lists them all.
constexpr size_t kHostsShown = 10;

// The fleet's lines of the header: where its Redis is, and who was seen.
void AppendClusterHeader(const StatsSnapshot::Cluster& c, std::string* out) {
  absl::StrAppend(out, "cluster    ", c.redis, ", ", ClusterModeName(c.mode), " mode, key prefix ",
                  c.key_prefix, "\n");
  if (!c.error.empty()) {
    absl::StrAppend(out, "redis      error: ", c.error, "\n");
    return;
  }
  std::vector<std::string> names;
  for (size_t i = 0; i < c.hosts.size() && i < kHostsShown; ++i) {
    names.push_back(
        absl::StrCat(c.hosts[i].name, " (", absl::ToInt64Seconds(c.hosts[i].since_seen), "s ago)"));
  }
  if (c.hosts.size() > kHostsShown)
    names.push_back(absl::StrCat(c.hosts.size() - kHostsShown, " more"));
  absl::StrAppend(out, "hosts      ", c.hosts.size(), " seen in the last minute",
                  names.empty() ? "" : ": ", absl::StrJoin(names, ", "), "\n");
}

// Each fleet bucket's level in Redis, what all hosts' pools hold of it (host
// leases out), and this host's pool.
void AppendClusterBuckets(const StatsSnapshot::Cluster& c, std::string* out) {
  if (c.buckets.empty()) return;
  std::vector<std::vector<std::string>> rows = {
      {"FLEET BUCKET", "BURST", "GLOBAL", "IN POOLS (HOSTS)", "THIS HOST'S POOL"}};
  for (const StatsSnapshot::Cluster::Bucket& b : c.buckets) {
    rows.push_back({b.key, absl::StrCat(b.capacity), b.global ? absl::StrCat(*b.global) : "-",
                    b.in_pools ? absl::StrCat(*b.in_pools, " (", b.hosts_holding, ")") : "-",
                    b.pool ? absl::StrCat(*b.pool) : "-"});
  }
  absl::StrAppend(out, "\n");
  AppendTable(rows, "lrrrr", out);
}

// The fleet's budgets and caps as Redis holds them (with a config).
void AppendClusterBudgetsAndCaps(const StatsSnapshot::Cluster& c, std::string* out) {
  if (!c.budgets.empty()) {
    std::vector<std::vector<std::string>> rows = {{"FLEET BUDGET", "WINDOW", "SPENT", "LIMIT"}};
    for (const StatsSnapshot::Cluster::Budget& b : c.budgets) {
      rows.push_back({b.key, b.window.empty() ? "-" : b.window,
                      b.spent_micro_usd ? Usd(*b.spent_micro_usd) : "-", Usd(b.limit_micro_usd)});
    }
    absl::StrAppend(out, "\n");
    AppendTable(rows, "llrr", out);
  }
  if (!c.caps.empty()) {
    std::vector<std::vector<std::string>> rows = {{"FLEET CAP", "IN FLIGHT", "MAX"}};
    for (const StatsSnapshot::Cluster::Cap& cap : c.caps) {
      rows.push_back({cap.key, cap.in_flight ? absl::StrCat(*cap.in_flight) : "-",
                      absl::StrCat(cap.max_in_flight)});
    }
    absl::StrAppend(out, "\n");
    AppendTable(rows, "lrr", out);
  }
}

}  // namespace

std::string FormatStatsText(const StatsSnapshot& s) {
  std::string out;
  absl::StrAppend(&out, "sluice stats  ", LocalTime(s.taken), "\n");
  absl::StrAppend(&out, "segment    ", s.segment, " (", s.slots_used, " of ", s.slots,
                  " slots used)\n");
  if (!s.config.empty()) absl::StrAppend(&out, "config     ", s.config, "\n");
  absl::StrAppend(&out, "processes  ", s.processes.size(), " attached, ", s.AliveProcesses(),
                  " alive\n");
  if (s.cluster) AppendClusterHeader(*s.cluster, &out);
  AppendBuckets(s, &out);
  const TopBottleneck top = FindTopBottleneck(s);
  if (top.count > 0) {
    absl::StrAppend(&out, "bottleneck: ", top.key, " (", top.count,
                    top.count == 1 ? " time)\n" : " times)\n");
  }
  if (s.cluster) AppendClusterBuckets(*s.cluster, &out);
  if (s.cluster) AppendClusterBudgetsAndCaps(*s.cluster, &out);
  AppendBudgets(s, &out);
  AppendConcurrency(s, &out);
  AppendScopePaths(s, &out);
  AppendProcesses(s, &out);
  return out;
}

}  // namespace sluice
