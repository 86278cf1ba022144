// Per-thread permit caches: the registry of threads' caches, refills, sweeps
// and returns. The fast path is inline in sluice/permit_cache.h.
#include "sluice/permit_cache.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"

namespace sluice {
namespace internal_permit_cache {

// The caches of one PermitCache, shared with the threads that use it so that
// a thread exiting after the PermitCache is gone finds it closed rather than
// freed.
struct Registry {
  explicit Registry(const BucketRef& b) : bucket(b) {}

  const BucketRef bucket;
  std::mutex mu;
  // Set (under mu) when the PermitCache is destroyed: its caches are already
  // returned and its bucket may be gone.
  std::atomic<bool> closed{false};
  std::vector<std::unique_ptr<Slot>> slots;  // guarded by mu
  // Set in a child process: this copy of the PermitCache was its parent's.
  std::atomic<bool> inherited{false};
};

namespace {

std::atomic<uint64_t> next_cache_id{1};

bool SameTerms(const Terms& a, const Terms& b) { return a.capacity == b.capacity; }

// Returns `permits` held by `slot` to `bucket` at the terms they were taken
// at and empties the slot. REQUIRES: the caller locked the slot (kLocked).
uint64_t ReturnAndUnlock(Slot& slot, const BucketRef& bucket, uint64_t permits, int64_t now_ns) {
  if (permits > 0) bucket.Refund(permits, slot.terms, now_ns);
  slot.last_batch = 0;  // an empty cache starts over at the smallest batch
  slot.word.store(0, std::memory_order_release);
  return permits;
}

// Locks `slot` and returns all its permits; 0 when the owner holds the lock
// (it is refilling: in use). REQUIRES: the registry's mutex is held, so no
// other sweep or return runs.
uint64_t Drain(Slot& slot, const BucketRef& bucket, int64_t now_ns) {
  uint64_t w = slot.word.load(std::memory_order_relaxed);
  do {
    if (w & kLocked) return 0;
  } while (!slot.word.compare_exchange_weak(w, kLocked, std::memory_order_acquire,
                                            std::memory_order_relaxed));
  return ReturnAndUnlock(slot, bucket, w >> kCountShift, now_ns);
}

// One slot's part of a sweep (see PermitCache::Sweep). REQUIRES: the
// registry's mutex is held.
uint64_t SweepSlot(Slot& slot, const BucketRef& bucket, int64_t idle_ns, int64_t now_ns) {
  uint64_t w = slot.word.load(std::memory_order_relaxed);
  for (;;) {
    if (w & kLocked) return 0;  // the owner is refilling: in use
    if (w & kTouched) {
      if (slot.word.compare_exchange_weak(w, w & ~kTouched, std::memory_order_relaxed)) {
        slot.clean_since_ns = now_ns;
        return 0;
      }
      continue;
    }
    if ((w >> kCountShift) == 0 || now_ns - slot.clean_since_ns < idle_ns) return 0;
    // Untouched since a sweep at least `idle` ago: take the permits back,
    // unless the owner takes one first (the CAS fails and we look again).
    if (slot.word.compare_exchange_weak(w, kLocked, std::memory_order_acquire,
                                        std::memory_order_relaxed)) {
      return ReturnAndUnlock(slot, bucket, w >> kCountShift, now_ns);
    }
  }
}

// This thread's caches, one per PermitCache it used; returned at thread
// exit. Entries of destroyed PermitCaches are dropped when the thread next
// registers a cache.
class ThreadCaches {
 public:
  struct Entry {
    uint64_t cache_id;
    std::shared_ptr<Registry> registry;
    Slot* slot;  // owned by the registry
  };

  ~ThreadCaches() {
    for (const Entry& e : entries_) Retire(e);
    memo = {};
  }

  Slot* Find(uint64_t cache_id) const {
    for (const Entry& e : entries_) {
      if (e.cache_id == cache_id) return e.slot;
    }
    return nullptr;
  }

  Slot* Register(uint64_t cache_id, const std::shared_ptr<Registry>& registry) {
    std::erase_if(entries_, [](const Entry& e) { return e.registry->closed.load(); });
    auto owned = std::make_unique<Slot>();
    Slot* slot = owned.get();
    {
      std::lock_guard<std::mutex> lock(registry->mu);
      registry->slots.push_back(std::move(owned));
    }
    entries_.push_back({cache_id, registry, slot});
    return slot;
  }

 private:
  // Returns a slot's permits and removes it from its registry.
  static void Retire(const Entry& e) {
    Registry& r = *e.registry;
    std::lock_guard<std::mutex> lock(r.mu);
    if (r.closed.load()) return;
    Drain(*e.slot, r.bucket, r.bucket.clock().Now());
    std::erase_if(r.slots, [&](const std::unique_ptr<Slot>& s) { return s.get() == e.slot; });
  }

  std::vector<Entry> entries_;
};

thread_local ThreadCaches thread_caches;

// A forked child gets a copy of every cache, permits included, while the
// parent keeps admitting from the originals: the child must start with its
// caches empty (the permits stay taken: they are the parent's). The fork
// handlers hold every registry's mutex across fork() so that no sweep or
// registration is halfway in the copy.
struct LiveRegistries {
  std::mutex mu;                      // taken before any registry's
  std::vector<Registry*> registries;  // guarded by mu
};

LiveRegistries& Live() {
  static auto* live = new LiveRegistries;  // never destroyed: fork may come at exit
  return *live;
}

void BeforeFork() {
  Live().mu.lock();
  for (Registry* r : Live().registries) r->mu.lock();
}

void AfterForkInParent() {
  for (Registry* r : Live().registries) r->mu.unlock();
  Live().mu.unlock();
}

void AfterForkInChild() {
  for (Registry* r : Live().registries) {
    for (const auto& slot : r->slots) {
      slot->word.store(0, std::memory_order_relaxed);
      slot->last_batch = 0;
    }
    r->inherited.store(true);
    r->mu.unlock();
  }
  Live().mu.unlock();
}

void AddLive(Registry* r) {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(BeforeFork, AfterForkInParent, AfterForkInChild); });
  std::lock_guard<std::mutex> lock(Live().mu);
  Live().registries.push_back(r);
}

void RemoveLive(Registry* r) {
  std::lock_guard<std::mutex> lock(Live().mu);
  std::erase(Live().registries, r);
}

}  // namespace
}  // namespace internal_permit_cache

using internal_permit_cache::kCountShift;
using internal_permit_cache::kLocked;
using internal_permit_cache::kTouched;
using internal_permit_cache::Slot;

absl::StatusOr<std::unique_ptr<PermitCache>> PermitCache::Create(
    const BucketRef& bucket, const PermitCacheOptions& options) {
  const int64_t capacity = bucket.Capacity();
  if (options.batch == 0 || options.batch > static_cast<uint64_t>(std::max<int64_t>(capacity, 0))) {
    return absl::InvalidArgumentError(
        absl::StrFormat("permit cache batch %d must be from 1 to the bucket's capacity (%d)",
                        options.batch, capacity));
  }
  if (options.max_batch != 0 &&
      (options.max_batch < options.batch || options.max_batch > static_cast<uint64_t>(capacity))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "permit cache max_batch %d must be 0 or from the batch (%d) to the bucket's capacity (%d)",
        options.max_batch, options.batch, capacity));
  }
  if (options.max_batch > options.batch && options.idle <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "permit cache batches grow (max_batch > batch) only with a positive idle time");
  }
  if (options.idle < absl::ZeroDuration() || options.sweep_period < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("permit cache idle time and sweep period must be >= 0");
  }
  if (options.sweep_thread && options.sweep_period <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("a permit cache sweep thread needs a positive sweep period");
  }
  return std::unique_ptr<PermitCache>(new PermitCache(bucket, options));
}

PermitCache::PermitCache(const BucketRef& bucket, const PermitCacheOptions& options)
    : id_(internal_permit_cache::next_cache_id.fetch_add(1)),
      bucket_(bucket),
      options_(options),
      max_batch_(std::max(options.batch, options.max_batch)),
      registry_(std::make_shared<internal_permit_cache::Registry>(bucket)),
      last_sweep_ns_(bucket.clock().Now()) {
  internal_permit_cache::AddLive(registry_.get());
  if (options_.sweep_thread) sweeper_ = std::thread([this] { SweepLoop(); });
}

PermitCache::~PermitCache() {
  internal_permit_cache::RemoveLive(registry_.get());
  if (sweeper_.joinable() && registry_->inherited.load()) {
    // The sweep thread is the parent's; this process has none to join.
    new std::thread(std::move(sweeper_));  // never destroyed: it would terminate
  } else if (sweeper_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(stop_mu_);
      stop_ = true;
    }
    stop_cv_.notify_all();
    sweeper_.join();
  }
  std::lock_guard<std::mutex> lock(registry_->mu);
  const int64_t now_ns = bucket_.clock().Now();
  for (const auto& slot : registry_->slots) internal_permit_cache::Drain(*slot, bucket_, now_ns);
  registry_->closed.store(true);
}

Slot* PermitCache::ThisThreadSlot() {
  internal_permit_cache::Memo& memo = internal_permit_cache::memo;
  if (memo.cache_id == id_) return memo.slot;
  auto& caches = internal_permit_cache::thread_caches;
  Slot* slot = caches.Find(id_);
  if (slot == nullptr) slot = caches.Register(id_, registry_);
  memo = {id_, slot};
  return slot;
}

Decision PermitCache::SlowAcquire(uint64_t n, int64_t now_ns) {
  Slot* slot = ThisThreadSlot();
  // The memo may have named another PermitCache's slot.
  if (slot->TryTake(n)) return {Outcome::kGranted, 0, slot->terms};
  if (now_ns == kReadClock) now_ns = bucket_.clock().Now();
  MaybeSweep(now_ns);
  // No batch would hold more than the request itself.
  if (n >= max_batch_) return bucket_.TryAcquire(n, now_ns);
  uint64_t w = slot->word.load(std::memory_order_relaxed);
  do {
    // A sweep is returning this cache: go to the word this once.
    if (w & kLocked) return bucket_.TryAcquire(n, now_ns);
  } while (!slot->word.compare_exchange_weak(w, w | kLocked, std::memory_order_acquire,
                                             std::memory_order_relaxed));
  const uint64_t size = NextBatch(*slot, now_ns);
  if (n >= size) {
    // This batch would hold no more than the request itself.
    slot->word.store(w, std::memory_order_release);
    return bucket_.TryAcquire(n, now_ns);
  }
  const Decision batch = bucket_.TryAcquire(size, now_ns);
  if (!batch.granted()) {
    // Not a whole batch to spare: this request alone, as without a cache,
    // and the next batch is the smallest.
    slot->last_batch = 0;
    slot->word.store(w, std::memory_order_release);
    return bucket_.TryAcquire(n, now_ns);
  }
  slot->last_batch = size;
  slot->last_batch_ns = now_ns;
  uint64_t held = w >> kCountShift;
  if (held > 0 && !internal_permit_cache::SameTerms(slot->terms, batch.terms)) {
    // Reconfigured since: what was held goes back at the terms it was taken at.
    bucket_.Refund(held, slot->terms, now_ns);
    held = 0;
  }
  slot->terms = batch.terms;
  slot->word.store(((held + size - n) << kCountShift) | kTouched, std::memory_order_release);
  return {Outcome::kGranted, 0, batch.terms};
}

uint64_t PermitCache::NextBatch(const Slot& slot, int64_t now_ns) const {
  if (slot.last_batch == 0 || max_batch_ == options_.batch) return options_.batch;
  // A batch used up within `idle` doubles the next; one that lasted longer
  // halves it. (Times are the callers', so the difference is taken wide.)
  const __int128 lasted = __int128{now_ns} - slot.last_batch_ns;
  if (lasted < absl::ToInt64Nanoseconds(options_.idle)) {
    return slot.last_batch <= max_batch_ / 2 ? slot.last_batch * 2 : max_batch_;
  }
  return std::max(slot.last_batch / 2, options_.batch);
}

void PermitCache::MaybeSweep(int64_t now_ns) {
  const int64_t period_ns = absl::ToInt64Nanoseconds(options_.sweep_period);
  if (period_ns <= 0 || now_ns - last_sweep_ns_.load(std::memory_order_relaxed) < period_ns) {
    return;
  }
  // Never wait on the admit path: whoever holds the mutex is sweeping (or
  // registering a thread) already.
  std::unique_lock<std::mutex> lock(registry_->mu, std::try_to_lock);
  if (lock.owns_lock()) SweepLocked(now_ns);
}

uint64_t PermitCache::Sweep(int64_t now_ns) {
  std::lock_guard<std::mutex> lock(registry_->mu);
  return SweepLocked(now_ns);
}

uint64_t PermitCache::SweepLocked(int64_t now_ns) {
  if (registry_->closed.load()) return 0;
  const int64_t idle_ns = absl::ToInt64Nanoseconds(options_.idle);
  uint64_t returned = 0;
  for (const auto& slot : registry_->slots) {
    returned += internal_permit_cache::SweepSlot(*slot, bucket_, idle_ns, now_ns);
  }
  last_sweep_ns_.store(now_ns, std::memory_order_relaxed);
  return returned;
}

uint64_t PermitCache::Cached() const {
  std::lock_guard<std::mutex> lock(registry_->mu);
  uint64_t cached = 0;
  for (const auto& slot : registry_->slots) {
    cached += slot->word.load(std::memory_order_relaxed) >> kCountShift;
  }
  return cached;
}

void PermitCache::ReleaseThisThread() {
  Slot* slot = internal_permit_cache::thread_caches.Find(id_);
  if (slot == nullptr) return;
  std::lock_guard<std::mutex> lock(registry_->mu);
  internal_permit_cache::Drain(*slot, bucket_, bucket_.clock().Now());
}

void PermitCache::SweepLoop() {
  const auto period = absl::ToChronoNanoseconds(options_.sweep_period);
  std::unique_lock<std::mutex> lock(stop_mu_);
  while (!stop_cv_.wait_for(lock, period, [this] { return stop_; })) {
    lock.unlock();
    Sweep();
    lock.lock();
  }
}

}  // namespace sluice
