// sluice: the command-line tool. This file dispatches to the verbs (each
// registered with SLUICE_VERB, see cli.h; most in files of their own) and
// holds the first ones:
//
//   sluice acquire KEY --rate N/UNIT --burst B [--tokens N] [--timeout D] [--segment NAME]
//   sluice inspect [--segment NAME] [--json]
//   sluice rm [--segment NAME] [--force]
//   sluice fake-provider --port N [--rpm N] [--itpm N] [--otpm N] [--tpm N] [--unlimited] ...
//
// Exit codes follow sysexits.h so that a shell script can tell "try again
// later" (75, EX_TEMPFAIL) from a mistake in the command (64, EX_USAGE) and
// from a failure (1). Every error is one line on stderr, "sluice VERB: ...".
//
// Flags are Abseil flags, all linked into this one binary; each verb names the
// ones it takes, and a flag of another verb is refused before absl parses.

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "sluice/client.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/rate.h"
#include "sluice/segment.h"
#include "sluice/segment_info.h"
#include "sluice/store.h"
#include "sluice/token_bucket.h"
#include "tools/fake_provider/fake_provider.h"
#include "tools/sluice/cli.h"

ABSL_FLAG(std::string, rate, "", "refill rate as N/UNIT, UNIT one of s, min, h, day (e.g. 50/min)");
ABSL_FLAG(uint64_t, burst, 0, "the bucket's capacity: the most permits that can be taken at once");
ABSL_FLAG(uint64_t, tokens, 1, "permits to take");
ABSL_FLAG(bool, force, false,
          "remove the segment even while live processes are attached to it, or when it is "
          "corrupt or of another layout version");
ABSL_FLAG(bool, reconfigure, false,
          "if the bucket exists with another rate or burst, change it (keeping its fill ratio)");

// fake-provider: defaults come from FakeProviderOptions so that they cannot drift.
ABSL_FLAG(uint64_t, rpm, sluice::FakeProviderOptions().rpm, "requests per minute, per API key");
ABSL_FLAG(uint64_t, itpm, sluice::FakeProviderOptions().itpm,
          "Anthropic input tokens per minute, per API key");
ABSL_FLAG(uint64_t, otpm, sluice::FakeProviderOptions().otpm,
          "Anthropic output tokens per minute, per API key");
ABSL_FLAG(uint64_t, tpm, sluice::FakeProviderOptions().tpm,
          "OpenAI tokens per minute, per API key");
ABSL_FLAG(int, threads, sluice::FakeProviderOptions().threads,
          "worker threads: connections served at once (a keep-alive connection holds one)");
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

// The segment is untrusted: a corrupt header could claim more used slots than
// it has, and an unsigned subtraction would print a huge count.
uint32_t FreeSlots(const SegmentInfo& info) {
  return info.slots >= info.slots_used ? info.slots - info.slots_used : 0;
}

double PercentAvailable(const SegmentInfo::Bucket& b) {
  return b.config.capacity > 0
             ? 100.0 * static_cast<double>(b.available) / static_cast<double>(b.config.capacity)
             : 0.0;
}

int LiveProcesses(const SegmentInfo& info) {
  return static_cast<int>(
      absl::c_count_if(info.processes, [](const SegmentInfo::Process& p) { return p.alive; }));
}

// sluice acquire ---------------------------------------------------------------

int RunAcquire(const Command& cmd) {
  const Verb& verb = *cmd.verb;
  absl::StatusOr<Rate> rate = Rate::Parse(absl::GetFlag(FLAGS_rate));
  if (!rate.ok()) return UsageError(verb, absl::StrCat("--rate: ", rate.status().message()));
  const BucketConfig config{.rate = *rate, .capacity = absl::GetFlag(FLAGS_burst)};
  // Checked before the segment is touched, so a bad command creates nothing.
  if (absl::Status s = ValidateBucketConfig(config); !s.ok()) return UsageError(verb, s.message());
  const uint64_t tokens = absl::GetFlag(FLAGS_tokens);
  if (tokens == 0) return UsageError(verb, "--tokens must be at least 1");
  const absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  if (timeout < absl::ZeroDuration()) {
    return UsageError(
        verb, absl::StrCat("--timeout must not be negative, got ", absl::FormatDuration(timeout)));
  }

  absl::StatusOr<std::unique_ptr<Segment>> segment = Segment::Open(absl::GetFlag(FLAGS_segment));
  if (!segment.ok()) return Fail(cmd, segment.status());
  const std::string& key = cmd.args[0];
  absl::StatusOr<SharedBucket> bucket =
      (*segment)->OpenBucket(key, config, absl::GetFlag(FLAGS_reconfigure));
  if (!bucket.ok()) return Fail(cmd, bucket.status());

  const absl::Status acquired = bucket->Acquire(tokens, timeout);
  // Only the bucket's own refusal means "try later"; a DeadlineExceeded from
  // Open (the segment lock) is a failure like any other.
  if (acquired.code() == absl::StatusCode::kDeadlineExceeded) {
    return Report(verb, kExitTempFail, absl::StrCat("bucket '", key, "': ", acquired.message()));
  }
  if (!acquired.ok()) return Fail(cmd, acquired);
  return kExitOk;
}

// sluice inspect ---------------------------------------------------------------

void PrintBuckets(const std::vector<SegmentInfo::Bucket>& buckets) {
  if (buckets.empty()) {
    absl::FPrintF(stdout, "\nbuckets: none\n");
    return;
  }
  std::vector<std::string> rates;
  int name_width = 6;  // "BUCKET"
  int rate_width = 4;  // "RATE"
  for (const SegmentInfo::Bucket& b : buckets) {
    rates.push_back(b.config.rate.ToString());
    name_width = std::max(name_width, static_cast<int>(b.name.size()));
    rate_width = std::max(rate_width, static_cast<int>(rates.back().size()));
  }
  absl::FPrintF(stdout, "\n%-*s  %-*s  %10s  %10s  %s\n", name_width, "BUCKET", rate_width, "RATE",
                "BURST", "AVAILABLE", "PRESSURE");
  for (size_t i = 0; i < buckets.size(); ++i) {
    const SegmentInfo::Bucket& b = buckets[i];
    absl::FPrintF(stdout, "%-*s  %-*s  %10d  %10d  %s\n", name_width, b.name, rate_width, rates[i],
                  b.config.capacity, b.available, PressureName(b.pressure));
  }
}

void PrintProcesses(const std::vector<SegmentInfo::Process>& processes) {
  if (processes.empty()) {
    absl::FPrintF(stdout, "\nprocesses: none\n");
    return;
  }
  absl::FPrintF(stdout, "\n%-10s  %-5s  %s\n", "PID", "ALIVE", "ATTACHED");
  for (const SegmentInfo::Process& p : processes) {
    absl::FPrintF(stdout, "%-10d  %-5s  %s\n", p.pid, p.alive ? "yes" : "no",
                  LocalTime(p.attached_unix_ns));
  }
}

void PrintText(const SegmentInfo& info) {
  absl::FPrintF(stdout, "segment  %s\n", info.path);
  absl::FPrintF(stdout, "abi      %d.%d\n", info.abi_major, info.abi_minor);
  absl::FPrintF(stdout, "size     %d bytes\n", info.size_bytes);
  absl::FPrintF(stdout, "slots    %d used, %d free, %d in all\n", info.slots_used, FreeSlots(info),
                info.slots);
  absl::FPrintF(stdout, "created  %s\n", LocalTime(info.created_unix_ns));
  PrintBuckets(info.buckets);
  PrintProcesses(info.processes);
}

void PrintJson(const SegmentInfo& info) {
  // ordered_json keeps the fields in the order a reader expects.
  using Json = nlohmann::ordered_json;
  Json doc;
  doc["path"] = info.path;
  doc["abi"] = {{"major", info.abi_major}, {"minor", info.abi_minor}};
  doc["size_bytes"] = info.size_bytes;
  doc["slots"] = {{"total", info.slots}, {"used", info.slots_used}, {"free", FreeSlots(info)}};
  doc["created"] = Rfc3339(info.created_unix_ns);
  doc["buckets"] = Json::array();
  for (const SegmentInfo::Bucket& b : info.buckets) {
    doc["buckets"].push_back({
        {"name", b.name},
        {"slot", b.slot},
        {"rate", b.config.rate.ToString()},
        {"permits", b.config.rate.permits()},
        {"period_ns", absl::ToInt64Nanoseconds(b.config.rate.period())},
        {"capacity", b.config.capacity},
        {"available", b.available},
        {"pressure", PressureName(b.pressure)},
        {"percent_available", PercentAvailable(b)},
    });
  }
  doc["processes"] = Json::array();
  for (const SegmentInfo::Process& p : info.processes) {
    doc["processes"].push_back({
        {"pid", p.pid},
        {"start_time", p.start_time},
        {"alive", p.alive},
        {"attached", Rfc3339(p.attached_unix_ns)},
    });
  }
  // Bucket names come from shared memory and need not be valid UTF-8; the
  // default handler would throw on them, `replace` substitutes U+FFFD.
  absl::FPrintF(stdout, "%s\n", doc.dump(2, ' ', false, Json::error_handler_t::replace));
}

int RunInspect(const Command& cmd) {
  absl::StatusOr<std::unique_ptr<Segment>> segment = OpenExisting();
  if (!segment.ok()) return Fail(cmd, segment.status());
  absl::StatusOr<SegmentInfo> info = (*segment)->Inspect();
  if (!info.ok()) return Fail(cmd, info.status());
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(*info);
  } else {
    PrintText(*info);
  }
  return kExitOk;
}

// sluice rm --------------------------------------------------------------------

int RunRm(const Command& cmd) {
  absl::StatusOr<std::unique_ptr<Segment>> segment = OpenExisting();
  if (!segment.ok()) {
    // A segment Open refuses (corrupt, half-written, another layout version)
    // cannot be asked who is attached; --force removes it unopened.
    if (segment.status().code() != absl::StatusCode::kFailedPrecondition) {
      return Fail(cmd, segment.status());
    }
    if (!absl::GetFlag(FLAGS_force)) {
      return Report(*cmd.verb, kExitError,
                    absl::StrCat(segment.status().message(), "; --force removes it anyway"));
    }
    absl::Status removed = Segment::Remove(absl::GetFlag(FLAGS_segment));
    return removed.ok() ? kExitOk : Fail(cmd, removed);
  }
  absl::StatusOr<SegmentInfo> info = (*segment)->Inspect();
  if (!info.ok()) return Fail(cmd, info.status());
  // Removing the name does not stop processes that have it mapped, but new
  // ones would create a fresh segment and stop sharing limits with them.
  const int live = LiveProcesses(*info);
  if (live > 0 && !absl::GetFlag(FLAGS_force)) {
    return Report(*cmd.verb, kExitError,
                  absl::StrFormat("%d live %s attached to %s; pass --force to remove it anyway",
                                  live, live == 1 ? "process is" : "processes are", info->path));
  }
  if (absl::Status s = (*segment)->Unlink(); !s.ok()) return Fail(cmd, s);
  return kExitOk;
}

// sluice call --------------------------------------------------------------------

int RunCall(const Command& cmd) {
  const Verb& verb = *cmd.verb;
  absl::StatusOr<Provider> provider = ParseProvider(absl::GetFlag(FLAGS_provider));
  if (!provider.ok()) return UsageError(verb, provider.status().message());
  if (absl::GetFlag(FLAGS_max_tokens) == 0) return UsageError(verb, "--max_tokens must be >= 1");
  // --timeout is the longest wait in the throttle; 0 (its default) means 60 s.
  absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  if (timeout < absl::ZeroDuration()) return UsageError(verb, "--timeout must not be negative");
  if (timeout == absl::ZeroDuration()) timeout = absl::Seconds(60);

  absl::StatusOr<LimitsConfig> limits = LimitsFromFlags();
  if (!limits.ok()) return Fail(cmd, limits.status());
  absl::StatusOr<std::unique_ptr<Segment>> segment = Segment::Open(absl::GetFlag(FLAGS_segment));
  if (!segment.ok()) return Fail(cmd, segment.status());
  std::unique_ptr<Store> store = NewSegmentStore(segment->get());
  absl::StatusOr<std::unique_ptr<Policy>> policy = Policy::Create(*limits, store.get());
  if (!policy.ok()) return Fail(cmd, policy.status());

  ClientOptions options;
  options.provider = *provider;
  options.base_url = absl::GetFlag(FLAGS_base_url);
  options.scope = absl::GetFlag(FLAGS_scope);
  options.throttle_timeout = timeout;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options, policy->get());
  if (!client.ok()) return Fail(cmd, client.status());
  const CallResult r = (*client)->Call(CallRequest::Simple(absl::GetFlag(FLAGS_model), cmd.args[0],
                                                           absl::GetFlag(FLAGS_max_tokens)));

  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::ordered_json doc;
    doc["ok"] = r.status.ok();
    if (!r.status.ok()) {
      doc["error"] = {{"class", ErrorClassName(r.error.error_class)},
                      {"type", r.error.provider_type},
                      {"message", std::string(r.status.message())}};
    }
    doc["reply"] = r.text;
    doc["usage"] = UsageJson(r.usage);
    doc["attempts"] = r.attempts;
    doc["throttle_wait_ms"] = absl::ToDoubleMilliseconds(r.throttle_wait);
    doc["http_status"] = r.http_status;
    doc["request_id"] = r.request_id;
    absl::FPrintF(stdout, "%s\n",
                  doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
  } else if (r.status.ok()) {
    absl::FPrintF(stdout, "%s\n", r.text);
  }
  if (r.status.ok()) return kExitOk;
  // The throttle's refusals (its timeout, a full concurrency cap, a spent
  // budget) mean "later"; a request that can never fit or a provider error
  // does not.
  const bool later = r.status.code() == absl::StatusCode::kDeadlineExceeded ||
                     r.status.code() == absl::StatusCode::kResourceExhausted;
  return Report(verb, later ? kExitTempFail : kExitError, r.status.message());
}

// sluice fake-provider ----------------------------------------------------------

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

// The verbs --------------------------------------------------------------------

constexpr absl::string_view kAcquireFlags[] = {"rate",    "burst",   "tokens",
                                               "timeout", "segment", "reconfigure"};
constexpr absl::string_view kAcquireRequired[] = {"rate", "burst"};
constexpr absl::string_view kAcquireArgs[] = {"KEY"};
constexpr absl::string_view kInspectFlags[] = {"segment", "json"};
constexpr absl::string_view kRmFlags[] = {"segment", "force"};
constexpr absl::string_view kCallFlags[] = {
    "provider", "base_url", "model", "max_tokens", "scope", "config", "segment", "timeout", "json"};
constexpr absl::string_view kCallArgs[] = {"PROMPT"};
constexpr absl::string_view kFakeProviderFlags[] = {
    "port", "rpm", "itpm", "otpm", "tpm", "unlimited", "bucket_span", "latency", "latency_jitter",
    "time_scale",
    // The fault rates, then what draws them.
    "overloaded_rate", "server_error_rate", "insufficient_quota_rate", "spend_limit_rate",
    "malformed_json_rate", "truncated_body_rate", "slow_body_rate", "reset_rate", "seed",
    "threads"};
constexpr absl::string_view kFakeProviderRequired[] = {"port"};

const Verb kAcquireVerb = {
    .order = 10,
    .name = "acquire",
    .usage =
        "acquire KEY --rate N/UNIT --burst B [--tokens N] [--timeout DURATION] "
        "[--segment NAME] [--reconfigure]",
    .summary = "take permits from a bucket, waiting at most --timeout",
    .description =
        "Takes --tokens permits from the bucket KEY in the shared segment, creating the\n"
        "segment and the bucket (full, with --rate and --burst) if they do not exist.\n"
        "An existing bucket must have the same rate and burst (or pass --reconfigure to\n"
        "change them live). Waits at most --timeout\n"
        "for the permits and exits 0 once they are taken, or exits 75 at once when they\n"
        "would not be there in time, taking nothing.",
    .flags = kAcquireFlags,
    .required = kAcquireRequired,
    .args = kAcquireArgs,
    .run = RunAcquire,
};
SLUICE_VERB(kAcquireVerb);

const Verb kInspectVerb = {
    .order = 20,
    .name = "inspect",
    .usage = "inspect [--segment NAME] [--json]",
    .summary = "show a segment's buckets and attached processes",
    .description =
        "Prints the segment's header (path, layout version, size, slots, creation time),\n"
        "each bucket's rate, burst, available permits and pressure, and the processes\n"
        "attached to it. Only reads: the segment must exist and this process is not\n"
        "recorded in it.",
    .flags = kInspectFlags,
    .required = {},
    .args = {},
    .run = RunInspect,
};
SLUICE_VERB(kInspectVerb);

const Verb kRmVerb = {
    .order = 30,
    .name = "rm",
    .usage = "rm [--segment NAME] [--force]",
    .summary = "remove a segment",
    .description =
        "Removes the segment's name, so that the next process to open it creates a\n"
        "fresh one. Refused while live processes are attached, unless --force: they\n"
        "keep the old segment mapped and stop sharing limits with newcomers.",
    .flags = kRmFlags,
    .required = {},
    .args = {},
    .run = RunRm,
};
SLUICE_VERB(kRmVerb);

const Verb kCallVerb = {
    .order = 50,
    .name = "call",
    .usage =
        "call [--provider anthropic|openai] [--base_url URL] [--model M] "
        "[--max_tokens N] [--scope S] [--config FILE] [--timeout D] [--json] PROMPT",
    .summary = "make one throttled call to a model and print the reply",
    .description =
        "Sends PROMPT to the provider's API (Anthropic Messages or OpenAI Chat\n"
        "Completions) through the limits of --config, charged to --scope, with retries\n"
        "as the official SDKs do them (full jitter, retry-after honored; quota and\n"
        "spend-limit errors never retried). The API key comes from ANTHROPIC_API_KEY or\n"
        "OPENAI_API_KEY and is never printed. Prints the reply, or with --json the whole\n"
        "result (reply, usage, attempts, time waited in the throttle, request-id).\n"
        "Exits 0 on success, 75 when the throttle would wait past --timeout (default\n"
        "60s) or a budget is spent, 1 on a provider error (its class, HTTP status and\n"
        "message on stderr).",
    .flags = kCallFlags,
    .required = {},
    .args = kCallArgs,
    .run = RunCall,
};
SLUICE_VERB(kCallVerb);

const Verb kFakeProviderVerb = {
    .order = 80,
    .name = "fake-provider",
    .usage =
        "fake-provider --port N [--rpm N] [--itpm N] [--otpm N] [--tpm N] [--unlimited] "
        "[--bucket_span DURATION] [--latency DURATION] [--latency_jitter DURATION] "
        "[--time_scale X] [--overloaded_rate F] [--server_error_rate F] "
        "[--insufficient_quota_rate F] [--spend_limit_rate F] [--malformed_json_rate F] "
        "[--truncated_body_rate F] [--slow_body_rate F] [--reset_rate F] [--seed N] [--threads N]",
    .summary = "serve a simulated Anthropic and OpenAI API on 127.0.0.1",
    .description =
        "Serves POST /v1/messages (Anthropic) and POST /v1/chat/completions (OpenAI) on\n"
        "127.0.0.1:N, with per-key limits as continuous token buckets, the providers'\n"
        "rate-limit headers and errors, and faults injected at the given rates (each in\n"
        "[0, 1], drawn per request from --seed). GET /stats shows counters per key.\n"
        "Prints \"fake-provider listening on http://127.0.0.1:N\" once it accepts\n"
        "connections, and serves until SIGINT or SIGTERM, then exits 0.",
    .flags = kFakeProviderFlags,
    .required = kFakeProviderRequired,
    .args = {},
    .run = RunFakeProvider,
};
SLUICE_VERB(kFakeProviderVerb);

const Verb* FindVerb(absl::string_view name) {
  for (const Verb* verb : AllVerbs()) {
    if (verb->name == name) return verb;
  }
  return nullptr;
}

std::string VerbNames() {
  return absl::StrJoin(AllVerbs(), ", ",
                       [](std::string* out, const Verb* v) { absl::StrAppend(out, v->name); });
}

std::string FlagList(const Verb& verb) {
  return absl::StrJoin(verb.flags, ", ", [](std::string* out, absl::string_view flag) {
    absl::StrAppend(out, "--", flag);
  });
}

// Help -------------------------------------------------------------------------

void PrintVerbs(FILE* out) {
  absl::FPrintF(out,
                "usage: sluice VERB [flags] [args]\n\n"
                "Throttles calls to AI model APIs (Anthropic, OpenAI) with token buckets\n"
                "that every process on this host shares through a shared-memory segment.\n\n"
                "verbs:\n");
  int width = 0;
  const std::vector<const Verb*> verbs = AllVerbs();
  for (const Verb* verb : verbs) width = std::max(width, static_cast<int>(verb->name.size()));
  for (const Verb* verb : verbs) {
    absl::FPrintF(out, "  %-*s  %s\n", width, verb->name, verb->summary);
  }
  absl::FPrintF(out,
                "\nRun 'sluice VERB --help' for a verb's flags. Exit status: 0 success, 75\n"
                "refused or timed out, 64 usage error, 1 any other error.\n");
}

// Lists the verb's flags from the flag registry, so that the help text, the
// default and the flag itself cannot drift apart.
void PrintVerbHelp(const Verb& verb) {
  absl::FPrintF(stdout, "usage: sluice %s\n\n%s\n\nflags:\n", verb.usage, verb.description);
  int width = 8;
  for (absl::string_view name : verb.flags) width = std::max(width, static_cast<int>(name.size()));
  for (absl::string_view name : verb.flags) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) continue;  // every name a verb lists is defined
    const std::string note = absl::c_linear_search(verb.required, name)
                                 ? "required"
                                 : absl::StrCat("default: ", flag->DefaultValue());
    absl::FPrintF(stdout, "  --%-*s  %s (%s)\n", width, name, flag->Help(), note);
  }
}

// `sluice help [VERB]`, `sluice --help`.
int RunHelp(int argc, char** argv) {
  if (argc < 3) {
    PrintVerbs(stdout);
    return kExitOk;
  }
  const Verb* verb = FindVerb(argv[2]);
  if (verb == nullptr) {
    absl::FPrintF(stderr, "sluice help: unknown verb '%s'; verbs are %s\n", argv[2], VerbNames());
    return kExitUsage;
  }
  PrintVerbHelp(*verb);
  return kExitOk;
}

// Flags ------------------------------------------------------------------------

// The flags named on a command line, found before absl parses them.
struct FlagScan {
  bool help = false;
  std::vector<std::string> given;  // the verb's flags that were given
  std::string error;               // the first flag the verb does not take
};

const absl::CommandLineFlag* VerbFlag(const Verb& verb, absl::string_view name) {
  if (!absl::c_linear_search(verb.flags, name)) return nullptr;
  return absl::FindCommandLineFlag(name);
}

std::string ForeignFlagError(const Verb& verb, absl::string_view arg) {
  return absl::StrCat("flag '", arg, "' is not one of ", verb.name, "'s: ", FlagList(verb));
}

// Reads `args` (what follows the verb) the way absl::ParseCommandLine will:
// "-f" or "--f", "=value" or the next argument as a non-boolean flag's value,
// "--nof" for a boolean, nothing after "--". Only the names are looked at,
// because absl would otherwise accept every flag linked into the binary
// (another verb's, or its own --flagfile) and answer --help its own way.
FlagScan ScanFlags(const Verb& verb, absl::Span<char* const> args) {
  FlagScan scan;
  for (size_t i = 0; i < args.size(); ++i) {
    const absl::string_view arg = args[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;  // a positional argument
    absl::string_view name = arg.substr(arg[1] == '-' ? 2 : 1);
    const bool has_value = name.find('=') != absl::string_view::npos;
    name = name.substr(0, name.find('='));
    if (name == "help" || name == "h") {
      scan.help = true;
      continue;
    }
    const absl::CommandLineFlag* flag = VerbFlag(verb, name);
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      const absl::CommandLineFlag* negated = VerbFlag(verb, name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) {
        flag = negated;
        name = name.substr(2);
      }
    }
    if (flag == nullptr) {
      if (scan.error.empty()) scan.error = ForeignFlagError(verb, arg);
      continue;
    }
    scan.given.emplace_back(name);
    if (!has_value && !flag->IsOfType<bool>()) ++i;  // skip the value
  }
  return scan;
}

// Flags take both spellings, git and curl's (--base-url) and absl's
// (--base_url): the name of every flag before "--" is rewritten in place to
// the underscore form absl knows. Values are left as they are, including a
// value given as the next argument (which may start with '-').
void NormalizeFlagNames(const Verb& verb, int argc, char** argv) {
  for (int i = 2; i < argc; ++i) {
    char* arg = argv[i];
    if (std::strcmp(arg, "--") == 0) break;
    if (arg[0] != '-' || arg[1] == '\0') continue;
    char* name = arg + (arg[1] == '-' ? 2 : 1);
    char* end = name;
    for (; *end != '\0' && *end != '='; ++end) {
      if (*end == '-') *end = '_';
    }
    const absl::CommandLineFlag* flag =
        VerbFlag(verb, absl::string_view(name, static_cast<size_t>(end - name)));
    if (flag != nullptr && *end != '=' && !flag->IsOfType<bool>()) ++i;  // its value
  }
}

// Set while absl::ParseCommandLine runs. absl reports a malformed value
// itself ("ERROR: Illegal value ...") and then calls std::exit(1); a bad value
// is a usage error here, so an exit handler turns that exit into EX_USAGE.
const Verb* parsing_verb = nullptr;

void ExitUsageIfParsing() {
  if (parsing_verb == nullptr) return;
  absl::FPrintF(stderr, "sluice %s: bad flag value (see above and 'sluice %s --help')\n",
                parsing_verb->name, parsing_verb->name);
  std::_Exit(kExitUsage);
}

// Parses the verb's flags with absl, returning the positional arguments.
std::vector<std::string> ParseFlags(const Verb& verb, int argc, char** argv) {
  std::vector<char*> absl_argv = {argv[0]};  // the verb itself is not absl's
  absl_argv.insert(absl_argv.end(), argv + 2, argv + argc);
  std::atexit(ExitUsageIfParsing);
  parsing_verb = &verb;
  std::vector<char*> rest =
      absl::ParseCommandLine(static_cast<int>(absl_argv.size()), absl_argv.data());
  parsing_verb = nullptr;
  return std::vector<std::string>(rest.begin() + 1, rest.end());  // rest[0] is argv[0]
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage("sluice VERB [flags] [args]; run 'sluice help' for the verbs");
  if (argc < 2) {
    PrintVerbs(stderr);
    return kExitUsage;
  }
  const absl::string_view first = argv[1];
  if (first == "help" || first == "--help" || first == "-help" || first == "-h") {
    return RunHelp(argc, argv);
  }
  const Verb* verb = FindVerb(first);
  if (verb == nullptr) {
    absl::FPrintF(stderr, "sluice: unknown verb '%s'; verbs are %s (see 'sluice help')\n", first,
                  VerbNames());
    return kExitUsage;
  }

  NormalizeFlagNames(*verb, argc, argv);
  const FlagScan scan = ScanFlags(*verb, absl::MakeConstSpan(argv + 2, argc - 2));
  if (scan.help) {
    PrintVerbHelp(*verb);
    return kExitOk;
  }
  if (!scan.error.empty()) return UsageError(*verb, scan.error);
  for (absl::string_view required : verb->required) {
    if (!absl::c_linear_search(scan.given, required)) {
      return UsageError(*verb, absl::StrCat("missing required flag --", required));
    }
  }

  Command cmd{.verb = verb, .args = ParseFlags(*verb, argc, argv), .given = scan.given};
  if (cmd.args.size() < verb->args.size()) {
    return UsageError(*verb, absl::StrCat("missing argument ", verb->args[cmd.args.size()]));
  }
  if (cmd.args.size() > verb->args.size() && !verb->more_args) {
    return UsageError(*verb, absl::StrCat("unexpected argument '", cmd.args[verb->args.size()],
                                          "'; usage: sluice ", verb->usage));
  }
  const int code = verb->run(cmd);
  // A report cut short (a full disk, a closed pipe) must not pass for success.
  if (std::fflush(stdout) != 0) {
    return Report(*verb, kExitError, absl::StrCat("writing output: ", std::strerror(errno)));
  }
  return code;
}

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) { return sluice::Main(argc, argv); }
