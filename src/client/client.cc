#include "sluice/client.h"

#include <curl/curl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "src/client/release_watcher.h"

namespace sluice {
namespace {

// How often requests waiting on a full concurrency cap try again when no
// lease is released: a holder that died never releases, and a retry takes
// its lease back.
constexpr absl::Duration kCapRetryTick = absl::Milliseconds(200);

int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t sum;
  return __builtin_add_overflow(a, b, &sum) ? std::numeric_limits<int64_t>::max() : sum;
}

// libcurl's global state is set up once for the process, before any thread
// could race to do it.
void InitCurlOnce() {
  static const bool done = [] { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }();
  (void)done;
}

std::string DefaultBaseUrl(Provider provider) {
  return provider == Provider::kAnthropic ? "https://api.anthropic.com" : "https://api.openai.com";
}

const char* EnvKeyName(Provider provider) {
  return provider == Provider::kAnthropic ? "ANTHROPIC_API_KEY" : "OPENAI_API_KEY";
}

std::string EndpointPath(Provider provider) {
  return provider == Provider::kAnthropic ? "/v1/messages" : "/v1/chat/completions";
}

// All prompt text in a request body, for estimating its input tokens.
std::string PromptText(const nlohmann::json& body) {
  std::string text;
  auto add = [&](const nlohmann::json& content) {
    if (content.is_string()) {
      text += content.get<std::string>();
    } else if (content.is_array()) {
      for (const auto& part : content) {
        if (part.is_object() && part.contains("text") && part["text"].is_string()) {
          text += part["text"].get<std::string>();
        }
      }
    }
  };
  if (body.contains("system")) add(body["system"]);
  if (body.contains("messages") && body["messages"].is_array()) {
    for (const auto& m : body["messages"]) {
      if (m.is_object() && m.contains("content")) add(m["content"]);
    }
  }
  return text;
}

uint64_t MaxTokens(const nlohmann::json& body) {
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (body.contains(key) && body[key].is_number_unsigned()) return body[key].get<uint64_t>();
  }
  return 0;
}

}  // namespace

CallRequest CallRequest::Simple(absl::string_view model, absl::string_view prompt,
                                uint64_t max_tokens) {
  CallRequest request;
  request.body = {{"model", std::string(model)},
                  {"max_tokens", max_tokens},
                  {"messages", {{{"role", "user"}, {"content", std::string(prompt)}}}}};
  return request;
}

// One request on its way: waiting for its start time (throttle or retry
// delay), or in flight.
struct Client::Job {
  size_t index = 0;
  CallRequest request;
  const Route* route = nullptr;
  uint64_t input_estimate = 0;
  uint64_t max_tokens = 0;
  std::string body;
  int attempt = 0;
  std::optional<Permit> permit;
  int64_t not_before_ns = 0;          // start (or reserve) no earlier than this
  int64_t waiting_since_ns = -1;      // when the current throttle wait began
  absl::Status cap_full;              // a full concurrency cap's refusal, while blocked on it
  curl_slist* headers_out = nullptr;  // the client's headers plus the request's own, if any
  ~Job() { curl_slist_free_all(headers_out); }
  CallResult result;
  // Transfer state.
  CURL* easy = nullptr;
  std::string response;
  Headers headers_in;
  bool too_large = false;
  size_t cap = 0;
  char error[CURL_ERROR_SIZE] = {0};
};

namespace {

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* job = static_cast<Client::Job*>(user);
  if (job->response.size() + size * n > job->cap) {
    job->too_large = true;
    return 0;  // aborts the transfer
  }
  job->response.append(data, size * n);
  return size * n;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  static_cast<Client::Job*>(user)->headers_in.AddLine(absl::string_view(data, size * n));
  return size * n;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options, Policy* policy) {
  InitCurlOnce();
  if (options.base_url.empty()) options.base_url = DefaultBaseUrl(options.provider);
  while (absl::EndsWith(options.base_url, "/")) options.base_url.pop_back();
  if (!absl::StartsWith(options.base_url, "http://") &&
      !absl::StartsWith(options.base_url, "https://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("base URL '", options.base_url, "' must start with http:// or https://"));
  }
  if (!(options.provider_time_scale > 0) || !std::isfinite(options.provider_time_scale)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "provider_time_scale must be positive and finite, got ", options.provider_time_scale));
  }
  if (options.api_key.empty()) {
    const char* env = std::getenv(EnvKeyName(options.provider));
    if (env == nullptr || *env == '\0') {
      return absl::InvalidArgumentError(absl::StrCat(
          "no API key: set ", EnvKeyName(options.provider), " or give one in the options"));
    }
    options.api_key = env;
  }
  auto client = std::unique_ptr<Client>(new Client(std::move(options), policy));
  if (client->epoll_fd_ < 0) {
    return absl::InternalError(absl::StrCat("epoll_create1: ", std::strerror(errno)));
  }
  return client;
}

Client::Client(ClientOptions options, Policy* policy)
    : options_(std::move(options)),
      policy_(policy),
      multi_(curl_multi_init()),
      epoll_fd_(epoll_create1(EPOLL_CLOEXEC)),
      url_(options_.base_url + EndpointPath(options_.provider)) {
  // Event-driven: libcurl says which sockets to watch and when its timer
  // fires, and the loop wakes for exactly those, so a response costs the same
  // with 16 transfers in flight as with 1,000 (curl_multi_poll would scan
  // every socket on every wakeup).
  CURLM* multi = static_cast<CURLM*>(multi_);
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, &Client::OnSocket);
  curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, &Client::OnTimer);
  curl_multi_setopt(multi, CURLMOPT_TIMERDATA, this);
  curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                    static_cast<long>(std::max(0, options_.max_connections)));
  curl_slist* h = curl_slist_append(nullptr, "content-type: application/json");
  // The key lives in this one header list and nowhere else.
  if (options_.provider == Provider::kAnthropic) {
    h = curl_slist_append(h, absl::StrCat("x-api-key: ", options_.api_key).c_str());
    h = curl_slist_append(h,
                          absl::StrCat("anthropic-version: ", options_.anthropic_version).c_str());
  } else {
    h = curl_slist_append(h, absl::StrCat("authorization: Bearer ", options_.api_key).c_str());
  }
  headers_out_ = h;
}

Client::~Client() {
  watcher_.reset();  // its eventfd is in the epoll set: stop it first
  for (void* easy : idle_easy_) curl_easy_cleanup(static_cast<CURL*>(easy));
  curl_multi_cleanup(static_cast<CURLM*>(multi_));  // may still call OnSocket
  if (epoll_fd_ >= 0) close(epoll_fd_);
  curl_slist_free_all(static_cast<curl_slist*>(headers_out_));
}

int Client::OnSocket(void* /*easy*/, int fd, int what, void* client, void* /*socket_data*/) {
  const int epoll_fd = static_cast<Client*>(client)->epoll_fd_;
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);  // ENOENT if already closed: fine
    return 0;
  }
  epoll_event event{};
  event.data.fd = fd;
  if (what & CURL_POLL_IN) event.events |= EPOLLIN;
  if (what & CURL_POLL_OUT) event.events |= EPOLLOUT;
  // A socket is new to epoll or already watched; libcurl does not say which
  // reliably across reconnects on a reused descriptor number, so try both.
  if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &event) != 0 && errno == ENOENT) {
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event);
  }
  return 0;
}

int Client::OnTimer(void* /*multi*/, long timeout_ms, void* client) {
  static_cast<Client*>(client)->curl_deadline_ns_ =
      timeout_ms < 0 ? -1 : Clock::MonotonicNanos() + int64_t{timeout_ms} * 1'000'000;
  return 0;
}

int64_t Client::Now() const {
  return policy_ != nullptr ? policy_->store()->clock().Now() : Clock::MonotonicNanos();
}

void Client::StartTransfer(Job& job) {
  CURL* easy;
  if (idle_easy_.empty()) {
    // Options that never change are set once per handle; the handle, and
    // with it the multi handle's connections, is reused for later requests.
    easy = curl_easy_init();
    curl_easy_setopt(easy, CURLOPT_URL, url_.c_str());
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(absl::ToInt64Milliseconds(options_.connect_timeout)));
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                     static_cast<long>(absl::ToInt64Milliseconds(options_.request_timeout)));
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "sluice/0.1");
  } else {
    easy = static_cast<CURL*>(idle_easy_.back());
    idle_easy_.pop_back();
  }
  job.easy = easy;
  job.response.clear();
  job.headers_in.Clear();
  job.too_large = false;
  job.cap = options_.max_response_bytes;
  job.error[0] = '\0';
  ++job.attempt;
  ++job.result.attempts;
  // The client's header list, or a copy of it with this request's headers.
  curl_slist* headers = static_cast<curl_slist*>(headers_out_);
  if (!job.request.headers.empty() && job.headers_out == nullptr) {
    for (curl_slist* h = headers; h != nullptr; h = h->next) {
      job.headers_out = curl_slist_append(job.headers_out, h->data);
    }
    for (const auto& [name, value] : job.request.headers) {
      job.headers_out = curl_slist_append(job.headers_out, absl::StrCat(name, ": ", value).c_str());
    }
  }
  if (job.headers_out != nullptr) headers = job.headers_out;
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, job.body.c_str());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(job.body.size()));
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &job);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &job);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, job.error);
  curl_easy_setopt(easy, CURLOPT_PRIVATE, &job);
  curl_multi_add_handle(static_cast<CURLM*>(multi_), easy);
}

void Client::Feedback(const Job& job, const RateLimitInfo& info, const Classification& c) {
  if (policy_ == nullptr || !options_.header_feedback) return;
  const int64_t now = policy_->store()->clock().Now();
  const struct {
    const RateLimitInfo::Dimension& dim;
    LimitKind kind;
    int64_t slack;  // Anthropic rounds token counts to the nearest thousand
  } dims[] = {
      {info.requests, LimitKind::kRequestsPerMinute, 0},
      {info.tokens, LimitKind::kTokensPerMinute,
       options_.provider == Provider::kAnthropic ? 500 : 0},
      {info.input_tokens, LimitKind::kInputTokensPerMinute, 500},
      {info.output_tokens, LimitKind::kOutputTokensPerMinute, 500},
  };
  // The provider counted this response before the requests still in flight
  // reached it: they will take from what it says remains.
  const int64_t others = std::max(0, in_flight_ - 1);
  for (const auto& d : dims) {
    if (!d.dim.remaining) continue;
    const int64_t in_transit = d.kind == LimitKind::kRequestsPerMinute ? others : 0;
    policy_->ClampProvider(*job.route, d.kind, *d.dim.remaining + d.slack - in_transit, now);
  }
  // Learn the key's real tier from the limit the provider states for it
  // (per minute of its clock). Exact, unlike an estimate from `remaining`
  // and the reset time: Anthropic gives resets to the second, which biases
  // any rate computed from them low by up to a second's worth.
  for (const auto& d : dims) {
    if (!options_.learn_provider_rate) break;
    if (!d.dim.limit || *d.dim.limit <= 0) continue;
    policy_->LearnProviderRate(*job.route, d.kind,
                               static_cast<double>(*d.dim.limit) * options_.provider_time_scale);
  }
  // A quota 429 holds the provider's buckets for every process on the
  // store; an overload (529/503) is not about quota and shrinks nothing.
  if (c.error_class == ErrorClass::kRateLimited) {
    // Clamped: whatever the server sent, no longer than max_retry_after.
    const int64_t hold_ns = absl::ToInt64Nanoseconds(QuotaHold(info, options_.retry));
    policy_->HoldProvider(*job.route, SaturatingAdd(now, hold_ns), now);
  }
}

// Requests waiting to start: for their arrival time, reserved start time or
// retry delay (a min-heap on that time, FIFO among equals), or, ready but
// refused by a full concurrency cap, for a lease to come back (until their
// throttle deadline).
class Client::Queue {
 public:
  bool empty() const { return heap_.empty() && blocked_.empty(); }
  size_t size() const { return heap_.size() + blocked_.size(); }

  void Push(std::unique_ptr<Job> job) {
    heap_.push_back({job->not_before_ns, next_seq_++, std::move(job)});
    std::push_heap(heap_.begin(), heap_.end(), Later);
  }
  // The earliest start time or blocked deadline, or INT64_MAX when none.
  int64_t NextTime() const {
    int64_t next = heap_.empty() ? std::numeric_limits<int64_t>::max() : heap_.front().at;
    for (const Blocked& b : blocked_) next = std::min(next, b.deadline_ns);
    return next;
  }
  // The first job due at `now`, or null.
  std::unique_ptr<Job> PopDue(int64_t now) {
    if (heap_.empty() || heap_.front().at > now) return nullptr;
    std::pop_heap(heap_.begin(), heap_.end(), Later);
    std::unique_ptr<Job> job = std::move(heap_.back().job);
    heap_.pop_back();
    return job;
  }
  void Block(std::unique_ptr<Job> job, int64_t deadline_ns) {
    blocked_.push_back({deadline_ns, std::move(job)});
  }
  // A lease came back (or may have: a holder may have died): what a full
  // concurrency cap refused may try again, ahead of everything due later
  // (their start times have passed).
  void Unblock() {
    for (Blocked& b : blocked_) Push(std::move(b.job));
    blocked_.clear();
  }
  // Blocked jobs whose deadline has passed at `now`, removed.
  std::vector<std::unique_ptr<Job>> Expire(int64_t now) {
    std::vector<std::unique_ptr<Job>> expired;
    for (Blocked& b : blocked_) {
      if (b.deadline_ns <= now) expired.push_back(std::move(b.job));
    }
    std::erase_if(blocked_, [](const Blocked& b) { return b.job == nullptr; });
    return expired;
  }
  // The keys of the caps blocked jobs wait for, sorted, without repeats.
  std::vector<std::string> BlockedCaps() const {
    std::vector<std::string> keys;
    for (const Blocked& b : blocked_) {
      keys.push_back(FullConcurrencyCap(b.job->cap_full));
    }
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    return keys;
  }

 private:
  struct Entry {
    int64_t at;
    uint64_t seq;
    std::unique_ptr<Job> job;
  };
  static bool Later(const Entry& a, const Entry& b) {
    return a.at != b.at ? a.at > b.at : a.seq > b.seq;
  }
  struct Blocked {
    int64_t deadline_ns;
    std::unique_ptr<Job> job;
  };
  std::vector<Entry> heap_;
  std::vector<Blocked> blocked_;
  uint64_t next_seq_ = 0;
};

void Client::Finish(std::unique_ptr<Job> owned, int curl_code, Queue& waiting,
                    const std::function<void(size_t, CallResult)>& done) {
  Job& job = *owned;
  CURL* easy = job.easy;
  long status = 0;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
  curl_multi_remove_handle(static_cast<CURLM*>(multi_), easy);
  job.easy = nullptr;
  idle_easy_.push_back(easy);

  CallResult& r = job.result;
  r.http_status = static_cast<int>(status);
  const RateLimitInfo info = ParseRateLimitHeaders(options_.provider, job.headers_in, absl::Now());
  if (!info.request_id.empty()) r.request_id = info.request_id;

  Classification c;
  std::optional<Reply> reply;  // a 2xx in the provider's reply shape
  nlohmann::json response;
  if (curl_code != CURLE_OK) {
    c = ClassifyTransportError(
        job.too_large ? absl::StrCat("response exceeded ", job.cap, " bytes")
                      : absl::StrCat(curl_easy_strerror(static_cast<CURLcode>(curl_code)),
                                     job.error[0] ? ": " : "", job.error));
    if (job.too_large) c.retryable = false;
  } else {
    // A 2xx reply in the provider's shape is parsed once, here; anything
    // else (an error status, an error object, a broken body) is classified.
    const bool success = r.http_status >= 200 && r.http_status < 300;
    if (success) {
      response = nlohmann::json::parse(job.response, nullptr, /*allow_exceptions=*/false);
      if (!response.is_discarded() && !response.contains("error")) {
        reply = ParseReply(options_.provider, response);
      }
    }
    if (!reply) {
      c = ClassifyResponse(options_.provider, r.http_status, job.response, job.headers_in);
      if (c.error_class == ErrorClass::kNone) {
        // Well-formed JSON, but not a reply: processed (and charged), so not retried.
        c.error_class = ErrorClass::kMalformedResponse;
        c.message = "the response is not a well-formed provider reply";
      }
    }
  }
  if (c.request_id.empty()) c.request_id = r.request_id;
  r.error = c;
  if (c.error_class == ErrorClass::kRateLimited) ++r.rate_limited;
  Feedback(job, info, c);

  if (c.error_class == ErrorClass::kNone) {
    if (job.permit) job.permit->Settle(reply->usage);
    r.status = absl::OkStatus();
    r.text = std::move(reply->text);
    r.response = std::move(response);
    r.usage = reply->usage;
    done(job.index, std::move(r));
    return;
  }
  // A failed attempt still counted at the provider: its request, and the
  // prompt it was sent (output never came).
  if (job.permit) job.permit->Settle({.input_tokens = job.input_estimate});
  job.permit.reset();
  const RetryDecision next =
      DecideRetry(options_.retry, job.attempt - 1, c, info.retry_after, absl::BitGenRef(rng_));
  if (next.retry) {
    job.not_before_ns = Now() + absl::ToInt64Nanoseconds(next.delay);
    waiting.Push(std::move(owned));
    return;
  }
  r.status = absl::Status(
      c.error_class == ErrorClass::kRequestTooLarge ? absl::StatusCode::kOutOfRange
                                                    : absl::StatusCode::kUnavailable,
      absl::StrCat(
          ProviderName(options_.provider), " ", ErrorClassName(c.error_class),
          c.http_status ? absl::StrCat(" (HTTP ", c.http_status, ")") : "",
          c.provider_type.empty() ? "" : absl::StrCat(" ", c.provider_type), ": ", c.message,
          c.request_id.empty() ? "" : absl::StrCat(" [request-id ", c.request_id, "]"), " after ",
          job.attempt, job.attempt == 1 ? " attempt; " : " attempts; ", next.reason));
  done(job.index, std::move(r));
}

absl::Status Client::WatchReleases(const Queue& waiting) {
  std::vector<std::string> caps = waiting.BlockedCaps();
  if (caps == watched_caps_) return absl::OkStatus();
  if (watcher_ == nullptr) {
    absl::StatusOr<std::unique_ptr<ReleaseWatcher>> watcher = ReleaseWatcher::Create(kCapRetryTick);
    if (!watcher.ok()) return watcher.status();
    watcher_ = *std::move(watcher);
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = watcher_->fd();
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, watcher_->fd(), &event) != 0) {
      watcher_.reset();
      return absl::InternalError(absl::StrCat("epoll_ctl: ", std::strerror(errno)));
    }
  }
  std::vector<StoredLeases> leases;
  for (const std::string& key : caps) {
    if (std::optional<StoredLeases> cap = policy_->ConcurrencyCap(key)) leases.push_back(*cap);
  }
  watcher_->Watch(std::move(leases));
  watched_caps_ = std::move(caps);
  return absl::OkStatus();
}

void Client::Run(const std::function<bool(CallRequest*)>& next, int max_in_flight,
                 const std::function<void(size_t, CallResult)>& done) {
  CURLM* multi = static_cast<CURLM*>(multi_);
  const int64_t throttle_timeout_ns =
      options_.throttle_timeout == absl::InfiniteDuration()
          ? std::numeric_limits<int64_t>::max()
          : absl::ToInt64Nanoseconds(std::max(options_.throttle_timeout, absl::ZeroDuration()));
  Queue waiting;
  int& in_flight = in_flight_;
  in_flight = 0;
  size_t pulled = 0;
  bool more = true;

  auto fail = [&](std::unique_ptr<Job> job, absl::Status status) {
    job->result.status = std::move(status);
    done(job->index, std::move(job->result));
  };

  while (true) {
    // Pull new requests while there is room.
    while (more && in_flight + static_cast<int>(waiting.size()) < max_in_flight) {
      auto job = std::make_unique<Job>();
      if (!next(&job->request)) {
        more = false;
        break;
      }
      job->index = pulled++;
      job->not_before_ns = job->request.not_before_ns;
      const std::string scope = job->request.scope.empty() ? options_.scope : job->request.scope;
      const std::string model = job->request.body.value("model", "");
      job->max_tokens = MaxTokens(job->request.body);
      job->input_estimate = estimator_.EstimateInputTokens(ProviderName(options_.provider), model,
                                                           PromptText(job->request.body));
      job->body = job->request.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      if (policy_ != nullptr) {
        absl::StatusOr<const Route*> route =
            policy_->Resolve(scope, ProviderName(options_.provider), model);
        if (!route.ok()) {
          fail(std::move(job), route.status());
          continue;
        }
        job->route = *route;
      }
      waiting.Push(std::move(job));
    }
    if (!more && waiting.empty() && in_flight == 0) return;

    // Start what may start, in the order it became due: reserve permits
    // (all-or-nothing; FIFO in the buckets), then wait in this loop until the
    // reserved start time.
    const int64_t now = Now();
    while (std::unique_ptr<Job> job = waiting.PopDue(now)) {
      if (policy_ != nullptr && !job->permit) {
        if (job->waiting_since_ns < 0) job->waiting_since_ns = now;
        const int64_t deadline = SaturatingAdd(job->waiting_since_ns, throttle_timeout_ns);
        absl::StatusOr<Permit> permit =
            policy_->Reserve(*job->route, job->input_estimate, job->max_tokens,
                             absl::Nanoseconds(std::max<int64_t>(0, deadline - now)), now);
        if (!permit.ok()) {
          // A full concurrency cap frees up when a lease comes back, from
          // this process or any other on the host: wait for that, up to the
          // throttle deadline. Anything else is final.
          if (IsConcurrencyFull(permit.status()) && now < deadline) {
            job->cap_full = permit.status();
            waiting.Block(std::move(job), deadline);
            continue;
          }
          fail(std::move(job), permit.status());
          continue;
        }
        job->permit = std::move(*permit);
        if (job->permit->ready_at_ns() > now) {
          job->not_before_ns = job->permit->ready_at_ns();
          waiting.Push(std::move(job));
          continue;
        }
      }
      if (job->waiting_since_ns >= 0) {
        job->result.throttle_wait += absl::Nanoseconds(now - job->waiting_since_ns);
        job->waiting_since_ns = -1;
      }
      StartTransfer(*job);
      job.release();  // owned by its transfer (CURLINFO_PRIVATE) until Finish
      ++in_flight;
    }

    for (std::unique_ptr<Job>& job : waiting.Expire(now)) {
      absl::Status timed_out = absl::DeadlineExceededError(
          absl::StrCat(job->cap_full.message(), "; none came back within ",
                       absl::FormatDuration(options_.throttle_timeout)));
      job->cap_full.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) {
        timed_out.SetPayload(url, payload);  // still names the full cap
      });
      fail(std::move(job), std::move(timed_out));
    }
    if (absl::Status s = WatchReleases(waiting); !s.ok()) {
      // Without a way to hear of releases, waiting could only poll: fail.
      for (std::unique_ptr<Job>& job : waiting.Expire(std::numeric_limits<int64_t>::max())) {
        fail(std::move(job), s);
      }
    }

    int running = 0;
    // libcurl's timer (a transfer just added, connect and request timeouts).
    if (curl_deadline_ns_ >= 0 && curl_deadline_ns_ <= Clock::MonotonicNanos()) {
      curl_deadline_ns_ = -1;
      curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    int queued = 0;
    bool finished_any = false;
    while (CURLMsg* msg = curl_multi_info_read(multi, &queued)) {
      if (msg->msg != CURLMSG_DONE) continue;
      Job* job = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &job);
      --in_flight;
      finished_any = true;
      const int code = msg->data.result;
      Finish(std::unique_ptr<Job>(job), code, waiting, done);
    }
    if (finished_any) waiting.Unblock();
    if (!more && waiting.empty() && in_flight == 0) continue;  // returns at the top

    // Sleep until a socket has news, libcurl's timer fires, or the next start
    // time comes (retries just scheduled included). Room to pull, or a
    // request due now, makes the wait zero.
    const bool can_pull = more && in_flight + static_cast<int>(waiting.size()) < max_in_flight;
    int64_t wake_in = can_pull || finished_any ? 0 : waiting.NextTime() - Now();
    if (curl_deadline_ns_ >= 0) {
      wake_in = std::min(wake_in, curl_deadline_ns_ - Clock::MonotonicNanos());
    }
    const int timeout_ms =
        static_cast<int>(std::clamp<int64_t>((wake_in + 999'999) / 1'000'000, 0, 1000));
    epoll_event events[64];
    const int n = epoll_wait(epoll_fd_, events, 64, timeout_ms);
    for (int i = 0; i < n; ++i) {
      if (watcher_ != nullptr && events[i].data.fd == watcher_->fd()) {
        watcher_->Drain();
        waiting.Unblock();  // a lease came back somewhere, or a holder may have died
        continue;
      }
      int flags = 0;
      if (events[i].events & EPOLLIN) flags |= CURL_CSELECT_IN;
      if (events[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
      if (events[i].events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
      curl_multi_socket_action(multi, events[i].data.fd, flags, &running);
    }
  }
}

CallResult Client::Call(const CallRequest& request) {
  bool given = false;
  CallResult result;
  Run(
      [&](CallRequest* out) {
        if (given) return false;
        *out = request;
        given = true;
        return true;
      },
      1, [&](size_t, CallResult r) { result = std::move(r); });
  return result;
}

}  // namespace sluice
