// File: tools/lab/lab.h
// -----------------------------------------------------------------------------
// The algorithm lab: answers "which throttle algorithm, for my traffic?" by
// running seeded workloads through every algorithm of sluice/lab/algorithms.h on
// simulated time, and measuring what each admitted.
//
// The simulation. Requests arrive as the workload says. A request is admitted
// at once if no one is waiting and the limiter agrees; otherwise it joins a
// FIFO queue, as callers of a blocking acquire do, and the head of the queue
// tries again whenever something changes: the time the limiter said to come
// back, a call finishing (the concurrency limiter), a new arrival. A request
// that has waited longer than `max_wait` gives up. Every admitted call goes
// to a simulated provider that enforces a continuous token bucket (rate =
// the limit, capacity = one period's permits, the way Anthropic and OpenAI
// document their limits and tools/fake_provider enforces them); a call it
// refuses is a 429, reported back to the limiter (the adaptive one learns from
// it) and not retried. Admitted calls are in flight for their latency.
//
// The metrics, per algorithm and workload:
//   max_in_window  the most admitted in any window of one period [t, t + P),
//                  against the limit (overshoot = max_in_window / limit);
//   utilization    admitted / (limit * duration / period);
//   waits          arrival to admission, nearest-rank percentiles;
//   fairness       Jain's index over clients of admitted / offered;
//   provider_429s  admitted calls the simulated provider refused.
//
// Everything is integer nanoseconds on simulated time and a seeded generator,
// so a run is exact and the same seed gives the same numbers every time.
//
// Real traffic: RunLabOnTrace replays a trace's arrivals (sluice/lab/trace.h)
// in place of a generated workload, each request taking the permits its line
// gives. Counts (offered, admitted, unserved, 429s) are of requests;
// max_in_window, utilization and the plots are of permits, which is the same
// for the generated workloads, whose requests take one permit each. A request
// larger than a limiter can ever admit is dropped at once (unserved).
//
// A user's own algorithm joins any run as a LabLimiter: a name and a factory
// that builds its Limiter from the LimiterConfig the lab gives every
// algorithm (LabLimiterConfig(Algorithm::kCustom, config)).
//
// Thread safety: the functions are pure (RunLab creates its own limiters);
// call them from any thread.

#ifndef SLUICE_TOOLS_LAB_LAB_H_
#define SLUICE_TOOLS_LAB_LAB_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "sluice/lab/algorithms.h"
#include "sluice/lab/trace.h"
#include "sluice/rate.h"
#include "tools/judge/exact_bucket.h"

namespace sluice::lab {

// Workload
//
// The traffic shapes, relative to the limit L per period P.
enum class Workload : uint8_t {
  kSteady,       // "steady": exactly L per P, evenly spaced
  kPoisson,      // "poisson": Poisson arrivals at 0.9 L per P
  kBursty,       // "bursty": each client on 10 s at 4x its share, off 30 s, random phase
  kLaunchSpike,  // "launch-spike": Poisson at 1.2 L per P (1,200/min against 1,000/min)
  kBoundary,     // "boundary": L in the P/12 before every other window boundary, L after
  kTrace,        // "trace": arrivals replayed from a file (RunLabOnTrace); not generated
};
inline constexpr Workload kAllWorkloads[] = {Workload::kSteady, Workload::kPoisson,
                                             Workload::kBursty, Workload::kLaunchSpike,
                                             Workload::kBoundary};

absl::string_view WorkloadName(Workload workload);
absl::string_view WorkloadDescription(Workload workload);
// InvalidArgument naming `name` and listing the known names.
absl::StatusOr<Workload> ParseWorkload(absl::string_view name);

struct LabConfig {
  Rate limit = Rate::PerMinute(1000);
  uint64_t burst = 0;  // the token bucket's capacity; 0: the limit's permits
  absl::Duration duration = absl::Minutes(10);
  uint32_t clients = 8;
  uint64_t seed = 1;
  absl::Duration max_wait = absl::Seconds(30);  // a request waiting longer gives up
  absl::Duration latency = absl::Seconds(2);    // mean time a call is in flight
  absl::Duration bin = absl::Seconds(1);        // the plots' resolution
};

// OK, or InvalidArgument naming the field that is wrong.
absl::Status ValidateLabConfig(const LabConfig& config);

// How the lab sets each algorithm up for `config`: the window algorithms
// allow L per window of P; the pacer spaces at P / L; the token bucket holds
// `burst`; the concurrency limiter allows L * latency / P calls (Little's
// law: the limit's rate at the mean latency); the adaptive limiter starts at
// L per P with a burst of one second's share, and probes up to 2 L.
LimiterConfig LabLimiterConfig(Algorithm algorithm, const LabConfig& config);

// A request: when it arrives, from which client, how long it will be in
// flight once admitted.
struct Request {
  int64_t arrival_ns;
  uint32_t client;
  int64_t latency_ns;
  uint64_t permits = 1;
};

// The workload's requests in arrival order, from `config.seed`.
// InvalidArgument for a bad config or one that would offer more than ten
// million requests, or for Workload::kTrace.
absl::StatusOr<std::vector<Request>> GenerateWorkload(Workload workload, const LabConfig& config);

// What the simulated provider enforces: a continuous token bucket of rate
// `limit` and capacity limit.permits(), full at time 0. An exact bucket that
// shares no code with the algorithms it judges (see ExactBucket).
class ProviderModel {
 public:
  explicit ProviderModel(const Rate& limit);
  ProviderModel(const ProviderModel&) = delete;
  ProviderModel& operator=(const ProviderModel&) = delete;

  // Whether a call of `permits` at `now_ns` gets through (false: a 429).
  bool Accept(int64_t now_ns, uint64_t permits = 1);

 private:
  std::unique_ptr<ExactBucket> bucket_;  // null for an invalid limit: refuses all
};

struct Admitted {
  int64_t arrival_ns;
  int64_t admitted_ns;
  uint32_t client;
  bool rate_limited;  // the provider answered 429
  uint64_t permits = 1;
};

struct Trace {
  std::vector<Admitted> admitted;  // in admission order
  std::vector<int64_t> offered_per_client;
  int64_t offered = 0;
};

// Runs `requests` through `limiter` on simulated time from 0 to
// config.duration (see the file comment).
Trace Simulate(Limiter& limiter, absl::Span<const Request> requests, const LabConfig& config);

struct Metrics {
  int64_t offered = 0;
  int64_t admitted = 0;
  int64_t unserved = 0;  // gave up, or still waiting at the end
  int64_t provider_429s = 0;
  int64_t max_in_window = 0;
  double overshoot = 0;
  double utilization = 0;
  int64_t wait_p50_ns = 0;
  int64_t wait_p90_ns = 0;
  int64_t wait_p99_ns = 0;
  int64_t wait_max_ns = 0;
  double fairness = 1;
};

Metrics Measure(const Trace& trace, const LabConfig& config);

// The building blocks of Measure.
//
// The most of `sorted_ns` in any window [t, t + window_ns): counted, or
// summed over `permits` (one per time) when given.
int64_t MaxInWindow(absl::Span<const int64_t> sorted_ns, int64_t window_ns,
                    absl::Span<const uint64_t> permits = {});
// The nearest-rank q-quantile (0 < q <= 1) of `sorted`; 0 when empty.
int64_t Percentile(absl::Span<const int64_t> sorted, double q);
// Jain's fairness index (sum x)^2 / (n sum x^2): 1 when all are equal, 1/n
// when one gets everything. 1 for an empty or all-zero input (all alike).
double JainIndex(absl::Span<const double> x);

// One algorithm on one workload.
struct LabResult {
  Workload workload;
  Algorithm algorithm;  // kCustom for a user's own
  Metrics metrics;
  std::vector<int64_t> per_bin;   // permits admitted in each bin [k bin, (k+1) bin)
  std::vector<int64_t> trailing;  // permits admitted in [t - P, t) at each bin's end t
  std::string name;               // AlgorithmName(algorithm), or the LabLimiter's name
};

// LabLimiter
//
// A limiter in a run, by name: one of the lab's algorithms, or a user's own.
// `create` gets LabLimiterConfig(algorithm, config) for the run's config and
// builds a fresh limiter for each workload, whose time starts at 0.
//
// Example:
//   std::vector<LabLimiter> limiters = BuiltinLimiters(kAllAlgorithms);
//   limiters.push_back({"my-limiter", [](const LimiterConfig& c)
//       -> absl::StatusOr<std::unique_ptr<Limiter>> {
//     return std::make_unique<MyLimiter>(c.rate);
//   }});
//   auto results = RunLabOnTrace(config, *trace, limiters);
using LimiterFactory =
    std::function<absl::StatusOr<std::unique_ptr<Limiter>>(const LimiterConfig& config)>;
struct LabLimiter {
  std::string name;
  LimiterFactory create;
  Algorithm algorithm = Algorithm::kCustom;  // whose LabLimiterConfig `create` gets
};

// The lab's own algorithms, built with Limiter::Create.
std::vector<LabLimiter> BuiltinLimiters(absl::Span<const Algorithm> algorithms);

// Every limiter on `requests` (in arrival order), which are `workload`'s
// arrivals. InvalidArgument for a bad config, naming the limiter that
// refused it.
absl::StatusOr<std::vector<LabResult>> RunLabOn(const LabConfig& config, Workload workload,
                                                absl::Span<const Request> requests,
                                                absl::Span<const LabLimiter> limiters);

// Every algorithm on every workload, in the order given. InvalidArgument for
// a bad config, naming the algorithm whose limiter refused it.
absl::StatusOr<std::vector<LabResult>> RunLab(const LabConfig& config,
                                              absl::Span<const Workload> workloads,
                                              absl::Span<const Algorithm> algorithms);
// The same with any limiters, a user's own among them.
absl::StatusOr<std::vector<LabResult>> RunLab(const LabConfig& config,
                                              absl::Span<const Workload> workloads,
                                              absl::Span<const LabLimiter> limiters);

// Replaying a trace
//
// The config for replaying `trace`: `config` with clients = the trace's
// clients, and, unless `keep_duration`, a duration lasting until
// config.max_wait after the last arrival (so that every request is admitted
// or gives up), rounded up to a whole bin; the bin widened to whole seconds if
// the run would need more than 100,000.
LabConfig TraceLabConfig(const LabConfig& config, const TrafficTrace& trace, bool keep_duration);

// The trace's arrivals before config.duration as requests, with latencies
// drawn as the generated workloads' are (uniform from half to 1.5x
// config.latency, from config.seed).
std::vector<Request> TraceRequests(const TrafficTrace& trace, const LabConfig& config);

// Every limiter on the trace's arrivals, under TraceLabConfig(config, trace,
// keep_duration); the results' workload is Workload::kTrace. Returns the
// config it ran under in `*ran` when not null. InvalidArgument as RunLabOn.
absl::StatusOr<std::vector<LabResult>> RunLabOnTrace(const LabConfig& config,
                                                     const TrafficTrace& trace,
                                                     absl::Span<const LabLimiter> limiters,
                                                     bool keep_duration = false,
                                                     LabConfig* ran = nullptr);

// The summary table: a heading row, then one row per result.
std::vector<std::vector<std::string>> SummaryRows(absl::Span<const LabResult> results);
// The config and every result's metrics.
nlohmann::ordered_json ToJson(const LabConfig& config, absl::Span<const LabResult> results);
// One SVG picture for one workload: a panel per algorithm showing admitted
// per bin (bars) and admitted in the trailing period (line) against the limit.
// REQUIRES: every result is for `workload`.
std::string RenderSvg(Workload workload, const LabConfig& config,
                      absl::Span<const LabResult> results);

}  // namespace sluice::lab

#endif  // SLUICE_TOOLS_LAB_LAB_H_
