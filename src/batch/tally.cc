// Counting finished calls (sluice/batch_tally.h).

#include "sluice/batch_result.h"
#include "sluice/batch_tally.h"

namespace sluice {
namespace batch {

void Tally::Add(const CallResult& r) {
  rate_limited += static_cast<uint64_t>(r.rate_limited);
  retries += r.attempts > 1 ? static_cast<uint64_t>(r.attempts - 1) : 0;
  attempts += static_cast<uint64_t>(r.attempts);
  throttle_waits.push_back(r.throttle_wait);
  if (r.status.ok()) {
    ++succeeded;
  } else {
    ++failed_by_class[FailureClass(r)];
  }
}

uint64_t Tally::failed() const {
  uint64_t n = 0;
  for (const auto& [name, count] : failed_by_class) n += count;
  return n;
}

std::vector<double> Tally::ThrottleWaitSeconds(double scale) const {
  std::vector<double> seconds;
  seconds.reserve(throttle_waits.size());
  for (absl::Duration wait : throttle_waits) seconds.push_back(absl::ToDoubleSeconds(wait) * scale);
  return seconds;
}

}  // namespace batch
}  // namespace sluice
