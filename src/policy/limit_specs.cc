// From a limits configuration to what the policy opens: the names and
// suffixes of limit kinds, the bucket specs of provider model classes and
// scopes (headroom, bursts, keys), budgets, concurrency caps, model classes
// and prices by pattern, scope paths with fallback, budget windows, and the
// time-scaled config of a rehearsal.

#include "src/policy/limit_specs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"
#include "sluice/bucket_key.h"
#include "sluice/limits.h"

namespace sluice {

absl::string_view LimitKindKey(LimitKind kind) {
  switch (kind) {
    case LimitKind::kRequestsPerMinute:
      return "requests_per_minute";
    case LimitKind::kInputTokensPerMinute:
      return "input_tokens_per_minute";
    case LimitKind::kOutputTokensPerMinute:
      return "output_tokens_per_minute";
    case LimitKind::kTokensPerMinute:
      return "tokens_per_minute";
    case LimitKind::kTokensPerDay:
      return "tokens_per_day";
  }
  return "unknown";
}

absl::string_view LimitKindSuffix(LimitKind kind) {
  switch (kind) {
    case LimitKind::kRequestsPerMinute:
      return "rpm";
    case LimitKind::kInputTokensPerMinute:
      return "itpm";
    case LimitKind::kOutputTokensPerMinute:
      return "otpm";
    case LimitKind::kTokensPerMinute:
      return "tpm";
    case LimitKind::kTokensPerDay:
      return "tpd";
  }
  return "unknown";
}

std::string SourceLocation::ToString() const { return absl::StrCat(file, ":", line, ":", column); }

namespace internal_limits {

bool IsPerDay(LimitKind kind) { return kind == LimitKind::kTokensPerDay; }

absl::Duration PeriodOf(LimitKind kind) {
  return IsPerDay(kind) ? absl::Hours(24) : absl::Minutes(1);
}

Rate RateOf(LimitKind kind, uint64_t limit) {
  return IsPerDay(kind) ? Rate::PerDay(limit) : Rate::PerMinute(limit);
}

// floor(limit * headroom), at least 1. Headroom is a decimal fraction in the
// file (0.8, 0.29) that a double holds only approximately, so 1000 * 0.29
// comes out as 289.99999999999997: a product within rounding error of a whole
// number is taken as that number, or the bucket would lose a permit.
uint64_t ApplyHeadroom(uint64_t limit, double headroom) {
  const long double product = static_cast<long double>(limit) * headroom;
  if (!(product >= 1)) return 1;  // also NaN, from a hand-built config
  if (product >= 0x1p64L) return std::numeric_limits<uint64_t>::max();
  const long double nearest = std::nearbyint(product);
  const long double scaled =
      std::fabs(product - nearest) <= product * 1e-12L ? nearest : std::floor(product);
  return std::max<uint64_t>(1, static_cast<uint64_t>(scaled));
}

// max(1, floor(limit * burst / period)), in integers: limit * burst in ns
// overflows 64 bits for large token limits.
uint64_t DerivedBurst(uint64_t limit, absl::Duration burst, absl::Duration period) {
  const int64_t burst_ns = absl::ToInt64Nanoseconds(burst);
  const int64_t period_ns = absl::ToInt64Nanoseconds(period);
  if (burst_ns <= 0 || period_ns <= 0) return 1;
  const unsigned __int128 permits = static_cast<unsigned __int128>(limit) *
                                    static_cast<uint64_t>(burst_ns) /
                                    static_cast<uint64_t>(period_ns);
  if (permits > std::numeric_limits<uint64_t>::max()) return std::numeric_limits<uint64_t>::max();
  return std::max<uint64_t>(1, static_cast<uint64_t>(permits));
}

uint64_t DefaultBurst(const LimitsConfig& config, LimitKind kind, uint64_t limit) {
  return DerivedBurst(limit, IsPerDay(kind) ? config.day_burst : config.minute_burst,
                      PeriodOf(kind));
}

std::optional<uint64_t> Lookup(const std::map<LimitKind, uint64_t>& map, LimitKind kind) {
  auto it = map.find(kind);
  if (it == map.end()) return std::nullopt;
  return it->second;
}

std::optional<KindLimit> Merge(const LimitSet& own, const LimitSet* base, LimitKind kind) {
  const std::optional<uint64_t> own_burst = Lookup(own.burst, kind);
  if (std::optional<uint64_t> limit = Lookup(own.per_period, kind)) {
    return KindLimit{*limit, own_burst};
  }
  if (base == nullptr) return std::nullopt;
  std::optional<uint64_t> limit = Lookup(base->per_period, kind);
  if (!limit) return std::nullopt;
  return KindLimit{*limit, own_burst ? own_burst : Lookup(base->burst, kind)};
}

}  // namespace internal_limits

namespace {

using internal_limits::ApplyHeadroom;
using internal_limits::DefaultBurst;
using internal_limits::IsPerDay;
using internal_limits::KindLimit;
using internal_limits::Merge;
using internal_limits::RateOf;

BucketSpec MakeBucket(const LimitsConfig& config, std::string key, std::string owner,
                      LimitKind kind, uint64_t limit, std::optional<uint64_t> burst) {
  BucketSpec spec;
  spec.key = std::move(key);
  spec.owner = std::move(owner);
  spec.kind = kind;
  spec.limit = limit;
  spec.config = {.rate = RateOf(kind, limit),
                 .capacity = burst ? *burst : DefaultBurst(config, kind, limit)};
  spec.explicit_burst = burst.has_value();
  return spec;
}

// Patterns -------------------------------------------------------------------------

bool IsPrefixPattern(absl::string_view pattern) { return absl::EndsWith(pattern, "*"); }

// How well `pattern` matches `model`: nullopt for no match, else the length
// of the literal part, with exact matches above every prefix match.
std::optional<size_t> MatchRank(absl::string_view pattern, absl::string_view model) {
  if (!IsPrefixPattern(pattern)) {
    if (pattern != model) return std::nullopt;
    return std::numeric_limits<size_t>::max();
  }
  pattern.remove_suffix(1);
  if (!absl::StartsWith(model, pattern)) return std::nullopt;
  return pattern.size();
}

}  // namespace

std::vector<BucketSpec> ProviderBuckets(const LimitsConfig& config, const ProviderLimits& provider,
                                        const ModelClass* model_class) {
  const LimitSet& own = model_class != nullptr ? model_class->limits : provider.limits;
  const LimitSet* base = model_class != nullptr ? &provider.limits : nullptr;
  const std::string class_name = model_class != nullptr ? model_class->name : "default";
  std::vector<BucketSpec> specs;
  for (LimitKind kind : kAllLimitKinds) {
    const std::optional<KindLimit> merged = Merge(own, base, kind);
    if (!merged) continue;
    const BucketKey key = BucketKey::ProviderLimit(provider.name, class_name, kind);
    specs.push_back(MakeBucket(config, key.ToString(), key.OwnerName(), kind,
                               ApplyHeadroom(merged->limit, config.headroom), merged->burst));
  }
  return specs;
}

std::vector<BucketSpec> ScopeBuckets(const LimitsConfig& config, const ScopeLimits& scope) {
  std::vector<BucketSpec> specs;
  for (LimitKind kind : kAllLimitKinds) {
    const std::optional<KindLimit> own = Merge(scope.limits, nullptr, kind);
    if (!own) continue;
    specs.push_back(MakeBucket(config, BucketKey::ScopeLimit(scope.name, kind).ToString(),
                               scope.name, kind, own->limit, own->burst));
  }
  return specs;
}

std::vector<BudgetSpec> ScopeBudgets(const ScopeLimits& scope) {
  std::vector<BudgetSpec> specs;
  auto add = [&](const std::optional<double>& usd, BudgetPeriod period) {
    if (!usd) return;
    specs.push_back(
        {.key = BucketKey::ScopeBudget(scope.name, period).ToString(),
         .scope = scope.name,
         .period = period,
         .limit_micro_usd = static_cast<uint64_t>(std::max(0LL, std::llround(*usd * 1e6)))});
  };
  add(scope.usd_per_day, BudgetPeriod::kDay);
  add(scope.usd_per_month, BudgetPeriod::kMonth);
  return specs;
}

std::optional<ConcurrencySpec> ScopeConcurrency(const ScopeLimits& scope) {
  if (!scope.max_concurrency) return std::nullopt;
  return ConcurrencySpec{.key = BucketKey::ScopeConcurrency(scope.name).ToString(),
                         .scope = scope.name,
                         .max_in_flight = *scope.max_concurrency};
}

const ModelClass* FindModelClass(const ProviderLimits& provider, absl::string_view model) {
  const ModelClass* best = nullptr;
  size_t best_rank = 0;
  for (const ModelClass& model_class : provider.models) {
    for (const std::string& pattern : model_class.match) {
      const std::optional<size_t> rank = MatchRank(pattern, model);
      if (rank && (best == nullptr || *rank > best_rank)) {
        best = &model_class;
        best_rank = *rank;
      }
    }
  }
  return best;
}

const Price* FindPrice(const LimitsConfig& config, absl::string_view model) {
  const Price* best = nullptr;
  size_t best_rank = 0;
  for (const auto& [pattern, price] : config.prices) {
    const std::optional<size_t> rank = MatchRank(pattern, model);
    if (rank && (best == nullptr || *rank > best_rank)) {
      best = &price;
      best_rank = *rank;
    }
  }
  return best;
}

ScopePath ResolveScope(const LimitsConfig& config, absl::string_view scope) {
  auto find = [&](absl::string_view name) -> const ScopeLimits* {
    auto it = config.scopes.find(std::string(name));
    return it == config.scopes.end() ? nullptr : &it->second;
  };
  ScopePath path;
  const ScopeLimits* start = find(scope);
  if (start == nullptr) {
    path.fell_back = true;
    // "team:marketing:campaign-7" -> "team:marketing" -> "team" -> "global".
    for (size_t colon = scope.rfind(':');
         start == nullptr && colon != absl::string_view::npos && colon > 0;
         colon = scope.rfind(':', colon - 1)) {
      start = find(scope.substr(0, colon));
    }
    if (start == nullptr) start = find("global");
    // A file that configures no "global" scope has an implicit one that
    // limits nothing, so that a file with only provider limits works.
    if (start == nullptr) {
      static const ScopeLimits* const kImplicitGlobal = [] {
        auto* global = new ScopeLimits();
        global->name = "global";
        return global;
      }();
      path.fell_back = scope != "global";
      path.scopes.push_back(kImplicitGlobal);
      return path;
    }
  }
  // Bounded, so that a hand-built config with a cycle cannot loop forever.
  for (const ScopeLimits* s = start; s != nullptr && path.scopes.size() <= config.scopes.size();
       s = s->parent.empty() ? nullptr : find(s->parent)) {
    path.scopes.push_back(s);
  }
  return path;
}

int64_t BudgetWindowId(BudgetPeriod period, absl::Time t) {
  if (period == BudgetPeriod::kDay) {
    return absl::ToUnixSeconds(t) / absl::ToInt64Seconds(absl::Hours(24));
  }
  const absl::CivilMonth month = absl::ToCivilMonth(t, absl::UTCTimeZone());
  return (month.year() - 1970) * 12 + (month.month() - 1);
}

LimitsConfig TimeScaled(LimitsConfig config, double scale) {
  auto scale_rate = [scale](uint64_t& per_period) {
    const double scaled = std::round(static_cast<double>(per_period) * scale);
    per_period = scaled >= 1.8e19 ? std::numeric_limits<uint64_t>::max()
                                  : std::max<uint64_t>(1, static_cast<uint64_t>(scaled));
  };
  auto scale_set = [&scale_rate](LimitSet& set) {
    for (auto& [kind, per_period] : set.per_period) scale_rate(per_period);
  };
  for (auto& [name, provider] : config.providers) {
    scale_set(provider.limits);
    for (ModelClass& model_class : provider.models) scale_set(model_class.limits);
  }
  for (auto& [name, scope] : config.scopes) scale_set(scope.limits);
  if (config.proxy.count_tokens_requests_per_minute.has_value()) {
    scale_rate(*config.proxy.count_tokens_requests_per_minute);
  }
  config.minute_burst /= scale;
  config.day_burst /= scale;
  return config;
}
}  // namespace sluice
