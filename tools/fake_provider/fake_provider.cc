// The simulated provider. One httplib::Server; each request runs on one of
// its worker threads: authenticate, draw this request's random values,
// validate, inject the faults that come before the limits, charge the key's
// buckets all-or-nothing, settle them to the generated usage, then answer
// (or fail to, for the delivery faults).

#include "tools/fake_provider/fake_provider.h"

#include <dirent.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "sluice/client.h"
#include "sluice/clock.h"
#include "tools/judge/exact_bucket.h"

namespace sluice {
namespace {

// ordered_json keeps fields in the order the providers send them.
using Json = nlohmann::ordered_json;

constexpr char kJson[] = "application/json";

// Request bodies nested deeper than this are refused. A chat body needs
// about 6 levels; without a cap a 4 MiB body of "[[[[..." would build a
// tree of millions of nodes before failing.
constexpr int kMaxJsonDepth = 64;

// Requests served on one connection before it is closed.
constexpr size_t kKeepAliveMaxRequests = 100;

// The slow_body fault: the body goes out in this many pieces, each after a
// pause, about 400 ms in all (real time: time_scale does not apply).
constexpr int kSlowBodyPieces = 8;
constexpr absl::Duration kSlowBodyPause = absl::Milliseconds(50);

// Serializes a reply. Strings echoed from requests (the model name) were
// valid UTF-8 when parsed, but `replace` keeps dump() from ever throwing.
std::string Dump(const Json& doc) {
  return doc.dump(-1, ' ', false, Json::error_handler_t::replace);
}

bool ValidRate(double rate) { return rate >= 0 && rate <= 1; }  // false for NaN too

// The bucket behind a limit of `per_minute` permits per simulated minute: it
// refills per_minute every simulated minute (in real ns, so time_scale
// applies) and holds bucket_span's share of them, at least one.
ExactBucketConfig LimitBucket(uint64_t per_minute, const FakeProviderOptions& o) {
  const __int128 span_ns = absl::ToInt64Nanoseconds(o.bucket_span);
  const __int128 held = per_minute * span_ns / absl::ToInt64Nanoseconds(absl::Minutes(1));
  return {.permits = per_minute,
          .period_ns = absl::ToInt64Nanoseconds(absl::Minutes(1) / o.time_scale),
          .capacity = static_cast<uint64_t>(std::max<__int128>(held, 1))};
}

absl::Status ValidateOptions(const FakeProviderOptions& o) {
  if (o.port < 0 || o.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port must be in [0, 65535], got ", o.port));
  }
  if (!(o.time_scale > 0) || !std::isfinite(o.time_scale)) {
    return absl::InvalidArgumentError(
        absl::StrCat("time_scale must be positive and finite, got ", o.time_scale));
  }
  if (o.bucket_span <= absl::ZeroDuration() || o.bucket_span > absl::Minutes(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bucket_span must be in (0, 1m], got ", absl::FormatDuration(o.bucket_span)));
  }
  if (!o.unlimited) {
    const std::pair<const char*, uint64_t> limits[] = {
        {"rpm", o.rpm}, {"itpm", o.itpm}, {"otpm", o.otpm}, {"tpm", o.tpm}};
    for (const auto& [name, limit] : limits) {
      if (limit == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " must be at least 1 (or pass unlimited)"));
      }
      // The bucket each key will get: an extreme time_scale can make a
      // simulated minute shorter than a nanosecond or longer than a bucket
      // can count.
      const absl::Status s = ExactBucket::Validate(LimitBucket(limit, o));
      if (!s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " ", limit, " at time_scale ", o.time_scale, ": ", s.message()));
      }
    }
  }
  if (o.latency_mean < absl::ZeroDuration() || o.latency_jitter < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("latency_mean and latency_jitter must not be negative");
  }
  if (o.max_output_tokens == 0 || o.default_max_tokens == 0) {
    return absl::InvalidArgumentError(
        "max_output_tokens and default_max_tokens must be at least 1");
  }
  const std::pair<const char*, double> rates[] = {
      {"overloaded_rate", o.overloaded_rate},
      {"server_error_rate", o.server_error_rate},
      {"insufficient_quota_rate", o.insufficient_quota_rate},
      {"spend_limit_rate", o.spend_limit_rate},
      {"malformed_json_rate", o.malformed_json_rate},
      {"truncated_body_rate", o.truncated_body_rate},
      {"slow_body_rate", o.slow_body_rate},
      {"reset_rate", o.reset_rate}};
  for (const auto& [name, rate] : rates) {
    if (!ValidRate(rate)) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must be in [0, 1], got ", rate));
    }
  }
  if (o.threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("threads must be at least 1, got ", o.threads));
  }
  if (o.max_body_bytes == 0) return absl::InvalidArgumentError("max_body_bytes must be positive");
  return absl::OkStatus();
}

// Draws -----------------------------------------------------------------------

// The random values one request may need, all drawn at once so that every
// authenticated request consumes the same amount of the sequence whatever
// happens to it. Each is uniform in [0, 1).
struct Draws {
  double overloaded;
  double server_error;
  double insufficient_quota;
  double spend_limit;
  double reset;
  double truncated_body;
  double malformed_json;
  double slow_body;
  double output;   // picks the output length in [1, max_tokens]
  double latency;  // picks the latency in mean +- jitter
};

// mt19937_64 rather than absl::BitGen: its sequence is fixed by the standard,
// so a seed means the same run on every platform and Abseil version.
class Generator {
 public:
  explicit Generator(uint64_t seed) : engine_(seed) {}

  Draws Next() {
    absl::MutexLock lock(&mu_);
    return {Uniform(), Uniform(), Uniform(), Uniform(), Uniform(),
            Uniform(), Uniform(), Uniform(), Uniform(), Uniform()};
  }

 private:
  // 53 random bits as a double in [0, 1), exactly, without relying on a
  // library distribution whose algorithm may differ between implementations.
  double Uniform() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
  }

  absl::Mutex mu_;
  std::mt19937_64 engine_ ABSL_GUARDED_BY(mu_);
};

// Request bodies -------------------------------------------------------------------

// A chat request reduced to what the simulation needs.
struct ChatRequest {
  std::string model;
  uint64_t max_tokens = 0;  // as given, or the default for OpenAI
  uint64_t input_tokens = 0;
};

// Why a body was refused: the field (a JSON path such as "messages.0.content")
// and what is wrong with it. `code` is OpenAI's error code for it.
struct BadRequest {
  std::string param;
  std::string problem;
  std::string code;
};

BadRequest Missing(std::string param) {
  return {std::move(param), "Field required", "missing_required_parameter"};
}

BadRequest WrongType(std::string param, absl::string_view expected) {
  return {std::move(param), absl::StrCat("Input should be ", expected), "invalid_type"};
}

// Adds the UTF-8 bytes of a content value (a string, or an array of parts
// whose "text" counts) to *bytes. Parts without text (images, tool calls)
// count nothing: the simulation counts text only.
std::optional<BadRequest> AddContentBytes(const Json& content, const std::string& param,
                                          uint64_t* bytes) {
  if (content.is_string()) {
    *bytes += content.get_ref<const std::string&>().size();
    return std::nullopt;
  }
  if (!content.is_array()) return WrongType(param, "a valid string or list of content blocks");
  for (size_t i = 0; i < content.size(); ++i) {
    const Json& part = content[i];
    if (!part.is_object()) return WrongType(absl::StrCat(param, ".", i), "a valid object");
    const auto text = part.find("text");
    if (text == part.end()) continue;
    if (!text->is_string()) {
      return WrongType(absl::StrCat(param, ".", i, ".text"), "a valid string");
    }
    *bytes += text->get_ref<const std::string&>().size();
  }
  return std::nullopt;
}

// Reads an optional integer field that must be >= 1. Absent (or null): 0.
std::optional<BadRequest> ReadMaxTokens(const Json& body, const char* field, uint64_t* out) {
  const auto it = body.find(field);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer()) return WrongType(field, "a valid integer");
  if (!it->is_number_unsigned() || it->get<uint64_t>() == 0) {
    return BadRequest{field, "Input should be greater than or equal to 1",
                      "integer_below_min_value"};
  }
  *out = it->get<uint64_t>();
  return std::nullopt;
}

// What the two APIs' bodies have in common; they differ in the details.
struct BodyRules {
  bool max_tokens_required;  // Anthropic: max_tokens; OpenAI: optional, two names
  bool null_content_ok;      // OpenAI assistant messages may carry no content
  bool system_field;         // Anthropic: a top-level "system"
};

constexpr BodyRules kAnthropicRules = {true, false, true};
constexpr BodyRules kOpenAiRules = {false, true, false};

// Validates a chat body and counts its input tokens (see the header). On a
// bad body, returns what is wrong; `*out` is then unspecified.
std::optional<BadRequest> ParseChat(const std::string& text, const BodyRules& rules,
                                    const FakeProviderOptions& options, ChatRequest* out) {
  bool too_deep = false;
  const Json body = Json::parse(
      text,
      [&too_deep](int depth, Json::parse_event_t, Json&) {
        if (depth <= kMaxJsonDepth) return true;
        too_deep = true;
        return false;  // keep nothing below the cap
      },
      /*allow_exceptions=*/false);
  if (too_deep) {
    return BadRequest{
        "", absl::StrCat("the body is nested more than ", kMaxJsonDepth, " levels deep"), ""};
  }
  if (body.is_discarded()) return BadRequest{"", "the body is not valid JSON", ""};
  if (!body.is_object()) return BadRequest{"", "the body must be a JSON object", ""};

  const auto model = body.find("model");
  if (model == body.end()) return Missing("model");
  if (!model->is_string()) return WrongType("model", "a valid string");
  out->model = model->get<std::string>();

  const auto stream = body.find("stream");
  if (stream != body.end() && stream->is_boolean() && stream->get<bool>()) {
    return BadRequest{"stream", "streaming is not supported by the simulated provider",
                      "unsupported_value"};
  }

  uint64_t max_tokens = 0;
  if (rules.max_tokens_required) {
    if (!body.contains("max_tokens")) return Missing("max_tokens");
    if (auto bad = ReadMaxTokens(body, "max_tokens", &max_tokens)) return bad;
    if (max_tokens == 0) return WrongType("max_tokens", "a valid integer");  // it was null
  } else {
    // max_completion_tokens replaced max_tokens; the newer name wins.
    if (auto bad = ReadMaxTokens(body, "max_tokens", &max_tokens)) return bad;
    if (auto bad = ReadMaxTokens(body, "max_completion_tokens", &max_tokens)) return bad;
    if (max_tokens == 0) max_tokens = options.default_max_tokens;
  }
  if (max_tokens > options.max_output_tokens) {
    return BadRequest{
        "max_tokens",
        absl::StrCat(max_tokens, " > ", options.max_output_tokens,
                     ", which is the maximum allowed number of output tokens for ", out->model),
        "invalid_value"};
  }
  out->max_tokens = max_tokens;

  uint64_t bytes = 0;
  if (rules.system_field) {
    const auto system = body.find("system");
    if (system != body.end() && !system->is_null()) {
      if (auto bad = AddContentBytes(*system, "system", &bytes)) return bad;
    }
  }
  const auto messages = body.find("messages");
  if (messages == body.end()) return Missing("messages");
  if (!messages->is_array()) return WrongType("messages", "a valid list");
  if (messages->empty()) {
    return BadRequest{"messages", "at least one message is required", "empty_array"};
  }
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& message = (*messages)[i];
    const std::string param = absl::StrCat("messages.", i);
    if (!message.is_object()) return WrongType(param, "a valid object");
    const auto role = message.find("role");
    if (role == message.end()) return Missing(param + ".role");
    if (!role->is_string()) return WrongType(param + ".role", "a valid string");
    const auto content = message.find("content");
    if (content == message.end() || content->is_null()) {
      if (rules.null_content_ok) continue;
      return Missing(param + ".content");
    }
    if (auto bad = AddContentBytes(*content, param + ".content", &bytes)) return bad;
  }
  out->input_tokens = (bytes + 3) / 4 + 4 * uint64_t{messages->size()};
  return std::nullopt;
}

std::string ReplyText(uint64_t words) {
  std::string text;
  text.reserve(words * 4);
  for (uint64_t i = 0; i < words; ++i) text.append(i == 0 ? "tok" : " tok");
  return text;
}

// The reset fault -------------------------------------------------------------------

std::string NumericHost(const sockaddr_storage& addr, socklen_t len) {
  char host[NI_MAXHOST];
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, host, sizeof(host), nullptr, 0,
                  NI_NUMERICHOST) != 0) {
    return "";
  }
  return host;
}

int Port(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
  }
  if (addr.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
  }
  return -1;
}

// Whether `fd` is the connection `req` arrived on.
bool IsConnectionOf(int fd, const httplib::Request& req) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  sockaddr_storage local{}, peer{};
  socklen_t local_len = sizeof(local), peer_len = sizeof(peer);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0 ||
      getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) {
    return false;
  }
  return Port(local) == req.local_port && Port(peer) == req.remote_port &&
         NumericHost(peer, peer_len) == req.remote_addr &&
         NumericHost(local, local_len) == req.local_addr;
}

// Drops the connection `req` arrived on, without a response: a reset.
// httplib does not hand a handler its connection, so the socket is found
// among this process's descriptors by the addresses httplib recorded in the
// request. It stays open (httplib closes it); shutting it down makes every
// write fail, and a zero linger makes the close send RST. The connection is
// served by the calling thread, so it cannot be closed while this runs.
// Returns false if the socket was not found.
bool DropConnection(const httplib::Request& req) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return false;
  bool dropped = false;
  while (const dirent* entry = readdir(dir)) {
    int fd;
    if (!absl::SimpleAtoi(entry->d_name, &fd) || fd == dirfd(dir) || !IsConnectionOf(fd, req)) {
      continue;
    }
    const linger abort_on_close = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof(abort_on_close));
    shutdown(fd, SHUT_RDWR);
    dropped = true;
    break;
  }
  closedir(dir);
  return dropped;
}

// Rate-limit headers ----------------------------------------------------------------

// Anthropic rounds token counts in its headers to the nearest thousand. A
// bucket holding under 1000 would then show more remaining than it can
// hold: clamp to its capacity.
int64_t RoundToThousand(int64_t n, uint64_t capacity) {
  return std::min<int64_t>((n + 500) / 1000 * 1000, static_cast<int64_t>(capacity));
}

// "2025-01-12T23:12:21Z", rounded up to the second so that it never claims
// replenishment before it happens.
std::string Rfc3339Ceil(absl::Time t) {
  const absl::Time floor = absl::FromUnixSeconds(absl::ToUnixSeconds(t));
  const absl::Time ceil = floor < t ? floor + absl::Seconds(1) : floor;
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", ceil, absl::UTCTimeZone());
}

// Go-style, rounded up to the millisecond as OpenAI's values are.
std::string GoDurationMillisCeil(absl::Duration d) {
  return FormatGoDuration(absl::Ceil(d, absl::Milliseconds(1)));
}

// The digits of `n` / 10^`scale` with the fraction's trailing zeros dropped:
// (4172, 3) -> "4.172", (1500, 3) -> "1.5", (2000, 3) -> "2".
std::string Decimal(uint64_t n, int scale) {
  uint64_t unit = 1;
  for (int i = 0; i < scale; ++i) unit *= 10;
  std::string text = absl::StrCat(n / unit);
  uint64_t frac = n % unit;
  if (frac == 0) return text;
  while (frac % 10 == 0) {
    frac /= 10;
    --scale;
  }
  return absl::StrFormat("%s.%0*d", text, scale, frac);
}

// httplib listens with a backlog of 5 (fixed when the library was built):
// a burst of new connections overflows it and the kernel drops their SYNs,
// which clients retry only after a second. Listening again on the bound
// socket raises the backlog; svr_sock_ is only reachable from a subclass.
class HttpServer : public httplib::Server {
 public:
  void RaiseListenBacklog() { ::listen(svr_sock_, SOMAXCONN); }
};

}  // namespace

// Names and formats -------------------------------------------------------------------

const char* FakeApiName(FakeApi api) { return api == FakeApi::kAnthropic ? "anthropic" : "openai"; }

std::string FakeProvider::KeyLabel(absl::string_view api_key) {
  uint64_t hash = 0xcbf29ce484222325;  // FNV-1a, 64 bits
  for (unsigned char c : api_key) {
    hash ^= c;
    hash *= 0x100000001b3;
  }
  // FNV-1a alone leaves keys that differ in their last byte with labels that
  // differ in one digit; splitmix64's finalizer spreads the difference.
  hash = (hash ^ (hash >> 30)) * 0xbf58476d1ce4e5b9;
  hash = (hash ^ (hash >> 27)) * 0x94d049bb133111eb;
  hash ^= hash >> 31;
  return absl::StrFormat("key_%08x", hash >> 32);
}

std::string FormatGoDuration(absl::Duration d) {
  const int64_t ns = absl::ToInt64Nanoseconds(d);  // saturates
  if (ns == 0) return "0s";
  const uint64_t u = ns < 0 ? uint64_t{0} - static_cast<uint64_t>(ns) : static_cast<uint64_t>(ns);
  const char* sign = ns < 0 ? "-" : "";
  if (u < 1000) return absl::StrCat(sign, u, "ns");
  if (u < 1000000) return absl::StrCat(sign, Decimal(u, 3), "µs");
  if (u < 1000000000) return absl::StrCat(sign, Decimal(u, 6), "ms");
  const uint64_t secs = u / 1000000000;
  const uint64_t hours = secs / 3600, minutes = secs / 60 % 60;
  std::string out = sign;
  if (hours > 0) absl::StrAppend(&out, hours, "h");
  if (hours > 0 || minutes > 0) absl::StrAppend(&out, minutes, "m");
  absl::StrAppend(&out, Decimal(u % 60000000000, 9), "s");
  return out;
}

FakeProviderStats::Counts FakeProviderStats::ForKey(FakeApi api, absl::string_view api_key) const {
  const std::string label = FakeProvider::KeyLabel(api_key);
  for (const Key& key : keys) {
    if (key.api == api && key.label == label) return key.counts;
  }
  return {};
}

// The server ---------------------------------------------------------------------------

class FakeProvider::Impl {
 public:
  explicit Impl(FakeProviderOptions options)
      : options_(std::move(options)), generator_(options_.seed) {}

  ~Impl() { Stop(); }

  absl::Status Listen();
  void Stop();
  int port() const { return port_; }
  const std::string& host() const { return options_.host; }
  FakeProviderStats stats() const;

 private:
  // One bucket of a key: its limit per simulated minute (what headers and
  // messages call the limit), and the bucket enforcing it (null: unlimited).
  struct Limit {
    uint64_t per_minute = 0;
    std::unique_ptr<ExactBucket> bucket;
  };

  // An API key's limits and counters. Each bucket guards itself; counts are
  // guarded by Impl::mu_.
  struct KeyState {
    FakeApi api;
    std::string label;
    Limit requests;
    Limit input_tokens;   // Anthropic ITPM
    Limit output_tokens;  // Anthropic OTPM
    Limit tokens;         // OpenAI TPM
    FakeProviderStats::Counts counts;
  };

  // One charge of an all-or-nothing admission.
  struct Charge {
    const Limit* limit;
    uint64_t n;
    const char* what;  // "requests", "input tokens", ...
  };

  // Why admission failed: the charge refused, and the real time until it
  // would fit (nullopt when it never can).
  struct Refusal {
    const Charge* charge;
    std::optional<absl::Duration> wait;
  };

  enum class Fault {
    kNone,
    kOverloaded,
    kServerError,
    kQuota,
    kReset,
    kTruncated,
    kMalformed,
    kSlow
  };

  // What one API exchange came to know, for the headers and the counters.
  struct Exchange {
    FakeApi api;
    std::string request_id;
    KeyState* key = nullptr;
  };

  // Routing.
  void ServeMessages(const httplib::Request& req, httplib::Response& res);
  void ServeCountTokens(const httplib::Request& req, httplib::Response& res);
  void ServeChatCompletions(const httplib::Request& req, httplib::Response& res);
  void ServeStats(const httplib::Request& req, httplib::Response& res);
  httplib::Server::HandlerResponse ServeError(const httplib::Request& req, httplib::Response& res);

  // The two APIs, once the request id is set.
  void Messages(const httplib::Request& req, httplib::Response& res, Exchange& ex);
  void ChatCompletions(const httplib::Request& req, httplib::Response& res, Exchange& ex);

  // Errors in each provider's shape.
  void AnthropicError(httplib::Response& res, const Exchange& ex, int status,
                      absl::string_view type, absl::string_view message, Json details = nullptr);
  void OpenAiError(httplib::Response& res, int status, absl::string_view message,
                   absl::string_view type, absl::string_view param, absl::string_view code);
  void AnthropicBadRequest(httplib::Response& res, const Exchange& ex, const BadRequest& bad);
  void OpenAiBadRequest(httplib::Response& res, const BadRequest& bad);

  // Keys, limits, faults.
  bool KeyAllowed(const std::string& key) const;
  KeyState* FindOrAddKey(FakeApi api, const std::string& key);
  Limit MakeLimit(uint64_t per_minute) const;
  std::optional<Refusal> Admit(const std::vector<Charge>& charges, int64_t now_ns) const;
  absl::Duration TimeToFull(const Limit& limit, int64_t now_ns) const;
  Fault PreAdmissionFault(const Draws& d) const;
  Fault DeliveryFault(const Draws& d) const;
  uint64_t OutputTokens(const Draws& d, uint64_t max_tokens) const;
  absl::Duration Latency(const Draws& d) const;
  void AddAnthropicHeaders(const KeyState& key, httplib::Response& res) const;
  void AddOpenAiHeaders(const KeyState& key, httplib::Response& res) const;

  // Counting.
  void CountRequest(const httplib::Request& req);
  void CountFault(Exchange& ex);
  void CountRateLimited(Exchange& ex);
  void CountAdmitted(Exchange& ex, uint64_t input_tokens, uint64_t output_tokens);

  // Sends an admitted request's reply, damaged as `fault` says.
  void Deliver(const httplib::Request& req, httplib::Response& res, Fault fault, std::string body);

  std::string NextId(absl::string_view prefix);

  const FakeProviderOptions options_;
  Generator generator_;
  std::atomic<uint64_t> next_id_{1};
  absl::Notification stopping_;  // cuts latency and slow bodies short

  HttpServer server_;
  std::thread listener_;
  std::atomic<bool> listener_done_{false};
  int port_ = 0;
  absl::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;

  mutable absl::Mutex mu_;
  // By API, then by the key itself (kept only here, never shown).
  absl::flat_hash_map<std::string, std::unique_ptr<KeyState>> keys_[2] ABSL_GUARDED_BY(mu_);
  FakeProviderStats::Counts totals_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> custom_ids_ ABSL_GUARDED_BY(mu_);
};

absl::Status FakeProvider::Impl::Listen() {
  const int threads = options_.threads;
  server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_.set_payload_max_length(options_.max_body_bytes);
  // httplib's default also sets SO_REUSEPORT, which would let a second
  // provider share this port and split the traffic (and the limits) with
  // it. SO_REUSEADDR alone still allows a restart while old connections
  // linger in TIME_WAIT.
  server_.set_socket_options([](socket_t sock) {
    const int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // httplib sends headers and body in separate writes; with Nagle on, the
  // body of a reply on a reused connection waits for the client's delayed
  // ACK of the headers (40 ms on Linux).
  server_.set_tcp_nodelay(true);
  // httplib closes a connection after 5 requests by default; the providers
  // keep them far longer, and clients pool them.
  server_.set_keep_alive_max_count(kKeepAliveMaxRequests);
  server_.Post("/v1/messages", [this](const httplib::Request& req, httplib::Response& res) {
    ServeMessages(req, res);
  });
  server_.Post(
      "/v1/messages/count_tokens",
      [this](const httplib::Request& req, httplib::Response& res) { ServeCountTokens(req, res); });
  server_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    ServeChatCompletions(req, res);
  });
  server_.Get("/stats", [this](const httplib::Request& req, httplib::Response& res) {
    ServeStats(req, res);
  });
  server_.set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request& req, httplib::Response& res) {
        return ServeError(req, res);
      }));

  if (options_.port == 0) {
    port_ = server_.bind_to_any_port(options_.host);
  } else {
    port_ = server_.bind_to_port(options_.host, options_.port) ? options_.port : -1;
  }
  if (port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.host, ":", options_.port));
  }
  server_.RaiseListenBacklog();
  listener_ = std::thread([this] {
    server_.listen_after_bind();
    listener_done_.store(true, std::memory_order_release);
  });
  // httplib's stop() does nothing until the accept loop has started, so
  // return only once it has: a Stop() right after Start() must work.
  while (!server_.is_running()) {
    if (listener_done_.load(std::memory_order_acquire)) {
      return absl::UnavailableError(
          absl::StrCat("the server on ", options_.host, ":", port_, " stopped at once"));
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
  return absl::OkStatus();
}

void FakeProvider::Impl::Stop() {
  absl::MutexLock lock(&stop_mu_);
  if (stopped_) return;
  stopped_ = true;
  if (!stopping_.HasBeenNotified()) stopping_.Notify();
  // Returns once the accept loop and every worker have finished; a worker
  // blocked on an idle keep-alive connection holds it up to httplib's
  // keep-alive timeout (5 s).
  server_.stop();
  if (listener_.joinable()) listener_.join();
}

std::string FakeProvider::Impl::NextId(absl::string_view prefix) {
  return absl::StrFormat("%s%024x", prefix, next_id_.fetch_add(1, std::memory_order_relaxed));
}

// Keys and limits -------------------------------------------------------------------

bool FakeProvider::Impl::KeyAllowed(const std::string& key) const {
  return options_.api_keys.empty() || std::find(options_.api_keys.begin(), options_.api_keys.end(),
                                                key) != options_.api_keys.end();
}

FakeProvider::Impl::Limit FakeProvider::Impl::MakeLimit(uint64_t per_minute) const {
  Limit limit;
  limit.per_minute = per_minute;
  if (options_.unlimited) return limit;
  // Refilled continuously: the providers' model. The options were validated
  // with this very config, so Create cannot fail.
  auto bucket = ExactBucket::Create(LimitBucket(per_minute, options_), Clock::MonotonicNanos());
  if (bucket.ok()) limit.bucket = *std::move(bucket);
  return limit;
}

FakeProvider::Impl::KeyState* FakeProvider::Impl::FindOrAddKey(FakeApi api,
                                                               const std::string& key) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<KeyState>& state = keys_[static_cast<int>(api)][key];
  if (state == nullptr) {
    state = std::make_unique<KeyState>();
    state->api = api;
    state->label = KeyLabel(key);
    state->requests = MakeLimit(options_.rpm);
    if (api == FakeApi::kAnthropic) {
      state->input_tokens = MakeLimit(options_.itpm);
      state->output_tokens = MakeLimit(options_.otpm);
    } else {
      state->tokens = MakeLimit(options_.tpm);
    }
  }
  ++state->counts.requests;
  return state.get();
}

std::optional<FakeProvider::Impl::Refusal> FakeProvider::Impl::Admit(
    const std::vector<Charge>& charges, int64_t now_ns) const {
  for (size_t i = 0; i < charges.size(); ++i) {
    const Charge& charge = charges[i];
    if (charge.limit->bucket == nullptr) continue;  // unlimited
    const ExactBucket::TakeResult taken = charge.limit->bucket->TryTake(charge.n, now_ns);
    if (taken.taken) continue;
    // All or nothing: give back what this request already took.
    for (size_t j = 0; j < i; ++j) {
      if (charges[j].limit->bucket != nullptr) {
        charges[j].limit->bucket->Refund(charges[j].n, now_ns);
      }
    }
    if (taken.never_fits) return Refusal{&charge, std::nullopt};
    return Refusal{&charge, absl::Nanoseconds(taken.wait_ns)};
  }
  return std::nullopt;
}

// Real time until the bucket is full again, exactly (debt included): the
// buckets count real nanoseconds.
absl::Duration FakeProvider::Impl::TimeToFull(const Limit& limit, int64_t now_ns) const {
  return absl::Nanoseconds(limit.bucket->NanosUntilFull(now_ns));
}

FakeProvider::Impl::Fault FakeProvider::Impl::PreAdmissionFault(const Draws& d) const {
  if (d.overloaded < options_.overloaded_rate) return Fault::kOverloaded;
  if (d.server_error < options_.server_error_rate) return Fault::kServerError;
  if (d.insufficient_quota < options_.insufficient_quota_rate) return Fault::kQuota;
  if (d.spend_limit < options_.spend_limit_rate) return Fault::kQuota;
  return Fault::kNone;
}

FakeProvider::Impl::Fault FakeProvider::Impl::DeliveryFault(const Draws& d) const {
  if (d.reset < options_.reset_rate) return Fault::kReset;
  if (d.truncated_body < options_.truncated_body_rate) return Fault::kTruncated;
  if (d.malformed_json < options_.malformed_json_rate) return Fault::kMalformed;
  if (d.slow_body < options_.slow_body_rate) return Fault::kSlow;
  return Fault::kNone;
}

uint64_t FakeProvider::Impl::OutputTokens(const Draws& d, uint64_t max_tokens) const {
  const auto n = static_cast<uint64_t>(d.output * static_cast<double>(max_tokens));
  return std::min(max_tokens, n + 1);
}

absl::Duration FakeProvider::Impl::Latency(const Draws& d) const {
  const absl::Duration latency =
      options_.latency_mean + options_.latency_jitter * (2 * d.latency - 1);
  return std::max(latency, absl::ZeroDuration());
}

void FakeProvider::Impl::AddAnthropicHeaders(const KeyState& key, httplib::Response& res) const {
  if (options_.unlimited) return;
  const int64_t now_ns = Clock::MonotonicNanos();
  const absl::Time now = absl::Now();
  const auto add = [&](absl::string_view name, const Limit& limit, bool round) {
    const int64_t available = limit.bucket->Available(now_ns);
    res.set_header(absl::StrCat("anthropic-ratelimit-", name, "-limit"),
                   absl::StrCat(limit.per_minute));
    res.set_header(
        absl::StrCat("anthropic-ratelimit-", name, "-remaining"),
        absl::StrCat(round ? RoundToThousand(available, limit.bucket->Capacity()) : available));
    res.set_header(absl::StrCat("anthropic-ratelimit-", name, "-reset"),
                   Rfc3339Ceil(now + TimeToFull(limit, now_ns)));
  };
  add("requests", key.requests, false);
  add("input-tokens", key.input_tokens, true);
  add("output-tokens", key.output_tokens, true);
  // "tokens" reports whichever token limit is closest to refusing.
  const bool input_tighter =
      key.input_tokens.bucket->Available(now_ns) <= key.output_tokens.bucket->Available(now_ns);
  add("tokens", input_tighter ? key.input_tokens : key.output_tokens, true);
}

void FakeProvider::Impl::AddOpenAiHeaders(const KeyState& key, httplib::Response& res) const {
  if (options_.unlimited) return;
  const int64_t now_ns = Clock::MonotonicNanos();
  const auto add = [&](absl::string_view name, const Limit& limit) {
    res.set_header(absl::StrCat("x-ratelimit-limit-", name), absl::StrCat(limit.per_minute));
    res.set_header(absl::StrCat("x-ratelimit-remaining-", name),
                   absl::StrCat(limit.bucket->Available(now_ns)));
    res.set_header(absl::StrCat("x-ratelimit-reset-", name),
                   GoDurationMillisCeil(TimeToFull(limit, now_ns)));
  };
  add("requests", key.requests);
  add("tokens", key.tokens);
}

// Counting ----------------------------------------------------------------------------

void FakeProvider::Impl::CountRequest(const httplib::Request& req) {
  absl::MutexLock lock(&mu_);
  ++totals_.requests;
  if (req.has_header(kCustomIdHeader)) ++custom_ids_[req.get_header_value(kCustomIdHeader)];
}

void FakeProvider::Impl::CountFault(Exchange& ex) {
  absl::MutexLock lock(&mu_);
  ++totals_.faults;
  if (ex.key != nullptr) ++ex.key->counts.faults;
}

void FakeProvider::Impl::CountRateLimited(Exchange& ex) {
  absl::MutexLock lock(&mu_);
  ++totals_.rate_limited;
  ++ex.key->counts.rate_limited;
}

void FakeProvider::Impl::CountAdmitted(Exchange& ex, uint64_t input_tokens,
                                       uint64_t output_tokens) {
  absl::MutexLock lock(&mu_);
  for (FakeProviderStats::Counts* c : {&totals_, &ex.key->counts}) {
    ++c->admitted;
    c->input_tokens += input_tokens;
    c->output_tokens += output_tokens;
  }
}

FakeProviderStats FakeProvider::Impl::stats() const {
  FakeProviderStats stats;
  absl::MutexLock lock(&mu_);
  stats.totals = totals_;
  stats.custom_ids = custom_ids_;
  for (const auto& keys : keys_) {
    for (const auto& [key, state] : keys) {
      stats.keys.push_back({state->api, state->label, state->counts});
    }
  }
  std::sort(stats.keys.begin(), stats.keys.end(),
            [](const FakeProviderStats::Key& a, const FakeProviderStats::Key& b) {
              return std::tie(a.api, a.label) < std::tie(b.api, b.label);
            });
  return stats;
}

// Errors ------------------------------------------------------------------------------

void FakeProvider::Impl::AnthropicError(httplib::Response& res, const Exchange& ex, int status,
                                        absl::string_view type, absl::string_view message,
                                        Json details) {
  Json error = {{"type", type}, {"message", message}};
  if (!details.is_null()) error["details"] = std::move(details);
  res.status = status;
  res.set_content(
      Dump({{"type", "error"}, {"error", std::move(error)}, {"request_id", ex.request_id}}), kJson);
}

void FakeProvider::Impl::OpenAiError(httplib::Response& res, int status, absl::string_view message,
                                     absl::string_view type, absl::string_view param,
                                     absl::string_view code) {
  res.status = status;
  res.set_content(Dump({{"error",
                         {{"message", message},
                          {"type", type},
                          {"param", param.empty() ? Json(nullptr) : Json(param)},
                          {"code", code.empty() ? Json(nullptr) : Json(code)}}}}),
                  kJson);
}

void FakeProvider::Impl::AnthropicBadRequest(httplib::Response& res, const Exchange& ex,
                                             const BadRequest& bad) {
  const std::string message =
      bad.param.empty() ? bad.problem : absl::StrCat(bad.param, ": ", bad.problem);
  AnthropicError(res, ex, 400, "invalid_request_error", message);
}

void FakeProvider::Impl::OpenAiBadRequest(httplib::Response& res, const BadRequest& bad) {
  std::string message;
  if (bad.param.empty()) {
    message = absl::StrCat("We could not parse the JSON body of your request: ", bad.problem, ".");
  } else if (bad.code == "missing_required_parameter") {
    message = absl::StrCat("Missing required parameter: '", bad.param, "'.");
  } else {
    message = absl::StrCat("Invalid '", bad.param, "': ", bad.problem, ".");
  }
  OpenAiError(res, 400, message, "invalid_request_error", bad.param, bad.code);
}

// httplib's own refusals (no route, a body over the cap, a bad request line)
// arrive here with no body; give them the shape of the API the path belongs
// to. Replies the handlers wrote already have one and pass through.
httplib::Server::HandlerResponse FakeProvider::Impl::ServeError(const httplib::Request& req,
                                                                httplib::Response& res) {
  if (!res.body.empty() || res.content_provider_)
    return httplib::Server::HandlerResponse::Unhandled;
  const bool too_large = res.status == 413;
  if (absl::StartsWith(req.path, "/v1/chat/")) {
    const std::string message = too_large ? absl::StrCat("Request body too large: the limit is ",
                                                         options_.max_body_bytes, " bytes.")
                                : res.status == 404
                                    ? absl::StrCat("Invalid URL (", req.method, " ", req.path, ")")
                                    : absl::StrCat("HTTP ", res.status);
    OpenAiError(res, res.status, message, "invalid_request_error", "", "");
    return httplib::Server::HandlerResponse::Handled;
  }
  const Exchange ex{.api = FakeApi::kAnthropic, .request_id = NextId("req_")};
  res.set_header("request-id", ex.request_id);
  if (too_large) {
    AnthropicError(res, ex, 413, "request_too_large",
                   absl::StrCat("Request exceeds the maximum allowed number of bytes (",
                                options_.max_body_bytes, ")."));
  } else if (res.status == 404) {
    AnthropicError(res, ex, 404, "not_found_error",
                   absl::StrCat("Not found: ", req.method, " ", req.path));
  } else if (res.status < 500) {
    AnthropicError(res, ex, res.status, "invalid_request_error", absl::StrCat("HTTP ", res.status));
  } else {
    AnthropicError(res, ex, res.status, "api_error", "Internal server error");
  }
  return httplib::Server::HandlerResponse::Handled;
}

// Anthropic -----------------------------------------------------------------------------

void FakeProvider::Impl::ServeMessages(const httplib::Request& req, httplib::Response& res) {
  Exchange ex{.api = FakeApi::kAnthropic, .request_id = NextId("req_")};
  res.set_header("request-id", ex.request_id);
  CountRequest(req);
  Messages(req, res, ex);
  if (ex.key != nullptr) AddAnthropicHeaders(*ex.key, res);
}

void FakeProvider::Impl::Messages(const httplib::Request& req, httplib::Response& res,
                                  Exchange& ex) {
  const std::string api_key = req.get_header_value("x-api-key");
  if (api_key.empty()) {
    return AnthropicError(res, ex, 401, "authentication_error", "x-api-key header is required");
  }
  if (!KeyAllowed(api_key)) {
    return AnthropicError(res, ex, 401, "authentication_error", "invalid x-api-key");
  }
  ex.key = FindOrAddKey(FakeApi::kAnthropic, api_key);
  if (req.get_header_value("anthropic-version").empty()) {
    return AnthropicError(res, ex, 400, "invalid_request_error",
                          "anthropic-version: header is required");
  }
  const Draws draws = generator_.Next();

  ChatRequest chat;
  if (auto bad = ParseChat(req.body, kAnthropicRules, options_, &chat)) {
    return AnthropicBadRequest(res, ex, *bad);
  }

  switch (PreAdmissionFault(draws)) {
    case Fault::kOverloaded:
      CountFault(ex);
      return AnthropicError(res, ex, 529, "overloaded_error", "Overloaded");
    case Fault::kServerError:
      CountFault(ex);
      return AnthropicError(res, ex, 500, "api_error", "Internal server error");
    case Fault::kQuota:
      // Anthropic's way of saying the money ran out: no retry-after, since
      // no retry can succeed before the next month.
      CountFault(ex);
      return AnthropicError(res, ex, 429, "rate_limit_error",
                            "You have reached your specified API usage limits. You will regain "
                            "access on the first day of next month at 00:00 UTC.",
                            {{"error_code", "enforced_spend_limit_reached"}});
    default:
      break;
  }

  const int64_t now_ns = Clock::MonotonicNanos();
  const std::vector<Charge> charges = {
      {&ex.key->requests, 1, "requests"},
      {&ex.key->input_tokens, chat.input_tokens, "input tokens"},
      {&ex.key->output_tokens, chat.max_tokens, "output tokens"},
  };
  if (std::optional<Refusal> refusal = Admit(charges, now_ns)) {
    CountRateLimited(ex);
    const Charge& c = *refusal->charge;
    if (!refusal->wait.has_value()) {
      return AnthropicError(
          res, ex, 429, "rate_limit_error",
          absl::StrCat("This request would exceed your organization's rate limit of ",
                       c.limit->per_minute, " ", c.what, " per minute on its own (it needs ", c.n,
                       "); it cannot succeed at this limit."));
    }
    const int64_t seconds =
        std::max<int64_t>(1, absl::ToInt64Seconds(absl::Ceil(*refusal->wait, absl::Seconds(1))));
    res.set_header("retry-after", absl::StrCat(seconds));
    return AnthropicError(
        res, ex, 429, "rate_limit_error",
        absl::StrCat("This request would exceed your organization's rate limit of ",
                     c.limit->per_minute, " ", c.what,
                     " per minute. For details, refer to the response headers and "
                     "https://docs.anthropic.com/en/api/rate-limits."));
  }

  // Output is pre-charged at max_tokens; settle to what was produced.
  const uint64_t output_tokens = OutputTokens(draws, chat.max_tokens);
  if (ex.key->output_tokens.bucket != nullptr) {
    ex.key->output_tokens.bucket->Refund(chat.max_tokens - output_tokens, Clock::MonotonicNanos());
  }
  CountAdmitted(ex, chat.input_tokens, output_tokens);

  if (stopping_.WaitForNotificationWithTimeout(Latency(draws))) {
    return AnthropicError(res, ex, 500, "api_error", "The server is shutting down");
  }
  Json reply = {
      {"id", NextId("msg_")},
      {"type", "message"},
      {"role", "assistant"},
      {"model", chat.model},
      {"content", Json::array({{{"type", "text"}, {"text", ReplyText(output_tokens)}}})},
      {"stop_reason", output_tokens == chat.max_tokens ? "max_tokens" : "end_turn"},
      {"stop_sequence", nullptr},
      {"usage",
       {{"input_tokens", chat.input_tokens},
        {"output_tokens", output_tokens},
        {"cache_creation_input_tokens", 0},
        {"cache_read_input_tokens", 0}}},
  };
  const Fault fault = DeliveryFault(draws);
  if (fault != Fault::kNone) CountFault(ex);
  Deliver(req, res, fault, Dump(reply));
}

// count_tokens answers from the same deterministic count, without limits.
void FakeProvider::Impl::ServeCountTokens(const httplib::Request& req, httplib::Response& res) {
  const Exchange ex{.api = FakeApi::kAnthropic, .request_id = NextId("req_")};
  res.set_header("request-id", ex.request_id);
  const std::string api_key = req.get_header_value("x-api-key");
  if (api_key.empty() || !KeyAllowed(api_key)) {
    return AnthropicError(res, ex, 401, "authentication_error",
                          api_key.empty() ? "x-api-key header is required" : "invalid x-api-key");
  }
  if (req.get_header_value("anthropic-version").empty()) {
    return AnthropicError(res, ex, 400, "invalid_request_error",
                          "anthropic-version: header is required");
  }
  // The same body minus max_tokens: parse it with OpenAI's optional rule.
  BodyRules rules = kAnthropicRules;
  rules.max_tokens_required = false;
  ChatRequest chat;
  if (auto bad = ParseChat(req.body, rules, options_, &chat)) {
    return AnthropicBadRequest(res, ex, *bad);
  }
  res.set_content(Dump({{"input_tokens", chat.input_tokens}}), kJson);
}

// OpenAI ---------------------------------------------------------------------------------

void FakeProvider::Impl::ServeChatCompletions(const httplib::Request& req, httplib::Response& res) {
  Exchange ex{.api = FakeApi::kOpenAi, .request_id = NextId("req_")};
  res.set_header("x-request-id", ex.request_id);
  CountRequest(req);
  ChatCompletions(req, res, ex);
  if (ex.key != nullptr) AddOpenAiHeaders(*ex.key, res);
}

void FakeProvider::Impl::ChatCompletions(const httplib::Request& req, httplib::Response& res,
                                         Exchange& ex) {
  const std::string authorization = req.get_header_value("Authorization");
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWith(authorization, kBearer) || authorization.size() == kBearer.size()) {
    return OpenAiError(res, 401,
                       "You didn't provide an API key. You need to provide your API key in an "
                       "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                       "YOUR_KEY).",
                       "invalid_request_error", "", "");
  }
  const std::string api_key = authorization.substr(kBearer.size());
  if (!KeyAllowed(api_key)) {
    return OpenAiError(res, 401, "Incorrect API key provided.", "invalid_request_error", "",
                       "invalid_api_key");
  }
  ex.key = FindOrAddKey(FakeApi::kOpenAi, api_key);
  const Draws draws = generator_.Next();

  ChatRequest chat;
  if (auto bad = ParseChat(req.body, kOpenAiRules, options_, &chat)) {
    return OpenAiBadRequest(res, *bad);
  }

  switch (PreAdmissionFault(draws)) {
    case Fault::kOverloaded:
      CountFault(ex);
      return OpenAiError(res, 503,
                         "That model is currently overloaded with other requests. You can retry "
                         "your request.",
                         "server_error", "", "");
    case Fault::kServerError:
      CountFault(ex);
      return OpenAiError(res, 500,
                         "The server had an error while processing your request. Sorry about that!",
                         "server_error", "", "");
    case Fault::kQuota:
      CountFault(ex);
      return OpenAiError(res, 429,
                         "You exceeded your current quota, please check your plan and billing "
                         "details.",
                         "insufficient_quota", "", "insufficient_quota");
    default:
      break;
  }

  // TPM is pre-charged max(max_tokens, prompt estimate); the fake's estimate
  // is exact, so it is the prompt itself.
  const uint64_t charged = std::max(chat.max_tokens, chat.input_tokens);
  const int64_t now_ns = Clock::MonotonicNanos();
  const std::vector<Charge> charges = {
      {&ex.key->requests, 1, "requests"},
      {&ex.key->tokens, charged, "tokens"},
  };
  if (std::optional<Refusal> refusal = Admit(charges, now_ns)) {
    CountRateLimited(ex);
    const Charge& c = *refusal->charge;
    const bool requests = c.limit == &ex.key->requests;
    const char* unit = requests ? "requests per min (RPM)" : "tokens per min (TPM)";
    if (!refusal->wait.has_value()) {
      return OpenAiError(
          res, 429,
          absl::StrCat("Request too large for ", chat.model, " in organization org-fake on ", unit,
                       ": Limit ", c.limit->per_minute, ", Requested ", c.n,
                       ". The input or output tokens must be reduced in order to run "
                       "successfully."),
          requests ? "requests" : "tokens", "", "rate_limit_exceeded");
    }
    // What the bucket holds that is spoken for: its whole capacity less
    // what is available (the per-minute limit when the bucket spans a minute).
    const int64_t used =
        static_cast<int64_t>(c.limit->bucket->Capacity()) - c.limit->bucket->Available(now_ns);
    return OpenAiError(
        res, 429,
        absl::StrCat("Rate limit reached for ", chat.model, " in organization org-fake on ", unit,
                     ": Limit ", c.limit->per_minute, ", Used ", used, ", Requested ", c.n,
                     ". Please try again in ", GoDurationMillisCeil(*refusal->wait),
                     ". Visit https://platform.openai.com/account/rate-limits to learn more."),
        requests ? "requests" : "tokens", "", "rate_limit_exceeded");
  }

  const uint64_t completion_tokens = OutputTokens(draws, chat.max_tokens);
  const uint64_t used = chat.input_tokens + completion_tokens;
  if (ex.key->tokens.bucket != nullptr) {
    const int64_t settled_ns = Clock::MonotonicNanos();
    if (used < charged) {
      ex.key->tokens.bucket->Refund(charged - used, settled_ns);
    } else {
      ex.key->tokens.bucket->Debit(used - charged, settled_ns);
    }
  }
  CountAdmitted(ex, chat.input_tokens, completion_tokens);

  if (stopping_.WaitForNotificationWithTimeout(Latency(draws))) {
    return OpenAiError(res, 500, "The server is shutting down.", "server_error", "", "");
  }
  Json reply = {
      {"id", NextId("chatcmpl-")},
      {"object", "chat.completion"},
      {"created", absl::ToUnixSeconds(absl::Now())},
      {"model", chat.model},
      {"choices", Json::array({{
                      {"index", 0},
                      {"message",
                       {{"role", "assistant"},
                        {"content", ReplyText(completion_tokens)},
                        {"refusal", nullptr}}},
                      {"logprobs", nullptr},
                      {"finish_reason", completion_tokens == chat.max_tokens ? "length" : "stop"},
                  }})},
      {"usage",
       {{"prompt_tokens", chat.input_tokens},
        {"completion_tokens", completion_tokens},
        {"total_tokens", used},
        {"prompt_tokens_details", {{"cached_tokens", 0}}}}},
  };
  const Fault fault = DeliveryFault(draws);
  if (fault != Fault::kNone) CountFault(ex);
  Deliver(req, res, fault, Dump(reply));
}

// Delivery --------------------------------------------------------------------------------

void FakeProvider::Impl::Deliver(const httplib::Request& req, httplib::Response& res, Fault fault,
                                 std::string body) {
  res.status = 200;
  switch (fault) {
    case Fault::kReset:
      if (DropConnection(req)) return;
      // Not found (it cannot happen on Linux): fall back to promising a
      // body and sending none, the nearest thing httplib can do.
      res.set_content_provider(body.size(), kJson,
                               [](size_t, size_t, httplib::DataSink&) { return false; });
      return;
    case Fault::kTruncated: {
      // Content-Length says the whole body; half of it is sent, then the
      // provider fails, and httplib closes the connection.
      auto shared = std::make_shared<const std::string>(std::move(body));
      const size_t cut = shared->size() / 2;
      res.set_content_provider(shared->size(), kJson,
                               [shared, cut](size_t offset, size_t, httplib::DataSink& sink) {
                                 if (offset >= cut) return false;
                                 return sink.write(shared->data() + offset, cut - offset);
                               });
      return;
    }
    case Fault::kMalformed:
      // What a misbehaving proxy might pass on: the reply cut short and
      // followed by junk, under a 200 and a JSON content type.
      body.resize(body.size() / 2);
      body.append("<!-- upstream connection reset -->");
      res.set_content(body, kJson);
      return;
    case Fault::kSlow: {
      auto shared = std::make_shared<const std::string>(std::move(body));
      const size_t piece = (shared->size() + kSlowBodyPieces - 1) / kSlowBodyPieces;
      res.set_content_provider(
          shared->size(), kJson,
          [this, shared, piece](size_t offset, size_t length, httplib::DataSink& sink) {
            if (stopping_.WaitForNotificationWithTimeout(kSlowBodyPause)) return false;
            return sink.write(shared->data() + offset, std::min(piece, length));
          });
      return;
    }
    default:
      res.set_content(body, kJson);
  }
}

// Stats -----------------------------------------------------------------------------------

void FakeProvider::Impl::ServeStats(const httplib::Request&, httplib::Response& res) {
  const FakeProviderStats s = stats();
  const auto counts = [](const FakeProviderStats::Counts& c) {
    return Json{{"requests", c.requests},           {"admitted", c.admitted},
                {"rate_limited", c.rate_limited},   {"input_tokens", c.input_tokens},
                {"output_tokens", c.output_tokens}, {"faults", c.faults}};
  };
  Json keys = Json::array();
  for (const FakeProviderStats::Key& key : s.keys) {
    Json entry = {{"api", FakeApiName(key.api)}, {"key", key.label}};
    entry.update(counts(key.counts));
    keys.push_back(std::move(entry));
  }
  res.set_content(
      Dump({{"totals", counts(s.totals)}, {"keys", std::move(keys)}, {"custom_ids", s.custom_ids}}),
      kJson);
}

// FakeProvider ---------------------------------------------------------------------------

FakeProvider::FakeProvider(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FakeProvider::~FakeProvider() { Stop(); }

absl::StatusOr<std::unique_ptr<FakeProvider>> FakeProvider::Start(FakeProviderOptions options) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  auto impl = std::make_unique<Impl>(std::move(options));
  if (absl::Status s = impl->Listen(); !s.ok()) return s;
  return std::unique_ptr<FakeProvider>(new FakeProvider(std::move(impl)));
}

int FakeProvider::port() const { return impl_->port(); }

std::string FakeProvider::base_url() const {
  return absl::StrCat("http://", impl_->host(), ":", impl_->port());
}

FakeProviderStats FakeProvider::stats() const { return impl_->stats(); }

void FakeProvider::Stop() { impl_->Stop(); }

}  // namespace sluice
