#include "tools/stats/stats.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace sluice {
namespace {

using Group = StatsSnapshot::Group;
using GroupType = StatsSnapshot::GroupType;
using Json = nlohmann::ordered_json;

// Where a key belongs, parsed from the names the policy gives its buckets
// (limits.h): "provider:P:CLASS:KIND", "scope:S:KIND" (S may hold ':'), and
// for any other key its prefix before the last ':'.
struct KeyParts {
  GroupType type;
  std::string group;
  std::string kind;
};

KeyParts ParseKey(absl::string_view key) {
  absl::string_view rest = key;
  if (absl::ConsumePrefix(&rest, "provider:")) {
    const std::vector<absl::string_view> parts = absl::StrSplit(rest, ':');
    if (parts.size() == 3 && !parts[0].empty() && !parts[1].empty() && !parts[2].empty()) {
      return {GroupType::kProvider, absl::StrCat(parts[0], "/", parts[1]), std::string(parts[2])};
    }
  } else if (absl::ConsumePrefix(&rest, "scope:")) {
    const size_t colon = rest.rfind(':');
    if (colon != absl::string_view::npos && colon > 0 && colon + 1 < rest.size()) {
      return {GroupType::kScope, std::string(rest.substr(0, colon)),
              std::string(rest.substr(colon + 1))};
    }
  }
  const size_t colon = key.rfind(':');
  if (colon == absl::string_view::npos || colon == 0 || colon + 1 == key.size()) {
    return {GroupType::kOther, std::string(key), ""};
  }
  return {GroupType::kOther, std::string(key.substr(0, colon)), std::string(key.substr(colon + 1))};
}

// rpm, itpm, otpm, tpm, tpd first (kAllLimitKinds order), then anything else.
int KindRank(absl::string_view kind) {
  int rank = 0;
  for (LimitKind k : kAllLimitKinds) {
    if (LimitKindSuffix(k) == kind) return rank;
    ++rank;
  }
  return rank;
}

absl::string_view LimitPeriod(LimitKind kind) {
  return kind == LimitKind::kTokensPerDay ? "day" : "minute";
}

std::optional<BudgetPeriod> PeriodOfKind(absl::string_view kind) {
  if (kind == "usd_day") return BudgetPeriod::kDay;
  if (kind == "usd_month") return BudgetPeriod::kMonth;
  return std::nullopt;
}

std::string WindowName(BudgetPeriod period, absl::Time now) {
  if (period == BudgetPeriod::kDay) {
    return absl::FormatTime("%Y-%m-%d", now, absl::UTCTimeZone());
  }
  return absl::FormatTime("%Y-%m", now, absl::UTCTimeZone());
}

double Percent(int64_t part, uint64_t whole) {
  return whole > 0 ? 100.0 * static_cast<double>(part) / static_cast<double>(whole) : 0.0;
}

double RatePerSecond(const Rate& rate) {
  const double seconds = absl::ToDoubleSeconds(rate.period());
  return seconds > 0 ? static_cast<double>(rate.permits()) / seconds : 0.0;
}

// Collects the groups while a snapshot is built, each found by type and name.
class GroupTable {
 public:
  Group& Get(GroupType type, const std::string& name) {
    auto [it, inserted] = index_.try_emplace({type, name}, groups_.size());
    if (inserted) {
      groups_.emplace_back();
      groups_.back().type = type;
      groups_.back().name = name;
    }
    return groups_[it->second];
  }
  // The order groups were configured in, or (for those the config does not
  // name) type, then "global" first, then name.
  std::vector<Group> Sorted() && {
    std::vector<size_t> order(groups_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    auto rank = [&](size_t i) {
      const Group& g = groups_[i];
      return std::make_tuple(static_cast<int>(g.type), !g.configured, g.configured ? i : size_t{0},
                             g.name != "global", g.name);
    };
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return rank(a) < rank(b); });
    std::vector<Group> sorted;
    for (size_t i : order) sorted.push_back(std::move(groups_[i]));
    return sorted;
  }

 private:
  std::vector<Group> groups_;
  std::map<std::pair<GroupType, std::string>, size_t> index_;
};

// Configured scopes in hierarchy order: each root, then its children (by
// name), depth first.
void AddScopesInOrder(const LimitsConfig& config, const std::string& parent,
                      std::set<std::string>* done, std::vector<const ScopeLimits*>* out) {
  for (const auto& [name, scope] : config.scopes) {
    if (scope.parent != parent || !done->insert(name).second) continue;
    out->push_back(&scope);
    AddScopesInOrder(config, name, done, out);
  }
}

StatsSnapshot::Bucket ConfiguredBucket(const BucketSpec& spec) {
  StatsSnapshot::Bucket b;
  b.key = spec.key;
  b.kind = std::string(LimitKindSuffix(spec.kind));
  b.limit = spec.limit;
  b.limit_period = LimitPeriod(spec.kind);
  b.rate = spec.config.rate;
  b.capacity = spec.config.capacity;
  b.available = static_cast<int64_t>(spec.config.capacity);
  b.percent_available = 100.0;
  return b;
}

void AddConfigured(const LimitsConfig& config, absl::Time now, GroupTable* table) {
  std::vector<const ScopeLimits*> scopes;
  std::set<std::string> done;
  AddScopesInOrder(config, "", &done, &scopes);
  for (const ScopeLimits* scope : scopes) {
    Group& g = table->Get(GroupType::kScope, scope->name);
    g.configured = true;
    g.parent = scope->parent;
    for (const ScopeLimits* s : ResolveScope(config, scope->name).scopes) g.path.push_back(s->name);
    for (const BucketSpec& spec : ScopeBuckets(config, *scope)) {
      g.buckets.push_back(ConfiguredBucket(spec));
    }
    for (const BudgetSpec& spec : ScopeBudgets(*scope)) {
      g.budgets.push_back({.key = spec.key,
                           .period = spec.period,
                           .window = WindowName(spec.period, now),
                           .limit_micro_usd = spec.limit_micro_usd});
    }
    if (std::optional<ConcurrencySpec> spec = ScopeConcurrency(*scope)) {
      g.concurrency.push_back({.key = spec->key, .max_in_flight = spec->max_in_flight});
    }
  }
  for (const auto& [name, provider] : config.providers) {
    std::vector<const ModelClass*> classes = {nullptr};
    for (const ModelClass& model_class : provider.models) classes.push_back(&model_class);
    for (const ModelClass* model_class : classes) {
      const std::vector<BucketSpec> specs = ProviderBuckets(config, provider, model_class);
      if (specs.empty()) continue;
      Group& g = table->Get(GroupType::kProvider, specs.front().owner);
      g.configured = true;
      for (const BucketSpec& spec : specs) g.buckets.push_back(ConfiguredBucket(spec));
    }
  }
}

template <typename T>
T& FindOrAdd(std::vector<T>* items, const std::string& key) {
  for (T& item : *items) {
    if (item.key == key) return item;
  }
  items->emplace_back();
  items->back().key = key;
  return items->back();
}

// Adds the budget a counter's name says it is. A counter whose name ends in
// neither usd_day nor usd_month is not a budget the policy keeps: left out.
void AddCounter(const SegmentInfo::Counter& c, absl::Time now, GroupTable* table) {
  const KeyParts parts = ParseKey(c.name);
  const std::optional<BudgetPeriod> period = PeriodOfKind(parts.kind);
  if (!period) return;
  Group& g = table->Get(parts.type, parts.group);
  StatsSnapshot::Budget& b = FindOrAdd(&g.budgets, c.name);
  b.period = *period;
  b.window = WindowName(*period, now);
  b.in_segment = true;
  // A counter still in an older window has spent nothing in this one; a
  // newer window (a writer whose clock is ahead) counts against this one,
  // as WindowCounterRef counts an older id against the newer window.
  b.spent_micro_usd =
      c.window >= BudgetWindowId(*period, now) && c.used > 0 ? static_cast<uint64_t>(c.used) : 0;
  b.bottlenecks = c.bottlenecks;
}

void SortGroup(Group* g) {
  std::stable_sort(g->buckets.begin(), g->buckets.end(), [](const auto& a, const auto& b) {
    return std::make_tuple(KindRank(a.kind), a.key) < std::make_tuple(KindRank(b.kind), b.key);
  });
  std::stable_sort(g->budgets.begin(), g->budgets.end(), [](const auto& a, const auto& b) {
    return std::make_tuple(a.period, a.key) < std::make_tuple(b.period, b.key);
  });
  std::stable_sort(g->concurrency.begin(), g->concurrency.end(),
                   [](const auto& a, const auto& b) { return a.key < b.key; });
}

// Formatting ---------------------------------------------------------------------

std::string Usd(uint64_t micro_usd) {
  return absl::StrFormat("%d.%06d", micro_usd / 1'000'000, micro_usd % 1'000'000);
}

std::string LocalTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S %Z", t, absl::LocalTimeZone());
}

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone());
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
                   {Usd(*b.limit_micro_usd),
                    absl::StrFormat("%.1f%%", Percent(static_cast<int64_t>(b.spent_micro_usd),
                                                      *b.limit_micro_usd))});
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

int AliveCount(const StatsSnapshot& s) {
  return static_cast<int>(
      absl::c_count_if(s.processes, [](const StatsSnapshot::Process& p) { return p.alive; }));
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

}  // namespace

absl::string_view GroupTypeName(GroupType type) {
  switch (type) {
    case GroupType::kScope:
      return "scope";
    case GroupType::kProvider:
      return "provider";
    case GroupType::kOther:
      return "other";
  }
  return "other";
}

absl::string_view BudgetPeriodName(BudgetPeriod period) {
  return period == BudgetPeriod::kDay ? "day" : "month";
}

StatsSnapshot BuildStatsSnapshot(const SegmentInfo& info, const LimitsConfig* config,
                                 absl::Time now) {
  StatsSnapshot s;
  s.segment = info.path;
  s.config = config != nullptr ? config->source : "";
  s.taken = now;
  s.slots = info.slots;
  s.slots_used = info.slots_used;
  s.created_unix_ns = info.created_unix_ns;

  GroupTable table;
  if (config != nullptr) AddConfigured(*config, now, &table);
  for (const SegmentInfo::Bucket& in : info.buckets) {
    const KeyParts parts = ParseKey(in.name);
    StatsSnapshot::Bucket& b = FindOrAdd(&table.Get(parts.type, parts.group).buckets, in.name);
    if (b.kind.empty()) b.kind = parts.kind;
    b.in_segment = true;
    b.rate = in.config.rate;
    b.capacity = in.config.capacity;
    b.available = in.available;
    b.percent_available = Percent(in.available, in.config.capacity);
    b.pressure = in.pressure;
    b.bottlenecks = in.bottlenecks;
  }
  for (const SegmentInfo::Counter& c : info.counters) AddCounter(c, now, &table);
  for (const SegmentInfo::Leases& in : info.leases) {
    const KeyParts parts = ParseKey(in.name);
    StatsSnapshot::Concurrency& c =
        FindOrAdd(&table.Get(parts.type, parts.group).concurrency, in.name);
    c.in_segment = true;
    c.max_in_flight = in.capacity;
    c.in_flight = in.in_flight;
    c.bottlenecks = in.bottlenecks;
  }
  s.groups = std::move(table).Sorted();
  for (Group& g : s.groups) SortGroup(&g);
  for (const SegmentInfo::Process& p : info.processes) {
    s.processes.push_back({p.pid, p.alive, p.attached_unix_ns});
  }
  return s;
}

absl::StatusOr<StatsSnapshot> TakeStatsSnapshot(absl::string_view name_or_path,
                                                const LimitsConfig* config) {
  SegmentOptions options;
  options.create = false;
  options.register_process = false;  // looking must not show up as a user
  absl::StatusOr<std::unique_ptr<Segment>> segment = Segment::Open(name_or_path, options);
  if (absl::IsNotFound(segment.status())) {
    return absl::NotFoundError(absl::StrCat(segment.status().message(), "; nothing has run yet?"));
  }
  if (!segment.ok()) return segment.status();
  absl::StatusOr<SegmentInfo> info = (*segment)->Inspect();
  if (!info.ok()) return info.status();
  return BuildStatsSnapshot(*info, config, absl::Now());
}

TopBottleneck FindTopBottleneck(const Group& group) {
  TopBottleneck top;
  auto consider = [&top](const std::string& key, uint64_t count) {
    if (count > top.count) top = {key, count};
  };
  for (const auto& b : group.buckets) consider(b.key, b.bottlenecks);
  for (const auto& b : group.budgets) consider(b.key, b.bottlenecks);
  for (const auto& c : group.concurrency) consider(c.key, c.bottlenecks);
  return top;
}

TopBottleneck FindTopBottleneck(const StatsSnapshot& snapshot) {
  TopBottleneck top;
  for (const Group& g : snapshot.groups) {
    TopBottleneck t = FindTopBottleneck(g);
    if (t.count > top.count) top = std::move(t);
  }
  return top;
}

std::string FormatStatsText(const StatsSnapshot& s) {
  std::string out;
  absl::StrAppend(&out, "sluice stats  ", LocalTime(s.taken), "\n");
  absl::StrAppend(&out, "segment    ", s.segment, " (", s.slots_used, " of ", s.slots,
                  " slots used)\n");
  if (!s.config.empty()) absl::StrAppend(&out, "config     ", s.config, "\n");
  absl::StrAppend(&out, "processes  ", s.processes.size(), " attached, ", AliveCount(s),
                  " alive\n");
  AppendBuckets(s, &out);
  const TopBottleneck top = FindTopBottleneck(s);
  if (top.count > 0) {
    absl::StrAppend(&out, "bottleneck: ", top.key, " (", top.count,
                    top.count == 1 ? " time)\n" : " times)\n");
  }
  AppendBudgets(s, &out);
  AppendConcurrency(s, &out);
  AppendScopePaths(s, &out);
  AppendProcesses(s, &out);
  return out;
}

std::string FormatStatsJson(const StatsSnapshot& s) {
  Json doc;
  doc["segment"] = s.segment;
  doc["time"] = Rfc3339(s.taken);
  doc["config"] = s.config.empty() ? Json(nullptr) : Json(s.config);
  doc["slots"] = {{"total", s.slots}, {"used", s.slots_used}};
  doc["created"] = Rfc3339(absl::FromUnixNanos(s.created_unix_ns));
  doc["groups"] = Json::array();
  for (const Group& g : s.groups) {
    Json buckets = Json::array();
    for (const StatsSnapshot::Bucket& b : g.buckets) {
      buckets.push_back({
          {"key", b.key},
          {"kind", b.kind},
          {"in_segment", b.in_segment},
          {"limit", b.limit ? Json(*b.limit) : Json(nullptr)},
          {"limit_period", b.limit ? Json(b.limit_period) : Json(nullptr)},
          {"rate", b.rate.ToString()},
          {"rate_per_second", RatePerSecond(b.rate)},
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
          {"percent_spent",
           b.limit_micro_usd
               ? Json(Percent(static_cast<int64_t>(b.spent_micro_usd), *b.limit_micro_usd))
               : Json(nullptr)},
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
    doc["groups"].push_back({
        {"name", g.name},
        {"type", GroupTypeName(g.type)},
        {"configured", g.configured},
        {"parent", g.configured && !g.parent.empty() ? Json(g.parent) : Json(nullptr)},
        {"path", g.path},
        {"bottleneck", top.count > 0 ? Json(top.key) : Json(nullptr)},
        {"buckets", std::move(buckets)},
        {"budgets", std::move(budgets)},
        {"concurrency", std::move(concurrency)},
    });
  }
  const TopBottleneck top = FindTopBottleneck(s);
  doc["bottleneck"] = top.count > 0 ? Json{{"key", top.key}, {"count", top.count}} : Json(nullptr);
  doc["processes_alive"] = AliveCount(s);
  doc["processes"] = Json::array();
  for (const StatsSnapshot::Process& p : s.processes) {
    doc["processes"].push_back({{"pid", p.pid},
                                {"alive", p.alive},
                                {"attached", Rfc3339(absl::FromUnixNanos(p.attached_unix_ns))}});
  }
  // Names come from shared memory and need not be valid UTF-8; `replace`
  // substitutes U+FFFD instead of throwing.
  return doc.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

std::string FormatPrometheus(const StatsSnapshot& s) {
  Family slots("sluice_segment_slots", "gauge", "Slots in the segment's table.");
  Family slots_used("sluice_segment_slots_used", "gauge",
                    "Slots holding a bucket, budget counter or concurrency cap.");
  Family created("sluice_segment_created_timestamp_seconds", "gauge",
                 "When the segment was created, in seconds since the Unix epoch.");
  Family attached("sluice_processes_attached", "gauge",
                  "Processes recorded in the segment's registry, live or not.");
  Family alive("sluice_processes_alive", "gauge", "Recorded processes that are still running.");
  Family available("sluice_bucket_available_permits", "gauge",
                   "Permits a bucket can grant now (0 while in debt).");
  Family capacity("sluice_bucket_capacity_permits", "gauge",
                  "A bucket's capacity (its burst), in permits.");
  Family rate("sluice_bucket_rate_permits_per_second", "gauge",
              "The rate a bucket refills at, in permits per second.");
  Family ratio("sluice_bucket_available_ratio", "gauge",
               "Available permits over capacity, from 0 to 1.");
  Family pressure("sluice_bucket_pressure", "gauge",
                  "Bucket pressure: 0 low (at least 60% available), 1 medium (30% to 60%), "
                  "2 high (under 30%).");
  Family bucket_bottlenecks("sluice_bucket_bottleneck_total", "counter",
                            "Times a bucket refused a request or set its wait.");
  Family limit("sluice_bucket_limit_permits", "gauge",
               "A bucket's configured limit per period (label period), after headroom.");
  Family spent("sluice_budget_spent_usd", "gauge",
               "USD spent in the budget's current UTC day or month.");
  Family budget_limit("sluice_budget_limit_usd", "gauge",
                      "A budget's configured limit per UTC day or month, in USD.");
  Family budget_bottlenecks("sluice_budget_bottleneck_total", "counter",
                            "Times a budget refused a request.");
  Family in_flight("sluice_concurrency_in_flight", "gauge",
                   "Requests holding one of a concurrency cap's leases.");
  Family max_in_flight("sluice_concurrency_max_in_flight", "gauge",
                       "A concurrency cap's number of leases.");
  Family cap_bottlenecks("sluice_concurrency_bottleneck_total", "counter",
                         "Times a concurrency cap had no lease free for a request.");
  Family scope_info("sluice_scope_info", "gauge",
                    "A configured scope and its parent (empty for a root); always 1.");

  slots.Add({}, uint64_t{s.slots});
  slots_used.Add({}, uint64_t{s.slots_used});
  created.Add({},
              absl::ToDoubleSeconds(absl::FromUnixNanos(s.created_unix_ns) - absl::UnixEpoch()));
  attached.Add({}, static_cast<uint64_t>(s.processes.size()));
  alive.Add({}, static_cast<int64_t>(AliveCount(s)));
  for (const Group& g : s.groups) {
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
      rate.Add(labels, RatePerSecond(b.rate));
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
  std::string out;
  for (const Family* f :
       {&slots, &slots_used, &created, &attached, &alive, &available, &capacity, &rate, &ratio,
        &pressure, &bucket_bottlenecks, &limit, &spent, &budget_limit, &budget_bottlenecks,
        &in_flight, &max_in_flight, &cap_bottlenecks, &scope_info}) {
    f->AppendTo(&out);
  }
  return out;
}

}  // namespace sluice
