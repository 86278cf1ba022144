// Client: options checked once, then everything handed to the scheduler
// (src/client/scheduler.h) over a transport (the libcurl one by default).
#include "sluice/client.h"

#include <cmath>
#include <cstdlib>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "src/client/scheduler.h"
#include "src/client/wire_request.h"

namespace sluice {
namespace {

std::string DefaultBaseUrl(Provider provider) {
  return provider == Provider::kAnthropic ? "https://api.anthropic.com" : "https://api.openai.com";
}

// Fills in the defaults (base URL, the key from the environment) and refuses
// what cannot work. Errors never show a key.
absl::Status Resolve(ClientOptions& options) {
  if (options.base_url.empty()) options.base_url = DefaultBaseUrl(options.provider);
  while (absl::EndsWith(options.base_url, "/")) options.base_url.pop_back();
  if (!absl::StartsWith(options.base_url, "http://") &&
      !absl::StartsWith(options.base_url, "https://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("base URL '", options.base_url, "' must start with http:// or https://"));
  }
  if (!(options.provider_time_scale > 0) || !std::isfinite(options.provider_time_scale)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "provider_time_scale must be positive and finite, got ", options.provider_time_scale));
  }
  if (options.api_key.empty() && options.key_from_environment) {
    const char* env = std::getenv(ApiKeyVariable(options.provider));
    if (env != nullptr) options.api_key = env;
  }
  if (options.api_key.empty() && options.require_api_key) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no API key: set ", ApiKeyVariable(options.provider), " or give one in the options"));
  }
  return absl::OkStatus();
}

}  // namespace

CallRequest CallRequest::Simple(absl::string_view model, absl::string_view prompt,
                                uint64_t max_tokens) {
  CallRequest request;
  request.body = {{"model", std::string(model)},
                  {"max_tokens", max_tokens},
                  {"messages", {{{"role", "user"}, {"content", std::string(prompt)}}}}};
  return request;
}

class Client::Impl {
 public:
  Impl(ClientOptions options, Policy* policy, std::unique_ptr<Transport> transport, Clock clock)
      : transport_(std::move(transport)),
        scheduler_(std::move(options), policy, transport_.get(), clock) {}
  Scheduler& scheduler() { return scheduler_; }

 private:
  std::unique_ptr<Transport> transport_;  // outlives the scheduler, which cancels into it
  Scheduler scheduler_;
};

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options, Policy* policy) {
  if (absl::Status s = Resolve(options); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<Transport>> transport =
      NewCurlTransport({.connect_timeout = options.connect_timeout,
                        .request_timeout = options.request_timeout,
                        .max_connections = options.max_connections});
  if (!transport.ok()) return transport.status();
  return Create(std::move(options), policy, *std::move(transport), Clock::Monotonic());
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options, Policy* policy,
                                                       std::unique_ptr<Transport> transport,
                                                       Clock clock) {
  if (absl::Status s = Resolve(options); !s.ok()) return s;
  if (transport == nullptr) return absl::InvalidArgumentError("no transport");
  if (policy != nullptr) clock = policy->store()->clock();
  return std::unique_ptr<Client>(
      new Client(std::make_unique<Impl>(std::move(options), policy, std::move(transport), clock)));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

void Client::Run(const std::function<bool(CallRequest*)>& next, int max_in_flight,
                 const std::function<void(size_t, CallResult)>& done) {
  impl_->scheduler().Run(next, max_in_flight, done);
}

CallResult Client::Call(const CallRequest& request) {
  bool given = false;
  CallResult result;
  Run(
      [&](CallRequest* out) {
        if (given) return false;
        *out = request;
        given = true;
        return true;
      },
      1, [&](size_t, CallResult r) { result = std::move(r); });
  return result;
}

void Client::Serve() { impl_->scheduler().Serve(); }

Client::Handle Client::Submit(CallRequest request, std::function<void(CallResult)> done) {
  return impl_->scheduler().Submit(std::move(request), std::move(done));
}

void Client::Cancel(Handle handle) { impl_->scheduler().Cancel(handle); }
void Client::Withdraw(Handle handle) { impl_->scheduler().Withdraw(handle); }

void Client::Stop() { impl_->scheduler().Stop(); }

}  // namespace sluice
