// One connection of the HTTP server, on Beast. A connection moves through
//
//   idle (waiting, under idle_timeout, for a request's first bytes)
//   -> reading (headers, then body, under read_timeout)
//   -> answering (the exchange is with the handler; no timeout; the socket is
//      watched so that a client that goes away is noticed at once)
//   -> idle again (keep-alive), or lingering (the answer sent, our side shut,
//      the client's last bytes drained for a moment so that it reads the
//      answer rather than a reset), or closed.
//
// Everything here runs on the connection's strand. HttpExchange calls from
// other threads are posted there, so they are applied in the order they were
// made; an exchange is matched by its sequence number, so a late call from an
// exchange that is finished is ignored.
#include "src/server/connection.h"

#include <algorithm>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace sluice::server_internal {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using ErrorCode = boost::system::error_code;

// Bytes asked of the socket at a time while a connection is idle, watched or
// lingering: small, so that a waiting connection costs little.
constexpr size_t kReadChunk = 512;
// How long a connection closing after its answer drains the client's bytes.
constexpr absl::Duration kLinger = absl::Seconds(2);
constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";

absl::string_view View(beast::string_view s) { return {s.data(), s.size()}; }

std::chrono::nanoseconds ToChrono(absl::Duration d) { return absl::ToChronoNanoseconds(d); }

std::string PeerName(const tcp::socket& socket) {
  ErrorCode ec;
  tcp::endpoint peer = socket.remote_endpoint(ec);
  if (ec) return "";
  std::string address = peer.address().to_string(ec);
  if (peer.address().is_v6()) address = absl::StrCat("[", address, "]");
  return absl::StrCat(address, ":", peer.port());
}

// Fields the connection writes itself, and fields that could split the
// header (a CR or LF in a name or value) are not passed through.
bool PassField(const std::pair<std::string, std::string>& field) {
  for (absl::string_view own : {"content-length", "transfer-encoding", "connection"}) {
    if (absl::EqualsIgnoreCase(field.first, own)) return false;
  }
  auto splits = [](const std::string& s) { return s.find_first_of("\r\n") != std::string::npos; };
  return !field.first.empty() && !splits(field.first) && !splits(field.second);
}

bool StatusHasBody(int status) { return !(status < 200 || status == 204 || status == 304); }

}  // namespace

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<ServerCore> core, tcp::socket socket)
      : core_(std::move(core)), executor_(socket.get_executor()), stream_(std::move(socket)) {}

  // Runs `fn` on the strand (unless the server has stopped taking work).
  template <class Fn>
  void Post(Fn fn) {
    core_->PostTo(executor_, [self = shared_from_this(), fn = std::move(fn)]() mutable { fn(); });
  }

  // True once exchange `seq` was cut: its connection closed before its
  // answer was complete. Any thread.
  bool Cut(uint64_t seq) const { return cut_seq_.load(std::memory_order_acquire) == seq; }

  void Start();
  void Stop(StopStage stage);

  // The exchange's calls, on the strand; `seq` names the exchange.
  void Respond(uint64_t seq, int status, const HttpFields& headers, std::string body);
  void Begin(uint64_t seq, int status, const HttpFields& headers, std::optional<uint64_t> length);
  void Write(uint64_t seq, std::string piece);
  void End(uint64_t seq);
  void Abort(uint64_t seq);
  void SetOnClose(uint64_t seq, std::function<void()> callback);

 private:
  enum class Phase { kIdle, kReading, kAnswering, kLingering, kClosed };
  // The current exchange's answer: none, waiting for the handler, header
  // sent (streaming), or complete on our side (bytes may still be queued).
  enum class Answer { kNone, kPending, kStreaming, kComplete };

  void ReadNext();
  void ReadHeader();
  void OnHeader(ErrorCode ec);
  void ReadBody();
  void OnReadError(ErrorCode ec);
  void Dispatch(bool body_too_large);
  HttpRequest TakeRequest(bool body_too_large);
  void Watch();
  void OnWatch(uint64_t generation, ErrorCode ec);
  void StopWatch();

  bool Answering(uint64_t seq, Answer expected) const {
    return phase_ == Phase::kAnswering && seq == seq_ && answer_ == expected;
  }
  std::string Header(int status, const HttpFields& headers, std::optional<uint64_t> length);
  void Enqueue(std::string bytes);
  void Flush();
  void FinishAnswer();
  void Linger();
  void SendBadRequest();
  void Close(bool reset = false);
  void Count(uint64_t HttpServerStats::*counter) {
    absl::MutexLock lock(&core_->mu);
    ++(core_->stats.*counter);
  }

  const std::shared_ptr<ServerCore> core_;
  const tcp::socket::executor_type executor_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string peer_;
  Phase phase_ = Phase::kIdle;

  // The current exchange.
  uint64_t seq_ = 0;
  Answer answer_ = Answer::kNone;
  std::atomic<uint64_t> cut_seq_{0};
  std::function<void()> on_close_;
  unsigned version_ = 11;
  bool keep_alive_ = false;
  bool head_only_ = false;  // a HEAD request: no body bytes go out
  bool close_after_ = false;
  bool chunked_ = false;
  std::optional<uint64_t> remaining_;  // streamed bytes still owed (content_length)

  // Writes: `pending_` waits while `in_flight_` is being written.
  std::vector<std::string> pending_;
  std::vector<std::string> in_flight_;
  std::vector<asio::const_buffer> buffers_;
  bool writing_ = false;

  bool watching_ = false;
  uint64_t watch_generation_ = 0;
};

// HttpExchange over a connection: a handle that posts each call to it.
class Exchange final : public HttpExchange {
 public:
  Exchange(std::shared_ptr<Connection> connection, uint64_t seq, HttpRequest request)
      : connection_(std::move(connection)), seq_(seq), request_(std::move(request)) {}
  // An exchange dropped unanswered is aborted; after an answer this is a no-op.
  ~Exchange() override { Abort(); }

  const HttpRequest& request() const override { return request_; }

  void Respond(int status, HttpFields headers, std::string body) override {
    connection_->Post(
        [c = connection_.get(), seq = seq_, status, headers = std::move(headers),
         body = std::move(body)]() mutable { c->Respond(seq, status, headers, std::move(body)); });
  }
  void Begin(int status, HttpFields headers, std::optional<uint64_t> content_length) override {
    connection_->Post([c = connection_.get(), seq = seq_, status, headers = std::move(headers),
                       content_length] { c->Begin(seq, status, headers, content_length); });
  }
  void Write(std::string piece) override {
    connection_->Post([c = connection_.get(), seq = seq_, piece = std::move(piece)]() mutable {
      c->Write(seq, std::move(piece));
    });
  }
  void End() override {
    connection_->Post([c = connection_.get(), seq = seq_] { c->End(seq); });
  }
  void Abort() override {
    connection_->Post([c = connection_.get(), seq = seq_] { c->Abort(seq); });
  }
  void OnClose(std::function<void()> callback) override {
    connection_->Post(
        [c = connection_.get(), seq = seq_, callback = std::move(callback)]() mutable {
          c->SetOnClose(seq, std::move(callback));
        });
  }
  bool closed() const override { return connection_->Cut(seq_); }

 private:
  const std::shared_ptr<Connection> connection_;
  const uint64_t seq_;
  const HttpRequest request_;
};

void Connection::Start() {
  ErrorCode ec;
  {
    absl::MutexLock lock(&core_->mu);
    if (core_->stopping.load()) {
      stream_.socket().close(ec);
      phase_ = Phase::kClosed;
      return;
    }
    core_->connections.emplace(this, weak_from_this());
    ++core_->stats.connections_open;
  }
  stream_.socket().set_option(tcp::no_delay(true), ec);
  // The watch reads without blocking; Asio's own operations are unaffected.
  stream_.socket().non_blocking(true, ec);
  peer_ = PeerName(stream_.socket());
  ReadNext();
}

void Connection::Stop(StopStage stage) {
  if (stage == StopStage::kAll || answer_ == Answer::kNone) Close();
}

void Connection::ReadNext() {
  phase_ = Phase::kIdle;
  if (buffer_.size() > 0) return ReadHeader();
  stream_.expires_after(ToChrono(core_->options.idle_timeout));
  stream_.async_read_some(buffer_.prepare(kReadChunk),
                          [self = shared_from_this()](ErrorCode ec, size_t n) {
                            if (ec) {
                              if (ec == beast::error::timeout)
                                self->Count(&HttpServerStats::timeouts);
                              return self->Close();
                            }
                            self->buffer_.commit(n);
                            self->ReadHeader();
                          });
}

void Connection::ReadHeader() {
  phase_ = Phase::kReading;
  parser_.emplace();
  parser_->body_limit(core_->options.max_body_bytes);
  parser_->header_limit(
      static_cast<uint32_t>(std::min<size_t>(core_->options.max_header_bytes, UINT32_MAX)));
  stream_.expires_after(ToChrono(core_->options.read_timeout));
  http::async_read_header(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](ErrorCode ec, size_t) { self->OnHeader(ec); });
}

void Connection::OnHeader(ErrorCode ec) {
  if (phase_ == Phase::kClosed) return;
  if (ec) return OnReadError(ec);
  auto& request = parser_->get();
  bool wants_continue = absl::EqualsIgnoreCase(View(request[http::field::expect]), "100-continue");
  if (!wants_continue || parser_->is_done() || request.version() < 11) return ReadBody();
  asio::async_write(stream_, asio::buffer(kContinue, sizeof(kContinue) - 1),
                    [self = shared_from_this()](ErrorCode ec, size_t) {
                      if (ec || self->phase_ == Phase::kClosed) return self->Close();
                      self->ReadBody();
                    });
}

void Connection::ReadBody() {
  if (parser_->is_done()) return Dispatch(false);
  http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](ErrorCode ec, size_t) {
    if (self->phase_ == Phase::kClosed) return;
    if (ec) return self->OnReadError(ec);
    self->Dispatch(false);
  });
}

void Connection::OnReadError(ErrorCode ec) {
  // A content-length over the limit fails at the end of the header, a chunked
  // body on the way; either way the request line and fields are known.
  if (ec == http::error::body_limit) {
    Count(&HttpServerStats::bodies_too_large);
    return Dispatch(true);
  }
  if (ec == beast::error::timeout) Count(&HttpServerStats::timeouts);
  bool malformed = ec.category() == http::make_error_code(http::error::bad_target).category() &&
                   ec != http::error::end_of_stream && ec != http::error::partial_message;
  if (!malformed) return Close();
  Count(&HttpServerStats::bad_requests);
  SendBadRequest();
}

HttpRequest Connection::TakeRequest(bool body_too_large) {
  auto& message = parser_->get();
  HttpRequest request;
  request.method = std::string(View(message.method_string()));
  request.target = std::string(View(message.target()));
  request.path = request.target.substr(0, request.target.find('?'));
  for (const auto& field : message) {
    request.headers.emplace_back(absl::AsciiStrToLower(View(field.name_string())),
                                 std::string(View(field.value())));
  }
  if (!body_too_large) request.body = std::move(message.body());
  request.body_too_large = body_too_large;
  request.peer = peer_;
  return request;
}

void Connection::Dispatch(bool body_too_large) {
  const auto& message = parser_->get();
  version_ = message.version();
  keep_alive_ = !body_too_large && message.keep_alive();
  head_only_ = message.method() == http::verb::head;
  close_after_ = body_too_large;
  chunked_ = false;
  remaining_.reset();
  HttpRequest request = TakeRequest(body_too_large);
  parser_.reset();
  // The rest of a body too large is never read: the connection closes.
  if (body_too_large) buffer_.consume(buffer_.size());
  if (buffer_.size() == 0) buffer_.shrink_to_fit();
  phase_ = Phase::kAnswering;
  answer_ = Answer::kPending;
  ++seq_;
  {
    absl::MutexLock lock(&core_->mu);
    ++core_->stats.requests;
    ++core_->stats.exchanges_open;
  }
  stream_.expires_never();
  if (!body_too_large) Watch();
  core_->handler(std::make_shared<Exchange>(shared_from_this(), seq_, std::move(request)));
}

// While the answer is pending, a read-readiness wait notices a client that
// goes away. Bytes that arrive instead (a pipelined request) are kept in the
// buffer for after the answer, and the watch ends.
void Connection::Watch() {
  watching_ = true;
  stream_.socket().async_wait(tcp::socket::wait_read,
                              [self = shared_from_this(), generation = ++watch_generation_](
                                  ErrorCode ec) { self->OnWatch(generation, ec); });
}

void Connection::OnWatch(uint64_t generation, ErrorCode ec) {
  if (!watching_ || generation != watch_generation_ || phase_ != Phase::kAnswering) return;
  if (ec) return ec == asio::error::operation_aborted ? void() : Close();
  ErrorCode read_ec;
  size_t n = stream_.socket().read_some(buffer_.prepare(kReadChunk), read_ec);
  if (read_ec == asio::error::would_block || read_ec == asio::error::try_again) return Watch();
  if (read_ec) return Close();
  buffer_.commit(n);
  watching_ = false;
}

void Connection::StopWatch() {
  if (!watching_) return;
  watching_ = false;
  ++watch_generation_;
  ErrorCode ec;
  stream_.socket().cancel(ec);  // nothing else is pending on the socket now
}

std::string Connection::Header(int status, const HttpFields& headers,
                               std::optional<uint64_t> length) {
  http::response<http::empty_body> response;
  response.version(version_ >= 11 ? 11 : 10);
  response.result(static_cast<unsigned>(status >= 100 && status <= 999 ? status : 500));
  for (const auto& field : headers) {
    if (PassField(field)) response.insert(field.first, field.second);
  }
  if (length.has_value()) {
    if (StatusHasBody(status)) response.content_length(*length);
  } else if (chunked_) {
    response.chunked(true);
  }
  if (core_->stopping.load()) close_after_ = true;
  response.keep_alive(keep_alive_ && !close_after_);
  if (!response.keep_alive()) close_after_ = true;
  std::ostringstream out;
  out << response.base();
  return std::move(out).str();
}

void Connection::Respond(uint64_t seq, int status, const HttpFields& headers, std::string body) {
  if (!Answering(seq, Answer::kPending)) return;
  if (!StatusHasBody(status)) body.clear();
  Enqueue(Header(status, headers, body.size()));
  if (!head_only_ && !body.empty()) Enqueue(std::move(body));
  answer_ = Answer::kComplete;
  if (!writing_) Flush();
}

void Connection::Begin(uint64_t seq, int status, const HttpFields& headers,
                       std::optional<uint64_t> length) {
  if (!Answering(seq, Answer::kPending)) return;
  if (!StatusHasBody(status)) length = 0;
  remaining_ = length;
  // HTTP/1.0 has no chunks: without a length, the body ends with the connection.
  chunked_ = !length.has_value() && version_ >= 11;
  if (!length.has_value() && !chunked_) close_after_ = true;
  answer_ = Answer::kStreaming;
  Enqueue(Header(status, headers, length));
}

void Connection::Write(uint64_t seq, std::string piece) {
  if (!Answering(seq, Answer::kStreaming) || head_only_ || piece.empty()) return;
  if (chunked_) return Enqueue(beast::buffers_to_string(http::make_chunk(asio::buffer(piece))));
  if (remaining_.has_value()) {
    // Never more than the promised length: the excess would be read as the
    // next response.
    piece.resize(std::min<uint64_t>(piece.size(), *remaining_));
    *remaining_ -= piece.size();
    if (piece.empty()) return;
  }
  Enqueue(std::move(piece));
}

void Connection::End(uint64_t seq) {
  if (!Answering(seq, Answer::kStreaming)) return;
  if (chunked_ && !head_only_) Enqueue(beast::buffers_to_string(http::make_chunk_last()));
  answer_ = Answer::kComplete;
  if (!writing_) Flush();
}

void Connection::Abort(uint64_t seq) {
  if (Answering(seq, Answer::kPending) || Answering(seq, Answer::kStreaming)) Close(true);
}

void Connection::SetOnClose(uint64_t seq, std::function<void()> callback) {
  if (Cut(seq)) return callback();
  if (seq == seq_ && answer_ != Answer::kNone && phase_ == Phase::kAnswering) {
    on_close_ = std::move(callback);
  }
}

void Connection::Enqueue(std::string bytes) {
  pending_.push_back(std::move(bytes));
  if (!writing_) Flush();
}

// Writes everything queued in one gathered write; when the queue is empty and
// the answer complete, the exchange is done.
void Connection::Flush() {
  if (phase_ == Phase::kClosed) return;
  if (pending_.empty()) {
    writing_ = false;
    if (answer_ == Answer::kComplete) FinishAnswer();
    return;
  }
  writing_ = true;
  in_flight_.swap(pending_);
  for (const std::string& bytes : in_flight_) buffers_.push_back(asio::buffer(bytes));
  asio::async_write(stream_, buffers_, [self = shared_from_this()](ErrorCode ec, size_t) {
    self->in_flight_.clear();
    self->buffers_.clear();
    if (ec) return self->Close();
    self->Flush();
  });
}

void Connection::FinishAnswer() {
  answer_ = Answer::kNone;
  on_close_ = nullptr;
  {
    absl::MutexLock lock(&core_->mu);
    --core_->stats.exchanges_open;
  }
  StopWatch();
  bool truncated = remaining_.has_value() && *remaining_ > 0 && !head_only_;
  if (truncated) return Close();
  if (close_after_ || core_->stopping.load()) return Linger();
  ReadNext();
}

// The answer is out and the connection closes: shut our side, then read and
// discard what the client still sends until it closes too (or kLinger
// passes), so that its unread bytes do not turn our close into a reset that
// could destroy the answer before the client reads it.
void Connection::Linger() {
  if (phase_ != Phase::kLingering) {
    phase_ = Phase::kLingering;
    ErrorCode ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(ToChrono(kLinger));
  }
  buffer_.consume(buffer_.size());
  stream_.async_read_some(buffer_.prepare(kReadChunk),
                          [self = shared_from_this()](ErrorCode ec, size_t n) {
                            if (ec || self->phase_ != Phase::kLingering) return self->Close();
                            self->buffer_.commit(n);
                            self->Linger();
                          });
}

void Connection::SendBadRequest() {
  parser_.reset();
  buffer_.consume(buffer_.size());
  phase_ = Phase::kAnswering;
  answer_ = Answer::kPending;
  ++seq_;
  version_ = 11;
  keep_alive_ = false;
  head_only_ = false;
  chunked_ = false;
  remaining_.reset();
  // Counted as an exchange so that Stop lets the 400 go out.
  Count(&HttpServerStats::exchanges_open);
  Respond(seq_, 400, {{"content-type", "text/plain"}}, "bad request\n");
}

void Connection::Close(bool reset) {
  if (phase_ == Phase::kClosed) return;
  phase_ = Phase::kClosed;
  bool cut = answer_ != Answer::kNone;
  answer_ = Answer::kNone;
  // closed() is true before the client can see the close.
  if (cut) cut_seq_.store(seq_, std::memory_order_release);
  ErrorCode ec;
  if (reset) stream_.socket().set_option(asio::socket_base::linger(true, 0), ec);
  stream_.close();
  pending_.clear();
  watching_ = false;
  if (cut) {
    {
      absl::MutexLock lock(&core_->mu);
      --core_->stats.exchanges_open;
      ++core_->stats.exchanges_cut;
    }
    if (auto callback = std::move(on_close_)) callback();
  }
  on_close_ = nullptr;
  absl::MutexLock lock(&core_->mu);
  core_->connections.erase(this);
  --core_->stats.connections_open;
}

void StartConnection(std::shared_ptr<ServerCore> core, tcp::socket socket) {
  auto connection = std::make_shared<Connection>(std::move(core), std::move(socket));
  connection->Post([c = connection.get()] { c->Start(); });
}

void StopConnection(const std::shared_ptr<Connection>& connection, StopStage stage) {
  connection->Post([c = connection.get(), stage] { c->Stop(stage); });
}

}  // namespace sluice::server_internal
