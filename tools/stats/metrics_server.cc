// `sluice metrics --listen`: the listen address, and the HTTP server that
// answers GET /metrics with a fresh snapshot in the Prometheus exposition
// (tools/stats/stats.h).
#include <arpa/inet.h>
#include <sys/socket.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "httplib.h"
#include "tools/stats/stats.h"

namespace sluice {
namespace {

bool IsIpv4(const std::string& host) {
  in_addr addr;
  return inet_pton(AF_INET, host.c_str(), &addr) == 1;
}

bool IsIpv6(const std::string& host) {
  in6_addr addr;
  return inet_pton(AF_INET6, host.c_str(), &addr) == 1;
}

}  // namespace

absl::StatusOr<ListenAddress> ParseListenAddress(absl::string_view text) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("--listen '", text, "': ", why));
  };
  const size_t colon = text.rfind(':');
  if (colon == absl::string_view::npos) return bad("expected HOST:PORT, e.g. 127.0.0.1:9464");
  ListenAddress address;
  absl::string_view host = text.substr(0, colon);
  const absl::string_view port = text.substr(colon + 1);
  const bool bracketed = absl::ConsumePrefix(&host, "[") && absl::ConsumeSuffix(&host, "]");
  address.host = std::string(host);
  if (bracketed ? !IsIpv6(address.host) : !(IsIpv4(address.host) || address.host == "localhost")) {
    return bad(
        "the host must be an IPv4 address, localhost, or an IPv6 address in brackets "
        "([::1])");
  }
  if (port.empty() || !absl::c_all_of(port, absl::ascii_isdigit) ||
      !absl::SimpleAtoi(port, &address.port) || address.port > 65535) {
    return bad("the port must be a number from 0 to 65535 (0 picks a free one)");
  }
  return address;
}

class MetricsServer::Impl {
 public:
  Impl(ListenAddress address, std::function<absl::StatusOr<std::string>()> scrape)
      : address_(std::move(address)), scrape_(std::move(scrape)) {}
  ~Impl() { Stop(); }

  absl::Status Start() {
    server_.new_task_queue = [] { return new httplib::ThreadPool(2); };
    // Not SO_REUSEPORT (httplib's default): a second server on the same port
    // would silently split the scrapes with this one.
    server_.set_socket_options([](socket_t sock) {
      const int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      absl::StatusOr<std::string> body = scrape_();
      if (!body.ok()) {
        res.status = 503;
        res.set_content(absl::StrCat(body.status().message(), "\n"), "text/plain; charset=utf-8");
        return;
      }
      res.set_content(*std::move(body), std::string(kPrometheusContentType));
    });
    if (address_.port == 0) {
      port_ = server_.bind_to_any_port(address_.host);
    } else {
      port_ = server_.bind_to_port(address_.host, address_.port) ? address_.port : -1;
    }
    if (port_ <= 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", HostPort(address_.port),
                                                 " (in use, or not an address of this host)"));
    }
    listener_ = std::thread([this] {
      server_.listen_after_bind();
      done_.store(true, std::memory_order_release);
    });
    // httplib's stop() does nothing until the accept loop runs (and 0.11 has
    // no wait_until_ready), so return once it does.
    while (!server_.is_running()) {
      if (done_.load(std::memory_order_acquire)) {
        return absl::UnavailableError(
            absl::StrCat("the server on ", HostPort(port_), " stopped at once"));
      }
      absl::SleepFor(absl::Milliseconds(1));
    }
    return absl::OkStatus();
  }

  void Stop() {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
    server_.stop();
    if (listener_.joinable()) listener_.join();
  }

  int port() const { return port_; }
  std::string HostPort(int port) const {
    return IsIpv6(address_.host) ? absl::StrCat("[", address_.host, "]:", port)
                                 : absl::StrCat(address_.host, ":", port);
  }

 private:
  const ListenAddress address_;
  const std::function<absl::StatusOr<std::string>()> scrape_;
  httplib::Server server_;
  std::thread listener_;
  std::atomic<bool> done_{false};
  int port_ = -1;
  absl::Mutex mu_;
  bool stopped_ = false;
};

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const ListenAddress& address, std::function<absl::StatusOr<std::string>()> scrape) {
  auto impl = std::make_unique<Impl>(address, std::move(scrape));
  if (absl::Status s = impl->Start(); !s.ok()) return s;
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl)));
}

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetricsServer::~MetricsServer() = default;
int MetricsServer::port() const { return impl_->port(); }
std::string MetricsServer::url() const {
  return absl::StrCat("http://", impl_->HostPort(impl_->port()), "/metrics");
}
void MetricsServer::Stop() { impl_->Stop(); }

}  // namespace sluice
