#include "src/client/scheduler.h"

#include <algorithm>
#include <array>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/random/bit_gen_ref.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "src/client/body_decoder.h"
#include "src/client/stream_reader.h"
#include "src/client/wire_request.h"

namespace sluice {
namespace {

// How often requests waiting on a full concurrency cap try again when no
// lease is released: a holder that died never releases, and a retry takes
// its lease back.
constexpr absl::Duration kCapRetryTick = absl::Milliseconds(200);

// How soon a request refused by a pool that holds too little (lease mode)
// looks again: the host's refiller tops pools up every millisecond.
constexpr int64_t kPoolRetryNs = 1'000'000;

// The longest one Poll waits, whatever is due: a bound on how stale the
// loop's view of the queue can get.
constexpr int64_t kMaxPollNs = 1'000'000'000;

// The most one response may teach a bucket its request cost (tokens): far
// above any prompt, and clear of overflow.
constexpr uint64_t kMaxCharge = uint64_t{1} << 40;

int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t sum;
  return __builtin_add_overflow(a, b, &sum) ? std::numeric_limits<int64_t>::max() : sum;
}

bool Is2xx(int status) { return status >= 200 && status < 300; }

// A wait limit in ns: INT64_MAX for an infinite one, 0 for a negative one.
int64_t LimitNs(absl::Duration limit) {
  return limit == absl::InfiniteDuration()
             ? std::numeric_limits<int64_t>::max()
             : absl::ToInt64Nanoseconds(std::max(limit, absl::ZeroDuration()));
}

bool IsEventStream(const Headers& headers) {
  const std::string* type = headers.Find("content-type");
  return type != nullptr && absl::StrContains(absl::AsciiStrToLower(*type), "text/event-stream");
}

}  // namespace

std::array<Scheduler::ReportedDimension, 4> Scheduler::Dimensions(Provider provider,
                                                                  const RateLimitInfo& info) {
  // Anthropic rounds token counts to the nearest thousand.
  const int64_t rounding = provider == Provider::kAnthropic ? 500 : 0;
  return {{{info.requests, LimitKind::kRequestsPerMinute, 0},
           {info.tokens, LimitKind::kTokensPerMinute, rounding},
           {info.input_tokens, LimitKind::kInputTokensPerMinute, 500},
           {info.output_tokens, LimitKind::kOutputTokensPerMinute, 500}}};
}

// One request on its way: waiting for its start time (throttle or retry
// delay), or in flight (then the transport's sink for its response).
struct Scheduler::Job final : TransportSink {
  Scheduler* owner = nullptr;
  uint64_t id = 0;
  std::function<void(CallResult)> done;
  CallRequest request;
  TransportRequest wire;  // what every attempt sends
  const Route* route = nullptr;
  // What the route was resolved from, to resolve it again (Refresh).
  std::string scope;
  std::string model;
  std::string account;
  bool probe = false;      // probing its cold provider buckets (ColdStart)
  bool cold_wait = false;  // blocked until another request's probe ends
  uint64_t input_estimate = 0;
  uint64_t max_tokens = 0;
  int attempt = 0;
  std::optional<Permit> permit;
  int64_t not_before_ns = 0;        // start (or reserve) no earlier than this
  int64_t throttle_timeout_ns = 0;  // each attempt's limit on waiting for permits
  int64_t waiting_since_ns = -1;    // when the current throttle wait began
  absl::Status cap_full;            // a full concurrency cap's refusal, while blocked on it
  CallResult result;
  // The current attempt's response.
  int http_status = 0;
  Headers headers_in;
  std::string response;    // the body, up to the cap
  bool too_large = false;  // the body passed the cap (and the attempt was aborted)
  bool streaming = false;  // a 2xx passed on to request.on_chunk
  // A streamed body that is not kept: server-sent events (their usage is
  // read as they pass), or one that passed the cap (no longer parseable).
  bool unkept = false;
  bool delivered = false;              // some of it went out: never retried
  std::optional<StreamReader> stream;  // reads a streamed 2xx for usage and errors
  // Decodes a compressed body for reading; null for an identity one.
  std::unique_ptr<BodyDecoder> decoder;
  absl::Status outcome;

  void OnResponse(int status, const Headers& headers) override {
    http_status = status;
    headers_in = headers;
    decoder = BodyDecoder::For(headers);
    streaming = request.on_chunk != nullptr && Is2xx(status);
    if (!streaming) return;
    unkept = IsEventStream(headers);
    stream.emplace(owner->options_.provider);
    if (request.on_response) request.on_response(status, headers);
  }
  bool OnData(absl::string_view chunk) override {
    // What is read (usage, errors) and kept is the body decoded; what is
    // passed on is the body as it came.
    std::string decoded;
    if (decoder != nullptr) decoded = decoder->Feed(chunk);
    const absl::string_view readable = decoder != nullptr ? absl::string_view(decoded) : chunk;
    const bool fits = response.size() + readable.size() <= owner->options_.max_response_bytes;
    if (streaming) {
      delivered = true;
      stream->Feed(readable);
      request.on_chunk(chunk);
      unkept |= !fits;
      if (!unkept) response.append(readable.data(), readable.size());
      return true;
    }
    if (!fits) {
      too_large = true;
      return false;
    }
    response.append(readable.data(), readable.size());
    return true;
  }
  void OnDone(absl::Status status) override {
    outcome = std::move(status);
    owner->finished_.push_back(id);
  }
};

// Requests waiting to start: for their arrival time, reserved start time or
// retry delay (a min-heap on that time, FIFO among equals), or, ready but
// refused by a full concurrency cap, for a lease to come back (until their
// throttle deadline).
class Scheduler::Queue {
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
  // Job `id`, removed; null when it is not waiting.
  std::unique_ptr<Job> Remove(uint64_t id) {
    std::unique_ptr<Job> found;
    for (Blocked& b : blocked_) {
      if (b.job->id == id) found = std::move(b.job);
    }
    std::erase_if(blocked_, [](const Blocked& b) { return b.job == nullptr; });
    for (Entry& e : heap_) {
      if (e.job->id == id) found = std::move(e.job);
    }
    if (std::erase_if(heap_, [](const Entry& e) { return e.job == nullptr; }) > 0) {
      std::make_heap(heap_.begin(), heap_.end(), Later);
    }
    return found;
  }
  // Job `id` if it is waiting, else null.
  const Job* Find(uint64_t id) const {
    for (const Blocked& b : blocked_) {
      if (b.job->id == id) return b.job.get();
    }
    for (const Entry& e : heap_) {
      if (e.job->id == id) return e.job.get();
    }
    return nullptr;
  }
  // The ids of every waiting job.
  std::vector<uint64_t> Ids() const {
    std::vector<uint64_t> ids;
    for (const Blocked& b : blocked_) ids.push_back(b.job->id);
    for (const Entry& e : heap_) ids.push_back(e.job->id);
    return ids;
  }
  // The keys of the caps blocked jobs wait for, sorted, without repeats.
  std::vector<std::string> BlockedCaps() const {
    std::vector<std::string> keys;
    for (const Blocked& b : blocked_) {
      if (!b.job->cold_wait) keys.push_back(FullConcurrencyCap(b.job->cap_full));
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

Scheduler::Scheduler(ClientOptions options, Policy* policy, Transport* transport, Clock clock)
    : options_(std::move(options)),
      policy_(policy),
      transport_(transport),
      clock_(clock),
      rng_(options_.seed != 0 ? options_.seed : std::random_device()()),
      waiting_(std::make_unique<Queue>()),
      cold_start_(policy) {}

Scheduler::~Scheduler() {
  watcher_.reset();  // stops its thread, which wakes the transport
  for (auto& [id, job] : in_flight_) transport_->Cancel(id);
}

absl::Duration Scheduler::ThrottleTimeout(const Job& job) const {
  return job.request.throttle_timeout.value_or(options_.throttle_timeout);
}

size_t Scheduler::outstanding() const { return waiting_->size() + in_flight_.size(); }

void Scheduler::Deliver(std::unique_ptr<Job> job, absl::Status status) {
  EndProbe(*job, /*responded=*/false);
  job->result.status = std::move(status);
  job->done(std::move(job->result));
}

void Scheduler::Admit(std::unique_ptr<Job> job) {
  job->owner = this;
  job->not_before_ns = job->request.not_before_ns;
  absl::StatusOr<TransportRequest> wire = WireRequest(options_, job->request);
  if (!wire.ok()) return Deliver(std::move(job), wire.status());
  job->wire = *std::move(wire);
  std::string().swap(job->request.raw_body);  // the wire has the bytes: one copy is enough
  const std::string model = ModelOf(job->request.body);
  job->max_tokens = MaxTokens(job->request.body);
  job->input_estimate = estimator_.EstimateInputTokens(ProviderName(options_.provider), model,
                                                       PromptText(job->request.body));
  job->throttle_timeout_ns = LimitNs(ThrottleTimeout(*job));
  // An unthrottled request has no route: nothing reserved, nothing fed back.
  if (policy_ != nullptr && job->request.throttled) {
    job->scope = job->request.scope.empty() ? options_.scope : job->request.scope;
    job->model = model;
    job->account = RequestAccount(options_, job->request);
    absl::StatusOr<const Route*> route =
        policy_->Resolve(job->scope, ProviderName(options_.provider), model, job->account);
    if (!route.ok()) return Deliver(std::move(job), route.status());
    job->route = *route;
  }
  waiting_->Push(std::move(job));
}

uint64_t Scheduler::Submit(CallRequest request, std::function<void(CallResult)> done) {
  auto job = std::make_unique<Job>();
  job->id = next_id_.fetch_add(1, std::memory_order_relaxed);
  job->request = std::move(request);
  job->done = std::move(done);
  const uint64_t id = job->id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    submitted_.push_back(std::move(job));
  }
  transport_->Wake();
  return id;
}

void Scheduler::Cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back({id, /*only_unstarted=*/false});
  }
  transport_->Wake();
}

void Scheduler::Withdraw(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back({id, /*only_unstarted=*/true});
  }
  transport_->Wake();
}

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  transport_->Wake();
}

bool Scheduler::TakeInbox() {
  std::vector<std::unique_ptr<Job>> submitted;
  std::vector<CancelOrder> cancels;
  bool stop;
  {
    std::lock_guard<std::mutex> lock(mu_);
    submitted.swap(submitted_);
    cancels.swap(cancels_);
    stop = stop_;
  }
  for (std::unique_ptr<Job>& job : submitted) Admit(std::move(job));
  for (const CancelOrder& c : cancels) {
    if (c.only_unstarted) {
      const Job* job = waiting_->Find(c.id);
      if (job == nullptr || job->attempt > 0) continue;  // started, or gone
      CancelNow(c.id, "withdrawn");
    } else {
      CancelNow(c.id, "cancelled");
    }
  }
  return stop;
}

void Scheduler::CancelNow(uint64_t id, absl::string_view why) {
  if (auto it = in_flight_.find(id); it != in_flight_.end()) {
    std::unique_ptr<Job> job = std::move(it->second);
    in_flight_.erase(it);
    transport_->Cancel(id);
    // Sent: the provider counted the request and its prompt.
    if (job->permit) job->permit->Settle({.input_tokens = job->input_estimate});
    job->permit.reset();
    return Deliver(std::move(job), absl::CancelledError(absl::StrCat(why, " while in flight")));
  }
  if (std::unique_ptr<Job> job = waiting_->Remove(id)) {
    if (job->permit) job->permit->Cancel();  // never sent: all of it comes back
    job->permit.reset();
    Deliver(std::move(job), absl::CancelledError(absl::StrCat(why, " before it was sent")));
  }
}

void Scheduler::CancelAll() {
  TakeInbox();
  std::vector<uint64_t> ids = waiting_->Ids();
  for (const auto& [id, job] : in_flight_) ids.push_back(id);
  for (uint64_t id : ids) CancelNow(id, "stopped");
}

void Scheduler::Pull(Source& source) {
  while (source.more && static_cast<int>(outstanding()) < source.max_in_flight) {
    auto job = std::make_unique<Job>();
    if (!(*source.next)(&job->request)) {
      source.more = false;
      return;
    }
    job->id = next_id_.fetch_add(1, std::memory_order_relaxed);
    const size_t index = source.pulled++;
    const auto* done = source.done;
    job->done = [done, index](CallResult r) { (*done)(index, std::move(r)); };
    Admit(std::move(job));
  }
}

// Starts what may start, in the order it became due: reserves permits
// (all-or-nothing; FIFO in the buckets), then waits in the queue until the
// reserved start time.
void Scheduler::StartDue(int64_t now) {
  while (std::unique_ptr<Job> job = waiting_->PopDue(now)) {
    if (job->route != nullptr && !job->permit) {
      if (job->waiting_since_ns < 0) job->waiting_since_ns = now;
      const int64_t deadline = SaturatingAdd(job->waiting_since_ns, job->throttle_timeout_ns);
      if (absl::Status s = Refresh(*job); !s.ok()) {
        Deliver(std::move(job), s);
        continue;
      }
      if (AwaitProbe(job, now, deadline)) continue;
      absl::StatusOr<Permit> permit =
          policy_->Reserve(*job->route, job->input_estimate, job->max_tokens,
                           absl::Nanoseconds(std::max<int64_t>(0, deadline - now)), now);
      if (!permit.ok()) {
        // A full concurrency cap frees up when a lease comes back, from
        // this process or any other on the host: wait for that, up to the
        // throttle deadline. Anything else is final.
        if (IsConcurrencyFull(permit.status()) && now < deadline) {
          job->cap_full = permit.status();
          waiting_->Block(std::move(job), deadline);
          continue;
        }
        // A pool (lease mode) fills from the fleet in the background: look
        // again in a millisecond, up to the throttle deadline.
        if (IsPoolShort(permit.status()) && now < deadline) {
          job->not_before_ns = std::min(now + kPoolRetryNs, deadline);
          waiting_->Push(std::move(job));
          continue;
        }
        Deliver(std::move(job), permit.status());
        continue;
      }
      job->permit = std::move(*permit);
      job->probe = options_.cold_start && cold_start_.Go(*job->route, job->id);
      if (job->permit->ready_at_ns() > now) {
        job->not_before_ns = job->permit->ready_at_ns();
        waiting_->Push(std::move(job));
        continue;
      }
    }
    if (job->waiting_since_ns >= 0) {
      job->result.throttle_wait += absl::Nanoseconds(now - job->waiting_since_ns);
      job->waiting_since_ns = -1;
    }
    StartAttempt(std::move(job));
  }
}

void Scheduler::StartAttempt(std::unique_ptr<Job> job) {
  job->http_status = 0;
  job->headers_in.Clear();
  job->decoder.reset();
  job->response.clear();
  job->too_large = false;
  job->streaming = false;
  job->unkept = false;
  job->stream.reset();
  job->outcome = absl::OkStatus();
  ++job->attempt;
  ++job->result.attempts;
  TransportRequest wire = job->wire;
  wire.id = job->id;
  Job* sink = job.get();
  const bool first = job->attempt == 1;
  in_flight_[job->id] = std::move(job);
  if (first && sink->request.on_start) sink->request.on_start();
  transport_->Start(std::move(wire), sink);
}

absl::Status Scheduler::Refresh(Job& job) {
  if (!job.route->superseded()) return absl::OkStatus();
  absl::StatusOr<const Route*> route =
      policy_->Resolve(job.scope, ProviderName(options_.provider), job.model, job.account);
  if (!route.ok()) return route.status();
  job.route = *route;
  return absl::OkStatus();
}

bool Scheduler::AwaitProbe(std::unique_ptr<Job>& job, int64_t now, int64_t deadline) {
  job->cold_wait = options_.cold_start && cold_start_.MustWait(*job->route, job->id);
  if (!job->cold_wait) return false;
  if (now < deadline) {
    waiting_->Block(std::move(job), deadline);
  } else {
    absl::Status expired = ColdWaitExpired(*job);
    Deliver(std::move(job), std::move(expired));
  }
  return true;
}

absl::Status Scheduler::ColdWaitExpired(const Job& job) const {
  return absl::DeadlineExceededError(absl::StrCat(
      "provider buckets ", job.route->provider_owner(),
      ": waiting for the first response, whose rate-limit headers size their burst (cold "
      "start); none came within ",
      absl::FormatDuration(ThrottleTimeout(job))));
}

void Scheduler::EndProbe(Job& job, bool responded) {
  if (job.route == nullptr) return;
  const bool probed = std::exchange(job.probe, false);
  // Any response ends the cold start, a probe's or not.
  if (probed || responded) cold_start_.End(*job.route, job.id, responded);
  if (probed) waiting_->Unblock();  // the next request may go, or probe in its turn
}

void Scheduler::ExpireBlocked(int64_t now) {
  for (std::unique_ptr<Job>& job : waiting_->Expire(now)) {
    if (job->cold_wait) {
      absl::Status expired = ColdWaitExpired(*job);
      Deliver(std::move(job), std::move(expired));
      continue;
    }
    absl::Status timed_out = absl::DeadlineExceededError(
        absl::StrCat(job->cap_full.message(), "; none came back within ",
                     absl::FormatDuration(ThrottleTimeout(*job))));
    job->cap_full.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) {
      timed_out.SetPayload(url, payload);  // still names the full cap
    });
    Deliver(std::move(job), std::move(timed_out));
  }
  if (absl::Status s = WatchReleases(); !s.ok()) {
    // Without a way to hear of releases, waiting could only poll: fail.
    for (std::unique_ptr<Job>& job : waiting_->Expire(std::numeric_limits<int64_t>::max())) {
      Deliver(std::move(job), s);
    }
  }
}

absl::Status Scheduler::WatchReleases() {
  std::vector<std::string> caps = waiting_->BlockedCaps();
  if (caps == watched_caps_) return absl::OkStatus();
  if (watcher_ == nullptr) {
    Transport* transport = transport_;
    absl::StatusOr<std::unique_ptr<ReleaseWatcher>> watcher =
        ReleaseWatcher::Create(kCapRetryTick, [transport] { transport->Wake(); });
    if (!watcher.ok()) return watcher.status();
    watcher_ = *std::move(watcher);
  }
  std::vector<StoredLeases> leases;
  for (const std::string& key : caps) {
    if (std::optional<StoredLeases> cap = policy_->ConcurrencyCap(key)) leases.push_back(*cap);
  }
  watcher_->Watch(std::move(leases));
  watched_caps_ = std::move(caps);
  return absl::OkStatus();
}

void Scheduler::Loop(Source& source) {
  for (;;) {
    const bool stopped = TakeInbox();
    if (stopped && source.next == nullptr) return;
    Pull(source);
    if (source.next != nullptr && !source.more && outstanding() == 0) return;

    const int64_t now = Now();
    StartDue(now);
    ExpireBlocked(now);

    // Wait until the transport has news, the next start time comes (retries
    // just scheduled included), or another thread submits. Room to pull
    // makes the wait zero.
    const bool can_pull = source.more && static_cast<int>(outstanding()) < source.max_in_flight;
    const int64_t wake_in = can_pull ? 0 : waiting_->NextTime() - Now();
    transport_->Poll(absl::Nanoseconds(std::clamp<int64_t>(wake_in, 0, kMaxPollNs)));

    std::vector<uint64_t> finished;
    finished.swap(finished_);
    for (uint64_t id : finished) {
      auto it = in_flight_.find(id);
      std::unique_ptr<Job> job = std::move(it->second);
      in_flight_.erase(it);
      Finish(std::move(job));
    }
    const bool released = watcher_ != nullptr && watcher_->Drain();
    if (!finished.empty() || released) waiting_->Unblock();
  }
}

void Scheduler::Run(const std::function<bool(CallRequest*)>& next, int max_in_flight,
                    const std::function<void(size_t, CallResult)>& done) {
  Source source{.next = &next, .done = &done, .max_in_flight = max_in_flight, .more = true};
  Loop(source);
}

void Scheduler::Serve() {
  Source source;
  Loop(source);
  CancelAll();
  std::lock_guard<std::mutex> lock(mu_);
  stop_ = false;  // served again, it runs until the next Stop
}

void Scheduler::Feedback(Job& job, const RateLimitInfo& info, const Classification& c,
                         const std::optional<Usage>& usage) {
  if (job.route == nullptr || !options_.header_feedback) return;
  const int64_t now = Now();
  const auto dims = Dimensions(options_.provider, info);
  if (options_.learn_provider_rate && !job.route->superseded()) {
    // A provider the configuration does not name gets its buckets from its
    // first `*-limit` headers (Anthropic's combined "tokens" is left out:
    // its input and output limits say it more exactly).
    std::vector<std::pair<LimitKind, double>> limits;
    for (const ReportedDimension& d : dims) {
      if (!d.dim.limit || *d.dim.limit <= 0) continue;
      if (d.kind == LimitKind::kTokensPerMinute && options_.provider == Provider::kAnthropic) {
        continue;
      }
      limits.emplace_back(d.kind, static_cast<double>(*d.dim.limit) * options_.provider_time_scale);
    }
    if (!limits.empty()) policy_->LearnProviderLimits(*job.route, limits).IgnoreError();
  }
  // The job's route draws from buckets learned just now (or by another job).
  if (!Refresh(job).ok()) return;
  if (options_.cold_start) LearnBurst(job, dims, usage);
  // The provider counted this response before the requests still in flight
  // reached it: they will take from what it says remains.
  const int64_t others = std::max<int64_t>(0, static_cast<int64_t>(in_flight_.size()) - 1);
  for (const ReportedDimension& d : dims) {
    if (!d.dim.remaining) continue;
    const int64_t in_transit = d.kind == LimitKind::kRequestsPerMinute ? others : 0;
    policy_->ClampProvider(*job.route, d.kind, *d.dim.remaining + d.rounding - in_transit, now);
  }
  // Learn the key's real tier from the limit the provider states for it
  // (per minute of its clock). Exact, unlike an estimate from `remaining`
  // and the reset time: Anthropic gives resets to the second, which biases
  // any rate computed from them low by up to a second's worth.
  for (const ReportedDimension& d : dims) {
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

void Scheduler::LearnBurst(const Job& job, const std::array<ReportedDimension, 4>& dims,
                           const std::optional<Usage>& usage) {
  // What this request cost in each dimension, as far as the provider has
  // counted it when it answers: one request, and the prompt (the output is
  // counted as it is produced, maybe after the headers: 0 is the safe side).
  const bool counted = Is2xx(job.http_status);
  for (const ReportedDimension& d : dims) {
    if (!d.dim.remaining) continue;
    uint64_t charged = 0;
    if (counted && d.kind == LimitKind::kRequestsPerMinute) charged = 1;
    if (counted && usage && d.kind == LimitKind::kInputTokensPerMinute) {
      charged = usage->input_tokens + usage->cache_creation_input_tokens;
    }
    if (counted && usage && d.kind == LimitKind::kTokensPerMinute &&
        options_.provider == Provider::kOpenAi) {
      charged = usage->input_tokens + usage->cache_read_input_tokens;  // every prompt token
    }
    // A rounded count may be up to `rounding` more than the bucket holds.
    policy_->LearnProviderBurst(*job.route, d.kind,
                                std::max<int64_t>(0, *d.dim.remaining - d.rounding),
                                static_cast<int64_t>(std::min<uint64_t>(charged, kMaxCharge)));
  }
}

namespace {

// What one attempt came to: its classification, and the reply when it is a
// 2xx in the provider's shape (parsed once, here).
struct Attempt {
  Classification c;
  std::optional<Reply> reply;
  nlohmann::json response;
};

Attempt Classify(Provider provider, int http_status, absl::string_view body, const Headers& headers,
                 bool streamed) {
  Attempt a;
  if (Is2xx(http_status)) {
    a.response = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (!a.response.is_discarded() && !a.response.contains("error")) {
      a.reply = ParseReply(provider, a.response);
    }
  }
  // A streamed 2xx went out as it came (server-sent events, usually): it
  // succeeded whatever its shape.
  if (a.reply || (streamed && Is2xx(http_status))) return a;
  a.c = ClassifyResponse(provider, http_status, body, headers);
  if (a.c.error_class == ErrorClass::kNone) {
    // Well-formed JSON, but not a reply: processed (and charged), so not retried.
    a.c.error_class = ErrorClass::kMalformedResponse;
    a.c.message = "the response is not a well-formed provider reply";
  }
  return a;
}

}  // namespace

void Scheduler::Finish(std::unique_ptr<Job> owned) {
  Job& job = *owned;
  CallResult& r = job.result;
  r.http_status = job.http_status;
  const RateLimitInfo info = ParseRateLimitHeaders(options_.provider, job.headers_in, absl::Now());
  if (!info.request_id.empty()) r.request_id = info.request_id;

  Attempt a;
  if (!job.outcome.ok()) {
    a.c = ClassifyTransportError(
        job.too_large ? absl::StrCat("response exceeded ", options_.max_response_bytes, " bytes")
                      : job.outcome.message());
    if (job.too_large) a.c.retryable = false;
  } else {
    a = Classify(options_.provider, r.http_status, job.response, job.headers_in, job.streaming);
    if (job.stream && !job.stream->error().empty()) {
      // An error event after the 200: classified by its error's type.
      a.c = ClassifyResponse(options_.provider, r.http_status, job.stream->error(), job.headers_in);
    }
  }
  Classification& c = a.c;
  r.headers = job.headers_in;
  if (job.decoder != nullptr) {
    // The body kept (error_body) is the decoded one: its headers say so.
    r.headers.Erase("content-encoding");
    r.headers.Erase("content-length");
  }
  // Part of the response went out already: another attempt would repeat it.
  if (job.delivered) c.retryable = false;
  if (c.request_id.empty()) c.request_id = r.request_id;
  r.error = c;
  if (c.error_class == ErrorClass::kRateLimited) ++r.rate_limited;
  // What the provider reported it counted, if it did.
  std::optional<Usage> reported;
  if (c.error_class == ErrorClass::kNone) {
    if (a.reply) reported = a.reply->usage;
    if (!a.reply && job.stream && job.stream->usage()) reported = *job.stream->usage();
  }
  Feedback(job, info, c, reported);
  EndProbe(job, /*responded=*/r.http_status > 0);

  if (c.error_class == ErrorClass::kNone) {
    if (a.reply) {
      r.text = std::move(a.reply->text);
      r.response = std::move(a.response);
    }
    if (reported) r.usage = *reported;
    // Settled with what the provider reported; without a report (a stream
    // that carried no usage), dropping the permit keeps the estimate charged.
    if (job.permit && reported) job.permit->Settle(r.usage);
    job.permit.reset();
    return Deliver(std::move(owned), absl::OkStatus());
  }
  // A failed attempt still counted at the provider: its request, and the
  // prompt it was sent (output never came).
  if (job.permit) job.permit->Settle({.input_tokens = job.input_estimate});
  job.permit.reset();
  const RetryDecision next =
      DecideRetry(options_.retry, job.attempt - 1, c, info.retry_after, absl::BitGenRef(rng_));
  if (next.retry) {
    job.not_before_ns = Now() + absl::ToInt64Nanoseconds(next.delay);
    waiting_->Push(std::move(owned));
    return;
  }
  r.error_body = std::move(job.response);
  Deliver(
      std::move(owned),
      absl::Status(
          c.error_class == ErrorClass::kRequestTooLarge ? absl::StatusCode::kOutOfRange
                                                        : absl::StatusCode::kUnavailable,
          absl::StrCat(ProviderName(options_.provider), " ", ErrorClassName(c.error_class),
                       c.http_status ? absl::StrCat(" (HTTP ", c.http_status, ")") : "",
                       c.provider_type.empty() ? "" : absl::StrCat(" ", c.provider_type), ": ",
                       c.message,
                       c.request_id.empty() ? "" : absl::StrCat(" [request-id ", c.request_id, "]"),
                       " after ", job.attempt, job.attempt == 1 ? " attempt; " : " attempts; ",
                       next.reason)));
}

}  // namespace sluice
