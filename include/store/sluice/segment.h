// File: segment.h
// -----------------------------------------------------------------------------
// A Segment is a named shared-memory file that every process on the host maps,
// holding a table of named token buckets. A bucket opened through a Segment is
// the same BucketCell code as an in-process TokenBucket, acting on memory that
// all processes share: a cross-process acquire costs what an in-process one
// costs, with no syscall, no lock and no allocation.
//
// A segment name without a '/' lives in /dev/shm (so "sluice" is
// /dev/shm/sluice); a name with a '/' is a path. Segments are created with mode
// 0600 (0660 with SegmentOptions::group_access) and refused when they are a
// symlink, not a regular file, owned by another user, or open to others.
//
// Everything read from the segment is treated as untrusted: a wrong, truncated
// or corrupted segment is reported as an error naming the path (and, for a
// layout mismatch, both versions), never a crash.
//
// Thread safety: a Segment may be used from any number of threads; its slow
// operations (opening buckets, reclaiming, inspecting) serialize on a lock
// that also excludes other processes (flock, released by the kernel if the
// holder dies). SharedBucket operations are lock-free and safe from any
// number of threads and processes.
//
// Example:
//   auto segment = sluice::Segment::Open("sluice");
//   if (!segment.ok()) return segment.status();
//   auto rpm = (*segment)->OpenBucket("anthropic:rpm", {sluice::Rate::PerMinute(800), 20});
//   if (!rpm.ok()) return rpm.status();
//   if (rpm->TryAcquire(1).granted()) CallTheModel();

#ifndef SLUICE_SEGMENT_H_
#define SLUICE_SEGMENT_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/clock.h"
#include "sluice/lease_set.h"
#include "sluice/token_bucket.h"
#include "sluice/window_counter.h"

namespace sluice {

// The segment layout's version. A segment of another major version is refused;
// minor versions only add fields that older readers may ignore. Version 2:
// a lease set's generation word flags sleepers in its low bit (lease_set.h).
// Version 3: a bucket's cell records its provider hold, and its slot the
// configuration of both cell parameter slots, the configured limit apart
// from the learned one, and the header the creator's PID namespace. A
// segment of an older version is refused with both versions named: remove it
// with `sluice rm --force` (its buckets start full again). Version 3.1: a
// bucket's slot records the burst learned from the provider (LearnBucketBurst)
// in a word 3.0 left unused, which a 3.0 reader ignores. Version 4: a
// bucket's cell is two cache lines, an exact 128-bit word and its parameters
// (token_bucket.h), so a slot is 384 bytes; the header holds the host's TSC
// calibration (sluice/tsc.h, Segment::TscClock).
inline constexpr uint32_t kSegmentAbiMajor = 4;
inline constexpr uint32_t kSegmentAbiMinor = 0;

// The segment used when a tool is given no --segment.
inline constexpr absl::string_view kDefaultSegmentName = "sluice";

// Longest bucket name, in bytes.
inline constexpr size_t kMaxBucketNameLength = 79;

struct SegmentOptions {
  // Create the segment if it does not exist. When false, a missing segment is
  // NotFound.
  bool create = true;
  // Used only when this call creates the segment; an existing segment keeps
  // the sizes it was created with.
  uint32_t slots = 1024;         // bucket slots (1 to 65536)
  uint32_t max_processes = 256;  // attached-process registry entries (1 to 4096)
  uint32_t max_leases = 4096;    // concurrency lease words, shared by all caps (0 to 2^20)
  bool group_access = false;     // mode 0660 instead of 0600
  // Record this process in the segment's registry (tools that only look, like
  // `sluice inspect`, pass false).
  bool register_process = true;
  // How long to wait for the segment lock held by another process (for
  // example one initializing the segment) before failing. The lock is never
  // broken: a holder that dies releases it through the kernel.
  absl::Duration lock_timeout = absl::Seconds(10);
  // The clock handles read. The real clocks are host-wide, so processes agree.
  Clock clock = Clock::Monotonic();
  // Read the segment's TSC clock (Segment::TscClock) instead of `clock`: the
  // cheapest precise clock where the host's TSC is safe, CLOCK_MONOTONIC
  // where it is not.
  bool prefer_tsc = false;
};

// SharedBucket
//
// A handle to one bucket in a segment: a BucketRef over the slot's cell. Valid
// while the Segment that opened it is alive. Cheap to copy.
class SharedBucket : private BucketRef {
 public:
  using BucketRef::Acquire;
  using BucketRef::Available;
  using BucketRef::Capacity;
  using BucketRef::Debit;
  using BucketRef::GetPressure;
  using BucketRef::Refund;
  using BucketRef::Reserve;
  using BucketRef::TryAcquire;

  const std::string& name() const { return name_; }
  uint32_t slot() const { return slot_; }
  // How many times this bucket was the one a request waited on or was
  // refused by: shared by every process, counted off the admit path.
  std::atomic<uint64_t>* bottlenecks() const { return bottlenecks_; }
  // The limit learned from the provider (LearnBucket) when it was opened.
  const std::optional<Rate>& learned() const { return learned_; }
  // The burst learned from the provider (LearnBucketBurst) when it was
  // opened, in permits; 0: none.
  uint64_t learned_burst() const { return learned_burst_; }
  // The bucket as a BucketRef, for code written against the cell API.
  // Reconfigure through Segment::OpenBucket, which serializes across processes.
  const BucketRef& ref() const { return *this; }

 private:
  friend class Segment;
  SharedBucket(BucketCell* cell, Clock clock, std::string name, uint32_t slot,
               std::atomic<uint64_t>* bottlenecks, std::optional<Rate> learned,
               uint64_t learned_burst)
      : BucketRef(cell, clock),
        name_(std::move(name)),
        slot_(slot),
        bottlenecks_(bottlenecks),
        learned_(learned),
        learned_burst_(learned_burst) {}

  std::string name_;
  uint32_t slot_;
  std::atomic<uint64_t>* bottlenecks_;
  std::optional<Rate> learned_;
  uint64_t learned_burst_;
};

// SharedCounter
//
// A window counter (window_counter.h) in a segment slot, for calendar budgets.
class SharedCounter : public WindowCounterRef {
 public:
  const std::string& name() const { return name_; }
  // Counts the times this counter refused a request (see SharedBucket).
  std::atomic<uint64_t>* bottlenecks() const { return bottlenecks_; }

 private:
  friend class Segment;
  SharedCounter(WindowCounterCell* cell, std::atomic<uint64_t>* bottlenecks, std::string name)
      : WindowCounterRef(cell), name_(std::move(name)), bottlenecks_(bottlenecks) {}

  std::string name_;
  std::atomic<uint64_t>* bottlenecks_;
};

// SharedLeases
//
// A concurrency cap (lease_set.h) in a segment: its lease words live in the
// segment's lease region, tagged with each holder's pid and start time, so the
// leases of a process that died are taken back by the next one to need them.
class SharedLeases : public LeaseSetRef {
 public:
  const std::string& name() const { return name_; }
  std::atomic<uint64_t>* bottlenecks() const { return bottlenecks_; }

 private:
  friend class Segment;
  SharedLeases(std::atomic<uint64_t>* leases, uint32_t count, std::atomic<uint32_t>* generation,
               std::atomic<uint64_t>* bottlenecks, std::string name)
      : LeaseSetRef(leases, count, generation), name_(std::move(name)), bottlenecks_(bottlenecks) {}

  std::string name_;
  std::atomic<uint64_t>* bottlenecks_;
};

// What Inspect reports (segment_info.h).
struct SegmentInfo;

class Segment {
 public:
  // Opens (and, if options.create, creates and initializes) the segment
  // `name_or_path`. Exactly one process initializes a new segment; the others
  // wait for the lock. A creator that died halfway is recovered from: the next
  // process to get the lock initializes again. A segment left by an earlier
  // boot (its clock readings are meaningless now) is reinitialized.
  // Errors: NotFound (missing and !create), PermissionDenied (symlink, not a
  // regular file, another owner, open to others), FailedPrecondition (not a
  // sluice segment, other major version, corrupt header or slot),
  // ResourceExhausted (no space in /dev/shm, registry full), DeadlineExceeded
  // (lock held past lock_timeout). Every message names the path.
  static absl::StatusOr<std::unique_ptr<Segment>> Open(absl::string_view name_or_path,
                                                       SegmentOptions options = {});

  // Unregisters this process and unmaps the segment.
  ~Segment();
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  // The bucket `name`, created with `config` if missing. An existing bucket
  // configured otherwise is FailedPrecondition naming both, unless
  // `reconfigure` is set: then `config` becomes its configuration and it is
  // reconfigured live, keeping its fill ratio. A bucket runs at its
  // configuration, or at the lower limit learned from the provider
  // (LearnBucket): opening never raises a learned limit.
  // ResourceExhausted when the table is full; InvalidArgument for a bad name
  // or config.
  absl::StatusOr<SharedBucket> OpenBucket(absl::string_view name, const BucketConfig& config,
                                          bool reconfigure = false);

  // The pool `name` (sluice/pool.h: a host's permits leased from a fleet's
  // bucket of `config`), created empty if missing, and reconfigured live to
  // `config` otherwise (keeping its permits as a count). FailedPrecondition
  // when `name` is an ordinary bucket: a bucket that refills by itself can
  // never become a fleet's pool in place (remove it first); other errors as
  // OpenBucket's. Opening `name` with OpenBucket later gets the pool, which
  // stays a pool.
  absl::StatusOr<SharedBucket> OpenPool(absl::string_view name, const BucketConfig& config);

  // Records the limit the provider's headers state for bucket `name`
  // (nullopt: none, run at the configuration), for every process on the
  // host, and reconfigures the bucket live to the lower of it and its
  // configuration. NotFound when there is no such bucket.
  absl::Status LearnBucket(absl::string_view name, std::optional<Rate> learned);

  // Records that the provider's bucket behind bucket `name` holds at least
  // `burst` permits, for every process on the host: the largest such
  // evidence is kept (each is a lower bound of the same bucket; values above
  // 2^32 - 1 are kept as that), and the bucket runs with its capacity no
  // larger than it (at least 1). Opening never changes it. NotFound when
  // there is no such bucket; InvalidArgument for a zero burst.
  absl::Status LearnBucketBurst(absl::string_view name, uint64_t burst);

  // The existing bucket `name`, or NotFound.
  absl::StatusOr<SharedBucket> FindBucket(absl::string_view name);

  // The window counter `name`, created (at zero) if missing.
  absl::StatusOr<SharedCounter> OpenCounter(absl::string_view name);

  // The concurrency cap `name` with `count` leases, created if missing (its
  // words taken from the segment's lease region). An existing cap of another
  // size is FailedPrecondition; ResourceExhausted when the region is spent.
  absl::StatusOr<SharedLeases> OpenLeases(absl::string_view name, uint32_t count);

  // A name already used by another kind of object (a bucket opened as a
  // counter, say) is FailedPrecondition in all of the above.

  // Frees the slots of buckets that have been full (untouched) for at least
  // `idle` and that no live process has opened, like a Redis key expiring.
  // A full bucket is indistinguishable from a new one, so nothing is lost.
  // Returns how many slots were freed. No live handle can point at a freed
  // slot: every process that opens a handle is registered with the slot
  // marked (a forked child that registers marks its parent's handles too),
  // and while any process maps the segment without being registered (a
  // forked child using its parent's handles after the parent died), nothing
  // is freed: FailedPrecondition naming it.
  absl::StatusOr<int> ReclaimIdle(absl::Duration idle);

  // Header, buckets, budgets (counters), concurrency caps and attached
  // processes, read under the segment lock; changes nothing.
  absl::StatusOr<SegmentInfo> Inspect();

  // Removes the segment's name, but only if the name still refers to the file
  // this Segment opened (same device and inode); FailedPrecondition otherwise.
  // Processes that have it mapped keep using it until they close it.
  absl::Status Unlink();

  // Removes the segment `name_or_path` without opening it as a segment: for
  // one that Open refuses (corrupt, half-written, another layout version).
  // Applies Open's file checks (no symlink, a regular file of this user) and
  // unlinks the file those checks were made on (same device and inode).
  static absl::Status Remove(absl::string_view name_or_path);

  const std::string& path() const { return path_; }
  // The clock its buckets' handles read (SegmentOptions::clock, or TscClock()
  // with SegmentOptions::prefer_tsc).
  const Clock& clock() const { return options_.clock; }

  // The host's best precise clock: the TSC clock converting with the
  // calibration in the segment's header, which every process on the host
  // shares and any of them recalibrates, so their readings agree to the
  // nanosecond and never go backwards across them. CLOCK_MONOTONIC where this
  // process may not use the TSC (TscUsable() says why) or the segment's
  // creator could not (TscStatus()). Either way within 1 ms of
  // CLOCK_MONOTONIC, so buckets read with it and with Clock::Monotonic() agree
  // to that precision.
  Clock TscClock() const;
  // Why TscClock() is CLOCK_MONOTONIC: OK when it is the TSC clock.
  absl::Status TscStatus() const;
  // True when this Open initialized the segment.
  bool initialized_by_this_open() const { return initialized_; }

 private:
  Segment(std::string path, SegmentOptions options);

  class Lock;
  struct Layout;
  absl::Status Attach();
  absl::Status LockFile(Lock* lock);
  absl::Status InitializeLocked(uint64_t file_size, const std::string& boot_id,
                                uint64_t pid_namespace);
  absl::Status MapAndValidateLocked();
  absl::Status RegisterLocked();
  struct Claim;
  absl::StatusOr<Claim> FindOrClaimLocked(absl::string_view name, uint32_t kind, bool create);
  void MarkOpenedLocked(uint32_t index);
  absl::StatusOr<SharedBucket> OpenBucketLocked(absl::string_view name, const BucketConfig* config,
                                                bool reconfigure, bool pool = false);
  // Finds bucket `name` under the segment lock, lets `record` write what was
  // learned into its slot (false: nothing changed), and converges its cell.
  absl::Status LearnLocked(absl::string_view name, const std::function<bool(const Claim&)>& record);
  void Unmap();

  const std::string path_;
  SegmentOptions options_;
  int fd_ = -1;
  pid_t lock_pid_ = 0;  // the process fd_ was opened by: flock is per open file
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  void* base_ = nullptr;
  size_t mapped_size_ = 0;
  bool initialized_ = false;
  int32_t process_entry_ = -1;
  // After a fork, the parent's descriptor (and with it the parent's entry
  // lock), closed once this child has registered.
  int inherited_fd_ = -1;
  // The slots this Segment has handed out handles to, kept in process memory:
  // a forked child has copies of them, and marks them all when it registers.
  std::vector<uint64_t> opened_;
  // Excludes this process's threads; flock excludes processes. A standard
  // mutex rather than absl's: ThreadSanitizer sees through the pthread calls
  // under it, and the packaged Abseil is not instrumented.
  std::mutex mu_;
};

// Validates a segment image (the bytes of a segment file) without mapping or
// changing it: what Open checks before trusting a segment. `path` is used in
// messages only. OK, or FailedPrecondition naming what is wrong and where.
// Exposed for the fuzz target and tools. REQUIRES: `data` is aligned to 128
// bytes, as a mapping is (InvalidArgument otherwise).
absl::Status ValidateSegmentImage(const void* data, size_t size, absl::string_view path);

}  // namespace sluice

#endif  // SLUICE_SEGMENT_H_
