// A fleet's buckets in Redis (sluice/redis_buckets.h).

#include "sluice/redis_buckets.h"

#include <algorithm>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "sluice/fixed_point.h"
#include "src/cluster/gcra_script.h"
#include "src/cluster/redis_link.h"

namespace sluice {
namespace {

using internal_cluster::kMaxRedisSpanUnits;
using internal_cluster::LinkOptionsFor;
using internal_cluster::RedisLink;
using internal_cluster::RedisValue;

struct Terms2 {
  int64_t interval;
  int64_t tau;
};

// The cell's own derivation (token_bucket.h), so both decide alike.
absl::StatusOr<Terms2> Derive(const BucketConfig& config) {
  if (absl::Status s = RedisBuckets::Validate(config); !s.ok()) return s;
  const __int128 interval = internal_gcra::IntervalUnits(config.rate);
  return Terms2{static_cast<int64_t>(interval),
                static_cast<int64_t>(interval * static_cast<__int128>(config.capacity))};
}

int64_t Integer(const RedisValue& v) {
  return v.type == RedisValue::Type::kInteger ? static_cast<int64_t>(v.integer) : 0;
}

// A reply that is not the array a script returns is Redis misbehaving.
absl::Status Malformed(absl::string_view what, const RedisValue& v, size_t at_least) {
  if (v.type == RedisValue::Type::kArray && v.elements.size() >= at_least) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("Redis answered ", what, " with an unexpected reply"));
}

int64_t RedisNanos(const RedisValue& s, const RedisValue& us) {
  return std::clamp<int64_t>(Integer(s), 0, int64_t{9'000'000'000}) * 1'000'000'000 +
         std::clamp<int64_t>(Integer(us), 0, 999'999) * 1'000;
}

// A bulk string holding an integer (TIME's fields, a sorted set's scores).
std::optional<int64_t> IntegerText(const RedisValue& v) {
  int64_t n = 0;
  if (v.type != RedisValue::Type::kString || !absl::SimpleAtoi(v.text, &n)) return std::nullopt;
  return n;
}

// A host counts as alive while its last lease is less than this many seconds
// old (the lease script prunes the rest: scores up to now - 60).
constexpr int64_t kHostsWindowSeconds = 60;

uint64_t NonNegative(const RedisValue& v) {
  return static_cast<uint64_t>(std::max<int64_t>(Integer(v), 0));
}

}  // namespace

RedisBuckets::RedisBuckets(RedisBucketsOptions options, std::unique_ptr<RedisLink> link)
    : options_(std::move(options)), link_(std::move(link)) {}

RedisBuckets::~RedisBuckets() = default;

absl::StatusOr<std::unique_ptr<RedisBuckets>> RedisBuckets::Connect(RedisBucketsOptions options) {
  absl::StatusOr<std::unique_ptr<RedisLink>> link = RedisLink::Connect(LinkOptionsFor(options));
  if (!link.ok()) return link.status();
  return std::unique_ptr<RedisBuckets>(new RedisBuckets(std::move(options), std::move(*link)));
}

std::unique_ptr<RedisBuckets> RedisBuckets::Lazy(RedisBucketsOptions options) {
  auto link = RedisLink::Lazy(LinkOptionsFor(options));
  return std::unique_ptr<RedisBuckets>(new RedisBuckets(std::move(options), std::move(link)));
}

absl::Status RedisBuckets::Validate(const BucketConfig& config) {
  if (absl::Status s = ValidateBucketConfig(config); !s.ok()) return s;
  const __int128 tau = internal_gcra::IntervalUnits(config.rate) * config.capacity;
  if (tau > kMaxRedisSpanUnits) {
    return absl::InvalidArgumentError(
        absl::StrCat("a burst of ", config.capacity, " at ", config.rate.ToString(), " spans ",
                     absl::FormatDuration(absl::Nanoseconds(static_cast<int64_t>(tau / 16))),
                     "; a bucket kept in Redis spans at most ",
                     absl::FormatDuration(absl::Nanoseconds(kMaxRedisSpanUnits / 16)),
                     " (Lua counts in doubles, exact below 2^53)"));
  }
  return absl::OkStatus();
}

std::string RedisBuckets::RedisKey(absl::string_view key) const {
  return absl::StrCat("{", options_.key_prefix, "}", key);
}

uint64_t RedisBuckets::commands() const { return link_->commands(); }

std::vector<std::string> RedisBuckets::TimeArgs() const {
  if (fixed_now_ns_ < 0) return {"", ""};
  return {absl::StrCat(fixed_now_ns_ / 1'000'000'000),
          absl::StrCat(fixed_now_ns_ % 1'000'000'000 / 1'000)};
}

// A bucket's key, and its interval and span as the scripts take them;
// InvalidArgument naming the bucket when Redis cannot hold it.
absl::Status RedisBuckets::AddBucket(absl::string_view key, const BucketConfig& config,
                                     std::vector<std::string>* keys,
                                     std::vector<std::string>* args) const {
  absl::StatusOr<Terms2> t = Derive(config);
  if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat(key, ": ", t.status().message()));
  keys->push_back(RedisKey(key));
  args->insert(args->end(), {absl::StrCat(t->interval), absl::StrCat(t->tau)});
  return absl::OkStatus();
}

absl::StatusOr<RedisDecision> RedisBuckets::Reserve(absl::Span<const RedisCharge> charges,
                                                    absl::Duration max_wait) {
  if (charges.empty()) return absl::InvalidArgumentError("a reservation needs a bucket");
  std::vector<std::string> keys;
  std::vector<std::string> args = TimeArgs();
  const int64_t wait_cap = kMaxRedisSpanUnits / 16;
  args.push_back(
      absl::StrCat(std::clamp<int64_t>(absl::ToInt64Nanoseconds(max_wait), 0, wait_cap)));
  for (const RedisCharge& c : charges) {
    if (absl::Status s = AddBucket(c.key, c.config, &keys, &args); !s.ok()) return s;
    args.push_back(absl::StrCat(c.cost));
  }
  absl::StatusOr<RedisValue> r = link_->Eval(internal_cluster::ReserveScript(), keys, args);
  if (!r.ok()) return r.status();
  if (absl::Status s = Malformed("a reservation", *r, 5); !s.ok()) return s;
  const std::vector<RedisValue>& e = r->elements;
  RedisDecision d;
  const int64_t outcome = Integer(e[0]);
  d.outcome = outcome > 0    ? Outcome::kGranted
              : outcome == 0 ? Outcome::kRefused
                             : Outcome::kNeverFits;
  const int64_t index = Integer(e[1]);
  d.bottleneck = index >= 1 && index <= static_cast<int64_t>(charges.size()) ? index - 1 : -1;
  d.wait_ns = std::clamp<int64_t>(Integer(e[2]), 0, kMaxRedisSpanUnits);
  d.redis_now_ns = RedisNanos(e[3], e[4]);
  return d;
}

absl::StatusOr<LeaseResult> RedisBuckets::Lease(absl::Span<const LeaseAsk> asks,
                                                absl::string_view host) {
  std::vector<std::string> keys;
  std::vector<std::string> args = TimeArgs();
  args.push_back(std::string(host));
  for (const LeaseAsk& a : asks) {
    if (absl::Status s = AddBucket(a.key, a.config, &keys, &args); !s.ok()) return s;
    args.insert(args.end(), {absl::StrCat(std::min(a.want, a.config.capacity)),
                             absl::StrCat(std::min(a.held, a.config.capacity))});
  }
  keys.push_back(RedisKey("hosts"));
  absl::StatusOr<RedisValue> r = link_->Eval(internal_cluster::LeaseScript(), keys, args);
  if (!r.ok()) return r.status();
  if (absl::Status s = Malformed("a lease", *r, 3 + 3 * asks.size()); !s.ok()) return s;
  const std::vector<RedisValue>& e = r->elements;
  LeaseResult result;
  result.redis_now_ns = RedisNanos(e[0], e[1]);
  result.hosts_alive = static_cast<uint32_t>(std::clamp<int64_t>(Integer(e[2]), 0, 1 << 30));
  for (size_t i = 0; i < asks.size(); ++i) {
    LeaseGrant g;
    // Clamped: never more than was asked, whatever came back.
    g.granted = std::min(NonNegative(e[3 + 3 * i]), asks[i].want);
    g.wait_ns = std::clamp<int64_t>(Integer(e[4 + 3 * i]), 0, kMaxRedisSpanUnits);
    g.available = std::min(NonNegative(e[5 + 3 * i]), asks[i].config.capacity);
    result.grants.push_back(g);
  }
  return result;
}

absl::StatusOr<std::vector<uint64_t>> RedisBuckets::Adjust(absl::Span<const LeaseAsk> asks,
                                                           absl::string_view mode,
                                                           absl::string_view host) {
  const std::vector<absl::string_view> modes(asks.size(), mode);
  return AdjustEach(asks, modes, host);
}

absl::StatusOr<std::vector<uint64_t>> RedisBuckets::AdjustEach(
    absl::Span<const LeaseAsk> asks, absl::Span<const absl::string_view> modes,
    absl::string_view host) {
  std::vector<std::string> keys;
  std::vector<std::string> args = TimeArgs();
  args.push_back(std::string(host));
  for (size_t i = 0; i < asks.size(); ++i) {
    const LeaseAsk& a = asks[i];
    if (absl::Status s = AddBucket(a.key, a.config, &keys, &args); !s.ok()) return s;
    args.insert(args.end(),
                {absl::StrCat(std::min<uint64_t>(a.want, uint64_t{1} << 52)), std::string(modes[i]),
                 absl::StrCat(std::min(a.held, a.config.capacity))});
  }
  if (keys.empty()) return std::vector<uint64_t>();
  absl::StatusOr<RedisValue> r = link_->Eval(internal_cluster::AdjustScript(), keys, args);
  if (!r.ok()) return r.status();
  if (absl::Status s = Malformed("an adjustment", *r, 2 + asks.size()); !s.ok()) return s;
  std::vector<uint64_t> levels;
  for (size_t i = 0; i < asks.size(); ++i) {
    levels.push_back(std::min(NonNegative(r->elements[2 + i]), asks[i].config.capacity));
  }
  return levels;
}

absl::StatusOr<std::vector<uint64_t>> RedisBuckets::Change(absl::Span<const BucketChange> changes) {
  static constexpr absl::string_view kModes[] = {"return", "debit", "clamp", "hold"};
  std::vector<LeaseAsk> asks;
  std::vector<absl::string_view> modes;
  for (const BucketChange& c : changes) {
    asks.push_back(c.bucket);
    asks.back().held = 0;
    // A hold is capped as waits are (about 1.63 days).
    if (c.op == BucketOp::kHold) {
      asks.back().want = std::min<uint64_t>(c.bucket.want, kMaxRedisSpanUnits / 16);
    }
    modes.push_back(kModes[static_cast<int>(c.op)]);
  }
  return AdjustEach(asks, modes, "");
}

absl::StatusOr<std::vector<uint64_t>> RedisBuckets::Return(absl::Span<const LeaseAsk> permits,
                                                           absl::string_view host) {
  return Adjust(permits, "return", host);
}

absl::StatusOr<std::vector<uint64_t>> RedisBuckets::Debit(absl::Span<const LeaseAsk> permits) {
  return Adjust(permits, "debit", "");
}

absl::StatusOr<std::vector<uint64_t>> RedisBuckets::Available(absl::Span<const LeaseAsk> buckets) {
  std::vector<LeaseAsk> reads(buckets.begin(), buckets.end());
  for (LeaseAsk& a : reads) a.want = 0;
  return Adjust(reads, "return", "");
}

absl::StatusOr<int64_t> RedisBuckets::NowNanos() {
  if (fixed_now_ns_ >= 0) return fixed_now_ns_;
  absl::StatusOr<RedisValue> time = link_->Command({"TIME"});
  if (!time.ok()) return time.status();
  if (absl::Status s = Malformed("TIME", *time, 2); !s.ok()) return s;
  std::optional<int64_t> seconds = IntegerText(time->elements[0]);
  std::optional<int64_t> micros = IntegerText(time->elements[1]);
  if (!seconds || !micros)
    return absl::InternalError("Redis answered TIME with an unexpected reply");
  return std::clamp<int64_t>(*seconds, 0, int64_t{9'000'000'000}) * 1'000'000'000 +
         std::clamp<int64_t>(*micros, 0, 999'999) * 1'000;
}

absl::StatusOr<std::vector<FleetHost>> RedisBuckets::Hosts() {
  absl::StatusOr<int64_t> now = NowNanos();
  if (!now.ok()) return now.status();
  const int64_t now_s = *now / 1'000'000'000;
  absl::StatusOr<RedisValue> r =
      link_->Command({"ZRANGEBYSCORE", RedisKey("hosts"),
                      absl::StrCat("(", now_s - kHostsWindowSeconds), "+inf", "WITHSCORES"});
  if (!r.ok()) return r.status();
  if (absl::Status s = Malformed("the hosts' set", *r, 0); !s.ok()) return s;
  std::vector<FleetHost> hosts;
  for (size_t i = 0; i + 1 < r->elements.size(); i += 2) {
    const std::optional<int64_t> seen = IntegerText(r->elements[i + 1]);
    if (r->elements[i].type != RedisValue::Type::kString || !seen) {
      return absl::InternalError("Redis answered the hosts' set with an unexpected reply");
    }
    hosts.push_back({r->elements[i].text, absl::Seconds(std::max<int64_t>(now_s - *seen, 0))});
  }
  std::sort(hosts.begin(), hosts.end(), [](const FleetHost& a, const FleetHost& b) {
    return std::tie(a.since_seen, a.name) < std::tie(b.since_seen, b.name);
  });
  return hosts;
}

}  // namespace sluice
