// `sluice call PROMPT`: one throttled call to a model through the limits of
// --config, printing the reply (or with --json the whole result).

#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "sluice/batch_result.h"
#include "sluice/client.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/provider.h"
#include "sluice/segment.h"
#include "sluice/store.h"
#include "tools/sluice/cli.h"

namespace sluice {
namespace {

int RunCall(const Command& cmd) {
  const Verb& verb = *cmd.verb;
  absl::StatusOr<Provider> provider = ParseProvider(absl::GetFlag(FLAGS_provider));
  if (!provider.ok()) return UsageError(verb, provider.status().message());
  if (absl::GetFlag(FLAGS_max_tokens) == 0) return UsageError(verb, "--max-tokens must be >= 1");
  // --timeout is the longest wait in the throttle; 0 (its default) means 60 s.
  absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  if (timeout < absl::ZeroDuration()) return UsageError(verb, "--timeout must not be negative");
  if (timeout == absl::ZeroDuration()) timeout = absl::Seconds(60);

  absl::StatusOr<LimitsConfig> limits = LimitsFromFlags();
  if (!limits.ok()) return Fail(cmd, limits.status());
  absl::StatusOr<std::unique_ptr<Segment>> segment = Segment::Open(absl::GetFlag(FLAGS_segment));
  if (!segment.ok()) return Fail(cmd, segment.status());
  std::unique_ptr<Store> local = NewSegmentStore(segment->get());
  std::unique_ptr<Store> fleet;
  absl::StatusOr<Store*> store = StoreForLimits(*limits, local.get(), &fleet);
  if (!store.ok()) return Fail(cmd, store.status());
  absl::StatusOr<std::unique_ptr<Policy>> policy = Policy::Create(*limits, *store);
  if (!policy.ok()) return Fail(cmd, policy.status());

  ClientOptions options;
  options.provider = *provider;
  options.base_url = absl::GetFlag(FLAGS_base_url);
  options.scope = absl::GetFlag(FLAGS_scope);
  options.throttle_timeout = timeout;
  options.require_api_key = true;  // the call has no key of its own: say so before anything
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
    doc["usage"] = batch::UsageJson(r.usage);
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

constexpr absl::string_view kCallFlags[] = {
    "provider", "base_url", "model", "max_tokens", "scope", "config", "segment", "timeout", "json"};
constexpr absl::string_view kCallArgs[] = {"PROMPT"};

const Verb kCallVerb = {
    .order = 50,
    .name = "call",
    .usage =
        "call [--provider anthropic|openai] [--base-url URL] [--model M] "
        "[--max-tokens N] [--scope S] [--config FILE] [--timeout D] [--json] PROMPT",
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

}  // namespace
}  // namespace sluice
