// Redis URLs (sluice/redis_url.h), parsed with libcurl's URL API: curl splits
// the URL into its parts (and refuses what is not a URL); this file only
// checks each part against what a Redis endpoint may be.

#include "sluice/redis_url.h"

#include <curl/curl.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/algorithm/container.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace sluice {
namespace {

constexpr absl::string_view kForm = "write redis://HOST[:PORT][/DB]";

struct CurlUrlCleanup {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
using CurlUrl = std::unique_ptr<CURLU, CurlUrlCleanup>;

// One part of `url` as written (not decoded); nullopt when it has none.
std::optional<std::string> Part(CURLU* url, CURLUPart part) {
  char* value = nullptr;
  if (curl_url_get(url, part, &value, 0) != CURLUE_OK) return std::nullopt;
  std::string text(value);
  curl_free(value);
  return text;
}

// How an error names a URL known to hold no credentials.
std::string Quoted(absl::string_view url) {
  return absl::StrCat("redis URL \"", absl::CHexEscape(url), "\"");
}

// How an error names a URL that did not parse: a password cannot be told
// apart from the rest, so a URL with an '@' is not repeated at all.
std::string Unparsed(absl::string_view url) {
  if (url.size() > kMaxRedisUrlLength || absl::StrContains(url, '@')) {
    return "the redis URL (not repeated: it may hold a password)";
  }
  return Quoted(url);
}

absl::Status Invalid(absl::string_view name, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": ", what));
}

// The database a URL's path selects: "" and "/" select 0, "/N" selects N.
std::optional<uint32_t> DbOf(absl::string_view path) {
  if (path.empty() || path == "/") return 0;
  if (!absl::ConsumePrefix(&path, "/") || path.empty() || path.size() > 10 ||
      !absl::c_all_of(path, absl::ascii_isdigit)) {
    return std::nullopt;
  }
  uint32_t db = 0;
  if (!absl::SimpleAtoi(path, &db) || db > kMaxRedisDb) return std::nullopt;
  return db;
}

// Checks each part of `url` (parsed from `text`, credentials refused).
absl::StatusOr<RedisEndpoint> EndpointOf(CURLU* url, absl::string_view text) {
  const std::string name = Quoted(text);
  const std::string scheme = Part(url, CURLUPART_SCHEME).value_or("");
  if (scheme == "rediss") {
    return Invalid(name, "TLS (rediss://) is not supported: sluice's hiredis has no TLS");
  }
  if (scheme != "redis") {
    return Invalid(name, absl::StrCat("the scheme must be redis, not ", scheme, "; ", kForm));
  }
  // curl also reads "redis:host" and "redis:///0" (whose host is then "0").
  if (!absl::StartsWithIgnoreCase(text, "redis://") ||
      absl::StartsWithIgnoreCase(text, "redis:///")) {
    return Invalid(name, absl::StrCat("the host must follow redis:// directly; ", kForm));
  }
  const std::string host = Part(url, CURLUPART_HOST).value_or("");
  if (host.empty()) return Invalid(name, absl::StrCat("has no host; ", kForm));
  if (Part(url, CURLUPART_ZONEID)) {
    return Invalid(name, "an IPv6 zone id (%25...) is not supported");
  }
  RedisEndpoint endpoint;
  absl::string_view bare = host;  // curl keeps an IPv6 address's brackets
  if (absl::ConsumePrefix(&bare, "[") && absl::ConsumeSuffix(&bare, "]")) {
    endpoint.host = std::string(bare);
  } else if (absl::c_all_of(host, [](char c) {
               return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_';
             })) {
    endpoint.host = host;
  } else {
    // curl has decoded %-escapes: the host would not format back as written.
    return Invalid(name, absl::StrCat("a host name may hold letters, digits, '-', '.' and '_' "
                                      "only (no %-escapes); ",
                                      kForm));
  }
  if (std::optional<std::string> port = Part(url, CURLUPART_PORT)) {
    uint32_t number = 0;
    if (!absl::SimpleAtoi(*port, &number) || number < 1 || number > 65535) {
      return Invalid(name, absl::StrCat("the port must be 1 to 65535, got ", *port));
    }
    endpoint.port = static_cast<uint16_t>(number);
  }
  if (Part(url, CURLUPART_QUERY)) return Invalid(name, "a query (?...) is not supported");
  if (Part(url, CURLUPART_FRAGMENT)) return Invalid(name, "a fragment (#...) is not supported");
  const std::string path = Part(url, CURLUPART_PATH).value_or("");
  std::optional<uint32_t> db = DbOf(path);
  if (!db) {
    return Invalid(name, absl::StrCat("the path must be empty or /DB, a database number 0 to ",
                                      kMaxRedisDb, ", not \"", absl::CHexEscape(path), "\""));
  }
  endpoint.db = *db;
  return endpoint;
}

}  // namespace

std::string RedisEndpoint::ToString() const {
  const bool ipv6 = absl::StrContains(host, ':');
  return absl::StrCat("redis://", ipv6 ? "[" : "", host, ipv6 ? "]" : "", ":", port, "/", db);
}

absl::StatusOr<RedisEndpoint> ParseRedisUrl(absl::string_view url) {
  if (url.empty()) return absl::InvalidArgumentError(absl::StrCat("redis URL is empty; ", kForm));
  if (url.size() > kMaxRedisUrlLength) {
    return Invalid(Unparsed(url), absl::StrCat("is longer than ", kMaxRedisUrlLength, " bytes"));
  }
  // curl reads a C string: a NUL would cut the URL short.
  if (absl::StrContains(url, '\0')) return Invalid(Unparsed(url), "holds a NUL byte");
  CurlUrl handle(curl_url());
  if (handle == nullptr) return absl::ResourceExhaustedError("out of memory for a redis URL");
  const std::string text(url);
  if (CURLUcode rc =
          curl_url_set(handle.get(), CURLUPART_URL, text.c_str(), CURLU_NON_SUPPORT_SCHEME);
      rc != CURLUE_OK) {
    return Invalid(Unparsed(url),
                   absl::StrCat("is not a URL (", curl_url_strerror(rc), "); ", kForm));
  }
  bool credentials = false;
  for (CURLUPart part : {CURLUPART_USER, CURLUPART_PASSWORD, CURLUPART_OPTIONS}) {
    credentials |= Part(handle.get(), part).has_value();
    curl_url_set(handle.get(), part, nullptr, 0);  // what the error repeats is the rest
  }
  if (credentials) {
    return Invalid(
        Quoted(Part(handle.get(), CURLUPART_URL).value_or("")),
        "holds a user or a password, which never belong in the URL (it is written in files and "
        "logs); set password_env to the name of an environment variable holding the password");
  }
  return EndpointOf(handle.get(), url);
}

}  // namespace sluice
