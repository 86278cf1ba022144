// Stats snapshots: the segment's report joined with the limits model, grouped
// by owner, in the order an operator reads them.

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "sluice/bucket_key.h"
#include "sluice/effective_limits.h"
#include "sluice/stats.h"

namespace sluice {
namespace {

using Group = StatsSnapshot::Group;
using GroupType = StatsSnapshot::GroupType;

// Where a key belongs: its owner for the keys the policy writes (BucketKey),
// and for any other key its prefix before the last ':'.
struct KeyParts {
  GroupType type;
  std::string group;
  std::string kind;
};

KeyParts ParseKey(absl::string_view key) {
  if (absl::StatusOr<BucketKey> parsed = BucketKey::Parse(key); parsed.ok()) {
    return {
        parsed->owner() == BucketKey::Owner::kProvider ? GroupType::kProvider : GroupType::kScope,
        parsed->OwnerName(), std::string(parsed->suffix())};
  }
  const size_t colon = key.rfind(':');
  if (colon == absl::string_view::npos || colon == 0 || colon + 1 == key.size()) {
    return {GroupType::kOther, std::string(key), ""};
  }
  return {GroupType::kOther, std::string(key.substr(0, colon)), std::string(key.substr(colon + 1))};
}

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

// What the configuration names: scopes in hierarchy order, then the provider
// model classes that have buckets.
void AddConfigured(const LimitsConfig& config, absl::Time now, GroupTable* table) {
  const EffectiveLimits limits(config);
  std::vector<const ScopeLimits*> scopes;
  std::set<std::string> done;
  AddScopesInOrder(config, "", &done, &scopes);
  for (const ScopeLimits* scope : scopes) {
    const OwnerLimits& owner = *limits.FindScope(scope->name);
    Group& g = table->Get(GroupType::kScope, owner.name);
    g.configured = true;
    g.parent = scope->parent;
    for (const ScopeLimits* s : ResolveScope(config, scope->name).scopes) g.path.push_back(s->name);
    for (const BucketSpec& spec : owner.buckets) g.buckets.push_back(ConfiguredBucket(spec));
    for (const BudgetSpec& spec : owner.budgets) {
      g.budgets.push_back({.key = spec.key,
                           .period = spec.period,
                           .window = WindowName(spec.period, now),
                           .limit_micro_usd = spec.limit_micro_usd});
    }
    if (const std::optional<ConcurrencySpec>& spec = owner.concurrency) {
      g.concurrency.push_back({.key = spec->key, .max_in_flight = spec->max_in_flight});
    }
  }
  for (const OwnerLimits& owner : limits.owners()) {
    if (owner.type != BucketKey::Owner::kProvider || owner.buckets.empty()) continue;
    Group& g = table->Get(GroupType::kProvider, owner.name);
    g.configured = true;
    for (const BucketSpec& spec : owner.buckets) g.buckets.push_back(ConfiguredBucket(spec));
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

// A provider account's bucket (a key "provider:P@A:C:KIND") runs on the
// configuration of its provider's bucket: with a config, it shows that
// bucket's limit.
void AddAccountLimit(const EffectiveLimits& limits, StatsSnapshot::Bucket* b) {
  const absl::StatusOr<BucketKey> key = BucketKey::Parse(b->key);
  if (!key.ok() || key->account().empty() || !key->limit_kind()) return;
  const std::string shared =
      BucketKey::ProviderLimit(key->provider(), key->model_class(), *key->limit_kind()).ToString();
  for (const OwnerLimits& owner : limits.owners()) {
    for (const BucketSpec& spec : owner.buckets) {
      if (spec.key != shared) continue;
      b->limit = spec.limit;
      b->limit_period = LimitPeriod(spec.kind);
      return;
    }
  }
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
  std::optional<EffectiveLimits> limits;
  if (config != nullptr) {
    AddConfigured(*config, now, &table);
    limits.emplace(*config);
  }
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
    if (limits && !b.limit) AddAccountLimit(*limits, &b);
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

double StatsSnapshot::Bucket::RatePerSecond() const {
  const double seconds = absl::ToDoubleSeconds(rate.period());
  return seconds > 0 ? static_cast<double>(rate.permits()) / seconds : 0.0;
}

std::optional<double> StatsSnapshot::Budget::PercentSpent() const {
  if (!limit_micro_usd) return std::nullopt;
  return Percent(static_cast<int64_t>(spent_micro_usd), *limit_micro_usd);
}

int StatsSnapshot::AliveProcesses() const {
  return static_cast<int>(absl::c_count_if(processes, [](const Process& p) { return p.alive; }));
}

}  // namespace sluice
