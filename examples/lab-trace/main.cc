// A user's own throttle algorithm in the algorithm lab: "sliced-window" cuts
// the limit's period into six slices and allows a sixth of the limit in each
// (a common way to avoid a minute's burst at its boundary). It implements
// sluice::Limiter and joins the lab's token bucket, fixed window and sliding
// log on the arrivals of traffic.csv (or the trace named on the command line),
// replayed against a limit of 60 permits a minute; the lab prints one row per
// algorithm, as `sluice lab --trace` does. Exits 0 when the user's limiter ran
// and never let more than the limit through in any minute.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "sluice/lab/algorithms.h"
#include "sluice/lab/trace.h"
#include "tools/lab/lab.h"

namespace {

class SlicedWindow : public sluice::Limiter {
 public:
  static constexpr int64_t kSlices = 6;

  explicit SlicedWindow(const sluice::Rate& rate)
      : slice_ns_(std::max<int64_t>(1, absl::ToInt64Nanoseconds(rate.period()) / kSlices)),
        allowance_((rate.permits() + kSlices - 1) / kSlices) {}

  // The lab's time only moves forward; a Limiter must still be safe to share.
  sluice::Admission TryAcquire(uint64_t n, int64_t now_ns) override {
    if (n > allowance_) return {sluice::Outcome::kNeverFits, 0};
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t slice = now_ns / slice_ns_;
    if (slice != slice_) {
      slice_ = slice;
      used_ = 0;
    }
    if (used_ + n > allowance_) {
      return {sluice::Outcome::kRefused, (slice + 1) * slice_ns_ - now_ns};  // the next slice
    }
    used_ += n;
    return {sluice::Outcome::kGranted, 0};
  }

  sluice::Algorithm algorithm() const override { return sluice::Algorithm::kCustom; }

 private:
  const int64_t slice_ns_;
  const uint64_t allowance_;  // permits per slice
  std::mutex mu_;
  int64_t slice_ = -1;  // guarded by mu_
  uint64_t used_ = 0;   // guarded by mu_
};

}  // namespace

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "traffic.csv";
  absl::StatusOr<sluice::TrafficTrace> trace = sluice::ReadTraceFile(path);
  if (!trace.ok()) {
    absl::FPrintF(stderr, "lab-trace: %s\n", trace.status().message());
    return 1;
  }
  sluice::lab::LabConfig config;
  config.limit = sluice::Rate::PerMinute(60);
  std::vector<sluice::lab::LabLimiter> limiters = sluice::lab::BuiltinLimiters(
      {sluice::Algorithm::kTokenBucket, sluice::Algorithm::kFixedWindow,
       sluice::Algorithm::kSlidingLog});
  limiters.push_back(
      {"sliced-window",
       [](const sluice::LimiterConfig& c) -> absl::StatusOr<std::unique_ptr<sluice::Limiter>> {
         return std::make_unique<SlicedWindow>(c.rate);
       }});
  absl::StatusOr<std::vector<sluice::lab::LabResult>> results =
      sluice::lab::RunLabOnTrace(config, *trace, limiters);
  if (!results.ok()) {
    absl::FPrintF(stderr, "lab-trace: %s\n", results.status().message());
    return 1;
  }
  for (const std::vector<std::string>& row : sluice::lab::SummaryRows(*results)) {
    for (const std::string& cell : row) absl::PrintF("%-15s", cell);
    absl::PrintF("\n");
  }
  const sluice::lab::LabResult& mine = results->back();
  return mine.name == "sliced-window" && mine.metrics.admitted > 0 &&
                 mine.metrics.max_in_window <= 60
             ? 0
             : 1;
}
