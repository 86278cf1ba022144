// A fleet's concurrency caps in Lua (lease_scripts.h).

#include "src/cluster/lease_scripts.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace sluice {
namespace internal_cluster {
namespace {

// The time in ms on Redis's clock; numbers go back to Redis through
// string.format('%.0f'): Lua's own conversion keeps only 14 digits.
constexpr char kPrelude[] = R"lua(
local t = redis.call('TIME')
local S = tonumber(t[1])
local NOW = S * 1000 + math.floor(tonumber(t[2]) / 1000)
local function num(x) return string.format('%.0f', x) end
local function hosts(k) return redis.call('ZCOUNT', k, '(' .. num(S - 60), '+inf') end
local function keep(cap, ttl)
  if redis.call('PTTL', cap) < ttl then redis.call('PEXPIRE', cap, ttl) end
end
)lua";

constexpr char kAcquire[] = R"lua(
local cap, count, ttl = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', cap, '-inf', num(NOW))
local held = redis.call('ZCARD', cap)
if held >= count then return {0, held, hosts(KEYS[2])} end
redis.call('ZADD', cap, num(NOW + ttl), ARGV[3])
keep(cap, ttl)
return {1, held + 1, hosts(KEYS[2])}
)lua";

constexpr char kRefresh[] = R"lua(
local ttl = tonumber(ARGV[1])
local out = {hosts(KEYS[#KEYS])}
local a = 2
for i = 1, #KEYS - 1 do
  local cap = KEYS[i]
  local n = tonumber(ARGV[a])
  a = a + 1
  for j = 1, n do
    local m = ARGV[a]
    a = a + 1
    local score = tonumber(redis.call('ZSCORE', cap, m))
    if score ~= nil and score > NOW then
      redis.call('ZADD', cap, num(NOW + ttl), m)
      out[#out + 1] = 1
    else
      if score ~= nil then redis.call('ZREM', cap, m) end
      out[#out + 1] = 0
    end
  end
  keep(cap, ttl)
end
return out
)lua";

constexpr char kCount[] = R"lua(
return redis.call('ZCOUNT', KEYS[1], '(' .. num(NOW), '+inf')
)lua";

constexpr char kReclaim[] = R"lua(
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', num(NOW))
)lua";

}  // namespace

const std::string& CapAcquireScript() {
  static const std::string* const script = new std::string(absl::StrCat(kPrelude, kAcquire));
  return *script;
}

const std::string& CapRefreshScript() {
  static const std::string* const script = new std::string(absl::StrCat(kPrelude, kRefresh));
  return *script;
}

const std::string& CapCountScript() {
  static const std::string* const script = new std::string(absl::StrCat(kPrelude, kCount));
  return *script;
}

const std::string& CapReclaimScript() {
  static const std::string* const script = new std::string(absl::StrCat(kPrelude, kReclaim));
  return *script;
}

}  // namespace internal_cluster
}  // namespace sluice
