#include "src/policy/toml_messages.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sluice/limits.h"

namespace sluice {
namespace toml_messages {
namespace {

bool IsBareKeyChar(char c) { return absl::ascii_isalnum(c) || c == '_' || c == '-'; }

}  // namespace

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

namespace {

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

}  // namespace

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

}  // namespace toml_messages
}  // namespace sluice
