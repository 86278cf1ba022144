// `sluice acquire KEY --rate N/UNIT --burst B`: takes permits from a bucket
// in the shared segment, creating both if they do not exist, waiting at most
// --timeout; exits 75 (EX_TEMPFAIL) when the permits would not come in time.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/rate.h"
#include "sluice/segment.h"
#include "sluice/token_bucket.h"
#include "tools/sluice/cli.h"

ABSL_FLAG(std::string, rate, "", "refill rate as N/UNIT, UNIT one of s, min, h, day (e.g. 50/min)");
ABSL_FLAG(uint64_t, burst, 0, "the bucket's capacity: the most permits that can be taken at once");
ABSL_FLAG(uint64_t, tokens, 1, "permits to take");
ABSL_FLAG(bool, reconfigure, false,
          "if the bucket exists with another rate or burst, change it (keeping its fill ratio)");

namespace sluice {
namespace {

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

constexpr absl::string_view kAcquireFlags[] = {"rate",    "burst",   "tokens",
                                               "timeout", "segment", "reconfigure"};
constexpr absl::string_view kAcquireRequired[] = {"rate", "burst"};
constexpr absl::string_view kAcquireArgs[] = {"KEY"};

const Verb kAcquireVerb = {
    .order = 10,
    .name = "acquire",
    .usage =
        "acquire KEY --rate N/UNIT --burst B [--tokens N] [--timeout DURATION] "
        "[--segment NAME] [--reconfigure]",
    .summary = "take permits from a bucket, waiting at most --timeout",
    .description =
        "Takes --tokens permits from the bucket KEY in the shared segment, creating the\n"
        "segment and the bucket (full, with --rate and --burst) if they do not exist.\n"
        "An existing bucket must have the same rate and burst (or pass --reconfigure to\n"
        "change them live). Waits at most --timeout\n"
        "for the permits and exits 0 once they are taken, or exits 75 at once when they\n"
        "would not be there in time, taking nothing.",
    .flags = kAcquireFlags,
    .required = kAcquireRequired,
    .args = kAcquireArgs,
    .run = RunAcquire,
};
SLUICE_VERB(kAcquireVerb);

}  // namespace
}  // namespace sluice
