// The simulated provider's API exchange, the same for every API: the request
// is authenticated, its random values drawn, its body validated, faults
// injected, its charges admitted all-or-nothing and settled to the generated
// usage, and the reply delivered (or damaged, for the delivery faults) once
// its generation time has passed. What each API says at each step comes from
// its dialect. Everything here runs on the server's loop and never blocks
// it: generation time is a timer, a slow body timed writes.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "sluice/clock.h"
#include "sluice/http_server.h"
#include "tools/fake_provider/fake_provider_impl.h"

namespace sluice {

using fake_provider_internal::kJson;
using fake_provider_internal::ServerRefusal;

namespace {

// The request's headers, for a dialect to read (case-insensitive).
auto HeadersOf(const HttpRequest& req) {
  return [&req](absl::string_view name) {
    const std::optional<absl::string_view> value = FindField(req.headers, name);
    return value.has_value() ? std::string(*value) : std::string();
  };
}

}  // namespace

// Routing ---------------------------------------------------------------------------------

void FakeProvider::Impl::Handle(std::shared_ptr<HttpExchange> http) {
  const HttpRequest& req = http->request();
  if (req.body_too_large) return Refuse(*http, 413);
  if (req.method == "POST") {
    if (req.path == "/v1/messages") return ServeApi(anthropic_, std::move(http));
    if (req.path == "/v1/messages/count_tokens") return ServeCountTokens(*http);
    if (req.path == "/v1/chat/completions") return ServeApi(openai_, std::move(http));
    if (req.path == "/v1/responses") return ServeApi(openai_responses_, std::move(http));
    if (req.path == "/v1/embeddings") return ServeApi(openai_embeddings_, std::move(http));
  } else if (req.method == "GET" && req.path == "/stats") {
    return ServeStats(*http);
  }
  Refuse(*http, 404);
}

void FakeProvider::Impl::Refuse(HttpExchange& http, int status) {
  const HttpRequest& req = http.request();
  const bool openai = absl::StartsWith(req.path, "/v1/chat/") ||
                      absl::StartsWith(req.path, "/v1/responses") ||
                      absl::StartsWith(req.path, "/v1/embeddings");
  const Dialect& dialect = openai ? static_cast<const Dialect&>(openai_) : anthropic_;
  const Exchange ex{.dialect = &dialect, .request_id = NextId("req_")};
  Send(http, ex,
       dialect.Refused(ServerRefusal{.status = status,
                                     .method = req.method,
                                     .path = req.path,
                                     .max_body_bytes = options_.max_body_bytes},
                       ex.request_id));
}

void FakeProvider::Impl::ServeApi(const Dialect& dialect, std::shared_ptr<HttpExchange> http) {
  Exchange ex{.dialect = &dialect, .request_id = NextId("req_")};
  CountRequest(http->request());
  std::variant<Reply, Admitted> answer = Answer(http->request(), ex);
  if (const Reply* reply = std::get_if<Reply>(&answer)) return Send(*http, ex, *reply);
  Admitted& admitted = std::get<Admitted>(answer);
  if (admitted.latency <= absl::ZeroDuration()) return Deliver(std::move(http), ex, admitted);
  StartGenerating({.http = std::move(http), .ex = std::move(ex), .admitted = std::move(admitted)});
}

// count_tokens answers from the same deterministic count, without limits.
void FakeProvider::Impl::ServeCountTokens(HttpExchange& http) {
  const HttpRequest& req = http.request();
  const Exchange ex{.dialect = &anthropic_, .request_id = NextId("req_")};
  std::string api_key;
  if (auto refused = Authenticate(anthropic_, req, ex.request_id, &api_key)) {
    return Send(http, ex, *refused);
  }
  if (auto refused = anthropic_.CheckHeaders(HeadersOf(req), ex.request_id)) {
    return Send(http, ex, *refused);
  }
  ChatRequest chat;
  if (auto bad = anthropic_.ParseCountTokensBody(req.body, options_, ex.request_id, &chat)) {
    return Send(http, ex, *bad);
  }
  Send(http, ex, Reply{.status = 200, .headers = {}, .body = anthropic_.CountTokensBody(chat)});
}

// The exchange ------------------------------------------------------------------------------

std::optional<FakeProvider::Impl::Reply> FakeProvider::Impl::Authenticate(
    const Dialect& dialect, const HttpRequest& req, absl::string_view request_id,
    std::string* api_key) const {
  if (auto missing = dialect.ReadApiKey(HeadersOf(req), request_id, api_key)) return missing;
  if (!KeyAllowed(*api_key)) return dialect.UnknownKey(request_id);
  return std::nullopt;
}

std::variant<FakeProvider::Impl::Reply, FakeProvider::Impl::Admitted> FakeProvider::Impl::Answer(
    const HttpRequest& req, Exchange& ex) {
  const Dialect& dialect = *ex.dialect;
  std::string api_key;
  if (auto refused = Authenticate(dialect, req, ex.request_id, &api_key)) return *refused;
  ex.key = FindOrAddKey(dialect, api_key);
  if (auto refused = dialect.CheckHeaders(HeadersOf(req), ex.request_id)) return *refused;
  const Draws draws = generator_.Next();

  ChatRequest chat;
  if (auto bad = dialect.ParseBody(req.body, options_, ex.request_id, &chat)) return *bad;
  if (std::optional<Failure> failure = PreAdmissionFault(draws)) {
    CountFault(ex);
    return dialect.FailureReply(*failure, ex.request_id);
  }
  if (std::optional<Refusal> refusal =
          Admit(*ex.key, dialect.Charges(chat), Clock::MonotonicNanos())) {
    CountRateLimited(ex);
    return dialect.RateLimited(*refusal, chat, ex.request_id);
  }

  const uint64_t output_tokens = OutputTokens(draws, chat.max_tokens);
  Settle(*ex.key, dialect.Settle(chat, output_tokens));
  CountAdmitted(ex, chat.input_tokens, output_tokens);
  const Delivery delivery = DeliveryFault(draws);
  if (delivery != Delivery::kWhole) CountFault(ex);
  return Admitted{.chat = std::move(chat),
                  .output_tokens = output_tokens,
                  .delivery = delivery,
                  .latency = Latency(draws)};
}

// Generation time ---------------------------------------------------------------------------

void FakeProvider::Impl::StartGenerating(Generating generating) {
  const absl::Duration latency = generating.admitted.latency;
  absl::MutexLock lock(&generating_mu_);
  const uint64_t id = next_generating_++;
  // The timer may fire before it is recorded (with more than one loop
  // thread): FinishGenerating then waits for the lock held here.
  generating.timer = server_->After(latency, [this, id] { FinishGenerating(id); });
  if (generating.timer != 0) generating_.emplace(id, std::move(generating));
}

void FakeProvider::Impl::FinishGenerating(uint64_t id) {
  std::optional<Generating> done;
  {
    absl::MutexLock lock(&generating_mu_);
    auto it = generating_.find(id);
    if (it == generating_.end()) return;  // answered by Stop
    done = std::move(it->second);
    generating_.erase(it);
  }
  Deliver(std::move(done->http), done->ex, done->admitted);
}

void FakeProvider::Impl::AnswerGeneratingOnStop() {
  absl::flat_hash_map<uint64_t, Generating> cut;
  {
    absl::MutexLock lock(&generating_mu_);
    cut.swap(generating_);
  }
  for (auto& [id, generating] : cut) {
    server_->Cancel(generating.timer);
    Send(*generating.http, generating.ex,
         generating.ex.dialect->FailureReply(Failure::kShuttingDown, generating.ex.request_id));
  }
}

// Replies -----------------------------------------------------------------------------------

HttpFields FakeProvider::Impl::ReplyHeaders(const Exchange& ex) const {
  HttpFields fields = {{std::string(ex.dialect->request_id_header()), ex.request_id}};
  if (ex.key == nullptr || options_.unlimited) return fields;
  for (auto& field :
       ex.dialect->RateLimitHeaders(Views(*ex.key, Clock::MonotonicNanos()), absl::Now())) {
    fields.push_back(std::move(field));
  }
  return fields;
}

void FakeProvider::Impl::Send(HttpExchange& http, const Exchange& ex, const Reply& reply) const {
  HttpFields fields = ReplyHeaders(ex);
  fields.insert(fields.end(), reply.headers.begin(), reply.headers.end());
  fields.emplace_back("content-type", kJson);
  http.Respond(reply.status, std::move(fields), reply.body);
}

void FakeProvider::Impl::Deliver(std::shared_ptr<HttpExchange> http, const Exchange& ex,
                                 const Admitted& admitted) {
  const Dialect& dialect = *ex.dialect;
  const std::string reply_id = NextId(dialect.reply_id_prefix());
  std::vector<std::string> body;
  if (admitted.chat.stream) {
    body = dialect.StreamEvents(admitted.chat, admitted.output_tokens, reply_id, absl::Now());
  } else {
    body.push_back(dialect.ReplyBody(admitted.chat, admitted.output_tokens, reply_id, absl::Now()));
  }
  Outgoing out =
      fake_provider_internal::Deliver(admitted.delivery, admitted.chat.stream, std::move(body));
  if (out.reset) return http->Abort();
  HttpFields fields = ReplyHeaders(ex);
  fields.emplace_back("content-type", out.content_type);
  if (out.content_length.has_value() && out.pieces.size() == 1 && !out.cut_short) {
    return http->Respond(200, std::move(fields), std::move(out.pieces[0]));
  }
  // A content-length the pieces fall short of closes the connection at End.
  http->Begin(200, std::move(fields), out.content_length);
  WritePieces(std::move(http), std::make_shared<const Outgoing>(std::move(out)), 0);
}

void FakeProvider::Impl::WritePieces(std::shared_ptr<HttpExchange> http,
                                     std::shared_ptr<const Outgoing> out, size_t next) {
  if (out->pause <= absl::ZeroDuration()) {
    for (; next < out->pieces.size(); ++next) http->Write(out->pieces[next]);
  }
  if (next == out->pieces.size() || http->closed()) return http->End();
  // Each piece after its pause; Stop destroys the timer and with it the
  // last reference to the exchange, which cuts the reply short.
  const absl::Duration pause = out->pause;  // before `out` moves into the task
  server_->After(pause, [this, http = std::move(http), out = std::move(out), next]() mutable {
    http->Write(out->pieces[next]);
    WritePieces(std::move(http), std::move(out), next + 1);
  });
}

}  // namespace sluice
