// A fleet's window counters in Redis, with a ledger for outages
// (redis_counters.h).

#include "src/cluster/redis_counters.h"

#include <algorithm>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "src/cluster/counter_script.h"
#include "src/cluster/redis_link.h"

namespace sluice {
namespace internal_cluster {
namespace {

constexpr int64_t kMaxAmount = WindowCounterRef::kMaxAmount;
// Ledger totals stay exact in Lua's doubles.
constexpr int64_t kMaxTotal = int64_t{1} << 52;

int64_t Integer(const RedisValue& v) {
  return v.type == RedisValue::Type::kInteger ? static_cast<int64_t>(v.integer) : 0;
}

const char* OpName(uint8_t op) {
  static const char* const kNames[] = {"none", "read", "add", "refund", "debit"};
  return kNames[op];
}

int64_t ClampTotal(int64_t v) { return std::clamp(v, -kMaxTotal, kMaxTotal); }

// A counter's state as Redis reported it, clamped to what a cell can hold.
WindowCounterRef::Reading ReadingOf(const RedisValue& window, const RedisValue& used) {
  return {std::clamp<int64_t>(Integer(window), 0, WindowCounterRef::kMaxWindow),
          std::clamp<int64_t>(Integer(used), 0, kMaxAmount)};
}

}  // namespace

class RedisCounters::Counter final : public CounterBackend {
 public:
  Counter(RedisCounters* owner, size_t index, std::string redis_key, WindowCounterRef local)
      : index(index), redis_key(std::move(redis_key)), local(local), owner_(owner) {}

  bool TryAdd(int64_t window, int64_t amount, int64_t limit) override {
    if (amount < 0) return false;
    return owner_->Run(*this, {Op::kAdd, window, amount, limit}).ok;
  }
  void Refund(int64_t window, int64_t amount) override {
    owner_->Run(*this, {Op::kRefund, window, amount, 0});
  }
  void Debit(int64_t window, int64_t amount) override {
    owner_->Run(*this, {Op::kDebit, window, amount, 0});
  }
  int64_t Used(int64_t window) override {
    const WindowCounterRef::Reading r = owner_->Run(*this, {Op::kRead, window, 0, 0}).reading;
    return r.window == window ? r.used : 0;
  }
  WindowCounterRef::Reading Load() override {
    return owner_->Run(*this, {Op::kRead, 0, 0, 0}).reading;
  }

  const size_t index;
  const std::string redis_key;
  const WindowCounterRef local;
  // The fleet's counter at Redis's last answer about it; guarded by the
  // owner's mu_.
  WindowCounterRef::Reading known{0, 0};

 private:
  RedisCounters* const owner_;
};

namespace {

std::string NewClientId() {
  absl::BitGen gen;
  return absl::StrCat(absl::Hex(absl::Uniform<uint64_t>(gen), absl::kZeroPad16));
}

}  // namespace

RedisCounters::RedisCounters(RedisCountersOptions options)
    : options_(std::move(options)),
      link_(RedisLink::Lazy(LinkOptionsFor(options_.redis))),
      ledger_key_(absl::StrCat("{", options_.redis.key_prefix, "}budget-client:", NewClientId())),
      hosts_key_(absl::StrCat("{", options_.redis.key_prefix, "}hosts")) {}

RedisCounters::~RedisCounters() = default;

std::string RedisCounters::RedisKey(absl::string_view key) const {
  return absl::StrCat("{", options_.redis.key_prefix, "}budget:", key);
}

CounterBackend* RedisCounters::Open(absl::string_view key, WindowCounterRef local) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = by_key_.try_emplace(key, counters_.size());
  if (inserted) {
    counters_.push_back(std::make_unique<Counter>(this, counters_.size(), RedisKey(key), local));
  }
  return counters_[it->second].get();
}

absl::Time RedisCounters::Local() const {
  return options_.wall_clock ? options_.wall_clock() : absl::Now();
}

bool RedisCounters::DueLocked() const { return up_ || Steady::now() >= next_probe_; }

void RedisCounters::DownLocked() {
  up_ = false;
  next_probe_ = Steady::now() + absl::ToChronoNanoseconds(options_.probe_interval);
}

bool RedisCounters::OwesLocked() const {
  if (pending_) return true;
  return std::any_of(ledger_.begin(), ledger_.end(), [](const auto& kv) {
    return kv.second.total != kv.second.base || kv.second.local_in != 0;
  });
}

absl::Time RedisCounters::WallTime() {
  std::lock_guard<std::mutex> lock(mu_);
  const bool stale =
      !answered_ || Steady::now() - last_answer_ >= absl::ToChronoNanoseconds(options_.refresh);
  if (stale && DueLocked() && !CallLocked(nullptr, {}).ok()) DownLocked();
  return Local() + offset_;
}

bool RedisCounters::Flush() {
  std::lock_guard<std::mutex> lock(mu_);
  if (OwesLocked() && DueLocked() && !CallLocked(nullptr, {}).ok()) DownLocked();
  return !OwesLocked();
}

bool RedisCounters::redis_up() const {
  std::lock_guard<std::mutex> lock(mu_);
  return up_;
}

size_t RedisCounters::owed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<size_t>(std::count_if(ledger_.begin(), ledger_.end(), [](const auto& kv) {
    return kv.second.total != kv.second.base;
  }));
}

RedisCounters::Answer RedisCounters::Run(Counter& c, Ask ask) {
  ask.window = std::clamp<int64_t>(ask.window, 0, WindowCounterRef::kMaxWindow);
  // An amount over what a window holds can never be added; a larger limit
  // is no larger than that.
  ask.amount = std::clamp<int64_t>(ask.amount, 0, kMaxAmount + (ask.op == Op::kAdd ? 1 : 0));
  ask.limit = std::clamp<int64_t>(ask.limit, -1, kMaxAmount);
  std::lock_guard<std::mutex> lock(mu_);
  if (!up_ && DueLocked()) {
    // Redis was away: the ledger first, then (if it answered) the operation.
    if (!CallLocked(nullptr, {}).ok()) DownLocked();
  }
  if (up_) {
    absl::StatusOr<Answer> answer = CallLocked(&c, ask);
    if (answer.ok()) return *answer;
    DownLocked();
  }
  return LocalLocked(c, ask);
}

std::vector<RedisCounters::EntryKey> RedisCounters::ArgsLocked(Counter* c, const Ask& ask,
                                                               uint64_t seq,
                                                               std::vector<std::string>* keys,
                                                               std::vector<std::string>* args) {
  *keys = {ledger_key_, hosts_key_};
  absl::flat_hash_map<size_t, size_t> key_index;  // counter -> KEYS index (1-based)
  auto key_of = [&](size_t counter) {
    auto [it, inserted] = key_index.try_emplace(counter, keys->size() + 1);
    if (inserted) keys->push_back(counters_[counter]->redis_key);
    return absl::StrCat(it->second);
  };
  *args = {absl::StrCat(seq),
           OpName(static_cast<uint8_t>(ask.op)),
           c == nullptr ? "0" : key_of(c->index),
           absl::StrCat(ask.window),
           absl::StrCat(ask.amount),
           absl::StrCat(ask.limit)};
  if (pending_) {
    args->insert(args->end(), {absl::StrCat(pending_->seq), key_of(pending_->entry.first),
                               absl::StrCat(pending_->entry.second),
                               absl::StrCat(ledger_[pending_->entry].base)});
  } else {
    args->insert(args->end(), {"0", "0", "0", "0"});
  }
  std::vector<EntryKey> sent;
  for (const auto& [key, entry] : ledger_) {
    if (entry.total != entry.base || (pending_ && pending_->entry == key)) sent.push_back(key);
  }
  args->push_back(absl::StrCat(sent.size()));
  for (const EntryKey& key : sent) {
    const Entry& e = ledger_[key];
    args->insert(args->end(), {key_of(key.first), absl::StrCat(key.second), absl::StrCat(e.total),
                               absl::StrCat(e.base)});
  }
  return sent;
}

absl::StatusOr<RedisCounters::Answer> RedisCounters::CallLocked(Counter* c, const Ask& ask) {
  const uint64_t seq = ++seq_;
  std::vector<std::string> keys;
  std::vector<std::string> args;
  const std::vector<EntryKey> sent = ArgsLocked(c, ask, seq, &keys, &args);
  const absl::Time sent_at = Local();
  absl::StatusOr<RedisValue> r = link_->Eval(CounterScript(), keys, args);
  const absl::Time answered_at = Local();
  if (r.ok() &&
      (r->type != RedisValue::Type::kArray || r->elements.size() != 6 + 2 * sent.size())) {
    r = absl::InternalError("Redis answered a budget counter's script with an unexpected reply");
  }
  if (!r.ok()) {
    // Redis may have run it (a timeout after it did): name it next time. A
    // mutating call is only made while no call is pending (one that fails
    // takes Redis for away, and the probes that follow mutate nothing).
    if (c != nullptr && ask.op != Op::kRead && !pending_) {
      pending_ = Pending{seq, {c->index, ask.window}};
      ledger_[pending_->entry];
    }
    return r.status();
  }
  const std::vector<RedisValue>& e = r->elements;
  const absl::Time redis_now = absl::FromUnixMicros(
      std::clamp<int64_t>(Integer(e[0]), 0, int64_t{9'000'000'000}) * 1'000'000 +
      std::clamp<int64_t>(Integer(e[1]), 0, 999'999));
  offset_ = redis_now - (sent_at + (answered_at - sent_at) / 2);
  hosts_ = static_cast<uint32_t>(std::clamp<int64_t>(Integer(e[2]), 0, 1 << 30));
  up_ = answered_ = true;
  last_answer_ = Steady::now();
  pending_.reset();
  std::vector<int64_t> readings;
  for (size_t i = 6; i < e.size(); ++i) readings.push_back(Integer(e[i]));
  ConfirmedLocked(sent, readings);
  Answer answer{Integer(e[3]) != 0, ReadingOf(e[4], e[5])};
  if (c != nullptr) c->known = answer.reading;
  return answer;
}

// Redis applied the whole ledger: what the host's cell held for it is in
// the fleet's counter now.
void RedisCounters::ConfirmedLocked(const std::vector<EntryKey>& sent,
                                    const std::vector<int64_t>& readings) {
  for (size_t i = 0; i < sent.size(); ++i) {
    ledger_[sent[i]].base = ledger_[sent[i]].total;
    counters_[sent[i].first]->known = {
        std::clamp<int64_t>(readings[2 * i], 0, WindowCounterRef::kMaxWindow),
        std::clamp<int64_t>(readings[2 * i + 1], 0, kMaxAmount)};
  }
  for (auto& [key, entry] : ledger_) {
    if (entry.local_in == 0) continue;
    counters_[key.first]->local.Refund(key.second, entry.local_in);
    entry.local_in = 0;
  }
}

RedisCounters::Answer RedisCounters::LocalLocked(Counter& c, const Ask& ask) {
  if (ask.op == Op::kRead || ask.op == Op::kNone) return {true, LocalReadingLocked(c)};
  Entry& e = ledger_[{c.index, ask.window}];
  bool ok = true;
  switch (ask.op) {
    case Op::kAdd:
      ok = LocalAddLocked(c, ask);
      if (ok) {
        e.total = ClampTotal(e.total + ask.amount);
        e.local_in = std::min(e.local_in + ask.amount, kMaxTotal);
      }
      break;
    case Op::kRefund: {
      // What this process put in the host's cell comes out of it; the rest
      // was taken from Redis and is owed back to it.
      const int64_t from_cell = std::min(ask.amount, e.local_in);
      c.local.Refund(ask.window, from_cell);
      e.local_in -= from_cell;
      e.total = ClampTotal(e.total - ask.amount);
      break;
    }
    case Op::kDebit:
      c.local.Debit(ask.window, ask.amount);
      e.local_in = std::min(e.local_in + ask.amount, kMaxTotal);
      e.total = ClampTotal(e.total + ask.amount);
      break;
    default:
      break;
  }
  return {ok, LocalReadingLocked(c)};
}

bool RedisCounters::LocalAddLocked(Counter& c, const Ask& ask) {
  switch (options_.on_redis_down) {
    case RedisDown::kFailClosed:
      return false;
    case RedisDown::kFailOpen:
      c.local.Debit(ask.window, ask.amount);
      return true;
    case RedisDown::kLocalShare:
      break;
  }
  return c.local.TryAdd(ask.window, ask.amount, ShareLocked(c, ask.window, ask.limit));
}

int64_t RedisCounters::ShareLocked(const Counter& c, int64_t window, int64_t limit) const {
  // An older window counts against the newer one, as in the cell.
  const int64_t spent = window <= c.known.window ? c.known.used : 0;
  const int64_t left = std::max<int64_t>(std::min(limit, kMaxAmount) - spent, 0);
  const int64_t hosts = hosts_ > 0 ? hosts_ : std::max<uint32_t>(options_.expected_hosts, 1);
  return left / hosts;
}

// The fleet's counter at the last answer, plus what the host spent in the
// same window since.
WindowCounterRef::Reading RedisCounters::LocalReadingLocked(const Counter& c) const {
  const WindowCounterRef::Reading host = c.local.Load();
  if (host.window > c.known.window) return host;
  if (host.window < c.known.window) return c.known;
  return {c.known.window, std::min(c.known.used + host.used, kMaxAmount)};
}

}  // namespace internal_cluster
}  // namespace sluice
