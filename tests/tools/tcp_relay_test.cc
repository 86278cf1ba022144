// The delaying TCP relay against a small echo server on loopback: bytes come
// back intact and in order, each round trip takes at least twice the one-way
// delay (lower bounds only: the machine may be loaded), and cutting,
// refusing and stopping close what they promise to.
#include "tests/tools/tcp_relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/server/raw_client.h"

namespace sluice {
namespace {

// Echoes every connection's bytes back until the peer half-closes, then
// half-closes too. Stop (or destruction) ends every connection and thread.
class EchoServer {
 public:
  EchoServer() {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listen_fd_, 16), 0);
    EXPECT_EQ(getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] {
      for (;;) {
        const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;  // shut down by Stop
        std::lock_guard<std::mutex> lock(mu_);
        fds_.push_back(fd);
        echoes_.emplace_back([fd] { Echo(fd); });
      }
    });
  }
  ~EchoServer() {
    shutdown(listen_fd_, SHUT_RDWR);  // wakes accept on Linux
    acceptor_.join();
    close(listen_fd_);
    for (int fd : fds_) shutdown(fd, SHUT_RDWR);
    for (std::thread& t : echoes_) t.join();
    for (int fd : fds_) close(fd);
  }
  int port() const { return port_; }

 private:
  static void Echo(int fd) {
    char buffer[16 * 1024];
    for (;;) {
      const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      if (!SendAll(fd, std::string(buffer, static_cast<size_t>(n)))) break;
    }
    shutdown(fd, SHUT_WR);
  }
  static bool SendAll(int fd, const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> fds_;             // guarded by mu_ until the acceptor ends
  std::vector<std::thread> echoes_;  // guarded by mu_ until the acceptor ends
};

std::unique_ptr<TcpRelay> StartRelay(int target_port, absl::Duration delay) {
  auto relay = TcpRelay::Start(target_port, delay);
  EXPECT_TRUE(relay.ok()) << relay.status();
  return relay.ok() ? *std::move(relay) : nullptr;
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string bytes(n, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  return bytes;
}

// Sends `bytes` through `client` from another thread (so that the echo can
// flow back meanwhile), half-closes, and returns all that comes back.
std::string RoundTrip(RawClient& client, const std::string& bytes) {
  std::thread sender([&] {
    EXPECT_TRUE(client.Send(bytes));
    shutdown(client.fd(), SHUT_WR);
  });
  std::string back = client.ReadToEnd();
  sender.join();
  return back;
}

// The time one small message takes to come back through `client`.
absl::Duration PingPong(RawClient& client, const std::string& message) {
  client.Forget();
  const absl::Time start = absl::Now();
  EXPECT_TRUE(client.Send(message));
  EXPECT_EQ(client.ReadUntil(message), message);
  return absl::Now() - start;
}

TEST(TcpRelayTest, BytesComeBackIntactAndInOrder) {
  EchoServer echo;
  auto relay = StartRelay(echo.port(), absl::ZeroDuration());
  ASSERT_NE(relay, nullptr);
  EXPECT_NE(relay->port(), 0);
  EXPECT_NE(relay->port(), echo.port());
  const std::string bytes = RandomBytes(1 << 20, 1);
  RawClient client(relay->port());
  ASSERT_TRUE(client.connected());
  EXPECT_TRUE(RoundTrip(client, bytes) == bytes);
  EXPECT_TRUE(client.eof());  // the echo's half close came through
  EXPECT_EQ(relay->relayed(), 1);
}

TEST(TcpRelayTest, DelayedChunksKeepTheirOrder) {
  EchoServer echo;
  auto relay = StartRelay(echo.port(), absl::Milliseconds(2));
  ASSERT_NE(relay, nullptr);
  const std::string bytes = RandomBytes(256 * 1024, 2);
  RawClient client(relay->port());
  ASSERT_TRUE(client.connected());
  std::thread changer([&] {
    // Shorter and longer delays while chunks are held: order must hold.
    for (int i = 0; i < 10; ++i) {
      relay->SetDelay(absl::Milliseconds(i % 2 == 0 ? 0 : 3));
      absl::SleepFor(absl::Milliseconds(1));
    }
  });
  EXPECT_TRUE(RoundTrip(client, bytes) == bytes);
  changer.join();
}

TEST(TcpRelayTest, EachRoundTripTakesAtLeastTwiceTheOneWayDelay) {
  EchoServer echo;
  auto relay = StartRelay(echo.port(), absl::Milliseconds(5));
  ASSERT_NE(relay, nullptr);
  RawClient client(relay->port());
  ASSERT_TRUE(client.connected());
  for (int i = 0; i < 5; ++i) {
    EXPECT_GE(PingPong(client, absl::StrCat("ping ", i, ";")), absl::Milliseconds(10));
  }
  // Changed at run time, for the next chunks read.
  relay->SetDelay(absl::Milliseconds(20));
  EXPECT_GE(PingPong(client, "slower;"), absl::Milliseconds(40));
}

TEST(TcpRelayTest, CutAllClosesEveryRelayedConnection) {
  EchoServer echo;
  auto relay = StartRelay(echo.port(), absl::ZeroDuration());
  ASSERT_NE(relay, nullptr);
  RawClient a(relay->port()), b(relay->port());
  ASSERT_TRUE(a.connected() && b.connected());
  PingPong(a, "a;");
  PingPong(b, "b;");
  // Held chunks are dropped, not flushed: with an hour's delay, a cut that
  // waited for them would outlast the test's timeout.
  relay->SetDelay(absl::Hours(1));
  ASSERT_TRUE(a.Send("held;"));
  absl::SleepFor(absl::Milliseconds(20));
  relay->CutAll();
  a.Forget();
  b.Forget();
  EXPECT_EQ(a.ReadToEnd(), "");
  EXPECT_TRUE(a.eof());
  EXPECT_EQ(b.ReadToEnd(), "");
  EXPECT_TRUE(b.eof());
  // The relay goes on relaying new connections.
  relay->SetDelay(absl::ZeroDuration());
  RawClient c(relay->port());
  ASSERT_TRUE(c.connected());
  EXPECT_EQ(RoundTrip(c, "after the cut"), "after the cut");
}

TEST(TcpRelayTest, RefusingAcceptsAndClosesNewConnections) {
  EchoServer echo;
  auto relay = StartRelay(echo.port(), absl::ZeroDuration());
  ASSERT_NE(relay, nullptr);
  RawClient before(relay->port());
  ASSERT_TRUE(before.connected());
  PingPong(before, "before;");
  relay->SetRefusing(true);
  RawClient refused(relay->port());
  ASSERT_TRUE(refused.connected());  // the kernel accepts; the relay closes it
  refused.Send("x");
  EXPECT_EQ(refused.ReadToEnd(), "");
  EXPECT_TRUE(refused.eof());
  PingPong(before, "still;");  // existing connections are left alone
  relay->SetRefusing(false);
  RawClient after(relay->port());
  ASSERT_TRUE(after.connected());
  EXPECT_EQ(RoundTrip(after, "after"), "after");
  EXPECT_EQ(relay->relayed(), 2);
}

TEST(TcpRelayTest, TargetDownClosesTheClient) {
  int dead_port = 0;
  {
    EchoServer gone;
    dead_port = gone.port();
  }
  auto relay = StartRelay(dead_port, absl::ZeroDuration());
  ASSERT_NE(relay, nullptr);
  RawClient client(relay->port());
  ASSERT_TRUE(client.connected());
  EXPECT_EQ(client.ReadToEnd(), "");
  EXPECT_TRUE(client.eof());
  EXPECT_EQ(relay->relayed(), 0);
}

TEST(TcpRelayTest, StopClosesConnectionsAndJoinsEveryThread) {
  EchoServer echo;
  auto relay = StartRelay(echo.port(), absl::Hours(1));  // Stop drops what is held
  ASSERT_NE(relay, nullptr);
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(std::make_unique<RawClient>(relay->port()));
    ASSERT_TRUE(clients.back()->connected());
    ASSERT_TRUE(clients.back()->Send("held for an hour;"));
  }
  absl::SleepFor(absl::Milliseconds(20));
  relay->Stop();
  for (auto& client : clients) {
    EXPECT_EQ(client->ReadToEnd(), "");
    EXPECT_TRUE(client->eof());
  }
  relay->Stop();  // idempotent
  RawClient late;
  EXPECT_FALSE(late.Connect(relay->port()));  // nothing listens any more
  relay.reset();
}

}  // namespace
}  // namespace sluice
