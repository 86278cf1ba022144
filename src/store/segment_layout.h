// The bytes of a shared-memory segment. Internal: tools and tests that need
// to forge or corrupt a segment include it; users go through segment.h.
//
//   [0, 4096)            Header (state word published last; from layout 4
//                        the host's TSC calibration at offset 128)
//   [4096, +384*slots)   Slot table: the cell on its own two cache lines
//                        (a bucket's word, then its parameters), its
//                        configuration on the next, then the slot's name
//   [..., +64*procs)     Process registry: pid, start time, attach time
//   [..., +8*words*procs) One bitmap per process entry: slots it opened
//   [..., +8*leases)     Lease words of the concurrency caps (lease_set.h)
//   rounded up to 4096
//
// Only the bucket cells are touched without the segment lock; everything
// else is read and written under it.

#ifndef SLUICE_SRC_STORE_SEGMENT_LAYOUT_H_
#define SLUICE_SRC_STORE_SEGMENT_LAYOUT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "sluice/segment.h"
#include "sluice/token_bucket.h"
#include "sluice/tsc.h"
#include "sluice/window_counter.h"

namespace sluice {
namespace segment_layout {

// "SLUICESG" read as a little-endian word.
inline constexpr uint64_t kMagic = 0x4753454349554C53ull;

// State words use unlikely values so that corruption is detected.
inline constexpr uint32_t kHeaderInitializing = 0x1A17C0DEu;
inline constexpr uint32_t kHeaderReady = 0x5EA1AB1Eu;
inline constexpr uint32_t kSlotFree = 0;  // zero: a fresh file is all free
inline constexpr uint32_t kSlotClaiming = 0xC1A1BEEFu;
inline constexpr uint32_t kSlotReady = 0x51075EADu;
inline constexpr uint32_t kSlotTombstone = 0xDEADB0CBu;  // reclaimed: reusable

// What a ready slot holds.
inline constexpr uint32_t kKindBucket = 1;   // a BucketCell
inline constexpr uint32_t kKindCounter = 2;  // a WindowCounterCell
inline constexpr uint32_t kKindLeases = 3;   // a LeaseHead; leases in the lease region

inline constexpr uint32_t kMaxSlots = 65536;
inline constexpr uint32_t kMaxProcesses = 4096;
inline constexpr uint32_t kMaxLeases = 1 << 20;
inline constexpr size_t kHeaderBytes = 4096;
inline constexpr size_t kBootIdBytes = 40;

struct Header {
  uint64_t magic;
  uint32_t abi_major;
  uint32_t abi_minor;
  uint64_t fingerprint;
  uint64_t total_size;
  uint32_t slot_count;
  uint32_t process_count;
  int64_t created_unix_ns;
  char boot_id[kBootIdBytes];  // the boot whose CLOCK_MONOTONIC the cells use
  uint32_t lease_count;        // words in the lease region
  uint32_t lease_next;         // first unallocated lease word (under the lock)
  std::atomic<uint32_t> state;
  uint32_t reserved;
  // The PID namespace of the creator (inode of /proc/self/ns/pid; 0 when it
  // could not be read): pids in the registry and in lease tags mean something
  // only there.
  uint64_t pid_namespace;
  // Layout 4: the host's TSC calibration, set up by the creator (ready, or
  // unusable where its TSC was not safe to use) and recalibrated lock-free by
  // whichever process reads past its check point, so every process on the
  // host converts ticks to nanoseconds in the same way (Segment::TscClock).
  TscCalibration tsc;
};

// The cell of a kKindLeases slot: bumped on every release, slept on by waiters.
struct LeaseHead {
  std::atomic<uint32_t> generation;
};

// A bucket's rate and burst as a slot records them.
struct StoredConfig {
  uint64_t permits;
  int64_t period_ns;
  uint64_t capacity;
};

struct alignas(128) Slot {
  // The hot lines: a BucketCell, WindowCounterCell or LeaseHead, by kind.
  alignas(64) unsigned char cell[128];
  // Buckets, written only under the segment lock, read when opening:
  //   params[i]  the configuration cell parameter slot i holds, so that the
  //              one in use always matches the cell (it is written before the
  //              cell is reconfigured to it: a kill at any moment leaves
  //              them equal);
  //   learned_*  a limit the provider's headers taught (0 permits: none).
  StoredConfig params[2];
  uint64_t learned_permits;
  int64_t learned_period_ns;
  // Cold: state, name and what the slot is.
  std::atomic<uint32_t> state;
  uint32_t name_length;
  uint32_t kind;
  // Buckets (layout 3.1; a 3.0 reader ignores it): the burst the provider's
  // headers showed its own bucket holds, in permits (0: none), so the
  // capacity never exceeds it. Written under the segment lock.
  uint32_t learned_burst;
  std::atomic<uint64_t> bottlenecks;  // refusals and waits this slot decided
  // Buckets: the configuration last given by a limits file or a command (the
  // bucket runs at it, or at the learned limit when that is lower).
  // Leases: permits is the first lease word, capacity the number of words.
  StoredConfig configured;
  char name[kMaxBucketNameLength + 1];
};

inline BucketCell* BucketCellOf(Slot& slot) { return reinterpret_cast<BucketCell*>(slot.cell); }
inline const BucketCell& BucketCellOf(const Slot& slot) {
  return *reinterpret_cast<const BucketCell*>(slot.cell);
}
inline WindowCounterCell* CounterCellOf(Slot& slot) {
  return reinterpret_cast<WindowCounterCell*>(slot.cell);
}
inline LeaseHead* LeaseHeadOf(Slot& slot) { return reinterpret_cast<LeaseHead*>(slot.cell); }

struct alignas(64) ProcessEntry {
  int32_t pid;  // 0: free
  uint32_t reserved;
  uint64_t start_time;  // /proc/PID/stat field 22: tells a reused pid apart
  int64_t attached_unix_ns;
};

static_assert(sizeof(Header) <= kHeaderBytes);
static_assert(sizeof(BucketCell) <= sizeof(Slot::cell));
static_assert(sizeof(WindowCounterCell) <= sizeof(Slot::cell));
static_assert(sizeof(Slot) == 384);
static_assert(sizeof(ProcessEntry) == 64);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

// A hash of every size and offset a reader depends on: two builds that lay
// the segment out differently never trust each other's segments.
constexpr uint64_t Fingerprint() {
  const uint64_t facts[] = {
      sizeof(Header),
      alignof(Header),
      offsetof(Header, state),
      offsetof(Header, boot_id),
      offsetof(Header, lease_count),
      offsetof(Header, pid_namespace),
      offsetof(Header, tsc),
      sizeof(TscCalibration),
      alignof(TscCalibration),
      sizeof(Slot),
      alignof(Slot),
      offsetof(Slot, params),
      offsetof(Slot, learned_permits),
      offsetof(Slot, state),
      offsetof(Slot, kind),
      offsetof(Slot, bottlenecks),
      offsetof(Slot, configured),
      offsetof(Slot, name),
      sizeof(BucketCell),
      alignof(BucketCell),
      sizeof(ProcessEntry),
      kMaxBucketNameLength,
      kHeaderBytes,
  };
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (uint64_t f : facts) {
    for (int i = 0; i < 8; ++i) {
      h ^= (f >> (8 * i)) & 0xff;
      h *= 0x100000001b3ull;
    }
  }
  return h;
}

inline constexpr size_t BitmapWords(uint32_t slots) { return (slots + 63) / 64; }

struct Offsets {
  size_t slots;
  size_t processes;
  size_t bitmaps;
  size_t leases;
  size_t total;
};

inline constexpr Offsets ComputeOffsets(uint32_t slots, uint32_t processes, uint32_t leases) {
  Offsets o{};
  o.slots = kHeaderBytes;
  o.processes = o.slots + size_t{slots} * sizeof(Slot);
  o.bitmaps = o.processes + size_t{processes} * sizeof(ProcessEntry);
  o.leases = o.bitmaps + size_t{processes} * BitmapWords(slots) * sizeof(uint64_t);
  const size_t end = o.leases + size_t{leases} * sizeof(uint64_t);
  o.total = (end + 4095) / 4096 * 4096;
  return o;
}

}  // namespace segment_layout
}  // namespace sluice

#endif  // SLUICE_SRC_STORE_SEGMENT_LAYOUT_H_
