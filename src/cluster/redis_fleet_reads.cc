// What the fleet's Redis knows beside the buckets: limits learned from the
// provider (RedisBuckets::ShareLearnedRate, ShareLearnedBurst, Learned),
// what hosts' pools hold (RedisBuckets::Pools), and the fleet's budgets and
// concurrency caps as the stats read them (RedisBuckets::ReadBudgetsAndCaps).

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sluice/redis_buckets.h"
#include "sluice/window_counter.h"
#include "src/cluster/redis_link.h"

namespace sluice {
namespace {

using internal_cluster::RedisValue;

// The segment keeps a learned burst in 32 bits.
constexpr uint64_t kMaxLearnedBurst = 0xFFFFFFFFu;

// Raises a hash field to ARGV[2] if it holds less (or nothing, or garbage).
constexpr char kRaiseScript[] = R"lua(
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') or 0
if tonumber(ARGV[2]) > current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
)lua";

std::string RateField(absl::string_view key) { return absl::StrCat("rate:", key); }
std::string BurstField(absl::string_view key) { return absl::StrCat("burst:", key); }

// "permits period_ns", as ShareLearnedRate writes it; nullopt for anything
// else, or for a rate that would not be valid.
std::optional<Rate> ParseRate(const RedisValue& v) {
  if (v.type != RedisValue::Type::kString) return std::nullopt;
  std::vector<absl::string_view> parts = absl::StrSplit(v.text, ' ');
  uint64_t permits = 0;
  int64_t period_ns = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &permits) ||
      !absl::SimpleAtoi(parts[1], &period_ns) || permits == 0 || period_ns <= 0) {
    return std::nullopt;
  }
  const Rate rate(permits, absl::Nanoseconds(period_ns));
  if (!rate.Validate().ok()) return std::nullopt;
  return rate;
}

uint64_t ParseBurst(const RedisValue& v) {
  uint64_t burst = 0;
  if (v.type != RedisValue::Type::kString || !absl::SimpleAtoi(v.text, &burst)) return 0;
  return std::min(burst, kMaxLearnedBurst);
}

// A host's entry in a bucket's pools hash: "permits last-seen-second".
std::optional<std::pair<uint64_t, int64_t>> ParsePoolEntry(const RedisValue& v) {
  if (v.type != RedisValue::Type::kString) return std::nullopt;
  std::vector<absl::string_view> parts = absl::StrSplit(v.text, ' ');
  uint64_t held = 0;
  int64_t seen = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &held) ||
      !absl::SimpleAtoi(parts[1], &seen)) {
    return std::nullopt;
  }
  return std::make_pair(held, seen);
}

// As the lease script counts: a host unseen for longer holds nothing.
constexpr int64_t kPoolsWindowSeconds = 60;

}  // namespace

absl::StatusOr<std::vector<PoolsHeld>> RedisBuckets::Pools(absl::Span<const std::string> keys) {
  absl::StatusOr<int64_t> now_ns = NowNanos();
  if (!now_ns.ok()) return now_ns.status();
  const int64_t now = *now_ns / 1'000'000'000;
  std::vector<PoolsHeld> pools;
  for (const std::string& key : keys) {
    absl::StatusOr<RedisValue> r = link_->Command({"HGETALL", RedisKey(key) + ":pools"});
    if (!r.ok()) return r.status();
    if (r->type != RedisValue::Type::kArray) {
      return absl::InternalError("Redis answered HGETALL of the pools with an unexpected reply");
    }
    PoolsHeld held;
    for (size_t i = 0; i + 1 < r->elements.size(); i += 2) {
      const RedisValue& field = r->elements[i];
      if (field.type != RedisValue::Type::kString || absl::StartsWith(field.text, "_")) continue;
      const auto entry = ParsePoolEntry(r->elements[i + 1]);
      if (!entry || entry->first == 0 || entry->second < now - kPoolsWindowSeconds) continue;
      held.permits += std::min<uint64_t>(entry->first, uint64_t{1} << 52);
      ++held.hosts;
    }
    pools.push_back(held);
  }
  return pools;
}

absl::StatusOr<FleetReadings> RedisBuckets::ReadBudgetsAndCaps(
    absl::Span<const std::string> budgets, absl::Span<const std::string> caps) {
  FleetReadings readings;
  absl::StatusOr<int64_t> now = NowNanos();
  if (!now.ok()) return now.status();
  readings.redis_now_ns = *now;
  for (const std::string& key : budgets) {
    absl::StatusOr<RedisValue> r = link_->Command({"GET", RedisKey(absl::StrCat("budget:", key))});
    if (!r.ok()) return r.status();
    FleetBudgetReading reading;
    std::vector<absl::string_view> parts;
    if (r->type == RedisValue::Type::kString) parts = absl::StrSplit(r->text, ' ');
    int64_t window = 0, used = 0;
    if (parts.size() == 2 && absl::SimpleAtoi(parts[0], &window) &&
        absl::SimpleAtoi(parts[1], &used)) {
      reading.window = std::clamp<int64_t>(window, 0, WindowCounterRef::kMaxWindow);
      reading.used = std::clamp<int64_t>(used, 0, WindowCounterRef::kMaxAmount);
    }
    readings.budgets.push_back(reading);
  }
  for (const std::string& key : caps) {
    absl::StatusOr<RedisValue> r = link_->Command(
        {"ZCOUNT", RedisKey(absl::StrCat("cap:", key)), absl::StrCat(*now / 1'000'000), "+inf"});
    if (!r.ok()) return r.status();
    const long long n = r->type == RedisValue::Type::kInteger ? r->integer : 0;
    readings.in_flight.push_back(static_cast<uint32_t>(std::clamp<long long>(n, 0, 1 << 30)));
  }
  return readings;
}

absl::Status RedisBuckets::ShareLearnedRate(absl::string_view key, std::optional<Rate> rate) {
  absl::StatusOr<RedisValue> r =
      rate ? link_->Command(
                 {"HSET", RedisKey("learned"), RateField(key),
                  absl::StrCat(rate->permits(), " ", absl::ToInt64Nanoseconds(rate->period()))})
           : link_->Command({"HDEL", RedisKey("learned"), RateField(key)});
  return r.status();
}

absl::Status RedisBuckets::ShareLearnedBurst(absl::string_view key, uint64_t burst) {
  if (burst == 0) return absl::OkStatus();
  return link_
      ->Eval(kRaiseScript, {RedisKey("learned")},
             {BurstField(key), absl::StrCat(std::min(burst, kMaxLearnedBurst))})
      .status();
}

absl::StatusOr<std::vector<LearnedLimits>> RedisBuckets::Learned(
    absl::Span<const std::string> keys) {
  if (keys.empty()) return std::vector<LearnedLimits>();
  std::vector<std::string> argv = {"HMGET", RedisKey("learned")};
  for (const std::string& key : keys) {
    argv.push_back(RateField(key));
    argv.push_back(BurstField(key));
  }
  absl::StatusOr<RedisValue> r = link_->Command(argv);
  if (!r.ok()) return r.status();
  if (r->type != RedisValue::Type::kArray || r->elements.size() != 2 * keys.size()) {
    return absl::InternalError(
        "Redis answered HMGET of the learned limits with an unexpected reply");
  }
  std::vector<LearnedLimits> learned;
  for (size_t i = 0; i < keys.size(); ++i) {
    learned.push_back({ParseRate(r->elements[2 * i]), ParseBurst(r->elements[2 * i + 1])});
  }
  return learned;
}

}  // namespace sluice
