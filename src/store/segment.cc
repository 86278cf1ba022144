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
#include "src/store/segment_internal.h"
#include "src/store/segment_layout.h"
#include "src/store/segment_testing.h"

namespace sluice {

using segment_internal::ConfigOf;
using segment_internal::ErrnoText;
using segment_internal::SlotName;
using segment_internal::View;
using segment_layout::ComputeOffsets;
using segment_layout::Header;
using segment_layout::Offsets;
using segment_layout::ProcessEntry;
using segment_layout::Slot;

namespace {

constexpr char kBootIdPath[] = "/proc/sys/kernel/random/boot_id";

// The current boot's id: CLOCK_MONOTONIC readings only compare within a boot.
// Unavailable, naming the file, when it cannot be read: an unknown boot must
// never be taken for another one (that would wipe a live segment).
absl::StatusOr<std::string> BootId() {
  std::ifstream in(kBootIdPath);
  std::string id;
  if (!in || !std::getline(in, id)) {
    return absl::UnavailableError(
        absl::StrCat("cannot read ", kBootIdPath, ": ", in ? "it is empty" : ErrnoText(errno)));
  }
  id = std::string(absl::StripAsciiWhitespace(id)).substr(0, segment_layout::kBootIdBytes - 1);
  if (id.empty()) return absl::UnavailableError(absl::StrCat(kBootIdPath, " is empty"));
  return id;
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

}  // namespace

namespace {

// FailedPrecondition naming the segment's path, then what is wrong.
template <typename... Parts>
absl::Status Corrupt(absl::string_view path, const Parts&... parts) {
  return absl::FailedPreconditionError(absl::StrCat(path, ": ", parts...));
}

// The header of an image of `size` bytes: magic, version, fingerprint, state,
// sizes, and the boot id.
absl::Status ValidateHeader(const segment_layout::Header& header, size_t size,
                            absl::string_view path) {
  using namespace segment_layout;
  if (header.magic != kMagic) {
    return Corrupt(path, "not a sluice segment (magic 0x", absl::Hex(header.magic), ")");
  }
  if (header.abi_major != kSegmentAbiMajor) {
    return Corrupt(path, "segment layout version ", header.abi_major, ".", header.abi_minor,
                   " cannot be read by this build, which reads version ", kSegmentAbiMajor, ".",
                   kSegmentAbiMinor);
  }
  if (header.fingerprint != Fingerprint()) {
    return Corrupt(path, "segment layout fingerprint 0x", absl::Hex(header.fingerprint),
                   " differs from this build's 0x", absl::Hex(Fingerprint()), " (both version ",
                   header.abi_major, ".", header.abi_minor,
                   "): it was written by a build with another struct layout");
  }
  const uint32_t state = header.state.load(std::memory_order_acquire);
  if (state != kHeaderReady) {
    return Corrupt(path, "header state 0x", absl::Hex(state),
                   " is not ready: the segment is corrupt");
  }
  if (header.slot_count < 1 || header.slot_count > kMaxSlots) {
    return Corrupt(path, "slot count ", header.slot_count, " is outside 1..", kMaxSlots);
  }
  if (header.process_count < 1 || header.process_count > kMaxProcesses) {
    return Corrupt(path, "process registry size ", header.process_count, " is outside 1..",
                   kMaxProcesses);
  }
  if (header.lease_count > kMaxLeases || header.lease_next > header.lease_count) {
    return Corrupt(path, "lease region of ", header.lease_count, " words (", header.lease_next,
                   " allocated) is out of range");
  }
  const Offsets o = ComputeOffsets(header.slot_count, header.process_count, header.lease_count);
  if (header.total_size != o.total) {
    return Corrupt(path, "header says the segment is ", header.total_size, " bytes, but ",
                   header.slot_count, " slots and ", header.process_count, " process entries take ",
                   o.total);
  }
  if (size < o.total) return Corrupt(path, "segment is truncated: ", size, " bytes of ", o.total);
  if (memchr(header.boot_id, '\0', kBootIdBytes) == nullptr) {
    return Corrupt(path, "boot id is not terminated");
  }
  if (absl::Status s = header.tsc.Validate(); !s.ok()) return Corrupt(path, s.message());
  return absl::OkStatus();
}

// What a ready slot of `kind` holds, against its record. `where` names the
// slot; `lease_next` is the end of the allocated lease region.
absl::Status ValidateSlotContents(const segment_layout::Slot& slot, uint32_t lease_next,
                                  absl::string_view path, absl::string_view where) {
  using namespace segment_layout;
  switch (slot.kind) {
    case kKindBucket: {
      // The configuration, any learned limit, and the record of the cell
      // parameter slot in use, which must match the cell.
      if (absl::Status s = ValidateBucketConfig(ConfigOf(slot.configured)); !s.ok()) {
        return Corrupt(path, where, "configuration: ", s.message());
      }
      if (slot.learned_permits != 0 && slot.learned_period_ns <= 0) {
        return Corrupt(path, where, "learned limit period ", slot.learned_period_ns,
                       " ns is not positive");
      }
      const BucketCell& cell = BucketCellOf(slot);
      const BucketConfig in_use = ConfigOf(slot.params[BucketRef::ParamSlot(cell)]);
      if (absl::Status s = BucketRef::Validate(cell, in_use); !s.ok()) {
        return Corrupt(path, where, s.message());
      }
      return absl::OkStatus();
    }
    case kKindCounter:
      return absl::OkStatus();  // every word is a window id and an amount
    case kKindLeases:
      if (slot.configured.capacity < 1 || slot.configured.permits > lease_next ||
          slot.configured.capacity > lease_next - slot.configured.permits) {
        return Corrupt(path, where, "lease words [", slot.configured.permits, ", +",
                       slot.configured.capacity, ") are outside the allocated region of ",
                       lease_next);
      }
      return absl::OkStatus();
    default:
      return Corrupt(path, where, "unknown kind ", slot.kind);
  }
}

// Slot `i`: free, being claimed, or ready with a sound name and contents.
absl::Status ValidateSlot(const segment_layout::Slot& slot, uint32_t i, uint32_t lease_next,
                          absl::string_view path) {
  using namespace segment_layout;
  const uint32_t slot_state = slot.state.load(std::memory_order_acquire);
  if (slot_state == kSlotFree || slot_state == kSlotTombstone || slot_state == kSlotClaiming) {
    return absl::OkStatus();
  }
  if (slot_state != kSlotReady) {
    return Corrupt(path, "slot ", i, " has unknown state 0x", absl::Hex(slot_state));
  }
  if (slot.name_length < 1 || slot.name_length > kMaxBucketNameLength ||
      slot.name[slot.name_length] != '\0') {
    return Corrupt(path, "slot ", i, " has a bad name length ", slot.name_length);
  }
  return ValidateSlotContents(
      slot, lease_next, path,
      absl::StrCat("slot ", i, " ('", absl::CHexEscape(SlotName(slot)), "'): "));
}

// Opens the segment file, creating it when `options` ask and it is missing
// (with the mode they ask for, whatever the umask); the descriptor.
absl::StatusOr<int> OpenSegmentFile(const std::string& path, const SegmentOptions& options) {
  const mode_t mode = options.group_access ? 0660 : 0600;
  const int flags = O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
  int fd = -1;
  bool created = false;
  if (options.create) {
    fd = open(path.c_str(), flags | O_CREAT | O_EXCL, mode);
    created = fd >= 0;
  }
  if (fd < 0 && (!options.create || errno == EEXIST)) fd = open(path.c_str(), flags);
  if (fd < 0) return OpenError(errno, path, options.create);
  // The umask may have narrowed the mode; a group segment needs its group bits.
  if (created && fchmod(fd, mode) != 0) {
    const int err = errno;
    close(fd);
    return absl::PermissionDeniedError(
        absl::StrCat("cannot set mode of ", path, ": ", ErrnoText(err)));
  }
  return fd;
}

// What the first `got` bytes of a file of `size` bytes hold, read as a header.
enum class Found {
  kLive,         // a segment to map and validate
  kUnborn,       // for this process to initialize: empty, zeros, or abandoned
  kEarlierBoot,  // a segment of an earlier boot: its clock readings mean nothing now
};

Found ClassifyHeader(const segment_layout::Header& header, ssize_t got, uint64_t size,
                     const std::string& boot) {
  using segment_layout::Header;
  static const Header kZero{};
  const bool zeros = memcmp(static_cast<const void*>(&header), static_cast<const void*>(&kZero),
                            static_cast<size_t>(got)) == 0;
  const uint32_t state = header.state.load(std::memory_order_relaxed);
  // The state word is written last; a segment of ours that never got there
  // was abandoned by its creator (who died before writing the header, or
  // mid-way).
  const bool abandoned = header.magic == segment_layout::kMagic &&
                         (state == 0 || state == segment_layout::kHeaderInitializing);
  if (size == 0 || zeros || abandoned) return Found::kUnborn;
  const bool ours = got >= static_cast<ssize_t>(sizeof(Header)) &&
                    header.magic == segment_layout::kMagic && header.abi_major == kSegmentAbiMajor;
  const bool earlier_boot = ours && state == segment_layout::kHeaderReady &&
                            memchr(header.boot_id, '\0', sizeof(header.boot_id)) != nullptr &&
                            header.boot_id != boot;
  return earlier_boot ? Found::kEarlierBoot : Found::kLive;
}

}  // namespace

absl::Status ValidateSegmentImage(const void* data, size_t size, absl::string_view path) {
  using namespace segment_layout;
  if (reinterpret_cast<uintptr_t>(data) % alignof(Slot) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": a segment image must be ", alignof(Slot), "-byte aligned"));
  }
  if (size < sizeof(Header)) {
    return Corrupt(path, "segment is ", size, " bytes, too short for its ", sizeof(Header),
                   "-byte header");
  }
  const auto* header = static_cast<const Header*>(data);
  if (absl::Status s = ValidateHeader(*header, size, path); !s.ok()) return s;
  const View view = View::Of(const_cast<void*>(data));
  for (uint32_t i = 0; i < view.slot_count; ++i) {
    if (absl::Status s = ValidateSlot(view.slots[i], i, header->lease_next, path); !s.ok()) {
      return s;
    }
  }
  for (uint32_t i = 0; i < view.process_count; ++i) {
    if (view.processes[i].pid < 0) {
      return Corrupt(path, "process entry ", i, " has pid ", view.processes[i].pid);
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
  absl::StatusOr<int> fd = OpenSegmentFile(path_, options_);
  if (!fd.ok()) return fd.status();
  fd_ = *fd;
  lock_pid_ = getpid();
  struct stat st;
  if (absl::Status s = CheckFile(fd_, path_, &st); !s.ok()) return s;
  dev_ = st.st_dev;
  ino_ = st.st_ino;

  std::lock_guard<std::mutex> guard(mu_);
  Lock lock;
  if (absl::Status s = LockFile(&lock); !s.ok()) return s;
  if (fstat(fd_, &st) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot stat ", path_, ": ", ErrnoText(errno)));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  // Which boot and PID namespace this process runs in. An unreadable boot id
  // fails the open and leaves the segment as it is: taking a live segment
  // for one of an earlier boot would wipe it under the processes using it.
  const absl::StatusOr<std::string> boot = BootId();
  if (!boot.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot open segment ", path_, ": ",
                                               boot.status().message(),
                                               " (the segment is left as it is)"));
  }
  const uint64_t pid_namespace = PidNamespace().value_or(0);

  // Read what header there is without mapping: a short file must not be
  // mapped past its end (that would be SIGBUS, not an error).
  Header header;
  memset(static_cast<void*>(&header), 0, sizeof(header));
  const ssize_t got = pread(fd_, static_cast<void*>(&header), sizeof(header), 0);
  if (got < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read ", path_, ": ", ErrnoText(errno)));
  }
  const Found found = ClassifyHeader(header, got, size, *boot);
  if (found != Found::kLive) {
    const bool earlier_boot = found == Found::kEarlierBoot;
    if (!options_.create) {
      return absl::NotFoundError(absl::StrCat(
          path_, earlier_boot ? " was created before the last reboot and holds no live state"
                              : " was never initialized"));
    }
    if (absl::Status s = InitializeLocked(size, *boot, pid_namespace); !s.ok()) return s;
  } else if (absl::Status s = MapAndValidateLocked(); !s.ok()) {
    return s;
  }
  // Pids in the registry and in lease tags name processes of the creator's
  // PID namespace; from another one they cannot be checked, so a live
  // holder would look dead (or a dead one alive).
  const uint64_t creator_namespace = View::Of(base_).header->pid_namespace;
  if (creator_namespace != pid_namespace) {
    Unmap();
    return absl::FailedPreconditionError(absl::StrCat(
        path_, " was created in PID namespace ", creator_namespace, " and this process runs in ",
        pid_namespace,
        " (/proc/self/ns/pid): processes in different PID namespaces cannot check each "
        "other's liveness, so they cannot share a segment; give each namespace its own"));
  }
  if (options_.prefer_tsc) options_.clock = TscClock();
  if (options_.register_process) return RegisterLocked();
  return absl::OkStatus();
}

absl::Status Segment::TscStatus() const {
  if (absl::Status s = TscUsable(); !s.ok()) return s;
  if (!View::Of(base_).header->tsc.ready()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, " holds no TSC calibration: its creator could not use the TSC"));
  }
  return absl::OkStatus();
}

Clock Segment::TscClock() const {
  if (!TscStatus().ok()) return Clock::Monotonic();
  return Clock::TscOn(&View::Of(base_).header->tsc);
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
    // The parent's descriptor stays open until this child registers: it
    // holds the parent's entry lock, which keeps the handles this child
    // inherited from being reclaimed meanwhile.
    if (inherited_fd_ >= 0) close(inherited_fd_);
    inherited_fd_ = fd_;
    fd_ = fd;
    lock_pid_ = getpid();
    // The parent's registration is the parent's; when this child registers,
    // it marks the handles it inherited (opened_).
    process_entry_ = -1;
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

absl::Status Segment::InitializeLocked(uint64_t file_size, const std::string& boot_id,
                                       uint64_t pid_namespace) {
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
  if (const auto& hook = segment_testing::InitFaultHook()) hook();
  header->fingerprint = segment_layout::Fingerprint();
  header->total_size = o.total;
  header->slot_count = options_.slots;
  header->process_count = options_.max_processes;
  header->lease_count = options_.max_leases;
  header->lease_next = 0;
  header->created_unix_ns = UnixNanos();
  memcpy(header->boot_id, boot_id.data(), boot_id.size());
  header->pid_namespace = pid_namespace;
  // A millisecond's calibration, refined by the first reader past each check.
  if (TscUsable().ok()) {
    header->tsc.Calibrate();
  } else {
    header->tsc.MarkUnusable();
  }
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
  const absl::StatusOr<uint64_t> start = ReadStartTime(pid);
  if (!start.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": cannot register this process: ", start.status().message()));
  }
  for (uint32_t i = 0; i < view.process_count; ++i) {
    ProcessEntry& e = view.processes[i];
    // An entry whose process cannot be checked is kept: unknown is not dead.
    if (e.pid != 0 && MaybeAlive(e.pid, e.start_time)) continue;
    // An entry whose process died but whose heir (a forked child) still uses
    // its handles is kept too: the heir holds the entry's lock.
    if (!segment_internal::LockEntry(fd_, static_cast<int32_t>(i))) continue;
    e.pid = pid;
    e.start_time = *start;
    e.attached_unix_ns = UnixNanos();
    uint64_t* bits = view.Bitmap(static_cast<int32_t>(i));
    const size_t words = segment_layout::BitmapWords(view.slot_count);
    memset(bits, 0, words * sizeof(uint64_t));
    // Handles this process holds already (a forked child has its parent's).
    for (size_t w = 0; w < words && w < opened_.size(); ++w) bits[w] = opened_[w];
    process_entry_ = static_cast<int32_t>(i);
    // Registered with the inherited handles marked, the parent's file can go:
    // map the segment through this process's own file instead, at the same
    // address (so every handle stays valid), and close the parent's, whose
    // entry lock then lives only as long as the parent does.
    if (inherited_fd_ >= 0 && mmap(base_, mapped_size_, PROT_READ | PROT_WRITE,
                                   MAP_SHARED | MAP_FIXED, fd_, 0) != MAP_FAILED) {
      close(inherited_fd_);
      inherited_fd_ = -1;
    }
    return absl::OkStatus();
  }
  return absl::ResourceExhaustedError(
      absl::StrCat(path_, ": all ", view.process_count,
                   " process entries belong to live processes (or to children they left behind)"));
}

Segment::~Segment() {
  if (base_ != nullptr && process_entry_ >= 0 && lock_pid_ == getpid()) {
    std::lock_guard<std::mutex> guard(mu_);
    Lock lock;
    if (LockFile(&lock).ok() && process_entry_ >= 0) {
      View::Of(base_).processes[process_entry_].pid = 0;
    }
  }
  Unmap();
  if (fd_ >= 0) close(fd_);
  if (inherited_fd_ >= 0) close(inherited_fd_);
}

void Segment::Unmap() {
  if (base_ != nullptr) munmap(base_, mapped_size_);
  base_ = nullptr;
  mapped_size_ = 0;
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

namespace segment_testing {
namespace {

std::function<void()>& InitHook() {
  static auto* hook = new std::function<void()>;
  return *hook;
}
std::function<void()>& ReconfigureHook() {
  static auto* hook = new std::function<void()>;
  return *hook;
}

}  // namespace

void SetInitFaultHook(std::function<void()> hook) { InitHook() = std::move(hook); }
void SetReconfigureFaultHook(std::function<void()> hook) { ReconfigureHook() = std::move(hook); }
const std::function<void()>& InitFaultHook() { return InitHook(); }
const std::function<void()>& ReconfigureFaultHook() { return ReconfigureHook(); }

}  // namespace segment_testing
}  // namespace sluice
