#include "tools/fake_provider/dialect.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace sluice {
namespace fake_provider_internal {

std::string Dump(const Json& doc) {
  return doc.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string BearerToken(HeaderLookup headers) {
  const std::string authorization = headers("Authorization");
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWith(authorization, kBearer)) return "";
  return authorization.substr(kBearer.size());
}

std::string Reply::header(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return "";
}

}  // namespace fake_provider_internal
}  // namespace sluice
