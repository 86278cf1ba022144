// The HTTP server: the listening socket, the loop threads, timers, and Stop.
// The connections themselves are in connection.cc (the only unit that
// compiles Beast); this one needs Asio alone.
#include "sluice/http_server.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <cerrno>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "src/server/connection.h"
#include "src/server/server_core.h"

namespace sluice {

std::optional<absl::string_view> FindField(const HttpFields& fields, absl::string_view name) {
  for (const auto& [field, value] : fields) {
    if (absl::EqualsIgnoreCase(field, name)) return absl::string_view(value);
  }
  return std::nullopt;
}

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using ErrorCode = boost::system::error_code;
using server_internal::ServerCore;

// How long the acceptor pauses when the process is out of descriptors (or
// memory) before it accepts again; accepting at once would spin.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(20);

absl::Status CheckOptions(const HttpServerOptions& options) {
  auto invalid = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("http server: ", what));
  };
  if (options.port < 0 || options.port > 65535) return invalid("port must be in 0..65535");
  if (options.threads < 1 || options.threads > 256) return invalid("threads must be in 1..256");
  if (options.max_body_bytes == 0) return invalid("max_body_bytes must be positive");
  if (options.max_header_bytes < 1024 || options.max_header_bytes > (1u << 30)) {
    return invalid("max_header_bytes must be in 1 KiB..1 GiB");
  }
  if (options.idle_timeout <= absl::ZeroDuration()) return invalid("idle_timeout must be positive");
  if (options.read_timeout <= absl::ZeroDuration()) return invalid("read_timeout must be positive");
  if (options.backlog < 1) return invalid("backlog must be positive");
  return absl::OkStatus();
}

bool OutOfResources(const ErrorCode& ec) {
  int v = ec.value();
  return ec.category() == boost::system::system_category() &&
         (v == EMFILE || v == ENFILE || v == ENOBUFS || v == ENOMEM);
}

class ServerImpl final : public HttpServer {
 public:
  explicit ServerImpl(std::shared_ptr<ServerCore> core)
      : core_(std::move(core)),
        strand_(asio::make_strand(core_->ioc)),
        acceptor_(strand_),
        backoff_(strand_),
        work_(core_->ioc.get_executor()) {}
  ~ServerImpl() override { Stop(absl::ZeroDuration()); }

  absl::Status Listen(const asio::ip::address& address);
  void Run();

  int port() const override { return port_; }
  std::string base_url() const override;
  void Post(std::function<void()> task) override {
    core_->PostTo(core_->ioc.get_executor(), std::move(task));
  }
  TimerId After(absl::Duration delay, std::function<void()> task) override;
  void Cancel(TimerId timer) override;
  HttpServerStats stats() const override {
    absl::MutexLock lock(&core_->mu);
    return core_->stats;
  }
  void Stop(absl::Duration deadline) override;

 private:
  struct Timer {
    std::unique_ptr<asio::steady_timer> timer;
    std::function<void()> task;
  };

  void Accept();
  void OnAccept(ErrorCode ec, tcp::socket socket);
  void OnTimer(TimerId id);
  void StopConnections(server_internal::StopStage stage);
  void DrainLoop();

  const std::shared_ptr<ServerCore> core_;
  asio::strand<asio::io_context::executor_type> strand_;  // the acceptor's
  tcp::acceptor acceptor_;
  asio::steady_timer backoff_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
  int port_ = 0;

  absl::Mutex timers_mu_;
  TimerId next_timer_ ABSL_GUARDED_BY(timers_mu_) = 1;
  bool timers_closed_ ABSL_GUARDED_BY(timers_mu_) = false;
  absl::flat_hash_map<TimerId, Timer> timers_ ABSL_GUARDED_BY(timers_mu_);

  absl::Mutex stop_mu_;  // one Stop at a time; later ones wait, then return
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;
};

absl::Status ServerImpl::Listen(const asio::ip::address& address) {
  tcp::endpoint endpoint(address, static_cast<unsigned short>(core_->options.port));
  ErrorCode ec;
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(core_->options.backlog, ec);
  if (!ec) port_ = acceptor_.local_endpoint(ec).port();
  if (ec) {
    return absl::UnavailableError(absl::StrCat("http server: cannot listen on ",
                                               core_->options.host, ":", core_->options.port, ": ",
                                               ec.message()));
  }
  return absl::OkStatus();
}

void ServerImpl::Run() {
  asio::post(strand_, [this] { Accept(); });
  for (int i = 0; i < core_->options.threads; ++i) {
    threads_.emplace_back([this] { core_->ioc.run(); });
  }
}

std::string ServerImpl::base_url() const {
  const std::string& host = core_->options.host;
  bool v6 = absl::StrContains(host, ':');
  return absl::StrCat("http://", v6 ? "[" : "", host, v6 ? "]" : "", ":", port_);
}

// Each connection gets a strand of its own.
void ServerImpl::Accept() {
  acceptor_.async_accept(asio::make_strand(core_->ioc), [this](ErrorCode ec, tcp::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void ServerImpl::OnAccept(ErrorCode ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
  if (ec) {
    {
      absl::MutexLock lock(&core_->mu);
      ++core_->stats.accept_errors;
    }
    if (!OutOfResources(ec)) return Accept();
    backoff_.expires_after(kAcceptBackoff);
    backoff_.async_wait([this](ErrorCode wait_ec) {
      if (!wait_ec && acceptor_.is_open()) Accept();
    });
    return;
  }
  {
    absl::MutexLock lock(&core_->mu);
    ++core_->stats.connections_accepted;
  }
  server_internal::StartConnection(core_, std::move(socket));
  Accept();
}

HttpServer::TimerId ServerImpl::After(absl::Duration delay, std::function<void()> task) {
  absl::MutexLock lock(&timers_mu_);
  if (timers_closed_) return 0;
  TimerId id = next_timer_++;
  Timer& entry = timers_[id];
  entry.timer = std::make_unique<asio::steady_timer>(core_->ioc);
  entry.task = std::move(task);
  entry.timer->expires_after(absl::ToChronoNanoseconds(std::max(delay, absl::ZeroDuration())));
  entry.timer->async_wait([this, id](ErrorCode ec) {
    if (!ec) OnTimer(id);
  });
  return id;
}

void ServerImpl::OnTimer(TimerId id) {
  Timer entry;
  {
    absl::MutexLock lock(&timers_mu_);
    auto it = timers_.find(id);
    if (it == timers_.end()) return;  // cancelled as it fired
    entry = std::move(it->second);
    timers_.erase(it);
  }
  entry.task();
}

void ServerImpl::Cancel(TimerId id) {
  Timer entry;  // destroyed, task unrun, outside the lock
  absl::MutexLock lock(&timers_mu_);
  auto it = timers_.find(id);
  if (it == timers_.end()) return;
  entry = std::move(it->second);
  timers_.erase(it);
  entry.timer->cancel();
}

void ServerImpl::StopConnections(server_internal::StopStage stage) {
  std::vector<std::shared_ptr<server_internal::Connection>> open;
  {
    absl::MutexLock lock(&core_->mu);
    for (const auto& [key, weak] : core_->connections) {
      if (auto connection = weak.lock()) open.push_back(std::move(connection));
    }
  }
  for (const auto& connection : open) server_internal::StopConnection(connection, stage);
}

void ServerImpl::Stop(absl::Duration deadline) {
  absl::MutexLock stop_lock(&stop_mu_);
  if (stopped_) return;
  stopped_ = true;
  const absl::Time until = absl::Now() + deadline;
  core_->stopping.store(true);
  asio::post(strand_, [this] {
    ErrorCode ec;
    acceptor_.close(ec);
    backoff_.cancel();
  });
  StopConnections(server_internal::StopStage::kIdle);
  auto no_exchanges = [](HttpServerStats* s) { return s->exchanges_open == 0; };
  core_->mu.LockWhenWithDeadline(absl::Condition(+no_exchanges, &core_->stats), until);
  core_->mu.Unlock();
  StopConnections(server_internal::StopStage::kAll);
  // A connection accepted as Stop began closes itself when it starts.
  auto no_connections = [](HttpServerStats* s) { return s->connections_open == 0; };
  core_->mu.LockWhen(absl::Condition(+no_connections, &core_->stats));
  core_->mu.Unlock();
  DrainLoop();
}

// Closes the loop to new work, ends its threads, and runs what was already
// queued (completions of cancelled operations, posted tasks), so that no
// handler holding a connection is left in the io_context.
void ServerImpl::DrainLoop() {
  {
    absl::MutexLock lock(&core_->post_mu);
    core_->closed_to_posts = true;
  }
  work_.reset();
  core_->ioc.stop();
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  absl::flat_hash_map<TimerId, Timer> timers;
  {
    absl::MutexLock lock(&timers_mu_);
    timers_closed_ = true;
    timers.swap(timers_);
  }
  timers.clear();
  core_->ioc.restart();
  core_->ioc.poll();
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options,
                                                              HttpHandler handler) {
  if (absl::Status status = CheckOptions(options); !status.ok()) return status;
  if (!handler) return absl::InvalidArgumentError("http server: no handler");
  ErrorCode ec;
  asio::ip::address address =
      asio::ip::make_address(options.host == "localhost" ? "127.0.0.1" : options.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("http server: host '", options.host, "' is not an IP address"));
  }
  auto server = std::make_unique<ServerImpl>(
      std::make_shared<ServerCore>(std::move(options), std::move(handler)));
  if (absl::Status status = server->Listen(address); !status.ok()) return status;
  server->Run();
  return server;
}

}  // namespace sluice
