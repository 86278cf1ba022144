// proxy_latency_bench: what sluice's local proxy adds to a request's latency.
//
// An open-loop generator sends POST /v1/messages on a fixed schedule (1,000
// requests a second by default), whatever the answers do, over keep-alive
// connections from a pool that grows whenever every connection is busy, so a
// send never waits for a free one. Each request is timed from its scheduled
// send time to the last byte of its answer: a stall anywhere (the generator's
// own loop included) counts against the requests it delays, instead of
// delaying the schedule (no coordinated omission, which a closed-loop tool
// such as wrk has).
//
// Two targets, both in front of the simulated provider with no limits and
// no latency: the provider itself, and sluice::Proxy with a limits file that
// limits nothing (every request takes the throttled path, its queue and its
// reservation, and none waits). They take turns, a second each, so that
// whatever else the machine does weighs on both alike. Prints p50, p99,
// p99.9 and max of both and their differences; the goal is p50 <= 0.5 ms
// and p99 <= 2 ms over direct.
//
//   ./build/bench/proxy_latency_bench [--rate=1000] [--seconds=5]
//
// Everything runs in this process, each on threads of its own: the
// generator, the provider's loop, the proxy's server loop and its clients'.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "boost/asio/connect.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/steady_timer.hpp"
#include "boost/beast/core/flat_buffer.hpp"
#include "boost/beast/http.hpp"
#include "sluice/limits.h"
#include "sluice/proxy.h"
#include "sluice/store.h"
#include "tools/fake_provider/fake_provider.h"
#include "tools/lab/lab.h"

ABSL_FLAG(double, rate, 1000, "requests sent per second, on a fixed schedule");
ABSL_FLAG(int, seconds, 5,
          "seconds measured for each target, in turns of one second (after half a second of "
          "warm-up)");

namespace sluice {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

constexpr char kBody[] =
    R"({"model":"claude-sonnet-4","max_tokens":8,"messages":[{"role":"user","content":"hi"}]})";
constexpr double kWarmUpSeconds = 0.5;

// What a generator measured, over all its turns.
struct Run {
  std::vector<int64_t> latency_ns;  // of the measured requests, sorted
  int64_t errors = 0;               // not answered 200, or a connection failed
  int connections = 0;              // opened
};

// One keep-alive connection of the pool, with what it reads into.
struct Connection {
  explicit Connection(asio::io_context& io) : socket(io) {}
  tcp::socket socket;
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  bool open = false;
};

// Sends a request to 127.0.0.1:port on a fixed schedule, on the calling
// thread, and times each answer.
class OpenLoop {
 public:
  explicit OpenLoop(int port)
      : endpoint_(asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)), timer_(io_) {
    request_.method(http::verb::post);
    request_.target("/v1/messages");
    request_.set(http::field::host, "127.0.0.1");
    request_.set(http::field::content_type, "application/json");
    request_.set("x-api-key", "bench-key");
    request_.set("anthropic-version", "2023-06-01");
    request_.body() = kBody;
    request_.prepare_payload();
  }

  // Sends `count` requests, the i-th at start + i / rate, and returns once
  // all are answered; the first `skip` are not measured.
  void Send(double rate, int64_t count, int64_t skip) {
    period_ = std::chrono::nanoseconds(static_cast<int64_t>(1e9 / rate));
    count_ = count;
    skip_ = skip;
    start_ = SteadyClock::now() + std::chrono::milliseconds(10);
    Schedule(0);
    io_.restart();
    io_.run();
  }

  // What every Send measured, latencies sorted.
  Run Result() {
    std::sort(run_.latency_ns.begin(), run_.latency_ns.end());
    return run_;
  }

 private:
  Connection* Open() {
    pool_.push_back(std::make_unique<Connection>(io_));
    return pool_.back().get();
  }

  void Schedule(int64_t i) {
    if (i == count_) return;
    const SteadyClock::time_point at = start_ + i * period_;
    timer_.expires_at(at);
    timer_.async_wait([this, i, at](beast::error_code) {
      SendOne(i, at);
      Schedule(i + 1);
    });
  }

  // Sends request i on an idle connection, or on a new one when none is.
  void SendOne(int64_t i, SteadyClock::time_point scheduled) {
    Connection* c;
    if (idle_.empty()) {
      c = Open();
    } else {
      c = idle_.back();
      idle_.pop_back();
    }
    if (c->open) return Write(c, i, scheduled);
    c->socket.async_connect(endpoint_, [this, c, i, scheduled](beast::error_code ec) {
      if (ec) return Failed(c);
      c->socket.set_option(tcp::no_delay(true));
      c->open = true;
      run_.connections++;
      Write(c, i, scheduled);
    });
  }

  void Write(Connection* c, int64_t i, SteadyClock::time_point scheduled) {
    http::async_write(c->socket, request_, [this, c, i, scheduled](beast::error_code ec, size_t) {
      if (ec) return Failed(c);
      c->response = {};
      http::async_read(
          c->socket, c->buffer, c->response, [this, c, i, scheduled](beast::error_code ec, size_t) {
            if (ec) return Failed(c);
            const SteadyClock::time_point done = SteadyClock::now();
            if (c->response.result_int() != 200) run_.errors++;
            if (i >= skip_) {
              run_.latency_ns.push_back(std::chrono::nanoseconds(done - scheduled).count());
            }
            idle_.push_back(c);
          });
    });
  }

  // The connection is dropped from the pool's idle list for good.
  void Failed(Connection* c) {
    run_.errors++;
    beast::error_code ignored;
    c->socket.close(ignored);
  }

  asio::io_context io_{1};
  const tcp::endpoint endpoint_;
  asio::steady_timer timer_;
  SteadyClock::duration period_{};
  int64_t count_ = 0;
  int64_t skip_ = 0;
  http::request<http::string_body> request_;
  SteadyClock::time_point start_;
  std::vector<std::unique_ptr<Connection>> pool_;
  std::vector<Connection*> idle_;
  Run run_;
};

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

struct Row {
  int64_t p50, p99, p999, max;
};

Row Summarize(const Run& run) {
  const auto& v = run.latency_ns;
  return {lab::Percentile(v, 0.50), lab::Percentile(v, 0.99), lab::Percentile(v, 0.999),
          v.empty() ? 0 : v.back()};
}

void PrintRow(const char* name, const Run& run, const Row& row) {
  absl::PrintF("%-14s %9d %7d %6d %8.3f %8.3f %8.3f %8.3f\n", name, run.latency_ns.size(),
               run.errors, run.connections, Ms(row.p50), Ms(row.p99), Ms(row.p999), Ms(row.max));
}

[[noreturn]] void Die(const absl::Status& status) {
  absl::FPrintF(stderr, "proxy_latency_bench: %s\n", status.ToString());
  std::exit(1);
}

int Main() {
  const double rate = absl::GetFlag(FLAGS_rate);
  const int seconds = absl::GetFlag(FLAGS_seconds);
  if (!(rate > 0 && seconds > 0)) Die(absl::InvalidArgumentError("--rate and --seconds > 0"));

  FakeProviderOptions provider_options;
  provider_options.unlimited = true;
  absl::StatusOr<std::unique_ptr<FakeProvider>> provider = FakeProvider::Start(provider_options);
  if (!provider.ok()) Die(provider.status());
  std::unique_ptr<Store> store = NewLocalStore();
  absl::StatusOr<LimitsConfig> config = ParseLimitsConfig("", "no limits");
  if (!config.ok()) Die(config.status());
  ProxyOptions proxy_options;
  proxy_options.port = 0;
  proxy_options.anthropic_url = (*provider)->base_url();
  proxy_options.openai_url = (*provider)->base_url();
  absl::StatusOr<std::unique_ptr<Proxy>> proxy = Proxy::Start(proxy_options, *config, store.get());
  if (!proxy.ok()) Die(proxy.status());

  OpenLoop to_provider((*provider)->port()), to_proxy((*proxy)->port());
  const auto warm_up = static_cast<int64_t>(rate * kWarmUpSeconds);
  for (OpenLoop* target : {&to_provider, &to_proxy}) target->Send(rate, warm_up, warm_up);
  for (int turn = 0; turn < seconds; ++turn) {
    for (OpenLoop* target : {&to_provider, &to_proxy}) {
      target->Send(rate, static_cast<int64_t>(rate), 0);
    }
  }
  const Run direct = to_provider.Result(), proxied = to_proxy.Result();
  (*proxy)->Shutdown(absl::Seconds(5));

  absl::PrintF(
      "POST /v1/messages at %.0f/s on a fixed schedule for %d s each (in turns of 1 s), after "
      "%.1f s of warm-up;\nlatency from the scheduled send to the last byte of the answer, in "
      "ms\n\n",
      rate, seconds, kWarmUpSeconds);
  absl::PrintF("%-14s %9s %7s %6s %8s %8s %8s %8s\n", "", "requests", "errors", "conns", "p50",
               "p99", "p99.9", "max");
  const Row d = Summarize(direct), p = Summarize(proxied);
  PrintRow("direct", direct, d);
  PrintRow("through proxy", proxied, p);
  absl::PrintF("%-14s %24s %8.3f %8.3f %8.3f %8.3f\n", "added", "", Ms(p.p50 - d.p50),
               Ms(p.p99 - d.p99), Ms(p.p999 - d.p999), Ms(p.max - d.max));
  double load[1] = {0};
  if (getloadavg(load, 1) == 1) {
    absl::PrintF("\nthe machine's load average: %.1f on %d CPUs\n", load[0],
                 std::thread::hardware_concurrency());
  }
  const bool met = p.p50 - d.p50 <= 500'000 && p.p99 - d.p99 <= 2'000'000;
  absl::PrintF("goal: p50 <= 0.5 ms and p99 <= 2 ms over direct: %s\n", met ? "met" : "MISSED");
  return direct.errors + proxied.errors == 0 ? 0 : 1;
}

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return sluice::Main();
}
