// sluice_bench: what one throttling decision costs, in nanoseconds.
//
// Every figure is compared with baselines measured in the same run (these
// machines are noisy, so only ratios travel):
//   BM_Floor_ClockCas      the physical floor: read the clock, one CAS
//   BM_Floor_Tsc           one read of the TSC clock (Clock::Tsc())
//   BM_MutexBucket_Admit   a mutex-protected double token bucket, the design
//                          most rate limiters use (mutex_bucket.h)
// BM_Acquire_Leased admits through per-thread permit caches (permit_cache.h),
// BM_Acquire_LeasedGrowing through caches whose batches grow.
// After the table, the ratios the project holds itself to are printed with
// their floors. Run with --benchmark_repetitions=N to compare medians.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/mutex_bucket.h"
#include "benchmark/benchmark.h"
#include "sluice/clock.h"
#include "sluice/limits.h"
#include "sluice/permit_cache.h"
#include "sluice/policy.h"
#include "sluice/segment.h"
#include "sluice/store.h"
#include "sluice/token_bucket.h"

namespace sluice {
namespace {

// One shared word or bucket per benchmark, on its own cache line, shared by
// all threads of a multi-threaded run.
struct alignas(64) FloorWord {
  std::atomic<int64_t> word{0};
};

void BM_Floor_ClockCas(benchmark::State& state) {
  static FloorWord floor;
  constexpr int64_t kInterval = 1;
  for (auto _ : state) {
    const int64_t now = Clock::MonotonicNanos();
    int64_t w = floor.word.load(std::memory_order_acquire);
    const bool done = floor.word.compare_exchange_weak(w, std::max(w, now) + kInterval,
                                                       std::memory_order_acq_rel);
    benchmark::DoNotOptimize(done);
  }
}

// One clock read: the TSC clock (Clock::Tsc(); CLOCK_MONOTONIC where the TSC
// is unusable), against the floor's clock_gettime.
void BM_Floor_Tsc(benchmark::State& state) {
  const Clock clock = Clock::Tsc();
  for (auto _ : state) benchmark::DoNotOptimize(clock.Now());
}

// A bucket that always admits: 1e9 permits/s outpaces any loop.
TokenBucket& AdmittingBucket(Clock clock) {
  static auto* precise =
      TokenBucket::Create({Rate::PerSecond(1'000'000'000), 1'000'000'000}, Clock::Monotonic())
          ->release();
  static auto* coarse =
      TokenBucket::Create({Rate::PerSecond(1'000'000'000), 1'000'000'000}, Clock::Coarse())
          ->release();
  static auto* tsc =
      TokenBucket::Create({Rate::PerSecond(1'000'000'000), 1'000'000'000}, Clock::Tsc())->release();
  switch (clock.kind()) {
    case Clock::Kind::kMonotonicCoarse:
      return *coarse;
    case Clock::Kind::kTsc:
      return *tsc;
    default:
      return *precise;
  }
}

void BM_Acquire_Admit(benchmark::State& state) {
  const TokenBucket& bucket = AdmittingBucket(Clock::Monotonic());
  for (auto _ : state) benchmark::DoNotOptimize(bucket.TryAcquire(1));
}

// The same rate through per-thread permit caches (sluice/permit_cache.h):
// batches of 64 from the shared word, admits from the thread's own cache.
void BM_Acquire_Leased(benchmark::State& state) {
  static PermitCache* const cache = [] {
    static auto* bucket =
        TokenBucket::Create({Rate::PerSecond(1'000'000'000), 1'000'000'000})->release();
    return PermitCache::Create(bucket->ref(), {.batch = 64})->release();
  }();
  for (auto _ : state) benchmark::DoNotOptimize(cache->TryAcquire(1));
}

// The same with batches growing from 64 to 65,536 while each is used up
// within the idle time (PermitCacheOptions::max_batch).
void BM_Acquire_LeasedGrowing(benchmark::State& state) {
  static PermitCache* const cache = [] {
    static auto* bucket =
        TokenBucket::Create({Rate::PerSecond(1'000'000'000), 1'000'000'000})->release();
    return PermitCache::Create(bucket->ref(), {.batch = 64, .max_batch = 65'536})->release();
  }();
  for (auto _ : state) benchmark::DoNotOptimize(cache->TryAcquire(1));
}

void BM_Acquire_AdmitNow(benchmark::State& state) {
  const TokenBucket& bucket = AdmittingBucket(Clock::Monotonic());
  int64_t now = Clock::MonotonicNanos();
  for (auto _ : state) benchmark::DoNotOptimize(bucket.TryAcquire(1, ++now));
}

void BM_Acquire_AdmitCoarse(benchmark::State& state) {
  const TokenBucket& bucket = AdmittingBucket(Clock::Coarse());
  for (auto _ : state) benchmark::DoNotOptimize(bucket.TryAcquire(1));
}

void BM_Acquire_AdmitTsc(benchmark::State& state) {
  const TokenBucket& bucket = AdmittingBucket(Clock::Tsc());
  for (auto _ : state) benchmark::DoNotOptimize(bucket.TryAcquire(1));
}

void BM_Acquire_Deny(benchmark::State& state) {
  // One permit a day, already taken: every attempt is refused.
  static auto* bucket = [] {
    TokenBucket* b = TokenBucket::Create({Rate::PerDay(1), 1})->release();
    b->TryAcquire(1);
    return b;
  }();
  for (auto _ : state) benchmark::DoNotOptimize(bucket->TryAcquire(1));
}

// The same always-admitting bucket, in a shared-memory segment: the handle
// runs the in-process cell code on the mapped slot.
void BM_ShmAcquire_Admit(benchmark::State& state) {
  static const SharedBucket bucket = [] {
    const std::string path = absl::StrFormat("/dev/shm/sluice-bench-%d", getpid());
    SegmentOptions options;
    options.slots = 16;
    auto segment = Segment::Open(path, options);
    if (!segment.ok()) {
      absl::FPrintF(stderr, "sluice_bench: %s\n", segment.status().ToString());
      std::exit(1);
    }
    (*segment)->Unlink().IgnoreError();  // the mapping outlives the name
    auto bucket = (*segment)->OpenBucket("bench", {Rate::PerSecond(1'000'000'000), 1'000'000'000});
    if (!bucket.ok()) std::exit(1);
    segment->release();  // kept mapped for the life of the program
    return *bucket;
  }();
  for (auto _ : state) benchmark::DoNotOptimize(bucket.TryAcquire(1));
}

// A whole request through the policy, over a shared segment: a scope path of
// three (requests per minute each), the provider's RPM, ITPM, OTPM and tokens
// per day, and the workflow's daily USD budget, reserved all-or-nothing and
// settled against reported usage. Limits are high enough never to refuse.
void BM_Policy_AcquireSettle(benchmark::State& state) {
  static Policy* const policy = [] {
    constexpr char kLimits[] = R"(
headroom = 1.0
[providers.anthropic]
requests_per_minute = 60000000000
input_tokens_per_minute = 60000000000
output_tokens_per_minute = 60000000000
tokens_per_day = 86400000000000
[scopes.global]
requests_per_minute = 60000000000
[scopes."team:bench"]
requests_per_minute = 60000000000
[scopes."workflow:bench"]
parent = "team:bench"
requests_per_minute = 60000000000
usd_per_day = 8000000.0
[prices."bench-model"]
input = 3.0
output = 15.0
)";
    auto config = ParseLimitsConfig(kLimits, "bench");
    const std::string path = absl::StrFormat("/dev/shm/sluice-bench-policy-%d", getpid());
    auto segment = Segment::Open(path);
    if (!config.ok() || !segment.ok()) {
      absl::FPrintF(stderr, "sluice_bench: %s %s\n", config.status().ToString(),
                    segment.status().ToString());
      std::exit(1);
    }
    (*segment)->Unlink().IgnoreError();
    Store* store = NewSegmentStore(segment->release()).release();
    auto created = Policy::Create(*config, store);
    if (!created.ok()) std::exit(1);
    return created->release();
  }();
  const Route* route = *policy->Resolve("workflow:bench", "anthropic", "bench-model");
  const Usage usage{.input_tokens = 90, .output_tokens = 60};
  for (auto _ : state) {
    absl::StatusOr<Permit> permit =
        policy->Reserve(*route, 100, 100, absl::ZeroDuration(), Clock::MonotonicNanos());
    permit->Settle(usage);
  }
}

void BM_MutexBucket_Admit(benchmark::State& state) {
  static MutexBucket bucket(1.0, 1e9);
  for (auto _ : state) benchmark::DoNotOptimize(bucket.TryAcquire(1));
}

// Shared by all threads: 2 threads, and one per CPU where that is more.
// Times are wall time per operation per thread.
void Contended(benchmark::internal::Benchmark* b) {
  b->Threads(2);
  if (benchmark::CPUInfo::Get().num_cpus > 2) b->ThreadPerCpu();
  b->UseRealTime();
}

BENCHMARK(BM_Floor_ClockCas);
BENCHMARK(BM_Floor_ClockCas)->Apply(Contended);
BENCHMARK(BM_Acquire_Admit);
BENCHMARK(BM_Acquire_Admit)->Apply(Contended);
BENCHMARK(BM_Acquire_Leased);
BENCHMARK(BM_Acquire_Leased)->Apply(Contended);
BENCHMARK(BM_Acquire_LeasedGrowing);
BENCHMARK(BM_Acquire_LeasedGrowing)->Apply(Contended);
BENCHMARK(BM_Acquire_AdmitNow);
BENCHMARK(BM_Acquire_AdmitCoarse);
BENCHMARK(BM_Acquire_AdmitTsc);
BENCHMARK(BM_Floor_Tsc);
BENCHMARK(BM_Acquire_Deny);
BENCHMARK(BM_Acquire_Deny)->Apply(Contended);
BENCHMARK(BM_ShmAcquire_Admit);
BENCHMARK(BM_ShmAcquire_Admit)->Apply(Contended);
BENCHMARK(BM_Policy_AcquireSettle);
BENCHMARK(BM_MutexBucket_Admit);
BENCHMARK(BM_MutexBucket_Admit)->Apply(Contended);

// Thread scaling from 1 to 16 threads, for a many-core machine:
//   sluice_bench --benchmark_filter=BM_Scaling
// Excluded from default runs by main() below.
BENCHMARK(BM_Acquire_Admit)
    ->Name("BM_Scaling_Acquire_Admit")
    ->DenseThreadRange(1, 16)
    ->UseRealTime();
BENCHMARK(BM_Acquire_Leased)
    ->Name("BM_Scaling_Acquire_Leased")
    ->DenseThreadRange(1, 16)
    ->UseRealTime();
BENCHMARK(BM_Acquire_LeasedGrowing)
    ->Name("BM_Scaling_Acquire_LeasedGrowing")
    ->DenseThreadRange(1, 16)
    ->UseRealTime();
BENCHMARK(BM_MutexBucket_Admit)
    ->Name("BM_Scaling_MutexBucket_Admit")
    ->DenseThreadRange(1, 16)
    ->UseRealTime();

// Prints the usual console table, then the ratios against the baselines of
// the same run: medians when repetitions were asked for, else single runs.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  RatioReporter() : ConsoleReporter(isatty(fileno(stdout)) ? OO_ColorTabular : OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      const bool single = run.run_type == Run::RT_Iteration && run.repetitions <= 1;
      if (!median && !single) continue;
      times_[Key(run.run_name.function_name, run.threads)] = run.GetAdjustedRealTime();
    }
    ConsoleReporter::ReportRuns(runs);
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    struct Ratio {
      std::string what, base;
      double floor;
    };
    const Ratio ratios[] = {
        {Key("BM_Acquire_Admit", 1), Key("BM_Floor_ClockCas", 1), 1.2},
        {Key("BM_Acquire_Deny", 1), Key("BM_Floor_ClockCas", 1), 1.0},
        {Key("BM_Acquire_AdmitCoarse", 1), Key("BM_Floor_ClockCas", 1), 0.5},
        {Key("BM_Acquire_AdmitTsc", 1), Key("BM_Floor_ClockCas", 1), 0.6},
        {Key("BM_Acquire_AdmitNow", 1), Key("BM_Floor_ClockCas", 1), 1.2},
        {Key("BM_Acquire_Admit", 2), Key("BM_MutexBucket_Admit", 2), 0.8},
        {Key("BM_Acquire_Admit", 1), Key("BM_MutexBucket_Admit", 1), 1.0},
        {Key("BM_Acquire_Leased", 2), Key("BM_Acquire_Admit", 2), 0.3},
        {Key("BM_ShmAcquire_Admit", 1), Key("BM_Acquire_Admit", 1), 1.1},
        {Key("BM_ShmAcquire_Admit", 2), Key("BM_Acquire_Admit", 2), 1.1},
        {Key("BM_Policy_AcquireSettle", 1), Key("BM_Acquire_Admit", 1), 20.0},
        {Key("BM_Redis_Exact", 1), Key("BM_Redis_ReferenceScript", 1), 1.2},
        {Key("BM_Redis_Exact", 1), Key("BM_Redis_Ping", 1), 3.0},
        {Key("BM_Redis_PolicyExact", 1), Key("BM_Redis_Exact", 1), 1.5},
        {Key("BM_Redis_LeasedAdmit", 1), Key("BM_ShmAcquire_Admit", 1), 1.2},
    };
    bool header = false;
    for (const Ratio& r : ratios) {
      const auto what = times_.find(r.what);
      const auto base = times_.find(r.base);
      if (what == times_.end() || base == times_.end() || base->second <= 0) continue;
      if (!header) {
        absl::FPrintF(stdout, "\n%-34s %-30s %7s %7s  %s\n", "benchmark", "baseline (same run)",
                      "ratio", "floor", "");
        header = true;
      }
      const double ratio = what->second / base->second;
      absl::FPrintF(stdout, "%-34s %-30s %7.2f %7.2f  %s\n", r.what, r.base, ratio, r.floor,
                    ratio <= r.floor ? "ok" : "ABOVE FLOOR");
    }
  }

 private:
  static std::string Key(const std::string& name, int threads) {
    return threads == 1 ? name : absl::StrFormat("%s/threads:%d", name, threads);
  }

  std::map<std::string, double> times_;
};

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) {
  // The 1-16 thread scaling runs are for many-core machines; leave them out
  // unless a filter is given.
  std::vector<char*> args(argv, argv + argc);
  std::string default_filter =
      "--benchmark_filter=^BM_(Floor|Acquire|ShmAcquire|Policy|MutexBucket|Redis)_";
  bool has_filter = false;
  for (int i = 1; i < argc; ++i)
    has_filter |= std::string(argv[i]).rfind("--benchmark_filter", 0) == 0;
  if (!has_filter) args.push_back(default_filter.data());
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  sluice::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
