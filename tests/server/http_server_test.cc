// The asynchronous HTTP server over loopback, with libcurl and raw sockets as
// clients: answers given later from another thread, keep-alive, pipelining,
// streamed answers (chunked and with a length), Abort, bodies over the limit,
// requests that are not HTTP, clients that go away, thousands of waiting
// exchanges (and what each costs), timers, Stop with a deadline, and the idle
// timeout. Synchronization is by what the client reads, never by sleeping.
#include "sluice/http_server.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/raw_client.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kPatience = RawClient::kPatience;

// Standard mutexes here, not Abseil's: ThreadSanitizer sees through these
// (the system's Abseil library is not built with it).

// Exchanges as the handler receives them, for the test thread to answer.
class ExchangeQueue {
 public:
  void Push(std::shared_ptr<HttpExchange> exchange) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(exchange));
    }
    cv_.notify_all();
  }
  // The next exchange, or nullptr after kPatience.
  std::shared_ptr<HttpExchange> Pop() {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, Patience(), [this] { return !queue_.empty(); })) return nullptr;
    auto exchange = std::move(queue_.front());
    queue_.pop_front();
    return exchange;
  }
  bool AwaitSize(size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, Patience(), [this, n] { return queue_.size() >= n; });
  }
  size_t size() {
    std::lock_guard lock(mu_);
    return queue_.size();
  }

 private:
  static std::chrono::nanoseconds Patience() { return absl::ToChronoNanoseconds(kPatience); }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<HttpExchange>> queue_;
};

// Notification's interface.
class Notification {
 public:
  void Notify() {
    std::lock_guard lock(mu_);
    notified_ = true;
    cv_.notify_all();  // under the lock: a waiter may destroy this once it wakes
  }
  bool HasBeenNotified() {
    std::lock_guard lock(mu_);
    return notified_;
  }
  bool WaitForNotificationWithTimeout(absl::Duration timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] { return notified_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool notified_ = false;
};

// Waits (up to kPatience) for a server's counters to reach what a client
// already saw: the server counts just after its last write or close.
bool StatsReach(const HttpServer& server, std::function<bool(const HttpServerStats&)> done) {
  absl::Time deadline = absl::Now() + kPatience;
  while (!done(server.stats())) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

std::unique_ptr<HttpServer> StartServer(HttpHandler handler, HttpServerOptions options = {}) {
  auto server = HttpServer::Start(options, std::move(handler));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

std::unique_ptr<HttpServer> StartQueued(ExchangeQueue& queue, HttpServerOptions options = {}) {
  return StartServer([&queue](std::shared_ptr<HttpExchange> x) { queue.Push(std::move(x)); },
                     options);
}

// Answers every request at once with its path.
std::unique_ptr<HttpServer> StartEcho(HttpServerOptions options = {}) {
  return StartServer(
      [](std::shared_ptr<HttpExchange> x) {
        x->Respond(200, {{"content-type", "text/plain"}}, "path=" + x->request().path);
      },
      options);
}

std::string Get(absl::string_view path, absl::string_view extra = "") {
  return absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: t\r\n", extra, "\r\n");
}

// libcurl, one easy handle (so one connection while it stays open).
class CurlClient {
 public:
  CurlClient() : easy_(curl_easy_init()) {}
  ~CurlClient() { curl_easy_cleanup(easy_); }
  // Returns the HTTP status, or -1 on a transport error.
  long Fetch(const std::string& url, std::string* body, const std::string& post = "",
             curl_slist* headers = nullptr) {
    body->clear();
    curl_easy_setopt(easy_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy_, CURLOPT_WRITEFUNCTION, &CurlClient::OnBody);
    curl_easy_setopt(easy_, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(easy_, CURLOPT_HTTPHEADER, headers);
    if (!post.empty()) {
      curl_easy_setopt(easy_, CURLOPT_POSTFIELDS, post.c_str());
      curl_easy_setopt(easy_, CURLOPT_POSTFIELDSIZE, static_cast<long>(post.size()));
    } else {
      curl_easy_setopt(easy_, CURLOPT_HTTPGET, 1L);
    }
    if (curl_easy_perform(easy_) != CURLE_OK) return -1;
    long status = 0;
    curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &status);
    return status;
  }

 private:
  static size_t OnBody(char* data, size_t size, size_t n, void* user) {
    static_cast<std::string*>(user)->append(data, size * n);
    return size * n;
  }
  CURL* easy_;
};

// A server whose exchanges wait in `queue` for the test to answer them.
class HttpServerExchangeTest : public testing::Test {
 protected:
  void SetUp() override {
    server = StartQueued(queue);
    ASSERT_NE(server, nullptr);
  }
  // Sends `request` on `client` and returns its exchange (nullptr if none came).
  std::shared_ptr<HttpExchange> Ask(RawClient& client, absl::string_view request) {
    if (!client.Send(request)) return nullptr;
    return queue.Pop();
  }

  ExchangeQueue queue;
  std::unique_ptr<HttpServer> server;
};

TEST(HttpServerTest, FindFieldIgnoresCase) {
  HttpFields fields = {{"content-type", "a"}, {"X-Api-Key", "b"}, {"x-api-key", "c"}};
  EXPECT_EQ(FindField(fields, "Content-Type"), "a");
  EXPECT_EQ(FindField(fields, "x-api-key"), "b");
  EXPECT_EQ(FindField(fields, "accept"), std::nullopt);
}

TEST(HttpServerTest, StartRefusesBadOptionsAndATakenPort) {
  HttpServerOptions options;
  options.threads = 0;
  EXPECT_EQ(HttpServer::Start(options, [](auto) {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = {};
  options.host = "not-an-address";
  EXPECT_EQ(HttpServer::Start(options, [](auto) {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto first = StartEcho();
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->base_url(), absl::StrCat("http://127.0.0.1:", first->port()));
  options = {};
  options.port = first->port();
  auto second = HttpServer::Start(options, [](auto) {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(absl::StrCat(first->port())));
}

TEST_F(HttpServerExchangeTest, ARequestIsAnsweredLaterFromAnotherThread) {
  std::string body;
  long status = 0;
  std::thread client([&] {
    CurlClient curl;
    curl_slist* headers = curl_slist_append(nullptr, "X-Api-Key: k1");
    status = curl.Fetch(server->base_url() + "/v1/messages?beta=true", &body, "{\"a\":1}", headers);
    curl_slist_free_all(headers);
  });
  auto x = queue.Pop();
  ASSERT_NE(x, nullptr);
  const HttpRequest& request = x->request();
  EXPECT_EQ(request.method, "POST");
  EXPECT_EQ(request.target, "/v1/messages?beta=true");
  EXPECT_EQ(request.path, "/v1/messages");
  EXPECT_EQ(request.body, "{\"a\":1}");
  EXPECT_EQ(FindField(request.headers, "x-api-key"), "k1");
  EXPECT_THAT(request.headers, testing::Contains(testing::Pair("x-api-key", "k1")));
  EXPECT_THAT(request.peer, testing::StartsWith("127.0.0.1:"));
  EXPECT_EQ(server->stats().exchanges_open, 1u);
  x->Respond(201, {{"content-type", "application/json"}}, "{\"ok\":true}");
  client.join();
  EXPECT_EQ(status, 201);
  EXPECT_EQ(body, "{\"ok\":true}");
  EXPECT_FALSE(x->closed());
  x->Respond(500, {}, "ignored");  // after the answer: nothing happens
}

TEST(HttpServerTest, KeepAliveServesTwoRequestsOnOneConnection) {
  auto server = StartEcho();
  ASSERT_NE(server, nullptr);
  CurlClient curl;
  std::string body;
  EXPECT_EQ(curl.Fetch(server->base_url() + "/one", &body), 200);
  EXPECT_EQ(body, "path=/one");
  EXPECT_EQ(curl.Fetch(server->base_url() + "/two?x=1", &body), 200);
  EXPECT_EQ(body, "path=/two");
  HttpServerStats stats = server->stats();
  EXPECT_EQ(stats.connections_accepted, 1u);
  EXPECT_EQ(stats.requests, 2u);
}

TEST_F(HttpServerExchangeTest, PipelinedRequestsAreAnsweredInOrder) {
  RawClient client(server->port());
  auto a = Ask(client, Get("/a") + Get("/b"));
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->request().path, "/a");
  a->Respond(200, {}, "first");
  auto b = queue.Pop();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->request().path, "/b");
  b->Respond(200, {}, "second");
  const std::string& got = client.ReadUntil("second");
  ASSERT_THAT(got, HasSubstr("second"));
  EXPECT_LT(got.find("first"), got.find("second"));
  EXPECT_EQ(server->stats().connections_accepted, 1u);
}

TEST(HttpServerTest, ConnectionCloseFromTheClientClosesAfterTheAnswer) {
  auto server = StartEcho();
  ASSERT_NE(server, nullptr);
  RawClient client(server->port());
  ASSERT_TRUE(client.Send(Get("/bye", "Connection: close\r\n")));
  EXPECT_THAT(client.ReadToEnd(), HasSubstr("path=/bye"));
  EXPECT_THAT(client.ReadToEnd(), HasSubstr("Connection: close"));
  EXPECT_TRUE(client.eof());
}

// The client reads the first piece before the handler writes the second: an
// answer buffered until End would never get there.
TEST_F(HttpServerExchangeTest, AStreamedAnswerReachesTheClientPieceByPiece) {
  RawClient client(server->port());
  auto x = Ask(client, Get("/stream"));
  ASSERT_NE(x, nullptr);
  x->Begin(200, {{"content-type", "text/event-stream"}});
  x->Write("data: one\n\n");
  const std::string& head = client.ReadUntil("data: one");
  ASSERT_THAT(head, HasSubstr("data: one"));
  EXPECT_THAT(head, HasSubstr("Transfer-Encoding: chunked"));
  EXPECT_THAT(head, HasSubstr("content-type: text/event-stream"));
  EXPECT_THAT(head, Not(HasSubstr("data: two")));
  x->Write("data: two\n\n");
  x->End();
  const std::string& all = client.ReadUntil("\r\n0\r\n\r\n");
  EXPECT_THAT(all, HasSubstr("b\r\ndata: two\n\n\r\n0\r\n\r\n"));
  // Still alive: the next request on the same connection is served.
  client.Forget();
  auto next = Ask(client, Get("/next"));
  ASSERT_NE(next, nullptr);
  next->Respond(200, {}, "again");
  EXPECT_THAT(client.ReadUntil("again"), HasSubstr("again"));
}

TEST_F(HttpServerExchangeTest, AStreamWithALengthIsRawAndClippedToIt) {
  RawClient client(server->port());
  auto x = Ask(client, Get("/exact"));
  ASSERT_NE(x, nullptr);
  x->Begin(200, {}, 6);
  x->Write("abc");
  EXPECT_THAT(client.ReadUntil("abc"), HasSubstr("Content-Length: 6\r\n\r\nabc"));
  x->Write("defghi");  // three bytes over: dropped
  x->End();
  auto after = Ask(client, Get("/after"));
  ASSERT_NE(after, nullptr);
  after->Respond(200, {}, "XYZ");
  const std::string& got = client.ReadUntil("XYZ");
  EXPECT_THAT(got, HasSubstr("\r\n\r\nabcdefHTTP/1.1 200 OK"));
}

TEST_F(HttpServerExchangeTest, EndingAStreamShortOfItsLengthTruncatesTheResponse) {
  CurlClient curl;
  std::string body;
  long status = 0;
  std::thread client([&] { status = curl.Fetch(server->base_url() + "/short", &body); });
  auto x = queue.Pop();
  ASSERT_NE(x, nullptr);
  x->Begin(200, {}, 100);
  x->Write("only this");
  x->End();
  client.join();
  EXPECT_EQ(status, -1);  // libcurl: partial file
  EXPECT_EQ(body, "only this");
}

TEST_F(HttpServerExchangeTest, AbortClosesTheConnectionAtOnce) {
  RawClient client(server->port());
  auto x = Ask(client, Get("/abort"));
  ASSERT_NE(x, nullptr);
  Notification closed;
  x->OnClose([&] { closed.Notify(); });
  x->Abort();
  EXPECT_EQ(client.ReadToEnd(), "");
  EXPECT_TRUE(client.eof());
  EXPECT_TRUE(client.reset());
  EXPECT_TRUE(closed.WaitForNotificationWithTimeout(kPatience));
  EXPECT_TRUE(x->closed());
  x->Respond(200, {}, "too late");
}

TEST(HttpServerTest, AnExchangeDroppedUnansweredIsAborted) {
  auto server = StartServer([](std::shared_ptr<HttpExchange>) {});
  ASSERT_NE(server, nullptr);
  RawClient client(server->port());
  ASSERT_TRUE(client.Send(Get("/dropped")));
  EXPECT_EQ(client.ReadToEnd(), "");
  EXPECT_TRUE(client.eof());
}

TEST(HttpServerTest, ABodyOverTheLimitIsHandedOverFlaggedAndTheConnectionCloses) {
  ExchangeQueue queue;
  HttpServerOptions options;
  options.max_body_bytes = 1000;
  auto server = StartQueued(queue, options);
  ASSERT_NE(server, nullptr);
  for (bool chunked : {false, true}) {
    RawClient client(server->port());
    std::string body(5000, 'b');
    std::string request =
        chunked
            ? absl::StrCat("POST /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
                           absl::Hex(body.size()), "\r\n", body, "\r\n0\r\n\r\n")
            : absl::StrCat("POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n", body);
    ASSERT_TRUE(client.Send(request));
    auto x = queue.Pop();
    ASSERT_NE(x, nullptr);
    EXPECT_TRUE(x->request().body_too_large);
    EXPECT_EQ(x->request().body, "");
    EXPECT_EQ(x->request().path, "/big");
    x->Respond(413, {{"content-type", "application/json"}}, "{\"error\":\"too large\"}");
    const std::string& got = client.ReadToEnd();
    EXPECT_THAT(got, testing::StartsWith("HTTP/1.1 413"));
    EXPECT_THAT(got, HasSubstr("{\"error\":\"too large\"}"));
    EXPECT_TRUE(client.eof());
  }
  EXPECT_TRUE(StatsReach(*server, [](const auto& s) { return s.bodies_too_large == 2; }));
}

TEST(HttpServerTest, ExpectContinueGetsA100BeforeTheBodyIsSent) {
  auto server = StartServer([](std::shared_ptr<HttpExchange> x) {
    x->Respond(200, {}, absl::StrCat("got ", x->request().body.size()));
  });
  ASSERT_NE(server, nullptr);
  RawClient client(server->port());
  ASSERT_TRUE(client.Send(
      "POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"));
  EXPECT_THAT(client.ReadUntil("100 Continue\r\n\r\n"), HasSubstr("HTTP/1.1 100 Continue"));
  ASSERT_TRUE(client.Send("abc"));
  EXPECT_THAT(client.ReadUntil("got 3"), HasSubstr("got 3"));
}

TEST_F(HttpServerExchangeTest, ARequestThatIsNotHttpGetsA400AndTheConnectionCloses) {
  RawClient client(server->port());
  ASSERT_TRUE(client.Send("hello there, not http\r\n\r\n"));
  const std::string& got = client.ReadToEnd();
  EXPECT_THAT(got, testing::StartsWith("HTTP/1.1 400"));
  EXPECT_TRUE(client.eof());
  EXPECT_EQ(queue.size(), 0u);
  EXPECT_TRUE(StatsReach(*server, [](const auto& s) { return s.bad_requests == 1; }));
}

TEST_F(HttpServerExchangeTest, AClientThatGoesAwayIsNoticedWhileItsExchangeWaits) {
  RawClient client(server->port());
  auto x = Ask(client, Get("/wait"));
  ASSERT_NE(x, nullptr);
  Notification gone;
  std::atomic<int> calls{0};
  x->OnClose([&] {
    calls++;
    gone.Notify();
  });
  client.Close();
  ASSERT_TRUE(gone.WaitForNotificationWithTimeout(kPatience));
  EXPECT_TRUE(x->closed());
  x->Respond(200, {}, "nobody listens");
  x->End();
  // OnClose after the close runs at once (on the loop).
  Notification late;
  x->OnClose([&] { late.Notify(); });
  ASSERT_TRUE(late.WaitForNotificationWithTimeout(kPatience));
  EXPECT_EQ(calls.load(), 1);
  HttpServerStats stats = server->stats();  // counted before OnClose ran
  EXPECT_EQ(stats.exchanges_open, 0u);
  EXPECT_EQ(stats.exchanges_cut, 1u);
}

// 2,000 connections each wait at once for an answer; the loop holds them
// all, then answers each. Also what one waiting exchange costs the process.
TEST(HttpServerTest, TwoThousandExchangesWaitAtOnceAndAreAllAnswered) {
  constexpr int kConnections = 2000;
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < 2 * kConnections + 100) GTEST_SKIP() << "too few descriptors";
  ExchangeQueue queue;
  auto server = StartQueued(queue);
  ASSERT_NE(server, nullptr);
  {  // warm up: the loop's first allocations are not per exchange
    RawClient warm(server->port());
    warm.Send(Get("/warm"));
    queue.Pop()->Respond(200, {}, "w");
    warm.ReadUntil("w");
  }
  std::vector<std::unique_ptr<RawClient>> clients;
  clients.reserve(kConnections);
  std::vector<std::shared_ptr<HttpExchange>> exchanges;
  exchanges.reserve(kConnections);
  int64_t before = ResidentBytes();
  for (int i = 0; i < kConnections; ++i) {
    clients.push_back(std::make_unique<RawClient>(server->port()));
    ASSERT_TRUE(clients.back()->connected()) << i;
    ASSERT_TRUE(clients.back()->Send(Get(absl::StrCat("/n/", i), "x-api-key: k\r\n")));
  }
  ASSERT_TRUE(queue.AwaitSize(kConnections));
  int64_t after = ResidentBytes();
  EXPECT_EQ(server->stats().exchanges_open, static_cast<uint64_t>(kConnections));
  EXPECT_EQ(server->stats().connections_open, static_cast<uint64_t>(kConnections));
  double per_exchange = static_cast<double>(after - before) / kConnections;
  std::printf("resident memory per waiting exchange: %.0f bytes\n", per_exchange);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  EXPECT_LT(per_exchange, 16 * 1024);
#endif
  for (int i = 0; i < kConnections; ++i) exchanges.push_back(queue.Pop());
  for (auto& x : exchanges) x->Respond(200, {}, "answer:" + x->request().path + ".");
  for (int i = 0; i < kConnections; ++i) {
    std::string want = absl::StrCat("answer:/n/", i, ".");
    ASSERT_THAT(clients[i]->ReadUntil(want), HasSubstr(want));
  }
  EXPECT_TRUE(StatsReach(*server, [](const auto& s) { return s.exchanges_open == 0; }));
}

// Out of descriptors, the acceptor pauses between tries instead of spinning,
// and serves the waiting client once descriptors are free again.
TEST(HttpServerTest, AcceptingWithoutDescriptorsBacksOffAndRecovers) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // The sanitizers' runtimes need descriptors of their own (UBSan checks a
  // virtual call's type through a pipe): starved of them, they report
  // errors that are not the server's. The Release build runs this test.
  GTEST_SKIP() << "starves the process of descriptors, which the sanitizer runtime needs";
#endif
  auto server = StartEcho();
  ASSERT_NE(server, nullptr);
  RawClient probe;  // its descriptor taken while descriptors are free
  ASSERT_GE(probe.fd(), 0);
  const int port = server->port();
  rlimit saved{};
  getrlimit(RLIMIT_NOFILE, &saved);
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(probe.fd());  // no new descriptor for anyone
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &tight), 0);
  bool connected = probe.Connect(port);
  bool failed = StatsReach(*server, [](const auto& s) { return s.accept_errors >= 1; });
  absl::SleepFor(absl::Milliseconds(200));  // a spinning acceptor would count thousands
  uint64_t errors = server->stats().accept_errors;
  setrlimit(RLIMIT_NOFILE, &saved);
  ASSERT_TRUE(connected);
  EXPECT_TRUE(failed);
  EXPECT_LT(errors, 100u);
  ASSERT_TRUE(probe.Send(Get("/recovered")));
  EXPECT_THAT(probe.ReadUntil("path=/recovered"), HasSubstr("path=/recovered"));
}

TEST(HttpServerTest, SeveralLoopThreadsServeManyClients) {
  HttpServerOptions options;
  options.threads = 4;
  auto server = StartEcho(options);
  ASSERT_NE(server, nullptr);
  std::vector<std::thread> clients;
  std::atomic<int> answered{0};
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      RawClient client(server->port());
      for (int i = 0; i < 20; ++i) {
        std::string want = absl::StrCat("path=/c", c, "/", i);
        client.Send(Get(absl::StrCat("/c", c, "/", i)));
        if (absl::StrContains(client.ReadUntil(want), want)) answered++;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(answered.load(), 120);
  EXPECT_EQ(server->stats().connections_accepted, 6u);
}

TEST(HttpServerTest, PostAndAfterRunOnTheLoopAndCancelDestroysATaskUnrun) {
  auto server = StartEcho();
  ASSERT_NE(server, nullptr);
  Notification posted;
  std::thread::id loop_thread;
  server->Post([&] {
    loop_thread = std::this_thread::get_id();
    posted.Notify();
  });
  ASSERT_TRUE(posted.WaitForNotificationWithTimeout(kPatience));
  EXPECT_NE(loop_thread, std::this_thread::get_id());

  auto token = std::make_shared<int>(0);
  std::weak_ptr<int> watch = token;
  std::atomic<bool> cancelled_ran{false};
  HttpServer::TimerId cancelled =
      server->After(absl::Milliseconds(50), [token, &cancelled_ran] { cancelled_ran = true; });
  token.reset();
  server->Cancel(cancelled);
  EXPECT_TRUE(watch.expired());  // the task is gone, unrun
  server->Cancel(cancelled);     // unknown now: ignored
  server->Cancel(987654);

  Notification later;
  absl::Time start = absl::Now();
  server->After(absl::Milliseconds(100), [&] { later.Notify(); });
  ASSERT_TRUE(later.WaitForNotificationWithTimeout(kPatience));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
  EXPECT_FALSE(cancelled_ran.load());
}

// Stop: new connections are refused and idle ones closed at once; an exchange
// answered before the deadline is delivered whole; one that is not is cut at
// the deadline, with its OnClose.
TEST_F(HttpServerExchangeTest, StopLetsExchangesFinishUntilTheDeadlineThenCutsTheRest) {
  RawClient finishing(server->port()), stuck(server->port()), idle(server->port());
  auto x1 = Ask(finishing, Get("/finishing"));
  auto x2 = Ask(stuck, Get("/stuck"));
  ASSERT_NE(x1, nullptr);
  ASSERT_NE(x2, nullptr);
  Notification cut;
  x2->OnClose([&] { cut.Notify(); });
  constexpr absl::Duration kDeadline = absl::Milliseconds(600);
  absl::Time start = absl::Now();
  std::thread stopper([&] { server->Stop(kDeadline); });
  idle.ReadToEnd();  // closed by Stop: it has begun
  EXPECT_TRUE(idle.eof());
  x1->Begin(200, {}, std::nullopt);
  x1->Write("late but whole");
  x1->End();
  const std::string& got = finishing.ReadToEnd();
  EXPECT_THAT(got, HasSubstr("late but whole"));
  EXPECT_THAT(got, HasSubstr("Connection: close"));
  EXPECT_THAT(got, HasSubstr("\r\n0\r\n\r\n"));
  stopper.join();
  absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, kDeadline);
  EXPECT_LT(took, kDeadline + absl::Seconds(5));
  EXPECT_TRUE(cut.HasBeenNotified());
  EXPECT_TRUE(x2->closed());
  EXPECT_FALSE(x1->closed());
  EXPECT_EQ(stuck.ReadToEnd(), "");
  RawClient refused(server->port());
  EXPECT_FALSE(refused.connected());
  x2->Respond(200, {}, "after stop: ignored");
  server->Stop(absl::ZeroDuration());  // idempotent
  server->Post([] {});                 // after Stop: dropped
  EXPECT_EQ(server->After(absl::Milliseconds(1), [] {}), 0u);
}

TEST(HttpServerTest, AnIdleKeepAliveConnectionClosesAfterTheIdleTimeout) {
  HttpServerOptions options;
  options.idle_timeout = absl::Milliseconds(200);
  auto server = StartEcho(options);
  ASSERT_NE(server, nullptr);
  RawClient client(server->port());
  ASSERT_TRUE(client.Send(Get("/once")));
  ASSERT_THAT(client.ReadUntil("path=/once"), HasSubstr("path=/once"));
  absl::Time answered = absl::Now();
  client.ReadToEnd();
  EXPECT_TRUE(client.eof());
  EXPECT_GE(absl::Now() - answered, absl::Milliseconds(150));
  EXPECT_LT(absl::Now() - answered, absl::Seconds(10));
  EXPECT_TRUE(StatsReach(*server, [](const auto& s) { return s.timeouts == 1; }));
}

TEST(HttpServerTest, ARequestSlowerThanTheReadTimeoutIsDropped) {
  HttpServerOptions options;
  options.read_timeout = absl::Milliseconds(200);
  ExchangeQueue queue;
  auto server = StartQueued(queue, options);
  ASSERT_NE(server, nullptr);
  RawClient client(server->port());
  ASSERT_TRUE(client.Send("GET /slow HTTP/1.1\r\nHost: t\r\n"));  // never finished
  EXPECT_EQ(client.ReadToEnd(), "");
  EXPECT_TRUE(client.eof());
  EXPECT_EQ(queue.size(), 0u);
}

}  // namespace
}  // namespace sluice
