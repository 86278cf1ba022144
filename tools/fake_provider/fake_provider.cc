// The simulated provider's server core: the asynchronous HTTP server, its
// options, the keys, their limits (the judge's exact buckets) and counts, and
// /stats. Each API request is handled on the server's loop through
// exchange.cc and the API's dialect.

#include "tools/fake_provider/fake_provider.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "sluice/client.h"
#include "sluice/clock.h"
#include "tools/fake_provider/fake_provider_impl.h"
#include "tools/judge/exact_bucket.h"

namespace sluice {
namespace {

using fake_provider_internal::Dump;
using fake_provider_internal::kJson;

bool ValidRate(double rate) { return rate >= 0 && rate <= 1; }  // false for NaN too

// The bucket behind a limit of `per_minute` permits per simulated minute: it
// refills per_minute every simulated minute (in real ns, so time_scale
// applies) and holds bucket_span's share of them, at least one.
ExactBucketConfig LimitBucket(uint64_t per_minute, const FakeProviderOptions& o) {
  const __int128 span_ns = absl::ToInt64Nanoseconds(o.bucket_span);
  const __int128 held = per_minute * span_ns / absl::ToInt64Nanoseconds(absl::Minutes(1));
  return {.permits = per_minute,
          .period_ns = absl::ToInt64Nanoseconds(absl::Minutes(1) / o.time_scale),
          .capacity = static_cast<uint64_t>(std::max<__int128>(held, 1))};
}

absl::Status ValidateOptions(const FakeProviderOptions& o) {
  if (o.port < 0 || o.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port must be in [0, 65535], got ", o.port));
  }
  if (!(o.time_scale > 0) || !std::isfinite(o.time_scale)) {
    return absl::InvalidArgumentError(
        absl::StrCat("time_scale must be positive and finite, got ", o.time_scale));
  }
  if (o.bucket_span <= absl::ZeroDuration() || o.bucket_span > absl::Minutes(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bucket_span must be in (0, 1m], got ", absl::FormatDuration(o.bucket_span)));
  }
  if (!o.unlimited) {
    const std::pair<const char*, uint64_t> limits[] = {
        {"rpm", o.rpm}, {"itpm", o.itpm}, {"otpm", o.otpm}, {"tpm", o.tpm}};
    for (const auto& [name, limit] : limits) {
      if (limit == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " must be at least 1 (or pass unlimited)"));
      }
      // The bucket each key will get: an extreme time_scale can make a
      // simulated minute shorter than a nanosecond or longer than a bucket
      // can count.
      const absl::Status s = ExactBucket::Validate(LimitBucket(limit, o));
      if (!s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " ", limit, " at time_scale ", o.time_scale, ": ", s.message()));
      }
    }
  }
  if (o.latency_mean < absl::ZeroDuration() || o.latency_jitter < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("latency_mean and latency_jitter must not be negative");
  }
  if (o.max_output_tokens == 0 || o.default_max_tokens == 0) {
    return absl::InvalidArgumentError(
        "max_output_tokens and default_max_tokens must be at least 1");
  }
  const std::pair<const char*, double> rates[] = {
      {"overloaded_rate", o.overloaded_rate},
      {"server_error_rate", o.server_error_rate},
      {"insufficient_quota_rate", o.insufficient_quota_rate},
      {"spend_limit_rate", o.spend_limit_rate},
      {"malformed_json_rate", o.malformed_json_rate},
      {"truncated_body_rate", o.truncated_body_rate},
      {"slow_body_rate", o.slow_body_rate},
      {"reset_rate", o.reset_rate}};
  for (const auto& [name, rate] : rates) {
    if (!ValidRate(rate)) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must be in [0, 1], got ", rate));
    }
  }
  if (o.threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("threads must be at least 1, got ", o.threads));
  }
  if (o.max_body_bytes == 0) return absl::InvalidArgumentError("max_body_bytes must be positive");
  return absl::OkStatus();
}

}  // namespace

// Names and formats -------------------------------------------------------------------

const char* FakeApiName(FakeApi api) { return api == FakeApi::kAnthropic ? "anthropic" : "openai"; }

std::string FakeProvider::KeyLabel(absl::string_view api_key) {
  uint64_t hash = 0xcbf29ce484222325;  // FNV-1a, 64 bits
  for (unsigned char c : api_key) {
    hash ^= c;
    hash *= 0x100000001b3;
  }
  // FNV-1a alone leaves keys that differ in their last byte with labels that
  // differ in one digit; splitmix64's finalizer spreads the difference.
  hash = (hash ^ (hash >> 30)) * 0xbf58476d1ce4e5b9;
  hash = (hash ^ (hash >> 27)) * 0x94d049bb133111eb;
  hash ^= hash >> 31;
  return absl::StrFormat("key_%08x", hash >> 32);
}

FakeProviderStats::Counts FakeProviderStats::ForKey(FakeApi api, absl::string_view api_key) const {
  const std::string label = FakeProvider::KeyLabel(api_key);
  for (const Key& key : keys) {
    if (key.api == api && key.label == label) return key.counts;
  }
  return {};
}

absl::Status FakeProvider::Impl::Listen() {
  HttpServerOptions server;
  server.host = options_.host;
  server.port = options_.port;
  server.threads = options_.threads;
  server.max_body_bytes = options_.max_body_bytes;
  absl::StatusOr<std::unique_ptr<HttpServer>> started = HttpServer::Start(
      server, [this](std::shared_ptr<HttpExchange> http) { Handle(std::move(http)); });
  if (!started.ok()) return started.status();
  server_ = *std::move(started);
  return absl::OkStatus();
}

// Idle keep-alive connections close at once; requests in generation are
// answered with the shutting-down 500 (so their clients hear why), and any
// reply still dribbling out gets kStopDeadline to finish.
void FakeProvider::Impl::Stop() {
  absl::MutexLock lock(&stop_mu_);
  if (stopped_ || server_ == nullptr) return;
  stopped_ = true;
  server_->Post([this] { AnswerGeneratingOnStop(); });
  server_->Stop(fake_provider_internal::kStopDeadline);
}

std::string FakeProvider::Impl::NextId(absl::string_view prefix) {
  return absl::StrFormat("%s%024x", prefix, next_id_.fetch_add(1, std::memory_order_relaxed));
}

// Keys and limits -------------------------------------------------------------------

bool FakeProvider::Impl::KeyAllowed(const std::string& key) const {
  return options_.api_keys.empty() || std::find(options_.api_keys.begin(), options_.api_keys.end(),
                                                key) != options_.api_keys.end();
}

FakeProvider::Impl::Limit FakeProvider::Impl::MakeLimit(uint64_t per_minute) const {
  Limit limit;
  limit.per_minute = per_minute;
  if (options_.unlimited) return limit;
  // Refilled continuously: the providers' model. The options were validated
  // with this very config, so Create cannot fail.
  auto bucket = ExactBucket::Create(LimitBucket(per_minute, options_), Clock::MonotonicNanos());
  if (bucket.ok()) limit.bucket = *std::move(bucket);
  return limit;
}

uint64_t FakeProvider::Impl::PerMinute(Dimension dimension) const {
  switch (dimension) {
    case Dimension::kRequests:
      return options_.rpm;
    case Dimension::kInputTokens:
      return options_.itpm;
    case Dimension::kOutputTokens:
      return options_.otpm;
    case Dimension::kTokens:
      break;
  }
  return options_.tpm;
}

FakeProvider::Impl::KeyState* FakeProvider::Impl::FindOrAddKey(const Dialect& dialect,
                                                               const std::string& key) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<KeyState>& state = keys_[static_cast<int>(dialect.api())][key];
  if (state == nullptr) {
    state = std::make_unique<KeyState>();
    state->api = dialect.api();
    state->label = KeyLabel(key);
    for (Dimension dimension : dialect.dimensions()) {
      state->limits[static_cast<int>(dimension)] = MakeLimit(PerMinute(dimension));
    }
  }
  ++state->counts.requests;
  return state.get();
}

std::optional<Refusal> FakeProvider::Impl::Admit(const KeyState& key,
                                                 const std::vector<Charge>& charges,
                                                 int64_t now_ns) const {
  const auto bucket = [&key](const Charge& c) {
    return key.limits[static_cast<int>(c.dimension)].bucket.get();
  };
  for (size_t i = 0; i < charges.size(); ++i) {
    const Charge& charge = charges[i];
    ExactBucket* limit = bucket(charge);
    if (limit == nullptr) continue;  // unlimited
    const ExactBucket::TakeResult taken = limit->TryTake(charge.n, now_ns);
    if (taken.taken) continue;
    // All or nothing: give back what this request already took.
    for (size_t j = 0; j < i; ++j) {
      if (ExactBucket* taken_from = bucket(charges[j])) taken_from->Refund(charges[j].n, now_ns);
    }
    return Refusal{
        .dimension = charge.dimension,
        .per_minute = key.limits[static_cast<int>(charge.dimension)].per_minute,
        .requested = charge.n,
        .used = static_cast<int64_t>(limit->Capacity()) - limit->Available(now_ns),
        .wait = taken.never_fits ? std::nullopt
                                 : std::optional<absl::Duration>(absl::Nanoseconds(taken.wait_ns)),
    };
  }
  return std::nullopt;
}

void FakeProvider::Impl::Settle(const KeyState& key, const Settlement& settlement) const {
  ExactBucket* bucket = key.limits[static_cast<int>(settlement.dimension)].bucket.get();
  if (bucket == nullptr) return;
  const int64_t now_ns = Clock::MonotonicNanos();
  if (settlement.used < settlement.charged) {
    bucket->Refund(settlement.charged - settlement.used, now_ns);
  } else {
    bucket->Debit(settlement.used - settlement.charged, now_ns);
  }
}

// Time to full is real time, exactly (debt included): the buckets count
// real nanoseconds.
LimitViews FakeProvider::Impl::Views(const KeyState& key, int64_t now_ns) const {
  LimitViews views;
  for (int i = 0; i < kDimensions; ++i) {
    const Limit& limit = key.limits[i];
    if (limit.bucket == nullptr) continue;
    views[i] = {.per_minute = limit.per_minute,
                .available = limit.bucket->Available(now_ns),
                .capacity = limit.bucket->Capacity(),
                .time_to_full = absl::Nanoseconds(limit.bucket->NanosUntilFull(now_ns))};
  }
  return views;
}

std::optional<Failure> FakeProvider::Impl::PreAdmissionFault(const Draws& d) const {
  if (d.overloaded < options_.overloaded_rate) return Failure::kOverloaded;
  if (d.server_error < options_.server_error_rate) return Failure::kServerError;
  if (d.insufficient_quota < options_.insufficient_quota_rate) return Failure::kOutOfMoney;
  if (d.spend_limit < options_.spend_limit_rate) return Failure::kOutOfMoney;
  return std::nullopt;
}

Delivery FakeProvider::Impl::DeliveryFault(const Draws& d) const {
  if (d.reset < options_.reset_rate) return Delivery::kReset;
  if (d.truncated_body < options_.truncated_body_rate) return Delivery::kTruncated;
  if (d.malformed_json < options_.malformed_json_rate) return Delivery::kMalformed;
  if (d.slow_body < options_.slow_body_rate) return Delivery::kSlow;
  return Delivery::kWhole;
}

uint64_t FakeProvider::Impl::OutputTokens(const Draws& d, uint64_t max_tokens) const {
  const auto n = static_cast<uint64_t>(d.output * static_cast<double>(max_tokens));
  return std::min(max_tokens, n + 1);
}

absl::Duration FakeProvider::Impl::Latency(const Draws& d) const {
  const absl::Duration latency =
      options_.latency_mean + options_.latency_jitter * (2 * d.latency - 1);
  return std::max(latency, absl::ZeroDuration());
}

// Counting ----------------------------------------------------------------------------

void FakeProvider::Impl::CountRequest(const HttpRequest& req) {
  const std::optional<absl::string_view> custom_id = FindField(req.headers, kCustomIdHeader);
  absl::MutexLock lock(&mu_);
  ++totals_.requests;
  if (custom_id.has_value()) ++custom_ids_[std::string(*custom_id)];
}

void FakeProvider::Impl::CountFault(Exchange& ex) {
  absl::MutexLock lock(&mu_);
  ++totals_.faults;
  if (ex.key != nullptr) ++ex.key->counts.faults;
}

void FakeProvider::Impl::CountRateLimited(Exchange& ex) {
  absl::MutexLock lock(&mu_);
  ++totals_.rate_limited;
  ++ex.key->counts.rate_limited;
}

void FakeProvider::Impl::CountAdmitted(Exchange& ex, uint64_t input_tokens,
                                       uint64_t output_tokens) {
  absl::MutexLock lock(&mu_);
  for (FakeProviderStats::Counts* c : {&totals_, &ex.key->counts}) {
    ++c->admitted;
    c->input_tokens += input_tokens;
    c->output_tokens += output_tokens;
  }
}

FakeProviderStats FakeProvider::Impl::stats() const {
  FakeProviderStats stats;
  absl::MutexLock lock(&mu_);
  stats.totals = totals_;
  stats.custom_ids = custom_ids_;
  for (const auto& keys : keys_) {
    for (const auto& [key, state] : keys) {
      stats.keys.push_back({state->api, state->label, state->counts});
    }
  }
  std::sort(stats.keys.begin(), stats.keys.end(),
            [](const FakeProviderStats::Key& a, const FakeProviderStats::Key& b) {
              return std::tie(a.api, a.label) < std::tie(b.api, b.label);
            });
  return stats;
}

// Stats -----------------------------------------------------------------------------------

void FakeProvider::Impl::ServeStats(HttpExchange& http) {
  const FakeProviderStats s = stats();
  const auto counts = [](const FakeProviderStats::Counts& c) {
    return Json{{"requests", c.requests},           {"admitted", c.admitted},
                {"rate_limited", c.rate_limited},   {"input_tokens", c.input_tokens},
                {"output_tokens", c.output_tokens}, {"faults", c.faults}};
  };
  Json keys = Json::array();
  for (const FakeProviderStats::Key& key : s.keys) {
    Json entry = {{"api", FakeApiName(key.api)}, {"key", key.label}};
    entry.update(counts(key.counts));
    keys.push_back(std::move(entry));
  }
  http.Respond(
      200, {{"content-type", kJson}},
      Dump(
          {{"totals", counts(s.totals)}, {"keys", std::move(keys)}, {"custom_ids", s.custom_ids}}));
}

// FakeProvider ---------------------------------------------------------------------------

FakeProvider::FakeProvider(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FakeProvider::~FakeProvider() { Stop(); }

absl::StatusOr<std::unique_ptr<FakeProvider>> FakeProvider::Start(FakeProviderOptions options) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  auto impl = std::make_unique<Impl>(std::move(options));
  if (absl::Status s = impl->Listen(); !s.ok()) return s;
  return std::unique_ptr<FakeProvider>(new FakeProvider(std::move(impl)));
}

int FakeProvider::port() const { return impl_->port(); }

std::string FakeProvider::base_url() const { return impl_->base_url(); }

FakeProviderStats FakeProvider::stats() const { return impl_->stats(); }

void FakeProvider::Stop() { impl_->Stop(); }

}  // namespace sluice
