// The simulated provider's API exchange, the same for every API: the request
// is authenticated, its random values drawn, its body validated, faults
// injected, its charges admitted all-or-nothing and settled to the generated
// usage, and the reply delivered (or damaged, for the delivery faults). What
// each API says at each step comes from its dialect.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "httplib.h"
#include "sluice/clock.h"
#include "tools/fake_provider/connection_reset.h"
#include "tools/fake_provider/fake_provider_impl.h"

namespace sluice {

using fake_provider_internal::DropConnection;
using fake_provider_internal::kJson;
using fake_provider_internal::ServerRefusal;

namespace {

// The request's headers, for a dialect to read.
auto HeadersOf(const httplib::Request& req) {
  return [&req](absl::string_view name) { return req.get_header_value(std::string(name)); };
}

void Send(const fake_provider_internal::Reply& reply, httplib::Response& res) {
  res.status = reply.status;
  for (const auto& [name, value] : reply.headers) res.set_header(name, value);
  res.set_content(reply.body, kJson);
}

}  // namespace

void FakeProvider::Impl::ServeApi(const Dialect& dialect, const httplib::Request& req,
                                  httplib::Response& res) {
  Exchange ex{.dialect = &dialect, .request_id = NextId("req_")};
  res.set_header(std::string(dialect.request_id_header()), ex.request_id);
  CountRequest(req);
  Answer(req, res, ex);
  if (ex.key == nullptr || options_.unlimited) return;
  for (const auto& [name, value] :
       dialect.RateLimitHeaders(Views(*ex.key, Clock::MonotonicNanos()), absl::Now())) {
    res.set_header(name, value);
  }
}

std::optional<FakeProvider::Impl::Reply> FakeProvider::Impl::Authenticate(
    const Dialect& dialect, const httplib::Request& req, absl::string_view request_id,
    std::string* api_key) const {
  if (auto missing = dialect.ReadApiKey(HeadersOf(req), request_id, api_key)) return missing;
  if (!KeyAllowed(*api_key)) return dialect.UnknownKey(request_id);
  return std::nullopt;
}

void FakeProvider::Impl::Answer(const httplib::Request& req, httplib::Response& res, Exchange& ex) {
  const Dialect& dialect = *ex.dialect;
  std::string api_key;
  if (auto refused = Authenticate(dialect, req, ex.request_id, &api_key)) {
    return Send(*refused, res);
  }
  ex.key = FindOrAddKey(dialect, api_key);
  if (auto refused = dialect.CheckHeaders(HeadersOf(req), ex.request_id)) {
    return Send(*refused, res);
  }
  const Draws draws = generator_.Next();

  ChatRequest chat;
  if (auto bad = dialect.ParseBody(req.body, options_, ex.request_id, &chat)) {
    return Send(*bad, res);
  }
  if (std::optional<Failure> failure = PreAdmissionFault(draws)) {
    CountFault(ex);
    return Send(dialect.FailureReply(*failure, ex.request_id), res);
  }
  if (std::optional<Refusal> refusal =
          Admit(*ex.key, dialect.Charges(chat), Clock::MonotonicNanos())) {
    CountRateLimited(ex);
    return Send(dialect.RateLimited(*refusal, chat, ex.request_id), res);
  }

  const uint64_t output_tokens = OutputTokens(draws, chat.max_tokens);
  Settle(*ex.key, dialect.Settle(chat, output_tokens));
  CountAdmitted(ex, chat.input_tokens, output_tokens);

  if (stopping_.WaitForNotificationWithTimeout(Latency(draws))) {
    return Send(dialect.FailureReply(Failure::kShuttingDown, ex.request_id), res);
  }
  const std::string reply_id = NextId(dialect.reply_id_prefix());
  std::vector<std::string> body;
  if (chat.stream) {
    body = dialect.StreamEvents(chat, output_tokens, reply_id, absl::Now());
  } else {
    body.push_back(dialect.ReplyBody(chat, output_tokens, reply_id, absl::Now()));
  }
  const Delivery delivery = DeliveryFault(draws);
  if (delivery != Delivery::kWhole) CountFault(ex);
  Transmit(req, res, fake_provider_internal::Deliver(delivery, chat.stream, std::move(body)));
}

// count_tokens answers from the same deterministic count, without limits.
void FakeProvider::Impl::ServeCountTokens(const httplib::Request& req, httplib::Response& res) {
  const std::string request_id = NextId("req_");
  res.set_header(std::string(anthropic_.request_id_header()), request_id);
  std::string api_key;
  if (auto refused = Authenticate(anthropic_, req, request_id, &api_key)) {
    return Send(*refused, res);
  }
  if (auto refused = anthropic_.CheckHeaders(HeadersOf(req), request_id)) {
    return Send(*refused, res);
  }
  ChatRequest chat;
  if (auto bad = anthropic_.ParseCountTokensBody(req.body, options_, request_id, &chat)) {
    return Send(*bad, res);
  }
  res.set_content(anthropic_.CountTokensBody(chat), kJson);
}

// httplib's own refusals (no route, a body over the cap, a bad request line)
// arrive here with no body; give them the shape of the API the path belongs
// to. Replies the handlers wrote already have one and pass through.
httplib::Server::HandlerResponse FakeProvider::Impl::ServeError(const httplib::Request& req,
                                                                httplib::Response& res) {
  if (!res.body.empty() || res.content_provider_) {
    return httplib::Server::HandlerResponse::Unhandled;
  }
  const Dialect& dialect =
      absl::StartsWith(req.path, "/v1/chat/") ? static_cast<const Dialect&>(openai_) : anthropic_;
  const std::string request_id = NextId("req_");
  res.set_header(std::string(dialect.request_id_header()), request_id);
  Send(dialect.Refused(ServerRefusal{.status = res.status,
                                     .method = req.method,
                                     .path = req.path,
                                     .max_body_bytes = options_.max_body_bytes},
                       request_id),
       res);
  return httplib::Server::HandlerResponse::Handled;
}

// Delivery --------------------------------------------------------------------------------

void FakeProvider::Impl::Transmit(const httplib::Request& req, httplib::Response& res,
                                  Outgoing out) {
  res.status = 200;
  if (out.reset) {
    if (DropConnection(req)) return;
    // Not found (it cannot happen on Linux): fall back to promising a
    // body and sending none, the nearest thing httplib can do.
    out = {.content_type = kJson, .content_length = 1, .pieces = {}, .cut_short = true};
  }
  if (out.content_length.has_value() && out.pieces.size() == 1 && !out.cut_short &&
      out.pause == absl::ZeroDuration()) {
    res.set_content(std::move(out.pieces[0]), out.content_type);
    return;
  }
  // httplib calls a provider again and again on the connection's thread
  // until it is done or fails; each call writes the next piece.
  auto shared = std::make_shared<Outgoing>(std::move(out));
  auto next = std::make_shared<size_t>(0);
  const auto write_next = [this, shared, next](httplib::DataSink& sink) {
    if (*next == shared->pieces.size()) return false;  // cut short: httplib closes
    if (stopping_.WaitForNotificationWithTimeout(shared->pause)) return false;
    const std::string& piece = shared->pieces[(*next)++];
    return sink.write(piece.data(), piece.size());
  };
  if (shared->content_length.has_value()) {
    res.set_content_provider(
        *shared->content_length, shared->content_type,
        [write_next](size_t, size_t, httplib::DataSink& sink) { return write_next(sink); });
    return;
  }
  res.set_chunked_content_provider(shared->content_type,
                                   [shared, next, write_next](size_t, httplib::DataSink& sink) {
                                     if (*next == shared->pieces.size() && !shared->cut_short) {
                                       sink.done();
                                       return true;
                                     }
                                     return write_next(sink);
                                   });
}

}  // namespace sluice
