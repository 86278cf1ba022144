// A fleet's window counters in Lua (counter_script.h).

#include "src/cluster/counter_script.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "sluice/window_counter.h"

namespace sluice {
namespace internal_cluster {
namespace {

// Numbers go back to Redis through string.format('%.0f'): Lua's own
// conversion keeps only 14 digits.
constexpr char kBody[] = R"lua(
local now = redis.call('TIME')
local S, US = tonumber(now[1]), tonumber(now[2])
local H = KEYS[1]
local function num(x) return string.format('%.0f', x) end
local function get(k)
  local text = redis.call('GET', k)
  if text then
    local w, u = string.match(text, '^(%d+) (%d+)$')
    if w then return tonumber(w), math.min(tonumber(u), MAX) end
  end
  return 0, 0
end
local function put(k, w, u)
  redis.call('SET', k, num(w) .. ' ' .. num(u), 'PX', COUNTER_TTL)
end
-- An older window counts against the newer one the counter is in.
local function current(k, w)
  local cw, cu = get(k)
  if w > cw then return w, 0 end
  return cw, cu
end
local function add(k, w, amount, limit)
  local cw, used = current(k, w)
  if amount < 0 or amount > math.min(limit, MAX) - used then return 0, 0 end
  put(k, cw, used + amount)
  return amount, 1
end
local function refund(k, w, amount)
  local cw, used = get(k)
  if cw ~= w then return 0 end
  local r = math.min(amount, used)
  put(k, cw, used - r)
  return -r
end
local function debit(k, w, amount)
  local cw, used = current(k, w)
  local total = math.min(used + amount, MAX)
  put(k, cw, total)
  return total - used
end
local function field(ki, w) return 'w:' .. w .. ':' .. KEYS[ki] end

if ARGV[7] ~= '0' then
  local rec = redis.call('HGET', H, 'op')
  if rec then
    local seq, d = string.match(rec, '^(%d+) (%-?%d+)$')
    if seq == ARGV[7] then
      local f = field(tonumber(ARGV[8]), ARGV[9])
      local applied = tonumber(redis.call('HGET', H, f)) or tonumber(ARGV[10])
      redis.call('HSET', H, f, num(applied + tonumber(d)))
      redis.call('HDEL', H, 'op')
    end
  end
end

local after = {}
for j = 0, tonumber(ARGV[11]) - 1 do
  local a = 12 + 4 * j
  local ki, w, total = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local f = field(ki, ARGV[a + 1])
  local owed = total - (tonumber(redis.call('HGET', H, f)) or tonumber(ARGV[a + 3]))
  if owed > 0 then debit(KEYS[ki], w, owed) elseif owed < 0 then refund(KEYS[ki], w, -owed) end
  redis.call('HSET', H, f, ARGV[a + 2])
  local cw, cu = get(KEYS[ki])
  after[#after + 1] = cw
  after[#after + 1] = cu
end

local op, ki = ARGV[2], tonumber(ARGV[3])
local w, amount, limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ok, d = 1, nil
if op == 'add' then
  d, ok = add(KEYS[ki], w, amount, limit)
elseif op == 'refund' then
  d = refund(KEYS[ki], w, amount)
elseif op == 'debit' then
  d = debit(KEYS[ki], w, amount)
end
if d ~= nil then redis.call('HSET', H, 'op', ARGV[1] .. ' ' .. num(d)) end
redis.call('PEXPIRE', H, LEDGER_TTL)
local cw, cu = 0, 0
if ki > 0 then cw, cu = get(KEYS[ki]) end
local hosts = redis.call('ZCOUNT', KEYS[2], '(' .. num(S - 60), '+inf')
local reply = {S, US, hosts, ok, cw, cu}
for i = 1, #after do reply[#reply + 1] = after[i] end
return reply
)lua";

}  // namespace

const std::string& CounterScript() {
  static const std::string* const script = new std::string(absl::StrCat(
      "local MAX = ", WindowCounterRef::kMaxAmount, "\nlocal COUNTER_TTL = ", kCounterTtlMs,
      "\nlocal LEDGER_TTL = ", kLedgerTtlMs, kBody));
  return *script;
}

}  // namespace internal_cluster
}  // namespace sluice
