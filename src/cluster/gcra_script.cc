// The fleet's GCRA in Lua (gcra_script.h).

#include "src/cluster/gcra_script.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace sluice {
namespace internal_cluster {
namespace {

// Shared by every script: the time, loading and saving a bucket. Numbers go
// back to Redis through string.format('%.0f'): Lua's own conversion keeps
// only 14 digits.
constexpr char kPrelude[] = R"lua(
local UNITS_PER_S = 16000000000
local UNITS_PER_US = 16000
local DAY = 86400
local MAX_SPAN = 2251799813685248
local S, US
if ARGV[1] ~= '' then
  S, US = tonumber(ARGV[1]), tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  S, US = tonumber(t[1]), tonumber(t[2])
end
local function num(x) return string.format('%.0f', x) end
local function load(key, interval, tau)
  local st = {}
  local text = redis.call('GET', key)
  if text then st = {string.match(text, '^(%d+) (%d+) (%d+) (%d+)$')} end
  local tat, base = tonumber(st[1]), tonumber(st[2])
  if tat == nil or base == nil then tat, base = 0, S end
  if S - base > DAY then
    tat = math.max(tat - (S - base) * UNITS_PER_S, 0)
    base = S
  end
  local now = 0
  if S >= base then now = (S - base) * UNITS_PER_S + US * UNITS_PER_US end
  local oi, ou = tonumber(st[3]), tonumber(st[4])
  if oi ~= nil and ou ~= nil and ou > 0 and (oi ~= interval or ou ~= tau) and tat > now then
    tat = now + math.min(math.ceil((tat - now) / ou * tau), tau + MAX_SPAN)
  end
  return tat, base, now
end
local function save(key, tat, base, now, interval, tau)
  local ms = math.ceil(math.max(tat - now, 0) / 16000000) + 60000
  redis.call('SET', key, num(tat) .. ' ' .. num(base) .. ' ' .. num(interval) .. ' ' .. num(tau),
             'PX', num(ms))
end
local function available(tat, now, interval, tau)
  return math.max(math.floor((now + tau - math.max(tat, now)) / interval), 0)
end
-- Permits out in hosts' pools, per bucket: the hash "<bucket>:pools" holds
-- host -> "permits last-seen-second" and _total. A host unseen for a minute
-- is dropped (a host that died lost its pool), looked for every 10 s.
-- Returns the hash's key and the total with `host` holding `held`.
local function pools(key, host, held)
  local pk = key .. ':pools'
  local total = tonumber(redis.call('HGET', pk, '_total')) or 0
  local clean = tonumber(redis.call('HGET', pk, '_clean')) or 0
  if S - clean >= 10 then
    total = 0
    local all = redis.call('HGETALL', pk)
    for i = 1, #all, 2 do
      if string.sub(all[i], 1, 1) ~= '_' then
        local h, seen = string.match(all[i + 1], '^(%d+) (%d+)$')
        if tonumber(seen) < S - 60 then
          redis.call('HDEL', pk, all[i])
        else
          total = total + tonumber(h)
        end
      end
    end
    redis.call('HSET', pk, '_clean', num(S))
  end
  if host ~= '' then
    local old = redis.call('HGET', pk, host)
    local was = 0
    if old then was = tonumber(string.match(old, '^(%d+)')) end
    total = math.max(total - was + held, 0)
  end
  return pk, total
end
local function setpool(pk, host, held, total)
  if host ~= '' then redis.call('HSET', pk, host, num(held) .. ' ' .. num(S)) end
  redis.call('HSET', pk, '_total', num(total))
  redis.call('EXPIRE', pk, 120)
end
)lua";

constexpr char kReserveBody[] = R"lua(
local maxwait = tonumber(ARGV[3]) * 16
local states = {}
local worst, worst_k = 0, 0
for k = 1, #KEYS do
  local interval, tau = tonumber(ARGV[3 * k + 1]), tonumber(ARGV[3 * k + 2])
  local n = tonumber(ARGV[3 * k + 3])
  local tat, base, now = load(KEYS[k], interval, tau)
  local cost = n * interval
  if interval <= 0 or cost > tau then return {-1, k, 0, S, US} end
  local nxt = math.max(tat, now) + cost
  local excess = nxt - now - tau
  if excess > maxwait then return {0, k, math.floor((excess + 15) / 16), S, US} end
  local wait = 0
  if excess > 0 then
    wait = math.floor((excess + 15) / 16)
    nxt = now + tau + wait * 16
  end
  if wait > worst then worst, worst_k = wait, k end
  states[k] = {nxt, base, now, interval, tau}
end
for k = 1, #KEYS do
  local s = states[k]
  save(KEYS[k], s[1], s[2], s[3], s[4], s[5])
end
return {1, worst_k, worst, S, US}
)lua";

constexpr char kLeaseBody[] = R"lua(
local host = ARGV[3]
local out = {S, US, 0}
for k = 1, #KEYS - 1 do
  local interval, tau = tonumber(ARGV[4 * k]), tonumber(ARGV[4 * k + 1])
  local want, held = tonumber(ARGV[4 * k + 2]), tonumber(ARGV[4 * k + 3])
  local tat, base, now = load(KEYS[k], interval, tau)
  -- What the pools hold counts against the bucket: bucket and pools together
  -- never hold more than its capacity, so permits kept in a pool across a
  -- refill cannot make a burst larger than the bucket's.
  local pk, total = pools(KEYS[k], host, held)
  tat = math.max(tat, now + math.min(total * interval, tau))
  local from = math.max(tat, now)
  local avail = available(tat, now, interval, tau)
  local granted = math.min(want, avail)
  local after = from + granted * interval
  local wait = 0
  if granted < want then
    local more = math.min(want - granted, math.max(math.floor(tau / interval), 1))
    local ready = after + more * interval - tau - now
    if ready > 0 then wait = math.floor((ready + 15) / 16) end
  end
  if granted > 0 then save(KEYS[k], after, base, now, interval, tau) end
  -- A lease without a host ("") takes permits for no pool: nothing is out.
  if host ~= '' then setpool(pk, host, held + granted, total + granted) end
  out[#out + 1] = granted
  out[#out + 1] = wait
  out[#out + 1] = avail - granted
end
if host ~= '' then
  local hosts = KEYS[#KEYS]
  redis.call('ZADD', hosts, S, host)
  redis.call('ZREMRANGEBYSCORE', hosts, '-inf', S - 60)
  redis.call('EXPIRE', hosts, 120)
  out[3] = redis.call('ZCARD', hosts)
end
return out
)lua";

constexpr char kAdjustBody[] = R"lua(
local host = ARGV[3]
local out = {S, US}
-- A hold (mode "hold") is kept beside the bucket as "BASE UNTIL" (UNTIL in
-- units since BASE) until it ends, so that no return ends it early.
local function hold_end(key, base)
  local text = redis.call('GET', key .. ':hold')
  if not text then return nil end
  local hb, hu = string.match(text, '^(%d+) (%d+)$')
  if hb == nil then return nil end
  return tonumber(hu) - (base - tonumber(hb)) * UNITS_PER_S
end
local function held_floor(key, base, now, interval, tau)
  local untl = hold_end(key, base)
  if untl == nil or untl <= now then return now end
  return untl + tau - interval
end
for k = 1, #KEYS do
  local interval, tau = tonumber(ARGV[5 * k - 1]), tonumber(ARGV[5 * k])
  local n, mode = tonumber(ARGV[5 * k + 1]), ARGV[5 * k + 2]
  local held = tonumber(ARGV[5 * k + 3])
  local tat, base, now = load(KEYS[k], interval, tau)
  local was = tat
  if mode == 'return' and host ~= '' then
    local pk, total = pools(KEYS[k], host, held)
    setpool(pk, host, held, total)
  end
  if mode == 'return' and n > 0 then
    local floor = held_floor(KEYS[k], base, now, interval, tau)
    if tat > floor then tat = math.max(tat - n * interval, floor) end
  elseif mode == 'debit' and n > 0 then
    tat = math.min(math.max(tat, now) + n * interval, now + tau + MAX_SPAN)
  elseif mode == 'clamp' then
    local avail = available(tat, now, interval, tau)
    if avail > n then tat = math.max(tat, now) + (avail - n) * interval end
  elseif mode == 'hold' and n > 0 then
    -- A hold never shortens an earlier one.
    local untl = now + n * 16
    local was_until = hold_end(KEYS[k], base)
    if was_until == nil or was_until < untl then
      redis.call('SET', KEYS[k] .. ':hold', num(base) .. ' ' .. num(untl),
                 'PX', num(math.ceil(n / 1000000) + 1000))
    end
    tat = math.max(tat, untl + tau - interval)
  end
  if n > 0 or tat ~= was then save(KEYS[k], tat, base, now, interval, tau) end
  out[#out + 1] = available(tat, now, interval, tau)
end
return out
)lua";

}  // namespace

const std::string& ReserveScript() {
  static const std::string* script = new std::string(absl::StrCat(kPrelude, kReserveBody));
  return *script;
}

const std::string& LeaseScript() {
  static const std::string* script = new std::string(absl::StrCat(kPrelude, kLeaseBody));
  return *script;
}

const std::string& AdjustScript() {
  static const std::string* script = new std::string(absl::StrCat(kPrelude, kAdjustBody));
  return *script;
}

}  // namespace internal_cluster
}  // namespace sluice
