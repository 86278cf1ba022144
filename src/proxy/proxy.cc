// The proxy: an HttpServer whose handler routes each request, queues the
// throttled ones in a Dispatcher per upstream, and forwards them through
// the Clients of the current Upstreams, passing responses back as they
// arrive.
//
// Threads: the server's loop owns every request's state (the dispatchers,
// the live requests, the upstreams); the clients' loops only write to the
// caller's connection (HttpExchange is thread-safe) and post what happened
// back to the server's loop.

#include "sluice/proxy.h"

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "sluice/client.h"
#include "sluice/http_server.h"
#include "src/proxy/dispatcher.h"
#include "src/proxy/provider_errors.h"
#include "src/proxy/proxy_metrics.h"
#include "src/proxy/request_log.h"
#include "src/proxy/routing.h"
#include "src/proxy/upstreams.h"

namespace sluice {

using proxy_internal::Destination;
using proxy_internal::Dispatcher;
using proxy_internal::ErrorReply;
using proxy_internal::Identity;
using proxy_internal::ProviderError;
using proxy_internal::ProxyCounters;
using proxy_internal::RequestRecord;
using proxy_internal::Ticket;
using proxy_internal::Treatment;
using proxy_internal::Upstreams;

namespace {

size_t Index(Provider provider) { return provider == Provider::kAnthropic ? 0 : 1; }

}  // namespace

// One request in the proxy's hands.
struct ProxyRequest : Ticket {
  std::shared_ptr<HttpExchange> exchange;
  Destination destination;
  Identity identity;
  CallRequest call;                // what is submitted (copied: a withdrawn one is resubmitted)
  Upstreams* upstreams = nullptr;  // where it was submitted
  Client::Handle handle = 0;
  bool submitted = false;
  HttpServer::TimerId timer = 0;
  absl::Time arrived;
  absl::Time started;
  std::atomic<bool> begun{false};  // the response went out (client loop)
  bool waiting = false;            // counted in ProxyStats::queued_now
};

class Proxy::Impl {
 public:
  Impl(ProxyOptions options, Store* store) : options_(std::move(options)), store_(store) {}
  ~Impl() { Shutdown(absl::ZeroDuration()); }

  absl::Status Start(const LimitsConfig& config);
  absl::Status Reload(const LimitsConfig& config);
  void Shutdown(absl::Duration deadline);
  ProxyStats stats() const { return counters_.Snapshot(); }
  HttpServer& server() { return *server_; }

 private:
  void Handle(std::shared_ptr<HttpExchange> exchange);
  void HandleForwarded(std::shared_ptr<ProxyRequest> request);
  void Enqueue(ProxyRequest* request);
  void SubmitCountTokens(ProxyRequest* request);
  void Submit(ProxyRequest* request);
  void OnClientDone(ProxyRequest* request, CallResult result);
  void Finish(ProxyRequest* request, int status, absl::string_view outcome,
              const CallResult* result);
  void Answer(ProxyRequest* request, const ErrorReply& reply, absl::string_view outcome);
  void AnswerResult(ProxyRequest* request, const CallResult& result);
  void OnTimeout(ProxyRequest* request);
  void OnClientGone(ProxyRequest* request);
  void Log(const RequestRecord& record);
  void LeaveQueue(ProxyRequest* request);
  // Runs `task` with the request if it is still live.
  std::function<void()> IfLive(ProxyRequest* request, void (Impl::*task)(ProxyRequest*));
  Dispatcher& DispatcherOf(const ProxyRequest* request) {
    return *dispatchers_[Index(request->destination.provider)];
  }
  Upstreams& Current() { return *upstreams_.back(); }
  void ReleaseUpstreams(Upstreams* upstreams);

  const ProxyOptions options_;
  Store* const store_;
  std::unique_ptr<HttpServer> server_;
  ProxyCounters counters_;
  std::mutex shutdown_mu_;
  bool shut_down_ = false;

  // The server loop's.
  std::vector<std::unique_ptr<Upstreams>> upstreams_;  // the current one last
  std::array<std::unique_ptr<Dispatcher>, 2> dispatchers_;
  // Owned here until finished. Callbacks that may run after that (the
  // connection closing, a timer) hold weak references; the clients' hold
  // plain pointers, as a request finishes only after its client is done.
  absl::flat_hash_map<ProxyRequest*, std::shared_ptr<ProxyRequest>> live_;
};

absl::Status Proxy::Impl::Start(const LimitsConfig& config) {
  absl::StatusOr<std::unique_ptr<Upstreams>> upstreams = Upstreams::Start(options_, config, store_);
  if (!upstreams.ok()) return upstreams.status();
  upstreams_.push_back(*std::move(upstreams));
  for (Provider provider : {Provider::kAnthropic, Provider::kOpenAi}) {
    dispatchers_[Index(provider)] = std::make_unique<Dispatcher>(
        [this](Ticket* t) { Submit(static_cast<ProxyRequest*>(t)); },
        [](Ticket* t) {
          auto* r = static_cast<ProxyRequest*>(t);
          r->upstreams->Client(r->destination.provider).Withdraw(r->handle);
        });
  }
  HttpServerOptions server_options;
  server_options.host = options_.host;
  server_options.port = options_.port;
  server_options.max_body_bytes = options_.max_body_bytes;
  absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Start(
      server_options, [this](std::shared_ptr<HttpExchange> x) { Handle(std::move(x)); });
  if (!server.ok()) return server.status();
  server_ = *std::move(server);
  return absl::OkStatus();
}

absl::Status Proxy::Impl::Reload(const LimitsConfig& config) {
  absl::StatusOr<std::unique_ptr<Upstreams>> upstreams = Upstreams::Start(options_, config, store_);
  if (!upstreams.ok()) return upstreams.status();
  auto fresh = std::make_shared<std::unique_ptr<Upstreams>>(*std::move(upstreams));
  server_->Post([this, fresh] {
    Upstreams* old = upstreams_.back().get();
    upstreams_.push_back(std::move(*fresh));
    // A request being reserved under the old limits may wait long for them
    // (the reason for the reload, often), with every other behind it: it is
    // withdrawn and reserved again under the new ones.
    for (std::unique_ptr<Dispatcher>& dispatcher : dispatchers_) dispatcher->WithdrawReserving();
    ReleaseUpstreams(old);
    // Counted here, on the loop that serves /metrics, so that a scrape sees
    // the count and the limits it reports change together.
    counters_.reloads++;
  });
  return absl::OkStatus();
}

// Destroys `upstreams` once it is not the current one and nothing is in it.
void Proxy::Impl::ReleaseUpstreams(Upstreams* upstreams) {
  if (upstreams == upstreams_.back().get() || upstreams->in_flight > 0) return;
  for (auto it = upstreams_.begin(); it != upstreams_.end(); ++it) {
    if (it->get() == upstreams) {
      upstreams_.erase(it);  // stops its clients and joins their loops
      return;
    }
  }
}

void Proxy::Impl::Shutdown(absl::Duration deadline) {
  std::lock_guard<std::mutex> lock(shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  if (server_ != nullptr) server_->Stop(deadline);
  // The server's loop has ended: nothing else touches the state below. The
  // clients' loops may still call back (ending what they hold, Cancelled);
  // their posts go nowhere, and the requests they name stay alive until the
  // loops are joined.
  upstreams_.clear();
  live_.clear();
}

void Proxy::Impl::Handle(std::shared_ptr<HttpExchange> exchange) {
  counters_.requests++;
  const HttpRequest& http = exchange->request();
  auto request = std::make_shared<ProxyRequest>();
  request->exchange = std::move(exchange);
  request->destination = proxy_internal::Route(http);
  request->arrived = absl::Now();
  const Provider provider = request->destination.provider;
  if (request->destination.treatment == Treatment::kMetrics) {
    request->exchange->Respond(
        200, {{"content-type", "text/plain; version=0.0.4"}},
        proxy_internal::MetricsText(options_.segment, Current().config(), counters_.Snapshot()));
    return;
  }
  if (http.body_too_large) {
    return Answer(request.get(),
                  ProviderError(provider, 413,
                                absl::StrCat("request body is larger than the proxy's limit of ",
                                             options_.max_body_bytes, " bytes")),
                  "bad_request");
  }
  if (proxy_internal::Credential(http.headers).empty()) {
    return Answer(request.get(),
                  ProviderError(provider, 401,
                                "no API key: send an x-api-key header or Authorization: Bearer"),
                  "bad_request");
  }
  HandleForwarded(std::move(request));
}

// Builds the upstream call of a request with a credential, and sends it its
// way: the queue, the count_tokens bucket, or straight on.
void Proxy::Impl::HandleForwarded(std::shared_ptr<ProxyRequest> owned) {
  ProxyRequest* request = owned.get();
  const HttpRequest& http = request->exchange->request();
  const Provider provider = request->destination.provider;
  const Treatment treatment = request->destination.treatment;
  CallRequest& call = request->call;
  if (treatment != Treatment::kPassThrough) {
    call.body = nlohmann::json::parse(http.body, nullptr, /*allow_exceptions=*/false);
    if (call.body.is_discarded() || !call.body.is_object()) {
      return Answer(request, ProviderError(provider, 400, "the request body is not a JSON object"),
                    "bad_request");
    }
  }
  if (treatment == Treatment::kThrottled) {
    absl::StatusOr<Identity> identity = proxy_internal::Identify(http.headers, Current().config());
    if (!identity.ok()) {
      return Answer(request, ProviderError(provider, 400, identity.status().message()),
                    "bad_request");
    }
    request->identity = *std::move(identity);
    request->priority = request->identity.priority;
    call.scope = request->identity.scope;
  }
  call.raw_body = http.body;
  call.method = http.method;
  call.path = http.target;
  call.headers = proxy_internal::UpstreamFields(http.headers);
  call.throttled = treatment == Treatment::kThrottled;
  call.on_response = [request](int status, const Headers& headers) {
    request->exchange->Begin(status, proxy_internal::DownstreamFields(headers));
    request->begun = true;
  };
  call.on_chunk = [request](absl::string_view piece) {
    request->exchange->Write(std::string(piece));
  };
  live_.emplace(request, std::move(owned));
  request->exchange->OnClose(IfLive(request, &Impl::OnClientGone));
  if (treatment == Treatment::kThrottled) return Enqueue(request);
  if (treatment == Treatment::kCountTokens) return SubmitCountTokens(request);
  Submit(request);
}

void Proxy::Impl::Enqueue(ProxyRequest* request) {
  counters_.throttled++;
  Dispatcher& dispatcher = DispatcherOf(request);
  if (counters_.queued_now >= options_.max_queue) {
    counters_.rejected_queue_full++;
    return Finish(request, 0, "queue_full", nullptr);
  }
  request->timer = server_->After(options_.queue_timeout, IfLive(request, &Impl::OnTimeout));
  request->waiting = true;
  counters_.queued_now++;
  dispatcher.Add(request);
}

void Proxy::Impl::SubmitCountTokens(ProxyRequest* request) {
  const std::optional<StoredBucket>& bucket = Current().count_tokens();
  if (!bucket) return Submit(request);
  const Decision decision =
      bucket->bucket.Reserve(1, absl::ToInt64Nanoseconds(options_.queue_timeout));
  if (!decision.granted()) {
    counters_.rejected_timeout++;
    return Finish(request, 0, "queue_timeout", nullptr);
  }
  if (decision.wait_ns == 0) return Submit(request);
  request->timer =
      server_->After(absl::Nanoseconds(decision.wait_ns), IfLive(request, &Impl::Submit));
}

void Proxy::Impl::Submit(ProxyRequest* request) {
  request->timer = 0;
  Upstreams& upstreams = Current();
  CallRequest call = request->call;
  if (request->destination.treatment == Treatment::kThrottled) {
    const absl::Duration left = options_.queue_timeout - (absl::Now() - request->arrived);
    call.throttle_timeout = std::max(left, absl::ZeroDuration());
    call.on_start = [this, request] {
      server_->Post([this, request] {
        request->started = absl::Now();
        LeaveQueue(request);
        DispatcherOf(request).Started(request);
      });
    };
  }
  request->upstreams = &upstreams;
  request->submitted = true;
  upstreams.in_flight++;
  request->handle = upstreams.Client(request->destination.provider)
                        .Submit(std::move(call), [this, request](CallResult result) {
                          OnClientDone(request, std::move(result));
                        });
}

// On a client's loop: end the response that went out, then let the
// server's loop do the bookkeeping.
void Proxy::Impl::OnClientDone(ProxyRequest* request, CallResult result) {
  if (request->begun) {
    if (result.status.ok()) {
      request->exchange->End();
    } else {
      request->exchange->Abort();  // the stream broke: the caller must see it did
    }
  }
  auto shared = std::make_shared<CallResult>(std::move(result));
  server_->Post([this, request, shared] {
    Upstreams* upstreams = request->upstreams;
    upstreams->in_flight--;
    const bool throttled = request->destination.treatment == Treatment::kThrottled;
    if (throttled && request->withdrawing && absl::IsCancelled(shared->status) &&
        !request->exchange->closed()) {
      DispatcherOf(request).Returned(request);  // to be reserved again, later
    } else {
      if (throttled) DispatcherOf(request).Ended(request);
      AnswerResult(request, *shared);
    }
    ReleaseUpstreams(upstreams);
  });
}

void Proxy::Impl::AnswerResult(ProxyRequest* request, const CallResult& result) {
  const Provider provider = request->destination.provider;
  if (request->exchange->closed()) return Finish(request, 0, "client_gone", &result);
  if (request->begun) {
    return Finish(request, result.http_status, result.status.ok() ? "ok" : "stream_broken",
                  &result);
  }
  if (result.http_status != 0) {
    // The provider answered (an error, or a success with no body): pass it on.
    if (result.http_status == 429) counters_.upstream_rate_limited++;
    request->exchange->Respond(result.http_status, proxy_internal::DownstreamFields(result.headers),
                               result.error_body);
    return Finish(request, result.http_status, result.status.ok() ? "ok" : "upstream_error",
                  &result);
  }
  const absl::Status& status = result.status;
  if (absl::IsDeadlineExceeded(status) || absl::IsOutOfRange(status) ||
      absl::IsResourceExhausted(status)) {
    // The throttle could not serve it in time, it can never fit, or a budget
    // is spent: the provider's own 429, so the SDK raises its usual error.
    counters_.rejected_timeout++;
    const std::optional<absl::Duration> retry =
        absl::IsDeadlineExceeded(status) ? std::optional(absl::Seconds(1)) : std::nullopt;
    return Answer(
        request,
        ProviderError(provider, 429, absl::StrCat("sluice proxy: ", status.message()), retry),
        "throttled");
  }
  if (absl::IsInvalidArgument(status)) {
    return Answer(request, ProviderError(provider, 400, status.message()), "bad_request");
  }
  counters_.upstream_errors++;
  const bool timed_out = absl::StrContains(status.message(), "imed out");
  Answer(request,
         ProviderError(provider, timed_out ? 504 : 502,
                       absl::StrCat("sluice proxy: upstream unreachable: ", status.message())),
         "upstream_unreachable");
}

void Proxy::Impl::Answer(ProxyRequest* request, const ErrorReply& reply,
                         absl::string_view outcome) {
  if (reply.status == 400 || reply.status == 413 || reply.status == 401) counters_.bad_requests++;
  request->exchange->Respond(reply.status, reply.headers, reply.body);
  Finish(request, reply.status, outcome, nullptr);
}

void Proxy::Impl::OnTimeout(ProxyRequest* request) {
  request->timer = 0;
  if (!DispatcherOf(request).Remove(request)) return;  // reserving: the client times it out
  counters_.rejected_timeout++;
  Finish(request, 0, "queue_timeout", nullptr);
}

void Proxy::Impl::OnClientGone(ProxyRequest* request) {
  counters_.client_gone++;
  const bool throttled = request->destination.treatment == Treatment::kThrottled;
  if (throttled && DispatcherOf(request).Remove(request)) {
    return Finish(request, 0, "client_gone", nullptr);
  }
  if (request->submitted) {
    // Waiting: its reservation is given back. In flight: abandoned. Either
    // way its done follows and finishes it.
    request->upstreams->Client(request->destination.provider).Cancel(request->handle);
    return;
  }
  if (request->timer != 0) {  // waiting for the count_tokens bucket
    server_->Cancel(request->timer);
    Finish(request, 0, "client_gone", nullptr);
  }
}

// The end of a request: a 429 for the proxy's own refusals (status 0 with
// outcome queue_full or queue_timeout), the log line, and its state freed.
void Proxy::Impl::Finish(ProxyRequest* request, int status, absl::string_view outcome,
                         const CallResult* result) {
  const Provider provider = request->destination.provider;
  if (status == 0 && (outcome == "queue_full" || outcome == "queue_timeout")) {
    const ErrorReply reply =
        ProviderError(provider, 429,
                      outcome == "queue_full"
                          ? "sluice proxy: the queue is full; try again shortly"
                          : absl::StrCat("sluice proxy: not served within the queue timeout of ",
                                         absl::FormatDuration(options_.queue_timeout)),
                      absl::Seconds(1));
    request->exchange->Respond(reply.status, reply.headers, reply.body);
    status = reply.status;
  }
  LeaveQueue(request);
  if (request->timer != 0) server_->Cancel(request->timer);
  const HttpRequest& http = request->exchange->request();
  RequestRecord record;
  record.at = absl::Now();
  record.method = http.method;
  record.path = http.path;
  record.provider = std::string(ProviderName(provider));
  if (request->destination.treatment == Treatment::kThrottled) {
    record.scope = request->identity.scope;
    record.priority = std::string(PriorityName(request->identity.priority));
  }
  record.status = status;
  record.outcome = std::string(outcome);
  record.queued =
      (request->started == absl::Time() ? record.at : request->started) - request->arrived;
  record.total = record.at - request->arrived;
  if (result != nullptr) {
    record.input_tokens = result->usage.input_tokens;
    record.output_tokens = result->usage.output_tokens;
    record.attempts = result->attempts;
    record.request_id = result->request_id;
  }
  Log(record);
  live_.erase(request);
}

void Proxy::Impl::LeaveQueue(ProxyRequest* request) {
  if (!request->waiting) return;
  request->waiting = false;
  counters_.queued_now--;
}

std::function<void()> Proxy::Impl::IfLive(ProxyRequest* request,
                                          void (Impl::*task)(ProxyRequest*)) {
  std::weak_ptr<ProxyRequest> weak = live_.at(request);
  return [this, weak, task] {
    if (std::shared_ptr<ProxyRequest> live = weak.lock()) (this->*task)(live.get());
  };
}

void Proxy::Impl::Log(const RequestRecord& record) {
  if (options_.log) options_.log(proxy_internal::FormatRecord(record, options_.json_log));
}

// Proxy ------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Proxy>> Proxy::Start(ProxyOptions options,
                                                    const LimitsConfig& config, Store* store) {
  if (options.max_queue == 0) return absl::InvalidArgumentError("max_queue must be at least 1");
  if (options.queue_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("queue_timeout must be positive");
  }
  auto impl = std::make_unique<Impl>(std::move(options), store);
  if (absl::Status s = impl->Start(config); !s.ok()) return s;
  return std::unique_ptr<Proxy>(new Proxy(std::move(impl)));
}

Proxy::Proxy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Proxy::~Proxy() = default;
int Proxy::port() const { return impl_->server().port(); }
std::string Proxy::base_url() const { return impl_->server().base_url(); }
absl::Status Proxy::Reload(const LimitsConfig& config) { return impl_->Reload(config); }
void Proxy::Shutdown(absl::Duration deadline) { impl_->Shutdown(deadline); }
ProxyStats Proxy::stats() const { return impl_->stats(); }

}  // namespace sluice
