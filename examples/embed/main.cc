// Embedding a sluice bucket: at most 1000 model calls a minute, bursts of 20.
#include <cstdio>

#include "sluice/token_bucket.h"

int main() {
  auto bucket = sluice::TokenBucket::Create({sluice::Rate::PerMinute(1000), /*capacity=*/20});
  if (!bucket.ok()) return 1;
  int sent = 0;
  for (int i = 0; i < 25; ++i) {
    // Wait at most 100 ms for a permit (sleeping once), else skip this call.
    if ((*bucket)->Acquire(1, absl::Milliseconds(100)).ok()) ++sent;  // call the model here
  }
  std::printf("sent %d of 25, %lld permits left, pressure %s\n", sent,
              static_cast<long long>((*bucket)->Available()),
              sluice::PressureName((*bucket)->GetPressure()));
  return sent == 25 ? 0 : 1;
}
