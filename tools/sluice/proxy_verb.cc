// `sluice proxy --listen HOST:PORT --config FILE`: the local proxy in front of
// Anthropic and OpenAI (sluice/proxy.h), until SIGTERM or SIGINT; SIGHUP
// reloads the limits file.

#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "sluice/limits.h"
#include "sluice/proxy.h"
#include "sluice/segment.h"
#include "sluice/store.h"
#include "tools/sluice/cli.h"
#include "tools/stats/stats.h"

ABSL_FLAG(std::string, anthropic_url, sluice::ProxyOptions().anthropic_url,
          "the Anthropic API requests to /v1/messages go to");
ABSL_FLAG(std::string, openai_url, sluice::ProxyOptions().openai_url,
          "the OpenAI API requests to /v1/chat/completions, /v1/responses and /v1/embeddings "
          "go to");
ABSL_FLAG(absl::Duration, queue_timeout, sluice::ProxyOptions().queue_timeout,
          "a request not served within this long gets the provider's 429");
ABSL_FLAG(uint64_t, max_queue, sluice::ProxyOptions().max_queue,
          "requests waiting at once; one more gets the provider's 429");
ABSL_FLAG(bool, json_log, false, "log one JSON object per request instead of a text line");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "on SIGTERM, how long requests in progress may take to finish");

namespace sluice {
namespace {

// The limits of --config on the real clock of an upstream that runs
// `time_scale` simulated minutes per real minute (the simulated provider's
// --time-scale): rates scaled up, bursts kept in permits.
absl::StatusOr<LimitsConfig> ScaledLimitsFromFlags(double time_scale) {
  absl::StatusOr<LimitsConfig> config = LimitsFromFlags();
  if (!config.ok() || time_scale == 1.0) return config;
  return TimeScaled(*std::move(config), time_scale);
}

int RunProxy(const Command& cmd) {
  absl::StatusOr<ListenAddress> address = ParseListenAddress(absl::GetFlag(FLAGS_listen));
  if (!address.ok()) return UsageError(*cmd.verb, address.status().message());
  const double time_scale = absl::GetFlag(FLAGS_time_scale);
  if (!(time_scale > 0) || time_scale > 1e6) {
    return UsageError(*cmd.verb, "--time-scale must be in (0, 1e6]");
  }
  const std::string config_path = absl::GetFlag(FLAGS_config);
  absl::StatusOr<LimitsConfig> config = ScaledLimitsFromFlags(time_scale);
  if (!config.ok()) return Report(*cmd.verb, kExitConfig, config.status().message());
  absl::StatusOr<std::unique_ptr<Segment>> segment = Segment::Open(absl::GetFlag(FLAGS_segment));
  if (!segment.ok()) return Fail(cmd, segment.status());
  std::unique_ptr<Store> local = NewSegmentStore(segment->get());
  std::unique_ptr<Store> fleet;
  absl::StatusOr<Store*> store = StoreForLimits(*config, local.get(), &fleet);
  if (!store.ok()) return Report(*cmd.verb, kExitConfig, store.status().message());

  ProxyOptions options;
  options.host = address->host;
  options.port = address->port;
  options.anthropic_url = absl::GetFlag(FLAGS_anthropic_url);
  options.openai_url = absl::GetFlag(FLAGS_openai_url);
  options.queue_timeout = absl::GetFlag(FLAGS_queue_timeout);
  options.max_queue = absl::GetFlag(FLAGS_max_queue);
  options.json_log = absl::GetFlag(FLAGS_json_log);
  options.provider_time_scale = time_scale;
  options.segment = (*segment)->path();
  auto log_mu = std::make_shared<absl::Mutex>();
  options.log = [log_mu](absl::string_view line) {
    absl::MutexLock lock(log_mu.get());
    absl::FPrintF(stdout, "%s\n", line);
    std::fflush(stdout);
  };

  if (absl::Status s = BlockStopSignals(); !s.ok()) return Fail(cmd, s);
  absl::StatusOr<std::unique_ptr<Proxy>> proxy = Proxy::Start(options, *config, *store);
  if (!proxy.ok()) {
    if (absl::IsInvalidArgument(proxy.status())) {
      return UsageError(*cmd.verb, proxy.status().message());
    }
    return Fail(cmd, proxy.status());
  }
  absl::FPrintF(stdout, "proxy listening on %s\n", (*proxy)->base_url());
  std::fflush(stdout);  // a script waiting for the line must see it now
  for (;;) {
    absl::StatusOr<int> signal = WaitForSignal();
    if (!signal.ok()) return Fail(cmd, signal.status());
    if (*signal != SIGHUP) break;
    // A bad file is refused and the old limits stay.
    absl::StatusOr<LimitsConfig> fresh = ScaledLimitsFromFlags(time_scale);
    absl::Status reloaded = fresh.ok() ? (*proxy)->Reload(*fresh) : fresh.status();
    if (reloaded.ok()) {
      absl::FPrintF(stderr, "sluice proxy: reloaded %s\n", config_path);
    } else {
      absl::FPrintF(stderr, "sluice proxy: reload refused, the old limits stay: %s\n",
                    reloaded.message());
    }
  }
  (*proxy)->Shutdown(absl::GetFlag(FLAGS_drain_timeout));
  return kExitOk;
}

constexpr absl::string_view kProxyFlags[] = {
    "listen",        "config",    "segment",  "anthropic_url", "openai_url",
    "queue_timeout", "max_queue", "json_log", "drain_timeout", "time_scale"};
constexpr absl::string_view kProxyRequired[] = {"listen"};

const Verb kProxyVerb = {
    .order = 75,
    .name = "proxy",
    .usage =
        "proxy --listen HOST:PORT [--config FILE] [--segment NAME] [--anthropic-url URL] "
        "[--openai-url URL] [--queue-timeout DURATION] [--max-queue N] [--json-log] "
        "[--drain-timeout DURATION] [--time-scale X]",
    .summary = "throttle every SDK on the host: a local proxy in front of Anthropic and OpenAI",
    .description =
        "Serves on HOST:PORT what Anthropic's and OpenAI's APIs serve, forwarding each\n"
        "request upstream once the limits of --config allow it: point ANTHROPIC_BASE_URL\n"
        "at http://HOST:PORT and OPENAI_BASE_URL at http://HOST:PORT/v1. Requests wait\n"
        "in priority order (x-sluice-priority, or the scope's priority) instead of\n"
        "drawing 429s; one not served within --queue-timeout gets the provider's own 429.\n"
        "The scope is x-sluice-scope, or [proxy.keys] by the key's SHA-256, or global.\n"
        "GET /metrics serves Prometheus text. One log line per request on stdout.\n"
        "SIGHUP reloads --config (a bad file is refused and the old limits stay);\n"
        "SIGTERM stops accepting and lets requests finish for --drain-timeout.\n"
        "--time-scale X rehearses against `sluice fake-provider --time-scale X`: the\n"
        "limits' rates are multiplied by X (bursts stay in permits), as the provider's.\n"
        "Prints \"proxy listening on http://HOST:PORT\" once it accepts connections.",
    .flags = kProxyFlags,
    .required = kProxyRequired,
    .args = {},
    .run = RunProxy,
};
SLUICE_VERB(kProxyVerb);

}  // namespace
}  // namespace sluice
