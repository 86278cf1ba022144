// The parameters a BucketConfig gives a BucketCell, shared by the two kinds of
// cell that run the same GCRA code: buckets (token_bucket.cc) and host pools
// (pool.cc), so that both check a configuration the same way.
//
// Thread safety: pure functions and constants.

#ifndef SLUICE_SRC_CELL_BUCKET_PARAMS_H_
#define SLUICE_SRC_CELL_BUCKET_PARAMS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "sluice/token_bucket.h"

namespace sluice::internal_cell {

// A configuration in the cell's exact units: a rate of P permits per T ns,
// reduced to lowest terms p/t, counts time in units of 1/p ns, so that a
// permit's interval is t units exactly.
struct Derived {
  int64_t interval;      // t: units per permit
  int64_t units_per_ns;  // p
  uint64_t capacity;     // permits
};

// `config` in those units, or InvalidArgument saying which field is wrong
// (see ValidateBucketConfig).
absl::StatusOr<Derived> Derive(const BucketConfig& config);

}  // namespace sluice::internal_cell

#endif  // SLUICE_SRC_CELL_BUCKET_PARAMS_H_
