// File: tools/stats/stats.h
// -----------------------------------------------------------------------------
// What `sluice stats`, `top` and `metrics` add to the library's snapshots
// (sluice/stats.h, sluice/stats_exposition.h): the text table for a terminal,
// and the HTTP server that answers GET /metrics.
//
// Thread safety: FormatStatsText is pure; a MetricsServer is safe to Stop
// from any thread.

#ifndef SLUICE_TOOLS_STATS_STATS_H_
#define SLUICE_TOOLS_STATS_STATS_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sluice/stats.h"
#include "sluice/stats_exposition.h"

namespace sluice {

// The text view: a header (with a [cluster] table, the fleet's Redis and
// hosts), then tables of buckets (and the fleet's levels), budgets, concurrency caps,
// scope paths (with a config) and processes; local times.
std::string FormatStatsText(const StatsSnapshot& snapshot);

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
