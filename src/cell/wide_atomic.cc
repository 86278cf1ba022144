#include "sluice/wide_atomic.h"

namespace sluice::internal_wide {
namespace {

// Intel's and AMD's architecture manuals guarantee that an
// aligned 16-byte SSE load is atomic on their processors that report AVX.
bool DetectAtomicVectorLoad() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx") && (__builtin_cpu_is("intel") || __builtin_cpu_is("amd"));
}

}  // namespace

const bool kAtomicVectorLoad = DetectAtomicVectorLoad();

}  // namespace sluice::internal_wide
