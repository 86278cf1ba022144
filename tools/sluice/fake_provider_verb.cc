// `sluice fake-provider --port N`: serves the simulated Anthropic and OpenAI
// APIs (tools/fake_provider) on 127.0.0.1 until SIGINT or SIGTERM.

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "tools/fake_provider/fake_provider.h"
#include "tools/sluice/cli.h"

// fake-provider: defaults come from FakeProviderOptions so that they cannot drift.
ABSL_FLAG(uint64_t, rpm, sluice::FakeProviderOptions().rpm, "requests per minute, per API key");
ABSL_FLAG(uint64_t, itpm, sluice::FakeProviderOptions().itpm,
          "Anthropic input tokens per minute, per API key");
ABSL_FLAG(uint64_t, otpm, sluice::FakeProviderOptions().otpm,
          "Anthropic output tokens per minute, per API key");
ABSL_FLAG(uint64_t, tpm, sluice::FakeProviderOptions().tpm,
          "OpenAI tokens per minute, per API key");
ABSL_FLAG(int, threads, sluice::FakeProviderOptions().threads,
          "event-loop threads (each serves any number of connections)");
ABSL_FLAG(bool, unlimited, false, "enforce no limits and send no rate-limit headers");
ABSL_FLAG(absl::Duration, bucket_span, sluice::FakeProviderOptions().bucket_span,
          "each limit's bucket holds this much of it (1s: a 60 rpm key bursts at most 1), "
          "in (0, 1m]");
ABSL_FLAG(absl::Duration, latency_jitter, absl::ZeroDuration(),
          "latency varies uniformly by up to this much either way");
ABSL_FLAG(double, overloaded_rate, 0,
          "fraction of requests answered 529 (Anthropic) / 503 (OpenAI)");
ABSL_FLAG(double, server_error_rate, 0, "fraction of requests answered 500");
ABSL_FLAG(double, insufficient_quota_rate, 0,
          "fraction answered as out of money: OpenAI insufficient_quota, Anthropic spend limit");
ABSL_FLAG(double, spend_limit_rate, 0,
          "fraction answered as out of money: Anthropic spend limit, OpenAI insufficient_quota");
ABSL_FLAG(double, malformed_json_rate, 0,
          "fraction of admitted requests answered 200 with bad JSON");
ABSL_FLAG(double, truncated_body_rate, 0,
          "fraction of admitted requests whose body is cut short (Content-Length promises more)");
ABSL_FLAG(double, slow_body_rate, 0,
          "fraction of admitted requests whose body dribbles out over about 400 ms");
ABSL_FLAG(double, reset_rate, 0,
          "fraction of admitted requests whose connection is dropped without a response");

namespace sluice {
namespace {

FakeProviderOptions FakeProviderOptionsFromFlags() {
  FakeProviderOptions options;
  options.port = absl::GetFlag(FLAGS_port);
  options.rpm = absl::GetFlag(FLAGS_rpm);
  options.itpm = absl::GetFlag(FLAGS_itpm);
  options.otpm = absl::GetFlag(FLAGS_otpm);
  options.tpm = absl::GetFlag(FLAGS_tpm);
  options.unlimited = absl::GetFlag(FLAGS_unlimited);
  options.bucket_span = absl::GetFlag(FLAGS_bucket_span);
  options.latency_mean = absl::GetFlag(FLAGS_latency);
  options.latency_jitter = absl::GetFlag(FLAGS_latency_jitter);
  options.time_scale = absl::GetFlag(FLAGS_time_scale);
  options.overloaded_rate = absl::GetFlag(FLAGS_overloaded_rate);
  options.server_error_rate = absl::GetFlag(FLAGS_server_error_rate);
  options.insufficient_quota_rate = absl::GetFlag(FLAGS_insufficient_quota_rate);
  options.spend_limit_rate = absl::GetFlag(FLAGS_spend_limit_rate);
  options.malformed_json_rate = absl::GetFlag(FLAGS_malformed_json_rate);
  options.truncated_body_rate = absl::GetFlag(FLAGS_truncated_body_rate);
  options.slow_body_rate = absl::GetFlag(FLAGS_slow_body_rate);
  options.reset_rate = absl::GetFlag(FLAGS_reset_rate);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.threads = absl::GetFlag(FLAGS_threads);
  return options;
}

int RunFakeProvider(const Command& cmd) {
  if (absl::Status s = BlockStopSignals(); !s.ok()) return Fail(cmd, s);
  absl::StatusOr<std::unique_ptr<FakeProvider>> provider =
      FakeProvider::Start(FakeProviderOptionsFromFlags());
  if (!provider.ok()) {
    if (absl::IsInvalidArgument(provider.status())) {
      return UsageError(*cmd.verb, provider.status().message());
    }
    return Fail(cmd, provider.status());
  }
  absl::FPrintF(stdout, "fake-provider listening on %s\n", (*provider)->base_url());
  std::fflush(stdout);  // a script waiting for the line must see it now
  if (absl::Status s = WaitForStopSignal(); !s.ok()) return Fail(cmd, s);
  (*provider)->Stop();
  return kExitOk;
}

constexpr absl::string_view kFakeProviderFlags[] = {
    "port", "rpm", "itpm", "otpm", "tpm", "unlimited", "bucket_span", "latency", "latency_jitter",
    "time_scale",
    // The fault rates, then what draws them.
    "overloaded_rate", "server_error_rate", "insufficient_quota_rate", "spend_limit_rate",
    "malformed_json_rate", "truncated_body_rate", "slow_body_rate", "reset_rate", "seed",
    "threads"};
constexpr absl::string_view kFakeProviderRequired[] = {"port"};

const Verb kFakeProviderVerb = {
    .order = 80,
    .name = "fake-provider",
    .usage =
        "fake-provider --port N [--rpm N] [--itpm N] [--otpm N] [--tpm N] [--unlimited] "
        "[--bucket-span DURATION] [--latency DURATION] [--latency-jitter DURATION] "
        "[--time-scale X] [--overloaded-rate F] [--server-error-rate F] "
        "[--insufficient-quota-rate F] [--spend-limit-rate F] [--malformed-json-rate F] "
        "[--truncated-body-rate F] [--slow-body-rate F] [--reset-rate F] [--seed N] [--threads N]",
    .summary = "serve a simulated Anthropic and OpenAI API on 127.0.0.1",
    .description =
        "Serves POST /v1/messages (Anthropic) and POST /v1/chat/completions,\n"
        "/v1/responses and /v1/embeddings (OpenAI) on 127.0.0.1:N, streamed when asked,\n"
        "with per-key limits as continuous token buckets, the providers' rate-limit\n"
        "headers and errors, and faults injected at the given rates (each in [0, 1],\n"
        "drawn per request from --seed). GET /stats shows counters per key.\n"
        "Prints \"fake-provider listening on http://127.0.0.1:N\" once it accepts\n"
        "connections, and serves until SIGINT or SIGTERM, then exits 0.",
    .flags = kFakeProviderFlags,
    .required = kFakeProviderRequired,
    .args = {},
    .run = RunFakeProvider,
};
SLUICE_VERB(kFakeProviderVerb);

}  // namespace
}  // namespace sluice
