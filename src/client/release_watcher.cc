#include "src/client/release_watcher.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "sluice/clock.h"

namespace sluice {
namespace {

constexpr int64_t kSliceNs = 20'000'000;  // 20 ms

}  // namespace

absl::StatusOr<std::unique_ptr<ReleaseWatcher>> ReleaseWatcher::Create(
    absl::Duration tick, std::function<void()> on_signal) {
  const int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  return std::unique_ptr<ReleaseWatcher>(new ReleaseWatcher(fd, tick, std::move(on_signal)));
}

ReleaseWatcher::ReleaseWatcher(int fd, absl::Duration tick, std::function<void()> on_signal)
    : fd_(fd),
      tick_ns_(std::max<int64_t>(1'000'000, absl::ToInt64Nanoseconds(tick))),
      on_signal_(std::move(on_signal)),
      thread_([this] { Loop(); }) {}

ReleaseWatcher::~ReleaseWatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
  close(fd_);
}

void ReleaseWatcher::Watch(std::vector<StoredLeases> caps) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    caps_ = std::move(caps);
  }
  changed_.notify_all();
}

bool ReleaseWatcher::Drain() {
  uint64_t count = 0;
  ssize_t n;
  while ((n = read(fd_, &count, sizeof(count))) < 0 && errno == EINTR) {
  }
  return n == static_cast<ssize_t>(sizeof(count));
}

void ReleaseWatcher::Signal() {
  const uint64_t one = 1;
  while (write(fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
  if (on_signal_) on_signal_();
}

void ReleaseWatcher::Loop() {
  for (;;) {
    std::vector<StoredLeases> caps;
    {
      // Idle until something is watched or the watcher stops.
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait(lock, [this] { return stop_ || !caps_.empty(); });
      if (stop_) return;
      caps = caps_;
    }
    std::vector<uint32_t> seen;
    for (const StoredLeases& cap : caps) seen.push_back(cap.Generation());
    // Sleep on the first cap's futex in short slices: a release on another
    // cap, or a request to stop, is then noticed within one slice.
    const int64_t slice = std::min<int64_t>(tick_ns_, kSliceNs);
    const int64_t until = Clock::MonotonicNanos() + tick_ns_;
    bool released = false;
    for (int64_t now = Clock::MonotonicNanos(); !released && now < until;
         now = Clock::MonotonicNanos()) {
      caps[0].WaitForRelease(seen[0], absl::Nanoseconds(std::min(slice, until - now)));
      for (size_t i = 0; i < caps.size() && !released; ++i) {
        released = caps[i].Generation() != seen[i];
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    Signal();  // a release, or a tick: either way the loop tries again
  }
}

}  // namespace sluice
