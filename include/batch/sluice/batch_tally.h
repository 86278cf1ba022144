// File: batch_tally.h
// -----------------------------------------------------------------------------
// What a set of finished calls came to: successes, failures by class
// (batch_result.h's FailureClass), the provider's 429s, retries, attempts and
// the time each call waited in the throttle. `sluice batch` and `sluice demo`
// both count with it.
//
// Thread safety: a Tally is a plain value; guard it when threads share one.
//
// Example:
//   sluice::batch::Tally tally;
//   client->Run(next, 64, [&](size_t, sluice::CallResult r) { tally.Add(r); });
//   std::printf("%llu of %llu succeeded\n", tally.succeeded, tally.finished());

#ifndef SLUICE_BATCH_TALLY_H_
#define SLUICE_BATCH_TALLY_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "sluice/client.h"

namespace sluice {
namespace batch {

struct Tally {
  uint64_t succeeded = 0;
  std::map<std::string, uint64_t> failed_by_class;  // FailureClass -> calls
  uint64_t rate_limited = 0;                        // attempts the provider answered 429
  uint64_t retries = 0;                             // attempts after each call's first
  uint64_t attempts = 0;                       // requests the provider was sent, retries included
  std::vector<absl::Duration> throttle_waits;  // per call, in the order added

  // Counts one finished call.
  void Add(const CallResult& r);

  uint64_t failed() const;
  uint64_t finished() const { return succeeded + failed(); }
  // Each call's throttle wait in seconds, times `scale` (for a run on scaled
  // time, the simulated seconds per real one).
  std::vector<double> ThrottleWaitSeconds(double scale = 1.0) const;
};

}  // namespace batch
}  // namespace sluice

#endif  // SLUICE_BATCH_TALLY_H_
