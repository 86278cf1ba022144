#include "sluice/segment.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <type_traits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "src/store/process.h"
#include "src/store/segment_layout.h"

namespace sluice {

using segment_layout::ComputeOffsets;
using segment_layout::Header;
using segment_layout::Offsets;
using segment_layout::ProcessEntry;
using segment_layout::Slot;

namespace {

std::string ErrnoText(int err) { return absl::StrCat(strerror(err), " (errno ", err, ")"); }

// The current boot's id: CLOCK_MONOTONIC readings only compare within a boot.
std::string BootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return std::string(absl::StripAsciiWhitespace(id)).substr(0, segment_layout::kBootIdBytes - 1);
}

int64_t UnixNanos() { return absl::ToUnixNanos(absl::Now()); }

absl::StatusOr<std::string> ResolvePath(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("segment name is empty");
  if (name.find('/') != absl::string_view::npos) return std::string(name);
  if (name == "." || name == ".." || name.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("segment name '", name, "' is not a file name"));
  }
  return absl::StrCat("/dev/shm/", name);
}

absl::Status CheckBucketName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxBucketNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("bucket name '", name, "' must be 1 to ", kMaxBucketNameLength, " bytes"));
  }
  for (char c : name) {
    if (absl::ascii_iscntrl(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(
          absl::StrCat("bucket name '", absl::CHexEscape(name), "' contains a control character"));
    }
  }
  return absl::OkStatus();
}

uint64_t HashName(absl::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

BucketConfig SlotConfig(const Slot& slot) {
  return {Rate(slot.permits, absl::Nanoseconds(slot.period_ns)), slot.capacity};
}

absl::string_view SlotName(const Slot& slot) {
  return absl::string_view(slot.name, slot.name_length);
}

void SetSlotConfig(Slot& slot, const BucketConfig& config) {
  slot.permits = config.rate.permits();
  slot.period_ns = absl::ToInt64Nanoseconds(config.rate.period());
  slot.capacity = config.capacity;
}

const char* KindName(uint32_t kind) {
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

std::string Describe(const BucketConfig& c) {
  return absl::StrCat("rate ", c.rate.ToString(), " burst ", c.capacity);
}

absl::Status OpenError(int err, const std::string& path, bool creating) {
  if (err == ENOENT && !creating) return absl::NotFoundError(absl::StrCat("no segment at ", path));
  if (err == ELOOP) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, " is a symbolic link; segments are never opened through one"));
  }
  if (err == EACCES || err == EPERM) {
    return absl::PermissionDeniedError(absl::StrCat("cannot open ", path, ": ", ErrnoText(err)));
  }
  return absl::FailedPreconditionError(absl::StrCat("cannot ", creating ? "create or open" : "open",
                                                    " segment ", path, ": ", ErrnoText(err)));
}

// What every segment file must be before anything in it is read: a regular
// file of this user that other users cannot touch.
absl::Status CheckFile(int fd, const std::string& path, struct stat* st) {
  if (fstat(fd, st) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot stat ", path, ": ", ErrnoText(errno)));
  }
  if (!S_ISREG(st->st_mode)) {
    return absl::PermissionDeniedError(absl::StrCat(path, " is not a regular file"));
  }
  if (st->st_uid != geteuid()) {
    return absl::PermissionDeniedError(absl::StrCat(path, " is owned by uid ", st->st_uid,
                                                    ", not by this user (uid ", geteuid(), ")"));
  }
  if ((st->st_mode & 0007) != 0) {
    return absl::PermissionDeniedError(
        absl::StrFormat("%s is open to other users (mode %04o); segments must be 0600 or 0660",
                        path, st->st_mode & 07777));
  }
  return absl::OkStatus();
}

// Unlinks `path` if it still names the file `st` describes.
absl::Status UnlinkIfSame(const std::string& path, const struct stat& st) {
  struct stat now;
  if (lstat(path.c_str(), &now) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot remove ", path, ": ", ErrnoText(errno)));
  }
  if (now.st_dev != st.st_dev || now.st_ino != st.st_ino) {
    return absl::FailedPreconditionError(
        absl::StrCat(path,
                     " now names another file (device/inode differ from the segment opened); "
                     "not removing it"));
  }
  if (unlink(path.c_str()) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot remove ", path, ": ", ErrnoText(errno)));
  }
  return absl::OkStatus();
}

// The typed views of a mapped segment, computed from validated counts.
struct View {
  Header* header;
  Slot* slots;
  ProcessEntry* processes;
  uint64_t* bitmaps;
  std::atomic<uint64_t>* leases;
  uint32_t slot_count;
  uint32_t process_count;

  static View Of(void* base) {
    auto* header = static_cast<Header*>(base);
    const Offsets o =
        ComputeOffsets(header->slot_count, header->process_count, header->lease_count);
    char* bytes = static_cast<char*>(base);
    return {header,
            reinterpret_cast<Slot*>(bytes + o.slots),
            reinterpret_cast<ProcessEntry*>(bytes + o.processes),
            reinterpret_cast<uint64_t*>(bytes + o.bitmaps),
            reinterpret_cast<std::atomic<uint64_t>*>(bytes + o.leases),
            header->slot_count,
            header->process_count};
  }
  uint64_t* Bitmap(int32_t entry) const {
    return bitmaps + size_t(entry) * segment_layout::BitmapWords(slot_count);
  }
};

}  // namespace

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

absl::Status ValidateSegmentImage(const void* data, size_t size, absl::string_view path) {
  using namespace segment_layout;
  auto fail = [&](auto&&... parts) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": ", parts...));
  };
  if (reinterpret_cast<uintptr_t>(data) % alignof(Slot) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": a segment image must be ", alignof(Slot), "-byte aligned"));
  }
  if (size < sizeof(Header)) {
    return fail("segment is ", size, " bytes, too short for its ", sizeof(Header), "-byte header");
  }
  const auto* header = static_cast<const Header*>(data);
  if (header->magic != kMagic) {
    return fail("not a sluice segment (magic 0x", absl::Hex(header->magic), ")");
  }
  if (header->abi_major != kSegmentAbiMajor) {
    return fail("segment layout version ", header->abi_major, ".", header->abi_minor,
                " cannot be read by this build, which reads version ", kSegmentAbiMajor, ".",
                kSegmentAbiMinor);
  }
  if (header->fingerprint != Fingerprint()) {
    return fail("segment layout fingerprint 0x", absl::Hex(header->fingerprint),
                " differs from this build's 0x", absl::Hex(Fingerprint()), " (both version ",
                header->abi_major, ".", header->abi_minor,
                "): it was written by a build with another struct layout");
  }
  const uint32_t state = header->state.load(std::memory_order_acquire);
  if (state != kHeaderReady) {
    return fail("header state 0x", absl::Hex(state), " is not ready: the segment is corrupt");
  }
  if (header->slot_count < 1 || header->slot_count > kMaxSlots) {
    return fail("slot count ", header->slot_count, " is outside 1..", kMaxSlots);
  }
  if (header->process_count < 1 || header->process_count > kMaxProcesses) {
    return fail("process registry size ", header->process_count, " is outside 1..", kMaxProcesses);
  }
  if (header->lease_count > kMaxLeases || header->lease_next > header->lease_count) {
    return fail("lease region of ", header->lease_count, " words (", header->lease_next,
                " allocated) is out of range");
  }
  const Offsets o = ComputeOffsets(header->slot_count, header->process_count, header->lease_count);
  if (header->total_size != o.total) {
    return fail("header says the segment is ", header->total_size, " bytes, but ",
                header->slot_count, " slots and ", header->process_count, " process entries take ",
                o.total);
  }
  if (size < o.total) return fail("segment is truncated: ", size, " bytes of ", o.total);
  if (memchr(header->boot_id, '\0', kBootIdBytes) == nullptr) {
    return fail("boot id is not terminated");
  }

  const View view = View::Of(const_cast<void*>(data));
  for (uint32_t i = 0; i < view.slot_count; ++i) {
    const Slot& slot = view.slots[i];
    const uint32_t slot_state = slot.state.load(std::memory_order_acquire);
    if (slot_state == kSlotFree || slot_state == kSlotTombstone || slot_state == kSlotClaiming) {
      continue;
    }
    if (slot_state != kSlotReady) {
      return fail("slot ", i, " has unknown state 0x", absl::Hex(slot_state));
    }
    if (slot.name_length < 1 || slot.name_length > kMaxBucketNameLength ||
        slot.name[slot.name_length] != '\0') {
      return fail("slot ", i, " has a bad name length ", slot.name_length);
    }
    const std::string where =
        absl::StrCat("slot ", i, " ('", absl::CHexEscape(SlotName(slot)), "'): ");
    switch (slot.kind) {
      case kKindBucket:
        if (slot.period_ns <= 0) {
          return fail(where, "period ", slot.period_ns, " ns is not positive");
        }
        if (absl::Status s = BucketRef::Validate(BucketCellOf(slot), SlotConfig(slot)); !s.ok()) {
          return fail(where, s.message());
        }
        break;
      case kKindCounter:
        break;  // every word is a window id and an amount
      case kKindLeases:
        if (slot.capacity < 1 || slot.permits > header->lease_next ||
            slot.capacity > header->lease_next - slot.permits) {
          return fail(where, "lease words [", slot.permits, ", +", slot.capacity,
                      ") are outside the allocated region of ", header->lease_next);
        }
        break;
      default:
        return fail(where, "unknown kind ", slot.kind);
    }
  }
  for (uint32_t i = 0; i < view.process_count; ++i) {
    if (view.processes[i].pid < 0) {
      return fail("process entry ", i, " has pid ", view.processes[i].pid);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Segment>> Segment::Open(absl::string_view name_or_path,
                                                       SegmentOptions options) {
  absl::StatusOr<std::string> path = ResolvePath(name_or_path);
  if (!path.ok()) return path.status();
  if (options.slots < 1 || options.slots > segment_layout::kMaxSlots) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment slots ", options.slots, " must be 1..", segment_layout::kMaxSlots));
  }
  if (options.max_leases > segment_layout::kMaxLeases) {
    return absl::InvalidArgumentError(absl::StrCat("segment max_leases ", options.max_leases,
                                                   " must be at most ",
                                                   segment_layout::kMaxLeases));
  }
  if (options.max_processes < 1 || options.max_processes > segment_layout::kMaxProcesses) {
    return absl::InvalidArgumentError(absl::StrCat("segment max_processes ", options.max_processes,
                                                   " must be 1..", segment_layout::kMaxProcesses));
  }
  std::unique_ptr<Segment> segment(new Segment(*std::move(path), std::move(options)));
  if (absl::Status s = segment->Attach(); !s.ok()) return s;
  return segment;
}

Segment::Segment(std::string path, SegmentOptions options)
    : path_(std::move(path)), options_(std::move(options)) {}

absl::Status Segment::Attach() {
  const mode_t mode = options_.group_access ? 0660 : 0600;
  const int flags = O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
  bool created = false;
  if (options_.create) {
    fd_ = open(path_.c_str(), flags | O_CREAT | O_EXCL, mode);
    created = fd_ >= 0;
  }
  if (fd_ < 0 && (!options_.create || errno == EEXIST)) fd_ = open(path_.c_str(), flags);
  if (fd_ < 0) return OpenError(errno, path_, options_.create);
  lock_pid_ = getpid();
  // The umask may have narrowed the mode; a group segment needs its group bits.
  if (created && fchmod(fd_, mode) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot set mode of ", path_, ": ", ErrnoText(errno)));
  }
  struct stat st;
  if (absl::Status s = CheckFile(fd_, path_, &st); !s.ok()) return s;
  dev_ = st.st_dev;
  ino_ = st.st_ino;

  absl::MutexLock guard(&mu_);
  Lock lock;
  if (absl::Status s = LockFile(&lock); !s.ok()) return s;
  if (fstat(fd_, &st) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot stat ", path_, ": ", ErrnoText(errno)));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);

  // Read what header there is without mapping: a short file must not be
  // mapped past its end (that would be SIGBUS, not an error).
  Header header;
  memset(static_cast<void*>(&header), 0, sizeof(header));
  const ssize_t got = pread(fd_, static_cast<void*>(&header), sizeof(header), 0);
  if (got < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read ", path_, ": ", ErrnoText(errno)));
  }
  // Everything this process may initialize: an empty file, a header of zeros
  // (a creator died before writing it), a creator that died mid-way, or a
  // segment from an earlier boot, whose clock readings mean nothing now.
  static const Header kZero{};
  const bool zeros = memcmp(static_cast<const void*>(&header), static_cast<const void*>(&kZero),
                            static_cast<size_t>(got)) == 0;
  const uint32_t state = header.state.load(std::memory_order_relaxed);
  const bool ours = got >= static_cast<ssize_t>(sizeof(Header)) &&
                    header.magic == segment_layout::kMagic && header.abi_major == kSegmentAbiMajor;
  // The state word is written last; a segment of ours that never got there
  // was abandoned by its creator.
  const bool abandoned = header.magic == segment_layout::kMagic &&
                         (state == 0 || state == segment_layout::kHeaderInitializing);
  const bool earlier_boot = ours && state == segment_layout::kHeaderReady &&
                            memchr(header.boot_id, '\0', sizeof(header.boot_id)) != nullptr &&
                            header.boot_id != BootId();
  if (size == 0 || zeros || abandoned || earlier_boot) {
    if (!options_.create) {
      return absl::NotFoundError(absl::StrCat(
          path_, earlier_boot ? " was created before the last reboot and holds no live state"
                              : " was never initialized"));
    }
    if (absl::Status s = InitializeLocked(size); !s.ok()) return s;
  } else if (absl::Status s = MapAndValidateLocked(); !s.ok()) {
    return s;
  }
  if (options_.register_process) return RegisterLocked();
  return absl::OkStatus();
}

absl::Status Segment::LockFile(Lock* lock) {
  if (lock_pid_ != getpid()) {
    // A forked child shares the parent's open file, and flock is per open
    // file: it must open its own to be excluded from (and exclude) the parent.
    const int fd = open(path_.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_dev != dev_ || st.st_ino != ino_) {
      if (fd >= 0) close(fd);
      return absl::FailedPreconditionError(
          absl::StrCat(path_, " was removed or replaced since this process opened it"));
    }
    close(fd_);
    fd_ = fd;
    lock_pid_ = getpid();
    process_entry_ = -1;  // the parent's registration is the parent's
  }
  const absl::Time deadline = absl::Now() + options_.lock_timeout;
  while (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot lock ", path_, ": ", ErrnoText(errno)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          path_, ": another live process has held the segment lock for over ",
          absl::FormatDuration(options_.lock_timeout), " (it is never broken while held)"));
    }
    // Only the slow path (opening buckets, admin) ever waits here.
    absl::SleepFor(absl::Milliseconds(1));
  }
  lock->Held(fd_);
  return absl::OkStatus();
}

absl::Status Segment::InitializeLocked(uint64_t file_size) {
  const Offsets o = ComputeOffsets(options_.slots, options_.max_processes, options_.max_leases);
  // Start from an empty file so every byte of the new segment is zero, then
  // reserve the space now: a full /dev/shm must fail here, not as SIGBUS later.
  if (file_size != 0 && ftruncate(fd_, 0) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot truncate ", path_, ": ", ErrnoText(errno)));
  }
  if (const int err = posix_fallocate(fd_, 0, static_cast<off_t>(o.total)); err != 0) {
    const std::string message = absl::StrCat("cannot reserve ", o.total, " bytes for segment ",
                                             path_, ": ", ErrnoText(err));
    // ENOSPC: the file system (/dev/shm) is full; EFBIG: a file size limit.
    if (err == ENOSPC || err == EFBIG) return absl::ResourceExhaustedError(message);
    return absl::FailedPreconditionError(message);
  }
  void* base = mmap(nullptr, o.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (base == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot map ", o.total, " bytes of ", path_, ": ", ErrnoText(errno)));
  }
  base_ = base;
  mapped_size_ = o.total;
  auto* header = static_cast<Header*>(base);
  header->magic = segment_layout::kMagic;
  header->abi_major = kSegmentAbiMajor;
  header->abi_minor = kSegmentAbiMinor;
  header->state.store(segment_layout::kHeaderInitializing, std::memory_order_relaxed);
  if (options_.init_fault_hook_for_testing) options_.init_fault_hook_for_testing();
  header->fingerprint = segment_layout::Fingerprint();
  header->total_size = o.total;
  header->slot_count = options_.slots;
  header->process_count = options_.max_processes;
  header->lease_count = options_.max_leases;
  header->lease_next = 0;
  header->created_unix_ns = UnixNanos();
  const std::string boot = BootId();
  memcpy(header->boot_id, boot.data(), boot.size());
  // Published last: a reader that sees "ready" sees everything above.
  header->state.store(segment_layout::kHeaderReady, std::memory_order_release);
  initialized_ = true;
  return absl::OkStatus();
}

absl::Status Segment::MapAndValidateLocked() {
  struct stat st;
  if (fstat(fd_, &st) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot stat ", path_, ": ", ErrnoText(errno)));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (base == MAP_FAILED) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot map ", size, " bytes of ", path_, ": ", ErrnoText(errno)));
  }
  base_ = base;
  mapped_size_ = size;
  if (absl::Status s = ValidateSegmentImage(base, size, path_); !s.ok()) {
    Unmap();
    return s;
  }
  return absl::OkStatus();
}

absl::Status Segment::RegisterLocked() {
  const View view = View::Of(base_);
  const pid_t pid = getpid();
  uint64_t start = 0;
  if (!ReadStartTime(pid, &start)) {
    return absl::FailedPreconditionError("cannot read this process's start time from /proc");
  }
  for (uint32_t i = 0; i < view.process_count; ++i) {
    ProcessEntry& e = view.processes[i];
    if (e.pid != 0 && ProcessAlive(e.pid, e.start_time)) continue;
    e.pid = pid;
    e.start_time = start;
    e.attached_unix_ns = UnixNanos();
    memset(view.Bitmap(static_cast<int32_t>(i)), 0,
           segment_layout::BitmapWords(view.slot_count) * sizeof(uint64_t));
    process_entry_ = static_cast<int32_t>(i);
    return absl::OkStatus();
  }
  return absl::ResourceExhaustedError(absl::StrCat(path_, ": all ", view.process_count,
                                                   " process entries belong to live processes"));
}

Segment::~Segment() {
  if (base_ != nullptr && process_entry_ >= 0 && lock_pid_ == getpid()) {
    absl::MutexLock guard(&mu_);
    Lock lock;
    if (LockFile(&lock).ok() && process_entry_ >= 0) {
      View::Of(base_).processes[process_entry_].pid = 0;
    }
  }
  Unmap();
  if (fd_ >= 0) close(fd_);
}

void Segment::Unmap() {
  if (base_ != nullptr) munmap(base_, mapped_size_);
  base_ = nullptr;
  mapped_size_ = 0;
}

absl::StatusOr<SharedBucket> Segment::OpenBucket(absl::string_view name, const BucketConfig& config,
                                                 bool reconfigure) {
  if (absl::Status s = ValidateBucketConfig(config); !s.ok()) return s;
  return OpenBucketLocked(name, &config, reconfigure);
}

absl::StatusOr<SharedBucket> Segment::FindBucket(absl::string_view name) {
  return OpenBucketLocked(name, nullptr, false);
}

// A slot found or claimed under the lock. A claimed slot is named and kinded
// but not yet ready: the caller sets up its cell, then publishes it.
struct Segment::Claim {
  Slot* slot;
  uint32_t index;
  bool created;
};

absl::StatusOr<Segment::Claim> Segment::FindOrClaimLocked(absl::string_view name, uint32_t kind,
                                                          bool create) {
  if (process_entry_ < 0 && options_.register_process) {
    if (absl::Status s = RegisterLocked(); !s.ok()) return s;
  }
  const View view = View::Of(base_);
  // Open addressing with linear probing. Free ends a probe; tombstones
  // (reclaimed slots) and claims left by a dead process are reusable but do
  // not end it. Claims only happen under the lock, so one found here is dead.
  int64_t found = -1, reusable = -1;
  const uint64_t start = HashName(name) % view.slot_count;
  for (uint32_t i = 0; i < view.slot_count; ++i) {
    const uint32_t index = static_cast<uint32_t>((start + i) % view.slot_count);
    const uint32_t state = view.slots[index].state.load(std::memory_order_acquire);
    if (state == segment_layout::kSlotReady) {
      if (SlotName(view.slots[index]) == name) {
        found = index;
        break;
      }
      continue;
    }
    if (reusable < 0) reusable = index;
    if (state == segment_layout::kSlotFree) break;
  }
  if (found >= 0) {
    Slot& slot = view.slots[found];
    if (slot.kind != kind) {
      return absl::FailedPreconditionError(absl::StrCat(
          path_, ": '", name, "' is a ", KindName(slot.kind), ", not a ", KindName(kind)));
    }
    MarkOpenedLocked(static_cast<uint32_t>(found));
    return Claim{&slot, static_cast<uint32_t>(found), false};
  }
  if (!create)
    return absl::NotFoundError(absl::StrCat(path_, ": no ", KindName(kind), " named '", name, "'"));
  if (reusable < 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        path_, ": all ", view.slot_count,
        " slots are in use; reclaim idle buckets or create the segment with more slots"));
  }
  Slot& slot = view.slots[reusable];
  slot.state.store(segment_layout::kSlotClaiming, std::memory_order_relaxed);
  memset(slot.cell, 0, sizeof(slot.cell));
  memset(slot.name, 0, sizeof(slot.name));
  memcpy(slot.name, name.data(), name.size());
  slot.name_length = static_cast<uint32_t>(name.size());
  slot.kind = kind;
  slot.permits = 0;
  slot.period_ns = 0;
  slot.capacity = 0;
  slot.bottlenecks.store(0, std::memory_order_relaxed);
  MarkOpenedLocked(static_cast<uint32_t>(reusable));
  return Claim{&slot, static_cast<uint32_t>(reusable), true};
}

void Segment::MarkOpenedLocked(uint32_t index) {
  if (process_entry_ < 0) return;
  View::Of(base_).Bitmap(process_entry_)[index / 64] |= uint64_t{1} << (index % 64);
}

absl::StatusOr<SharedBucket> Segment::OpenBucketLocked(absl::string_view name,
                                                       const BucketConfig* config,
                                                       bool reconfigure) {
  if (absl::Status s = CheckBucketName(name); !s.ok()) return s;
  absl::MutexLock guard(&mu_);
  Lock lock;
  if (absl::Status s = LockFile(&lock); !s.ok()) return s;
  absl::StatusOr<Claim> claim =
      FindOrClaimLocked(name, segment_layout::kKindBucket, config != nullptr);
  if (!claim.ok()) return claim.status();
  Slot& slot = *claim->slot;
  const int64_t now = options_.clock.Now();
  if (claim->created) {
    if (absl::Status s = BucketRef::Init(BucketCellOf(slot), *config, now); !s.ok()) return s;
    SetSlotConfig(slot, *config);
    slot.state.store(segment_layout::kSlotReady, std::memory_order_release);
  } else if (config != nullptr) {
    const BucketConfig current = SlotConfig(slot);
    const bool same = current.rate.permits() == config->rate.permits() &&
                      current.rate.period() == config->rate.period() &&
                      current.capacity == config->capacity;
    if (!same && !reconfigure) {
      return absl::FailedPreconditionError(
          absl::StrCat(path_, ": bucket '", name, "' exists with ", Describe(current),
                       "; asked for ", Describe(*config), " (reconfigure to change it)"));
    }
    if (!same) {
      // Under the segment lock, so reconfigurations are serialized host-wide.
      const BucketRef ref(BucketCellOf(slot), options_.clock);
      if (absl::Status s = ref.Reconfigure(*config, now); !s.ok()) return s;
      SetSlotConfig(slot, *config);
    }
  }
  return SharedBucket(BucketCellOf(slot), options_.clock, std::string(name), claim->index,
                      &slot.bottlenecks);
}

absl::StatusOr<SharedCounter> Segment::OpenCounter(absl::string_view name) {
  if (absl::Status s = CheckBucketName(name); !s.ok()) return s;
  absl::MutexLock guard(&mu_);
  Lock lock;
  if (absl::Status s = LockFile(&lock); !s.ok()) return s;
  absl::StatusOr<Claim> claim = FindOrClaimLocked(name, segment_layout::kKindCounter, true);
  if (!claim.ok()) return claim.status();
  Slot& slot = *claim->slot;
  // A zeroed cell is window 0 with nothing used: ready as it is.
  if (claim->created) slot.state.store(segment_layout::kSlotReady, std::memory_order_release);
  return SharedCounter(CounterCellOf(slot), &slot.bottlenecks, std::string(name));
}

absl::StatusOr<SharedLeases> Segment::OpenLeases(absl::string_view name, uint32_t count) {
  if (absl::Status s = CheckBucketName(name); !s.ok()) return s;
  if (count < 1) return absl::InvalidArgumentError("a concurrency cap needs at least 1 lease");
  absl::MutexLock guard(&mu_);
  Lock lock;
  if (absl::Status s = LockFile(&lock); !s.ok()) return s;
  const View view = View::Of(base_);
  if (count > view.header->lease_count - view.header->lease_next) {
    // Checked before claiming, so a refusal leaves no half-made slot.
    absl::StatusOr<Claim> existing = FindOrClaimLocked(name, segment_layout::kKindLeases, false);
    if (!existing.ok() && existing.status().code() == absl::StatusCode::kNotFound) {
      return absl::ResourceExhaustedError(absl::StrCat(
          path_, ": ", count, " leases for '", name, "' do not fit: ",
          view.header->lease_count - view.header->lease_next, " of ", view.header->lease_count,
          " lease words are free (create the segment with more max_leases)"));
    }
  }
  absl::StatusOr<Claim> claim = FindOrClaimLocked(name, segment_layout::kKindLeases, true);
  if (!claim.ok()) return claim.status();
  Slot& slot = *claim->slot;
  if (claim->created) {
    slot.permits = view.header->lease_next;  // first lease word
    slot.capacity = count;
    view.header->lease_next += count;
    slot.state.store(segment_layout::kSlotReady, std::memory_order_release);
  } else if (slot.capacity != count) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": concurrency cap '", name, "' exists with ", slot.capacity,
                     " leases; asked for ", count, " (caps cannot be resized in place)"));
  }
  return SharedLeases(view.leases + slot.permits, static_cast<uint32_t>(slot.capacity),
                      &LeaseHeadOf(slot)->generation, &slot.bottlenecks, std::string(name));
}

absl::StatusOr<int> Segment::ReclaimIdle(absl::Duration idle) {
  absl::MutexLock guard(&mu_);
  Lock lock;
  if (absl::Status s = LockFile(&lock); !s.ok()) return s;
  const View view = View::Of(base_);
  // Slots any live process has opened stay, however idle.
  std::vector<uint64_t> held(segment_layout::BitmapWords(view.slot_count), 0);
  for (uint32_t p = 0; p < view.process_count; ++p) {
    const ProcessEntry& e = view.processes[p];
    if (e.pid == 0 || !ProcessAlive(e.pid, e.start_time)) continue;
    const uint64_t* bits = view.Bitmap(static_cast<int32_t>(p));
    for (size_t w = 0; w < held.size(); ++w) held[w] |= bits[w];
  }
  const int64_t now = options_.clock.Now();
  const int64_t idle_ns = absl::ToInt64Nanoseconds(idle);
  int freed = 0;
  for (uint32_t i = 0; i < view.slot_count; ++i) {
    Slot& slot = view.slots[i];
    if (slot.state.load(std::memory_order_acquire) != segment_layout::kSlotReady) continue;
    // Only buckets: a counter holds a budget's spend and a cap holds leases.
    if (slot.kind != segment_layout::kKindBucket) continue;
    if ((held[i / 64] >> (i % 64)) & 1) continue;
    if (BucketRef(BucketCellOf(slot), options_.clock).FullForNanos(now) < idle_ns) continue;
    slot.state.store(segment_layout::kSlotTombstone, std::memory_order_release);
    ++freed;
  }
  return freed;
}

absl::StatusOr<SegmentInfo> Segment::Inspect() {
  absl::MutexLock guard(&mu_);
  Lock lock;
  if (absl::Status s = LockFile(&lock); !s.ok()) return s;
  const View view = View::Of(base_);
  SegmentInfo info;
  info.path = path_;
  info.abi_major = view.header->abi_major;
  info.abi_minor = view.header->abi_minor;
  info.size_bytes = view.header->total_size;
  info.slots = view.slot_count;
  info.slots_used = 0;
  info.max_processes = view.process_count;
  info.created_unix_ns = view.header->created_unix_ns;
  const int64_t now = options_.clock.Now();
  for (uint32_t i = 0; i < view.slot_count; ++i) {
    Slot& slot = view.slots[i];
    if (slot.state.load(std::memory_order_acquire) != segment_layout::kSlotReady) continue;
    ++info.slots_used;
    std::string name(SlotName(slot));
    const uint64_t bottlenecks = slot.bottlenecks.load(std::memory_order_relaxed);
    if (slot.kind == segment_layout::kKindCounter) {
      const WindowCounterRef::Reading counter = WindowCounterRef(CounterCellOf(slot)).Load();
      info.counters.push_back({std::move(name), i, counter.window, counter.used, bottlenecks});
    } else if (slot.kind == segment_layout::kKindLeases) {
      const LeaseSetRef leases(view.leases + slot.permits, static_cast<uint32_t>(slot.capacity),
                               &LeaseHeadOf(slot)->generation);
      info.leases.push_back({std::move(name), i, static_cast<uint32_t>(slot.capacity),
                             leases.InFlight(), bottlenecks});
    } else {
      const BucketRef ref(BucketCellOf(slot), options_.clock);
      info.buckets.push_back({std::move(name), i, SlotConfig(slot), ref.Available(now),
                              ref.GetPressure(now), bottlenecks});
    }
  }
  for (uint32_t p = 0; p < view.process_count; ++p) {
    const ProcessEntry& e = view.processes[p];
    if (e.pid == 0) continue;
    info.processes.push_back(
        {e.pid, e.start_time, ProcessAlive(e.pid, e.start_time), e.attached_unix_ns});
  }
  return info;
}

absl::Status Segment::Unlink() {
  struct stat st {};
  st.st_dev = dev_;
  st.st_ino = ino_;
  return UnlinkIfSame(path_, st);
}

absl::Status Segment::Remove(absl::string_view name_or_path) {
  absl::StatusOr<std::string> path = ResolvePath(name_or_path);
  if (!path.ok()) return path.status();
  const int fd = open(path->c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return OpenError(errno, *path, /*creating=*/false);
  struct stat st;
  absl::Status s = CheckFile(fd, *path, &st);
  close(fd);
  if (!s.ok()) return s;
  return UnlinkIfSame(*path, st);
}

}  // namespace sluice
