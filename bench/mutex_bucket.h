// The baseline the benchmarks compare sluice's buckets with: what most token
// buckets look like, a mutex around a double token count refilled from the
// elapsed time. Shared by sluice_bench and sluice_latency.
//
// Thread safety: TryAcquire is safe to call from any number of threads.
#ifndef SLUICE_BENCH_MUTEX_BUCKET_H_
#define SLUICE_BENCH_MUTEX_BUCKET_H_

#include <algorithm>
#include <cstdint>
#include <mutex>

#include "sluice/clock.h"

namespace sluice {

class MutexBucket {
 public:
  // `rate_per_ns` permits a nanosecond, at most `capacity` held; starts full.
  MutexBucket(double rate_per_ns, double capacity)
      : rate_per_ns_(rate_per_ns), capacity_(capacity), tokens_(capacity) {}

  bool TryAcquire(double n) {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t now = Clock::MonotonicNanos();
    tokens_ = std::min(capacity_, tokens_ + static_cast<double>(now - last_) * rate_per_ns_);
    last_ = now;
    if (tokens_ < n) return false;
    tokens_ -= n;
    return true;
  }

 private:
  std::mutex mu_;
  const double rate_per_ns_;
  const double capacity_;
  double tokens_;                           // guarded by mu_
  int64_t last_ = Clock::MonotonicNanos();  // guarded by mu_
};

}  // namespace sluice

#endif  // SLUICE_BENCH_MUTEX_BUCKET_H_
