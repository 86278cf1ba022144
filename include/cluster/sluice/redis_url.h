// File: redis_url.h
// -----------------------------------------------------------------------------
// Where a fleet's Redis is: a `redis://HOST[:PORT][/DB]` URL, parsed (with
// libcurl's URL API) into the endpoint hiredis connects to.
//
// Only a single Redis over plain TCP is supported: the hiredis sluice is built
// against has neither TLS nor Redis Cluster support, so `rediss://` and
// `unix://` URLs are refused. A password never belongs in the URL, which ends
// up in files, logs and process listings: a URL with a user or a password is
// refused (without repeating it), and the limits file's [cluster] table names
// an environment variable that holds the password instead (password_env,
// cluster_settings.h).
//
// Example:
//   absl::StatusOr<RedisEndpoint> redis = ParseRedisUrl("redis://10.0.0.7:6380/2");
//   // redis->host == "10.0.0.7", redis->port == 6380, redis->db == 2
//   // redis->ToString() == "redis://10.0.0.7:6380/2"
//
// Thread safety: RedisEndpoint is a plain value; ParseRedisUrl is safe to
// call from any thread.

#ifndef SLUICE_REDIS_URL_H_
#define SLUICE_REDIS_URL_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice {

// Redis's own default port.
inline constexpr uint16_t kDefaultRedisPort = 6379;
// The highest database index a URL may select. A server has `databases` of
// them (16 by default, 0..15; at most INT_MAX), and Redis Cluster has only
// database 0: an index the server lacks is refused when it is selected.
inline constexpr uint32_t kMaxRedisDb = 2'147'483'646;
// Longer URLs are refused (and not repeated in the error).
inline constexpr size_t kMaxRedisUrlLength = 1024;

struct RedisEndpoint {
  // A host name or an IP address as hiredis connects to it: an IPv6 address
  // without its URL brackets ("::1").
  std::string host;
  uint16_t port = kDefaultRedisPort;
  uint32_t db = 0;  // the database SELECTed after connecting

  // "redis://host:port/db", with every part written out (IPv6 in brackets);
  // ParseRedisUrl gives back the same endpoint.
  std::string ToString() const;

  friend bool operator==(const RedisEndpoint&, const RedisEndpoint&) = default;
};

// ParseRedisUrl()
//
// Parses `redis://HOST[:PORT][/DB]`: HOST a name (letters, digits, '-', '.'
// and '_', after %-escapes are decoded), an IPv4 address or an IPv6
// address in brackets; PORT 1..65535 (default 6379); DB 0..kMaxRedisDb
// (default 0; "/" alone is 0). The scheme is case-insensitive.
//
// InvalidArgument, naming the URL and what is wrong, for: an empty or
// malformed URL, a URL longer than kMaxRedisUrlLength, a scheme other than
// redis (rediss, TLS, is not supported), a missing host, a host name with
// other characters, an IPv6 zone id, a port out of range, a path that is not
// one database number, a query or a fragment, and a user or a password in the URL (the error says
// to name an environment variable with password_env instead). An error never repeats a password:
// the URL it names has its credentials removed, and a URL that holds an '@' but does not parse is
// not repeated at all.
absl::StatusOr<RedisEndpoint> ParseRedisUrl(absl::string_view url);

}  // namespace sluice

#endif  // SLUICE_REDIS_URL_H_
