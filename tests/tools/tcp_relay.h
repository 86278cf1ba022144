// A TCP relay on loopback that delays what it forwards, for tests that need a
// slow or broken link (a Redis server 2 ms of round trip away, a link that
// drops). It listens on 127.0.0.1, connects each client it accepts to a
// target port on 127.0.0.1, and forwards bytes both ways, each chunk held
// for the one-way delay counted from when the relay read it: 1 ms each way
// adds 2 ms to every round trip. Bytes keep their order; a half close (EOF)
// is passed on after the bytes before it.
//
// Two threads per relayed connection (one per direction, each waiting in
// ppoll for its socket, the next chunk's due time, or a cut) and one that
// accepts. Test code: plain POSIX sockets, no event loop.
//
// Thread safety: every public method may be called from any thread.
//
// Example:
//   auto relay = sluice::TcpRelay::Start(redis_port, absl::Milliseconds(1));
//   ASSERT_TRUE(relay.ok()) << relay.status();
//   Connect(127.0.0.1, (*relay)->port());  // 2 ms more per round trip
//   (*relay)->CutAll();                    // every link drops
#ifndef SLUICE_TESTS_TOOLS_TCP_RELAY_H_
#define SLUICE_TESTS_TOOLS_TCP_RELAY_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "sluice/clock.h"

namespace sluice {

class TcpRelay {
 public:
  // Listens on a free port of 127.0.0.1 and relays to 127.0.0.1:target_port
  // with `one_way_delay` each way. An error names the call that failed.
  static absl::StatusOr<std::unique_ptr<TcpRelay>> Start(
      int target_port, absl::Duration one_way_delay = absl::ZeroDuration()) {
    absl::StatusOr<std::unique_ptr<TcpRelay>> relay = Listen(target_port, one_way_delay);
    if (relay.ok()) (*relay)->Serve();
    return relay;
  }

  // Start in two steps, for a test that forks: Listen binds the port (and
  // connections queue on it) with no thread yet, so the test can fork its
  // processes while it has only one thread (a child forked while another
  // thread holds an allocator lock can deadlock, as under ASan); Serve then
  // starts relaying. REQUIRES: Serve is called at most once.
  static absl::StatusOr<std::unique_ptr<TcpRelay>> Listen(
      int target_port, absl::Duration one_way_delay = absl::ZeroDuration()) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Errno("socket");
    sockaddr_in addr = Loopback(0);
    socklen_t len = sizeof(addr);
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      const absl::Status s = Errno("bind/listen on 127.0.0.1");
      close(fd);
      return s;
    }
    const int wake = eventfd(0, EFD_CLOEXEC);
    if (wake < 0) {
      close(fd);
      return Errno("eventfd");
    }
    return std::unique_ptr<TcpRelay>(
        new TcpRelay(fd, ntohs(addr.sin_port), target_port, wake, one_way_delay));
  }

  void Serve() {
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }

  TcpRelay(const TcpRelay&) = delete;
  TcpRelay& operator=(const TcpRelay&) = delete;
  ~TcpRelay() { Stop(); }

  // The port the relay listens on.
  int port() const { return port_; }

  // The one-way delay for chunks read from now on (chunks already read keep
  // theirs; order is kept either way).
  void SetDelay(absl::Duration one_way) {
    delay_ns_.store(absl::ToInt64Nanoseconds(std::max(one_way, absl::ZeroDuration())));
  }

  // While true, each new connection is accepted and closed at once.
  void SetRefusing(bool refusing) { refusing_.store(refusing); }

  // Closes every relayed connection, both sides, dropping what is still
  // held: a broken link. New connections are relayed as before.
  void CutAll() {
    std::vector<std::unique_ptr<Link>> links;
    {
      std::lock_guard<std::mutex> lock(mu_);
      links.swap(links_);
    }
    links.clear();  // each Link cuts, joins its threads and closes
  }

  // Stops accepting, cuts every connection and joins every thread. Idempotent.
  void Stop() {
    std::call_once(stopped_, [this] {
      const uint64_t one = 1;
      if (write(wake_fd_, &one, sizeof(one)) != sizeof(one)) {
        shutdown(listen_fd_, SHUT_RDWR);  // also wakes the acceptor on Linux
      }
      if (acceptor_.joinable()) acceptor_.join();
      close(listen_fd_);
      close(wake_fd_);
      CutAll();
    });
  }

  // Connections accepted and relayed so far (refused ones not counted).
  int64_t relayed() const { return relayed_.load(); }

 private:
  // One relayed connection: the accepted client socket, the socket to the
  // target, and an eventfd that tells both pumps to stop at once.
  struct Link {
    int client = -1;
    int target = -1;
    int cut = -1;
    std::atomic<int> running{2};
    std::thread up, down;

    ~Link() {
      const uint64_t one = 1;
      if (write(cut, &one, sizeof(one)) != sizeof(one)) {
        // Both pumps also stop on the shutdowns below.
      }
      shutdown(client, SHUT_RDWR);
      shutdown(target, SHUT_RDWR);
      if (up.joinable()) up.join();
      if (down.joinable()) down.join();
      close(client);
      close(target);
      close(cut);
    }
  };

  struct Chunk {
    int64_t due_ns;
    std::string bytes;
  };

  TcpRelay(int listen_fd, int port, int target_port, int wake_fd, absl::Duration delay)
      : listen_fd_(listen_fd), port_(port), target_port_(target_port), wake_fd_(wake_fd) {
    SetDelay(delay);
  }

  static absl::Status Errno(absl::string_view what) {
    return absl::UnavailableError(absl::StrCat(what, ": ", strerror(errno)));
  }

  static sockaddr_in Loopback(int port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
  }

  static void NoDelay(int fd) {
    const int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  }

  // The socket to the target, or -1 when it cannot be reached.
  int ConnectTarget() const {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    const sockaddr_in addr = Loopback(target_port_);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd);
      return -1;
    }
    NoDelay(fd);
    return fd;
  }

  void AcceptLoop() {
    for (;;) {
      pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0 && errno != EINTR) return;
      if (fds[0].revents != 0) return;
      if (fds[1].revents == 0) continue;
      const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) {
        if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
        return;  // the listening socket was shut down
      }
      const int target = refusing_.load() ? -1 : ConnectTarget();
      if (target < 0) {
        close(client);
        continue;
      }
      NoDelay(client);
      Add(client, target);
    }
  }

  // Starts relaying `client` <-> `target`, and reaps links that ended.
  void Add(int client, int target) {
    auto link = std::make_unique<Link>();
    link->client = client;
    link->target = target;
    link->cut = eventfd(0, EFD_CLOEXEC);
    if (link->cut < 0) return;  // the Link closes both sockets
    // Counted before any byte can pass, so a client that got an answer sees it.
    relayed_.fetch_add(1);
    Link* l = link.get();
    link->up = std::thread([this, l] { Pump(l, l->client, l->target); });
    link->down = std::thread([this, l] { Pump(l, l->target, l->client); });
    // Declared before the lock, so ended links are joined after it is released.
    std::vector<std::unique_ptr<Link>> ended;
    std::lock_guard<std::mutex> lock(mu_);
    auto done = std::stable_partition(links_.begin(), links_.end(),
                                      [](const auto& l) { return l->running.load() > 0; });
    ended.insert(ended.end(), std::make_move_iterator(done), std::make_move_iterator(links_.end()));
    links_.erase(done, links_.end());
    links_.push_back(std::move(link));
  }

  static bool SendAll(int fd, const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  // Forwards `from` to `to`, each chunk once its due time comes, until EOF
  // (passed on as a half close once the chunks before it are out), an error
  // (which ends both directions), or a cut (which drops what is held).
  void Pump(Link* link, int from, int to) {
    std::deque<Chunk> held;
    bool eof = false;
    for (;;) {
      const int64_t now = Clock::MonotonicNanos();
      while (!held.empty() && held.front().due_ns <= now) {
        if (!SendAll(to, held.front().bytes)) return Fail(link);
        held.pop_front();
      }
      if (eof && held.empty()) {
        shutdown(to, SHUT_WR);
        break;
      }
      pollfd fds[2] = {{link->cut, POLLIN, 0}, {eof ? -1 : from, POLLIN, 0}};
      timespec wait{};
      if (!held.empty()) {
        const int64_t ns = held.front().due_ns - now;
        wait = {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
      }
      if (ppoll(fds, 2, held.empty() ? nullptr : &wait, nullptr) < 0 && errno != EINTR) {
        return Fail(link);
      }
      if (fds[0].revents != 0) break;  // cut
      if (fds[1].revents == 0) continue;
      char buffer[64 * 1024];
      const ssize_t n = recv(from, buffer, sizeof(buffer), 0);
      if (n > 0) {
        held.push_back({Clock::MonotonicNanos() + delay_ns_.load(),
                        std::string(buffer, static_cast<size_t>(n))});
      } else if (n == 0) {
        eof = true;
      } else if (errno != EINTR && errno != EAGAIN) {
        return Fail(link);
      }
    }
    link->running.fetch_sub(1);
  }

  // An error in one direction ends both: the peers see the link drop.
  static void Fail(Link* link) {
    shutdown(link->client, SHUT_RDWR);
    shutdown(link->target, SHUT_RDWR);
    link->running.fetch_sub(1);
  }

  const int listen_fd_;
  const int port_;
  const int target_port_;
  const int wake_fd_;  // eventfd: Stop wakes the acceptor with it
  std::atomic<int64_t> delay_ns_{0};
  std::atomic<bool> refusing_{false};
  std::atomic<int64_t> relayed_{0};
  std::once_flag stopped_;
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Link>> links_;  // guarded by mu_
};

}  // namespace sluice

#endif  // SLUICE_TESTS_TOOLS_TCP_RELAY_H_
