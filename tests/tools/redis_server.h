// For tests and benchmarks that need Redis: a private `redis-server` on a
// free loopback port, with no persistence, started by the program and
// stopped by its pid. Nothing else is assumed running.
#ifndef SLUICE_TESTS_TOOLS_REDIS_SERVER_H_
#define SLUICE_TESTS_TOOLS_REDIS_SERVER_H_

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace sluice {

class RedisServer {
 public:
  // Starts one; `password` non-empty sets requirepass. ok() is false when
  // it cannot (redis-server missing: tools/install-deps.sh installs it).
  explicit RedisServer(std::string password = "") : password_(std::move(password)) {
    for (int attempt = 0; attempt < 5 && pid_ <= 0; ++attempt) {
      port_ = FreePort();
      Start();
    }
  }
  ~RedisServer() { Stop(); }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  bool ok() const { return pid_ > 0; }
  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }

  // Kills it (SIGKILL: an outage, nothing flushed) and reaps it.
  void Kill() { Signal(SIGKILL); }
  // Stops it (SIGTERM) and reaps it.
  void Stop() { Signal(SIGTERM); }
  // Starts it again on the same port (empty: a restart loses everything).
  bool Restart() {
    Stop();
    Start();
    return ok();
  }

 private:
  static uint16_t FreePort() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    uint16_t port = 0;
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port = ntohs(addr.sin_port);
    }
    close(fd);
    return port;
  }

  void Start() {
    std::vector<std::string> args = {
        "redis-server", "--port", absl::StrCat(port_), "--bind",  "127.0.0.1",   "--save", "",
        "--appendonly", "no",     "--loglevel",        "warning", "--daemonize", "no"};
    if (!password_.empty()) args.insert(args.end(), {"--requirepass", password_});
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid == 0) {
      // Dies with the test: a test killed by its timeout (or SIGKILL) must
      // not leave a redis-server behind. (The signal follows the forking
      // thread; fixtures start servers from the test's main thread.)
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      // Its own process group, so a test's signals don't reach it.
      setpgid(0, 0);
      const int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      dup2(null, 2);
      execvp("redis-server", argv.data());
      _exit(127);
    }
    pid_ = pid;
    // Ready once it accepts connections (up to 5 s).
    for (int i = 0; i < 250; ++i) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;  // exited: the port was taken, or no redis-server
        return;
      }
      if (Accepts()) return;
      usleep(20'000);
    }
    Signal(SIGKILL);
  }

  bool Accepts() const {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    return ok;
  }

  void Signal(int sig) {
    if (pid_ <= 0) return;
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  std::string password_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace sluice

#endif  // SLUICE_TESTS_TOOLS_REDIS_SERVER_H_
