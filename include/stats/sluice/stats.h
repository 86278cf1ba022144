// File: stats.h
// -----------------------------------------------------------------------------
// What a segment holds now, as an operator sees it: every bucket, budget,
// concurrency cap and attached process, grouped by the scope or provider
// model class each belongs to. `sluice stats`, `top` and `metrics` show it;
// an embedder can take the same snapshot (and its JSON and Prometheus forms,
// stats_exposition.h) without the CLI.
//
// The stats are a layer of their own, above the policy: a snapshot joins
// what the store reports (Segment::Inspect) with the limits model
// (EffectiveLimits, BucketKey), which the store must not know. Nothing here
// writes to the segment or joins it as a process.
//
// Without a limits configuration, the groups come from the bucket keys the
// policy writes (BucketKey::Parse: "scope:team:marketing:rpm" -> scope
// team:marketing, "provider:anthropic:default:tpm" -> provider
// anthropic/default); any other key "a:b:c" goes to group "a:b", kind "c". With
// one, each bucket also shows its configured limit, each budget its limit,
// each scope its parent and its path to the root, and what the configuration
// names but no process has opened yet is listed too (as not in the segment).
//
// With a [cluster] table, AddClusterStats (cluster_stats.h) adds the fleet
// the host shares its limits with: its hosts and each bucket's level in
// Redis.
//
// Budget windows are the policy's (BudgetWindowId): the UTC day and the UTC
// month. A counter still in an older window has spent nothing in the current
// one.
//
// Thread safety: snapshots are plain values; the functions are pure, apart
// from TakeStatsSnapshot, which reads a segment under its lock.

#ifndef SLUICE_STATS_H_
#define SLUICE_STATS_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/limits.h"
#include "sluice/rate.h"
#include "sluice/segment.h"
#include "sluice/segment_info.h"
#include "sluice/token_bucket.h"

namespace sluice {

// StatsSnapshot
//
// Everything the stats views show, taken at one moment.
struct StatsSnapshot {
  struct Bucket {
    std::string key;
    std::string kind;         // "rpm", "itpm", "otpm", "tpm", "tpd", or the key's last part
    bool in_segment = false;  // false: configured, but no process has opened it yet
    // The configured limit per `limit_period`, after headroom (with a config).
    std::optional<uint64_t> limit;
    absl::string_view limit_period;  // "minute" or "day"
    // The bucket as it runs (a rate learned from a provider may be lower than
    // the configured limit). Meaningful only when in_segment.
    Rate rate = Rate::PerSecond(1);
    uint64_t capacity = 0;  // permits (the burst)
    int64_t available = 0;  // permits
    double percent_available = 0;
    Pressure pressure = Pressure::kLow;
    uint64_t bottlenecks = 0;  // times it refused a request or set its wait

    // The rate as permits per second (0 for an empty period).
    double RatePerSecond() const;
  };
  struct Budget {
    std::string key;
    BudgetPeriod period = BudgetPeriod::kDay;
    bool in_segment = false;
    std::string window;  // the current window: "2025-01-15" (day) or "2025-01" (month), UTC
    uint64_t spent_micro_usd = 0;             // in the current window
    std::optional<uint64_t> limit_micro_usd;  // with a config
    uint64_t bottlenecks = 0;

    // Spent over the limit, in percent; nullopt without a limit.
    std::optional<double> PercentSpent() const;
  };
  struct Concurrency {
    std::string key;
    bool in_segment = false;
    uint32_t max_in_flight = 0;
    uint32_t in_flight = 0;
    uint64_t bottlenecks = 0;
  };
  enum class GroupType : uint8_t { kScope, kProvider, kOther };
  struct Group {
    std::string name;  // "team:marketing", "anthropic/default", or a key prefix
    GroupType type = GroupType::kOther;
    bool configured = false;        // named by the config (scopes and providers)
    std::string parent;             // a configured scope's parent ("" for a root)
    std::vector<std::string> path;  // a configured scope's path, itself first
    std::vector<Bucket> buckets;    // in rpm, itpm, otpm, tpm, tpd order, then by key
    std::vector<Budget> budgets;    // day, then month
    std::vector<Concurrency> concurrency;
  };
  // The fleet this host shares its limits with, when the limits file has a
  // [cluster] table (filled in by AddClusterStats, cluster_stats.h).
  struct Cluster {
    struct Host {
      std::string name;
      absl::Duration since_seen;  // by Redis's clock, whole seconds
    };
    struct Bucket {
      std::string key;
      uint64_t capacity = 0;  // permits (the burst)
      // Permits in the fleet's bucket in Redis; nullopt when Redis did not
      // answer, or for a bucket Redis cannot hold (RedisBuckets::Validate).
      std::optional<uint64_t> global;
      // Permits in this host's pool (lease mode: the segment's cell under
      // the same key); nullopt in exact mode or before any process opened it.
      std::optional<int64_t> pool;
      // Host leases out: the permits in every host's pool, as Redis counts
      // them (hosts seen in the last minute), and how many hosts hold any;
      // nullopt in exact mode or when Redis did not answer.
      std::optional<uint64_t> in_pools;
      uint32_t hosts_holding = 0;
    };
    // A budget as the fleet's counter in Redis holds it (with a config).
    struct Budget {
      std::string key;
      BudgetPeriod period = BudgetPeriod::kDay;
      std::string window = {};  // the current window by Redis's clock, as Budget::window
      // Spent in that window by the whole fleet; nullopt when Redis did not
      // answer.
      std::optional<uint64_t> spent_micro_usd = {};
      uint64_t limit_micro_usd = 0;
    };
    // A concurrency cap as the fleet holds it in Redis (with a config).
    struct Cap {
      std::string key;
      std::optional<uint32_t> in_flight = {};  // leases alive in the fleet; nullopt: no answer
      uint32_t max_in_flight = 0;
    };
    std::string redis;  // the endpoint, "redis://host:port/db" (never a password)
    std::string key_prefix;
    ClusterMode mode = ClusterMode::kLease;
    // Why Redis could not be read ("" when it answered): it names host:port.
    std::string error;
    std::vector<Host> hosts;  // seen in the last minute, most recent first
    std::vector<Bucket> buckets;
    std::vector<Budget> budgets;
    std::vector<Cap> caps;
  };
  struct Process {
    pid_t pid = 0;
    bool alive = false;
    int64_t attached_unix_ns = 0;
  };

  std::string segment;  // its path
  std::string config;   // the config's source, "" without one
  absl::Time taken;     // wall time of the snapshot
  uint32_t slots = 0;
  uint32_t slots_used = 0;
  int64_t created_unix_ns = 0;
  // Scopes (root first, then each scope's children), then provider classes,
  // then other keys' groups.
  std::vector<Group> groups;
  std::vector<Process> processes;
  std::optional<Cluster> cluster;  // without a [cluster] table: none

  // The processes still running.
  int AliveProcesses() const;
};

absl::string_view GroupTypeName(StatsSnapshot::GroupType type);  // "scope", "provider", "other"
absl::string_view BudgetPeriodName(BudgetPeriod period);         // "day", "month"

// Builds a snapshot from what Segment::Inspect returned, at wall time `now`
// (budget windows are computed from it), with `config` when not null.
StatsSnapshot BuildStatsSnapshot(const SegmentInfo& info, const LimitsConfig* config,
                                 absl::Time now);

// Opens the existing segment `name_or_path` without registering in it,
// inspects it and builds the snapshot at absl::Now(). Errors: the segment's
// (NotFound reads "no segment at PATH; nothing has run yet?").
absl::StatusOr<StatsSnapshot> TakeStatsSnapshot(absl::string_view name_or_path,
                                                const LimitsConfig* config);

// The bucket (or budget, or cap) with the most bottleneck counts, and the
// count; an empty key when nothing has been a bottleneck.
struct TopBottleneck {
  std::string key;
  uint64_t count = 0;
};
TopBottleneck FindTopBottleneck(const StatsSnapshot::Group& group);
TopBottleneck FindTopBottleneck(const StatsSnapshot& snapshot);

}  // namespace sluice

#endif  // SLUICE_STATS_H_
