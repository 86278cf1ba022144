// File: http_server.h
// -----------------------------------------------------------------------------
// An asynchronous HTTP/1.1 server for the local proxy and the simulated
// provider: thousands of connections on one event-loop thread (Boost.Beast on
// Asio underneath; nothing of either shows here), keep-alive, responses sent
// whole or streamed piece by piece with each piece flushed at once, timers,
// and a way for other threads to hand work to the loop.
//
//   * A request is read whole (headers and body, up to max_body_bytes) and
//     handed to the handler as an HttpExchange. The handler answers at once
//     or later, from any thread: the exchange keeps the connection until it
//     is answered, closed, or the server stops. Nothing blocks the loop.
//   * While a request waits for its answer the server keeps reading its
//     connection, so a client that goes away is noticed at once: OnClose
//     runs, and whatever is written afterwards is dropped. (A client that
//     shuts down its sending side while it waits counts as gone. Bytes of a
//     next, pipelined request are kept for after the answer; from then on
//     the connection is not watched until the answer is sent.)
//   * A body over max_body_bytes is not read: the handler gets the request
//     with body_too_large set (answer 413 in your own shape); the connection
//     closes after that answer. A request that is not HTTP gets a plain 400
//     from the server and the connection closes. A request with
//     "Expect: 100-continue" gets its 100 before its body is read.
//   * Idle keep-alive connections close after idle_timeout; a connection
//     waiting for its answer is never idle.
//   * Stop: stop accepting, let the exchanges in progress finish up to a
//     deadline, then close every connection (OnClose runs for those cut).
//
// Thread safety: every HttpServer and HttpExchange method is safe to call
// from any thread. The handler, OnClose callbacks, Post and After callbacks
// run on the loop's thread (one of them, with threads > 1); an exchange's
// writes are delivered in the order they were called.
//
// Example:
//   sluice::HttpServerOptions options;
//   options.port = 0;
//   auto server = sluice::HttpServer::Start(options, [](std::shared_ptr<sluice::HttpExchange> x) {
//     if (x->request().path != "/hello") return x->Respond(404, {}, "no\n");
//     x->Begin(200, {{"content-type", "text/event-stream"}});
//     x->Write("data: one\n\n");  // the client has it now
//     x->End();
//   });
//   std::string url = (*server)->base_url();  // "http://127.0.0.1:PORT"

#ifndef SLUICE_HTTP_SERVER_H_
#define SLUICE_HTTP_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sluice {

// Header fields as (name, value), in the order received or to be sent. Names
// of received fields are lowercased.
using HttpFields = std::vector<std::pair<std::string, std::string>>;

// The value of the first field named `name` (case-insensitive), or nullopt.
std::optional<absl::string_view> FindField(const HttpFields& fields, absl::string_view name);

struct HttpRequest {
  std::string method;  // "POST", "GET", ...
  std::string target;  // as sent: "/v1/messages?beta=true"
  std::string path;    // the target without its query: "/v1/messages"
  HttpFields headers;  // names lowercased
  std::string body;    // empty when body_too_large
  bool body_too_large = false;
  std::string peer;  // "127.0.0.1:54321"
};

// HttpExchange
//
// One request and its answer. Answer exactly once: Respond, or Begin then
// Write... then End, or Abort. Calls after the answer is complete, or after
// the client went away, are ignored. Dropping the last reference to an
// unanswered exchange aborts it.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;

  virtual const HttpRequest& request() const = 0;

  // The whole answer, with a content-length. Here and in Begin, the server
  // writes content-length, transfer-encoding and connection itself (any the
  // handler passes are dropped, as is a field with a CR or LF in it); the
  // answer to a HEAD request goes out without its body; a status of 1xx, 204
  // or 304 goes out without a body.
  virtual void Respond(int status, HttpFields headers, std::string body) = 0;

  // Starts a streamed answer: status and headers go out at once. With
  // `content_length` the body is that many bytes (written by Write; End with
  // fewer closes the connection, as a truncated response); without it the
  // body is sent chunked. Each Write goes to the client at once.
  virtual void Begin(int status, HttpFields headers,
                     std::optional<uint64_t> content_length = std::nullopt) = 0;
  virtual void Write(std::string piece) = 0;
  virtual void End() = 0;

  // Closes the connection now, whatever was sent (a reset, for tests of
  // what clients do with one).
  virtual void Abort() = 0;

  // Runs `callback` once, on the loop, if the connection closes before the
  // answer is complete (the client went away, Abort, or Stop); at once if it
  // already has. Replaces an earlier callback.
  virtual void OnClose(std::function<void()> callback) = 0;

  // True once the connection closed before the answer was complete.
  virtual bool closed() const = 0;
};

using HttpHandler = std::function<void(std::shared_ptr<HttpExchange>)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;     // 0: a free port (HttpServer::port())
  int threads = 1;  // event-loop threads
  size_t max_body_bytes = 32 << 20;
  size_t max_header_bytes = 64 << 10;
  absl::Duration idle_timeout = absl::Seconds(60);  // keep-alive, between requests
  // How long a client may take to send one request's headers and body.
  absl::Duration read_timeout = absl::Seconds(60);
  int backlog = 4096;
};

// What the server holds now, and what it has counted since Start.
struct HttpServerStats {
  uint64_t connections_open = 0;
  uint64_t connections_accepted = 0;  // since Start
  // Handed to the handler (or a 400 of the server's own), and neither sent
  // whole (the last byte written to the socket) nor cut.
  uint64_t exchanges_open = 0;
  uint64_t requests = 0;  // handed to the handler, since Start
  // Error paths, since Start.
  uint64_t exchanges_cut = 0;     // the connection closed before the answer was sent whole
  uint64_t bad_requests = 0;      // not HTTP: answered 400 by the server
  uint64_t bodies_too_large = 0;  // handed over with body_too_large
  uint64_t timeouts = 0;          // idle or read timeouts that closed a connection
  uint64_t accept_errors = 0;     // failed accepts (out of descriptors: retried after a pause)
};

class HttpServer {
 public:
  // Binds host:port, starts the loop threads, and returns once connections
  // are accepted. InvalidArgument for an option out of range; Unavailable
  // (with the address and the system's words) when it cannot bind.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options,
                                                           HttpHandler handler);
  // Stops (with a zero deadline) if still running.
  virtual ~HttpServer() = default;

  virtual int port() const = 0;
  virtual std::string base_url() const = 0;  // "http://HOST:PORT"

  // Runs `task` on the loop soon.
  virtual void Post(std::function<void()> task) = 0;

  // Runs `task` on the loop once `delay` has passed, unless cancelled first.
  // Returns 0 (and drops the task) after Stop.
  using TimerId = uint64_t;
  virtual TimerId After(absl::Duration delay, std::function<void()> task) = 0;
  // Cancels a timer that has not run: its task is destroyed unrun. Unknown
  // or finished ids are ignored.
  virtual void Cancel(TimerId timer) = 0;

  virtual HttpServerStats stats() const = 0;

  // Stops accepting at once, and closes connections with no exchange in
  // progress; exchanges in progress may finish (their answers sent whole)
  // until `deadline` passes; then every connection closes (OnClose runs for
  // the exchanges cut) and the loop threads end. Returns when they have.
  // Tasks posted and not yet run run on the calling thread; timers not yet
  // fired are destroyed unrun. Later calls, and Post or After after Stop, do
  // nothing. REQUIRES: not called from the loop's thread (it waits for it).
  // Idempotent.
  virtual void Stop(absl::Duration deadline) = 0;
};

}  // namespace sluice

#endif  // SLUICE_HTTP_SERVER_H_
