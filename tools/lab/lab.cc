#include "tools/lab/lab.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <queue>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace sluice::lab {
namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
constexpr double kMaxRequests = 10'000'000;
constexpr int64_t kMaxBins = 100'000;

int64_t Nanos(absl::Duration d) { return absl::ToInt64Nanoseconds(d); }

// The workloads draw from a 64-bit Mersenne Twister, whose output the C++
// standard fixes, and turn it into numbers here rather than with the
// library's distributions, which differ between implementations: a seed's
// requests do not depend on which standard library built the lab.
class Draw {
 public:
  explicit Draw(uint64_t seed) : rng_(seed) {}
  // Uniform in [0, 1).
  double Uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }
  // Uniform in [0, n).
  uint32_t Below(uint32_t n) { return static_cast<uint32_t>(rng_() % n); }
  // An exponential gap with the given mean, in ns (at least 1).
  int64_t Exponential(double mean_ns) {
    return std::max<int64_t>(1, std::llround(-std::log1p(-Uniform()) * mean_ns));
  }

 private:
  std::mt19937_64 rng_;
};

// Poisson arrivals at `per_ns` requests per ns over [from, to).
void PoissonArrivals(Draw& draw, double per_ns, int64_t from, int64_t to,
                     std::vector<int64_t>* out) {
  for (int64_t t = from + draw.Exponential(1 / per_ns); t < to; t += draw.Exponential(1 / per_ns)) {
    out->push_back(t);
  }
}

// n arrivals evenly spaced over [from, from + span), those before `end`.
void EvenArrivals(int64_t n, int64_t from, int64_t span, int64_t end, std::vector<int64_t>* out) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = from + static_cast<int64_t>(static_cast<__int128>(i) * span / n);
    if (t >= 0 && t < end) out->push_back(t);
  }
}

std::string Escape(absl::string_view text) {
  return absl::StrReplaceAll(text, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}});
}

std::string Seconds(int64_t ns) { return absl::StrFormat("%.2fs", static_cast<double>(ns) / 1e9); }

// Latencies uniform in [latency / 2, 3 latency / 2), drawn in arrival order.
void DrawLatencies(Draw& draw, absl::Duration mean, std::vector<Request>* requests) {
  const double latency = static_cast<double>(Nanos(mean));
  for (Request& r : *requests) {
    r.latency_ns = std::max<int64_t>(1, std::llround(latency * (0.5 + draw.Uniform())));
  }
}

// The name a result is shown under.
absl::string_view NameOf(const LabResult& r) {
  return r.name.empty() ? AlgorithmName(r.algorithm) : absl::string_view(r.name);
}

// ValidateLabConfig but for the count of requests it would generate: what a
// replayed trace, which brings its own requests, must pass.
absl::Status ValidateRunConfig(const LabConfig& config) {
  if (absl::Status s = config.limit.Validate(); !s.ok()) return s;
  auto positive = [](absl::string_view what, absl::Duration d) {
    if (d > absl::ZeroDuration() && d < absl::Hours(24 * 366)) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", absl::FormatDuration(d), " must be positive and under a year"));
  };
  if (absl::Status s = positive("duration", config.duration); !s.ok()) return s;
  if (absl::Status s = positive("latency", config.latency); !s.ok()) return s;
  if (absl::Status s = positive("bin", config.bin); !s.ok()) return s;
  if (absl::Status s = positive("limit period", config.limit.period()); !s.ok()) return s;
  if (config.max_wait < absl::ZeroDuration() || config.max_wait >= absl::Hours(24 * 366)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max wait ", absl::FormatDuration(config.max_wait), " must be >= 0 and under a year"));
  }
  if (config.clients == 0 || config.clients > 1'000'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("clients ", config.clients, " must be from 1 to 1000000"));
  }
  if (config.duration / config.bin > kMaxBins) {
    return absl::InvalidArgumentError(
        absl::StrCat("duration ", absl::FormatDuration(config.duration), " at bins of ",
                     absl::FormatDuration(config.bin), " is more than ", kMaxBins, " bins"));
  }
  return absl::OkStatus();
}

}  // namespace

// Workloads -----------------------------------------------------------------------

absl::string_view WorkloadName(Workload workload) {
  switch (workload) {
    case Workload::kSteady:
      return "steady";
    case Workload::kPoisson:
      return "poisson";
    case Workload::kBursty:
      return "bursty";
    case Workload::kLaunchSpike:
      return "launch-spike";
    case Workload::kBoundary:
      return "boundary";
    case Workload::kTrace:
      return "trace";
  }
  return "unknown";
}

absl::string_view WorkloadDescription(Workload workload) {
  switch (workload) {
    case Workload::kSteady:
      return "exactly the limit, evenly spaced";
    case Workload::kPoisson:
      return "Poisson arrivals at 0.9x the limit";
    case Workload::kBursty:
      return "each client on for P/6 at 4x its share, off for P/2, random phase";
    case Workload::kLaunchSpike:
      return "Poisson arrivals at 1.2x the limit (1,200/min against 1,000/min)";
    case Workload::kBoundary:
      return "the limit in the P/12 before every other window boundary, the limit again after";
    case Workload::kTrace:
      return "arrivals replayed from a trace";
  }
  return "";
}

absl::StatusOr<Workload> ParseWorkload(absl::string_view name) {
  for (Workload w : kAllWorkloads) {
    if (WorkloadName(w) == name) return w;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown workload '", name, "'; workloads are ",
      absl::StrJoin(kAllWorkloads, ", ",
                    [](std::string* out, Workload w) { absl::StrAppend(out, WorkloadName(w)); })));
}

absl::Status ValidateLabConfig(const LabConfig& config) {
  if (absl::Status s = ValidateRunConfig(config); !s.ok()) return s;
  const double expected = 1.3 * static_cast<double>(config.limit.permits()) *
                          absl::FDivDuration(config.duration, config.limit.period());
  if (expected > kMaxRequests) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "limit %s over %s would offer about %.0f requests; the lab simulates at most %.0f "
        "(lower the rate or the duration)",
        config.limit.ToString(), absl::FormatDuration(config.duration), expected, kMaxRequests));
  }
  return absl::OkStatus();
}

LimiterConfig LabLimiterConfig(Algorithm algorithm, const LabConfig& config) {
  const uint64_t permits = config.limit.permits();
  const double per_period = absl::FDivDuration(config.latency, config.limit.period());
  const uint64_t share_of_second = static_cast<uint64_t>(
      static_cast<double>(permits) * absl::FDivDuration(absl::Seconds(1), config.limit.period()));
  LimiterConfig limiter{
      .algorithm = algorithm,
      .rate = config.limit,
      .burst = config.burst != 0 ? config.burst : permits,
      .max_in_flight = static_cast<uint32_t>(
          std::clamp<double>(std::ceil(static_cast<double>(permits) * per_period), 1, 1'000'000)),
  };
  limiter.adaptive.burst = std::max<uint64_t>(1, share_of_second);
  limiter.adaptive.min_permits = std::max<uint64_t>(1, permits / 100);
  limiter.adaptive.max_permits = 2 * permits;
  limiter.adaptive.increase_permits = std::max<uint64_t>(1, permits / 10);
  limiter.adaptive.cooldown = absl::Seconds(1);
  return limiter;
}

absl::StatusOr<std::vector<Request>> GenerateWorkload(Workload workload, const LabConfig& config) {
  if (absl::Status s = ValidateLabConfig(config); !s.ok()) return s;
  if (workload == Workload::kTrace) {
    return absl::InvalidArgumentError("the trace workload is replayed from a file, not generated");
  }
  const int64_t end = Nanos(config.duration);
  const int64_t period = Nanos(config.limit.period());
  const int64_t permits = static_cast<int64_t>(config.limit.permits());
  const double per_ns = static_cast<double>(permits) / static_cast<double>(period);
  const uint32_t clients = config.clients;
  Draw draw(config.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(workload));

  std::vector<Request> requests;
  auto add_all = [&](const std::vector<int64_t>& times, bool round_robin) {
    for (size_t i = 0; i < times.size(); ++i) {
      requests.push_back(
          {times[i], round_robin ? static_cast<uint32_t>(i % clients) : draw.Below(clients), 0});
    }
  };
  std::vector<int64_t> times;
  switch (workload) {
    case Workload::kSteady:
      for (int64_t i = 0;; ++i) {
        const int64_t t = static_cast<int64_t>(static_cast<__int128>(i) * period / permits);
        if (t >= end) break;
        times.push_back(t);
      }
      add_all(times, /*round_robin=*/true);
      break;
    case Workload::kPoisson:
      PoissonArrivals(draw, 0.9 * per_ns, 0, end, &times);
      add_all(times, /*round_robin=*/false);
      break;
    case Workload::kLaunchSpike:
      PoissonArrivals(draw, 1.2 * per_ns, 0, end, &times);
      add_all(times, /*round_robin=*/false);
      break;
    case Workload::kBursty: {
      const int64_t on = period / 6;
      const int64_t cycle = on + period / 2;
      for (uint32_t c = 0; c < clients; ++c) {
        const int64_t phase = static_cast<int64_t>(draw.Uniform() * static_cast<double>(cycle));
        std::vector<int64_t> mine;
        for (int64_t start = phase - cycle; start < end; start += cycle) {
          PoissonArrivals(draw, 4 * per_ns / clients, std::max<int64_t>(start, 0),
                          std::min(start + on, end), &mine);
        }
        for (int64_t t : mine) requests.push_back({t, c, 0});
      }
      break;
    }
    case Workload::kBoundary: {
      const int64_t side = period / 12;
      for (int64_t b = period; b < end; b += 2 * period) {
        EvenArrivals(permits, b - side, side, end, &times);
        EvenArrivals(permits, b, side, end, &times);
      }
      add_all(times, /*round_robin=*/true);
      break;
    }
    case Workload::kTrace:
      break;
  }
  std::stable_sort(requests.begin(), requests.end(), [](const Request& a, const Request& b) {
    return a.arrival_ns != b.arrival_ns ? a.arrival_ns < b.arrival_ns : a.client < b.client;
  });
  DrawLatencies(draw, config.latency, &requests);
  return requests;
}

// Simulation ------------------------------------------------------------------------

ProviderModel::ProviderModel(const Rate& limit) {
  // The lab validated the limit; an invalid one leaves no bucket, which
  // refuses everything.
  auto bucket = ExactBucket::Create(
      {.permits = limit.permits(), .period_ns = Nanos(limit.period()), .capacity = limit.permits()},
      /*now_ns=*/0);
  if (bucket.ok()) bucket_ = *std::move(bucket);
}

bool ProviderModel::Accept(int64_t now_ns, uint64_t permits) {
  return bucket_ != nullptr && bucket_->TryTake(permits, now_ns).taken;
}

Trace Simulate(Limiter& limiter, absl::Span<const Request> requests, const LabConfig& config) {
  const int64_t end = Nanos(config.duration);
  const int64_t max_wait = Nanos(config.max_wait);
  ProviderModel provider(config.limit);
  Trace trace;
  trace.offered = static_cast<int64_t>(requests.size());
  trace.offered_per_client.assign(config.clients, 0);
  for (const Request& r : requests) {
    if (r.client < config.clients) ++trace.offered_per_client[r.client];
  }

  struct InFlight {
    int64_t done_ns;
    Admission admission;
    bool operator>(const InFlight& o) const { return done_ns > o.done_ns; }
  };
  std::priority_queue<InFlight, std::vector<InFlight>, std::greater<>> in_flight;
  std::deque<size_t> waiting;  // indices into `requests`, FIFO
  size_t next = 0;
  int64_t retry_at = kNever;
  for (;;) {
    int64_t now = retry_at;
    if (next < requests.size()) now = std::min(now, requests[next].arrival_ns);
    if (!in_flight.empty()) now = std::min(now, in_flight.top().done_ns);
    if (now >= end) break;
    while (!in_flight.empty() && in_flight.top().done_ns <= now) {
      limiter.Release(in_flight.top().admission, in_flight.top().done_ns);
      in_flight.pop();
    }
    while (next < requests.size() && requests[next].arrival_ns <= now) waiting.push_back(next++);
    while (!waiting.empty() && now - requests[waiting.front()].arrival_ns > max_wait) {
      waiting.pop_front();  // gave up
    }
    retry_at = kNever;
    while (!waiting.empty()) {
      const Request& r = requests[waiting.front()];
      const Admission admission = limiter.TryAcquire(r.permits, now);
      if (admission.outcome == Outcome::kNeverFits) {
        waiting.pop_front();  // no wait will ever do
        continue;
      }
      if (!admission.granted()) {
        if (admission.wait_ns != kWaitForRelease) {
          retry_at = now + std::max<int64_t>(admission.wait_ns, 1);
        }
        break;
      }
      waiting.pop_front();
      const bool rate_limited = !provider.Accept(now, r.permits);
      limiter.OnResponse(rate_limited, now);
      trace.admitted.push_back({r.arrival_ns, now, r.client, rate_limited, r.permits});
      if (rate_limited) {
        limiter.Release(admission, now);  // a 429 comes back at once
      } else {
        in_flight.push({now + r.latency_ns, admission});
      }
    }
  }
  return trace;
}

// Metrics ---------------------------------------------------------------------------

int64_t MaxInWindow(absl::Span<const int64_t> sorted_ns, int64_t window_ns,
                    absl::Span<const uint64_t> permits) {
  auto weight = [&](size_t i) {
    return i < permits.size() ? static_cast<int64_t>(permits[i]) : int64_t{1};
  };
  int64_t most = 0;
  int64_t in_window = 0;
  size_t first = 0;
  for (size_t last = 0; last < sorted_ns.size(); ++last) {
    in_window += weight(last);
    while (sorted_ns[last] - sorted_ns[first] >= window_ns) in_window -= weight(first++);
    most = std::max(most, in_window);
  }
  return most;
}

int64_t Percentile(absl::Span<const int64_t> sorted, double q) {
  if (sorted.empty()) return 0;
  const double rank = std::ceil(q * static_cast<double>(sorted.size()));
  const size_t index = static_cast<size_t>(std::clamp<double>(rank, 1, sorted.size())) - 1;
  return sorted[index];
}

double JainIndex(absl::Span<const double> x) {
  double sum = 0;
  double squares = 0;
  for (double v : x) {
    sum += v;
    squares += v * v;
  }
  if (squares == 0) return 1;
  return sum * sum / (static_cast<double>(x.size()) * squares);
}

Metrics Measure(const Trace& trace, const LabConfig& config) {
  Metrics m;
  m.offered = trace.offered;
  m.admitted = static_cast<int64_t>(trace.admitted.size());
  m.unserved = m.offered - m.admitted;
  std::vector<std::pair<int64_t, uint64_t>> admissions;  // (time, permits)
  std::vector<int64_t> waits;
  std::vector<int64_t> per_client(trace.offered_per_client.size(), 0);
  double admitted_permits = 0;
  for (const Admitted& a : trace.admitted) {
    admissions.emplace_back(a.admitted_ns, a.permits);
    waits.push_back(a.admitted_ns - a.arrival_ns);
    m.provider_429s += a.rate_limited;
    admitted_permits += static_cast<double>(a.permits);
    if (a.client < per_client.size()) ++per_client[a.client];
  }
  std::sort(admissions.begin(), admissions.end());
  std::sort(waits.begin(), waits.end());
  std::vector<int64_t> times;
  std::vector<uint64_t> permits;
  for (const auto& [t, n] : admissions) {
    times.push_back(t);
    permits.push_back(n);
  }
  const double limit = static_cast<double>(config.limit.permits());
  m.max_in_window = MaxInWindow(times, Nanos(config.limit.period()), permits);
  m.overshoot = static_cast<double>(m.max_in_window) / limit;
  m.utilization =
      admitted_permits / (limit * absl::FDivDuration(config.duration, config.limit.period()));
  m.wait_p50_ns = Percentile(waits, 0.50);
  m.wait_p90_ns = Percentile(waits, 0.90);
  m.wait_p99_ns = Percentile(waits, 0.99);
  m.wait_max_ns = waits.empty() ? 0 : waits.back();
  std::vector<double> shares;
  for (size_t c = 0; c < per_client.size(); ++c) {
    if (trace.offered_per_client[c] == 0) continue;
    shares.push_back(static_cast<double>(per_client[c]) /
                     static_cast<double>(trace.offered_per_client[c]));
  }
  m.fairness = JainIndex(shares);
  return m;
}

// The lab -----------------------------------------------------------------------------

namespace {

// The plots' series: permits admitted per bin, and in the trailing period at
// each bin's end.
void FillSeries(const Trace& trace, const LabConfig& config, LabResult* result) {
  const int64_t end = Nanos(config.duration);
  const int64_t bin = Nanos(config.bin);
  const int64_t period = Nanos(config.limit.period());
  const size_t bins = static_cast<size_t>((end + bin - 1) / bin);
  result->per_bin.assign(bins, 0);
  std::vector<int64_t> times;         // in admission order, which is time order
  std::vector<int64_t> before = {0};  // before[i]: permits of the first i admissions
  for (const Admitted& a : trace.admitted) {
    result->per_bin[static_cast<size_t>(a.admitted_ns / bin)] += static_cast<int64_t>(a.permits);
    times.push_back(a.admitted_ns);
    before.push_back(before.back() + static_cast<int64_t>(a.permits));
  }
  auto admitted_before = [&](int64_t t) {
    return before[static_cast<size_t>(std::lower_bound(times.begin(), times.end(), t) -
                                      times.begin())];
  };
  for (size_t k = 0; k < bins; ++k) {
    const int64_t t = std::min(end, static_cast<int64_t>(k + 1) * bin);
    result->trailing.push_back(admitted_before(t) - admitted_before(t - period));
  }
}

}  // namespace

std::vector<LabLimiter> BuiltinLimiters(absl::Span<const Algorithm> algorithms) {
  std::vector<LabLimiter> limiters;
  for (Algorithm algorithm : algorithms) {
    limiters.push_back({std::string(AlgorithmName(algorithm)),
                        [](const LimiterConfig& c) { return Limiter::Create(c, 0); }, algorithm});
  }
  return limiters;
}

absl::StatusOr<std::vector<LabResult>> RunLabOn(const LabConfig& config, Workload workload,
                                                absl::Span<const Request> requests,
                                                absl::Span<const LabLimiter> limiters) {
  if (absl::Status s = ValidateRunConfig(config); !s.ok()) return s;
  std::vector<LabResult> results;
  for (const LabLimiter& entry : limiters) {
    absl::StatusOr<std::unique_ptr<Limiter>> limiter =
        entry.create ? entry.create(LabLimiterConfig(entry.algorithm, config))
                     : absl::InvalidArgumentError("no factory");
    if (limiter.ok() && *limiter == nullptr) limiter = absl::InvalidArgumentError("no limiter");
    if (!limiter.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(entry.name, ": ", limiter.status().message()));
    }
    const Trace trace = Simulate(**limiter, requests, config);
    LabResult result{workload, (*limiter)->algorithm(), Measure(trace, config), {}, {}, entry.name};
    FillSeries(trace, config, &result);
    results.push_back(std::move(result));
  }
  return results;
}

absl::StatusOr<std::vector<LabResult>> RunLab(const LabConfig& config,
                                              absl::Span<const Workload> workloads,
                                              absl::Span<const LabLimiter> limiters) {
  if (absl::Status s = ValidateLabConfig(config); !s.ok()) return s;
  std::vector<LabResult> results;
  for (Workload workload : workloads) {
    absl::StatusOr<std::vector<Request>> requests = GenerateWorkload(workload, config);
    if (!requests.ok()) return requests.status();
    absl::StatusOr<std::vector<LabResult>> mine = RunLabOn(config, workload, *requests, limiters);
    if (!mine.ok()) return mine.status();
    for (LabResult& r : *mine) results.push_back(std::move(r));
  }
  return results;
}

absl::StatusOr<std::vector<LabResult>> RunLab(const LabConfig& config,
                                              absl::Span<const Workload> workloads,
                                              absl::Span<const Algorithm> algorithms) {
  return RunLab(config, workloads, BuiltinLimiters(algorithms));
}

// Replaying a trace ---------------------------------------------------------------------

LabConfig TraceLabConfig(const LabConfig& config, const TrafficTrace& trace, bool keep_duration) {
  LabConfig out = config;
  out.clients = static_cast<uint32_t>(std::max<size_t>(1, trace.clients.size()));
  if (!keep_duration && !trace.arrivals.empty()) {
    out.duration = absl::Nanoseconds(trace.arrivals.back().t_ns + 1) + config.max_wait;
  }
  // Wider bins, in whole seconds, for a run longer than kMaxBins of them.
  if (out.bin > absl::ZeroDuration() && out.duration / out.bin > kMaxBins) {
    out.bin = absl::Seconds(absl::ToInt64Seconds(out.duration / kMaxBins) + 1);
  }
  // A derived duration ends on a whole bin.
  if (!keep_duration && out.bin > absl::ZeroDuration()) {
    out.duration = absl::Ceil(out.duration, out.bin);
  }
  return out;
}

std::vector<Request> TraceRequests(const TrafficTrace& trace, const LabConfig& config) {
  const int64_t end = Nanos(config.duration);
  std::vector<Request> requests;
  for (const TraceArrival& a : trace.arrivals) {
    if (a.t_ns >= end) break;
    requests.push_back({a.t_ns, a.client, 0, a.permits});
  }
  Draw draw(config.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(Workload::kTrace));
  DrawLatencies(draw, config.latency, &requests);
  return requests;
}

absl::StatusOr<std::vector<LabResult>> RunLabOnTrace(const LabConfig& config,
                                                     const TrafficTrace& trace,
                                                     absl::Span<const LabLimiter> limiters,
                                                     bool keep_duration, LabConfig* ran) {
  const LabConfig replay = TraceLabConfig(config, trace, keep_duration);
  if (ran != nullptr) *ran = replay;
  return RunLabOn(replay, Workload::kTrace, TraceRequests(trace, replay), limiters);
}

// Output ------------------------------------------------------------------------------

std::vector<std::vector<std::string>> SummaryRows(absl::Span<const LabResult> results) {
  std::vector<std::vector<std::string>> rows = {{"workload", "algorithm", "offered", "admitted",
                                                 "unserved", "429s", "max/period", "overshoot",
                                                 "util", "wait p50", "wait p99", "fairness"}};
  for (const LabResult& r : results) {
    const Metrics& m = r.metrics;
    rows.push_back({std::string(WorkloadName(r.workload)), std::string(NameOf(r)),
                    absl::StrCat(m.offered), absl::StrCat(m.admitted), absl::StrCat(m.unserved),
                    absl::StrCat(m.provider_429s), absl::StrCat(m.max_in_window),
                    absl::StrFormat("%.2fx", m.overshoot), absl::StrFormat("%.3f", m.utilization),
                    Seconds(m.wait_p50_ns), Seconds(m.wait_p99_ns),
                    absl::StrFormat("%.3f", m.fairness)});
  }
  return rows;
}

nlohmann::ordered_json ToJson(const LabConfig& config, absl::Span<const LabResult> results) {
  nlohmann::ordered_json doc;
  doc["config"] = {
      {"limit", config.limit.ToString()},
      {"burst", config.burst != 0 ? config.burst : config.limit.permits()},
      {"duration_ns", Nanos(config.duration)},
      {"clients", config.clients},
      {"seed", config.seed},
      {"max_wait_ns", Nanos(config.max_wait)},
      {"latency_ns", Nanos(config.latency)},
      {"provider", absl::StrCat("continuous token bucket, ", config.limit.ToString(), ", capacity ",
                                config.limit.permits())},
  };
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const LabResult& r : results) {
    const Metrics& m = r.metrics;
    list.push_back({
        {"workload", WorkloadName(r.workload)},
        {"algorithm", NameOf(r)},
        {"offered", m.offered},
        {"admitted", m.admitted},
        {"unserved", m.unserved},
        {"provider_429s", m.provider_429s},
        {"max_in_window", m.max_in_window},
        {"overshoot", m.overshoot},
        {"utilization", m.utilization},
        {"wait_ns",
         {{"p50", m.wait_p50_ns},
          {"p90", m.wait_p90_ns},
          {"p99", m.wait_p99_ns},
          {"max", m.wait_max_ns}}},
        {"fairness", m.fairness},
    });
  }
  doc["results"] = std::move(list);
  return doc;
}

std::string RenderSvg(Workload workload, const LabConfig& config,
                      absl::Span<const LabResult> results) {
  constexpr int kWidth = 960, kLeft = 64, kRight = 16, kTop = 74, kPanel = 96, kGap = 30,
                kBottom = 40;
  const int plot_width = kWidth - kLeft - kRight;
  const int height = kTop + static_cast<int>(results.size()) * (kPanel + kGap) + kBottom;
  const double end = static_cast<double>(Nanos(config.duration));
  const double bin = static_cast<double>(Nanos(config.bin));
  const int64_t limit = static_cast<int64_t>(config.limit.permits());
  const std::string period = absl::FormatDuration(config.limit.period());
  int64_t top = limit;
  for (const LabResult& r : results) {
    for (int64_t v : r.trailing) top = std::max(top, v);
    for (int64_t v : r.per_bin) top = std::max(top, v);
  }
  const double y_max = static_cast<double>(top) * 1.1;
  auto x_of = [&](double t_ns) { return kLeft + plot_width * t_ns / end; };

  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
      kWidth, height, kWidth, height);
  absl::StrAppendFormat(&svg,
                        "<text x=\"%d\" y=\"22\"><tspan font-size=\"16\" "
                        "font-weight=\"bold\">sluice lab: %s</tspan>  %s</text>\n",
                        kLeft, WorkloadName(workload), Escape(WorkloadDescription(workload)));
  absl::StrAppendFormat(
      &svg, "<text x=\"%d\" y=\"42\">%s</text>\n", kLeft,
      Escape(absl::StrCat("limit ", config.limit.ToString(), "; provider: continuous token bucket ",
                          config.limit.ToString(), ", capacity ", limit, "; ", config.clients,
                          " clients, seed ", config.seed, "; waits at most ",
                          absl::FormatDuration(config.max_wait))));
  absl::StrAppendFormat(
      &svg,
      "<rect x=\"%d\" y=\"52\" width=\"12\" height=\"10\" fill=\"#9aa5b1\"/>"
      "<text x=\"%d\" y=\"61\">admitted per %s</text>"
      "<line x1=\"%d\" y1=\"57\" x2=\"%d\" y2=\"57\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
      "<text x=\"%d\" y=\"61\">admitted in the last %s</text>"
      "<line x1=\"%d\" y1=\"57\" x2=\"%d\" y2=\"57\" stroke=\"#d62728\" stroke-dasharray=\"5,3\"/>"
      "<text x=\"%d\" y=\"61\">the limit, %d per %s</text>\n",
      kLeft, kLeft + 16, absl::FormatDuration(config.bin), kLeft + 190, kLeft + 214, kLeft + 220,
      period, kLeft + 420, kLeft + 444, kLeft + 450, limit, period);

  for (size_t i = 0; i < results.size(); ++i) {
    const LabResult& r = results[i];
    const Metrics& m = r.metrics;
    const int y0 = kTop + static_cast<int>(i) * (kPanel + kGap) + kGap - 8;
    auto y_of = [&](double v) { return y0 + kPanel - kPanel * v / y_max; };
    absl::StrAppendFormat(
        &svg, "<text x=\"%d\" y=\"%d\"><tspan font-weight=\"bold\">%s</tspan>  %s</text>\n", kLeft,
        y0 - 6, Escape(NameOf(r)),
        Escape(absl::StrFormat(
            "most in any %s: %d (%.2fx the limit); provider 429s: %d; admitted %d of %d; "
            "wait p99 %s",
            period, m.max_in_window, m.overshoot, m.provider_429s, m.admitted, m.offered,
            Seconds(m.wait_p99_ns))));
    absl::StrAppendFormat(&svg,
                          "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
                          "stroke=\"#ccc\"/>\n",
                          kLeft, y0, plot_width, kPanel);
    // The bars as one path, so that a long run stays a small file.
    const double bar = std::max(1.0, plot_width * bin / end);
    std::string bars;
    for (size_t k = 0; k < r.per_bin.size(); ++k) {
      if (r.per_bin[k] == 0) continue;
      absl::StrAppendFormat(&bars, "M%.1f %dV%.1fh%.1fV%dZ", x_of(static_cast<double>(k) * bin),
                            y0 + kPanel, y_of(static_cast<double>(r.per_bin[k])), bar, y0 + kPanel);
    }
    if (!bars.empty()) absl::StrAppendFormat(&svg, "<path d=\"%s\" fill=\"#9aa5b1\"/>\n", bars);
    // The trailing count, leaving out points inside a flat stretch.
    std::string points;
    for (size_t k = 0; k < r.trailing.size(); ++k) {
      const bool flat = k > 0 && k + 1 < r.trailing.size() && r.trailing[k - 1] == r.trailing[k] &&
                        r.trailing[k + 1] == r.trailing[k];
      if (flat) continue;
      absl::StrAppendFormat(&points, "%s%.1f,%.1f", points.empty() ? "" : " ",
                            x_of(std::min(end, static_cast<double>(k + 1) * bin)),
                            y_of(static_cast<double>(r.trailing[k])));
    }
    absl::StrAppendFormat(&svg,
                          "<polyline points=\"%s\" fill=\"none\" stroke=\"#1f77b4\" "
                          "stroke-width=\"1.5\"/>\n",
                          points);
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#d62728\" "
                          "stroke-dasharray=\"5,3\"/>\n",
                          kLeft, y_of(static_cast<double>(limit)), kLeft + plot_width,
                          y_of(static_cast<double>(limit)));
    absl::StrAppendFormat(&svg,
                          "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%d</text>"
                          "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">0</text>\n",
                          kLeft - 4, y_of(static_cast<double>(limit)) + 4, limit, kLeft - 4,
                          y0 + kPanel);
  }
  // The time axis, ticked every period (or every tenth of the run).
  const double tick = std::max(static_cast<double>(Nanos(config.limit.period())), end / 10);
  const int axis_y = height - kBottom + 4;
  for (double t = 0; t <= end + 1; t += tick) {
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#888\"/>"
                          "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
                          x_of(t), axis_y - 8, x_of(t), axis_y - 2, x_of(t), axis_y + 12,
                          absl::FormatDuration(absl::Nanoseconds(t)));
  }
  absl::StrAppendFormat(&svg,
                        "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">simulated time</text>\n",
                        kLeft + plot_width / 2, axis_y + 30);
  svg += "</svg>\n";
  return svg;
}

}  // namespace sluice::lab
