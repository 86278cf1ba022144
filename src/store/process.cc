#include "src/store/process.h"

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

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

}  // namespace

bool ReadStartTime(pid_t pid, uint64_t* start_time) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::stringstream text;
  text << in.rdbuf();
  const std::string stat = text.str();
  // The command name (field 2) is in parentheses and may contain spaces.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return false;
  const std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(stat).substr(close + 1), ' ', absl::SkipEmpty());
  // fields[0] is field 3 (state), so field 22 is fields[19].
  return fields.size() > 19 && absl::SimpleAtoi(fields[19], start_time);
}

bool ProcessAlive(pid_t pid, uint64_t start_time) {
  uint64_t now_start = 0;
  return pid > 0 && ReadStartTime(pid, &now_start) && now_start == start_time;
}

uint64_t ProcessTag() {
  static std::atomic<uint64_t> cached{0};
  const pid_t pid = getpid();
  const uint64_t tag = cached.load(std::memory_order_relaxed);
  if (tag != 0 && static_cast<pid_t>(tag & kPidMask) == pid) return tag;
  uint64_t start = 0;
  ReadStartTime(pid, &start);
  const uint64_t fresh = TagOf(pid, start);
  cached.store(fresh, std::memory_order_relaxed);
  return fresh;
}

bool ProcessTagAlive(uint64_t tag) {
  const pid_t pid = static_cast<pid_t>(tag & kPidMask);
  uint64_t start = 0;
  return pid > 0 && ReadStartTime(pid, &start) && TagOf(pid, start) == tag;
}

}  // namespace sluice
