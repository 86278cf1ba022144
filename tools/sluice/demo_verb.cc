// sluice demo: the launch day of the reference design, replayed.
//
// 1,200 requests a minute arrive (open loop, evenly spaced) at a provider that
// allows 1,000 a minute. The same arrivals run twice against a fresh simulated
// provider each time: once straight through, where every 429 is a failed
// answer to a customer, and once through sluice. Time is scaled (60 simulated
// minutes per real minute by default) on both sides: the provider's buckets
// and reset headers, and sluice's limits (TimeScaled), so the run is the
// launch day in seconds.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "sluice/batch_tally.h"
#include "sluice/client.h"
#include "sluice/clock.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/store.h"
#include "tools/fake_provider/fake_provider.h"
#include "tools/sluice/cli.h"

ABSL_FLAG(absl::Duration, duration, absl::Minutes(10),
          "how long the launch lasts, in simulated time (demo)");
ABSL_FLAG(uint64_t, offered_rpm, 1200, "requests per minute that arrive (demo)");
ABSL_FLAG(bool, print_config, false, "print the demo's built-in limits file and exit (demo)");

namespace sluice {
namespace {

// The limits sluice runs the demo under, unless --config names another file.
// examples/demo-limits.toml holds the same text (a test keeps them equal).
constexpr char kDemoLimits[] =
    R"(# The launch-day demo's limits (sluice demo): the Anthropic tier of the
# reference design, as the simulated provider enforces it by default.
#
# No headroom: sluice paces at the provider's own rate. Its bursts are 6 s of
# the rate (100 requests), where the provider's bucket holds a whole minute
# (1,000), so the provider always has room for what sluice lets through, and
# header feedback (on by default) clamps sluice down should anything else draw
# on the same key. The reference design's 0.8 leaves 20% of the limit unused.
headroom = 1.0

[providers.anthropic]
requests_per_minute = 1000
input_tokens_per_minute = 100000
output_tokens_per_minute = 100000
output_precharge = "max_tokens"

[scopes.global]
)";

}  // namespace

absl::string_view DemoLimitsToml() { return kDemoLimits; }

namespace {

constexpr char kModel[] = "claude-sonnet-4";
constexpr uint64_t kMaxTokens = 64;

// What customers ask on launch day; each request draws one.
constexpr const char* kPrompts[] = {
    "How do I reset my password?",
    "Where is my order? It was due yesterday.",
    "Can I change the delivery address after checkout?",
    "Summarize the new pricing tiers in two sentences.",
    "Is the launch discount applied automatically?",
    "Why was my card declined?",
    "What is your refund policy for annual plans?",
    "Translate 'thank you for your patience' into French.",
};

struct Scenario {
  double time_scale;
  uint64_t offered_rpm;
  absl::Duration duration;  // simulated
  uint64_t seed;
  LimitsConfig limits;
  std::string config_source;
  uint64_t provider_rpm;
};

struct RunReport {
  std::string name;
  uint64_t offered = 0;
  batch::Tally calls;              // waits in real time; reports scale them
  uint64_t rate_limit_errors = 0;  // 429s the provider sent
  double elapsed_minutes = 0;      // simulated, first arrival to last answer
  double goodput_rpm = 0;
  double goodput_ratio = 0;
};

absl::StatusOr<RunReport> RunOnce(const Scenario& sc, bool throttled) {
  FakeProviderOptions provider_options;
  provider_options.time_scale = sc.time_scale;
  provider_options.rpm = sc.provider_rpm;
  provider_options.seed = sc.seed;
  absl::StatusOr<std::unique_ptr<FakeProvider>> provider = FakeProvider::Start(provider_options);
  if (!provider.ok()) return provider.status();

  std::unique_ptr<Store> store;
  std::unique_ptr<Policy> policy;
  if (throttled) {
    store = NewLocalStore();
    absl::StatusOr<std::unique_ptr<Policy>> created =
        Policy::Create(TimeScaled(sc.limits, sc.time_scale), store.get());
    if (!created.ok()) return created.status();
    policy = *std::move(created);
  }
  ClientOptions options;
  options.provider = Provider::kAnthropic;
  UseSimulatedProvider(**provider, provider_options, &options);
  options.seed = sc.seed;
  // Waiting in the throttle is what sluice does instead of failing; an hour
  // of simulated time is more than any arrival waits here.
  options.throttle_timeout = absl::Hours(1) / sc.time_scale;
  // Straight through, an answer is the first attempt's: the 429 reaches the
  // customer (retrying would only draw more of them from a full provider).
  if (!throttled) options.retry.max_attempts = 1;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options, policy.get());
  if (!client.ok()) return client.status();

  const double minutes = absl::ToDoubleMinutes(sc.duration);
  const uint64_t n = static_cast<uint64_t>(static_cast<double>(sc.offered_rpm) * minutes);
  const double gap_ns = 60e9 / static_cast<double>(sc.offered_rpm) / sc.time_scale;
  // The arrivals are pulled into the client before the first is due.
  const int64_t t0 = Clock::MonotonicNanos() + 250'000'000;
  std::mt19937_64 rng(sc.seed);

  RunReport report;
  report.name = throttled ? "sluice" : "unthrottled";
  report.offered = n;
  int64_t last_done = t0;
  uint64_t pulled = 0;
  (*client)->Run(
      [&](CallRequest* request) {
        if (pulled == n) return false;
        *request = CallRequest::Simple(kModel, kPrompts[rng() % std::size(kPrompts)], kMaxTokens);
        request->not_before_ns = t0 + static_cast<int64_t>(static_cast<double>(pulled) * gap_ns);
        ++pulled;
        return true;
      },
      static_cast<int>(std::min<uint64_t>(n, 1'000'000)),
      [&](size_t, CallResult r) {
        last_done = std::max(last_done, Clock::MonotonicNanos());
        report.calls.Add(r);
      });
  report.rate_limit_errors = (*provider)->stats().totals.rate_limited;
  report.elapsed_minutes = static_cast<double>(last_done - t0) * sc.time_scale / 60e9;
  if (report.elapsed_minutes > 0) {
    report.goodput_rpm = static_cast<double>(report.calls.succeeded) / report.elapsed_minutes;
  }
  report.goodput_ratio = report.goodput_rpm / static_cast<double>(sc.provider_rpm);
  return report;
}

nlohmann::ordered_json RunJson(const RunReport& r, const Scenario& sc) {
  return {
      {"offered", r.offered},
      {"succeeded", r.calls.succeeded},
      {"failed", r.calls.failed()},
      {"failed_by_class", r.calls.failed_by_class},
      {"rate_limit_errors", r.rate_limit_errors},
      {"retries", r.calls.retries},
      {"elapsed_minutes", r.elapsed_minutes},
      {"offered_rpm", sc.offered_rpm},
      {"goodput_rpm", r.goodput_rpm},
      {"provider_rpm_limit", sc.provider_rpm},
      {"goodput_ratio", r.goodput_ratio},
      {"throttle_wait_seconds", WaitPercentilesJson(r.calls.ThrottleWaitSeconds(sc.time_scale))},
  };
}

std::string Seconds(double s) {
  return s < 120 ? absl::StrFormat("%.1f s", s) : absl::StrFormat("%.1f min", s / 60);
}

void PrintComparison(const Scenario& sc, const RunReport& plain, const RunReport& sluice,
                     double real_seconds) {
  absl::PrintF(
      "launch day: %d requests/min offered for %s against a provider allowing %d/min\n"
      "(the simulated provider at %gx time: %.0f s real; sluice's limits: %s)\n\n",
      sc.offered_rpm, absl::FormatDuration(sc.duration), sc.provider_rpm, sc.time_scale,
      real_seconds, sc.config_source);
  std::vector<std::vector<std::string>> rows = {{"", "unthrottled", "through sluice"}};
  auto row = [&](std::string name, auto f) { rows.push_back({name, f(plain), f(sluice)}); };
  row("requests offered", [](const RunReport& r) { return absl::StrCat(r.offered); });
  row("succeeded", [](const RunReport& r) { return absl::StrCat(r.calls.succeeded); });
  row("429s from the provider",
      [](const RunReport& r) { return absl::StrCat(r.rate_limit_errors); });
  row("failed answers", [](const RunReport& r) { return absl::StrCat(r.calls.failed()); });
  row("retries", [](const RunReport& r) { return absl::StrCat(r.calls.retries); });
  row("goodput (requests/min)",
      [](const RunReport& r) { return absl::StrFormat("%.0f", r.goodput_rpm); });
  row("goodput / provider limit",
      [](const RunReport& r) { return absl::StrFormat("%.3f", r.goodput_ratio); });
  row("throttle wait p50", [&sc](const RunReport& r) {
    std::vector<double> w = r.calls.ThrottleWaitSeconds(sc.time_scale);
    return Seconds(Percentile(w, 0.5));
  });
  row("throttle wait p99", [&sc](const RunReport& r) {
    std::vector<double> w = r.calls.ThrottleWaitSeconds(sc.time_scale);
    return Seconds(Percentile(w, 0.99));
  });
  PrintTable(rows);
  absl::PrintF(
      "\nTimes are simulated. Both runs start with the provider's bucket full (a minute's\n"
      "worth), which is why straight-through goodput can top the limit while it lasts.\n");
}

int RunDemo(const Command& cmd) {
  const Verb& verb = *cmd.verb;
  if (absl::GetFlag(FLAGS_print_config)) {
    absl::PrintF("%s", kDemoLimits);
    return kExitOk;
  }
  Scenario sc;
  sc.time_scale = cmd.Given("time_scale") ? absl::GetFlag(FLAGS_time_scale) : 60.0;
  if (!(sc.time_scale > 0) || sc.time_scale > 1e6) {
    return UsageError(verb, "--time-scale must be in (0, 1e6]");
  }
  sc.offered_rpm = absl::GetFlag(FLAGS_offered_rpm);
  if (sc.offered_rpm == 0) return UsageError(verb, "--offered-rpm must be at least 1");
  sc.duration = absl::GetFlag(FLAGS_duration);
  if (sc.duration < absl::Minutes(1) || sc.duration > absl::Hours(24)) {
    return UsageError(verb, "--duration must be between 1m and 24h (simulated time)");
  }
  sc.seed = absl::GetFlag(FLAGS_seed);
  sc.provider_rpm = FakeProviderOptions().rpm;
  if (cmd.Given("config")) {
    absl::StatusOr<LimitsConfig> limits = LoadLimitsConfig(absl::GetFlag(FLAGS_config));
    if (!limits.ok()) return Fail(cmd, limits.status());
    sc.limits = *std::move(limits);
    sc.config_source = absl::GetFlag(FLAGS_config);
  } else {
    absl::StatusOr<LimitsConfig> limits = ParseLimitsConfig(kDemoLimits, "demo-limits.toml");
    if (!limits.ok()) return Fail(cmd, limits.status());  // a test keeps it valid
    sc.limits = *std::move(limits);
    sc.config_source = "built-in (sluice demo --print-config; examples/demo-limits.toml)";
  }

  const bool json = absl::GetFlag(FLAGS_json);
  const int64_t start = Clock::MonotonicNanos();
  std::vector<RunReport> reports;
  for (bool throttled : {false, true}) {
    if (!json) {
      absl::FPrintF(stderr, "running %s...\n", throttled ? "through sluice" : "unthrottled");
    }
    absl::StatusOr<RunReport> report = RunOnce(sc, throttled);
    if (!report.ok()) return Fail(cmd, report.status());
    reports.push_back(*std::move(report));
  }
  const double real_seconds = static_cast<double>(Clock::MonotonicNanos() - start) / 1e9;

  if (json) {
    nlohmann::ordered_json doc;
    doc["scenario"] = {
        {"offered_rpm", sc.offered_rpm},
        {"provider_rpm_limit", sc.provider_rpm},
        {"duration_minutes", absl::ToDoubleMinutes(sc.duration)},
        {"time_scale", sc.time_scale},
        {"config", sc.config_source},
        {"real_seconds", real_seconds},
    };
    doc["unthrottled"] = RunJson(reports[0], sc);
    doc["sluice"] = RunJson(reports[1], sc);
    absl::PrintF("%s\n", doc.dump(2));
  } else {
    PrintComparison(sc, reports[0], reports[1], real_seconds);
  }
  return kExitOk;
}

constexpr absl::string_view kDemoFlags[] = {"duration", "offered_rpm", "time_scale",  "config",
                                            "seed",     "json",        "print_config"};

const Verb kDemoVerb = {
    .order = 52,
    .name = "demo",
    .usage =
        "demo [--duration D] [--offered-rpm N] [--time-scale X] [--config FILE] [--seed N] "
        "[--json] [--print-config]",
    .summary = "replay the launch day (1,200 requests/min against 1,000) with and without sluice",
    .description =
        "Offers --offered-rpm requests a minute for --duration (simulated time) to the\n"
        "simulated Anthropic provider, which allows 1,000 requests and 100,000 input and\n"
        "output tokens a minute. Runs twice, each against a fresh provider: straight\n"
        "through (no throttle, no retries: every 429 is a failed answer) and through\n"
        "sluice (the built-in demo limits, or --config). Time runs --time-scale times\n"
        "fast (default 60: a minute a second) for the provider and sluice alike. Prints\n"
        "a side-by-side table, or with --json a summary with rate_limit_errors,\n"
        "goodput_rpm, provider_rpm_limit and goodput_ratio for each run.",
    .flags = kDemoFlags,
    .required = {},
    .args = {},
    .run = RunDemo,
};
SLUICE_VERB(kDemoVerb);

}  // namespace
}  // namespace sluice
