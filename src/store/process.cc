#include "src/store/process.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sluice {
namespace {

constexpr int kPidBits = 22;
constexpr uint64_t kPidMask = (uint64_t{1} << kPidBits) - 1;
constexpr uint64_t kStartMask = (uint64_t{1} << (64 - kPidBits)) - 1;

uint64_t TagOf(pid_t pid, uint64_t start_time) {
  return ((start_time & kStartMask) << kPidBits) | (static_cast<uint64_t>(pid) & kPidMask);
}

// The kernel's word on whether any process has `pid`: only ESRCH is "no".
bool PidExists(pid_t pid) { return kill(pid, 0) == 0 || errno != ESRCH; }

}  // namespace

absl::StatusOr<uint64_t> ReadStartTime(pid_t pid) {
  if (pid <= 0) return absl::NotFoundError(absl::StrCat("no process ", pid));
  const std::string path = absl::StrCat("/proc/", pid, "/stat");
  std::ifstream in(path);
  if (!in) {
    const int err = errno;
    if (!PidExists(pid)) return absl::NotFoundError(absl::StrCat("no process ", pid));
    return absl::UnavailableError(absl::StrCat("cannot read ", path, ": ", std::strerror(err)));
  }
  std::stringstream text;
  text << in.rdbuf();
  const std::string stat = text.str();
  // The command name (field 2) is in parentheses and may contain spaces.
  const size_t close = stat.rfind(')');
  uint64_t start = 0;
  if (close != std::string::npos) {
    const std::vector<absl::string_view> fields =
        absl::StrSplit(absl::string_view(stat).substr(close + 1), ' ', absl::SkipEmpty());
    // fields[0] is field 3 (state), so field 22 is fields[19]. A zombie (Z)
    // or a dying process (X) has exited: it holds nothing any more.
    if (fields.size() > 19 && (fields[0] == "Z" || fields[0] == "X")) {
      return absl::NotFoundError(absl::StrCat("process ", pid, " has exited"));
    }
    if (fields.size() > 19 && absl::SimpleAtoi(fields[19], &start)) return start;
  }
  if (!PidExists(pid)) return absl::NotFoundError(absl::StrCat("no process ", pid));
  return absl::UnavailableError(absl::StrCat(path, " has no start time (field 22)"));
}

Liveness ProcessLiveness(pid_t pid, uint64_t start_time) {
  if (pid <= 0) return Liveness::kDead;
  absl::StatusOr<uint64_t> now_start = ReadStartTime(pid);
  if (now_start.ok()) return *now_start == start_time ? Liveness::kAlive : Liveness::kDead;
  return absl::IsNotFound(now_start.status()) ? Liveness::kDead : Liveness::kUnknown;
}

absl::StatusOr<uint64_t> ProcessTag() {
  static std::atomic<uint64_t> cached{0};
  const pid_t pid = getpid();
  const uint64_t tag = cached.load(std::memory_order_relaxed);
  if (tag != 0 && static_cast<pid_t>(tag & kPidMask) == pid) return tag;
  absl::StatusOr<uint64_t> start = ReadStartTime(pid);
  if (!start.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot tell this process apart from a later one with its pid: ",
                     start.status().message()));
  }
  const uint64_t fresh = TagOf(pid, *start);
  cached.store(fresh, std::memory_order_relaxed);
  return fresh;
}

bool ProcessTagMaybeAlive(uint64_t tag) {
  const pid_t pid = static_cast<pid_t>(tag & kPidMask);
  if (pid <= 0) return false;
  absl::StatusOr<uint64_t> start = ReadStartTime(pid);
  if (start.ok()) return TagOf(pid, *start) == tag;
  return !absl::IsNotFound(start.status());
}

absl::StatusOr<uint64_t> PidNamespace() {
  struct stat st;
  if (stat("/proc/self/ns/pid", &st) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot read /proc/self/ns/pid: ", std::strerror(errno)));
  }
  return static_cast<uint64_t>(st.st_ino);
}

}  // namespace sluice
