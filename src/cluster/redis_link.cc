// A connection to Redis with timeouts and reconnect backoff (redis_link.h).

#include "src/cluster/redis_link.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace sluice {
namespace internal_cluster {
namespace {

timeval TimeoutOf(absl::Duration d) {
  d = std::max(d, absl::Milliseconds(1));
  return absl::ToTimeval(d);
}

RedisValue FromReply(const redisReply* reply) {
  RedisValue v;
  switch (reply->type) {
    case REDIS_REPLY_INTEGER:
      v.type = RedisValue::Type::kInteger;
      v.integer = reply->integer;
      break;
    case REDIS_REPLY_STRING:
      v.type = RedisValue::Type::kString;
      v.text.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_STATUS:
      v.type = RedisValue::Type::kStatus;
      v.text.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_ARRAY:
      v.type = RedisValue::Type::kArray;
      v.elements.reserve(reply->elements);
      for (size_t i = 0; i < reply->elements; ++i)
        v.elements.push_back(FromReply(reply->element[i]));
      break;
    default:
      break;  // nil
  }
  return v;
}

}  // namespace

RedisLinkOptions LinkOptionsOf(const RedisBucketsOptions& o) {
  return {.host = o.host,
          .port = o.port,
          .db = o.db,
          .password = o.password,
          .timeout = o.timeout,
          .backoff_max = o.reconnect_backoff_max};
}

RedisLink::RedisLink(RedisLinkOptions options) : options_(std::move(options)) {}

RedisLink::~RedisLink() {
  if (context_ != nullptr) redisFree(context_);
}

absl::StatusOr<std::unique_ptr<RedisLink>> RedisLink::Connect(RedisLinkOptions options) {
  std::unique_ptr<RedisLink> link(new RedisLink(std::move(options)));
  std::lock_guard<std::mutex> lock(link->mu_);
  if (absl::Status s = link->EnsureConnectedLocked(); !s.ok()) return s;
  return link;
}

std::unique_ptr<RedisLink> RedisLink::Lazy(RedisLinkOptions options) {
  return std::unique_ptr<RedisLink>(new RedisLink(std::move(options)));
}

std::string RedisLink::Where() const {
  return absl::StrCat("Redis at ", options_.host, ":", options_.port);
}

void RedisLink::DropLocked(absl::string_view why) {
  if (context_ != nullptr) redisFree(context_);
  context_ = nullptr;
  loaded_.clear();
  last_error_ = std::string(why);
  const absl::Duration cap = std::min(
      options_.backoff_max, options_.backoff_base * (int64_t{1} << std::min(failures_, 20)));
  ++failures_;
  retry_at_ = absl::Now() + absl::Nanoseconds(absl::Uniform<int64_t>(
                                rng_, 0, std::max<int64_t>(absl::ToInt64Nanoseconds(cap), 1)));
}

absl::Status RedisLink::EnsureConnectedLocked() {
  if (context_ != nullptr) return absl::OkStatus();
  const absl::Time now = absl::Now();
  if (now < retry_at_) {
    return absl::UnavailableError(absl::StrCat(Where(), " is unreachable (", last_error_,
                                               "); the next try is in ",
                                               absl::FormatDuration(retry_at_ - now)));
  }
  redisContext* c =
      redisConnectWithTimeout(options_.host.c_str(), options_.port, TimeoutOf(options_.timeout));
  if (c == nullptr || c->err != 0) {
    const std::string why = c == nullptr ? "out of memory" : c->errstr;
    if (c != nullptr) redisFree(c);
    DropLocked(why);
    return absl::UnavailableError(absl::StrCat("cannot connect to ", Where(), ": ", why));
  }
  redisSetTimeout(c, TimeoutOf(options_.timeout));
  redisEnableKeepAlive(c);
  context_ = c;
  ++connects_;
  std::vector<std::vector<std::string>> setup;
  if (!options_.password.empty()) setup.push_back({"AUTH", options_.password});
  if (options_.db != 0) setup.push_back({"SELECT", absl::StrCat(options_.db)});
  for (const auto& argv : setup) {
    absl::StatusOr<RedisValue> r = CommandLocked(argv);
    if (!r.ok()) {
      // Never echo the command: AUTH carries the password.
      const std::string what = argv[0] == "AUTH" ? "authentication" : "selecting the database";
      const std::string why = std::string(r.status().message());
      DropLocked(absl::StrCat(what, " failed"));
      return absl::UnavailableError(absl::StrCat(Where(), ": ", what, " failed: ", why));
    }
  }
  failures_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<RedisValue> RedisLink::CommandLocked(const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lengths;
  args.reserve(argv.size());
  lengths.reserve(argv.size());
  for (const std::string& a : argv) {
    args.push_back(a.data());
    lengths.push_back(a.size());
  }
  ++commands_;
  auto* reply = static_cast<redisReply*>(
      redisCommandArgv(context_, static_cast<int>(args.size()), args.data(), lengths.data()));
  if (reply == nullptr) {
    const std::string why = context_->err != 0 ? context_->errstr : "no reply";
    DropLocked(why);
    return absl::UnavailableError(absl::StrCat(Where(), ": ", why));
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    std::string message(reply->str, reply->len);
    freeReplyObject(reply);
    return absl::FailedPreconditionError(absl::StrCat(Where(), " answered: ", message));
  }
  RedisValue value = FromReply(reply);
  freeReplyObject(reply);
  return value;
}

absl::StatusOr<RedisValue> RedisLink::Command(const std::vector<std::string>& argv) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = EnsureConnectedLocked(); !s.ok()) return s;
  return CommandLocked(argv);
}

absl::StatusOr<RedisValue> RedisLink::Eval(absl::string_view script,
                                           const std::vector<std::string>& keys,
                                           const std::vector<std::string>& args) {
  std::lock_guard<std::mutex> lock(mu_);
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (absl::Status s = EnsureConnectedLocked(); !s.ok()) return s;
    auto it = std::find_if(loaded_.begin(), loaded_.end(),
                           [&](const auto& entry) { return entry.first == script; });
    if (it == loaded_.end()) {
      absl::StatusOr<RedisValue> sha = CommandLocked({"SCRIPT", "LOAD", std::string(script)});
      if (!sha.ok()) return sha.status();
      loaded_.emplace_back(std::string(script), sha->text);
      it = std::prev(loaded_.end());
    }
    std::vector<std::string> argv = {"EVALSHA", it->second, absl::StrCat(keys.size())};
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<RedisValue> r = CommandLocked(argv);
    if (r.ok() || !absl::StrContains(r.status().message(), "NOSCRIPT")) return r;
    loaded_.erase(it);  // flushed or restarted under us: load it again
  }
  return absl::UnavailableError(absl::StrCat(Where(), " keeps forgetting the script"));
}

bool RedisLink::connected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return context_ != nullptr;
}

uint64_t RedisLink::commands() const {
  std::lock_guard<std::mutex> lock(mu_);
  return commands_;
}

uint64_t RedisLink::connects() const {
  std::lock_guard<std::mutex> lock(mu_);
  return connects_;
}

}  // namespace internal_cluster
}  // namespace sluice
