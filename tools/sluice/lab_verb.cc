// `sluice lab [WORKLOAD...]`: the algorithm lab (tools/lab/lab.h) on the
// command line: a table, or --json, and SVG plots with --lab-plot-dir.
// `sluice lab --trace FILE`: the same on arrivals replayed from a file
// (sluice/lab/trace.h) instead of the generated workloads.
// `sluice lab --fleet`: the fleet lab (tools/lab/fleet.h), hosts leasing
// permits from one Redis bucket, a table or --json.

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "sluice/lab/algorithms.h"
#include "sluice/lab/trace.h"
#include "sluice/rate.h"
#include "tools/lab/fleet.h"
#include "tools/lab/lab.h"
#include "tools/sluice/cli.h"

ABSL_FLAG(std::string, lab_rate, "1000/min", "the limit every algorithm enforces, as N/UNIT");
ABSL_FLAG(uint64_t, lab_burst, 0, "the token bucket's capacity (0: the limit's N)");
ABSL_FLAG(std::string, lab_algorithms, "all",
          "comma-separated algorithms to compare: token-bucket, pacer, fixed-window, "
          "sliding-log, sliding-window, concurrency, adaptive, or all");
ABSL_FLAG(absl::Duration, lab_duration, absl::Minutes(10), "simulated time each workload runs");
ABSL_FLAG(uint32_t, lab_clients, 8, "clients the workload's requests are spread over");
ABSL_FLAG(absl::Duration, lab_max_wait, absl::Seconds(30),
          "longest a request waits for admission before it gives up");
ABSL_FLAG(absl::Duration, lab_latency, absl::Seconds(2),
          "mean time an admitted call is in flight (uniform from half to 1.5x)");
ABSL_FLAG(std::string, lab_plot_dir, "",
          "write one SVG per workload (WORKLOAD.svg) into this directory, created if missing");
ABSL_FLAG(std::string, trace, "",
          "replay the arrivals of this CSV (t,permits[,client]) or JSONL file instead of the "
          "generated workloads");
ABSL_FLAG(bool, fleet, false,
          "simulate hosts leasing permits from one Redis bucket instead of comparing algorithms");
ABSL_FLAG(std::string, fleet_hosts, "10,100,1000", "comma-separated fleet sizes to simulate");
ABSL_FLAG(absl::Duration, fleet_rtt, absl::Milliseconds(1), "round trip from a host to Redis");
ABSL_FLAG(std::string, fleet_workloads, "all",
          "comma-separated fleet workloads: steady, bursty, skewed, crash, or all");
ABSL_FLAG(double, fleet_load, 1.2, "requests offered by the whole fleet, over the rate");
ABSL_FLAG(absl::Duration, fleet_idle_return, absl::Seconds(1),
          "a host whose pool has had no admit this long returns it to Redis");
ABSL_FLAG(bool, fleet_cap_outstanding, true,
          "Redis keeps its bucket below the capacity minus the permits out in pools (false: "
          "the plain protocol, which can admit past C + R W)");

namespace sluice {
namespace {

// The comma-separated names of `text` parsed by `parse`, or every one of
// `all` for "all". InvalidArgument naming `flag` when it names none.
template <typename T, typename Parse>
absl::StatusOr<std::vector<T>> ListFromFlag(const std::string& text, absl::Span<const T> all,
                                            Parse parse, absl::string_view flag) {
  if (text == "all") return std::vector<T>(all.begin(), all.end());
  std::vector<T> list;
  for (absl::string_view name : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    absl::StatusOr<T> item = parse(name);
    if (!item.ok()) return item.status();
    list.push_back(*item);
  }
  if (list.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, " names none"));
  return list;
}

absl::StatusOr<std::vector<Algorithm>> AlgorithmsFromFlag() {
  return ListFromFlag<Algorithm>(absl::GetFlag(FLAGS_lab_algorithms), kAllAlgorithms,
                                 ParseAlgorithm, "--lab-algorithms");
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return absl::UnavailableError(absl::StrCat(path, ": ", std::strerror(errno)));
  const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const int err = errno;
  if (std::fclose(f) != 0 || !written) {
    return absl::UnavailableError(absl::StrCat("writing ", path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

// Writes WORKLOAD.svg for each workload into `dir`; returns the paths.
absl::StatusOr<std::vector<std::string>> WritePlots(const std::string& dir,
                                                    const lab::LabConfig& config,
                                                    const std::vector<lab::Workload>& workloads,
                                                    const std::vector<lab::LabResult>& results) {
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::UnavailableError(absl::StrCat("creating ", dir, ": ", std::strerror(errno)));
  }
  std::vector<std::string> paths;
  for (lab::Workload w : workloads) {
    std::vector<lab::LabResult> mine;
    for (const lab::LabResult& r : results) {
      if (r.workload == w) mine.push_back(r);
    }
    const std::string path = absl::StrCat(dir, "/", lab::WorkloadName(w), ".svg");
    if (absl::Status s = WriteFile(path, lab::RenderSvg(w, config, mine)); !s.ok()) return s;
    paths.push_back(path);
  }
  return paths;
}

absl::StatusOr<std::vector<uint32_t>> FleetHostsFromFlag() {
  std::vector<uint32_t> hosts;
  for (absl::string_view text :
       absl::StrSplit(absl::GetFlag(FLAGS_fleet_hosts), ',', absl::SkipWhitespace())) {
    uint32_t n = 0;
    if (!absl::SimpleAtoi(text, &n) || n < 1 || n > lab::kMaxFleetHosts) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--fleet-hosts: \"", text, "\" is not a count of 1 .. ", lab::kMaxFleetHosts));
    }
    hosts.push_back(n);
  }
  if (hosts.empty()) return absl::InvalidArgumentError("--fleet-hosts names none");
  return hosts;
}

absl::StatusOr<std::vector<lab::FleetWorkload>> FleetWorkloadsFromFlag() {
  return ListFromFlag<lab::FleetWorkload>(absl::GetFlag(FLAGS_fleet_workloads),
                                          lab::kAllFleetWorkloads, lab::ParseFleetWorkload,
                                          "--fleet-workloads");
}

// The fleet's config: the lab's flags where given, else the fleet's own
// defaults (100,000/s, six seconds of it as capacity, a minute, 1 s waits).
absl::StatusOr<lab::FleetConfig> FleetConfigFromFlags(const Command& cmd) {
  lab::FleetConfig config;
  if (cmd.Given("lab_rate")) {
    absl::StatusOr<Rate> rate = Rate::Parse(absl::GetFlag(FLAGS_lab_rate));
    if (!rate.ok())
      return absl::InvalidArgumentError(absl::StrCat("--lab-rate: ", rate.status().message()));
    config.limit = *rate;
  }
  config.capacity = absl::GetFlag(FLAGS_lab_burst);
  if (config.capacity == 0) {
    config.capacity =
        static_cast<uint64_t>(static_cast<double>(config.limit.permits()) *
                              absl::FDivDuration(absl::Seconds(6), config.limit.period()));
  }
  if (cmd.Given("lab_duration")) config.duration = absl::GetFlag(FLAGS_lab_duration);
  if (cmd.Given("lab_max_wait")) config.max_wait = absl::GetFlag(FLAGS_lab_max_wait);
  config.round_trip = absl::GetFlag(FLAGS_fleet_rtt);
  config.load = absl::GetFlag(FLAGS_fleet_load);
  config.idle_return = absl::GetFlag(FLAGS_fleet_idle_return);
  config.cap_outstanding = absl::GetFlag(FLAGS_fleet_cap_outstanding);
  config.seed = absl::GetFlag(FLAGS_seed);
  if (absl::Status s = lab::ValidateFleetConfig(config); !s.ok()) return s;
  return config;
}

int RunFleet(const Command& cmd) {
  if (!cmd.args.empty()) {
    return UsageError(*cmd.verb, "--fleet takes its workloads from --fleet-workloads");
  }
  absl::StatusOr<lab::FleetConfig> config = FleetConfigFromFlags(cmd);
  if (!config.ok()) return UsageError(*cmd.verb, config.status().message());
  absl::StatusOr<std::vector<uint32_t>> hosts = FleetHostsFromFlag();
  if (!hosts.ok()) return UsageError(*cmd.verb, hosts.status().message());
  absl::StatusOr<std::vector<lab::FleetWorkload>> workloads = FleetWorkloadsFromFlag();
  if (!workloads.ok()) return UsageError(*cmd.verb, workloads.status().message());
  absl::StatusOr<std::vector<lab::FleetResult>> results =
      lab::RunFleetLab(*config, *hosts, *workloads);
  if (!results.ok()) return UsageError(*cmd.verb, results.status().message());
  if (absl::GetFlag(FLAGS_json)) {
    absl::FPrintF(stdout, "%s\n", lab::FleetToJson(*config, *results).dump(2));
    return kExitOk;
  }
  absl::FPrintF(stdout,
                "one Redis bucket of %s, capacity %d; round trip %s; the fleet offers %.2fx the "
                "rate;\n%s of simulated time per run, a request waits at most %s, idle pools go "
                "back after %s; seed %d.\n\n",
                config->limit.ToString(), config->capacity,
                absl::FormatDuration(config->round_trip), config->load,
                absl::FormatDuration(config->duration), absl::FormatDuration(config->max_wait),
                absl::FormatDuration(config->idle_return), config->seed);
  PrintTable(lab::FleetRows(*results));
  return kExitOk;
}

absl::StatusOr<lab::LabConfig> LabConfigFromFlags() {
  lab::LabConfig config;
  absl::StatusOr<Rate> rate = Rate::Parse(absl::GetFlag(FLAGS_lab_rate));
  if (!rate.ok())
    return absl::InvalidArgumentError(absl::StrCat("--lab-rate: ", rate.status().message()));
  config.limit = *rate;
  config.burst = absl::GetFlag(FLAGS_lab_burst);
  config.duration = absl::GetFlag(FLAGS_lab_duration);
  config.clients = absl::GetFlag(FLAGS_lab_clients);
  config.seed = absl::GetFlag(FLAGS_seed);
  config.max_wait = absl::GetFlag(FLAGS_lab_max_wait);
  config.latency = absl::GetFlag(FLAGS_lab_latency);
  return config;
}

// The results as a table, or --json, with the plots --lab-plot-dir asks for.
// `source` says what was run and where the arrivals came from, in the
// table's heading.
int PrintLab(const Command& cmd, const lab::LabConfig& config,
             const std::vector<lab::Workload>& workloads,
             const std::vector<lab::LabResult>& results, absl::string_view source) {
  std::vector<std::string> plots;
  if (const std::string dir = absl::GetFlag(FLAGS_lab_plot_dir); !dir.empty()) {
    absl::StatusOr<std::vector<std::string>> written = WritePlots(dir, config, workloads, results);
    if (!written.ok()) return Fail(cmd, written.status());
    plots = *written;
  }
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::ordered_json doc = lab::ToJson(config, results);
    if (!absl::GetFlag(FLAGS_trace).empty()) doc["config"]["trace"] = absl::GetFlag(FLAGS_trace);
    doc["plots"] = plots;
    absl::FPrintF(stdout, "%s\n", doc.dump(2));
    return kExitOk;
  }
  absl::FPrintF(stdout,
                "limit %s; token bucket burst %d; %s of simulated time %s, seed %d;\na request "
                "waits at most %s; the provider enforces a continuous token "
                "bucket of %s, capacity %d.\n\n",
                config.limit.ToString(), config.burst != 0 ? config.burst : config.limit.permits(),
                absl::FormatDuration(config.duration), source, config.seed,
                absl::FormatDuration(config.max_wait), config.limit.ToString(),
                config.limit.permits());
  PrintTable(lab::SummaryRows(results));
  for (const std::string& path : plots) absl::FPrintF(stdout, "\nplot: %s", path);
  if (!plots.empty()) absl::FPrintF(stdout, "\n");
  return kExitOk;
}

// `sluice lab --trace FILE`: every algorithm on the file's arrivals.
int RunTrace(const Command& cmd, const lab::LabConfig& flags,
             const std::vector<Algorithm>& algorithms) {
  if (!cmd.args.empty()) {
    return UsageError(*cmd.verb, "--trace replays its file in place of the workloads; name none");
  }
  const std::string path = absl::GetFlag(FLAGS_trace);
  absl::StatusOr<TrafficTrace> trace = ReadTraceFile(path);
  if (!trace.ok()) return Fail(cmd, trace.status());
  lab::LabConfig config;
  absl::StatusOr<std::vector<lab::LabResult>> results =
      lab::RunLabOnTrace(flags, *trace, lab::BuiltinLimiters(algorithms),
                         /*keep_duration=*/cmd.Given("lab_duration"), &config);
  if (!results.ok()) return UsageError(*cmd.verb, results.status().message());
  const std::string source = absl::StrFormat("for %d arrivals from %s, %d clients",
                                             trace->arrivals.size(), path, config.clients);
  return PrintLab(cmd, config, {lab::Workload::kTrace}, *results, source);
}

int RunLab(const Command& cmd) {
  if (absl::GetFlag(FLAGS_fleet)) return RunFleet(cmd);
  absl::StatusOr<lab::LabConfig> config = LabConfigFromFlags();
  if (!config.ok()) return UsageError(*cmd.verb, config.status().message());
  const bool trace = !absl::GetFlag(FLAGS_trace).empty();
  // A trace's run is validated once its duration and clients are known.
  if (absl::Status s = trace ? absl::OkStatus() : lab::ValidateLabConfig(*config); !s.ok()) {
    return UsageError(*cmd.verb, s.message());
  }
  absl::StatusOr<std::vector<Algorithm>> algorithms = AlgorithmsFromFlag();
  if (!algorithms.ok()) return UsageError(*cmd.verb, algorithms.status().message());
  if (trace) return RunTrace(cmd, *config, *algorithms);
  std::vector<lab::Workload> workloads;
  for (const std::string& name : cmd.args) {
    absl::StatusOr<lab::Workload> w = lab::ParseWorkload(name);
    if (!w.ok()) return UsageError(*cmd.verb, w.status().message());
    workloads.push_back(*w);
  }
  if (workloads.empty())
    workloads.assign(std::begin(lab::kAllWorkloads), std::end(lab::kAllWorkloads));

  absl::StatusOr<std::vector<lab::LabResult>> results =
      lab::RunLab(*config, workloads, *algorithms);
  if (!results.ok()) return UsageError(*cmd.verb, results.status().message());
  return PrintLab(cmd, *config, workloads, *results,
                  absl::StrCat("per workload, ", config->clients, " clients"));
}

constexpr absl::string_view kLabFlags[] = {"lab_rate",
                                           "lab_burst",
                                           "lab_algorithms",
                                           "lab_duration",
                                           "lab_clients",
                                           "lab_max_wait",
                                           "lab_latency",
                                           "lab_plot_dir",
                                           "trace",
                                           "seed",
                                           "json",
                                           "fleet",
                                           "fleet_hosts",
                                           "fleet_rtt",
                                           "fleet_workloads",
                                           "fleet_load",
                                           "fleet_idle_return",
                                           "fleet_cap_outstanding"};

const Verb kLabVerb = {
    .order = 90,
    .name = "lab",
    .usage =
        "lab [WORKLOAD...] [--lab-rate N/UNIT] [--lab-burst N] [--lab-algorithms A,B,...] "
        "[--lab-duration D] [--lab-clients N] [--lab-max-wait D] [--lab-latency D] [--seed N] "
        "[--lab-plot-dir DIR] [--json]\n"
        "       lab --trace FILE [--lab-rate N/UNIT] [--lab-algorithms A,B,...] [...] [--json]\n"
        "       lab --fleet [--fleet-hosts N,N,...] [--fleet-rtt D] [--fleet-workloads W,W,...] "
        "[--fleet-load X] [--fleet-idle-return D] [--fleet-cap-outstanding=false] [--lab-rate "
        "N/UNIT] [--lab-burst N] "
        "[--lab-duration D] [--lab-max-wait D] [--seed N] [--json]",
    .summary = "compare throttle algorithms on simulated traffic",
    .description =
        "Runs each WORKLOAD (steady, poisson, bursty, launch-spike, boundary; default all)\n"
        "through each algorithm on simulated time, seeded, and prints per pair: requests\n"
        "offered, admitted and unserved; the 429s a provider enforcing a continuous token\n"
        "bucket at the limit would have answered; the most admitted in any one period and\n"
        "its ratio to the limit (overshoot); utilization (admitted over what the limit\n"
        "allows); p50 and p99 waits; Jain's fairness across clients. --lab-plot-dir writes\n"
        "WORKLOAD.svg pictures of the admitted rate over time. Same seed, same numbers.\n"
        "\n"
        "--trace FILE replays real traffic instead: one arrival a line, CSV t,permits[,client]\n"
        "(an optional header line; # comments) or JSONL {\"t\":..,\"permits\":..,\"client\":..};\n"
        "t is integer ns from the start or an RFC 3339 time, in order. The run lasts until\n"
        "--lab-max-wait after the last arrival unless --lab-duration is given; the clients\n"
        "are the trace's (--lab-clients is not used); the plot is trace.svg.\n"
        "\n"
        "--fleet simulates instead H hosts (each of --fleet-hosts) leasing permits from one\n"
        "Redis bucket (--lab-rate, default 100000/s; capacity --lab-burst, default 6 s of the\n"
        "rate) with the lease sizing rule, per workload (steady, bursty, skewed, crash), for\n"
        "--lab-duration (default 1m; a request waits at most --lab-max-wait, default 1s),\n"
        "and prints: utilization (admitted over C + R t), over-admissions (windows of 10 ms,\n"
        "1 s, 10 s and the run above C + R W: must be 0), permits leased but unused at the\n"
        "end and lost with crashed hosts, the most pooled at once, fairness, Redis calls per\n"
        "second and per 1,000 admits, and waits. Redis keeps its bucket below C minus the\n"
        "permits out in pools unless --fleet-cap-outstanding=false.",
    .flags = kLabFlags,
    .required = {},
    .args = {},
    .run = RunLab,
    .more_args = true,
};
SLUICE_VERB(kLabVerb);

}  // namespace
}  // namespace sluice
