// File: cluster_stats.h
// -----------------------------------------------------------------------------
// The fleet as the stats show it: when the limits file has a [cluster] table
// (cluster_settings.h), `sluice stats` adds what the fleet's Redis holds to a
// snapshot (stats.h): the hosts seen alive in the last minute and how long
// ago each leased, and for every bucket the fleet's level in Redis, what
// every host's pool holds of it (host leases out, lease mode) and this
// host's pool in the segment; with a config, what the fleet spent of each
// budget in its window by Redis's clock, and the calls in flight under each
// concurrency cap.
//
// Reading changes nothing in Redis: no host is marked alive and no permit is
// taken (RedisBuckets::Hosts, Available, Pools and ReadBudgetsAndCaps only
// read).
//
// Thread safety: AddClusterStats may be called from any thread; it connects
// to Redis afresh and reads the environment (ClusterPassword's getenv).

#ifndef SLUICE_CLUSTER_STATS_H_
#define SLUICE_CLUSTER_STATS_H_

#include "sluice/cluster_settings.h"
#include "sluice/limits.h"
#include "sluice/stats.h"

namespace sluice {

// AddClusterStats()
//
// Sets `snapshot->cluster` from the fleet's Redis that `settings` names.
// The buckets are, with `config`, every bucket it makes (EffectiveLimits),
// and without one every bucket in the segment; each one's pool is the
// snapshot's bucket under the same key (lease mode only).
//
// Never fails: when Redis cannot be read (unreachable, or slower than
// `settings.timeout` per command, connecting included; or the password's
// environment variable is unset), `cluster->error` says why (naming
// host:port, never a password) and the hosts and global levels are left
// empty, while the pools are still shown.
void AddClusterStats(const ClusterSettings& settings, const LimitsConfig* config,
                     StatsSnapshot* snapshot);

}  // namespace sluice

#endif  // SLUICE_CLUSTER_STATS_H_
