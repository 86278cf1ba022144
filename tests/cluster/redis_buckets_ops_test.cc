// The fleet's buckets, operation by operation, in a private redis-server on
// chosen instants: all or nothing, leases without debt, returns and debits,
// reconfiguration, passwords, and Redis going away and coming back.

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "sluice/redis_buckets.h"
#include "sluice/token_bucket.h"
#include "tests/tools/redis_server.h"

namespace sluice {
namespace {

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kT0 = int64_t{1'800'000'000} * kSecond;

class RedisBucketsOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(redis_.ok());
    absl::StatusOr<std::unique_ptr<RedisBuckets>> b =
        RedisBuckets::Connect({.port = redis_.port(), .timeout = absl::Seconds(2)});
    ASSERT_TRUE(b.ok()) << b.status();
    buckets_ = std::move(*b);
    buckets_->SetTimeForTesting(kT0);
  }

  uint64_t Level(const std::string& key, const BucketConfig& config) {
    absl::StatusOr<std::vector<uint64_t>> l = buckets_->Available({{key, config, 0}});
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() ? (*l)[0] : ~uint64_t{0};
  }

  RedisServer redis_;
  std::unique_ptr<RedisBuckets> buckets_;
};

const BucketConfig k10PerSecond{Rate::PerSecond(10), 10};

TEST_F(RedisBucketsOpsTest, ReservesAllOrNothing) {
  const BucketConfig small{Rate::PerSecond(10), 3};
  // b can grant 3, a 10: asking 4 of each takes nothing from a.
  absl::StatusOr<RedisDecision> d =
      buckets_->Reserve({{"a", k10PerSecond, 4}, {"b", small, 4}}, absl::ZeroDuration());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->outcome, Outcome::kNeverFits);
  EXPECT_EQ(d->bottleneck, 1);
  d = buckets_->Reserve({{"a", k10PerSecond, 2}, {"b", small, 3}}, absl::ZeroDuration());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->outcome, Outcome::kGranted);
  EXPECT_EQ(Level("a", k10PerSecond), 8u);
  EXPECT_EQ(Level("b", small), 0u);
  // b is empty: refused, and a keeps its 8.
  d = buckets_->Reserve({{"a", k10PerSecond, 5}, {"b", small, 1}}, absl::ZeroDuration());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->outcome, Outcome::kRefused);
  EXPECT_EQ(d->bottleneck, 1);
  EXPECT_EQ(d->wait_ns, kSecond / 10);
  EXPECT_EQ(Level("a", k10PerSecond), 8u);
  // Allowed to wait 100 ms: granted with that wait, b the bottleneck.
  d = buckets_->Reserve({{"a", k10PerSecond, 5}, {"b", small, 1}}, absl::Milliseconds(100));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->outcome, Outcome::kGranted);
  EXPECT_EQ(d->wait_ns, kSecond / 10);
  EXPECT_EQ(d->bottleneck, 1);
  EXPECT_EQ(Level("a", k10PerSecond), 3u);
}

TEST_F(RedisBucketsOpsTest, LeasesGrantWhatIsThereAndNeverGoIntoDebt) {
  absl::StatusOr<LeaseResult> r = buckets_->Lease({{"l", k10PerSecond, 7}}, "host-a");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->grants[0].granted, 7u);
  EXPECT_EQ(r->grants[0].wait_ns, 0);
  EXPECT_EQ(r->grants[0].available, 3u);
  EXPECT_EQ(r->hosts_alive, 1u);
  r = buckets_->Lease({{"l", k10PerSecond, 7}}, "host-b");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->grants[0].granted, 3u);
  // The other 4 are back in 400 ms.
  EXPECT_EQ(r->grants[0].wait_ns, 4 * kSecond / 10);
  EXPECT_EQ(r->grants[0].available, 0u);
  EXPECT_EQ(r->hosts_alive, 2u);
  r = buckets_->Lease({{"l", k10PerSecond, 7}}, "host-a");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->grants[0].granted, 0u);
  EXPECT_EQ(r->hosts_alive, 2u);
  // A minute later host-b has not been seen: one host alive.
  buckets_->SetTimeForTesting(kT0 + 61 * kSecond);
  r = buckets_->Lease({{"l", k10PerSecond, 1}}, "host-a");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->hosts_alive, 1u);
}

// Permits kept in a pool across a refill must not add to a burst: the
// bucket and the hosts' pools together hold at most its capacity.
TEST_F(RedisBucketsOpsTest, PermitsInPoolsCountAgainstTheBucket) {
  auto lease = [&](const char* host, uint64_t want, uint64_t held) {
    absl::StatusOr<LeaseResult> r = buckets_->Lease({{"p", k10PerSecond, want, held}}, host);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->grants[0].granted : ~uint64_t{0};
  };
  EXPECT_EQ(lease("a", 6, 0), 6u);  // a keeps them in its pool
  // A second later the bucket has refilled, but 6 of its 10 are in a's pool.
  buckets_->SetTimeForTesting(kT0 + kSecond);
  EXPECT_EQ(lease("b", 10, 0), 4u);
  // a says its pool is spent: b's 4 are all that is out.
  buckets_->SetTimeForTesting(kT0 + 2 * kSecond);
  EXPECT_EQ(lease("a", 10, 0), 6u);
  // Returning moves permits from a pool to the bucket: still 10 in all.
  absl::StatusOr<std::vector<uint64_t>> after =
      buckets_->Return({{"p", k10PerSecond, 6, /*held=*/0}}, "a");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ((*after)[0], 6u);
  // b is not seen for a minute: its pool (a crashed host's) counts nothing.
  buckets_->SetTimeForTesting(kT0 + 63 * kSecond);
  EXPECT_EQ(lease("a", 10, 0), 10u);
}

TEST_F(RedisBucketsOpsTest, ReturnsNeverFillPastCapacityAndDebitsMakeLaterCallsWait) {
  ASSERT_TRUE(buckets_->Lease({{"r", k10PerSecond, 6}}, "").ok());
  absl::StatusOr<std::vector<uint64_t>> after = buckets_->Return({{"r", k10PerSecond, 100}});
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ((*after)[0], 10u);
  after = buckets_->Debit({{"r", k10PerSecond, 15}});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ((*after)[0], 0u);
  // 5 permits in debt: one permit is 600 ms away.
  absl::StatusOr<RedisDecision> d = buckets_->TryAcquire({"r", k10PerSecond, 1});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->outcome, Outcome::kRefused);
  EXPECT_EQ(d->wait_ns, 6 * kSecond / 10);
}

TEST_F(RedisBucketsOpsTest, AReconfiguredBucketKeepsItsFractionInUse) {
  ASSERT_TRUE(buckets_->Lease({{"c", k10PerSecond, 6}}, "").ok());  // 40% left
  const BucketConfig bigger{Rate::PerSecond(100), 100};
  EXPECT_EQ(Level("c", bigger), 40u);
}

TEST_F(RedisBucketsOpsTest, RefusesBucketsRedisCannotHoldExactly) {
  const BucketConfig long_span{Rate::PerDay(10), 20};  // two days of burst
  absl::Status s = RedisBuckets::Validate(long_span);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "spans at most")) << s;
  absl::StatusOr<RedisDecision> d = buckets_->TryAcquire({"long", long_span, 1});
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(d.status().message(), "long")) << d.status();
  EXPECT_TRUE(RedisBuckets::Validate({Rate::PerDay(10), 10}).ok());
}

TEST(RedisBucketsAuthTest, APasswordIsSentAndNeverEchoed) {
  RedisServer redis("s3cret-pw");
  ASSERT_TRUE(redis.ok());
  absl::StatusOr<std::unique_ptr<RedisBuckets>> wrong = RedisBuckets::Connect(
      {.port = redis.port(), .password = "not-the-pw", .timeout = absl::Seconds(2)});
  ASSERT_FALSE(wrong.ok());
  EXPECT_FALSE(absl::StrContains(wrong.status().message(), "not-the-pw")) << wrong.status();
  EXPECT_TRUE(absl::StrContains(wrong.status().message(), "authentication")) << wrong.status();
  absl::StatusOr<std::unique_ptr<RedisBuckets>> none =
      RedisBuckets::Connect({.port = redis.port(), .timeout = absl::Seconds(2)});
  ASSERT_TRUE(none.ok());  // connecting needs no password; commands do
  EXPECT_FALSE((*none)->TryAcquire({"k", k10PerSecond, 1}).ok());
  absl::StatusOr<std::unique_ptr<RedisBuckets>> right = RedisBuckets::Connect(
      {.port = redis.port(), .password = "s3cret-pw", .timeout = absl::Seconds(2)});
  ASSERT_TRUE(right.ok()) << right.status();
  absl::StatusOr<RedisDecision> d = (*right)->TryAcquire({"k", k10PerSecond, 1});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->outcome, Outcome::kGranted);
}

// Real time: Redis killed and restarted under a connected client.
TEST(RedisBucketsOutageTest, FailsFastWhileRedisIsDownAndRecoversAfter) {
  RedisServer redis;
  ASSERT_TRUE(redis.ok());
  std::unique_ptr<RedisBuckets> buckets =
      RedisBuckets::Lazy({.port = redis.port(), .timeout = absl::Milliseconds(200)});
  ASSERT_TRUE(buckets->TryAcquire({"o", k10PerSecond, 1}).ok());
  redis.Kill();
  for (int i = 0; i < 20; ++i) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<RedisDecision> d = buckets->TryAcquire({"o", k10PerSecond, 1});
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_EQ(d.status().code(), absl::StatusCode::kUnavailable) << d.status();
    // Refused connections fail at once; the bound is the timeout with a
    // wide margin for a loaded machine, never the connect's own default.
    EXPECT_LT(took, std::chrono::seconds(3));
  }
  // The same port again, empty: the script is loaded again (NOSCRIPT) and
  // the bucket starts full.
  ASSERT_TRUE(redis.Restart());
  bool recovered = false;
  for (int i = 0; i < 200 && !recovered; ++i) {
    absl::StatusOr<RedisDecision> d = buckets->TryAcquire({"o", k10PerSecond, 1});
    recovered = d.ok() && d->outcome == Outcome::kGranted;
    if (!recovered) usleep(10'000);
  }
  EXPECT_TRUE(recovered);
}

// Change (clamp, hold, return, debit) on a trace of chosen instants acts as
// the bucket cell does: after every step both hold the same, and a reserve
// decides alike (a return never ends a hold early, in either).
TEST_F(RedisBucketsOpsTest, ChangesActAsTheBucketCell) {
  std::mt19937_64 rng(20261130);
  const BucketConfig configs[] = {
      {Rate::PerSecond(1000), 50}, {Rate::PerMinute(600), 10}, {Rate(7, absl::Seconds(3)), 4}};
  int steps = 0, held = 0;
  for (size_t b = 0; b < std::size(configs); ++b) {
    const BucketConfig& config = configs[b];
    const std::string key = absl::StrCat("changes:", b);
    int64_t now = kT0;
    BucketCell cell;
    ASSERT_TRUE(BucketRef::Init(&cell, config, now).ok());
    const BucketRef ref(&cell, Clock::Monotonic());
    const Terms terms = ref.Reserve(0, 0, now).terms;  // nothing taken: the bucket's terms
    for (int i = 0; i < 400; ++i) {
      now += static_cast<int64_t>(rng() % 20'000) * 1'000;  // whole microseconds
      buckets_->SetTimeForTesting(now);
      const uint64_t n = rng() % (config.capacity + 2);
      const int op = static_cast<int>(rng() % 5);
      absl::StatusOr<std::vector<uint64_t>> after;
      if (op == 4) {
        const absl::StatusOr<RedisDecision> d = buckets_->Reserve({{key, config, n}}, {});
        ASSERT_TRUE(d.ok()) << d.status();
        const Decision local = ref.Reserve(n, 0, now);
        ASSERT_EQ(d->outcome, local.outcome) << "step " << i;
        after = buckets_->Available({{key, config, 0}});
      } else {
        // Holds of up to 50 ms, to see them end within the trace.
        const uint64_t want = op == 3 ? rng() % 50'000 * 1'000 : n;
        after = buckets_->Change({{{key, config, want, 0}, static_cast<BucketOp>(op)}});
        switch (static_cast<BucketOp>(op)) {
          case BucketOp::kReturn:
            ref.Refund(n, terms, now);
            break;
          case BucketOp::kDebit:
            ref.Debit(n, now);
            break;
          case BucketOp::kClamp:
            if (ref.Available(now) > static_cast<int64_t>(n))
              ref.Debit(static_cast<uint64_t>(ref.Available(now)) - n, now);
            break;
          case BucketOp::kHold:
            ref.HoldUntil(now + static_cast<int64_t>(want), now);
            held += want > 0;
            break;
        }
      }
      ASSERT_TRUE(after.ok()) << after.status();
      ASSERT_EQ(static_cast<int64_t>((*after)[0]), ref.Available(now))
          << "bucket " << b << " step " << i << " op " << op << " n " << n;
      ++steps;
    }
  }
  EXPECT_EQ(steps, 1200);
  EXPECT_GT(held, 100);
}

}  // namespace
}  // namespace sluice
