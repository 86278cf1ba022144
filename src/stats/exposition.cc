// The JSON document and the Prometheus text exposition of a stats snapshot.

#include <charconv>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "sluice/stats_exposition.h"

namespace sluice {
namespace {

using Group = StatsSnapshot::Group;
using GroupType = StatsSnapshot::GroupType;
using Json = nlohmann::ordered_json;

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone());
}

// Prometheus ---------------------------------------------------------------------

// Replaces bytes that are not valid UTF-8 (names come from shared memory) by
// U+FFFD: the exposition format is UTF-8.
std::string ValidUtf8(absl::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size();) {
    const auto c = static_cast<unsigned char>(in[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = n > 0 && i + n <= in.size();
    for (size_t k = 1; ok && k < n; ++k) {
      ok = (static_cast<unsigned char>(in[i + k]) & 0xC0) == 0x80;
    }
    if (ok && n > 1) {
      // Overlong forms, surrogates and values past U+10FFFF are invalid too.
      uint32_t cp = c & (0xFF >> (n + 1));
      for (size_t k = 1; k < n; ++k)
        cp = (cp << 6) | (static_cast<unsigned char>(in[i + k]) & 0x3F);
      static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
      ok = cp >= kMin[n] && cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
    }
    if (ok) {
      out.append(in.data() + i, n);
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");
      ++i;
    }
  }
  return out;
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  for (char c : ValidUtf8(value)) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return ec == std::errc() ? std::string(buf, end) : absl::StrCat(v);
}

using Labels = std::vector<std::pair<absl::string_view, std::string>>;

// One metric family: its HELP and TYPE lines, then its samples. Families
// without samples are left out.
class Family {
 public:
  Family(absl::string_view name, absl::string_view type, absl::string_view help)
      : name_(name), type_(type), help_(help) {}

  void Add(const Labels& labels, std::string value) {
    absl::StrAppend(&samples_, name_);
    if (!labels.empty()) {
      absl::StrAppend(&samples_, "{",
                      absl::StrJoin(labels, ",",
                                    [](std::string* out, const auto& label) {
                                      absl::StrAppend(out, label.first, "=\"",
                                                      EscapeLabelValue(label.second), "\"");
                                    }),
                      "}");
    }
    absl::StrAppend(&samples_, " ", value, "\n");
  }
  void Add(const Labels& labels, double value) { Add(labels, FormatValue(value)); }
  void Add(const Labels& labels, int64_t value) { Add(labels, absl::StrCat(value)); }
  void Add(const Labels& labels, uint64_t value) { Add(labels, absl::StrCat(value)); }

  void AppendTo(std::string* out) const {
    if (samples_.empty()) return;
    absl::StrAppend(out, "# HELP ", name_, " ", help_, "\n# TYPE ", name_, " ", type_, "\n",
                    samples_);
  }

 private:
  absl::string_view name_, type_, help_;
  std::string samples_;
};

Labels BucketLabels(const Group& g, const StatsSnapshot::Bucket& b) {
  return {{"bucket", b.key},
          {"owner", g.name},
          {"owner_type", std::string(GroupTypeName(g.type))},
          {"kind", b.kind}};
}

// Every metric family sluice exposes, in the order they are written.
struct Families {
  Family slots{"sluice_segment_slots", "gauge", "Slots in the segment's table."};
  Family slots_used{"sluice_segment_slots_used", "gauge",
                    "Slots holding a bucket, budget counter or concurrency cap."};
  Family created{"sluice_segment_created_timestamp_seconds", "gauge",
                 "When the segment was created, in seconds since the Unix epoch."};
  Family attached{"sluice_processes_attached", "gauge",
                  "Processes recorded in the segment's registry, live or not."};
  Family alive{"sluice_processes_alive", "gauge", "Recorded processes that are still running."};
  Family available{"sluice_bucket_available_permits", "gauge",
                   "Permits a bucket can grant now (0 while in debt)."};
  Family capacity{"sluice_bucket_capacity_permits", "gauge",
                  "A bucket's capacity (its burst), in permits."};
  Family rate{"sluice_bucket_rate_permits_per_second", "gauge",
              "The rate a bucket refills at, in permits per second."};
  Family ratio{"sluice_bucket_available_ratio", "gauge",
               "Available permits over capacity, from 0 to 1."};
  Family pressure{"sluice_bucket_pressure", "gauge",
                  "Bucket pressure: 0 low (at least 60% available), 1 medium (30% to 60%), "
                  "2 high (under 30%)."};
  Family bucket_bottlenecks{"sluice_bucket_bottleneck_total", "counter",
                            "Times a bucket refused a request or set its wait."};
  Family limit{"sluice_bucket_limit_permits", "gauge",
               "A bucket's configured limit per period (label period), after headroom."};
  Family spent{"sluice_budget_spent_usd", "gauge",
               "USD spent in the budget's current UTC day or month."};
  Family budget_limit{"sluice_budget_limit_usd", "gauge",
                      "A budget's configured limit per UTC day or month, in USD."};
  Family budget_bottlenecks{"sluice_budget_bottleneck_total", "counter",
                            "Times a budget refused a request."};
  Family in_flight{"sluice_concurrency_in_flight", "gauge",
                   "Requests holding one of a concurrency cap's leases."};
  Family max_in_flight{"sluice_concurrency_max_in_flight", "gauge",
                       "A concurrency cap's number of leases."};
  Family cap_bottlenecks{"sluice_concurrency_bottleneck_total", "counter",
                         "Times a concurrency cap had no lease free for a request."};
  Family scope_info{"sluice_scope_info", "gauge",
                    "A configured scope and its parent (empty for a root); always 1."};

  void AddSegment(const StatsSnapshot& s) {
    slots.Add({}, uint64_t{s.slots});
    slots_used.Add({}, uint64_t{s.slots_used});
    created.Add({},
                absl::ToDoubleSeconds(absl::FromUnixNanos(s.created_unix_ns) - absl::UnixEpoch()));
    attached.Add({}, static_cast<uint64_t>(s.processes.size()));
    alive.Add({}, static_cast<int64_t>(s.AliveProcesses()));
  }

  void AddGroup(const Group& g) {
    if (g.type == GroupType::kScope && g.configured) {
      scope_info.Add({{"scope", g.name}, {"parent", g.parent}}, uint64_t{1});
    }
    for (const StatsSnapshot::Bucket& b : g.buckets) {
      const Labels labels = BucketLabels(g, b);
      if (b.limit) {
        Labels with_period = labels;
        with_period.emplace_back("period", std::string(b.limit_period));
        limit.Add(with_period, *b.limit);
      }
      if (!b.in_segment) continue;
      available.Add(labels, b.available);
      capacity.Add(labels, b.capacity);
      rate.Add(labels, b.RatePerSecond());
      ratio.Add(labels, b.percent_available / 100.0);
      pressure.Add(labels, static_cast<uint64_t>(b.pressure));
      bucket_bottlenecks.Add(labels, b.bottlenecks);
    }
    for (const StatsSnapshot::Budget& b : g.budgets) {
      const Labels labels = {{"budget", b.key},
                             {"scope", g.name},
                             {"period", std::string(BudgetPeriodName(b.period))}};
      if (b.limit_micro_usd)
        budget_limit.Add(labels, static_cast<double>(*b.limit_micro_usd) / 1e6);
      if (!b.in_segment) continue;
      spent.Add(labels, static_cast<double>(b.spent_micro_usd) / 1e6);
      budget_bottlenecks.Add(labels, b.bottlenecks);
    }
    for (const StatsSnapshot::Concurrency& c : g.concurrency) {
      const Labels labels = {{"cap", c.key}, {"scope", g.name}};
      max_in_flight.Add(labels, uint64_t{c.max_in_flight});
      if (!c.in_segment) continue;
      in_flight.Add(labels, uint64_t{c.in_flight});
      cap_bottlenecks.Add(labels, c.bottlenecks);
    }
  }

  std::string ToString() const {
    std::string out;
    for (const Family* f :
         {&slots, &slots_used, &created, &attached, &alive, &available, &capacity, &rate, &ratio,
          &pressure, &bucket_bottlenecks, &limit, &spent, &budget_limit, &budget_bottlenecks,
          &in_flight, &max_in_flight, &cap_bottlenecks, &scope_info}) {
      f->AppendTo(&out);
    }
    return out;
  }
};

Json GroupJson(const Group& g) {
  Json buckets = Json::array();
  for (const StatsSnapshot::Bucket& b : g.buckets) {
    buckets.push_back({
        {"key", b.key},
        {"kind", b.kind},
        {"in_segment", b.in_segment},
        {"limit", b.limit ? Json(*b.limit) : Json(nullptr)},
        {"limit_period", b.limit ? Json(b.limit_period) : Json(nullptr)},
        {"rate", b.rate.ToString()},
        {"rate_per_second", b.RatePerSecond()},
        {"capacity", b.capacity},
        {"available", b.in_segment ? Json(b.available) : Json(nullptr)},
        {"percent_available", b.in_segment ? Json(b.percent_available) : Json(nullptr)},
        {"pressure", b.in_segment ? Json(PressureName(b.pressure)) : Json(nullptr)},
        {"bottlenecks", b.bottlenecks},
    });
  }
  Json budgets = Json::array();
  for (const StatsSnapshot::Budget& b : g.budgets) {
    budgets.push_back({
        {"key", b.key},
        {"period", BudgetPeriodName(b.period)},
        {"window", b.window},
        {"in_segment", b.in_segment},
        {"spent_micro_usd", b.spent_micro_usd},
        {"spent_usd", static_cast<double>(b.spent_micro_usd) / 1e6},
        {"limit_micro_usd", b.limit_micro_usd ? Json(*b.limit_micro_usd) : Json(nullptr)},
        {"limit_usd",
         b.limit_micro_usd ? Json(static_cast<double>(*b.limit_micro_usd) / 1e6) : Json(nullptr)},
        {"percent_spent", b.PercentSpent() ? Json(*b.PercentSpent()) : Json(nullptr)},
        {"bottlenecks", b.bottlenecks},
    });
  }
  Json concurrency = Json::array();
  for (const StatsSnapshot::Concurrency& c : g.concurrency) {
    concurrency.push_back({{"key", c.key},
                           {"in_segment", c.in_segment},
                           {"max_in_flight", c.max_in_flight},
                           {"in_flight", c.in_flight},
                           {"bottlenecks", c.bottlenecks}});
  }
  const TopBottleneck top = FindTopBottleneck(g);
  return {
      {"name", g.name},
      {"type", GroupTypeName(g.type)},
      {"configured", g.configured},
      {"parent", g.configured && !g.parent.empty() ? Json(g.parent) : Json(nullptr)},
      {"path", g.path},
      {"bottleneck", top.count > 0 ? Json(top.key) : Json(nullptr)},
      {"buckets", std::move(buckets)},
      {"budgets", std::move(budgets)},
      {"concurrency", std::move(concurrency)},
  };
}

// The fleet (with a [cluster] table): nulls where Redis did not answer.
Json ClusterJson(const StatsSnapshot::Cluster& c) {
  Json hosts = Json::array();
  for (const StatsSnapshot::Cluster::Host& h : c.hosts) {
    hosts.push_back({{"name", h.name}, {"seconds_since_seen", absl::ToInt64Seconds(h.since_seen)}});
  }
  Json buckets = Json::array();
  for (const StatsSnapshot::Cluster::Bucket& b : c.buckets) {
    buckets.push_back({{"key", b.key},
                       {"capacity", b.capacity},
                       {"global", b.global ? Json(*b.global) : Json(nullptr)},
                       {"pool", b.pool ? Json(*b.pool) : Json(nullptr)},
                       {"in_pools", b.in_pools ? Json(*b.in_pools) : Json(nullptr)},
                       {"hosts_holding", b.hosts_holding}});
  }
  Json budgets = Json::array();
  for (const StatsSnapshot::Cluster::Budget& b : c.budgets) {
    budgets.push_back(
        {{"key", b.key},
         {"period", BudgetPeriodName(b.period)},
         {"window", b.window},
         {"spent_micro_usd", b.spent_micro_usd ? Json(*b.spent_micro_usd) : Json(nullptr)},
         {"limit_micro_usd", b.limit_micro_usd}});
  }
  Json caps = Json::array();
  for (const StatsSnapshot::Cluster::Cap& cap : c.caps) {
    caps.push_back({{"key", cap.key},
                    {"in_flight", cap.in_flight ? Json(*cap.in_flight) : Json(nullptr)},
                    {"max_in_flight", cap.max_in_flight}});
  }
  return {
      {"redis", c.redis},
      {"key_prefix", c.key_prefix},
      {"mode", ClusterModeName(c.mode)},
      {"error", c.error.empty() ? Json(nullptr) : Json(c.error)},
      {"hosts_alive", c.error.empty() ? Json(c.hosts.size()) : Json(nullptr)},
      {"hosts", std::move(hosts)},
      {"buckets", std::move(buckets)},
      {"budgets", std::move(budgets)},
      {"caps", std::move(caps)},
  };
}

}  // namespace

std::string FormatStatsJson(const StatsSnapshot& s) {
  Json doc;
  doc["segment"] = s.segment;
  doc["time"] = Rfc3339(s.taken);
  doc["config"] = s.config.empty() ? Json(nullptr) : Json(s.config);
  doc["slots"] = {{"total", s.slots}, {"used", s.slots_used}};
  doc["created"] = Rfc3339(absl::FromUnixNanos(s.created_unix_ns));
  doc["groups"] = Json::array();
  for (const Group& g : s.groups) doc["groups"].push_back(GroupJson(g));
  const TopBottleneck top = FindTopBottleneck(s);
  doc["bottleneck"] = top.count > 0 ? Json{{"key", top.key}, {"count", top.count}} : Json(nullptr);
  doc["processes_alive"] = s.AliveProcesses();
  doc["processes"] = Json::array();
  for (const StatsSnapshot::Process& p : s.processes) {
    doc["processes"].push_back({{"pid", p.pid},
                                {"alive", p.alive},
                                {"attached", Rfc3339(absl::FromUnixNanos(p.attached_unix_ns))}});
  }
  doc["cluster"] = s.cluster ? ClusterJson(*s.cluster) : Json(nullptr);
  // Names come from shared memory and need not be valid UTF-8; `replace`
  // substitutes U+FFFD instead of throwing.
  return doc.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

std::string FormatPrometheus(const StatsSnapshot& s) {
  Families families;
  families.AddSegment(s);
  for (const Group& g : s.groups) families.AddGroup(g);
  return families.ToString();
}

}  // namespace sluice
