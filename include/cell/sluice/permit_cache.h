// File: permit_cache.h
// -----------------------------------------------------------------------------
// Per-thread permit caches over one bucket: an opt-in way for a hot bucket to
// scale with threads.
//
// Every admit on a bucket writes its one shared word, so however many threads
// admit, the bucket tops out at one cache line's transfer rate between cores.
// A PermitCache lets each thread take a batch of permits (64 by default) from
// the word with one TryAcquire and then admit from its own cache: one load and
// one compare-and-swap on a cache line only that thread writes, with no shared
// write and no clock read. Only when its cache is short does a thread go to the
// word (and read the clock).
//
// Cached permits are real debits: the bucket already counts them as taken, so
// the bucket never over-admits, however many threads cache. What caching costs:
//
//   * Order. Reservations on the bucket are FIFO (token_bucket.h); a thread
//     admitting from its cache jumps that queue, and a thread whose cache is
//     empty may be refused while another thread's cache holds permits. Use a
//     cache only where strict arrival order does not matter.
//   * Idle permits. A thread's cache holds at most batch - 1 permits once it
//     has admitted (a batch is taken to admit at least one request), so at
//     most (batch - 1) x threads permits are taken but unused at any time
//     (max_batch - 1 where batches grow, below).
//     They go back to the bucket (BucketRef::Refund, at the terms the batch was
//     taken at) when their thread exits, when the PermitCache is destroyed,
//     and when a sweep finds the cache idle: untouched since a sweep at least
//     `idle` ago. With sweeps every `sweep_period`, a cache last used at T is
//     back in the bucket by T + idle + 2 x sweep_period.
//   * Thin buckets. A thread caches only when the bucket has a whole batch to
//     spare: when TryAcquire(batch) is refused, the request goes to the word on
//     its own (TryAcquire(n)), so a nearly empty bucket is shared exactly as it
//     would be without caches rather than hoarded by whichever thread asked
//     first.
//
// Growing batches (opt-in, `max_batch`): one admit in `batch` goes to the
// word, and that one is slower, so a fixed batch of 64 puts 1.6% of admits in
// the tail. Where max_batch > batch, a thread that uses up its batch within
// `idle` of taking it takes twice as many next time, up to max_batch; a batch
// that lasts `idle` or longer halves the next one (never below `batch`), and a
// refused batch or a swept cache starts over at `batch`. A hot thread's
// batches settle near what it admits in `idle` (or max_batch), so only one
// admit in that many reads the clock or writes the word; a slow thread keeps
// small batches and holds few permits.
//
// Requests of the thread's current batch or more always go to the word. A request of n > 1 is
// served from the cache when it holds n; otherwise the thread takes a batch
// and admits from it together with what it held.
//
// Sweeps: the slow path of any thread sweeps at most once per
// `sweep_period`; Sweep(now) can be called from a thread the caller runs; and
// with `sweep_thread` the PermitCache runs one small thread of its own that
// sweeps every `sweep_period`. Without a sweep thread, caches of threads that
// stopped admitting altogether stay cached (still within the bound above)
// until someone sweeps or the threads exit.
//
// Across processes: a PermitCache works over any BucketRef, including a
// bucket in a shared segment (SharedBucket::ref()); each process has its own
// caches over the shared word. A process killed with permits cached loses
// them until the bucket refills: never more than (largest batch - 1) x its
// threads. A forked child starts with every inherited cache empty (the permits stay
// with the parent, which keeps admitting from them), so no permit is admitted
// twice; a sweep thread is not inherited, and a child's copy of a PermitCache
// with one sweeps only from its slow paths and Sweep().
//
// Thread safety: TryAcquire, Sweep and Cached are safe to call concurrently
// from any number of threads. Destroying the PermitCache REQUIRES that no
// other call on it is in flight; threads that used it may outlive it.
//
// Example:
//   auto bucket = sluice::TokenBucket::Create(
//       {.rate = sluice::Rate::PerSecond(1'000'000), .capacity = 10'000});
//   auto cache = sluice::PermitCache::Create((*bucket)->ref(), {.batch = 64});
//   if (!cache.ok()) return cache.status();
//   if ((*cache)->TryAcquire(1).granted()) Serve();

#ifndef SLUICE_PERMIT_CACHE_H_
#define SLUICE_PERMIT_CACHE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sluice/token_bucket.h"

namespace sluice {

// PermitCacheOptions
struct PermitCacheOptions {
  // Permits a thread takes from the bucket at a time (its first batch, and
  // the smallest where batches grow). REQUIRES: 1 to the bucket's capacity.
  uint64_t batch = 64;
  // The largest batch a thread's batches grow to while it uses each up
  // within `idle` (see the file comment); 0: batches stay `batch`.
  // REQUIRES: 0, or `batch` to the bucket's capacity; a positive `idle`
  // where it exceeds `batch`.
  uint64_t max_batch = 0;
  // A cache untouched for this long is returned to the bucket by a sweep.
  absl::Duration idle = absl::Milliseconds(10);
  // How often the slow path (and the sweep thread) sweeps; zero: the slow
  // path never sweeps and only Sweep() does.
  absl::Duration sweep_period = absl::Milliseconds(10);
  // Run one thread of the PermitCache's own that sweeps every sweep_period
  // (which must then be positive).
  bool sweep_thread = false;
};

namespace internal_permit_cache {
struct Slot;
struct Registry;
// The slot this thread last used and the id of the PermitCache it belongs
// to: trivially constructed, so reading it is a plain thread-local load.
struct Memo {
  uint64_t cache_id = 0;
  Slot* slot = nullptr;
};
inline thread_local Memo memo;
}  // namespace internal_permit_cache

// PermitCache
//
// Per-thread caches of permits over one bucket (see the file comment).
class PermitCache {
 public:
  // Returns InvalidArgument on a batch of 0 or above the bucket's capacity, a
  // max_batch other than 0 outside batch to the capacity (or above batch
  // with no idle time), a negative idle time or sweep period, or a sweep
  // thread without a period.
  // REQUIRES: the bucket outlives the PermitCache.
  static absl::StatusOr<std::unique_ptr<PermitCache>> Create(const BucketRef& bucket,
                                                             const PermitCacheOptions& options);
  // Returns every cached permit to the bucket.
  ~PermitCache();
  PermitCache(const PermitCache&) = delete;
  PermitCache& operator=(const PermitCache&) = delete;

  // Takes n permits, from this thread's cache when it holds n (no clock read,
  // no shared write), else from the bucket at its clock's now (or `now_ns`).
  // kGranted (wait 0, with the terms the permits were taken at), kRefused
  // with the bucket's wait for n permits, or kNeverFits when n exceeds the
  // capacity. A refusal may come while other threads' caches hold permits.
  Decision TryAcquire(uint64_t n);
  Decision TryAcquire(uint64_t n, int64_t now_ns);

  // Returns to the bucket every cache untouched since a sweep at least
  // `idle` before `now_ns` (ns on the bucket's clock), and marks the others
  // so that the next sweep can tell whether they were used since. Returns the
  // permits given back. Blocks while another sweep runs.
  uint64_t Sweep(int64_t now_ns);
  uint64_t Sweep() { return Sweep(bucket_.clock().Now()); }

  // Permits taken from the bucket and not yet admitted, over all threads'
  // caches: at most (max(batch, max_batch) - 1) x the threads that used this
  // PermitCache.
  uint64_t Cached() const;

  // This thread's cache back to the bucket now (as at thread exit).
  void ReleaseThisThread();

  const PermitCacheOptions& options() const { return options_; }

 private:
  PermitCache(const BucketRef& bucket, const PermitCacheOptions& options);
  Decision SlowAcquire(uint64_t n, int64_t now_ns);
  // The size of the batch `slot` takes next at `now_ns`. REQUIRES: the slot
  // is locked.
  uint64_t NextBatch(const internal_permit_cache::Slot& slot, int64_t now_ns) const;
  internal_permit_cache::Slot* ThisThreadSlot();
  void MaybeSweep(int64_t now_ns);
  // REQUIRES: the registry's mutex is held.
  uint64_t SweepLocked(int64_t now_ns);
  void SweepLoop();

  static constexpr int64_t kReadClock = std::numeric_limits<int64_t>::min();

  const uint64_t id_;  // never reused, so a stale Memo never matches
  const BucketRef bucket_;
  const PermitCacheOptions options_;
  const uint64_t max_batch_;  // the largest batch: max(batch, max_batch)
  const std::shared_ptr<internal_permit_cache::Registry> registry_;
  std::atomic<int64_t> last_sweep_ns_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;  // guarded by stop_mu_
  std::thread sweeper_;
};

// Implementation details follow.

namespace internal_permit_cache {

// One thread's cache, on a cache line only its thread writes (a sweep writes
// it once per sweep period at most). The word is
//   permits << 2 | kLocked | kTouched
// kTouched: admitted from since the last sweep cleared it. kLocked: the
// owner (refilling) or a sweeper (returning the permits) is changing the
// terms; the other party backs off rather than waiting.
inline constexpr uint64_t kTouched = 1;
inline constexpr uint64_t kLocked = 2;
inline constexpr int kCountShift = 2;

struct alignas(64) Slot {
  std::atomic<uint64_t> word{0};
  // The terms the cached permits were taken at. Written by the owner and read
  // by a sweeper only while holding kLocked.
  Terms terms;
  // The size of the last batch taken and when (0: none since the cache last
  // went back to the bucket or a batch was refused; the next is the options'
  // batch). Written by the owner while refilling and reset by whoever
  // returns the cache, both holding kLocked.
  uint64_t last_batch = 0;
  int64_t last_batch_ns = 0;
  // When a sweep last found the cache touched (and cleared kTouched); only
  // sweeps read or write it, under the registry's mutex.
  int64_t clean_since_ns = 0;

  // The owner's fast path: takes n cached permits if there are n.
  bool TryTake(uint64_t n) {
    uint64_t w = word.load(std::memory_order_relaxed);
    while ((w & kLocked) == 0 && (w >> kCountShift) >= n) {
      const uint64_t next = (((w >> kCountShift) - n) << kCountShift) | kTouched;
      if (word.compare_exchange_weak(w, next, std::memory_order_relaxed)) return true;
    }
    return false;
  }
};

}  // namespace internal_permit_cache

inline Decision PermitCache::TryAcquire(uint64_t n) {
  const internal_permit_cache::Memo& m = internal_permit_cache::memo;
  if (m.cache_id == id_ && m.slot->TryTake(n)) [[likely]] {
    return {Outcome::kGranted, 0, m.slot->terms};
  }
  return SlowAcquire(n, kReadClock);
}

inline Decision PermitCache::TryAcquire(uint64_t n, int64_t now_ns) {
  const internal_permit_cache::Memo& m = internal_permit_cache::memo;
  if (m.cache_id == id_ && m.slot->TryTake(n)) [[likely]] {
    return {Outcome::kGranted, 0, m.slot->terms};
  }
  return SlowAcquire(n, now_ns);
}

}  // namespace sluice

#endif  // SLUICE_PERMIT_CACHE_H_
