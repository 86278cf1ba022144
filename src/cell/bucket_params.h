// The parameters a BucketConfig gives a BucketCell, shared by the two kinds of
// cell that run the same GCRA code: buckets (token_bucket.cc) and host pools
// (pool.cc), so that both check a configuration the same way.
//
// Thread safety: pure functions and constants.

#ifndef SLUICE_SRC_CELL_BUCKET_PARAMS_H_
#define SLUICE_SRC_CELL_BUCKET_PARAMS_H_

#include <cstdint>
#include <limits>

#include "absl/status/statusor.h"
#include "sluice/token_bucket.h"

namespace sluice::internal_gcra {

// The epoch of a pool's parameter slots (pool.h): ToUnits reads every clock
// reading as 0 units since it, so the pool's time stands still.
inline constexpr int64_t kPoolEpoch = std::numeric_limits<int64_t>::max();

struct Derived {
  int64_t interval;  // 1/16 ns per permit, rounded up
  int64_t tau;       // capacity * interval
};

// `config`'s interval and span, or InvalidArgument saying which field is
// wrong (see ValidateBucketConfig).
absl::StatusOr<Derived> Derive(const BucketConfig& config);

}  // namespace sluice::internal_gcra

#endif  // SLUICE_SRC_CELL_BUCKET_PARAMS_H_
