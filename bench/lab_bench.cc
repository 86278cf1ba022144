// The algorithm lab's speed question, compiled into sluice_bench: what one
// decision costs for each algorithm of sluice/lab/algorithms.h, on the path that
// admits and on the path that refuses, on one thread and with two threads
// sharing the cell. Each reads the precise clock, as BM_Acquire_Admit does,
// and calls the cell's Ref directly (the Limiter interface is for the lab's
// simulations, not for the hot path).
//
//   sluice_bench --benchmark_filter=BM_Lab_
//
// Admit runs use limits no loop can reach; deny runs use a limit of one a day,
// already taken. The concurrency limiter's admit is a lease taken and returned
// (a lease held forever would turn it into a deny); the sliding log's ring
// holds 2^20 entries over a 1 ms window.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "absl/strings/str_format.h"
#include "benchmark/benchmark.h"
#include "sluice/clock.h"
#include "sluice/lab/algorithms.h"
#include "sluice/lease_set.h"
#include "sluice/token_bucket.h"
#include "sluice/window_counter.h"

namespace sluice {
namespace {

int64_t Now() { return Clock::MonotonicNanos(); }

template <typename T>
T OrDie(absl::StatusOr<T> value) {
  if (!value.ok()) {
    absl::FPrintF(stderr, "lab_bench: %s\n", value.status().ToString());
    std::abort();
  }
  return *std::move(value);
}

// Token bucket (GCRA) ----------------------------------------------------------------

const BucketRef& Bucket(bool admitting) {
  static BucketCell admit_cell, deny_cell;
  static const BucketRef admit = [] {
    if (!BucketRef::Init(&admit_cell, {Rate::PerSecond(1'000'000'000), 1'000'000'000}, Now()).ok())
      std::abort();
    return BucketRef(&admit_cell, Clock::Monotonic());
  }();
  static const BucketRef deny = [] {
    if (!BucketRef::Init(&deny_cell, {Rate::PerDay(1), 1}, Now()).ok()) std::abort();
    BucketRef ref(&deny_cell, Clock::Monotonic());
    ref.TryAcquire(1, Now());
    return ref;
  }();
  return admitting ? admit : deny;
}

void BM_Lab_TokenBucket_Admit(benchmark::State& state) {
  const BucketRef& ref = Bucket(true);
  for (auto _ : state) benchmark::DoNotOptimize(ref.TryAcquire(1, Now()));
}
void BM_Lab_TokenBucket_Deny(benchmark::State& state) {
  const BucketRef& ref = Bucket(false);
  for (auto _ : state) benchmark::DoNotOptimize(ref.TryAcquire(1, Now()));
}

// Pacer ------------------------------------------------------------------------------

const PacerRef& Pacer(bool admitting) {
  static PacerCell admit_cell, deny_cell;
  // 1e9/s: one permit a nanosecond, less than a clock read takes.
  static const PacerRef admit =
      OrDie(PacerRef::Create(&admit_cell, {.rate = Rate::PerSecond(1'000'000'000)}));
  static const PacerRef deny = [] {
    PacerRef ref = OrDie(PacerRef::Create(&deny_cell, {.rate = Rate::PerDay(1)}));
    ref.TryAcquire(1, Now());
    return ref;
  }();
  return admitting ? admit : deny;
}

void BM_Lab_Pacer_Admit(benchmark::State& state) {
  const PacerRef& ref = Pacer(true);
  for (auto _ : state) benchmark::DoNotOptimize(ref.TryAcquire(1, Now()));
}
void BM_Lab_Pacer_Deny(benchmark::State& state) {
  const PacerRef& ref = Pacer(false);
  for (auto _ : state) benchmark::DoNotOptimize(ref.TryAcquire(1, Now()));
}

// Fixed window -------------------------------------------------------------------------

const FixedWindowRef& FixedWindow(bool admitting) {
  static WindowCounterCell admit_cell, deny_cell;
  static const FixedWindowRef admit = OrDie(FixedWindowRef::Create(
      &admit_cell, {.limit = WindowCounterRef::kMaxAmount, .window = absl::Seconds(1)}));
  static const FixedWindowRef deny = [] {
    FixedWindowRef ref = OrDie(FixedWindowRef::Create(
        &deny_cell, {.limit = 1, .window = absl::Hours(24), .epoch_ns = Now()}));
    ref.TryAcquire(1, Now());
    return ref;
  }();
  return admitting ? admit : deny;
}

void BM_Lab_FixedWindow_Admit(benchmark::State& state) {
  const FixedWindowRef& ref = FixedWindow(true);
  for (auto _ : state) benchmark::DoNotOptimize(ref.TryAcquire(1, Now()));
}
void BM_Lab_FixedWindow_Deny(benchmark::State& state) {
  const FixedWindowRef& ref = FixedWindow(false);
  for (auto _ : state) benchmark::DoNotOptimize(ref.TryAcquire(1, Now()));
}

// Sliding window counter ------------------------------------------------------------------

const SlidingWindowRef& SlidingWindow(bool admitting) {
  static SlidingWindowCell admit_cell, deny_cell;
  // 10 ms windows: well under the 4,194,303 limit at any loop's pace.
  static const SlidingWindowRef admit = OrDie(SlidingWindowRef::Create(
      &admit_cell, {.limit = SlidingWindowRef::kMaxLimit, .window = absl::Milliseconds(10)}));
  static const SlidingWindowRef deny = [] {
    SlidingWindowRef ref = OrDie(SlidingWindowRef::Create(
        &deny_cell, {.limit = 1, .window = absl::Hours(24), .epoch_ns = Now()}));
    ref.TryAcquire(1, Now());
    return ref;
  }();
  return admitting ? admit : deny;
}

void BM_Lab_SlidingWindow_Admit(benchmark::State& state) {
  const SlidingWindowRef& ref = SlidingWindow(true);
  for (auto _ : state) benchmark::DoNotOptimize(ref.TryAcquire(1, Now()));
}
void BM_Lab_SlidingWindow_Deny(benchmark::State& state) {
  const SlidingWindowRef& ref = SlidingWindow(false);
  for (auto _ : state) benchmark::DoNotOptimize(ref.TryAcquire(1, Now()));
}

// Sliding log -------------------------------------------------------------------------------

SlidingLog& Log(bool admitting) {
  static SlidingLog* const admit =
      OrDie(SlidingLog::Create({.limit = SlidingLog::kMaxLimit, .window = absl::Milliseconds(1)}))
          .release();
  static SlidingLog* const deny = [] {
    SlidingLog* log = OrDie(SlidingLog::Create({.limit = 1, .window = absl::Hours(24)})).release();
    log->TryAcquire(1, Now());
    return log;
  }();
  return admitting ? *admit : *deny;
}

void BM_Lab_SlidingLog_Admit(benchmark::State& state) {
  SlidingLog& log = Log(true);
  for (auto _ : state) benchmark::DoNotOptimize(log.TryAcquire(1, Now()));
}
void BM_Lab_SlidingLog_Deny(benchmark::State& state) {
  SlidingLog& log = Log(false);
  for (auto _ : state) benchmark::DoNotOptimize(log.TryAcquire(1, Now()));
}

// Concurrency (leases) -------------------------------------------------------------------------

struct alignas(64) Leases {
  std::atomic<uint64_t> words[8] = {};
  std::atomic<uint32_t> generation{0};
};

void BM_Lab_Concurrency_Admit(benchmark::State& state) {
  static Leases leases;
  const LeaseSetRef ref(leases.words, 8, &leases.generation);
  const uint64_t tag = 1 + static_cast<uint64_t>(state.thread_index());
  for (auto _ : state) {
    const int32_t index = ref.TryAcquire(tag, static_cast<uint32_t>(state.thread_index()));
    if (index >= 0) ref.Release(static_cast<uint32_t>(index), tag);
    benchmark::DoNotOptimize(index);
  }
}
void BM_Lab_Concurrency_Deny(benchmark::State& state) {
  static Leases leases;
  const LeaseSetRef ref(leases.words, 1, &leases.generation);
  if (state.thread_index() == 0) ref.TryAcquire(99, 0);  // idempotent: the one lease is held
  for (auto _ : state) benchmark::DoNotOptimize(ref.TryAcquire(1, 0));
}

// Adaptive (AIMD)
// ----------------------------------------------------------------------------------

const AdaptiveRef& Adaptive(bool admitting) {
  static AdaptiveCell admit_cell, deny_cell;
  static const AdaptiveRef admit =
      OrDie(AdaptiveRef::Create(&admit_cell, {.initial = Rate::PerSecond(1'000'000'000),
                                              .burst = 1'000'000'000,
                                              .min_permits = 1'000'000}));
  static const AdaptiveRef deny = [] {
    AdaptiveRef ref = OrDie(AdaptiveRef::Create(
        &deny_cell, {.initial = Rate::PerDay(1), .burst = 1, .epoch_ns = Now()}));
    ref.TryAcquire(1, Now());
    return ref;
  }();
  return admitting ? admit : deny;
}

void BM_Lab_Adaptive_Admit(benchmark::State& state) {
  const AdaptiveRef& ref = Adaptive(true);
  for (auto _ : state) benchmark::DoNotOptimize(ref.TryAcquire(1, Now()));
}
void BM_Lab_Adaptive_Deny(benchmark::State& state) {
  const AdaptiveRef& ref = Adaptive(false);
  for (auto _ : state) benchmark::DoNotOptimize(ref.TryAcquire(1, Now()));
}

#define SLUICE_LAB_BENCHMARK(name) \
  BENCHMARK(name);                 \
  BENCHMARK(name)->Threads(2)->UseRealTime()

SLUICE_LAB_BENCHMARK(BM_Lab_TokenBucket_Admit);
SLUICE_LAB_BENCHMARK(BM_Lab_TokenBucket_Deny);
SLUICE_LAB_BENCHMARK(BM_Lab_Pacer_Admit);
SLUICE_LAB_BENCHMARK(BM_Lab_Pacer_Deny);
SLUICE_LAB_BENCHMARK(BM_Lab_FixedWindow_Admit);
SLUICE_LAB_BENCHMARK(BM_Lab_FixedWindow_Deny);
SLUICE_LAB_BENCHMARK(BM_Lab_SlidingWindow_Admit);
SLUICE_LAB_BENCHMARK(BM_Lab_SlidingWindow_Deny);
SLUICE_LAB_BENCHMARK(BM_Lab_SlidingLog_Admit);
SLUICE_LAB_BENCHMARK(BM_Lab_SlidingLog_Deny);
SLUICE_LAB_BENCHMARK(BM_Lab_Concurrency_Admit);
SLUICE_LAB_BENCHMARK(BM_Lab_Concurrency_Deny);
SLUICE_LAB_BENCHMARK(BM_Lab_Adaptive_Admit);
SLUICE_LAB_BENCHMARK(BM_Lab_Adaptive_Deny);

}  // namespace
}  // namespace sluice
