// ReleaseWatcher: hears of concurrency leases returned anywhere on the host,
// for an event loop.
//
// A release bumps the cap's generation word in shared memory and wakes
// sleepers with a futex, which epoll cannot watch. The watcher's thread
// sleeps on that futex for the loop and turns each release into readability
// of an eventfd the loop does watch (and calls `on_signal`, for a loop that
// waits on something else: the client's Transport::Wake). It also signals every `tick` while it
// watches anything, because a holder that dies never releases: the loop then
// retries, and the retry takes the dead holder's lease back.
//
// Thread safety: Watch, Drain and fd may be called from one thread (the
// loop's) while the watcher's own thread runs. Internal to the client.
#ifndef SLUICE_SRC_CLIENT_RELEASE_WATCHER_H_
#define SLUICE_SRC_CLIENT_RELEASE_WATCHER_H_

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sluice/store.h"

namespace sluice {

class ReleaseWatcher {
 public:
  // InternalError when no eventfd can be made. `on_signal`, when set, runs
  // on the watcher's thread each time fd() is made readable.
  static absl::StatusOr<std::unique_ptr<ReleaseWatcher>> Create(
      absl::Duration tick, std::function<void()> on_signal = nullptr);
  // Stops the thread (within one tick) and closes the eventfd.
  ~ReleaseWatcher();
  ReleaseWatcher(const ReleaseWatcher&) = delete;
  ReleaseWatcher& operator=(const ReleaseWatcher&) = delete;

  // The eventfd: readable after a release on a watched cap, and every tick
  // while any cap is watched.
  int fd() const { return fd_; }

  // Watches `caps` from now on (replacing what was watched); none: idle, no
  // ticks.
  void Watch(std::vector<StoredLeases> caps);

  // Consumes what made fd() readable; false when it was not.
  bool Drain();

 private:
  ReleaseWatcher(int fd, absl::Duration tick, std::function<void()> on_signal);
  void Loop();
  void Signal();

  const int fd_;
  const int64_t tick_ns_;
  const std::function<void()> on_signal_;
  // A standard mutex rather than absl's: ThreadSanitizer sees through the
  // pthread calls under it, and the packaged Abseil is not instrumented.
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<StoredLeases> caps_;  // guarded by mu_
  bool stop_ = false;               // guarded by mu_
  std::thread thread_;
};

}  // namespace sluice

#endif  // SLUICE_SRC_CLIENT_RELEASE_WATCHER_H_
