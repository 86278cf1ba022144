// `sluice acquire KEY --rate N/UNIT --burst B`: takes permits from a bucket
// in the shared segment, creating both if they do not exist, waiting at most
// --timeout; exits 75 (EX_TEMPFAIL) when the permits would not come in time.
// With --redis URL the bucket is a fleet's, shared by every host that names
// the same Redis: --mode exact decides each acquire in Redis (one round
// trip), --mode lease (the default) admits from this host's pool in the
// segment and leases into it from Redis when it runs dry.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/fleet_store.h"
#include "sluice/rate.h"
#include "sluice/redis_buckets.h"
#include "sluice/segment.h"
#include "sluice/store.h"
#include "sluice/token_bucket.h"
#include "tools/sluice/cli.h"

ABSL_FLAG(std::string, rate, "", "refill rate as N/UNIT, UNIT one of s, min, h, day (e.g. 50/min)");
ABSL_FLAG(uint64_t, burst, 0, "the bucket's capacity: the most permits that can be taken at once");
ABSL_FLAG(uint64_t, tokens, 1, "permits to take");
ABSL_FLAG(bool, reconfigure, false,
          "if the bucket exists with another rate or burst, change it (keeping its fill ratio)");

namespace sluice {
namespace {

// Exact: one reservation in Redis, waiting at most the timeout.
int AcquireExact(const Command& cmd, const RedisBucketsOptions& options, const RedisCharge& charge,
                 absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<RedisBuckets>> buckets = RedisBuckets::Connect(options);
  if (!buckets.ok()) return Fail(cmd, buckets.status());
  absl::StatusOr<RedisDecision> d = (*buckets)->Reserve({charge}, timeout);
  if (!d.ok()) return Fail(cmd, d.status());
  if (d->outcome == Outcome::kNeverFits) {
    return Fail(cmd, absl::OutOfRangeError(absl::StrCat(charge.cost, " permits can never fit in '",
                                                        charge.key, "' (burst ",
                                                        charge.config.capacity, ")")));
  }
  if (!d->granted()) {
    return Report(*cmd.verb, kExitTempFail,
                  absl::StrCat("bucket '", charge.key, "': the permits would take ",
                               absl::FormatDuration(absl::Nanoseconds(d->wait_ns)),
                               ", longer than --timeout"));
  }
  absl::SleepFor(absl::Nanoseconds(d->wait_ns));
  return kExitOk;
}

// Lease: admit from this host's pool in the segment; while it cannot, take a
// round of the refiller (if no other process on the host is it) and look
// again, until the timeout. What is left in the pool stays for the host's
// next acquire.
int AcquireLeased(const Command& cmd, const RedisBucketsOptions& redis, const RedisCharge& charge,
                  absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<Segment>> segment = Segment::Open(absl::GetFlag(FLAGS_segment));
  if (!segment.ok()) return Fail(cmd, segment.status());
  std::unique_ptr<Store> local = NewSegmentStore(segment->get());
  FleetOptions options;
  options.redis = redis;
  options.start_refiller = false;
  options.give_back_at_stop = false;
  absl::StatusOr<std::unique_ptr<FleetStore>> fleet = FleetStore::Create(local.get(), options);
  if (!fleet.ok()) return Fail(cmd, fleet.status());
  absl::StatusOr<StoredBucket> pool = (*fleet)->Bucket(charge.key, charge.config);
  if (!pool.ok()) return Fail(cmd, pool.status());
  const Clock clock = local->clock();
  const int64_t deadline = clock.Now() + absl::ToInt64Nanoseconds(timeout);
  // One lease is always tried: a permit the fleet holds is not a wait (as
  // exact mode always asks Redis once).
  for (bool leased = false;; leased = true) {
    const Decision d = pool->bucket.TryAcquire(charge.cost, clock.Now());
    if (d.granted()) return kExitOk;
    if (d.outcome == Outcome::kNeverFits) {
      return Fail(cmd, absl::OutOfRangeError(
                           absl::StrCat(charge.cost, " permits can never fit in '", charge.key,
                                        "' (burst ", charge.config.capacity, ")")));
    }
    const int64_t now = clock.Now();
    if (leased && now >= deadline) break;
    (*fleet)->Want(charge.key, charge.cost);
    (*fleet)->RefillOnce(now);
    if (pool->bucket.Available(now) >= static_cast<int64_t>(charge.cost)) continue;
    clock.SleepUntil(std::min(deadline, now + 1'000'000));
  }
  return Report(*cmd.verb, kExitTempFail,
                absl::StrCat("bucket '", charge.key, "': this host's pool did not get ",
                             charge.cost, " permits from the fleet within --timeout"));
}

int AcquireFromFleet(const Command& cmd, const BucketConfig& config, uint64_t tokens,
                     absl::Duration timeout) {
  const Verb& verb = *cmd.verb;
  absl::StatusOr<ClusterSettings> cluster = ClusterFromFlags(cmd);
  if (!cluster.ok()) return UsageError(verb, cluster.status().message());
  if (absl::Status s = RedisBuckets::Validate(config); !s.ok())
    return UsageError(verb, s.message());
  absl::StatusOr<std::string> password = ClusterPassword(*cluster);
  if (!password.ok()) return Fail(cmd, password.status());
  const RedisBucketsOptions options{.host = cluster->redis.host,
                                    .port = cluster->redis.port,
                                    .db = cluster->redis.db,
                                    .password = *std::move(password)};
  const RedisCharge charge{cmd.args[0], config, tokens};
  return cluster->mode == ClusterMode::kExact ? AcquireExact(cmd, options, charge, timeout)
                                              : AcquireLeased(cmd, options, charge, timeout);
}

int RunAcquire(const Command& cmd) {
  const Verb& verb = *cmd.verb;
  absl::StatusOr<Rate> rate = Rate::Parse(absl::GetFlag(FLAGS_rate));
  if (!rate.ok()) return UsageError(verb, absl::StrCat("--rate: ", rate.status().message()));
  const BucketConfig config{.rate = *rate, .capacity = absl::GetFlag(FLAGS_burst)};
  // Checked before the segment is touched, so a bad command creates nothing.
  if (absl::Status s = ValidateBucketConfig(config); !s.ok()) return UsageError(verb, s.message());
  const uint64_t tokens = absl::GetFlag(FLAGS_tokens);
  if (tokens == 0) return UsageError(verb, "--tokens must be at least 1");
  const absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  if (timeout < absl::ZeroDuration()) {
    return UsageError(
        verb, absl::StrCat("--timeout must not be negative, got ", absl::FormatDuration(timeout)));
  }

  if (!absl::GetFlag(FLAGS_redis).empty()) return AcquireFromFleet(cmd, config, tokens, timeout);
  absl::StatusOr<std::unique_ptr<Segment>> segment = Segment::Open(absl::GetFlag(FLAGS_segment));
  if (!segment.ok()) return Fail(cmd, segment.status());
  const std::string& key = cmd.args[0];
  absl::StatusOr<SharedBucket> bucket =
      (*segment)->OpenBucket(key, config, absl::GetFlag(FLAGS_reconfigure));
  if (!bucket.ok()) return Fail(cmd, bucket.status());

  const absl::Status acquired = bucket->Acquire(tokens, timeout);
  // Only the bucket's own refusal means "try later"; a DeadlineExceeded from
  // Open (the segment lock) is a failure like any other.
  if (acquired.code() == absl::StatusCode::kDeadlineExceeded) {
    return Report(verb, kExitTempFail, absl::StrCat("bucket '", key, "': ", acquired.message()));
  }
  if (!acquired.ok()) return Fail(cmd, acquired);
  return kExitOk;
}

constexpr absl::string_view kAcquireFlags[] = {"rate",    "burst",       "tokens", "timeout",
                                               "segment", "reconfigure", "redis",  "mode"};
constexpr absl::string_view kAcquireRequired[] = {"rate", "burst"};
constexpr absl::string_view kAcquireArgs[] = {"KEY"};

const Verb kAcquireVerb = {
    .order = 10,
    .name = "acquire",
    .usage =
        "acquire KEY --rate N/UNIT --burst B [--tokens N] [--timeout DURATION] "
        "[--segment NAME] [--reconfigure] [--redis URL [--mode lease|exact]]",
    .summary = "take permits from a bucket, waiting at most --timeout",
    .description =
        "Takes --tokens permits from the bucket KEY in the shared segment, creating the\n"
        "segment and the bucket (full, with --rate and --burst) if they do not exist.\n"
        "An existing bucket must have the same rate and burst (or pass --reconfigure to\n"
        "change them live). Waits at most --timeout\n"
        "for the permits and exits 0 once they are taken, or exits 75 at once when they\n"
        "would not be there in time, taking nothing.\n"
        "\n"
        "With --redis URL the bucket is shared by every host naming the same Redis (a\n"
        "password comes from $SLUICE_REDIS_PASSWORD). --mode exact decides each acquire in\n"
        "Redis, one round trip; --mode lease (the default) takes permits from this host's\n"
        "pool in the segment, leasing them from Redis when the pool runs dry, and leaves\n"
        "what it did not use in the pool for the host's next acquire.",
    .flags = kAcquireFlags,
    .required = kAcquireRequired,
    .args = kAcquireArgs,
    .run = RunAcquire,
};
SLUICE_VERB(kAcquireVerb);

}  // namespace
}  // namespace sluice
