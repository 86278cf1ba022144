// File: transport.h
// -----------------------------------------------------------------------------
// How a Client's requests reach the network: a Transport starts HTTP requests,
// reports each response as it arrives (status and headers, then the body
// piece by piece, then the end), cancels them, and waits for progress.
//
// The Client's scheduler (queue, reservations, start times, retries,
// feedback) decides when a request starts; the transport only moves bytes.
// NewCurlTransport() gives the production one: libcurl's multi interface
// driven by epoll, every transfer on one thread, connections reused. Tests
// give a Client a scripted transport on a fake clock instead, so that the
// scheduler's timing is exact and needs no sockets.
//
// Thread safety: Start, Cancel and Poll are called from one thread (the
// Client's loop), and the sinks are called on that thread, inside Poll.
// Wake may be called from any thread.

#ifndef SLUICE_TRANSPORT_H_
#define SLUICE_TRANSPORT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/provider.h"

namespace sluice {

// One HTTP request: a POST unless `method` says otherwise.
struct TransportRequest {
  uint64_t id = 0;  // the caller's; unique among the requests in flight
  // "GET", "HEAD", "DELETE", ...; empty: "POST". GET and HEAD send no body
  // (`body` is ignored); HEAD's response has none.
  std::string method;
  std::string url;
  // "name: value" lines, credentials among them. REQUIRES: no CR or LF.
  std::vector<std::string> headers;
  std::string body;
};

// Hears one request's response. Called on the thread that runs
// Transport::Poll; valid from Start until OnDone returns or Cancel.
class TransportSink {
 public:
  virtual ~TransportSink() = default;
  // Once, when the status and headers of the final response are in, before
  // any of its body (or at the end when it has none). Not called when the
  // request failed before a response arrived.
  virtual void OnResponse(int http_status, const Headers& headers) = 0;
  // A piece of the body as it arrived. Returning false aborts the request:
  // OnDone follows with an error.
  virtual bool OnData(absl::string_view chunk) = 0;
  // The end: OK when the whole response arrived; otherwise what went wrong
  // on the way (connection, timeout, aborted), in words with no secret in
  // them. Nothing is called for the request after this.
  virtual void OnDone(absl::Status outcome) = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;

  // Sends `request`; its response goes to `sink` (REQUIRES: it outlives the
  // request). The transport may queue it behind its connection cap.
  virtual void Start(TransportRequest request, TransportSink* sink) = 0;

  // Stops request `id` if it is still running: its sink hears nothing more.
  // Unknown or finished ids are ignored.
  virtual void Cancel(uint64_t id) = 0;

  // Waits until the network makes progress, `timeout` passes, or Wake is
  // called (whichever comes first), and delivers what arrived to the sinks.
  virtual void Poll(absl::Duration timeout) = 0;

  // Makes a Poll in progress (or the next one) return at once. Thread-safe.
  virtual void Wake() = 0;
};

struct TransportOptions {
  absl::Duration connect_timeout = absl::Seconds(10);
  absl::Duration request_timeout = absl::Minutes(10);  // one request, end to end
  // Connections open at once; 0: no cap (see ClientOptions::max_connections).
  int max_connections = 0;
};

// The libcurl transport: TLS verified, timeouts as given, connections reused
// across requests. InternalError when epoll or libcurl cannot be set up.
absl::StatusOr<std::unique_ptr<Transport>> NewCurlTransport(const TransportOptions& options);

}  // namespace sluice

#endif  // SLUICE_TRANSPORT_H_
