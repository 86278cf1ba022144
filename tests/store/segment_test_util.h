// Helpers shared by the segment tests: unique segment paths that clean up
// after themselves, raw access to a segment file's bytes, forked children.
#ifndef SLUICE_TESTS_STORE_SEGMENT_TEST_UTIL_H_
#define SLUICE_TESTS_STORE_SEGMENT_TEST_UTIL_H_

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace sluice {

// A /dev/shm path unique to this process and call, removed on destruction.
class ScratchSegment {
 public:
  ScratchSegment() {
    static std::atomic<int> counter{0};
    path_ = absl::StrCat("/dev/shm/sluice-test-", getpid(), "-", counter.fetch_add(1));
    unlink(path_.c_str());
  }
  ~ScratchSegment() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::vector<char> ReadFile(const std::string& path) {
  std::vector<char> bytes;
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return bytes;
  char buf[65536];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) bytes.insert(bytes.end(), buf, buf + n);
  close(fd);
  return bytes;
}

inline bool WriteFile(const std::string& path, const std::vector<char>& bytes) {
  unlink(path.c_str());
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return false;
  const bool ok = write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  close(fd);
  return ok;
}

// Overwrites sizeof(T) bytes at `offset` of the file with `value`.
template <typename T>
bool PatchFile(const std::string& path, size_t offset, const T& value) {
  const int fd = open(path.c_str(), O_WRONLY);
  if (fd < 0) return false;
  const bool ok =
      pwrite(fd, &value, sizeof(T), static_cast<off_t>(offset)) == static_cast<ssize_t>(sizeof(T));
  close(fd);
  return ok;
}

// Runs `body` in a forked child and returns its exit status (0 = passed), or
// 128 + the signal that ended it.
template <typename F>
int InChild(F body) {
  const pid_t pid = fork();
  if (pid == 0) _exit(body());
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace sluice

#endif  // SLUICE_TESTS_STORE_SEGMENT_TEST_UTIL_H_
