// File: store.h
// -----------------------------------------------------------------------------
// Where the policy's cells live: process memory (NewLocalStore) for one
// process, or a shared-memory segment (NewSegmentStore) for every process on
// the host. Both hand out the same cell handles, so the policy's code is the
// same over either. Looking a key up happens once (off the hot path); the
// handles then act on the cells directly.
//
// Thread safety: a Store is safe for concurrent use; the handles it returns
// are as safe as their cells (lock-free, any number of threads and processes).

#ifndef SLUICE_STORE_H_
#define SLUICE_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "sluice/clock.h"
#include "sluice/lease_set.h"
#include "sluice/segment.h"
#include "sluice/token_bucket.h"
#include "sluice/window_counter.h"

namespace sluice {

// Each handle carries a counter of the times its cell was a request's
// bottleneck (refused it, or set its wait), kept beside the cell (shared in a
// segment) and incremented only off the admit path.
struct StoredBucket {
  BucketRef bucket;
  std::atomic<uint64_t>* bottlenecks;
  // The limit learned from the provider (Store::Learn) when it was opened.
  std::optional<Rate> learned;
  // The burst learned from the provider (Store::LearnBurst) when it was
  // opened, in permits; 0: none yet.
  uint64_t learned_burst = 0;
  // A pool (Store::Pool, sluice/pool.h): it holds only what was leased into
  // it and never refills by itself, so waiting on it brings nothing:
  // reserve from it with no wait (max_wait 0).
  bool pool = false;
};

// A window counter kept outside this host's cells: a fleet's, in Redis
// (sluice/fleet_store.h). The operations and semantics of WindowCounterRef
// (window_counter.h), but each may wait on the network (at most the store's
// timeout), so nothing on an admit path calls them. What happens when the
// counter's home cannot be reached is the store's to say.
//
// Thread safety: implementations are safe for concurrent use.
class CounterBackend {
 public:
  virtual ~CounterBackend() = default;
  virtual bool TryAdd(int64_t window, int64_t amount, int64_t limit) = 0;
  virtual void Refund(int64_t window, int64_t amount) = 0;
  virtual void Debit(int64_t window, int64_t amount) = 0;
  virtual int64_t Used(int64_t window) = 0;
  virtual WindowCounterRef::Reading Load() = 0;
};

// A window counter: this host's cell, or, when `backend` is set, the
// counter it keeps (the cell is then the backend's to use, e.g. for what this
// host spends while the backend's home is away). Use the methods, which go
// where the counter lives; they mean what WindowCounterRef's do.
struct StoredCounter {
  WindowCounterRef counter;
  std::atomic<uint64_t>* bottlenecks;
  CounterBackend* backend = nullptr;  // lives as long as the store

  bool TryAdd(int64_t window, int64_t amount, int64_t limit) const {
    return backend != nullptr ? backend->TryAdd(window, amount, limit)
                              : counter.TryAdd(window, amount, limit);
  }
  void Refund(int64_t window, int64_t amount) const {
    backend != nullptr ? backend->Refund(window, amount) : counter.Refund(window, amount);
  }
  void Debit(int64_t window, int64_t amount) const {
    backend != nullptr ? backend->Debit(window, amount) : counter.Debit(window, amount);
  }
  int64_t Used(int64_t window) const {
    return backend != nullptr ? backend->Used(window) : counter.Used(window);
  }
  WindowCounterRef::Reading Load() const {
    return backend != nullptr ? backend->Load() : counter.Load();
  }
};

// A concurrency cap kept somewhere other than this host's store: a fleet's,
// in Redis (sluice/fleet_store.h). StoredLeases forwards every call to it;
// the contracts are StoredLeases' below. Indexes are the backend's own (any
// value in [0, 2^31)), handed back to the same backend's Release.
//
// Thread safety: implementations are safe for concurrent use.
class LeaseBackend {
 public:
  virtual ~LeaseBackend() = default;
  virtual absl::StatusOr<uint32_t> Acquire(absl::Duration timeout) = 0;
  virtual absl::StatusOr<int32_t> TryAcquire() = 0;
  virtual void Release(uint32_t index) = 0;
  virtual uint32_t Reclaim() = 0;
  virtual uint32_t Generation() const = 0;
  virtual void WaitForRelease(uint32_t seen, absl::Duration timeout) = 0;
  virtual uint32_t InFlight() const = 0;
  virtual uint32_t capacity() const = 0;
};

// A concurrency cap whose leases carry this process's tag (pid and start
// time), so that a process that dies holding leases loses them to the next
// process that needs one. Or, built over a LeaseBackend, a cap kept
// elsewhere (a fleet's), with the same contracts.
class StoredLeases {
 public:
  StoredLeases(LeaseSetRef leases, std::atomic<uint64_t>* bottlenecks)
      : leases_(leases), bottlenecks_(bottlenecks) {}
  // REQUIRES: `remote` is not null; `bottlenecks` lives as long as it.
  StoredLeases(std::shared_ptr<LeaseBackend> remote, std::atomic<uint64_t>* bottlenecks)
      : leases_(nullptr, 0, nullptr), remote_(std::move(remote)), bottlenecks_(bottlenecks) {}

  // A lease, waiting at most `timeout` (sleeping until one is returned,
  // taking back dead holders' leases while it waits); DeadlineExceeded if
  // none is. Unavailable when this process cannot be identified (its start
  // time in /proc cannot be read), since a lease must name its holder.
  absl::StatusOr<uint32_t> Acquire(absl::Duration timeout) const;
  // A lease now, or -1 when every lease is held by a process that is alive
  // (or cannot be checked): when all are held, the leases of dead holders
  // are taken back first. Unavailable as for Acquire.
  absl::StatusOr<int32_t> TryAcquire() const;
  void Release(uint32_t index) const;
  // Takes back every lease whose holder is known to be dead; how many.
  uint32_t Reclaim() const;
  // For event loops that wait for a lease without blocking in Acquire: the
  // generation every release changes, and a wait until it differs from
  // `seen` (at most `timeout`; spurious returns are possible).
  uint32_t Generation() const {
    return remote_ == nullptr ? leases_.Generation() : remote_->Generation();
  }
  void WaitForRelease(uint32_t seen, absl::Duration timeout) const {
    if (remote_ != nullptr) return remote_->WaitForRelease(seen, timeout);
    leases_.WaitForRelease(seen, absl::ToInt64Nanoseconds(timeout));
  }
  uint32_t InFlight() const {
    return remote_ == nullptr ? leases_.InFlight() : remote_->InFlight();
  }
  uint32_t capacity() const {
    return remote_ == nullptr ? leases_.capacity() : remote_->capacity();
  }
  std::atomic<uint64_t>* bottlenecks() const { return bottlenecks_; }

 private:
  LeaseSetRef leases_;
  std::shared_ptr<LeaseBackend> remote_;  // null: the cap is leases_
  std::atomic<uint64_t>* bottlenecks_;
};

// Buckets decided elsewhere, one round trip per call: a fleet's buckets in
// Redis (sluice/fleet_store.h, exact mode). A store that has them decides
// its token buckets there, all of a request's at once; its StoredBuckets are
// then only what a host may admit on its own while the remote is away (its
// share of each bucket, see RemoteDown).
//
// Thread safety: implementations are safe for concurrent use.
struct RemoteCharge {
  absl::string_view key;
  BucketConfig config;
  // Permits: what Reserve takes; for Adjust, taken (> 0) or given back (< 0);
  // for Clamp, what may be left at most.
  int64_t permits = 0;
};

struct RemoteDecision {
  Outcome outcome = Outcome::kRefused;
  int64_t wait_ns = 0;  // as Decision::wait_ns
  int bottleneck = -1;  // the charge that set the wait or refused, or -1

  bool granted() const { return outcome == Outcome::kGranted; }
};

// What a caller does while the remote cannot be reached (Unavailable):
// decide on the StoredBuckets (the host's share) and Owe what it admitted;
// refuse; or admit without charging any remote bucket.
enum class RemoteDown : uint8_t { kDecideLocally, kRefuse, kAdmit };

class RemoteBuckets {
 public:
  virtual ~RemoteBuckets() = default;
  // Takes every charge from its bucket if each can grant within `max_wait`,
  // else nothing (kNeverFits: a charge exceeds its bucket's capacity).
  // Unavailable when the remote is; InvalidArgument for a bad config.
  virtual absl::StatusOr<RemoteDecision> Reserve(absl::Span<const RemoteCharge> charges,
                                                 absl::Duration max_wait) = 0;
  // Takes (permits > 0, into debt) or gives back (< 0, never above capacity
  // nor ending a hold early) each charge's permits. While the remote is
  // away, what it should have taken is owed (Owe) and nothing is given back.
  virtual void Adjust(absl::Span<const RemoteCharge> charges) = 0;
  // Lowers each bucket to at most `permits` available.
  virtual void Clamp(absl::Span<const RemoteCharge> charges) = 0;
  // Holds each bucket empty for `hold` from now (BucketRef::HoldUntil).
  virtual void Hold(absl::Span<const RemoteCharge> buckets, absl::Duration hold) = 0;
  // What each bucket holds now.
  virtual absl::StatusOr<std::vector<int64_t>> Available(
      absl::Span<const RemoteCharge> buckets) = 0;
  // Permits admitted (> 0) or given back (< 0) on the host's share while
  // the remote was away: the remote buckets are debited the sum once it
  // answers again.
  virtual void Owe(const RemoteCharge& charge) = 0;
  virtual RemoteDown on_down() const = 0;
  // Names the remote for errors ("Redis at 10.0.0.7:6379/0"), never with
  // credentials.
  virtual std::string Describe() const = 0;
};

class Store {
 public:
  virtual ~Store() = default;

  // The bucket `key` configured as `config`, created full if missing and
  // reconfigured live (keeping its fill ratio) if it was configured
  // otherwise: the configuration is the source of truth, except that a lower
  // limit learned from the provider (Learn) stays in force, so a process
  // starting later never raises it. InvalidArgument for a bad key or config;
  // the segment's errors otherwise.
  virtual absl::StatusOr<StoredBucket> Bucket(absl::string_view key,
                                              const BucketConfig& config) = 0;
  // The pool `key` (sluice/pool.h): a host's permits leased from a fleet's
  // bucket of `config`, created empty if missing, reconfigured live
  // otherwise (keeping its permits as a count), under the same learned-limit
  // rules as Bucket. FailedPrecondition when `key` is an ordinary bucket.
  virtual absl::StatusOr<StoredBucket> Pool(absl::string_view key, const BucketConfig& config) = 0;
  // Records the limit the provider's headers state for bucket `key` (nullopt:
  // none), for every user of the store, and reconfigures the bucket live to
  // the lower of it and its configuration. NotFound for a bucket never opened.
  virtual absl::Status Learn(absl::string_view key, std::optional<Rate> learned) = 0;
  // Records that the provider's bucket behind bucket `key` holds at least
  // `burst` permits, for every user of the store: the largest evidence is
  // kept (the segment keeps at most 2^32 - 1), and the bucket runs with no
  // more capacity than it, whatever its configuration (at least 1 permit).
  // Opening the bucket again never changes it. NotFound for a bucket never
  // opened; InvalidArgument for a zero burst.
  virtual absl::Status LearnBurst(absl::string_view key, uint64_t burst) = 0;
  // The window counter `key`, created at zero if missing.
  virtual absl::StatusOr<StoredCounter> Counter(absl::string_view key) = 0;
  // The concurrency cap `key` of `count` leases, created if missing.
  virtual absl::StatusOr<StoredLeases> Leases(absl::string_view key, uint32_t count) = 0;

  // The clock the store's buckets run on.
  virtual Clock clock() const = 0;

  // UTC wall time as the store's counters count it (the window a budget is
  // in): this host's clock, or for a fleet's store Redis's (sluice/
  // fleet_store.h), so that every host is in the same window whatever its
  // own clock says. May wait on the network (at most the store's timeout).
  virtual absl::Time WallTime() const { return absl::Now(); }

  // A caller waits for `permits` of pool `key`: a store that fills pools
  // (a fleet's, sluice/fleet_store.h) leases at least that many next. The
  // other stores have no pools to fill and ignore it.
  virtual void Want(absl::string_view key, uint64_t permits) {
    (void)key;
    (void)permits;
  }

  // The buckets this store decides remotely (above), or nullptr: its
  // buckets are its cells.
  virtual RemoteBuckets* remote_buckets() { return nullptr; }
};

// Cells in this process's memory.
std::unique_ptr<Store> NewLocalStore(Clock clock = Clock::Monotonic());

// Cells in `segment`, shared with every process that maps it, on the
// segment's clock. REQUIRES: `segment` outlives the store and its handles.
std::unique_ptr<Store> NewSegmentStore(Segment* segment);

}  // namespace sluice

#endif  // SLUICE_STORE_H_
