// The limits file's parser, shared by the files that read its sections:
// limits.cc (the limits, scopes and prices) and proxy_section.cc ([proxy] and
// a scope's priority). Internal to src/policy.
//
// toml++ is built with exceptions in Debian: only limits.cc calls
// toml::parse, and catches; the tree is read with non-throwing accessors.

#ifndef SLUICE_SRC_POLICY_LIMITS_PARSER_H_
#define SLUICE_SRC_POLICY_LIMITS_PARSER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/bucket_key.h"
#include "sluice/limits.h"
#include "toml++/toml.h"

namespace sluice {
namespace internal_limits {

// toml++ speaks std::string_view, which Debian's Abseil does not alias.
inline std::string Text(const toml::key& key) { return std::string(key.str()); }

inline const toml::node* Get(const toml::table& table, absl::string_view key) {
  return table.get(std::string_view(key.data(), key.size()));
}

// The value of `all` whose name (by `name`) is `text`; nullopt for none.
template <typename Enum, size_t N>
std::optional<Enum> FromName(const Enum (&all)[N], absl::string_view (*name)(Enum),
                             absl::string_view text) {
  for (Enum value : all) {
    if (name(value) == text) return value;
  }
  return std::nullopt;
}

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
  // A duration string ("6s", "50ms"), more than 0 and below `limit` (kBelow)
  // or at most `limit` (kAtMost).
  enum class Bound { kBelow, kAtMost };
  absl::StatusOr<absl::Duration> ReadDuration(const toml::node& node, absl::string_view path,
                                              absl::Duration limit, Bound bound) const;
  // A string that names one of `all` (by `name`).
  template <typename Enum, size_t N>
  absl::StatusOr<Enum> ReadChoice(const toml::node& node, absl::string_view path,
                                  const Enum (&all)[N], absl::string_view (*name)(Enum)) const;
  absl::StatusOr<double> ReadUsd(const toml::node& node, absl::string_view path) const;
  absl::Status CheckName(const toml::key& key, absl::string_view path, BucketKey::Part part) const;

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
  // proxy_section.cc
  absl::Status ParseProxy(const toml::node& node);
  absl::StatusOr<Priority> ReadPriority(const toml::node& node, absl::string_view path) const;
  absl::Status CheckKeyLengths() const;
  // cluster_section.cc
  absl::Status ParseCluster(const toml::node& node);
  absl::Status ParseClusterLimits(const toml::table& keys, ClusterSettings* cluster) const;

  LimitsConfig config_;
  std::map<std::string, Written> parent_at_;  // scope -> where its parent was named
};

template <typename Enum, size_t N>
absl::StatusOr<Enum> Parser::ReadChoice(const toml::node& node, absl::string_view path,
                                        const Enum (&all)[N],
                                        absl::string_view (*name)(Enum)) const {
  absl::StatusOr<std::string> text = ReadString(node, path);
  if (!text.ok()) return text.status();
  if (std::optional<Enum> value = FromName(all, name, *text)) return *value;
  std::string choices;  // "a", "b" or "c"
  for (size_t i = 0; i < N; ++i) {
    absl::StrAppend(&choices, i == 0 ? "" : i + 1 == N ? " or " : ", ", "\"", name(all[i]), "\"");
  }
  return Error(node, path, absl::StrCat("must be ", choices, ", got \"", *text, "\""));
}

}  // namespace internal_limits
}  // namespace sluice

#endif  // SLUICE_SRC_POLICY_LIMITS_PARSER_H_
