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
#include <condition_variable>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <utility>

#include "absl/container/flat_hash_map.h"
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
    std::shared_lock lock(post_mu);
    if (closed_to_posts) return false;
    boost::asio::post(executor, std::forward<Fn>(fn));
    return true;
  }

  // Applies `change` to the stats and wakes Stop, which waits on them.
  template <class Change>
  void Update(Change change) {
    {
      std::lock_guard lock(mu);
      change(stats);
    }
    stats_changed.notify_all();
  }

  boost::asio::io_context ioc;
  const HttpServerOptions options;
  const HttpHandler handler;
  // Set when Stop begins: no new connections, no keep-alive.
  std::atomic<bool> stopping{false};

  // Standard mutexes, not Abseil's: ThreadSanitizer sees through these (the
  // system's Abseil library is not built with it).
  mutable std::mutex mu;
  std::condition_variable stats_changed;
  HttpServerStats stats;                                                          // guarded by mu
  absl::flat_hash_map<const Connection*, std::weak_ptr<Connection>> connections;  // guarded by mu

  std::shared_mutex post_mu;
  bool closed_to_posts = false;  // guarded by post_mu
};

}  // namespace sluice::server_internal

#endif  // SLUICE_SRC_SERVER_SERVER_CORE_H_
