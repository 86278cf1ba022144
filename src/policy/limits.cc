// The limits configuration: the TOML file read with toml++, checked so that
// every mistake is reported at its file:line:column, and turned into the
// bucket, budget and concurrency specs the policy opens.
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
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "sluice/rate.h"
#include "sluice/segment.h"
#include "sluice/window_counter.h"
#include "toml++/toml.h"

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

namespace {

// Spec derivation ----------------------------------------------------------------

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

// The (limit, explicit burst) pair that applies to `kind` from `own`, falling
// back to `base` (a class's provider). A burst is taken from `base` only with
// its limit: it was sized for that limit, not for an override.
struct KindLimit {
  uint64_t limit;
  std::optional<uint64_t> burst;
};

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

BucketSpec MakeBucket(const LimitsConfig& config, std::string key, std::string owner,
                      LimitKind kind, uint64_t limit, std::optional<uint64_t> burst) {
  BucketSpec spec;
  spec.key = std::move(key);
  spec.owner = std::move(owner);
  spec.kind = kind;
  spec.limit = limit;
  spec.config = {.rate = RateOf(kind, limit),
                 .capacity = burst ? *burst : DefaultBurst(config, kind, limit)};
  return spec;
}

std::string ProviderKey(absl::string_view provider, absl::string_view model_class,
                        absl::string_view suffix) {
  return absl::StrCat("provider:", provider, ":", model_class, ":", suffix);
}

std::string ScopeKey(absl::string_view scope, absl::string_view suffix) {
  return absl::StrCat("scope:", scope, ":", suffix);
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

// TOML keys and messages --------------------------------------------------------

// toml++ speaks std::string_view, which Debian's Abseil does not alias.
std::string Text(const toml::key& key) { return std::string(key.str()); }

const toml::node* Get(const toml::table& table, absl::string_view key) {
  return table.get(std::string_view(key.data(), key.size()));
}

bool IsBareKeyChar(char c) { return absl::ascii_isalnum(c) || c == '_' || c == '-'; }

// A key as it would be written in TOML: bare when it can be, else quoted.
std::string QuoteKey(absl::string_view key) {
  if (!key.empty() && std::all_of(key.begin(), key.end(), IsBareKeyChar)) return std::string(key);
  std::string quoted = "\"";
  for (char c : key) {
    if (c == '"' || c == '\\') {
      absl::StrAppend(&quoted, "\\", absl::string_view(&c, 1));
    } else if (absl::ascii_iscntrl(c)) {
      absl::StrAppend(&quoted, absl::StrFormat("\\u%04x", static_cast<unsigned char>(c)));
    } else {
      quoted.push_back(c);
    }
  }
  quoted.push_back('"');
  return quoted;
}

// The dotted path of `key` inside the table at `parent` (empty for the root).
std::string Child(absl::string_view parent, absl::string_view key) {
  if (parent.empty()) return QuoteKey(key);
  return absl::StrCat(parent, ".", QuoteKey(key));
}

std::string Element(absl::string_view array, size_t index) {
  return absl::StrCat(array, "[", index, "]");
}

size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The candidate `word` was most likely meant as: within two edits (and not a
// rewrite of a short word), or a kind's short suffix ("rpm") for its key.
std::optional<std::string> Suggest(absl::string_view word,
                                   const std::vector<std::string>& candidates) {
  for (LimitKind kind : kAllLimitKinds) {
    if (word == LimitKindSuffix(kind) &&
        std::find(candidates.begin(), candidates.end(), LimitKindKey(kind)) != candidates.end()) {
      return std::string(LimitKindKey(kind));
    }
  }
  std::optional<std::string> best;
  size_t best_distance = 3;
  for (const std::string& candidate : candidates) {
    const size_t distance = EditDistance(word, candidate);
    if (distance < best_distance && distance * 2 < std::max(word.size(), candidate.size())) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

std::string DidYouMean(absl::string_view word, const std::vector<std::string>& candidates) {
  std::optional<std::string> suggestion = Suggest(word, candidates);
  return suggestion ? absl::StrCat("; did you mean ", *suggestion, "?") : "";
}

absl::string_view TypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

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

bool HasSpaceOrControl(absl::string_view name) {
  return std::any_of(name.begin(), name.end(),
                     [](char c) { return absl::ascii_isspace(c) || absl::ascii_iscntrl(c); });
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

// Parser ---------------------------------------------------------------------------

// A node and its dotted path, for errors raised after the node was read.
struct Written {
  toml::source_region where;
  std::string path;
};

// Where each value of one LimitSet was written.
struct LimitSetSource {
  std::map<LimitKind, Written> limit;
  std::map<LimitKind, Written> burst;
};

// One document's parse. Each method returns the first error found, in the
// tables' key order (toml++ keeps keys sorted).
class Parser {
 public:
  explicit Parser(absl::string_view source) { config_.source = std::string(source); }

  absl::StatusOr<LimitsConfig> Parse(absl::string_view text);

 private:
  SourceLocation Where(const toml::source_region& region) const {
    return {.file = config_.source,
            .line = static_cast<int>(region.begin.line),
            .column = static_cast<int>(region.begin.column)};
  }
  absl::Status Error(const SourceLocation& where, absl::string_view path,
                     absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(where.ToString(), ": ", path, ": ", message));
  }
  absl::Status Error(const toml::source_region& where, absl::string_view path,
                     absl::string_view message) const {
    return Error(Where(where), path, message);
  }
  absl::Status Error(const toml::node& node, absl::string_view path,
                     absl::string_view message) const {
    return Error(node.source(), path, message);
  }

  // Readers of one value: the value, or an error at the node naming `path`.
  absl::Status CheckKeys(const toml::table& table, absl::string_view path,
                         const std::vector<std::string>& known) const;
  absl::StatusOr<const toml::table*> ReadTable(const toml::node& node,
                                               absl::string_view path) const;
  absl::StatusOr<uint64_t> ReadPositiveInteger(const toml::node& node,
                                               absl::string_view path) const;
  absl::StatusOr<double> ReadNumber(const toml::node& node, absl::string_view path) const;
  absl::StatusOr<std::string> ReadString(const toml::node& node, absl::string_view path) const;
  absl::StatusOr<bool> ReadBool(const toml::node& node, absl::string_view path) const;
  absl::StatusOr<absl::Duration> ReadBurstDuration(const toml::node& node, absl::string_view path,
                                                   absl::Duration below) const;
  absl::StatusOr<double> ReadUsd(const toml::node& node, absl::string_view path) const;
  absl::Status CheckName(const toml::key& key, absl::string_view path,
                         absl::string_view what) const;
  absl::Status CheckScopeName(const toml::key& key, absl::string_view path) const;

  absl::Status ParseTop(const toml::table& root);
  absl::Status ParseLimitSet(const toml::table& table, absl::string_view path, LimitSet* set,
                             LimitSetSource* source) const;
  absl::Status CheckLimitSet(const LimitSet& set, const LimitSetSource& source,
                             const LimitSet* base, double headroom) const;
  absl::Status ParseProvider(const toml::key& name, const toml::node& node, absl::string_view path);
  absl::Status ParseModelClass(const toml::key& name, const toml::node& node,
                               absl::string_view path, ProviderLimits* provider,
                               std::map<std::string, std::string>* pattern_owner) const;
  absl::Status ParseScope(const toml::key& name, const toml::node& node, absl::string_view path);
  absl::Status ParsePrice(const toml::key& pattern, const toml::node& node, absl::string_view path);
  absl::Status LinkScopes();
  absl::Status CheckKeyLengths() const;

  LimitsConfig config_;
  std::map<std::string, Written> parent_at_;  // scope -> where its parent was named
};

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

absl::StatusOr<absl::Duration> Parser::ReadBurstDuration(const toml::node& node,
                                                         absl::string_view path,
                                                         absl::Duration below) const {
  absl::StatusOr<std::string> text = ReadString(node, path);
  if (!text.ok()) return text.status();
  absl::Duration duration;
  if (!absl::ParseDuration(*text, &duration)) {
    return Error(node, path, absl::StrCat("\"", *text, "\" is not a duration such as \"6s\""));
  }
  if (duration <= absl::ZeroDuration() || duration >= below) {
    return Error(node, path,
                 absl::StrCat("must be more than 0 and less than ", absl::FormatDuration(below),
                              ", got ", absl::FormatDuration(duration)));
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

// Provider and class names become one ':'-separated part of a bucket key.
absl::Status Parser::CheckName(const toml::key& key, absl::string_view path,
                               absl::string_view what) const {
  const std::string name = Text(key);
  if (name.empty()) return Error(key.source(), path, absl::StrCat(what, " name is empty"));
  if (name.find(':') != std::string::npos || HasSpaceOrControl(name)) {
    return Error(key.source(), path,
                 absl::StrCat(what, " name must not hold ':', spaces or control characters"));
  }
  return absl::OkStatus();
}

// Scope names are ':'-separated paths ("team:marketing:campaign-7"), which
// ResolveScope falls back along: no part may be empty.
absl::Status Parser::CheckScopeName(const toml::key& key, absl::string_view path) const {
  const std::string name = Text(key);
  if (name.empty()) return Error(key.source(), path, "scope name is empty");
  if (HasSpaceOrControl(name)) {
    return Error(key.source(), path, "scope name must not hold spaces or control characters");
  }
  if (absl::StartsWith(name, ":") || absl::EndsWith(name, ":") ||
      name.find("::") != std::string::npos) {
    return Error(key.source(), path, "scope name has an empty ':'-separated part");
  }
  return absl::OkStatus();
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
  if (absl::Status s = CheckKeys(
          root, "", {"headroom", "minute_burst", "day_burst", "providers", "scopes", "prices"});
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
        ReadBurstDuration(*node, "minute_burst", absl::Minutes(1));
    if (!burst.ok()) return burst.status();
    config_.minute_burst = *burst;
  }
  if (const toml::node* node = root.get("day_burst")) {
    absl::StatusOr<absl::Duration> burst = ReadBurstDuration(*node, "day_burst", absl::Hours(24));
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
  if (absl::Status s = CheckName(name, path, "provider"); !s.ok()) return s;
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
  if (absl::Status s = CheckName(name, path, "model class"); !s.ok()) return s;
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
  if (absl::Status s = CheckScopeName(name, path); !s.ok()) return s;
  absl::StatusOr<const toml::table*> table = ReadTable(node, path);
  if (!table.ok()) return table.status();
  if (absl::Status s = CheckKeys(
          **table, path,
          KindKeysAnd({"parent", "burst", "max_concurrency", "usd_per_day", "usd_per_month"}));
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
  for (const auto& [name, provider] : config_.providers) {
    const std::string path = Child("providers", name);
    for (const BucketSpec& spec : ProviderBuckets(config_, provider, nullptr)) {
      if (too_long(spec.key)) return error(provider.where, path, spec.key);
    }
    for (const ModelClass& model_class : provider.models) {
      for (const BucketSpec& spec : ProviderBuckets(config_, provider, &model_class)) {
        if (too_long(spec.key)) {
          return error(model_class.where, Child(Child(path, "models"), model_class.name), spec.key);
        }
      }
    }
  }
  for (const auto& [name, scope] : config_.scopes) {
    std::vector<std::string> keys;
    for (const BucketSpec& spec : ScopeBuckets(config_, scope)) keys.push_back(spec.key);
    for (const BudgetSpec& spec : ScopeBudgets(scope)) keys.push_back(spec.key);
    if (std::optional<ConcurrencySpec> spec = ScopeConcurrency(scope)) keys.push_back(spec->key);
    for (const std::string& key : keys) {
      if (too_long(key)) return error(scope.where, Child("scopes", name), key);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LimitsConfig> ParseLimitsConfig(absl::string_view toml, absl::string_view source) {
  return Parser(source).Parse(toml);
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

std::vector<BucketSpec> ProviderBuckets(const LimitsConfig& config, const ProviderLimits& provider,
                                        const ModelClass* model_class) {
  const LimitSet& own = model_class != nullptr ? model_class->limits : provider.limits;
  const LimitSet* base = model_class != nullptr ? &provider.limits : nullptr;
  const std::string class_name = model_class != nullptr ? model_class->name : "default";
  std::vector<BucketSpec> specs;
  for (LimitKind kind : kAllLimitKinds) {
    const std::optional<KindLimit> merged = Merge(own, base, kind);
    if (!merged) continue;
    specs.push_back(MakeBucket(config,
                               ProviderKey(provider.name, class_name, LimitKindSuffix(kind)),
                               absl::StrCat(provider.name, "/", class_name), kind,
                               ApplyHeadroom(merged->limit, config.headroom), merged->burst));
  }
  return specs;
}

std::vector<BucketSpec> ScopeBuckets(const LimitsConfig& config, const ScopeLimits& scope) {
  std::vector<BucketSpec> specs;
  for (LimitKind kind : kAllLimitKinds) {
    const std::optional<KindLimit> own = Merge(scope.limits, nullptr, kind);
    if (!own) continue;
    specs.push_back(MakeBucket(config, ScopeKey(scope.name, LimitKindSuffix(kind)), scope.name,
                               kind, own->limit, own->burst));
  }
  return specs;
}

std::vector<BudgetSpec> ScopeBudgets(const ScopeLimits& scope) {
  std::vector<BudgetSpec> specs;
  auto add = [&](const std::optional<double>& usd, BudgetPeriod period, absl::string_view suffix) {
    if (!usd) return;
    specs.push_back(
        {.key = ScopeKey(scope.name, suffix),
         .scope = scope.name,
         .period = period,
         .limit_micro_usd = static_cast<uint64_t>(std::max(0LL, std::llround(*usd * 1e6)))});
  };
  add(scope.usd_per_day, BudgetPeriod::kDay, "usd_day");
  add(scope.usd_per_month, BudgetPeriod::kMonth, "usd_month");
  return specs;
}

std::optional<ConcurrencySpec> ScopeConcurrency(const ScopeLimits& scope) {
  if (!scope.max_concurrency) return std::nullopt;
  return ConcurrencySpec{.key = ScopeKey(scope.name, "concurrency"),
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
  auto scale_set = [scale](LimitSet& set) {
    for (auto& [kind, per_period] : set.per_period) {
      const double scaled = std::round(static_cast<double>(per_period) * scale);
      per_period = scaled >= 1.8e19 ? std::numeric_limits<uint64_t>::max()
                                    : std::max<uint64_t>(1, static_cast<uint64_t>(scaled));
    }
  };
  for (auto& [name, provider] : config.providers) {
    scale_set(provider.limits);
    for (ModelClass& model_class : provider.models) scale_set(model_class.limits);
  }
  for (auto& [name, scope] : config.scopes) scale_set(scope.limits);
  config.minute_burst /= scale;
  config.day_burst /= scale;
  return config;
}

}  // namespace sluice
