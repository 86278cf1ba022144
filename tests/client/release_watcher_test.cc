// The client's release watcher: a release of a watched cap's lease, by any
// thread or process, makes the eventfd readable; so does a tick while
// anything is watched (a dead holder never releases); nothing watched, no
// signal. Real time, with margins that hold on a loaded machine; labelled
// concurrency so that ThreadSanitizer checks the watcher's thread.
#include "src/client/release_watcher.h"

#include <poll.h>

#include <thread>

#include "gtest/gtest.h"
#include "sluice/store.h"

namespace sluice {
namespace {

bool Readable(int fd, absl::Duration within) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(within))) == 1;
}

StoredLeases Cap(Store& store) {
  absl::StatusOr<StoredLeases> cap = store.Leases("cap", 1);
  EXPECT_TRUE(cap.ok()) << cap.status();
  return *cap;
}

TEST(ReleaseWatcherTest, AReleaseOnAWatchedCapWakesTheLoop) {
  auto store = NewLocalStore();
  const StoredLeases cap = Cap(*store);
  absl::StatusOr<int32_t> held = cap.TryAcquire();
  ASSERT_TRUE(held.ok() && *held == 0);
  // A tick of an hour: only the release can make the fd readable in time.
  auto watcher = ReleaseWatcher::Create(absl::Hours(1));
  ASSERT_TRUE(watcher.ok()) << watcher.status();
  (*watcher)->Watch({cap});
  EXPECT_FALSE(Readable((*watcher)->fd(), absl::Milliseconds(100)));
  std::thread releaser([&] { cap.Release(0); });
  EXPECT_TRUE(Readable((*watcher)->fd(), absl::Seconds(20)));
  releaser.join();
  (*watcher)->Drain();
  EXPECT_FALSE(Readable((*watcher)->fd(), absl::Milliseconds(50)));
}

TEST(ReleaseWatcherTest, TicksWhileWatchingAndIsQuietOtherwise) {
  auto store = NewLocalStore();
  const StoredLeases cap = Cap(*store);
  auto watcher = ReleaseWatcher::Create(absl::Milliseconds(30));
  ASSERT_TRUE(watcher.ok()) << watcher.status();
  EXPECT_FALSE(Readable((*watcher)->fd(), absl::Milliseconds(200)));  // nothing watched
  (*watcher)->Watch({cap});
  for (int tick = 0; tick < 3; ++tick) {
    EXPECT_TRUE(Readable((*watcher)->fd(), absl::Seconds(20))) << "tick " << tick;
    (*watcher)->Drain();
  }
  (*watcher)->Watch({});
  absl::SleepFor(absl::Milliseconds(100));  // a tick in progress may still land
  (*watcher)->Drain();
  EXPECT_FALSE(Readable((*watcher)->fd(), absl::Milliseconds(200)));
}

TEST(ReleaseWatcherTest, StopsPromptlyWhileWatching) {
  auto store = NewLocalStore();
  const StoredLeases cap = Cap(*store);
  for (int i = 0; i < 20; ++i) {
    auto watcher = ReleaseWatcher::Create(absl::Hours(1));
    ASSERT_TRUE(watcher.ok());
    (*watcher)->Watch({cap});
  }  // each destructor joins its thread within a slice, not an hour
}

}  // namespace
}  // namespace sluice
