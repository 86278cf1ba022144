// File: exact_buckets.h
// -----------------------------------------------------------------------------
// A FleetStore's buckets in exact mode (sluice/fleet_store.h): the Store's
// RemoteBuckets (sluice/store.h) over RedisBuckets, one round trip per call,
// and this host's share of each bucket in the local store for deciding while
// Redis is away (on_redis_down = kLocalShare).
//
// The share is the bucket's rate and capacity ÷ the hosts alive (read from
// Redis's hosts' set every 10 s, on a call; expected_hosts until Redis was
// reached), at least 1 permit; shares are reconfigured live when the count
// changes. What the host admitted on its shares is owed (Owe) and debited,
// in one round trip, before the next call Redis answers.
//
// Limits learned from the provider are the fleet's: what this host learns
// (FleetStore::Learn, LearnBurst) is shared through Redis
// (RedisBuckets::ShareLearnedRate, ShareLearnedBurst), what the fleet
// learned is read again every second on a call, and every bucket sent to
// Redis is lowered to it (LowerTo, CapBurst), so hosts send Redis the same
// bucket rather than each its own learned one.
//
// Thread safety: safe for concurrent use; Redis calls are serialized on one
// connection (RedisBuckets), the bookkeeping by a mutex never held across
// them.

#ifndef SLUICE_SRC_CLUSTER_EXACT_BUCKETS_H_
#define SLUICE_SRC_CLUSTER_EXACT_BUCKETS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sluice/fleet_store.h"
#include "sluice/redis_buckets.h"
#include "sluice/store.h"

namespace sluice {
namespace internal_cluster {

// `config` for one of `hosts` hosts: rate and capacity divided, each at
// least 1 permit.
BucketConfig HostShare(const BucketConfig& config, uint32_t hosts);

class ExactBuckets final : public RemoteBuckets {
 public:
  // REQUIRES: `local` outlives this.
  ExactBuckets(Store* local, const FleetOptions& options, std::unique_ptr<RedisBuckets> redis);

  // This host's share of the fleet's bucket `key` of `config`, opened (or
  // reconfigured) in the local store; the local store's errors.
  absl::StatusOr<StoredBucket> Share(absl::string_view key, const BucketConfig& config);

  absl::StatusOr<RemoteDecision> Reserve(absl::Span<const RemoteCharge> charges,
                                         absl::Duration max_wait) override;
  void Adjust(absl::Span<const RemoteCharge> charges) override;
  void Clamp(absl::Span<const RemoteCharge> charges) override;
  void Hold(absl::Span<const RemoteCharge> buckets, absl::Duration hold) override;
  absl::StatusOr<std::vector<int64_t>> Available(absl::Span<const RemoteCharge> buckets) override;
  void Owe(const RemoteCharge& charge) override;
  RemoteDown on_down() const override { return on_down_; }
  std::string Describe() const override;

  // Shares what this host learned of bucket `key` (best effort: while Redis
  // is away the host's own policy still runs at it).
  void ShareLearned(absl::string_view key, std::optional<Rate> rate);
  void ShareLearnedBurst(absl::string_view key, uint64_t burst);

  RedisBuckets& redis() { return *redis_; }
  // The hosts the shares are divided by now.
  uint32_t hosts() const { return hosts_.load(std::memory_order_relaxed); }

 private:
  struct Owed {
    BucketConfig config;
    int64_t permits = 0;
  };
  // Before a call: the hosts' count when it is due, then what is owed.
  // Unavailable when Redis is (nothing changed then).
  absl::Status Prepare();
  void RefreshHosts();
  void RefreshLearned();
  // `config` of bucket `key` lowered to what the fleet learned.
  BucketConfig Sent(absl::string_view key, const BucketConfig& config);
  LeaseAsk Ask(const RemoteCharge& c, uint64_t permits);
  absl::Status PayDebts();
  // Runs `changes`; on Unavailable, what they would have taken is owed.
  void Change(std::vector<BucketChange> changes);

  Store* const local_;
  const std::unique_ptr<RedisBuckets> redis_;
  const RemoteDown on_down_;
  const uint32_t expected_hosts_;

  std::atomic<uint32_t> hosts_;
  std::atomic<int64_t> next_hosts_ns_{0};  // steady clock
  std::atomic<bool> owing_{false};
  std::atomic<int64_t> next_learned_ns_{0};  // steady clock

  std::mutex mu_;
  absl::flat_hash_map<std::string, BucketConfig> shares_;    // guarded by mu_
  absl::flat_hash_map<std::string, Owed> owed_;              // guarded by mu_
  absl::flat_hash_map<std::string, LearnedLimits> learned_;  // the fleet's; guarded by mu_
};

}  // namespace internal_cluster
}  // namespace sluice

#endif  // SLUICE_SRC_CLUSTER_EXACT_BUCKETS_H_
