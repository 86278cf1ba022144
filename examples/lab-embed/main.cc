// Embedding the lab's algorithms: a pacer at 10 calls a second admits one call
// and then spaces the next 100 ms later, and a sliding window of 5 a minute
// behind the Limiter interface refuses the sixth call, both on explicit time.
#include <cstdio>

#include "sluice/lab/algorithms.h"

int main() {
  sluice::PacerCell cell;
  auto pacer = sluice::PacerRef::Create(&cell, {.rate = sluice::Rate::PerSecond(10)});
  if (!pacer.ok()) return 1;
  const bool first = pacer->TryAcquire(1, /*now_ns=*/0).granted();
  const sluice::Decision second = pacer->TryAcquire(1, /*now_ns=*/0);

  auto window = sluice::Limiter::Create(
      {.algorithm = sluice::Algorithm::kSlidingWindow, .rate = sluice::Rate::PerMinute(5)},
      /*now_ns=*/0);
  if (!window.ok()) return 1;
  int admitted = 0;
  for (int i = 0; i < 6; ++i) admitted += (*window)->TryAcquire(1, /*now_ns=*/i).granted();

  const absl::string_view name = sluice::AlgorithmName((*window)->algorithm());
  std::printf("pacer: first %s, next in %lld ns; %.*s: %d of 6 admitted\n",
              first ? "admitted" : "refused", static_cast<long long>(second.wait_ns),
              static_cast<int>(name.size()), name.data(), admitted);
  return first && second.wait_ns == 100'000'000 && admitted == 5 ? 0 : 1;
}
