// File: server_core.h
// -----------------------------------------------------------------------------
// What the HTTP server and its connections share: the io_context, the options
// and handler, the counters, the registry of open connections that Stop walks,
// and the gate that closes the loop to new work once Stop has drained it.
// Shared by pointer, so that an exchange a handler keeps past Stop still
// points at a live (if stopped) io_context.
//
// Only Asio shows here; the connections (Beast) live in connection.cc, and
// the rest of the server reaches them through connection.h.
//
// Thread safety: the members are const, atomic, or guarded by the mutex named
// beside them.

#ifndef SLUICE_SRC_SERVER_SERVER_CORE_H_
#define SLUICE_SRC_SERVER_SERVER_CORE_H_

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "sluice/http_server.h"

namespace sluice::server_internal {

class Connection;

struct ServerCore {
  ServerCore(HttpServerOptions server_options, HttpHandler server_handler)
      : ioc(server_options.threads),
        options(std::move(server_options)),
        handler(std::move(server_handler)) {}

  // Posts `fn` to `executor` unless the loop is closed to new work (after
  // Stop), in which case `fn` is destroyed unrun. Returns whether it posted.
  template <class Executor, class Fn>
  bool PostTo(const Executor& executor, Fn&& fn) {
    absl::ReaderMutexLock lock(&post_mu);
    if (closed_to_posts) return false;
    boost::asio::post(executor, std::forward<Fn>(fn));
    return true;
  }

  boost::asio::io_context ioc;
  const HttpServerOptions options;
  const HttpHandler handler;
  // Set when Stop begins: no new connections, no keep-alive.
  std::atomic<bool> stopping{false};

  // Counters and open connections; Stop waits on both.
  mutable absl::Mutex mu;
  HttpServerStats stats ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<const Connection*, std::weak_ptr<Connection>> connections ABSL_GUARDED_BY(mu);

  absl::Mutex post_mu;
  bool closed_to_posts ABSL_GUARDED_BY(post_mu) = false;
};

}  // namespace sluice::server_internal

#endif  // SLUICE_SRC_SERVER_SERVER_CORE_H_
