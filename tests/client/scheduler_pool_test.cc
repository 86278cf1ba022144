// The scheduler over pools (lease mode): a request whose pool holds too
// little waits for the host's refiller to top it up, looking again every
// millisecond, instead of failing; past its throttle timeout it fails
// naming the pool. On the fake clock, over a scripted transport.

#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/pool.h"
#include "tests/client/scheduler_rig.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;
using namespace scheduler_rig;  // NOLINT: the rig's vocabulary

// A host's store in lease mode, without Redis: every bucket is a pool the
// test fills by hand.
class PoolStore final : public Store {
 public:
  explicit PoolStore(Clock clock) : local_(NewLocalStore(clock)) {}
  absl::StatusOr<StoredBucket> Bucket(absl::string_view key, const BucketConfig& c) override {
    absl::StatusOr<StoredBucket> b = local_->Pool(key, c);
    if (b.ok()) pools_.push_back(b->bucket.cell());
    return b;
  }
  absl::StatusOr<StoredBucket> Pool(absl::string_view key, const BucketConfig& c) override {
    return Bucket(key, c);
  }
  absl::Status Learn(absl::string_view key, std::optional<Rate> r) override {
    return local_->Learn(key, r);
  }
  absl::Status LearnBurst(absl::string_view key, uint64_t b) override {
    return local_->LearnBurst(key, b);
  }
  absl::StatusOr<StoredCounter> Counter(absl::string_view key) override {
    return local_->Counter(key);
  }
  absl::StatusOr<StoredLeases> Leases(absl::string_view key, uint32_t n) override {
    return local_->Leases(key, n);
  }
  Clock clock() const override { return local_->clock(); }
  // A refiller whose lease lands `lease_after_ns` after the first ask: asks
  // made from then on find it credited (in this test's time, a retry's).
  void Want(absl::string_view, uint64_t permits) override {
    wanted_ += permits;
    const int64_t now = local_->clock().Now();
    if (first_ask_ns_ < 0) first_ask_ns_ = now;
    if (lease_after_ns_ >= 0 && now >= first_ask_ns_ + lease_after_ns_) {
      CreditAll(permits);
      lease_after_ns_ = -1;
    }
  }
  void LeaseAfter(int64_t ns) { lease_after_ns_ = ns; }

  void CreditAll(uint64_t n) {
    for (BucketCell* cell : pools_) (void)PoolRef(cell).Credit(n);
  }
  uint64_t wanted() const { return wanted_; }

 private:
  std::unique_ptr<Store> local_;
  std::vector<BucketCell*> pools_;
  uint64_t wanted_ = 0;
  int64_t first_ask_ns_ = -1;
  int64_t lease_after_ns_ = -1;
};

struct PoolRig {
  FakeClock clock{kStart};
  PoolStore store{Clock::Fake(&clock)};
  std::unique_ptr<Policy> policy;
  std::unique_ptr<Client> client;

  explicit PoolRig(ScriptedTransport::Script script) {
    policy = MakePolicy(kOneASecond, &store);
    ClientOptions options = WarmOptions();
    options.throttle_timeout = absl::Milliseconds(50);
    auto created = Client::Create(options, policy.get(),
                                  std::make_unique<ScriptedTransport>(&clock, std::move(script)),
                                  Clock::Fake(&clock));
    EXPECT_TRUE(created.ok()) << created.status();
    if (created.ok()) client = *std::move(created);
  }
};

TEST(SchedulerPoolTest, ARequestWaitsForItsPoolToBeToppedUp) {
  FakeClock* clock = nullptr;
  std::vector<int64_t> sent_at;
  PoolRig rig([&](const TransportRequest&) {
    sent_at.push_back(clock->Now());
    return AnthropicOk();
  });
  clock = &rig.clock;
  rig.store.CreditAll(1);
  // The second request finds the pool empty; the lease it asks for lands
  // 3 ms later.
  rig.store.LeaseAfter(3 * kMs);
  std::vector<CallResult> results(2);
  int n = 0;
  rig.client->Run(
      [&](CallRequest* r) {
        *r = CallRequest::Simple("m", "hi", 4);
        return n++ < 2;
      },
      2, [&](size_t i, CallResult r) { results[i] = std::move(r); });
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_TRUE(results[1].status.ok()) << results[1].status;
  ASSERT_EQ(sent_at.size(), 2u);
  EXPECT_EQ(sent_at[0], kStart);
  // Asked at 0, 1, 2 and 3 ms (the lease landing with the last ask); the
  // look at 4 ms finds it.
  EXPECT_EQ(sent_at[1], kStart + 4 * kMs);
  EXPECT_EQ(rig.store.wanted(), 4u);
}

TEST(SchedulerPoolTest, PastItsThrottleTimeoutARequestFailsNamingThePool) {
  PoolRig rig([](const TransportRequest&) { return AnthropicOk(); });
  rig.store.CreditAll(1);
  int64_t failed_at = 0;
  std::vector<CallResult> results(2);
  int n = 0;
  rig.client->Run(
      [&](CallRequest* r) {
        *r = CallRequest::Simple("m", "hi", 4);
        return n++ < 2;
      },
      2,
      [&](size_t i, CallResult r) {
        failed_at = rig.clock.Now();
        results[i] = std::move(r);
      });
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_EQ(results[1].status.code(), absl::StatusCode::kDeadlineExceeded) << results[1].status;
  EXPECT_THAT(results[1].status.message(), HasSubstr("pool"));
  // Not at once: it waited out its 50 ms.
  EXPECT_EQ(failed_at, kStart + 50 * kMs);
}

}  // namespace
}  // namespace sluice
