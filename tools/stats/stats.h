// File: tools/stats/stats.h
// -----------------------------------------------------------------------------
// What `sluice stats`, `sluice top` and `sluice metrics` report: a snapshot of
// a segment (every bucket, budget, concurrency cap and attached process),
// grouped by the scope or provider model class each belongs to, and laid out
// as a text table, a JSON document or a Prometheus text exposition (format
// 0.0.4).
//
// Without a limits configuration, the groups come from the bucket keys the
// policy writes ("scope:team:marketing:rpm" -> scope team:marketing,
// "provider:anthropic:default:tpm" -> provider anthropic/default; any other
// key "a:b:c" -> group "a:b", kind "c"). With one, each bucket also shows its
// configured limit, each budget its limit, each scope its parent and its path
// to the root, and what the configuration names but no process has opened yet
// is listed too (as not in the segment).
//
// Budget windows are the policy's: the UTC day (unix seconds / 86400) and the
// UTC month ((year - 1970) * 12 + month - 1). A counter still in an older
// window has spent nothing in the current one.
//
// Thread safety: the functions are pure, apart from TakeStatsSnapshot (which
// reads a segment under its lock); a MetricsServer is safe to Stop from any
// thread.

#ifndef SLUICE_TOOLS_STATS_STATS_H_
#define SLUICE_TOOLS_STATS_STATS_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
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
  };
  struct Budget {
    std::string key;
    BudgetPeriod period = BudgetPeriod::kDay;
    bool in_segment = false;
    std::string window;  // the current window: "2025-01-15" (day) or "2025-01" (month), UTC
    uint64_t spent_micro_usd = 0;             // in the current window
    std::optional<uint64_t> limit_micro_usd;  // with a config
    uint64_t bottlenecks = 0;
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

// The views. Text: a header, then tables of buckets, budgets, concurrency
// caps, scope paths (with a config) and processes; local times. JSON: one
// document (nlohmann ordered_json, dumped with 2-space indent) with UTC
// RFC 3339 times. Prometheus: the text exposition format 0.0.4, one HELP and
// one TYPE line before each metric family's samples.
std::string FormatStatsText(const StatsSnapshot& snapshot);
std::string FormatStatsJson(const StatsSnapshot& snapshot);
std::string FormatPrometheus(const StatsSnapshot& snapshot);

// The Content-Type of FormatPrometheus's output.
inline constexpr absl::string_view kPrometheusContentType =
    "text/plain; version=0.0.4; charset=utf-8";

// Where `sluice metrics` listens: "HOST:PORT", HOST an IPv4 address,
// "localhost", or an IPv6 address in brackets ("[::1]:9464"); PORT 0 to
// 65535 (0 picks a free one). InvalidArgument naming the text otherwise.
struct ListenAddress {
  std::string host;  // without brackets
  int port = 0;
};
absl::StatusOr<ListenAddress> ParseListenAddress(absl::string_view text);

// MetricsServer
//
// Serves GET /metrics over HTTP with what `scrape` returns, called afresh for
// every request: 200 with kPrometheusContentType, or 503 with the error's
// message when it fails. Any other path is 404.
class MetricsServer {
 public:
  // Binds and starts serving on its own threads; returns once it accepts
  // connections. Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const ListenAddress& address, std::function<absl::StatusOr<std::string>()> scrape);
  // Stops and joins the threads.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The port bound (the free one picked for port 0).
  int port() const;
  // "http://HOST:PORT/metrics", IPv6 hosts in brackets.
  std::string url() const;
  // Stops serving; later calls do nothing.
  void Stop();

 private:
  class Impl;
  explicit MetricsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice

#endif  // SLUICE_TOOLS_STATS_STATS_H_
