// `sluice lab [WORKLOAD...]`: the algorithm lab (tools/lab/lab.h) on the
// command line: a table, or --json, and SVG plots with --lab-plot-dir.

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "sluice/lab/algorithms.h"
#include "sluice/rate.h"
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

namespace sluice {
namespace {

absl::StatusOr<std::vector<Algorithm>> AlgorithmsFromFlag() {
  const std::string text = absl::GetFlag(FLAGS_lab_algorithms);
  if (text == "all")
    return std::vector<Algorithm>(std::begin(kAllAlgorithms), std::end(kAllAlgorithms));
  std::vector<Algorithm> algorithms;
  for (absl::string_view name : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    absl::StatusOr<Algorithm> a = ParseAlgorithm(name);
    if (!a.ok()) return a.status();
    algorithms.push_back(*a);
  }
  if (algorithms.empty()) return absl::InvalidArgumentError("--lab-algorithms names none");
  return algorithms;
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

int RunLab(const Command& cmd) {
  lab::LabConfig config;
  absl::StatusOr<Rate> rate = Rate::Parse(absl::GetFlag(FLAGS_lab_rate));
  if (!rate.ok())
    return UsageError(*cmd.verb, absl::StrCat("--lab-rate: ", rate.status().message()));
  config.limit = *rate;
  config.burst = absl::GetFlag(FLAGS_lab_burst);
  config.duration = absl::GetFlag(FLAGS_lab_duration);
  config.clients = absl::GetFlag(FLAGS_lab_clients);
  config.seed = absl::GetFlag(FLAGS_seed);
  config.max_wait = absl::GetFlag(FLAGS_lab_max_wait);
  config.latency = absl::GetFlag(FLAGS_lab_latency);
  if (absl::Status s = lab::ValidateLabConfig(config); !s.ok()) {
    return UsageError(*cmd.verb, s.message());
  }
  absl::StatusOr<std::vector<Algorithm>> algorithms = AlgorithmsFromFlag();
  if (!algorithms.ok()) return UsageError(*cmd.verb, algorithms.status().message());
  std::vector<lab::Workload> workloads;
  for (const std::string& name : cmd.args) {
    absl::StatusOr<lab::Workload> w = lab::ParseWorkload(name);
    if (!w.ok()) return UsageError(*cmd.verb, w.status().message());
    workloads.push_back(*w);
  }
  if (workloads.empty())
    workloads.assign(std::begin(lab::kAllWorkloads), std::end(lab::kAllWorkloads));

  absl::StatusOr<std::vector<lab::LabResult>> results = lab::RunLab(config, workloads, *algorithms);
  if (!results.ok()) return UsageError(*cmd.verb, results.status().message());
  std::vector<std::string> plots;
  if (const std::string dir = absl::GetFlag(FLAGS_lab_plot_dir); !dir.empty()) {
    absl::StatusOr<std::vector<std::string>> written = WritePlots(dir, config, workloads, *results);
    if (!written.ok()) return Fail(cmd, written.status());
    plots = *written;
  }

  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::ordered_json doc = lab::ToJson(config, *results);
    doc["plots"] = plots;
    absl::FPrintF(stdout, "%s\n", doc.dump(2));
    return kExitOk;
  }
  absl::FPrintF(stdout,
                "limit %s; token bucket burst %d; %s of simulated time per workload, %d clients, "
                "seed %d;\na request waits at most %s; the provider enforces a continuous token "
                "bucket of %s, capacity %d.\n\n",
                config.limit.ToString(), config.burst != 0 ? config.burst : config.limit.permits(),
                absl::FormatDuration(config.duration), config.clients, config.seed,
                absl::FormatDuration(config.max_wait), config.limit.ToString(),
                config.limit.permits());
  PrintTable(lab::SummaryRows(*results));
  for (const std::string& path : plots) absl::FPrintF(stdout, "\nplot: %s", path);
  if (!plots.empty()) absl::FPrintF(stdout, "\n");
  return kExitOk;
}

constexpr absl::string_view kLabFlags[] = {
    "lab_rate",     "lab_burst",   "lab_algorithms", "lab_duration", "lab_clients",
    "lab_max_wait", "lab_latency", "lab_plot_dir",   "seed",         "json"};

const Verb kLabVerb = {
    .order = 90,
    .name = "lab",
    .usage =
        "lab [WORKLOAD...] [--lab-rate N/UNIT] [--lab-burst N] [--lab-algorithms A,B,...] "
        "[--lab-duration D] [--lab-clients N] [--lab-max-wait D] [--lab-latency D] [--seed N] "
        "[--lab-plot-dir DIR] [--json]",
    .summary = "compare throttle algorithms on simulated traffic",
    .description =
        "Runs each WORKLOAD (steady, poisson, bursty, launch-spike, boundary; default all)\n"
        "through each algorithm on simulated time, seeded, and prints per pair: requests\n"
        "offered, admitted and unserved; the 429s a provider enforcing a continuous token\n"
        "bucket at the limit would have answered; the most admitted in any one period and\n"
        "its ratio to the limit (overshoot); utilization (admitted over what the limit\n"
        "allows); p50 and p99 waits; Jain's fairness across clients. --lab-plot-dir writes\n"
        "WORKLOAD.svg pictures of the admitted rate over time. Same seed, same numbers.",
    .flags = kLabFlags,
    .required = {},
    .args = {},
    .run = RunLab,
    .more_args = true,
};
SLUICE_VERB(kLabVerb);

}  // namespace
}  // namespace sluice
