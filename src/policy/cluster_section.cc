// The limits file's [cluster] table (sluice/cluster_settings.h): its words,
// its parse (with the rest of the file, so that `sluice config check` reports
// its mistakes at file:line:column too), and the password it names.

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include "absl/algorithm/container.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/cluster_settings.h"
#include "sluice/limits.h"
#include "sluice/redis_url.h"
#include "src/policy/limits_parser.h"
#include "toml++/toml.h"

namespace sluice {

absl::string_view ClusterModeName(ClusterMode mode) {
  switch (mode) {
    case ClusterMode::kLease:
      return "lease";
    case ClusterMode::kExact:
      return "exact";
  }
  return "lease";
}

std::optional<ClusterMode> ParseClusterMode(absl::string_view name) {
  return internal_limits::FromName(kAllClusterModes, ClusterModeName, name);
}

absl::string_view RedisDownPolicyName(RedisDownPolicy policy) {
  switch (policy) {
    case RedisDownPolicy::kLocalShare:
      return "local_share";
    case RedisDownPolicy::kFailClosed:
      return "fail_closed";
    case RedisDownPolicy::kFailOpen:
      return "fail_open";
  }
  return "local_share";
}

std::optional<RedisDownPolicy> ParseRedisDownPolicy(absl::string_view name) {
  return internal_limits::FromName(kAllRedisDownPolicies, RedisDownPolicyName, name);
}

absl::StatusOr<std::string> ClusterPassword(const ClusterSettings& settings) {
  if (settings.password_env.empty()) return std::string();
  const char* value = std::getenv(settings.password_env.c_str());
  if (value == nullptr || *value == '\0') {
    return absl::FailedPreconditionError(
        absl::StrCat("the environment variable ", settings.password_env,
                     " (the [cluster] table's password_env, which holds the Redis password) is ",
                     value == nullptr ? "not set" : "empty"));
  }
  return std::string(value);
}

absl::StatusOr<FleetOptions> FleetOptionsFor(const ClusterSettings& settings) {
  absl::StatusOr<std::string> password = ClusterPassword(settings);
  if (!password.ok()) return password.status();
  FleetOptions options;
  options.redis = {.host = settings.redis.host,
                   .port = settings.redis.port,
                   .db = settings.redis.db,
                   .password = *std::move(password),
                   .timeout = settings.timeout,
                   .key_prefix = settings.key_prefix};
  options.mode = settings.mode;
  options.on_redis_down = settings.on_redis_down;
  options.expected_hosts = settings.expected_hosts;
  options.concurrency_lease_ttl = settings.concurrency_lease_ttl;
  return options;
}

namespace internal_limits {
namespace {

bool IsKeyPrefix(absl::string_view prefix) {
  return !prefix.empty() && prefix.size() <= kMaxKeyPrefixLength &&
         absl::c_all_of(prefix, [](char c) {
           return absl::ascii_isalnum(c) || c == ':' || c == '_' || c == '.' || c == '-';
         });
}

bool IsEnvironmentName(absl::string_view name) {
  return !name.empty() && !absl::ascii_isdigit(name[0]) &&
         absl::c_all_of(name, [](char c) { return absl::ascii_isalnum(c) || c == '_'; });
}

}  // namespace

absl::Status Parser::ParseCluster(const toml::node& node) {
  absl::StatusOr<const toml::table*> table = ReadTable(node, "cluster");
  if (!table.ok()) return table.status();
  if (absl::Status s = CheckKeys(**table, "cluster",
                                 {"redis", "key_prefix", "mode", "on_redis_down", "password_env",
                                  "timeout", "expected_hosts", "concurrency_lease_ttl"});
      !s.ok()) {
    return s;
  }
  const toml::table& keys = **table;
  ClusterSettings cluster;
  const toml::node* redis = keys.get("redis");
  if (redis == nullptr) {
    return Error(node, "cluster",
                 "missing key redis (the fleet's Redis, e.g. \"redis://127.0.0.1:6379/0\")");
  }
  absl::StatusOr<std::string> url = ReadString(*redis, "cluster.redis");
  if (!url.ok()) return url.status();
  absl::StatusOr<RedisEndpoint> endpoint = ParseRedisUrl(*url);
  if (!endpoint.ok()) return Error(*redis, "cluster.redis", endpoint.status().message());
  cluster.redis_url = *std::move(url);
  cluster.redis = *std::move(endpoint);

  if (const toml::node* prefix = keys.get("key_prefix")) {
    absl::StatusOr<std::string> text = ReadString(*prefix, "cluster.key_prefix");
    if (!text.ok()) return text.status();
    if (!IsKeyPrefix(*text)) {
      return Error(*prefix, "cluster.key_prefix",
                   absl::StrCat("must be 1 to ", kMaxKeyPrefixLength,
                                " of A-Z a-z 0-9 : _ . - (no braces: a hash tag follows it), "
                                "got \"",
                                absl::CHexEscape(*text), "\""));
    }
    cluster.key_prefix = *std::move(text);
  }
  if (const toml::node* mode = keys.get("mode")) {
    absl::StatusOr<ClusterMode> value =
        ReadChoice(*mode, "cluster.mode", kAllClusterModes, ClusterModeName);
    if (!value.ok()) return value.status();
    cluster.mode = *value;
  }
  if (const toml::node* down = keys.get("on_redis_down")) {
    absl::StatusOr<RedisDownPolicy> value =
        ReadChoice(*down, "cluster.on_redis_down", kAllRedisDownPolicies, RedisDownPolicyName);
    if (!value.ok()) return value.status();
    cluster.on_redis_down = *value;
  }
  if (const toml::node* env = keys.get("password_env")) {
    absl::StatusOr<std::string> name = ReadString(*env, "cluster.password_env");
    if (!name.ok()) return name.status();
    if (!IsEnvironmentName(*name)) {
      return Error(*env, "cluster.password_env",
                   absl::StrCat("must name an environment variable ([A-Za-z_][A-Za-z0-9_]*), "
                                "not hold the password; got a string of ",
                                name->size(), " characters that is not a name"));
    }
    cluster.password_env = *std::move(name);
  }
  if (absl::Status s = ParseClusterLimits(keys, &cluster); !s.ok()) return s;
  config_.cluster = std::move(cluster);
  return absl::OkStatus();
}

// The table's numbers: timeout, expected_hosts, concurrency_lease_ttl.
absl::Status Parser::ParseClusterLimits(const toml::table& keys, ClusterSettings* cluster) const {
  if (const toml::node* timeout = keys.get("timeout")) {
    absl::StatusOr<absl::Duration> value =
        ReadDuration(*timeout, "cluster.timeout", kMaxRedisTimeout, Bound::kAtMost);
    if (!value.ok()) return value.status();
    cluster->timeout = *value;
  }
  if (const toml::node* hosts = keys.get("expected_hosts")) {
    absl::StatusOr<uint64_t> value = ReadPositiveInteger(*hosts, "cluster.expected_hosts");
    if (!value.ok()) return value.status();
    if (*value > kMaxExpectedHosts) {
      return Error(*hosts, "cluster.expected_hosts",
                   absl::StrCat("must be 1 to ", kMaxExpectedHosts, ", got ", *value));
    }
    cluster->expected_hosts = static_cast<uint32_t>(*value);
  }
  if (const toml::node* ttl = keys.get("concurrency_lease_ttl")) {
    absl::StatusOr<absl::Duration> value = ReadDuration(*ttl, "cluster.concurrency_lease_ttl",
                                                        kMaxConcurrencyLeaseTtl, Bound::kAtMost);
    if (!value.ok()) return value.status();
    cluster->concurrency_lease_ttl = *value;
  }
  return absl::OkStatus();
}

}  // namespace internal_limits
}  // namespace sluice
