// What the two halves of the segment's implementation share: segment.cc
// (opening, initializing, validating, registering processes) and
// segment_slots.cc (the slot table: buckets, counters, caps, reclaiming,
// inspecting). Internal.
#ifndef SLUICE_SRC_STORE_SEGMENT_INTERNAL_H_
#define SLUICE_SRC_STORE_SEGMENT_INTERNAL_H_

#include <fcntl.h>
#include <sys/file.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/rate.h"
#include "sluice/segment.h"
#include "sluice/token_bucket.h"
#include "src/store/segment_layout.h"

namespace sluice {
namespace segment_internal {

inline std::string ErrnoText(int err) { return absl::StrCat(strerror(err), " (errno ", err, ")"); }

// The typed views of a mapped segment, computed from validated counts.
struct View {
  segment_layout::Header* header;
  segment_layout::Slot* slots;
  segment_layout::ProcessEntry* processes;
  uint64_t* bitmaps;
  std::atomic<uint64_t>* leases;
  uint32_t slot_count;
  uint32_t process_count;

  static View Of(void* base) {
    auto* header = static_cast<segment_layout::Header*>(base);
    const segment_layout::Offsets o = segment_layout::ComputeOffsets(
        header->slot_count, header->process_count, header->lease_count);
    char* bytes = static_cast<char*>(base);
    return {header,
            reinterpret_cast<segment_layout::Slot*>(bytes + o.slots),
            reinterpret_cast<segment_layout::ProcessEntry*>(bytes + o.processes),
            reinterpret_cast<uint64_t*>(bytes + o.bitmaps),
            reinterpret_cast<std::atomic<uint64_t>*>(bytes + o.leases),
            header->slot_count,
            header->process_count};
  }
  uint64_t* Bitmap(int32_t entry) const {
    return bitmaps + size_t(entry) * segment_layout::BitmapWords(slot_count);
  }
};

inline BucketConfig ConfigOf(const segment_layout::StoredConfig& c) {
  return {Rate(c.permits, absl::Nanoseconds(c.period_ns)), c.capacity};
}

inline void Store(segment_layout::StoredConfig& to, const BucketConfig& config) {
  to.permits = config.rate.permits();
  to.period_ns = absl::ToInt64Nanoseconds(config.rate.period());
  to.capacity = config.capacity;
}

inline bool SameConfig(const BucketConfig& a, const BucketConfig& b) {
  return a.rate == b.rate && a.capacity == b.capacity;
}

inline std::optional<Rate> LearnedOf(const segment_layout::Slot& slot) {
  if (slot.learned_permits == 0) return std::nullopt;
  return Rate(slot.learned_permits, absl::Nanoseconds(slot.learned_period_ns));
}

// What a bucket slot's cell should run at: its configuration, or the lower
// limit learned from the provider, with no more burst than the provider's
// bucket was seen to hold.
inline BucketConfig EffectiveConfig(const segment_layout::Slot& slot) {
  const BucketConfig configured = ConfigOf(slot.configured);
  const std::optional<Rate> learned = LearnedOf(slot);
  return CapBurst(learned ? LowerTo(configured, *learned) : configured, slot.learned_burst);
}

inline absl::string_view SlotName(const segment_layout::Slot& slot) {
  return absl::string_view(slot.name, slot.name_length);
}

inline const char* KindName(uint32_t kind) {
  switch (kind) {
    case segment_layout::kKindBucket:
      return "bucket";
    case segment_layout::kKindCounter:
      return "counter";
    case segment_layout::kKindLeases:
      return "concurrency cap";
  }
  return "slot of unknown kind";
}

inline std::string Describe(const BucketConfig& c) {
  return absl::StrCat("rate ", c.rate.ToString(), " burst ", c.capacity);
}

// Every registered process holds an exclusive open-file-description lock
// (fcntl F_OFD_SETLK) on its registry entry's byte, far past the end of the
// file, through the file its mapping came from. The lock lasts as long as
// that open file does, and a mapping keeps its file open: a forked child,
// which shares the parent's mapping, keeps the parent's lock after the
// parent dies, until it registers (and maps through a file of its own) or
// exits. So an entry whose process is dead but whose byte is still locked
// has an heir that is not registered.
inline constexpr off_t kEntryLockBase = off_t{1} << 40;

inline struct flock EntryLockRange(int32_t entry, short type) {
  struct flock range {};
  range.l_type = type;
  range.l_whence = SEEK_SET;
  range.l_start = kEntryLockBase + entry;
  range.l_len = 1;
  return range;
}

// Takes entry `entry`'s lock through `fd`; false when another descriptor holds it.
inline bool LockEntry(int fd, int32_t entry) {
  struct flock range = EntryLockRange(entry, F_WRLCK);
  return fcntl(fd, F_OFD_SETLK, &range) == 0;
}

// Whether a descriptor other than `fd`'s holds entry `entry`'s lock.
inline bool EntryLockHeldElsewhere(int fd, int32_t entry) {
  struct flock range = EntryLockRange(entry, F_WRLCK);
  if (fcntl(fd, F_OFD_GETLK, &range) != 0) return true;  // cannot tell: assume held
  return range.l_type != F_UNLCK;
}

}  // namespace segment_internal

// Holds the segment's flock for a scope; released by the kernel if the
// process dies, so a crashed holder never wedges the others.
class Segment::Lock {
 public:
  Lock() = default;
  ~Lock() {
    if (fd_ >= 0) flock(fd_, LOCK_UN);
  }
  void Held(int fd) { fd_ = fd; }

 private:
  int fd_ = -1;
};

}  // namespace sluice

#endif  // SLUICE_SRC_STORE_SEGMENT_INTERNAL_H_
