// ScriptedTransport: a Transport for tests that answers each request from a
// script, on a FakeClock. Poll moves the fake time straight to the next
// scripted event (or to the end of its timeout) and delivers it, so a
// scheduler's timing is exact to the nanosecond and no test sleeps or opens
// a socket.
//
// Thread safety: as Transport; Wake may come from any thread (the release
// watcher's, say). Everything else is for the loop's thread.
#ifndef SLUICE_TESTS_CLIENT_SCRIPTED_TRANSPORT_H_
#define SLUICE_TESTS_CLIENT_SCRIPTED_TRANSPORT_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "sluice/clock.h"
#include "sluice/transport.h"

namespace sluice {

// What the script answers one request with.
struct ScriptedReply {
  int http_status = 200;
  Headers headers;
  std::vector<std::string> chunks;                 // the body, in the pieces it arrives in
  absl::Duration latency = absl::Milliseconds(1);  // start to the end of the reply
  // Not OK: the connection fails after the chunks (none: before a response).
  absl::Status error;
};

class ScriptedTransport final : public Transport {
 public:
  using Script = std::function<ScriptedReply(const TransportRequest&)>;

  // One request the transport was given, and when (fake ns).
  struct Sent {
    TransportRequest request;
    int64_t at_ns;
  };

  ScriptedTransport(FakeClock* clock, Script script) : clock_(clock), script_(std::move(script)) {}

  void Start(TransportRequest request, TransportSink* sink) override {
    sent_.push_back({request, clock_->Now()});
    ScriptedReply reply = script_(request);
    const int64_t due = clock_->Now() + absl::ToInt64Nanoseconds(reply.latency);
    pending_.push_back({request.id, due, sink, std::move(reply)});
    max_in_flight_ = std::max(max_in_flight_, pending_.size());
  }

  void Cancel(uint64_t id) override {
    cancelled_.push_back(id);
    std::erase_if(pending_, [id](const Pending& p) { return p.id == id; });
  }

  void Poll(absl::Duration timeout) override {
    ++polls_;
    if (on_poll) on_poll();
    if (woken_.exchange(false)) return;
    const int64_t deadline = clock_->Now() + absl::ToInt64Nanoseconds(timeout);
    int64_t next = std::numeric_limits<int64_t>::max();
    for (const Pending& p : pending_) next = std::min(next, p.due_ns);
    if (next > deadline) {
      clock_->Set(deadline);
      return;
    }
    clock_->Set(next);
    // Everything due now, in the order it started.
    std::vector<Pending> due;
    for (Pending& p : pending_) {
      if (p.due_ns <= next) due.push_back(std::move(p));
    }
    std::erase_if(pending_, [next](const Pending& p) { return p.due_ns <= next; });
    for (Pending& p : due) Deliver(p);
  }

  void Wake() override { woken_.store(true); }

  const std::vector<Sent>& sent() const { return sent_; }
  const std::vector<uint64_t>& cancelled() const { return cancelled_; }
  size_t in_flight() const { return pending_.size(); }
  size_t max_in_flight() const { return max_in_flight_; }
  int polls() const { return polls_; }

  // Runs at the start of every Poll, on the loop's thread: a test's way to
  // act at a chosen moment (submit, cancel, stop).
  std::function<void()> on_poll;

 private:
  struct Pending {
    uint64_t id;
    int64_t due_ns;
    TransportSink* sink;
    ScriptedReply reply;
  };

  static void Deliver(Pending& p) {
    const bool responds = p.reply.error.ok() || !p.reply.chunks.empty();
    if (responds) p.sink->OnResponse(p.reply.http_status, p.reply.headers);
    for (const std::string& chunk : p.reply.chunks) {
      if (!p.sink->OnData(chunk)) {
        p.sink->OnDone(absl::UnavailableError("aborted by the sink"));
        return;
      }
    }
    p.sink->OnDone(p.reply.error);
  }

  FakeClock* const clock_;
  const Script script_;
  std::vector<Pending> pending_;
  std::vector<Sent> sent_;
  std::vector<uint64_t> cancelled_;
  size_t max_in_flight_ = 0;
  int polls_ = 0;
  std::atomic<bool> woken_{false};
};

}  // namespace sluice

#endif  // SLUICE_TESTS_CLIENT_SCRIPTED_TRANSPORT_H_
