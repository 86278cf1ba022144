// sluice batch INPUT.jsonl --out RESULTS.jsonl: the throttled batch runner.
//
// The flags, the throttle a run goes through, progress on stderr and the
// summary on stdout. The runner itself — input lines of both shapes, the
// crash-safe results file, resume, the tally — is the library's
// (sluice/batch.h): see there for the input and result line formats.
//
// It calls the real API unless told --simulate, which runs the simulated
// provider in process (and marks every result line and the summary so). A
// problem of the whole batch -- the configuration cannot route its requests
// (a budget without a price for the model) -- stops it before anything is
// sent, with exit status 78 (EX_CONFIG), and marks no line done.

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "sluice/batch.h"
#include "sluice/client.h"
#include "sluice/clock.h"
#include "sluice/effective_limits.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/segment.h"
#include "sluice/store.h"
#include "tools/fake_provider/fake_provider.h"
#include "tools/sluice/cli.h"

ABSL_FLAG(std::string, out, "",
          "the results file (JSONL), one line per input line; an existing one is resumed");
ABSL_FLAG(int, max_in_flight, 64, "requests sent or waiting for permits at once (batch)");
ABSL_FLAG(absl::Duration, progress_interval, absl::Seconds(10),
          "how often to print a progress line when stderr is not a terminal (batch)");
ABSL_FLAG(bool, simulate, false,
          "run against the simulated provider in this process, not the real API (batch)");
ABSL_FLAG(bool, retry_failed, false,
          "on resume, send again the lines whose last result is \"failed\" (batch)");

namespace sluice {
namespace {

using Json = nlohmann::ordered_json;

// Progress and summary --------------------------------------------------------------

std::string ShortDuration(double seconds) {
  return absl::FormatDuration(absl::Seconds(std::round(std::max(0.0, seconds))));
}

std::string ProgressText(const batch::Progress& p, int64_t start_ns, bool bar) {
  const size_t done = p.done();
  const double elapsed = static_cast<double>(Clock::MonotonicNanos() - start_ns) / 1e9;
  const double rate = elapsed > 0 ? static_cast<double>(p.finished()) / elapsed : 0;
  const std::string eta =
      rate > 0 ? ShortDuration(static_cast<double>(p.this_run - p.finished()) / rate) : "?";
  const double fraction =
      p.total > 0 ? static_cast<double>(done) / static_cast<double>(p.total) : 1;
  std::string text;
  if (bar) {
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(fraction * kWidth);
    text = absl::StrCat("[", std::string(filled, '#'), std::string(kWidth - filled, '.'), "] ");
  }
  absl::StrAppendFormat(&text, "%d/%d done (%.0f%%), %.1f req/s, %d 429s, %d failed, ETA %s", done,
                        p.total, 100 * fraction, rate, p.calls.rate_limited,
                        p.calls.failed() + p.invalid, eta);
  return text;
}

// Prints progress on stderr (stdout is the summary's): redrawn in place on a
// terminal, a plain line every --progress-interval otherwise.
class ProgressDisplay {
 public:
  explicit ProgressDisplay(absl::Duration interval)
      : tty_(isatty(STDERR_FILENO) == 1), interval_(interval), start_ns_(Clock::MonotonicNanos()) {}
  void Update(const batch::Progress& p) {
    last_ = &p;
    const int64_t now = Clock::MonotonicNanos();
    const int64_t every =
        tty_ ? 100'000'000 : std::max<int64_t>(1, absl::ToInt64Nanoseconds(interval_));
    if (now - last_ns_ < every) return;
    last_ns_ = now;
    Print(p);
  }
  void Finish() {
    if (tty_ && last_ != nullptr) {
      Print(*last_);
      absl::FPrintF(stderr, "\n");
    }
  }

 private:
  void Print(const batch::Progress& p) {
    if (tty_) {
      absl::FPrintF(stderr, "\r\033[K%s", ProgressText(p, start_ns_, true));
    } else {
      absl::FPrintF(stderr, "sluice batch: %s\n", ProgressText(p, start_ns_, false));
    }
  }
  const bool tty_;
  const absl::Duration interval_;
  const int64_t start_ns_;
  int64_t last_ns_ = 0;
  const batch::Progress* last_ = nullptr;  // the runner's, valid until Run returns
};

// The tightest requests-per-minute bucket on the batch's route (scope path
// and provider); limit 0 when none applies.
struct RpmLimit {
  uint64_t limit = 0;
  uint64_t burst = 0;
};

RpmLimit ConfiguredRpm(const LimitsConfig& limits, Provider provider, const std::string& model,
                       const std::string& scope) {
  const EffectiveLimits effective(limits);
  const RouteLimits route = effective.Route(scope, ProviderName(provider), model);
  // The provider's class first, so that of two equal limits its burst is the
  // one reported.
  std::vector<const OwnerLimits*> owners = route.owners;
  std::stable_partition(owners.begin(), owners.end(),
                        [&](const OwnerLimits* o) { return o == route.model_class; });
  RpmLimit rpm;
  for (const OwnerLimits* owner : owners) {
    for (const BucketSpec& spec : owner->buckets) {
      if (spec.kind != LimitKind::kRequestsPerMinute) continue;
      if (rpm.limit == 0 || spec.limit < rpm.limit) rpm = {spec.limit, spec.config.capacity};
    }
  }
  return rpm;
}

Json SummaryJson(const batch::Progress& p, bool simulated, RpmLimit configured, double time_scale) {
  const double elapsed_s = absl::ToDoubleSeconds(p.sent_elapsed);
  const double minutes = elapsed_s * time_scale / 60;
  const double rpm = minutes > 0 ? static_cast<double>(p.calls.finished()) / minutes : 0;
  Json failed = Json::object();
  for (const auto& [name, count] : p.calls.failed_by_class) failed[name] = count;
  const double allowed = configured.limit > 0
                             ? std::floor(static_cast<double>(configured.burst) +
                                          static_cast<double>(configured.limit) * minutes)
                             : 0.0;
  return {
      {"requests", p.total},
      {"simulated", simulated},
      {"already_done", p.already_done},
      {"this_run", p.this_run},
      {"retried_failed", p.retried},
      {"succeeded", p.calls.succeeded},
      {"failed", p.calls.failed()},
      {"failed_by_class", failed},
      {"invalid", p.invalid},
      {"rate_limit_errors", p.calls.rate_limited},
      {"retries", p.calls.retries},
      {"elapsed_seconds", elapsed_s},
      {"throughput_rpm", rpm},
      {"configured_rpm", configured.limit},
      {"configured_burst", configured.burst},
      {"throughput_ratio",
       configured.limit > 0 ? rpm / static_cast<double>(configured.limit) : 0.0},
      // What the limit let through in the elapsed time (its burst, then its
      // rate), and the share of it the batch used.
      {"allowed", allowed},
      {"limit_used", allowed > 0 ? static_cast<double>(p.calls.attempts) / allowed : 0.0},
      {"throttle_wait_seconds", WaitPercentilesJson(p.calls.ThrottleWaitSeconds())},
  };
}

void PrintSummary(const Json& s, const std::string& input, const std::string& out) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back(
      {"requests",
       absl::StrFormat("%d (%d this run, %d done before, %d failed before and sent again)",
                       s["requests"].get<size_t>(), s["this_run"].get<size_t>(),
                       s["already_done"].get<size_t>(), s["retried_failed"].get<size_t>())});
  rows.push_back({"succeeded", absl::StrCat(s["succeeded"].get<size_t>())});
  std::string failed = absl::StrCat(s["failed"].get<size_t>());
  if (!s["failed_by_class"].empty()) {
    std::vector<std::string> parts;
    for (const auto& [name, count] : s["failed_by_class"].items()) {
      parts.push_back(absl::StrCat(name, " ", count.get<size_t>()));
    }
    absl::StrAppend(&failed, " (", absl::StrJoin(parts, ", "), ")");
  }
  rows.push_back({"failed", failed});
  rows.push_back({"invalid lines", absl::StrCat(s["invalid"].get<size_t>())});
  rows.push_back({"429s received", absl::StrCat(s["rate_limit_errors"].get<uint64_t>())});
  rows.push_back({"retries", absl::StrCat(s["retries"].get<uint64_t>())});
  rows.push_back({"elapsed", ShortDuration(s["elapsed_seconds"].get<double>())});
  std::string throughput = absl::StrFormat("%.0f requests/min", s["throughput_rpm"].get<double>());
  if (s["configured_rpm"].get<uint64_t>() > 0) {
    absl::StrAppendFormat(&throughput, "; the limit (%d/min, burst %d) allowed %.0f: %.0f%% used",
                          s["configured_rpm"].get<uint64_t>(),
                          s["configured_burst"].get<uint64_t>(), s["allowed"].get<double>(),
                          100 * s["limit_used"].get<double>());
  }
  rows.push_back({"throughput", throughput});
  const Json& w = s["throttle_wait_seconds"];
  rows.push_back(
      {"throttle wait",
       absl::StrFormat("p50 %.3fs  p90 %.3fs  p99 %.3fs  max %.3fs", w["p50"].get<double>(),
                       w["p90"].get<double>(), w["p99"].get<double>(), w["max"].get<double>())});
  absl::PrintF("sluice batch: %s -> %s%s\n", input, out,
               s["simulated"].get<bool>() ? " (SIMULATED provider, not the real API)" : "");
  PrintTable(rows);
}

// The verb ----------------------------------------------------------------------------

// What the flags ask for, checked.
struct BatchFlags {
  batch::RunnerOptions runner;
  double time_scale = 1.0;
  absl::Duration timeout;
};

// Reads the flags into `flags`: kExitOk, or the exit status of a usage error
// (reported).
int ReadFlags(const Command& cmd, BatchFlags* flags) {
  const Verb& verb = *cmd.verb;
  flags->runner.input = cmd.args[0];
  flags->runner.results = absl::GetFlag(FLAGS_out);
  if (flags->runner.results.empty()) return UsageError(verb, "--out: the results file is required");
  flags->runner.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  if (flags->runner.max_in_flight < 1)
    return UsageError(verb, "--max-in-flight must be at least 1");
  flags->time_scale = cmd.Given("time_scale") ? absl::GetFlag(FLAGS_time_scale) : 1.0;
  if (!(flags->time_scale > 0) || flags->time_scale > 1e6) {
    return UsageError(verb, "--time-scale must be in (0, 1e6]");
  }
  flags->timeout = absl::GetFlag(FLAGS_timeout);
  if (flags->timeout < absl::ZeroDuration()) {
    return UsageError(verb, "--timeout must not be negative");
  }
  if (flags->timeout == absl::ZeroDuration()) flags->timeout = absl::Hours(1);
  if (cmd.Given("provider")) {
    absl::StatusOr<Provider> parsed = ParseProvider(absl::GetFlag(FLAGS_provider));
    if (!parsed.ok()) {
      return UsageError(verb, absl::StrCat("--provider: ", parsed.status().message()));
    }
    flags->runner.provider = *parsed;
  }
  // The real API unless asked otherwise: a batch meant for it must never
  // quietly run against the simulator.
  flags->runner.simulated = absl::GetFlag(FLAGS_simulate);
  if (flags->runner.simulated && cmd.Given("base_url")) {
    return UsageError(verb, "--simulate and --base-url: give one (the simulator has its own URL)");
  }
  flags->runner.retry_failed = absl::GetFlag(FLAGS_retry_failed);
  return kExitOk;
}

// What a batch's requests go through: its limits, the simulated provider
// (--simulate), the store the buckets live in, the policy, and the client's
// options. Members are destroyed policy first, provider last.
struct Throttle {
  LimitsConfig limits;
  std::unique_ptr<FakeProvider> fake;
  std::unique_ptr<Segment> segment;
  std::unique_ptr<Store> store;
  std::unique_ptr<Store> fleet;  // over `store`, when the limits have a [cluster] table
  std::unique_ptr<Policy> policy;
  ClientOptions client;
};

absl::StatusOr<std::unique_ptr<Throttle>> OpenThrottle(const Command& cmd, const BatchFlags& flags,
                                                       Provider provider) {
  const bool simulated = flags.runner.simulated;
  auto t = std::make_unique<Throttle>();
  absl::StatusOr<LimitsConfig> limits =
      simulated && !cmd.Given("config")
          ? ParseLimitsConfig(DemoLimitsToml(), "demo-limits.toml (built in)")
          : LimitsFromFlags();
  if (!limits.ok()) return limits.status();
  t->limits = *std::move(limits);
  t->client.provider = provider;
  t->client.scope = absl::GetFlag(FLAGS_scope);
  t->client.throttle_timeout = flags.timeout;
  t->client.seed = absl::GetFlag(FLAGS_seed);
  t->client.provider_time_scale = flags.time_scale;
  // Its lines bring no keys: without the client's, stop before any line is
  // sent (and marked failed), not after.
  t->client.require_api_key = true;
  if (simulated) {
    FakeProviderOptions fake_options;
    fake_options.time_scale = flags.time_scale;
    fake_options.seed = absl::GetFlag(FLAGS_seed);
    absl::StatusOr<std::unique_ptr<FakeProvider>> started = FakeProvider::Start(fake_options);
    if (!started.ok()) return started.status();
    t->fake = *std::move(started);
    UseSimulatedProvider(*t->fake, fake_options, &t->client);
  } else {
    t->client.base_url = absl::GetFlag(FLAGS_base_url);
  }
  // The simulated provider lives in this process, so its limits are this
  // process's alone; a real provider's are shared through the segment with
  // every other process on the host.
  if (simulated) {
    t->store = NewLocalStore();
  } else {
    absl::StatusOr<std::unique_ptr<Segment>> opened = Segment::Open(absl::GetFlag(FLAGS_segment));
    if (!opened.ok()) return opened.status();
    t->segment = *std::move(opened);
    t->store = NewSegmentStore(t->segment.get());
  }
  // A fleet shares a real provider's limits; the simulated one is this
  // process's alone.
  Store* store = t->store.get();
  if (!simulated) {
    absl::StatusOr<Store*> s = StoreForLimits(t->limits, t->store.get(), &t->fleet);
    if (!s.ok()) return s.status();
    store = *s;
  }
  absl::StatusOr<std::unique_ptr<Policy>> policy =
      Policy::Create(TimeScaled(t->limits, flags.time_scale), store);
  if (!policy.ok()) return policy.status();
  t->policy = *std::move(policy);
  return t;
}

// The model of the first line still to send ("" when none is).
std::string FirstModel(const batch::Runner& runner) {
  for (const batch::InputLine& line : runner.input().lines()) {
    if (line.valid() && !runner.resume().IsDone(line.number)) {
      return runner.input().Body(line).value("model", "");
    }
  }
  return "";
}

int RunBatch(const Command& cmd) {
  BatchFlags flags;
  if (int code = ReadFlags(cmd, &flags); code != kExitOk) return code;
  // Read and check every line first (the total, the shape, the invalid
  // lines' messages), then the results file.
  absl::StatusOr<std::unique_ptr<batch::Runner>> runner = batch::Runner::Open(flags.runner);
  if (!runner.ok()) return Fail(cmd, runner.status());
  absl::StatusOr<std::unique_ptr<Throttle>> throttle =
      OpenThrottle(cmd, flags, (*runner)->input().provider());
  if (!throttle.ok()) return Fail(cmd, throttle.status());
  const Throttle& t = **throttle;
  if (absl::Status s = (*runner)->CheckRoutes(*t.policy, t.client.scope); !s.ok()) {
    return Report(*cmd.verb, kExitConfig,
                  absl::StrCat(s.message(), " (nothing was sent; no line is marked done)"));
  }
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(t.client, t.policy.get());
  if (!client.ok()) return Fail(cmd, client.status());
  if ((*runner)->journal().dropped_torn_line()) {
    absl::FPrintF(stderr, "sluice batch: %s: dropped a torn last line (a crash mid-write)\n",
                  flags.runner.results);
  }
  const RpmLimit configured =
      ConfiguredRpm(t.limits, (*runner)->input().provider(), FirstModel(**runner), t.client.scope);

  ProgressDisplay display(absl::GetFlag(FLAGS_progress_interval));
  batch::Callbacks callbacks;
  callbacks.on_progress = [&display](const batch::Progress& p) { display.Update(p); };
  absl::StatusOr<batch::Progress> progress = (*runner)->Run(**client, callbacks);
  display.Finish();
  if (!progress.ok()) return Fail(cmd, progress.status());

  const Json summary = SummaryJson(*progress, flags.runner.simulated, configured, flags.time_scale);
  if (absl::GetFlag(FLAGS_json)) {
    absl::PrintF("%s\n", summary.dump(2));
  } else {
    PrintSummary(summary, flags.runner.input, flags.runner.results);
  }
  // Every line has its result; say so in the status only when all succeeded.
  return progress->calls.failed() + progress->invalid == 0 ? kExitOk : kExitError;
}

constexpr absl::string_view kBatchFlags[] = {
    "out",     "config",     "provider", "base_url",      "scope",
    "segment", "timeout",    "json",     "max_in_flight", "progress_interval",
    "seed",    "time_scale", "simulate", "retry_failed"};
constexpr absl::string_view kBatchRequired[] = {"out"};
constexpr absl::string_view kBatchArgs[] = {"INPUT.jsonl"};

const Verb kBatchVerb = {
    .order = 55,
    .name = "batch",
    .usage =
        "batch INPUT.jsonl --out RESULTS.jsonl [--config FILE] [--provider anthropic|openai] "
        "[--base-url URL | --simulate] [--scope S] [--max-in-flight N] [--timeout D] "
        "[--retry-failed] [--json]",
    .summary = "run a JSONL file of requests through the throttle, resumably",
    .description =
        "Sends every request of INPUT.jsonl (OpenAI Batch lines {custom_id, method, url,\n"
        "body} or Anthropic Message Batches lines {custom_id, params}) through the limits\n"
        "of --config, with up to --max-in-flight at once, and appends one result line per\n"
        "input line to --out: custom_id, status, the response or a classified error,\n"
        "usage, attempts, 429s and time waited in the throttle. Killed at any moment and\n"
        "run again with the same arguments, it sends only the lines without a result\n"
        "(with --retry-failed, also those whose last result failed; a newer result line\n"
        "supersedes an older one). It calls the real API (--base-url, default the\n"
        "provider's public one; key from ANTHROPIC_API_KEY / OPENAI_API_KEY), sharing\n"
        "limits with every process on the host through --segment. --simulate runs the\n"
        "simulated provider in process instead, under the demo limits (or --config), and\n"
        "marks every result and the summary as simulated. --timeout bounds one attempt's\n"
        "wait in the throttle (default, 0: an hour). Exits 0 when every line succeeded,\n"
        "1 otherwise, 78 when the configuration cannot route the batch (nothing sent).",
    .flags = kBatchFlags,
    .required = kBatchRequired,
    .args = kBatchArgs,
    .run = RunBatch,
};
SLUICE_VERB(kBatchVerb);

}  // namespace
}  // namespace sluice
