// The libcurl transport: one multi handle driven by curl_multi_socket_action
// and epoll. libcurl says which sockets to watch and when its timer fires,
// and Poll wakes for exactly those, so a response costs the same with 16
// transfers in flight as with 1,000 (curl_multi_poll would scan every socket
// on every wakeup). An eventfd in the same epoll set makes Wake work from
// any thread.
#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "sluice/clock.h"
#include "sluice/transport.h"

namespace sluice {
namespace {

// libcurl's global state is set up once for the process, before any thread
// could race to do it.
bool InitCurlOnce() {
  static const bool done = [] { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }();
  return done;
}

// Sets the request's method and body on a handle that may have sent any
// other method before: every option involved is set each time.
void SetMethod(CURL* easy, const TransportRequest& request) {
  const std::string method = absl::AsciiStrToUpper(request.method);
  const bool head = method == "HEAD";
  if (method == "GET" || head) {
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);  // also clears NOBODY
    if (head) curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(easy, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request.body.c_str());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(request.body.size()));
  }
  // The method as given (DELETE, PUT, PATCH, ...) on a POST's body; none for
  // the methods libcurl names itself.
  const bool own = method.empty() || method == "POST" || method == "GET" || head;
  curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, own ? nullptr : request.method.c_str());
}

class CurlTransport final : public Transport {
 public:
  CurlTransport(const TransportOptions& options, int epoll_fd, int wake_fd);
  ~CurlTransport() override;

  void Start(TransportRequest request, TransportSink* sink) override;
  void Cancel(uint64_t id) override;
  void Poll(absl::Duration timeout) override;
  void Wake() override;

 private:
  // One request in flight.
  struct Transfer {
    TransportRequest request;
    TransportSink* sink = nullptr;
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    Headers headers_in;
    bool responded = false;  // sink->OnResponse was called
    char error[CURL_ERROR_SIZE] = {0};
    ~Transfer() { curl_slist_free_all(headers); }
  };

  static size_t OnBody(char* data, size_t size, size_t n, void* user);
  static size_t OnHeader(char* data, size_t size, size_t n, void* user);
  static int OnSocket(CURL* easy, curl_socket_t fd, int what, void* self, void* socket_data);
  static int OnTimer(CURLM* multi, long timeout_ms, void* self);
  static void Respond(Transfer& t);
  // Detaches the transfer's handle from the multi handle for reuse and
  // takes the transfer out of the table.
  std::unique_ptr<Transfer> Detach(uint64_t id);
  void FinishDone();

  const TransportOptions options_;
  const int epoll_fd_;
  const int wake_fd_;  // an eventfd: readable after Wake
  CURLM* const multi_;
  int64_t curl_deadline_ns_ = -1;  // when libcurl's timer expires (-1: none), monotonic
  std::vector<CURL*> idle_easy_;   // kept for connection reuse
  absl::flat_hash_map<uint64_t, std::unique_ptr<Transfer>> transfers_;
};

CurlTransport::CurlTransport(const TransportOptions& options, int epoll_fd, int wake_fd)
    : options_(options), epoll_fd_(epoll_fd), wake_fd_(wake_fd), multi_(curl_multi_init()) {
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &CurlTransport::OnSocket);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &CurlTransport::OnTimer);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                    static_cast<long>(std::max(0, options_.max_connections)));
}

CurlTransport::~CurlTransport() {
  for (auto& [id, t] : transfers_) {
    curl_multi_remove_handle(multi_, t->easy);
    curl_easy_cleanup(t->easy);
  }
  transfers_.clear();
  for (CURL* easy : idle_easy_) curl_easy_cleanup(easy);
  curl_multi_cleanup(multi_);  // may still call OnSocket
  close(epoll_fd_);
  close(wake_fd_);
}

size_t CurlTransport::OnBody(char* data, size_t size, size_t n, void* user) {
  Transfer& t = *static_cast<Transfer*>(user);
  Respond(t);
  return t.sink->OnData(absl::string_view(data, size * n)) ? size * n : 0;
}

size_t CurlTransport::OnHeader(char* data, size_t size, size_t n, void* user) {
  static_cast<Transfer*>(user)->headers_in.AddLine(absl::string_view(data, size * n));
  return size * n;
}

void CurlTransport::Respond(Transfer& t) {
  if (t.responded) return;
  t.responded = true;
  long status = 0;
  curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &status);
  t.sink->OnResponse(static_cast<int>(status), t.headers_in);
}

int CurlTransport::OnSocket(CURL* /*easy*/, curl_socket_t fd, int what, void* self,
                            void* /*socket_data*/) {
  const int epoll_fd = static_cast<CurlTransport*>(self)->epoll_fd_;
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);  // ENOENT if already closed: fine
    return 0;
  }
  epoll_event event{};
  event.data.fd = fd;
  if (what & CURL_POLL_IN) event.events |= EPOLLIN;
  if (what & CURL_POLL_OUT) event.events |= EPOLLOUT;
  // A socket is new to epoll or already watched; libcurl does not say which
  // reliably across reconnects on a reused descriptor number, so try both.
  if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &event) != 0 && errno == ENOENT) {
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event);
  }
  return 0;
}

int CurlTransport::OnTimer(CURLM* /*multi*/, long timeout_ms, void* self) {
  static_cast<CurlTransport*>(self)->curl_deadline_ns_ =
      timeout_ms < 0 ? -1 : Clock::MonotonicNanos() + int64_t{timeout_ms} * 1'000'000;
  return 0;
}

void CurlTransport::Start(TransportRequest request, TransportSink* sink) {
  CURL* easy;
  if (idle_easy_.empty()) {
    // Options that never change are set once per handle; the handle, and
    // with it the multi handle's connections, is reused for later requests.
    easy = curl_easy_init();
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &CurlTransport::OnBody);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &CurlTransport::OnHeader);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(absl::ToInt64Milliseconds(options_.connect_timeout)));
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                     static_cast<long>(absl::ToInt64Milliseconds(options_.request_timeout)));
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "sluice/0.1");
  } else {
    easy = idle_easy_.back();
    idle_easy_.pop_back();
  }
  auto t = std::make_unique<Transfer>();
  t->request = std::move(request);
  t->sink = sink;
  t->easy = easy;
  // The credentials live in this one header list and nowhere else.
  for (const std::string& line : t->request.headers) {
    t->headers = curl_slist_append(t->headers, line.c_str());
  }
  curl_easy_setopt(easy, CURLOPT_URL, t->request.url.c_str());
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t->headers);
  SetMethod(easy, t->request);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, t.get());
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, t.get());
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->error);
  curl_easy_setopt(easy, CURLOPT_PRIVATE, t.get());
  const uint64_t id = t->request.id;
  transfers_[id] = std::move(t);
  curl_multi_add_handle(multi_, easy);
}

std::unique_ptr<CurlTransport::Transfer> CurlTransport::Detach(uint64_t id) {
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return nullptr;
  std::unique_ptr<Transfer> t = std::move(it->second);
  transfers_.erase(it);
  curl_multi_remove_handle(multi_, t->easy);
  idle_easy_.push_back(t->easy);
  return t;
}

void CurlTransport::Cancel(uint64_t id) { Detach(id); }

void CurlTransport::Wake() {
  const uint64_t one = 1;
  while (write(wake_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

// Hands finished transfers to their sinks.
void CurlTransport::FinishDone() {
  int queued = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
    if (msg->msg != CURLMSG_DONE) continue;
    Transfer* done = nullptr;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &done);
    const CURLcode code = msg->data.result;
    std::unique_ptr<Transfer> t = Detach(done->request.id);
    absl::Status outcome;
    if (code == CURLE_OK) {
      Respond(*t);
    } else {
      outcome = absl::UnavailableError(
          absl::StrCat(curl_easy_strerror(code), t->error[0] ? ": " : "", t->error));
    }
    t->sink->OnDone(std::move(outcome));
  }
}

void CurlTransport::Poll(absl::Duration timeout) {
  int64_t wait_ns = absl::ToInt64Nanoseconds(std::max(timeout, absl::ZeroDuration()));
  if (curl_deadline_ns_ >= 0) {
    wait_ns = std::min(wait_ns, curl_deadline_ns_ - Clock::MonotonicNanos());
  }
  const int timeout_ms =
      static_cast<int>(std::clamp<int64_t>((wait_ns + 999'999) / 1'000'000, 0, 60'000));
  epoll_event events[64];
  const int n = epoll_wait(epoll_fd_, events, 64, timeout_ms);
  int running = 0;
  for (int i = 0; i < n; ++i) {
    if (events[i].data.fd == wake_fd_) {
      uint64_t count;
      while (read(wake_fd_, &count, sizeof(count)) < 0 && errno == EINTR) {
      }
      continue;
    }
    int flags = 0;
    if (events[i].events & EPOLLIN) flags |= CURL_CSELECT_IN;
    if (events[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
    if (events[i].events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
    curl_multi_socket_action(multi_, events[i].data.fd, flags, &running);
  }
  // libcurl's timer (a transfer just added, connect and request timeouts).
  if (curl_deadline_ns_ >= 0 && curl_deadline_ns_ <= Clock::MonotonicNanos()) {
    curl_deadline_ns_ = -1;
    curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
  }
  FinishDone();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Transport>> NewCurlTransport(const TransportOptions& options) {
  if (!InitCurlOnce()) return absl::InternalError("curl_global_init failed");
  const int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0)
    return absl::InternalError(absl::StrCat("epoll_create1: ", std::strerror(errno)));
  const int wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd < 0) {
    close(epoll_fd);
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = wake_fd;
  if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &event) != 0) {
    const int err = errno;
    close(epoll_fd);
    close(wake_fd);
    return absl::InternalError(absl::StrCat("epoll_ctl: ", std::strerror(err)));
  }
  return std::make_unique<CurlTransport>(options, epoll_fd, wake_fd);
}

}  // namespace sluice
