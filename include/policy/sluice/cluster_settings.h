// File: cluster_settings.h
// -----------------------------------------------------------------------------
// The limits file's [cluster] table: how the hosts of a fleet hold the file's
// limits together, on one Redis. Without the table a host is on its own: its
// limits hold across the processes of this host (which share a segment), and
// nothing speaks to Redis. With it, every host that reads the same file
// shares every bucket, budget and concurrency cap the file sets.
//
// Example:
//   [cluster]
//   redis = "redis://10.0.0.7:6379/0"        # required: the fleet's Redis
//   password_env = "SLUICE_REDIS_PASSWORD"   # the variable holding its password
//   key_prefix = "sluice:"                   # every Redis key starts with it
//   mode = "lease"                           # or "exact"
//   on_redis_down = "local_share"            # or "fail_closed", "fail_open"
//   timeout = "50ms"                         # the longest a decision waits on Redis
//   expected_hosts = 1                       # see on_redis_down
//   concurrency_lease_ttl = "10s"            # concurrency leases' time to live
// Every key but redis is optional; the values above (but password_env, which
// is unset by default) are the defaults.
//
// redis: a redis://HOST[:PORT][/DB] URL (redis_url.h). A single Redis (with
//   replicas if you run them) over plain TCP: no TLS, no Redis Cluster. The
//   URL never holds a password: a file is read by many and often committed.
// password_env: the NAME of an environment variable that holds the password
//   (AUTH); ClusterPassword() reads it. The password is never in the file,
//   in these settings, in an error or in any output.
// key_prefix: 1 to 32 characters of [A-Za-z0-9:_.-]. A route's keys follow it
//   in a Redis Cluster hash tag ({...}), so it holds no braces.
// mode: "lease" (the default): a host leases permits from the fleet's bucket
//   in Redis into a pool of its own and admits from the pool locally, in
//   nanoseconds, one round trip per lease rather than per decision. A lease
//   is a real debit of the fleet's bucket, so the fleet never admits more
//   than the limit; what it risks is permits leased but left unused (at most
//   about one lease per host) when demand moves to another host.
//   "exact": every decision is one round trip to Redis, a script running the
//   same integer bucket arithmetic on Redis's one clock, all of a request's
//   buckets at once: no permit is ever stranded, and every decision waits on
//   the network (at most `timeout`). Budgets and concurrency caps are held
//   as in lease mode.
// on_redis_down: what a host does while Redis cannot be reached (or does not
//   answer within `timeout`):
//   "local_share" (the default): go on with its last known share of each
//   limit (the limit divided by the hosts seen alive in the last minute) plus
//   what its pool still holds (lease mode; in exact mode a bucket of that
//   share, starting full); a host that never reached Redis assumes
//   `expected_hosts` hosts. The fleet then admits at most the limit plus one
//   pool (or share) per host, as long as no new host joins during the
//   outage; what was admitted is debited from the fleet's buckets when
//   Redis answers again.
//   "fail_closed": admit nothing that would need Redis: no limit is ever
//   exceeded, and calls stop until Redis is back (exact mode: every
//   reservation fails with Unavailable naming the Redis).
//   "fail_open": admit without the fleet's limits until Redis is back: calls
//   go on, and only the provider's own limits hold.
//   USD budgets are one counter in Redis for the fleet, on Redis's clock
//   (every host in the same UTC day or month). While Redis is away a host
//   spends, by the same setting, its share of what the budget had left when
//   it last answered (divided as above), nothing, or without limit; whatever
//   each process spent reaches the fleet's counter once Redis answers again.
// timeout: a duration ("50ms", "1s"), more than 0 and at most 10s.
// expected_hosts: 1 to 100000.
// concurrency_lease_ttl: how long a concurrency lease (one call in flight) held in Redis
//   lives unless its holder refreshes it (every third of it), so that a dead
//   host's calls stop counting within it; more than 0 and at most 1h. Every
//   host sees one cap of max_concurrency; while Redis is down, a host goes
//   by on_redis_down: its share of the cap ("local_share"), no new call
//   ("fail_closed"), or no cap ("fail_open").
//
// Thread safety: ClusterSettings is a plain value and the functions here are
// pure, except ClusterPassword, which reads the environment (getenv) and must
// not race with setenv.

#ifndef SLUICE_CLUSTER_SETTINGS_H_
#define SLUICE_CLUSTER_SETTINGS_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/fleet_store.h"
#include "sluice/redis_url.h"

namespace sluice {

// How the hosts share a bucket (see mode above): the fleet store's own
// (sluice/fleet_store.h), under the file's name.
using ClusterMode = FleetMode;
inline constexpr ClusterMode kAllClusterModes[] = {ClusterMode::kLease, ClusterMode::kExact};

// What a host does while Redis is down (see on_redis_down above): the
// fleet store's own (sluice/fleet_store.h), under the file's name.
using RedisDownPolicy = RedisDown;
inline constexpr RedisDownPolicy kAllRedisDownPolicies[] = {
    RedisDownPolicy::kLocalShare, RedisDownPolicy::kFailClosed, RedisDownPolicy::kFailOpen};

// The words of the file: "lease", "exact"; "local_share", "fail_closed",
// "fail_open". And back (nullopt for any other word).
absl::string_view ClusterModeName(ClusterMode mode);
std::optional<ClusterMode> ParseClusterMode(absl::string_view name);
absl::string_view RedisDownPolicyName(RedisDownPolicy policy);
std::optional<RedisDownPolicy> ParseRedisDownPolicy(absl::string_view name);

inline constexpr absl::string_view kDefaultKeyPrefix = "sluice:";
inline constexpr size_t kMaxKeyPrefixLength = 32;
inline constexpr absl::Duration kDefaultRedisTimeout = absl::Milliseconds(50);
inline constexpr absl::Duration kMaxRedisTimeout = absl::Seconds(10);
inline constexpr uint32_t kMaxExpectedHosts = 100'000;
inline constexpr absl::Duration kDefaultConcurrencyLeaseTtl = absl::Seconds(10);
inline constexpr absl::Duration kMaxConcurrencyLeaseTtl = absl::Hours(1);

struct ClusterSettings {
  std::string redis_url;  // as written in the file (it never holds credentials)
  RedisEndpoint redis;    // parsed from redis_url
  std::string key_prefix = std::string(kDefaultKeyPrefix);
  ClusterMode mode = ClusterMode::kLease;
  RedisDownPolicy on_redis_down = RedisDownPolicy::kLocalShare;
  // The name of the environment variable holding Redis's password; empty
  // when Redis asks for none.
  std::string password_env;
  absl::Duration timeout = kDefaultRedisTimeout;  // longest wait on Redis per decision
  uint32_t expected_hosts = 1;                    // hosts assumed by a host that never saw Redis
  absl::Duration concurrency_lease_ttl =
      kDefaultConcurrencyLeaseTtl;  // of concurrency leases held in Redis
};

// ClusterPassword()
//
// The password to send Redis (AUTH): the value of the environment variable
// `settings.password_env`, or "" when it names none. FailedPrecondition
// naming the variable (never a value) when it is unset or empty.
absl::StatusOr<std::string> ClusterPassword(const ClusterSettings& settings);

// FleetOptionsFor()
//
// The fleet store's options (sluice/fleet_store.h) for a [cluster] table:
// its Redis, password (ClusterPassword's errors), timeout, key prefix,
// mode, on_redis_down and expected hosts.
absl::StatusOr<FleetOptions> FleetOptionsFor(const ClusterSettings& settings);

}  // namespace sluice

#endif  // SLUICE_CLUSTER_SETTINGS_H_
