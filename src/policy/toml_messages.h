// How the limits parser writes a TOML key path and a typo's suggestion in
// its error messages: scopes."team:a".requests_per_minute, "did you mean
// requests_per_minute?". Internal to src/policy.
#ifndef SLUICE_SRC_POLICY_TOML_MESSAGES_H_
#define SLUICE_SRC_POLICY_TOML_MESSAGES_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "toml++/toml.h"

namespace sluice {
namespace toml_messages {

// `key` as a dotted TOML path writes it: bare when it can be, quoted otherwise.
std::string QuoteKey(absl::string_view key);
// `parent`.`key` ("" parent: the key alone).
std::string Child(absl::string_view parent, absl::string_view key);
// `array`[index].
std::string Element(absl::string_view array, size_t index);
// "; did you mean X?" for the candidate `word` most likely meant (within two
// edits, or a kind's short suffix for its key), or "".
std::string DidYouMean(absl::string_view word, const std::vector<std::string>& candidates);
// The TOML type of `node`, in words ("an integer", "a table", ...).
absl::string_view TypeName(const toml::node& node);

}  // namespace toml_messages
}  // namespace sluice

#endif  // SLUICE_SRC_POLICY_TOML_MESSAGES_H_
