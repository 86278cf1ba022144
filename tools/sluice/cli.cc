#include "tools/sluice/cli.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "sluice/cluster_settings.h"
#include "sluice/fleet_store.h"
#include "sluice/redis_url.h"

// Flags more than one verb takes.
ABSL_FLAG(std::string, segment, std::string(sluice::kDefaultSegmentName),
          "segment name (a file in /dev/shm) or path (a name containing '/')");
ABSL_FLAG(bool, json, false, "print a JSON document instead of a text report");
ABSL_FLAG(absl::Duration, timeout, absl::ZeroDuration(),
          "longest wait for the permits (500ms, 2s, inf); 0 tries once");
ABSL_FLAG(std::string, config, "",
          "the limits file (TOML); without one, only the scope 'global' with no limits");
ABSL_FLAG(std::string, provider, "anthropic", "the provider's API: anthropic or openai");
ABSL_FLAG(std::string, base_url, "",
          "the provider's base URL (default: its public API), e.g. http://127.0.0.1:8080");
ABSL_FLAG(std::string, model, "claude-sonnet-4", "the model to call");
ABSL_FLAG(uint64_t, max_tokens, 1024, "the reply's max_tokens");
ABSL_FLAG(std::string, scope, "global", "the scope the call is charged to (see the limits file)");
ABSL_FLAG(uint64_t, seed, sluice::FakeProviderOptions().seed,
          "seeds output lengths, faults and jitter: same seed, same run");
ABSL_FLAG(double, time_scale, 1.0,
          "simulated minutes per real minute: 60 refills a per-minute limit in a second");
ABSL_FLAG(absl::Duration, latency, absl::ZeroDuration(),
          "mean generation time of an admitted request (e.g. 200ms)");
ABSL_FLAG(std::string, listen, "",
          "HOST:PORT to serve on, e.g. 127.0.0.1:9464 (port 0 picks a free one)");
ABSL_FLAG(int, port, 0, "port to serve on, on 127.0.0.1 (0 picks a free one)");
ABSL_FLAG(std::string, redis, "",
          "the fleet's Redis, redis://HOST[:PORT][/DB], shared by every host naming it (a "
          "password comes from $SLUICE_REDIS_PASSWORD)");
ABSL_FLAG(std::string, mode, "lease",
          "with --redis: lease (admit from this host's pool, leased from Redis) or exact (each "
          "decision made in Redis)");

namespace sluice {
namespace {

std::vector<const Verb*>& Registry() {
  static auto* verbs = new std::vector<const Verb*>();
  return *verbs;
}

}  // namespace

bool Command::Given(absl::string_view flag) const {
  return std::find(given.begin(), given.end(), flag) != given.end();
}

VerbRegistration::VerbRegistration(const Verb* verb) { Registry().push_back(verb); }

std::vector<const Verb*> AllVerbs() {
  std::vector<const Verb*> verbs = Registry();
  std::stable_sort(verbs.begin(), verbs.end(),
                   [](const Verb* a, const Verb* b) { return a->order < b->order; });
  return verbs;
}

int Report(const Verb& verb, int code, absl::string_view message) {
  absl::FPrintF(stderr, "sluice %s: %s\n", verb.name, absl::StrReplaceAll(message, {{"\n", " "}}));
  return code;
}

int Fail(const Command& cmd, const absl::Status& status) {
  return Report(*cmd.verb, kExitError, status.message());
}

int UsageError(const Verb& verb, absl::string_view message) {
  return Report(verb, kExitUsage, absl::StrCat(message, " (see 'sluice ", verb.name, " --help')"));
}

std::string DashedFlag(absl::string_view absl_name) {
  return absl::StrCat("--", absl::StrReplaceAll(absl_name, {{"_", "-"}}));
}

std::string DashFlagNames(absl::string_view text) {
  std::string out(text);
  for (size_t i = out.find("--"); i != std::string::npos; i = out.find("--", i)) {
    for (i += 2; i < out.size() && (absl::ascii_isalnum(out[i]) || out[i] == '_'); ++i) {
      if (out[i] == '_') out[i] = '-';
    }
  }
  return out;
}

std::string Rfc3339(int64_t unix_ns) {
  return absl::FormatTime(absl::RFC3339_full, absl::FromUnixNanos(unix_ns), absl::UTCTimeZone());
}

std::string LocalTime(int64_t unix_ns) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S %Z", absl::FromUnixNanos(unix_ns),
                          absl::LocalTimeZone());
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const std::vector<std::string>& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const std::vector<std::string>& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&line, i == 0 ? "" : "  ", row[i]);
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size(), ' ');
    }
    absl::FPrintF(stdout, "%s\n", line);
  }
}

double Percentile(std::vector<double>& values, double q) {
  if (values.empty()) return 0;
  const double rank = std::ceil(q * static_cast<double>(values.size()));
  const size_t k =
      static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(values.size()))) - 1;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(k), values.end());
  return values[k];
}

nlohmann::ordered_json WaitPercentilesJson(std::vector<double> waits_s) {
  return {{"p50", Percentile(waits_s, 0.5)},
          {"p90", Percentile(waits_s, 0.9)},
          {"p99", Percentile(waits_s, 0.99)},
          {"max", Percentile(waits_s, 1.0)}};
}

void UseSimulatedProvider(const FakeProvider& provider, const FakeProviderOptions& started_with,
                          ClientOptions* options) {
  options->base_url = provider.base_url();
  options->api_key = "sk-sluice-simulated";  // it accepts any key; never a real secret
  options->provider_time_scale = started_with.time_scale;
}

namespace {

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);  // a server verb reloads on it; the others stop
  return set;
}

}  // namespace

absl::Status BlockStopSignals() {
  const sigset_t set = StopSignals();
  if (int err = pthread_sigmask(SIG_BLOCK, &set, nullptr); err != 0) {
    return absl::InternalError(absl::StrCat("blocking signals: ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> WaitForSignal() {
  const sigset_t set = StopSignals();
  int received = 0;
  if (int err = sigwait(&set, &received); err != 0) {
    return absl::InternalError(absl::StrCat("waiting for a signal: ", std::strerror(err)));
  }
  return received;
}

absl::Status WaitForStopSignal() { return WaitForSignal().status(); }

absl::StatusOr<std::unique_ptr<Segment>> OpenExisting() {
  SegmentOptions options;
  options.create = false;
  options.register_process = false;
  return Segment::Open(absl::GetFlag(FLAGS_segment), options);
}

absl::StatusOr<Store*> StoreForLimits(const LimitsConfig& limits, Store* local,
                                      std::unique_ptr<Store>* fleet) {
  if (!limits.cluster) return local;
  absl::StatusOr<FleetOptions> options = FleetOptionsFor(*limits.cluster);
  if (!options.ok()) return options.status();
  absl::StatusOr<std::unique_ptr<FleetStore>> store = FleetStore::Create(local, *options);
  if (!store.ok()) return store.status();
  *fleet = *std::move(store);
  return fleet->get();
}

absl::StatusOr<LimitsConfig> LimitsFromFlags() {
  const std::string path = absl::GetFlag(FLAGS_config);
  if (!path.empty()) return LoadLimitsConfig(path);
  LimitsConfig config;
  config.source = "(no --config)";
  config.scopes["global"].name = "global";
  return config;
}

absl::StatusOr<ClusterSettings> ClusterFromFlags(const Command& cmd, ClusterSettings base) {
  const std::string url = absl::GetFlag(FLAGS_redis);
  absl::StatusOr<RedisEndpoint> endpoint = ParseRedisUrl(url);
  if (!endpoint.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--redis: ", endpoint.status().message()));
  }
  base.redis_url = url;
  base.redis = *std::move(endpoint);
  if (cmd.Given("mode")) {
    const std::string mode = absl::GetFlag(FLAGS_mode);
    const std::optional<ClusterMode> parsed = ParseClusterMode(mode);
    if (!parsed) {
      return absl::InvalidArgumentError(
          absl::StrCat("--mode must be lease or exact, got '", mode, "'"));
    }
    base.mode = *parsed;
  }
  if (base.password_env.empty()) {
    const char* password = std::getenv(kRedisPasswordEnv);
    if (password != nullptr && *password != '\0') base.password_env = kRedisPasswordEnv;
  }
  return base;
}

}  // namespace sluice
