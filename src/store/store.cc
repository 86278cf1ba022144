#include "sluice/store.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "sluice/pool.h"
#include "src/store/process.h"

namespace sluice {
namespace {

// Spreads processes and threads over a cap's lease words.
uint32_t LeaseHint(uint64_t tag) {
  static std::atomic<uint32_t> next{0};
  return static_cast<uint32_t>(tag * 0x9E3779B1u) + next.fetch_add(1);
}

bool HolderDead(uint64_t tag) { return !ProcessTagMaybeAlive(tag); }

class LocalStore final : public Store {
 public:
  explicit LocalStore(Clock clock) : clock_(clock) {}

  absl::StatusOr<StoredBucket> Bucket(absl::string_view key, const BucketConfig& config) override {
    return Open(key, config, /*pool=*/false);
  }

  absl::StatusOr<StoredBucket> Pool(absl::string_view key, const BucketConfig& config) override {
    return Open(key, config, /*pool=*/true);
  }

  absl::Status Learn(absl::string_view key, std::optional<Rate> learned) override {
    if (learned) {
      if (absl::Status s = learned->Validate(); !s.ok()) return s;
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto it = buckets_.find(key);
    if (it == buckets_.end()) {
      return absl::NotFoundError(absl::StrCat("no bucket named '", key, "'"));
    }
    it->second->learned = learned;
    return ApplyLocked(*it->second);
  }

  absl::Status LearnBurst(absl::string_view key, uint64_t burst) override {
    if (burst == 0) return absl::InvalidArgumentError("a learned burst must be at least 1 permit");
    std::lock_guard<std::mutex> lock(mu_);
    auto it = buckets_.find(key);
    if (it == buckets_.end()) {
      return absl::NotFoundError(absl::StrCat("no bucket named '", key, "'"));
    }
    if (burst <= it->second->learned_burst) return absl::OkStatus();
    it->second->learned_burst = burst;
    return ApplyLocked(*it->second);
  }

  absl::StatusOr<StoredCounter> Counter(absl::string_view key) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto& entry = counters_[key];
    if (entry == nullptr) entry = std::make_unique<CounterEntry>();
    return StoredCounter{WindowCounterRef(&entry->cell), &entry->bottlenecks};
  }

  absl::StatusOr<StoredLeases> Leases(absl::string_view key, uint32_t count) override {
    if (count < 1) return absl::InvalidArgumentError("a concurrency cap needs at least 1 lease");
    std::lock_guard<std::mutex> lock(mu_);
    auto& entry = leases_[key];
    if (entry == nullptr) {
      entry = std::make_unique<LeaseEntry>(count);
    } else if (entry->words.size() != count) {
      return absl::FailedPreconditionError(
          absl::StrCat("concurrency cap '", key, "' exists with ", entry->words.size(),
                       " leases; asked for ", count, " (caps cannot be resized in place)"));
    }
    return StoredLeases(LeaseSetRef(entry->words.data(), count, &entry->generation),
                        &entry->bottlenecks);
  }

  Clock clock() const override { return clock_; }

 private:
  struct BucketEntry;

  absl::StatusOr<StoredBucket> Open(absl::string_view key, const BucketConfig& config, bool pool) {
    if (absl::Status s = ValidateBucketConfig(config); !s.ok()) return s;
    std::lock_guard<std::mutex> lock(mu_);
    auto& entry = buckets_[key];
    if (entry == nullptr) {
      entry = std::make_unique<BucketEntry>();
      absl::Status s = pool ? PoolRef::Init(&entry->cell, config)
                            : BucketRef::Init(&entry->cell, config, clock_.Now());
      if (!s.ok()) {
        buckets_.erase(key);
        return s;
      }
      entry->running = config;
    } else if (pool && !PoolRef::IsPool(entry->cell)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "'", key, "' is a bucket that refills by itself, not a pool of a fleet's leases"));
    }
    entry->configured = config;
    if (absl::Status s = ApplyLocked(*entry); !s.ok()) return s;
    return StoredBucket{BucketRef(&entry->cell, clock_), &entry->bottlenecks, entry->learned,
                        entry->learned_burst, PoolRef::IsPool(entry->cell)};
  }

  struct BucketEntry {
    BucketCell cell;
    BucketConfig configured;
    std::optional<Rate> learned;
    uint64_t learned_burst = 0;
    BucketConfig running;  // what the cell runs at
    std::atomic<uint64_t> bottlenecks{0};
  };

  // Serialized by mu_, as BucketRef::Reconfigure requires. REQUIRES: mu_ held.
  absl::Status ApplyLocked(BucketEntry& entry) {
    const BucketConfig target =
        CapBurst(entry.learned ? LowerTo(entry.configured, *entry.learned) : entry.configured,
                 entry.learned_burst);
    if (target.rate == entry.running.rate && target.capacity == entry.running.capacity) {
      return absl::OkStatus();
    }
    if (absl::Status s = BucketRef::Reconfigure(&entry.cell, target, clock_.Now()); !s.ok()) {
      return s;
    }
    entry.running = target;
    return absl::OkStatus();
  }
  struct CounterEntry {
    WindowCounterCell cell;
    std::atomic<uint64_t> bottlenecks{0};
  };
  struct LeaseEntry {
    explicit LeaseEntry(uint32_t count) : words(count) {
      for (auto& w : words) w.store(0, std::memory_order_relaxed);
    }
    std::vector<std::atomic<uint64_t>> words;
    std::atomic<uint32_t> generation{0};
    std::atomic<uint64_t> bottlenecks{0};
  };

  const Clock clock_;
  // A standard mutex rather than absl's: ThreadSanitizer sees through the
  // pthread calls under it, and the packaged Abseil is not instrumented.
  std::mutex mu_;
  // Entries are never removed, so handles stay valid for the store's life.
  // All three are guarded by mu_.
  absl::flat_hash_map<std::string, std::unique_ptr<BucketEntry>> buckets_;
  absl::flat_hash_map<std::string, std::unique_ptr<CounterEntry>> counters_;
  absl::flat_hash_map<std::string, std::unique_ptr<LeaseEntry>> leases_;
};

class SegmentStore final : public Store {
 public:
  explicit SegmentStore(Segment* segment) : segment_(segment) {}

  absl::StatusOr<StoredBucket> Bucket(absl::string_view key, const BucketConfig& config) override {
    return Stored(segment_->OpenBucket(key, config, /*reconfigure=*/true));
  }

  absl::StatusOr<StoredBucket> Pool(absl::string_view key, const BucketConfig& config) override {
    return Stored(segment_->OpenPool(key, config));
  }

  absl::Status Learn(absl::string_view key, std::optional<Rate> learned) override {
    return segment_->LearnBucket(key, learned);
  }

  absl::Status LearnBurst(absl::string_view key, uint64_t burst) override {
    return segment_->LearnBucketBurst(key, burst);
  }

  absl::StatusOr<StoredCounter> Counter(absl::string_view key) override {
    absl::StatusOr<SharedCounter> c = segment_->OpenCounter(key);
    if (!c.ok()) return c.status();
    return StoredCounter{*c, c->bottlenecks()};
  }

  absl::StatusOr<StoredLeases> Leases(absl::string_view key, uint32_t count) override {
    absl::StatusOr<SharedLeases> l = segment_->OpenLeases(key, count);
    if (!l.ok()) return l.status();
    return StoredLeases(*l, l->bottlenecks());
  }

  Clock clock() const override { return segment_->clock(); }

 private:
  static absl::StatusOr<StoredBucket> Stored(absl::StatusOr<SharedBucket> b) {
    if (!b.ok()) return b.status();
    return StoredBucket{BucketRef(b->ref()), b->bottlenecks(), b->learned(), b->learned_burst(),
                        PoolRef::IsPool(*b->ref().cell())};
  }

  Segment* const segment_;
};

}  // namespace

absl::StatusOr<uint32_t> StoredLeases::Acquire(absl::Duration timeout) const {
  if (remote_ != nullptr) return remote_->Acquire(timeout);
  absl::StatusOr<uint64_t> tag = ProcessTag();
  if (!tag.ok()) return tag.status();
  return leases_.Acquire(*tag, timeout, LeaseHint(*tag), HolderDead);
}

absl::StatusOr<int32_t> StoredLeases::TryAcquire() const {
  if (remote_ != nullptr) return remote_->TryAcquire();
  absl::StatusOr<uint64_t> tag = ProcessTag();
  if (!tag.ok()) return tag.status();
  const uint32_t hint = LeaseHint(*tag);
  if (const int32_t index = leases_.TryAcquire(*tag, hint); index >= 0) return index;
  // All held: a holder that died never releases, so take those back now.
  if (leases_.Reclaim(HolderDead) == 0) return -1;
  return leases_.TryAcquire(*tag, hint);
}

uint32_t StoredLeases::Reclaim() const {
  return remote_ == nullptr ? leases_.Reclaim(HolderDead) : remote_->Reclaim();
}

void StoredLeases::Release(uint32_t index) const {
  if (remote_ != nullptr) return remote_->Release(index);
  // The tag was read when the lease was taken, so it is cached now.
  if (absl::StatusOr<uint64_t> tag = ProcessTag(); tag.ok()) leases_.Release(index, *tag);
}

std::unique_ptr<Store> NewLocalStore(Clock clock) { return std::make_unique<LocalStore>(clock); }

std::unique_ptr<Store> NewSegmentStore(Segment* segment) {
  return std::make_unique<SegmentStore>(segment);
}

}  // namespace sluice
