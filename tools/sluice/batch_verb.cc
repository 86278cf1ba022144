// sluice batch INPUT.jsonl --out RESULTS.jsonl: the throttled batch runner.
//
// Every input line ends with a result line, written (and flushed to the
// kernel) as soon as its request is done, so that a run killed at any moment
// -- kill -9 included -- resumes where it stopped: a restart with the same
// arguments reads RESULTS.jsonl, drops a torn last line, and sends only the
// lines without a result (the ones in flight at the crash among them), and,
// with --retry-failed, the lines whose result is "failed". A line's newer
// result supersedes its older one: readers count the last result per line.
//
// It calls the real API unless told --simulate, which runs the simulated
// provider in process (and marks every result line and the summary so). A
// problem of the whole batch -- the configuration cannot route its requests
// (a budget without a price for the model) -- stops it before anything is
// sent, with exit status 78 (EX_CONFIG), and marks no line done.
//
// Input lines take either shape, one per file in practice:
//   OpenAI Batch API:      {"custom_id", "method": "POST",
//                           "url": "/v1/chat/completions", "body": {...}}
//   Anthropic Message Batches: {"custom_id", "params": {...}}
// `body` / `params` is the request body of Chat Completions / Messages.
//
// Result lines:
//   {"line", "custom_id", "status": "succeeded" | "failed" | "invalid",
//    "response" (succeeded) | "error": {"class", "type", "http_status",
//    "message", "request_id"}, "usage", "attempts", "rate_limited",
//    "throttle_wait_ms", "request_id", "simulated" (only with --simulate)}
// in the order requests finish; "line" (1-based) ties each to its input line.

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
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
#include "sluice/client.h"
#include "sluice/clock.h"
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

// Input --------------------------------------------------------------------------

struct InputLine {
  size_t number = 0;  // 1-based
  absl::string_view text;
  std::string custom_id;  // empty when the line has none
  std::string error;      // non-empty: the line is invalid, and why
  std::optional<Provider> shape;
};

struct ParsedLine {
  std::string custom_id;
  std::optional<Provider> shape;
  nlohmann::json body;
  std::string error;  // "field: message", or empty
};

std::string CheckBody(const nlohmann::json& body, absl::string_view field, Provider shape) {
  if (!body.is_object()) return absl::StrCat(field, ": must be a JSON object");
  if (!body.contains("model") || !body["model"].is_string() ||
      body["model"].get_ref<const std::string&>().empty()) {
    return absl::StrCat(field, ".model: must be a non-empty string");
  }
  if (!body.contains("messages") || !body["messages"].is_array()) {
    return absl::StrCat(field, ".messages: must be an array");
  }
  if (shape == Provider::kAnthropic &&
      (!body.contains("max_tokens") || !body["max_tokens"].is_number_unsigned() ||
       body["max_tokens"].get<uint64_t>() == 0)) {
    return absl::StrCat(field, ".max_tokens: must be a positive integer");
  }
  return "";
}

// Reads one input line: its custom_id and shape even when some other part of
// it is wrong, so that the error result can name them.
ParsedLine ParseLine(absl::string_view text) {
  ParsedLine p;
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    p.error = absl::StrCat("not JSON: ", e.what());
    return p;
  }
  if (!doc.is_object()) {
    p.error = "a request line must be a JSON object";
    return p;
  }
  if (doc.contains("custom_id") && doc["custom_id"].is_string()) {
    p.custom_id = doc["custom_id"].get<std::string>();
  }
  for (const auto& [key, value] : doc.items()) {
    if (key != "custom_id" && key != "method" && key != "url" && key != "body" && key != "params") {
      p.error = absl::StrCat(key,
                             ": unknown field (a line has custom_id and either params, "
                             "or method, url and body)");
      return p;
    }
  }
  if (p.custom_id.empty()) {
    p.error = "custom_id: must be a non-empty string";
    return p;
  }
  const bool anthropic = doc.contains("params");
  const bool openai = doc.contains("body");
  if (anthropic == openai) {
    p.error = anthropic ? "both params (Anthropic) and body (OpenAI): give one"
                        : "params (Anthropic) or body (OpenAI): missing";
    return p;
  }
  p.shape = anthropic ? Provider::kAnthropic : Provider::kOpenAi;
  if (openai) {
    if (doc.contains("method") && doc["method"] != "POST") {
      p.error = "method: must be \"POST\"";
      return p;
    }
    if (doc.contains("url") && doc["url"] != "/v1/chat/completions") {
      p.error = "url: must be \"/v1/chat/completions\" (the one endpoint sluice batches)";
      return p;
    }
  }
  nlohmann::json& body = doc[anthropic ? "params" : "body"];
  p.error = CheckBody(body, anthropic ? "params" : "body", *p.shape);
  if (p.error.empty()) p.body = std::move(body);
  return p;
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
  std::string text;
  char buf[1 << 16];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), f)) > 0;) text.append(buf, n);
  const bool failed = std::ferror(f);
  std::fclose(f);
  if (failed) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return text;
}

// Splits `text` into lines (a last line without '\n' counts; "\r\n" too).
std::vector<absl::string_view> SplitLines(absl::string_view text) {
  std::vector<absl::string_view> lines;
  while (!text.empty()) {
    size_t end = text.find('\n');
    absl::string_view line = text.substr(0, end);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (end == absl::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return lines;
}

// Results -------------------------------------------------------------------------

// The results file, locked against a second `sluice batch` on it, and what
// it already holds.
struct Results {
  int fd = -1;
  std::vector<bool> done;  // by input line number: its last result is final
  size_t done_count = 0;
  size_t retried = 0;  // lines whose last result failed, sent again (--retry-failed)
  bool dropped_torn_line = false;
  ~Results() {
    if (fd >= 0) close(fd);
  }
};

absl::StatusOr<std::unique_ptr<Results>> OpenResults(const std::string& path,
                                                     const std::vector<InputLine>& input,
                                                     const std::string& input_path,
                                                     bool retry_failed) {
  auto results = std::make_unique<Results>();
  results->fd = open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (results->fd < 0) {
    return absl::PermissionDeniedError(absl::StrCat(path, ": ", std::strerror(errno)));
  }
  if (flock(results->fd, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": in use by another sluice batch (it holds the file's lock)"));
  }
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  // A crash mid-write leaves at most one torn line, the last: cut it off.
  const size_t keep = text->rfind('\n') == std::string::npos ? 0 : text->rfind('\n') + 1;
  if (keep < text->size()) {
    if (ftruncate(results->fd, static_cast<off_t>(keep)) != 0) {
      return absl::InternalError(
          absl::StrCat(path, ": truncating a torn last line: ", std::strerror(errno)));
    }
    text->resize(keep);
    results->dropped_torn_line = true;
  }
  results->done.assign(input.size() + 1, false);
  std::vector<bool> failed(input.size() + 1, false);  // by line: its last result failed
  size_t k = 0;
  for (absl::string_view line : SplitLines(*text)) {
    ++k;
    const nlohmann::json doc = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!doc.is_object() || !doc.contains("line") || !doc["line"].is_number_unsigned()) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, ":", k, ": not a sluice batch result line; refusing to append to this file"));
    }
    const uint64_t n = doc["line"].get<uint64_t>();
    if (n == 0 || n > input.size()) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ":", k, ": result for line ", n, ", but ", input_path, " has ",
                       input.size(), " lines; are these the results of another input?"));
    }
    const std::string& expected = input[n - 1].custom_id;
    const std::string found = doc.contains("custom_id") && doc["custom_id"].is_string()
                                  ? doc["custom_id"].get<std::string>()
                                  : std::string();
    if (found != expected) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, ":", k, ": result for line ", n, " has custom_id '", found, "' but ", input_path,
          ":", n, " has '", expected, "'; are these the results of another input?"));
    }
    // The last result of a line is the one that counts.
    results->done[n] = true;
    failed[n] = doc.value("status", "") == "failed";
  }
  for (size_t n = 1; n <= input.size(); ++n) {
    if (retry_failed && failed[n]) {
      results->done[n] = false;
      ++results->retried;
    }
    results->done_count += results->done[n];
  }
  return results;
}

// Appends one line with as few write(2) calls as the kernel allows (one, in
// practice), so that a kill leaves at most a torn tail, never a gap.
absl::Status AppendLine(int fd, const Json& doc, const std::string& path) {
  std::string line = doc.dump(-1, ' ', false, Json::error_handler_t::replace);
  line.push_back('\n');
  absl::string_view rest = line;
  while (!rest.empty()) {
    const ssize_t n = write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::DataLossError(absl::StrCat(path, ": ", std::strerror(errno)));
    rest.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

Json ResultJson(const InputLine& line, const CallResult& r, bool simulated) {
  Json doc;
  doc["line"] = line.number;
  doc["custom_id"] = line.custom_id;
  doc["status"] = r.status.ok() ? "succeeded" : "failed";
  if (r.status.ok()) {
    doc["response"] = r.response;
  } else {
    doc["error"] = {{"class", FailureClass(r)},
                    {"type", r.error.provider_type},
                    {"http_status", r.http_status},
                    {"message", std::string(r.status.message())},
                    {"request_id", r.error.request_id}};
  }
  doc["usage"] = UsageJson(r.usage);
  doc["attempts"] = r.attempts;
  doc["rate_limited"] = r.rate_limited;
  doc["throttle_wait_ms"] = absl::ToDoubleMilliseconds(r.throttle_wait);
  doc["request_id"] = r.request_id;
  if (simulated) doc["simulated"] = true;
  return doc;
}

Json InvalidJson(const InputLine& line, const std::string& input_path) {
  Json doc;
  doc["line"] = line.number;
  doc["custom_id"] = line.custom_id;
  doc["status"] = "invalid";
  doc["error"] = {{"class", "invalid_line"},
                  {"message", absl::StrCat(input_path, ":", line.number, ": ", line.error)}};
  return doc;
}

// Progress and summary --------------------------------------------------------------

struct Tally {
  bool simulated = false;  // against the simulated provider (--simulate)
  size_t total = 0;        // input lines
  size_t retried = 0;      // lines failed before, sent again (--retry-failed)
  size_t already = 0;      // finished by an earlier run
  size_t this_run = 0;     // to finish in this run
  size_t finished = 0;     // finished in this run
  size_t succeeded = 0;
  size_t invalid = 0;
  std::map<std::string, size_t> failed;  // by class
  uint64_t rate_limited = 0;
  uint64_t retries = 0;
  uint64_t attempts = 0;  // requests the provider was sent, retries included
  std::vector<double> waits_s;
  int64_t start_ns = 0;
  double sent_elapsed_s = 0;  // from the first request to the last answer
};

size_t FailedCount(const Tally& t) {
  size_t n = 0;
  for (const auto& [name, count] : t.failed) n += count;
  return n;
}

std::string ShortDuration(double seconds) {
  return absl::FormatDuration(absl::Seconds(std::round(std::max(0.0, seconds))));
}

std::string ProgressText(const Tally& t, bool bar) {
  const size_t done = t.already + t.finished;
  const double elapsed = static_cast<double>(Clock::MonotonicNanos() - t.start_ns) / 1e9;
  const double rate = elapsed > 0 ? static_cast<double>(t.finished) / elapsed : 0;
  const std::string eta =
      rate > 0 ? ShortDuration(static_cast<double>(t.this_run - t.finished) / rate) : "?";
  const double fraction =
      t.total > 0 ? static_cast<double>(done) / static_cast<double>(t.total) : 1;
  std::string text;
  if (bar) {
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(fraction * kWidth);
    text = absl::StrCat("[", std::string(filled, '#'), std::string(kWidth - filled, '.'), "] ");
  }
  absl::StrAppendFormat(&text, "%d/%d done (%.0f%%), %.1f req/s, %d 429s, %d failed, ETA %s", done,
                        t.total, 100 * fraction, rate, t.rate_limited, FailedCount(t) + t.invalid,
                        eta);
  return text;
}

// Prints progress on stderr (stdout is the summary's): redrawn in place on a
// terminal, a plain line every --progress_interval otherwise.
class Progress {
 public:
  Progress(const Tally& tally, absl::Duration interval)
      : tally_(tally), tty_(isatty(STDERR_FILENO) == 1), interval_(interval) {}
  void Update() {
    const int64_t now = Clock::MonotonicNanos();
    const int64_t every =
        tty_ ? 100'000'000 : std::max<int64_t>(1, absl::ToInt64Nanoseconds(interval_));
    if (now - last_ns_ < every) return;
    last_ns_ = now;
    Print();
  }
  void Finish() {
    if (tty_) {
      Print();
      absl::FPrintF(stderr, "\n");
    }
  }

 private:
  void Print() {
    if (tty_) {
      absl::FPrintF(stderr, "\r\033[K%s", ProgressText(tally_, true));
    } else {
      absl::FPrintF(stderr, "sluice batch: %s\n", ProgressText(tally_, false));
    }
  }
  const Tally& tally_;
  const bool tty_;
  const absl::Duration interval_;
  int64_t last_ns_ = 0;
};

// The tightest requests-per-minute bucket on the batch's route (scope path
// and provider); limit 0 when none applies.
struct RpmLimit {
  uint64_t limit = 0;
  uint64_t burst = 0;
};

RpmLimit ConfiguredRpm(const LimitsConfig& limits, Provider provider, const std::string& model,
                       const std::string& scope) {
  RpmLimit rpm;
  auto consider = [&](const std::vector<BucketSpec>& specs) {
    for (const BucketSpec& spec : specs) {
      if (spec.kind != LimitKind::kRequestsPerMinute) continue;
      if (rpm.limit == 0 || spec.limit < rpm.limit) rpm = {spec.limit, spec.config.capacity};
    }
  };
  auto it = limits.providers.find(std::string(ProviderName(provider)));
  if (it != limits.providers.end()) {
    consider(ProviderBuckets(limits, it->second, FindModelClass(it->second, model)));
  }
  for (const ScopeLimits* s : ResolveScope(limits, scope).scopes)
    consider(ScopeBuckets(limits, *s));
  return rpm;
}

Json SummaryJson(const Tally& t, RpmLimit configured, double time_scale) {
  const double minutes = t.sent_elapsed_s * time_scale / 60;
  const double rpm = minutes > 0 ? static_cast<double>(t.succeeded + FailedCount(t)) / minutes : 0;
  Json failed = Json::object();
  for (const auto& [name, count] : t.failed) failed[name] = count;
  const double allowed = configured.limit > 0
                             ? std::floor(static_cast<double>(configured.burst) +
                                          static_cast<double>(configured.limit) * minutes)
                             : 0.0;
  return {
      {"requests", t.total},
      {"simulated", t.simulated},
      {"already_done", t.already},
      {"this_run", t.this_run},
      {"retried_failed", t.retried},
      {"succeeded", t.succeeded},
      {"failed", FailedCount(t)},
      {"failed_by_class", failed},
      {"invalid", t.invalid},
      {"rate_limit_errors", t.rate_limited},
      {"retries", t.retries},
      {"elapsed_seconds", t.sent_elapsed_s},
      {"throughput_rpm", rpm},
      {"configured_rpm", configured.limit},
      {"configured_burst", configured.burst},
      {"throughput_ratio",
       configured.limit > 0 ? rpm / static_cast<double>(configured.limit) : 0.0},
      // What the limit let through in the elapsed time (its burst, then its
      // rate), and the share of it the batch used.
      {"allowed", allowed},
      {"limit_used", allowed > 0 ? static_cast<double>(t.attempts) / allowed : 0.0},
      {"throttle_wait_seconds", WaitPercentilesJson(t.waits_s)},
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

// Resolves the route of every line still to send, before anything is sent or
// written: a route that cannot be resolved (a budget with no price for the
// model) is a problem of the configuration, the same for every such line, so
// it stops the whole batch rather than failing line after line.
absl::Status CheckRoutes(Policy& policy, const std::string& scope, Provider provider,
                         const std::vector<InputLine>& input, const Results& results) {
  std::set<std::string> models;
  for (const InputLine& line : input) {
    if (results.done[line.number] || !line.error.empty()) continue;
    models.insert(ParseLine(line.text).body.value("model", ""));
  }
  for (const std::string& model : models) {
    absl::StatusOr<const Route*> route = policy.Resolve(scope, ProviderName(provider), model);
    if (!route.ok()) return route.status();
  }
  return absl::OkStatus();
}

int RunBatch(const Command& cmd) {
  const Verb& verb = *cmd.verb;
  const std::string& input_path = cmd.args[0];
  const std::string out_path = absl::GetFlag(FLAGS_out);
  if (out_path.empty()) return UsageError(verb, "--out: the results file is required");
  const int max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  if (max_in_flight < 1) return UsageError(verb, "--max_in_flight must be at least 1");
  const double time_scale = cmd.Given("time_scale") ? absl::GetFlag(FLAGS_time_scale) : 1.0;
  if (!(time_scale > 0) || time_scale > 1e6) {
    return UsageError(verb, "--time_scale must be in (0, 1e6]");
  }
  absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  if (timeout < absl::ZeroDuration()) return UsageError(verb, "--timeout must not be negative");
  if (timeout == absl::ZeroDuration()) timeout = absl::Hours(1);
  std::optional<Provider> provider;
  if (cmd.Given("provider")) {
    absl::StatusOr<Provider> parsed = ParseProvider(absl::GetFlag(FLAGS_provider));
    if (!parsed.ok())
      return UsageError(verb, absl::StrCat("--provider: ", parsed.status().message()));
    provider = *parsed;
  }
  // The real API unless asked otherwise: a batch meant for it must never
  // quietly run against the simulator.
  const bool simulated = absl::GetFlag(FLAGS_simulate);
  if (simulated && cmd.Given("base_url")) {
    return UsageError(verb, "--simulate and --base-url: give one (the simulator has its own URL)");
  }

  // Read and check every line first: the total, the shape, and the invalid
  // lines' messages.
  absl::StatusOr<std::string> text = ReadWholeFile(input_path);
  if (!text.ok()) return Fail(cmd, text.status());
  std::vector<InputLine> input;
  for (absl::string_view line_text : SplitLines(*text)) {
    InputLine line;
    line.number = input.size() + 1;
    line.text = line_text;
    ParsedLine parsed = ParseLine(line_text);
    line.custom_id = std::move(parsed.custom_id);
    line.error = std::move(parsed.error);
    line.shape = parsed.shape;
    input.push_back(std::move(line));
  }
  std::map<std::string, size_t> first_seen;
  for (InputLine& line : input) {
    if (!provider && line.shape && line.error.empty()) provider = line.shape;
    if (line.custom_id.empty()) continue;
    auto [it, inserted] = first_seen.emplace(line.custom_id, line.number);
    if (!inserted && line.error.empty()) {
      line.error = absl::StrCat("custom_id: '", line.custom_id, "' repeats line ", it->second);
    }
  }
  if (!provider) provider = Provider::kAnthropic;
  for (InputLine& line : input) {
    if (line.error.empty() && line.shape && *line.shape != *provider) {
      line.error = absl::StrCat(
          *line.shape == Provider::kOpenAi ? "an OpenAI line (body)" : "an Anthropic line (params)",
          " in a batch for ", ProviderName(*provider),
          cmd.Given("provider") ? " (--provider)" : " (the shape of its first valid line)");
    }
  }

  absl::StatusOr<std::unique_ptr<Results>> results =
      OpenResults(out_path, input, input_path, absl::GetFlag(FLAGS_retry_failed));
  if (!results.ok()) return Fail(cmd, results.status());
  Results& res = **results;

  // Limits, provider, store, client.
  absl::StatusOr<LimitsConfig> limits =
      simulated && !cmd.Given("config")
          ? ParseLimitsConfig(DemoLimitsToml(), "demo-limits.toml (built in)")
          : LimitsFromFlags();
  if (!limits.ok()) return Fail(cmd, limits.status());
  std::unique_ptr<FakeProvider> fake;
  ClientOptions options;
  options.provider = *provider;
  options.scope = absl::GetFlag(FLAGS_scope);
  options.throttle_timeout = timeout;
  options.seed = absl::GetFlag(FLAGS_seed);
  options.provider_time_scale = time_scale;
  if (simulated) {
    FakeProviderOptions fake_options;
    fake_options.time_scale = time_scale;
    fake_options.seed = absl::GetFlag(FLAGS_seed);
    absl::StatusOr<std::unique_ptr<FakeProvider>> started = FakeProvider::Start(fake_options);
    if (!started.ok()) return Fail(cmd, started.status());
    fake = *std::move(started);
    UseSimulatedProvider(*fake, fake_options, &options);
  } else {
    options.base_url = absl::GetFlag(FLAGS_base_url);
  }
  // The simulated provider lives in this process, so its limits are this
  // process's alone; a real provider's are shared through the segment with
  // every other process on the host.
  std::unique_ptr<Segment> segment;
  std::unique_ptr<Store> store;
  if (simulated) {
    store = NewLocalStore();
  } else {
    absl::StatusOr<std::unique_ptr<Segment>> opened = Segment::Open(absl::GetFlag(FLAGS_segment));
    if (!opened.ok()) return Fail(cmd, opened.status());
    segment = *std::move(opened);
    store = NewSegmentStore(segment.get());
  }
  absl::StatusOr<std::unique_ptr<Policy>> policy =
      Policy::Create(TimeScaled(*limits, time_scale), store.get());
  if (!policy.ok()) return Fail(cmd, policy.status());
  if (absl::Status s = CheckRoutes(**policy, options.scope, *provider, input, res); !s.ok()) {
    return Report(verb, kExitConfig,
                  absl::StrCat(s.message(), " (nothing was sent; no line is marked done)"));
  }
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options, policy->get());
  if (!client.ok()) return Fail(cmd, client.status());

  Tally tally;
  tally.simulated = simulated;
  tally.total = input.size();
  tally.already = res.done_count;
  tally.retried = res.retried;
  tally.start_ns = Clock::MonotonicNanos();
  if (res.dropped_torn_line) {
    absl::FPrintF(stderr, "sluice batch: %s: dropped a torn last line (a crash mid-write)\n",
                  out_path);
  }
  // Invalid lines are answered at once; the rest are sent.
  std::vector<size_t> pending;  // indexes into `input`
  absl::Status write_status;
  for (size_t i = 0; i < input.size(); ++i) {
    if (res.done[input[i].number]) continue;
    ++tally.this_run;
    if (input[i].error.empty()) {
      pending.push_back(i);
      continue;
    }
    write_status.Update(AppendLine(res.fd, InvalidJson(input[i], input_path), out_path));
    ++tally.invalid;
    ++tally.finished;
  }
  if (!write_status.ok()) return Fail(cmd, write_status);

  std::string model;
  if (!pending.empty()) {
    model = ParseLine(input[pending[0]].text).body.value("model", "");
  }
  const RpmLimit configured = ConfiguredRpm(*limits, *provider, model, options.scope);
  Progress progress(tally, absl::GetFlag(FLAGS_progress_interval));
  size_t next = 0;
  std::vector<size_t> by_index;  // Run's index -> index into `input`
  int64_t first_sent = 0, last_done = 0;
  int64_t last_sync = Clock::MonotonicNanos();
  (*client)->Run(
      [&](CallRequest* request) {
        if (next == pending.size() || !write_status.ok()) return false;
        const size_t i = pending[next++];
        request->body = ParseLine(input[i].text).body;
        request->scope = "";
        request->headers = {{kCustomIdHeader, input[i].custom_id}};
        by_index.push_back(i);
        if (first_sent == 0) first_sent = Clock::MonotonicNanos();
        return true;
      },
      max_in_flight,
      [&](size_t index, CallResult r) {
        const InputLine& line = input[by_index[index]];
        write_status.Update(AppendLine(res.fd, ResultJson(line, r, simulated), out_path));
        last_done = Clock::MonotonicNanos();
        ++tally.finished;
        tally.rate_limited += static_cast<uint64_t>(r.rate_limited);
        tally.retries += r.attempts > 1 ? static_cast<uint64_t>(r.attempts - 1) : 0;
        tally.attempts += static_cast<uint64_t>(r.attempts);
        tally.waits_s.push_back(absl::ToDoubleSeconds(r.throttle_wait));
        if (r.status.ok()) {
          ++tally.succeeded;
        } else {
          ++tally.failed[FailureClass(r)];
        }
        // Written lines are in the kernel at once (a kill loses none); a sync
        // now and then bounds what a power cut could.
        if (last_done - last_sync > 1'000'000'000) {
          fdatasync(res.fd);
          last_sync = last_done;
        }
        progress.Update();
      });
  fdatasync(res.fd);
  progress.Finish();
  if (!write_status.ok()) return Fail(cmd, write_status);
  tally.sent_elapsed_s = first_sent > 0 ? static_cast<double>(last_done - first_sent) / 1e9 : 0;

  const Json summary = SummaryJson(tally, configured, time_scale);
  if (absl::GetFlag(FLAGS_json)) {
    absl::PrintF("%s\n", summary.dump(2));
  } else {
    PrintSummary(summary, input_path, out_path);
  }
  // Every line has its result; say so in the status only when all succeeded.
  return FailedCount(tally) + tally.invalid == 0 ? kExitOk : kExitError;
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
