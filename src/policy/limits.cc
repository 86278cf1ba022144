// The limits configuration: the TOML file read with toml++ and checked so that
// every mistake is reported at its file:line:column. (What the policy opens
// from it, the specs, is limit_specs.cc.)
//
// toml++ is built with exceptions in Debian (TOML_EXCEPTIONS=1): toml::parse
// throws toml::parse_error. It is caught here, at the one call, so that
// nothing escapes ParseLimitsConfig; the tree is then read only with the
// non-throwing accessors (as_table, as_integer, ...).

#include "sluice/limits.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "sluice/bucket_key.h"
#include "sluice/effective_limits.h"
#include "sluice/rate.h"
#include "sluice/segment.h"
#include "sluice/window_counter.h"
#include "src/policy/limit_specs.h"
#include "src/policy/limits_parser.h"
#include "src/policy/toml_messages.h"
#include "toml++/toml.h"

namespace sluice {
namespace internal_limits {
namespace {

using internal_limits::ApplyHeadroom;
using internal_limits::DefaultBurst;
using internal_limits::IsPerDay;
using internal_limits::KindLimit;
using internal_limits::Merge;
using internal_limits::RateOf;
using toml_messages::Child;
using toml_messages::DidYouMean;
using toml_messages::Element;
using toml_messages::QuoteKey;
using toml_messages::TypeName;

// TOML keys and messages --------------------------------------------------------

// What is wrong with a model-name pattern, if anything.
std::optional<std::string> PatternProblem(absl::string_view pattern) {
  if (pattern.empty()) return "pattern is empty";
  const size_t star = pattern.find('*');
  if (star != absl::string_view::npos && star != pattern.size() - 1) {
    return absl::StrCat("pattern \"", pattern,
                        "\" has a '*' before its end; only a trailing '*' (a prefix) is supported");
  }
  return std::nullopt;
}

// The keys each table may hold.
std::vector<std::string> KindKeys() {
  std::vector<std::string> keys;
  for (LimitKind kind : kAllLimitKinds) keys.emplace_back(LimitKindKey(kind));
  return keys;
}

std::vector<std::string> KindKeysAnd(std::initializer_list<absl::string_view> more) {
  std::vector<std::string> keys = KindKeys();
  for (absl::string_view key : more) keys.emplace_back(key);
  return keys;
}

}  // namespace

// Parser ---------------------------------------------------------------------------

absl::Status Parser::CheckKeys(const toml::table& table, absl::string_view path,
                               const std::vector<std::string>& known) const {
  for (auto&& [key, value] : table) {
    if (std::find(known.begin(), known.end(), Text(key)) != known.end()) continue;
    return Error(key.source(), Child(path, Text(key)),
                 absl::StrCat("unknown key", DidYouMean(Text(key), known)));
  }
  return absl::OkStatus();
}

absl::StatusOr<const toml::table*> Parser::ReadTable(const toml::node& node,
                                                     absl::string_view path) const {
  if (const toml::table* table = node.as_table()) return table;
  return Error(node, path, absl::StrCat("must be a table, not ", TypeName(node)));
}

absl::StatusOr<uint64_t> Parser::ReadPositiveInteger(const toml::node& node,
                                                     absl::string_view path) const {
  const toml::value<int64_t>* value = node.as_integer();
  if (value == nullptr) {
    return Error(node, path, absl::StrCat("must be a positive integer, not ", TypeName(node)));
  }
  if (value->get() <= 0) {
    return Error(node, path, absl::StrCat("must be a positive integer, got ", value->get()));
  }
  return static_cast<uint64_t>(value->get());
}

absl::StatusOr<double> Parser::ReadNumber(const toml::node& node, absl::string_view path) const {
  if (const toml::value<int64_t>* value = node.as_integer()) {
    return static_cast<double>(value->get());
  }
  if (const toml::value<double>* value = node.as_floating_point()) {
    if (!std::isfinite(value->get())) return Error(node, path, "must be a finite number");
    return value->get();
  }
  return Error(node, path, absl::StrCat("must be a number, not ", TypeName(node)));
}

absl::StatusOr<std::string> Parser::ReadString(const toml::node& node,
                                               absl::string_view path) const {
  if (const toml::value<std::string>* value = node.as_string()) return value->get();
  return Error(node, path, absl::StrCat("must be a string, not ", TypeName(node)));
}

absl::StatusOr<bool> Parser::ReadBool(const toml::node& node, absl::string_view path) const {
  if (const toml::value<bool>* value = node.as_boolean()) return value->get();
  return Error(node, path, absl::StrCat("must be true or false, not ", TypeName(node)));
}

absl::StatusOr<absl::Duration> Parser::ReadDuration(const toml::node& node, absl::string_view path,
                                                    absl::Duration limit, Bound bound) const {
  absl::StatusOr<std::string> text = ReadString(node, path);
  if (!text.ok()) return text.status();
  absl::Duration duration;
  if (!absl::ParseDuration(*text, &duration)) {
    return Error(node, path, absl::StrCat("\"", *text, "\" is not a duration such as \"6s\""));
  }
  const bool over = bound == Bound::kBelow ? duration >= limit : duration > limit;
  if (duration <= absl::ZeroDuration() || over) {
    return Error(
        node, path,
        absl::StrCat("must be more than 0 and ", bound == Bound::kBelow ? "less than " : "at most ",
                     absl::FormatDuration(limit), ", got ", absl::FormatDuration(duration)));
  }
  return duration;
}

absl::StatusOr<double> Parser::ReadUsd(const toml::node& node, absl::string_view path) const {
  absl::StatusOr<double> usd = ReadNumber(node, path);
  if (!usd.ok()) return usd.status();
  if (*usd <= 0) return Error(node, path, absl::StrCat("must be a positive amount, got ", *usd));
  // Budgets are counted in whole micro-dollars, in a counter of 2^43 - 1
  // micro-dollars a window (window_counter.h).
  if (*usd < 1e-6) return Error(node, path, "must be at least 0.000001 (one micro-dollar)");
  constexpr double kMaxUsd = static_cast<double>(WindowCounterRef::kMaxAmount) / 1e6;
  if (*usd > kMaxUsd) {
    return Error(node, path,
                 absl::StrFormat("must be at most %.6f USD, the most a budget counter holds "
                                 "(2^43 - 1 micro-dollars a day or month); got %.6f",
                                 kMaxUsd, *usd));
  }
  return *usd;
}

// Names become parts of bucket keys; BucketKey says which it can hold.
absl::Status Parser::CheckName(const toml::key& key, absl::string_view path,
                               BucketKey::Part part) const {
  absl::Status s = BucketKey::ValidateName(part, Text(key));
  return s.ok() ? s : Error(key.source(), path, s.message());
}

absl::StatusOr<LimitsConfig> Parser::Parse(absl::string_view text) {
  toml::table root;
  try {
    root =
        toml::parse(std::string_view(text.data(), text.size()), std::string_view(config_.source));
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(e.source()).ToString(), ": ", std::string(e.description())));
  } catch (const std::exception& e) {  // bad_alloc: no exception leaves the parser
    return absl::ResourceExhaustedError(absl::StrCat(config_.source, ": ", e.what()));
  }
  if (absl::Status s = ParseTop(root); !s.ok()) return s;
  if (absl::Status s = LinkScopes(); !s.ok()) return s;
  if (absl::Status s = CheckKeyLengths(); !s.ok()) return s;
  return std::move(config_);
}

absl::Status Parser::ParseTop(const toml::table& root) {
  if (absl::Status s = CheckKeys(root, "",
                                 {"headroom", "minute_burst", "day_burst", "providers", "scopes",
                                  "prices", "proxy", "cluster"});
      !s.ok()) {
    return s;
  }
  // The scalars first: every limit below is checked against them.
  if (const toml::node* node = root.get("headroom")) {
    absl::StatusOr<double> headroom = ReadNumber(*node, "headroom");
    if (!headroom.ok()) return headroom.status();
    if (!(*headroom > 0 && *headroom <= 1)) {
      return Error(*node, "headroom",
                   absl::StrCat("must be more than 0 and at most 1, got ", *headroom));
    }
    config_.headroom = *headroom;
  }
  if (const toml::node* node = root.get("minute_burst")) {
    absl::StatusOr<absl::Duration> burst =
        ReadDuration(*node, "minute_burst", absl::Minutes(1), Bound::kBelow);
    if (!burst.ok()) return burst.status();
    config_.minute_burst = *burst;
  }
  if (const toml::node* node = root.get("day_burst")) {
    absl::StatusOr<absl::Duration> burst =
        ReadDuration(*node, "day_burst", absl::Hours(24), Bound::kBelow);
    if (!burst.ok()) return burst.status();
    config_.day_burst = *burst;
  }
  if (const toml::node* node = root.get("providers")) {
    absl::StatusOr<const toml::table*> providers = ReadTable(*node, "providers");
    if (!providers.ok()) return providers.status();
    for (auto&& [name, value] : **providers) {
      if (absl::Status s = ParseProvider(name, value, Child("providers", Text(name))); !s.ok()) {
        return s;
      }
    }
  }
  if (const toml::node* node = root.get("scopes")) {
    absl::StatusOr<const toml::table*> scopes = ReadTable(*node, "scopes");
    if (!scopes.ok()) return scopes.status();
    for (auto&& [name, value] : **scopes) {
      if (absl::Status s = ParseScope(name, value, Child("scopes", Text(name))); !s.ok()) return s;
    }
  }
  if (const toml::node* node = root.get("prices")) {
    absl::StatusOr<const toml::table*> prices = ReadTable(*node, "prices");
    if (!prices.ok()) return prices.status();
    for (auto&& [pattern, value] : **prices) {
      if (absl::Status s = ParsePrice(pattern, value, Child("prices", Text(pattern))); !s.ok()) {
        return s;
      }
    }
  }
  if (const toml::node* node = root.get("proxy")) {
    if (absl::Status s = ParseProxy(*node); !s.ok()) return s;
  }
  if (const toml::node* node = root.get("cluster")) {
    if (absl::Status s = ParseCluster(*node); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// Reads the five limit keys of `table` and its optional [burst] table. The
// caller has checked that `table` holds no other keys.
absl::Status Parser::ParseLimitSet(const toml::table& table, absl::string_view path, LimitSet* set,
                                   LimitSetSource* source) const {
  for (LimitKind kind : kAllLimitKinds) {
    const toml::node* node = Get(table, LimitKindKey(kind));
    if (node == nullptr) continue;
    std::string key_path = Child(path, LimitKindKey(kind));
    absl::StatusOr<uint64_t> limit = ReadPositiveInteger(*node, key_path);
    if (!limit.ok()) return limit.status();
    set->per_period[kind] = *limit;
    source->limit[kind] = {node->source(), std::move(key_path)};
  }
  const toml::node* burst_node = table.get("burst");
  if (burst_node == nullptr) return absl::OkStatus();
  const std::string burst_path = Child(path, "burst");
  absl::StatusOr<const toml::table*> bursts = ReadTable(*burst_node, burst_path);
  if (!bursts.ok()) return bursts.status();
  if (absl::Status s = CheckKeys(**bursts, burst_path, KindKeys()); !s.ok()) return s;
  for (LimitKind kind : kAllLimitKinds) {
    const toml::node* node = Get(**bursts, LimitKindKey(kind));
    if (node == nullptr) continue;
    std::string key_path = Child(burst_path, LimitKindKey(kind));
    absl::StatusOr<uint64_t> burst = ReadPositiveInteger(*node, key_path);
    if (!burst.ok()) return burst.status();
    set->burst[kind] = *burst;
    source->burst[kind] = {node->source(), std::move(key_path)};
  }
  return absl::OkStatus();
}

// Checks every bucket `set` defines or changes over `base` (a class over its
// provider): an explicit burst needs a limit and may not exceed its effective
// value (a burst is less than one period's worth: providers enforce at finer
// grain), and the pair must make a valid bucket.
absl::Status Parser::CheckLimitSet(const LimitSet& set, const LimitSetSource& source,
                                   const LimitSet* base, double headroom) const {
  for (LimitKind kind : kAllLimitKinds) {
    const bool own_limit = set.per_period.contains(kind);
    const bool own_burst = set.burst.contains(kind);
    if (!own_limit && !own_burst) continue;
    const std::optional<KindLimit> merged = Merge(set, base, kind);
    if (!merged) {
      const Written& at = source.burst.at(kind);
      return Error(at.where, at.path,
                   absl::StrCat("burst for ", LimitKindKey(kind), ", which has no limit here"));
    }
    const uint64_t effective = ApplyHeadroom(merged->limit, headroom);
    if (own_burst && *merged->burst > effective) {
      const Written& at = source.burst.at(kind);
      return Error(
          at.where, at.path,
          absl::StrCat("burst ", *merged->burst, " is more than the limit's whole ",
                       IsPerDay(kind) ? "day" : "minute", " (", RateOf(kind, effective).ToString(),
                       headroom < 1 ? " after headroom)" : ")"));
    }
    const BucketConfig bucket = {
        .rate = RateOf(kind, effective),
        .capacity = merged->burst ? *merged->burst : DefaultBurst(config_, kind, effective)};
    if (absl::Status s = ValidateBucketConfig(bucket); !s.ok()) {
      const Written& at = own_limit ? source.limit.at(kind) : source.burst.at(kind);
      return Error(at.where, at.path, s.message());
    }
  }
  return absl::OkStatus();
}

absl::Status Parser::ParseProvider(const toml::key& name, const toml::node& node,
                                   absl::string_view path) {
  if (absl::Status s = CheckName(name, path, BucketKey::Part::kProvider); !s.ok()) return s;
  absl::StatusOr<const toml::table*> table = ReadTable(node, path);
  if (!table.ok()) return table.status();
  if (absl::Status s = CheckKeys(
          **table, path, KindKeysAnd({"burst", "models", "output_precharge", "count_cache_reads"}));
      !s.ok()) {
    return s;
  }
  ProviderLimits provider;
  provider.name = Text(name);
  provider.where = Where(name.source());
  LimitSetSource source;
  if (absl::Status s = ParseLimitSet(**table, path, &provider.limits, &source); !s.ok()) return s;
  if (absl::Status s = CheckLimitSet(provider.limits, source, nullptr, config_.headroom); !s.ok()) {
    return s;
  }
  if (const toml::node* precharge = (*table)->get("output_precharge")) {
    const std::string key_path = Child(path, "output_precharge");
    absl::StatusOr<std::string> text = ReadString(*precharge, key_path);
    if (!text.ok()) return text.status();
    if (*text == "max_tokens") {
      provider.output_precharge = OutputPrecharge::kMaxTokens;
    } else if (*text == "none") {
      provider.output_precharge = OutputPrecharge::kNone;
    } else {
      return Error(*precharge, key_path,
                   absl::StrCat("must be \"max_tokens\" or \"none\", got \"", *text, "\""));
    }
  }
  if (const toml::node* count = (*table)->get("count_cache_reads")) {
    absl::StatusOr<bool> value = ReadBool(*count, Child(path, "count_cache_reads"));
    if (!value.ok()) return value.status();
    provider.count_cache_reads = *value;
  }
  if (const toml::node* models_node = (*table)->get("models")) {
    const std::string models_path = Child(path, "models");
    absl::StatusOr<const toml::table*> models = ReadTable(*models_node, models_path);
    if (!models.ok()) return models.status();
    std::map<std::string, std::string> pattern_owner;  // pattern -> class
    for (auto&& [class_name, value] : **models) {
      if (absl::Status s = ParseModelClass(class_name, value, Child(models_path, Text(class_name)),
                                           &provider, &pattern_owner);
          !s.ok()) {
        return s;
      }
    }
  }
  config_.providers[provider.name] = std::move(provider);
  return absl::OkStatus();
}

absl::Status Parser::ParseModelClass(const toml::key& name, const toml::node& node,
                                     absl::string_view path, ProviderLimits* provider,
                                     std::map<std::string, std::string>* pattern_owner) const {
  if (absl::Status s = CheckName(name, path, BucketKey::Part::kModelClass); !s.ok()) return s;
  // "default" is the key part of the models no class matches.
  if (Text(name) == "default") {
    return Error(name.source(), path,
                 "\"default\" is reserved for the models no class matches; the provider's own "
                 "limits are its limits");
  }
  absl::StatusOr<const toml::table*> table = ReadTable(node, path);
  if (!table.ok()) return table.status();
  if (absl::Status s =
          CheckKeys(**table, path, KindKeysAnd({"match", "burst", "count_cache_reads"}));
      !s.ok()) {
    return s;
  }
  ModelClass model_class;
  model_class.name = Text(name);
  model_class.where = Where(name.source());

  const toml::node* match_node = (*table)->get("match");
  if (match_node == nullptr) {
    return Error(name.source(), path, "missing key match (the model names of this class)");
  }
  const std::string match_path = Child(path, "match");
  const toml::array* match = match_node->as_array();
  if (match == nullptr || match->empty()) {
    return Error(*match_node, match_path,
                 absl::StrCat("must be a non-empty array of model names, not ",
                              match == nullptr ? TypeName(*match_node) : "an empty array"));
  }
  for (size_t i = 0; i < match->size(); ++i) {
    const toml::node& element = *match->get(i);
    const std::string element_path = Element(match_path, i);
    absl::StatusOr<std::string> pattern = ReadString(element, element_path);
    if (!pattern.ok()) return pattern.status();
    if (std::optional<std::string> problem = PatternProblem(*pattern)) {
      return Error(element, element_path, *problem);
    }
    auto [owner, inserted] = pattern_owner->try_emplace(*pattern, model_class.name);
    if (!inserted) {
      return Error(element, element_path,
                   owner->second == model_class.name
                       ? absl::StrCat("pattern \"", *pattern, "\" is listed twice")
                       : absl::StrCat("pattern \"", *pattern, "\" is already matched by class ",
                                      owner->second));
    }
    model_class.match.push_back(*std::move(pattern));
  }

  LimitSetSource source;
  if (absl::Status s = ParseLimitSet(**table, path, &model_class.limits, &source); !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckLimitSet(model_class.limits, source, &provider->limits, config_.headroom);
      !s.ok()) {
    return s;
  }
  if (const toml::node* count = (*table)->get("count_cache_reads")) {
    absl::StatusOr<bool> value = ReadBool(*count, Child(path, "count_cache_reads"));
    if (!value.ok()) return value.status();
    model_class.count_cache_reads = *value;
  }
  provider->models.push_back(std::move(model_class));
  return absl::OkStatus();
}

absl::Status Parser::ParseScope(const toml::key& name, const toml::node& node,
                                absl::string_view path) {
  if (absl::Status s = CheckName(name, path, BucketKey::Part::kScope); !s.ok()) return s;
  absl::StatusOr<const toml::table*> table = ReadTable(node, path);
  if (!table.ok()) return table.status();
  if (absl::Status s = CheckKeys(**table, path,
                                 KindKeysAnd({"parent", "burst", "max_concurrency", "usd_per_day",
                                              "usd_per_month", "priority"}));
      !s.ok()) {
    return s;
  }
  ScopeLimits scope;
  scope.name = Text(name);
  scope.where = Where(name.source());
  if (const toml::node* parent = (*table)->get("parent")) {
    std::string parent_path = Child(path, "parent");
    absl::StatusOr<std::string> text = ReadString(*parent, parent_path);
    if (!text.ok()) return text.status();
    if (text->empty()) return Error(*parent, parent_path, "must name a scope, not be empty");
    scope.parent = *std::move(text);
    parent_at_[scope.name] = {parent->source(), std::move(parent_path)};
  }
  LimitSetSource source;
  if (absl::Status s = ParseLimitSet(**table, path, &scope.limits, &source); !s.ok()) return s;
  // Application limits are exact: headroom is for the provider's.
  if (absl::Status s = CheckLimitSet(scope.limits, source, nullptr, /*headroom=*/1); !s.ok()) {
    return s;
  }
  if (const toml::node* cap = (*table)->get("max_concurrency")) {
    const std::string cap_path = Child(path, "max_concurrency");
    absl::StatusOr<uint64_t> value = ReadPositiveInteger(*cap, cap_path);
    if (!value.ok()) return value.status();
    if (*value > 65535) {
      return Error(*cap, cap_path, absl::StrCat("must be 1 to 65535, got ", *value));
    }
    scope.max_concurrency = static_cast<uint32_t>(*value);
  }
  if (const toml::node* usd = (*table)->get("usd_per_day")) {
    absl::StatusOr<double> value = ReadUsd(*usd, Child(path, "usd_per_day"));
    if (!value.ok()) return value.status();
    scope.usd_per_day = *value;
  }
  if (const toml::node* usd = (*table)->get("usd_per_month")) {
    absl::StatusOr<double> value = ReadUsd(*usd, Child(path, "usd_per_month"));
    if (!value.ok()) return value.status();
    scope.usd_per_month = *value;
  }
  if (const toml::node* priority = (*table)->get("priority")) {
    absl::StatusOr<Priority> value = ReadPriority(*priority, Child(path, "priority"));
    if (!value.ok()) return value.status();
    scope.priority = *value;
  }
  config_.scopes[scope.name] = std::move(scope);
  return absl::OkStatus();
}

absl::Status Parser::ParsePrice(const toml::key& pattern, const toml::node& node,
                                absl::string_view path) {
  if (std::optional<std::string> problem = PatternProblem(Text(pattern))) {
    return Error(pattern.source(), path, *problem);
  }
  absl::StatusOr<const toml::table*> table = ReadTable(node, path);
  if (!table.ok()) return table.status();
  if (absl::Status s = CheckKeys(**table, path, {"input", "output", "cache_write", "cache_read"});
      !s.ok()) {
    return s;
  }
  // Reads one price; nullopt when absent.
  auto read = [&](absl::string_view key) -> absl::StatusOr<std::optional<double>> {
    const toml::node* value_node = Get(**table, key);
    if (value_node == nullptr) return std::nullopt;
    const std::string key_path = Child(path, key);
    absl::StatusOr<double> value = ReadNumber(*value_node, key_path);
    if (!value.ok()) return value.status();
    if (*value < 0) {
      return Error(*value_node, key_path, absl::StrCat("must not be negative, got ", *value));
    }
    return *value;
  };
  Price price;
  for (absl::string_view required : {"input", "output"}) {
    absl::StatusOr<std::optional<double>> value = read(required);
    if (!value.ok()) return value.status();
    if (!value->has_value()) {
      return Error(pattern.source(), path,
                   absl::StrCat("missing key ", required, " (USD per million tokens)"));
    }
    (required == "input" ? price.input : price.output) = **value;
  }
  // Unpriced cache traffic is charged as input, which can only overestimate.
  price.cache_write = price.input;
  price.cache_read = price.input;
  absl::StatusOr<std::optional<double>> cache_write = read("cache_write");
  if (!cache_write.ok()) return cache_write.status();
  if (cache_write->has_value()) price.cache_write = **cache_write;
  absl::StatusOr<std::optional<double>> cache_read = read("cache_read");
  if (!cache_read.ok()) return cache_read.status();
  if (cache_read->has_value()) price.cache_read = **cache_read;
  config_.prices[Text(pattern)] = price;
  return absl::OkStatus();
}

// Gives parentless scopes "global" as their parent, then checks that every
// parent exists and that following parents always ends at a root.
absl::Status Parser::LinkScopes() {
  const bool has_global = config_.scopes.contains("global");
  std::vector<std::string> names;
  for (const auto& [name, scope] : config_.scopes) names.push_back(name);
  for (auto& [name, scope] : config_.scopes) {
    if (scope.parent.empty()) {
      if (has_global && name != "global") scope.parent = "global";
      continue;
    }
    const Written& at = parent_at_.at(name);
    if (name == "global") {
      return Error(at.where, at.path, "\"global\" is the root of every path and has no parent");
    }
    if (!config_.scopes.contains(scope.parent)) {
      return Error(
          at.where, at.path,
          absl::StrCat("no scope named \"", scope.parent, "\"", DidYouMean(scope.parent, names)));
    }
  }
  for (const auto& [name, scope] : config_.scopes) {
    // A walk from `name` longer than the number of scopes has gone round a
    // cycle; report it from a scope on the cycle, where it is seen whole.
    std::vector<std::string> walk = {name};
    for (const ScopeLimits* s = &scope; !s->parent.empty() && walk.size() <= names.size();) {
      walk.push_back(s->parent);
      if (s->parent == name) {
        const Written& at = parent_at_.at(name);
        return Error(at.where, at.path,
                     absl::StrCat("cycle of parents: ", absl::StrJoin(walk, " -> ")));
      }
      s = &config_.scopes.at(s->parent);
    }
  }
  return absl::OkStatus();
}

// Bucket keys are stored in segment slots of kMaxBucketNameLength bytes.
absl::Status Parser::CheckKeyLengths() const {
  auto too_long = [](absl::string_view key) { return key.size() > kMaxBucketNameLength; };
  auto error = [&](const SourceLocation& where, absl::string_view path, absl::string_view key) {
    return Error(where, path,
                 absl::StrCat("the name makes bucket key \"", key, "\" ", key.size(),
                              " bytes long; keys are at most ", kMaxBucketNameLength, " bytes"));
  };
  const EffectiveLimits limits(config_);
  for (const OwnerLimits& owner : limits.owners()) {
    std::vector<absl::string_view> keys;
    for (const BucketSpec& spec : owner.buckets) keys.push_back(spec.key);
    for (const BudgetSpec& spec : owner.budgets) keys.push_back(spec.key);
    if (owner.concurrency) keys.push_back(owner.concurrency->key);
    for (absl::string_view key : keys) {
      if (!too_long(key)) continue;
      if (owner.scope != nullptr)
        return error(owner.scope->where, Child("scopes", owner.name), key);
      const std::string path = Child("providers", owner.provider->name);
      if (owner.model_class == nullptr) return error(owner.provider->where, path, key);
      return error(owner.model_class->where, Child(Child(path, "models"), owner.model_class->name),
                   key);
    }
  }
  return absl::OkStatus();
}

}  // namespace internal_limits

absl::StatusOr<LimitsConfig> ParseLimitsConfig(absl::string_view toml, absl::string_view source) {
  return internal_limits::Parser(source).Parse(toml);
}

absl::StatusOr<LimitsConfig> LoadLimitsConfig(const std::string& path) {
  // A limits file is a few kilobytes; the cap keeps a wrong path such as
  // /dev/zero from reading forever.
  constexpr size_t kMaxFileBytes = 16 << 20;
  FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
  }
  std::string text;
  char buffer[8192];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0 && text.size() <= kMaxFileBytes) {
    text.append(buffer, n);
  }
  const int read_errno = std::ferror(file) ? errno : 0;
  std::fclose(file);
  if (read_errno != 0) {
    return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(read_errno)));
  }
  if (text.size() > kMaxFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": larger than ", kMaxFileBytes, " bytes; not a limits file"));
  }
  return ParseLimitsConfig(text, path);
}
}  // namespace sluice
