// The parts of the limits file that only the proxy reads: the [proxy] table
// and a scope's priority. Parsed with the rest of the file, so that `sluice
// config check` reports their mistakes at file:line:column too.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "sluice/bucket_key.h"
#include "sluice/limits.h"
#include "src/policy/limits_parser.h"
#include "src/policy/toml_messages.h"
#include "toml++/toml.h"

namespace sluice {

absl::string_view PriorityName(Priority priority) {
  switch (priority) {
    case Priority::kHigh:
      return "high";
    case Priority::kNormal:
      return "normal";
    case Priority::kLow:
      return "low";
  }
  return "normal";
}

namespace {
constexpr Priority kAllPriorities[] = {Priority::kHigh, Priority::kNormal, Priority::kLow};
}  // namespace

std::optional<Priority> ParsePriority(absl::string_view name) {
  return internal_limits::FromName(kAllPriorities, PriorityName, name);
}

namespace internal_limits {
namespace {

using toml_messages::Child;

bool IsSha256Hex(absl::string_view text) {
  if (text.size() != 64) return false;
  for (char c : text) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<Priority> Parser::ReadPriority(const toml::node& node,
                                              absl::string_view path) const {
  return ReadChoice(node, path, kAllPriorities, PriorityName);
}

absl::Status Parser::ParseProxy(const toml::node& node) {
  absl::StatusOr<const toml::table*> table = ReadTable(node, "proxy");
  if (!table.ok()) return table.status();
  if (absl::Status s = CheckKeys(**table, "proxy",
                                 {"keys", "count_tokens_requests_per_minute", "retry_upstream"});
      !s.ok()) {
    return s;
  }
  ProxySettings& proxy = config_.proxy;
  if (const toml::node* rpm = (*table)->get("count_tokens_requests_per_minute")) {
    absl::StatusOr<uint64_t> value =
        ReadPositiveInteger(*rpm, "proxy.count_tokens_requests_per_minute");
    if (!value.ok()) return value.status();
    proxy.count_tokens_requests_per_minute = *value;
  }
  if (const toml::node* retry = (*table)->get("retry_upstream")) {
    absl::StatusOr<bool> value = ReadBool(*retry, "proxy.retry_upstream");
    if (!value.ok()) return value.status();
    proxy.retry_upstream = *value;
  }
  const toml::node* keys_node = (*table)->get("keys");
  if (keys_node == nullptr) return absl::OkStatus();
  absl::StatusOr<const toml::table*> keys = ReadTable(*keys_node, "proxy.keys");
  if (!keys.ok()) return keys.status();
  for (auto&& [name, value] : **keys) {
    const std::string path = Child("proxy.keys", Text(name));
    if (!IsSha256Hex(Text(name))) {
      // The name may be a key written in clear: it is not repeated.
      return Error(name.source(), "proxy.keys",
                   "a name is not the lowercase hex SHA-256 of an API key (64 digits 0-9a-f); "
                   "write `printf %s \"$KEY\" | sha256sum`, never the key itself");
    }
    absl::StatusOr<std::string> scope = ReadString(value, path);
    if (!scope.ok()) return scope.status();
    if (absl::Status s = BucketKey::ValidateName(BucketKey::Part::kScope, *scope); !s.ok()) {
      return Error(value, path, s.message());
    }
    proxy.key_scopes[Text(name)] = *std::move(scope);
  }
  return absl::OkStatus();
}

}  // namespace internal_limits
}  // namespace sluice
