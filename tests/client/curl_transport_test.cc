// The client over the real libcurl transport against a loopback HTTP server
// (cpp-httplib): a reply end to end, per-request credentials, a body streamed
// as it arrives, a transfer cancelled in flight, and the service loop fed
// from other threads. Needs nothing from tools/, so it also runs under TSan.
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/client.h"

#if defined(__SANITIZE_THREAD__)
// The packaged cpp-httplib is a shared library built without TSan: how its
// listener hands a connection to a worker is invisible to TSan, which then
// reports the worker's first read of memory the listener wrote (both inside
// libcpp-httplib, through intercepted memcpy/memcmp). Those reports are about
// the test's server, not the client: ignore what that library calls.
extern "C" const char* __tsan_default_suppressions() {
  return "called_from_lib:libcpp-httplib.so\n";
}
#endif

namespace sluice {
namespace {

using ::testing::HasSubstr;

constexpr char kReply[] = R"({"id":"msg_1","type":"message","role":"assistant","model":"m",)"
                          R"("content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn",)"
                          R"("usage":{"input_tokens":3,"output_tokens":2}})";

// A latch a server thread waits on and a test thread opens (bounded: a
// test that never opens it fails instead of hanging).
class Gate {
 public:
  // Notifies under the lock: a waiter may destroy the gate as soon as it
  // wakes, so nothing of it may be touched after the lock is released.
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  bool Wait(std::chrono::seconds limit = std::chrono::seconds(20)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, limit, [this] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// An HTTP server on 127.0.0.1 on its own thread.
class LoopbackServer {
 public:
  explicit LoopbackServer(std::function<void(httplib::Server&)> routes) {
    routes(server_);
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::yield();
  }
  ~LoopbackServer() {
    server_.stop();
    thread_.join();
  }
  std::string base_url() const { return absl::StrCat("http://127.0.0.1:", port_); }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

std::unique_ptr<Client> MakeClient(const std::string& base_url) {
  ClientOptions options;
  options.provider = Provider::kAnthropic;
  options.base_url = base_url;
  options.api_key = "sk-client";
  options.retry.base = absl::Milliseconds(2);
  options.retry.cap = absl::Milliseconds(20);
  auto client = Client::Create(options, nullptr);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

TEST(CurlTransportTest, ARequestCarriesItsCredentialsAndPathAndGetsTheReply) {
  std::mutex mu;
  std::vector<std::string> keys, paths;
  LoopbackServer server([&](httplib::Server& s) {
    s.Post(R"(/v1/.*)", [&](const httplib::Request& req, httplib::Response& res) {
      {
        std::lock_guard<std::mutex> lock(mu);
        keys.push_back(req.get_header_value("x-api-key"));
        paths.push_back(req.path);
      }
      res.set_header("request-id", "req_loop");
      res.set_content(kReply, "application/json");
    });
  });
  auto client = MakeClient(server.base_url());
  const CallResult plain = client->Call(CallRequest::Simple("m", "hi", 4));
  ASSERT_TRUE(plain.status.ok()) << plain.status;
  EXPECT_EQ(plain.text, "hello");
  EXPECT_EQ(plain.request_id, "req_loop");
  EXPECT_EQ(plain.usage.output_tokens, 2u);
  CallRequest own = CallRequest::Simple("m", "hi", 4);
  own.api_key = "sk-caller";
  own.path = "/v1/messages/count_tokens";
  ASSERT_TRUE(client->Call(own).status.ok());
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(keys, (std::vector<std::string>{"sk-client", "sk-caller"}));
  EXPECT_EQ(paths, (std::vector<std::string>{"/v1/messages", "/v1/messages/count_tokens"}));
}

// The server sends the second event only after the client has passed the
// first one on: a client that buffered the body whole would never see it.
TEST(CurlTransportTest, AStreamedBodyIsPassedOnAsItArrives) {
  Gate first_seen;
  LoopbackServer server([&](httplib::Server& s) {
    s.Post("/v1/messages", [&](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider(
          "text/event-stream", [&](size_t offset, httplib::DataSink& sink) {
            const std::string first = "event: message_start\ndata: {}\n\n";
            sink.write(first.data(), first.size());
            if (offset == 0 && first_seen.Wait()) {
              const std::string second = "event: message_stop\ndata: {}\n\n";
              sink.write(second.data(), second.size());
            }
            sink.done();
            return true;
          });
    });
  });
  auto client = MakeClient(server.base_url());
  std::string body;
  int responses = 0;
  CallRequest request = CallRequest::Simple("m", "hi", 4);
  request.on_response = [&](int status, const Headers& headers) {
    ++responses;
    EXPECT_EQ(status, 200);
    EXPECT_THAT(*headers.Find("content-type"), HasSubstr("text/event-stream"));
  };
  request.on_chunk = [&](absl::string_view chunk) {
    body.append(chunk.data(), chunk.size());
    first_seen.Open();
  };
  const CallResult r = client->Call(request);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(responses, 1);
  EXPECT_EQ(body, "event: message_start\ndata: {}\n\nevent: message_stop\ndata: {}\n\n");
}

// The service loop on its own thread; requests submitted from four others,
// one of them cancelled while the server holds it.
TEST(CurlTransportTest, TheServiceLoopTakesSubmitsAndCancelsFromOtherThreads) {
  Gate held, release;
  LoopbackServer server([&](httplib::Server& s) {
    s.Post("/v1/messages", [&](const httplib::Request& req, httplib::Response& res) {
      if (req.has_header("x-hold")) {
        held.Open();
        release.Wait();
      }
      res.set_content(kReply, "application/json");
    });
  });
  auto client = MakeClient(server.base_url());
  std::thread loop([&] { client->Serve(); });

  std::atomic<int> succeeded{0};
  std::vector<std::thread> submitters;
  for (int t = 0; t < 4; ++t) {
    submitters.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        Gate done;
        client->Submit(CallRequest::Simple("m", "hi", 4), [&](CallResult r) {
          EXPECT_TRUE(r.status.ok()) << r.status;
          succeeded.fetch_add(1);
          done.Open();
        });
        EXPECT_TRUE(done.Wait());
      }
    });
  }
  Gate cancelled;
  absl::Status held_status;
  CallRequest hold = CallRequest::Simple("m", "hi", 4);
  hold.headers = {{"x-hold", "1"}};
  const Client::Handle h = client->Submit(hold, [&](CallResult r) {
    held_status = r.status;
    cancelled.Open();
  });
  ASSERT_TRUE(held.Wait());
  client->Cancel(h);
  ASSERT_TRUE(cancelled.Wait());
  EXPECT_EQ(held_status.code(), absl::StatusCode::kCancelled);
  release.Open();
  for (std::thread& t : submitters) t.join();
  EXPECT_EQ(succeeded.load(), 20);
  client->Stop();
  loop.join();
}

// What a proxy forwards: the method as given and the caller's bytes as they
// were, one after another on the same reused connection and handle (each
// request sets every option its method needs, whatever the last one set).
TEST(CurlTransportTest, TheMethodAndTheRawBodyGoOnTheWireAsGiven) {
  struct Seen {
    std::string method, path, body, content_type, content_length;
  };
  std::mutex mu;
  std::vector<Seen> seen;
  auto record = [&](const httplib::Request& req, httplib::Response& res) {
    {
      std::lock_guard<std::mutex> lock(mu);
      seen.push_back({req.method, req.path, req.body, req.get_header_value("content-type"),
                      req.get_header_value("content-length")});
    }
    res.set_content(kReply, "application/json");
  };
  LoopbackServer server([&](httplib::Server& s) {
    s.Post(R"(/v1/.*)", record);
    s.Get(R"(/v1/.*)", record);  // HEAD too, without the body
    s.Delete(R"(/v1/.*)", record);
  });
  auto client = MakeClient(server.base_url());
  // Spacing and key order a dump() would change: sent byte for byte.
  const std::string raw = "{ \"model\" : \"m\",\"max_tokens\":4,  \"messages\":[] }";
  CallRequest post = CallRequest::Simple("m", "hi", 4);
  post.raw_body = raw;
  ASSERT_TRUE(client->Call(post).status.ok());
  CallRequest get;
  get.method = "GET";
  get.path = "/v1/models/m";
  get.throttled = false;
  get.raw_body = "never sent";
  ASSERT_TRUE(client->Call(get).status.ok());
  CallRequest head = get;
  head.method = "HEAD";
  head.on_chunk = [](absl::string_view) {};  // a 2xx passed on, whatever its body
  int head_status = 0;
  head.on_response = [&](int status, const Headers&) { head_status = status; };
  ASSERT_TRUE(client->Call(head).status.ok());
  EXPECT_EQ(head_status, 200);
  CallRequest del = get;
  del.method = "DELETE";
  del.path = "/v1/files/f1";
  ASSERT_TRUE(client->Call(del).status.ok());
  // And a plain POST after them all: a POST again, its JSON dumped.
  ASSERT_TRUE(client->Call(CallRequest::Simple("m", "hi", 4)).status.ok());

  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_EQ(seen[0].method, "POST");
  EXPECT_EQ(seen[0].body, raw);
  EXPECT_EQ(seen[0].content_type, "application/json");
  EXPECT_EQ(seen[1].method, "GET");
  EXPECT_EQ(seen[1].path, "/v1/models/m");
  EXPECT_EQ(seen[1].body, "");
  EXPECT_EQ(seen[1].content_type, "");
  EXPECT_EQ(seen[2].method, "HEAD");
  EXPECT_EQ(seen[2].body, "");
  EXPECT_EQ(seen[3].method, "DELETE");
  EXPECT_EQ(seen[3].path, "/v1/files/f1");
  EXPECT_EQ(seen[3].body, "never sent");  // any method but GET and HEAD sends the body
  EXPECT_EQ(seen[4].method, "POST");
  EXPECT_EQ(seen[4].body, CallRequest::Simple("m", "hi", 4).body.dump());
  EXPECT_EQ(seen[4].content_length, absl::StrCat(seen[4].body.size()));
}

}  // namespace
}  // namespace sluice
