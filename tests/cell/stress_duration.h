// How long the multi-thread stress tests hammer: a fraction of a second by
// default, so the plain and ASan runs stay quick; SLUICE_STRESS_SECONDS=N
// gives them N seconds each, which CI's ThreadSanitizer stage does, so that
// there is real interleaving for it to judge.
#ifndef SLUICE_TESTS_CELL_STRESS_DURATION_H_
#define SLUICE_TESTS_CELL_STRESS_DURATION_H_

#include <cstdint>
#include <cstdlib>

#include "absl/strings/numbers.h"

namespace sluice {

inline int64_t StressNanos(int64_t default_ns) {
  const char* env = std::getenv("SLUICE_STRESS_SECONDS");
  double seconds = 0;
  if (env == nullptr || !absl::SimpleAtod(env, &seconds) || !(seconds > 0) || seconds > 600) {
    return default_ns;
  }
  return static_cast<int64_t>(seconds * 1e9);
}

}  // namespace sluice

#endif  // SLUICE_TESTS_CELL_STRESS_DURATION_H_
