// Test helpers for servers on loopback: a blocking client socket whose reads
// are bounded in time, and a process's resident memory.
#ifndef SLUICE_TESTS_SERVER_RAW_CLIENT_H_
#define SLUICE_TESTS_SERVER_RAW_CLIENT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sluice {

// A blocking loopback socket with bounded reads: each read gives up after
// kPatience.
class RawClient {
 public:
  static constexpr absl::Duration kPatience = absl::Seconds(20);

  // A socket, not yet connected.
  RawClient() : fd_(socket(AF_INET, SOCK_STREAM, 0)) {}
  explicit RawClient(int port) : RawClient() { Connect(port); }
  bool Connect(int port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    return connected_;
  }
  int fd() const { return fd_; }
  ~RawClient() { Close(); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return connected_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  bool Send(absl::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  // Reads until everything read contains `needle`, the peer closes, or
  // kPatience passes; returns everything read so far.
  const std::string& ReadUntil(absl::string_view needle) {
    absl::Time deadline = absl::Now() + kPatience;
    while (!absl::StrContains(data_, needle) && !ReadSome(deadline)) {
    }
    return data_;
  }
  // Reads until the peer closes (or kPatience passes).
  const std::string& ReadToEnd() {
    absl::Time deadline = absl::Now() + kPatience;
    while (!ReadSome(deadline)) {
    }
    return data_;
  }
  bool eof() const { return eof_; }
  bool reset() const { return reset_; }
  void Forget() { data_.clear(); }

 private:
  // Returns true when no more can come (closed, reset, or out of time).
  bool ReadSome(absl::Time deadline) {
    if (eof_) return true;
    pollfd p{fd_, POLLIN, 0};
    int wait_ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (wait_ms <= 0 || poll(&p, 1, wait_ms) <= 0) return true;
    char chunk[4096];
    ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n > 0) {
      data_.append(chunk, static_cast<size_t>(n));
      return false;
    }
    eof_ = true;
    reset_ = n < 0 && errno == ECONNRESET;
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  bool eof_ = false;
  bool reset_ = false;
  std::string data_;
};

// The resident memory of process `pid` (0: this one) in bytes, from
// /proc/PID/statm; 0 when it cannot be read.
inline int64_t ResidentBytes(pid_t pid = 0) {
  const std::string path =
      pid == 0 ? std::string("/proc/self/statm") : absl::StrCat("/proc/", pid, "/statm");
  FILE* f = fopen(path.c_str(), "r");
  long pages = 0, resident = 0;
  if (f != nullptr) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  return int64_t{resident} * sysconf(_SC_PAGESIZE);
}

}  // namespace sluice

#endif  // SLUICE_TESTS_SERVER_RAW_CLIENT_H_
