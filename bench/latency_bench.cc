// sluice_latency: how flat the tail of one admit is.
//
// Times every call with the time-stamp counter (rdtsc before, rdtscp after,
// fenced) and prints per-call latency percentiles (p50, p99, p99.9, p99.99,
// max) for admit on one bucket shared by 1 and 2 threads, on three paths:
//   word     the shared word (TokenBucket::TryAcquire)
//   mutex    a mutex-protected double token bucket (mutex_bucket.h)
//   leased   per-thread permit caches over the word (PermitCache::TryAcquire),
//            batches of 64 (--batch)
//   growing  the same caches with batches growing from 64 to 65,536
//            (--max-batch) while each is used up within the idle time
// The buckets refill at 1e9 permits/s with a capacity of 1e9, so every call
// admits. Nothing is subtracted: the `timer` row is the timer's own cost (an
// empty timed call), included in every other row. Each path runs
// --repetitions times on a fresh bucket and every percentile printed is the
// median of its runs.
//
// The counter's ticks are converted to ns with a rate calibrated once against
// CLOCK_MONOTONIC. Where the CPU does not report an invariant TSC, the tool
// says so and the figures are only as good as the counter.
//
//   sluice_latency [--calls=N] [--threads=1,2] [--batch=64] [--max-batch=65536]
//                  [--repetitions=5] [--json]
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include <time.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "bench/mutex_bucket.h"
#include "nlohmann/json.hpp"
#include "sluice/clock.h"
#include "sluice/permit_cache.h"
#include "sluice/token_bucket.h"

ABSL_FLAG(int64_t, calls, 1'000'000, "timed calls per thread in each run");
ABSL_FLAG(std::vector<std::string>, threads, std::vector<std::string>({"1", "2"}),
          "thread counts to run, comma-separated");
ABSL_FLAG(int64_t, batch, 64, "permits a thread caches at a time on the leased path");
ABSL_FLAG(int64_t, max_batch, 65'536, "the largest batch on the growing path");
ABSL_FLAG(int, repetitions, 5, "runs of each path; each percentile printed is their median");
ABSL_FLAG(bool, json, false, "print one JSON object instead of the table");

namespace sluice {
namespace {

// Ticks of the time-stamp counter (ns where there is none).
inline uint64_t TickBefore() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_lfence();  // earlier instructions finish before the read
  return __rdtsc();
#else
  return static_cast<uint64_t>(Clock::MonotonicNanos());
#endif
}

inline uint64_t TickAfter() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned aux;
  const uint64_t t = __rdtscp(&aux);  // waits for the timed call to finish
  _mm_lfence();                       // later instructions wait for the read
  return t;
#else
  return static_cast<uint64_t>(Clock::MonotonicNanos());
#endif
}

// Counter ticks per ns, against CLOCK_MONOTONIC over `span_ns`.
double CalibrateTicksPerNano(int64_t span_ns) {
#if defined(__x86_64__) || defined(__i386__)
  const int64_t m0 = Clock::MonotonicNanos();
  const uint64_t t0 = __rdtsc();
  const timespec pause{0, static_cast<long>(span_ns)};
  nanosleep(&pause, nullptr);
  const int64_t m1 = Clock::MonotonicNanos();
  const uint64_t t1 = __rdtsc();
  return static_cast<double>(t1 - t0) / static_cast<double>(m1 - m0);
#else
  (void)span_ns;
  return 1.0;
#endif
}

// Whether the CPU says its counter runs at a constant rate in every state.
bool InvariantTsc() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::stringstream text;
  text << cpuinfo.rdbuf();
  return absl::StrContains(text.str(), " constant_tsc") &&
         absl::StrContains(text.str(), " nonstop_tsc");
}

struct Percentiles {
  double p50, p99, p999, p9999, max;  // ns
};

// One thread's samples: a count per tick below kBins (32 KiB of counters
// that stay in cache, where storing every sample would stream megabytes
// out, and timing shows each new cache line and page of it), and the rare
// longer samples as they are.
struct Tally {
  static constexpr uint64_t kBins = 4096;
  std::vector<uint64_t> bins = std::vector<uint64_t>(kBins);
  std::vector<uint64_t> over;

  void Add(uint64_t ticks) {
    if (ticks < kBins) [[likely]] {
      ++bins[ticks];
    } else {
      over.push_back(ticks);
    }
  }
  void Merge(const Tally& other) {
    for (uint64_t i = 0; i < kBins; ++i) bins[i] += other.bins[i];
    over.insert(over.end(), other.over.begin(), other.over.end());
  }
};

// Nearest-rank percentiles of the samples in `tally`, in ns.
Percentiles Summarize(Tally& tally, double ticks_per_ns) {
  std::sort(tally.over.begin(), tally.over.end());
  uint64_t total = tally.over.size();
  for (uint64_t count : tally.bins) total += count;
  // The sample of rank `rank` (from 1) in ascending order.
  const auto ranked = [&](uint64_t rank) {
    for (uint64_t tick = 0; tick < Tally::kBins; ++tick) {
      if (rank <= tally.bins[tick]) return tick;
      rank -= tally.bins[tick];
    }
    return tally.over[rank - 1];
  };
  const auto at = [&](double q) {
    const auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total)));
    return static_cast<double>(ranked(std::clamp<uint64_t>(rank, 1, total))) / ticks_per_ns;
  };
  return {at(0.50), at(0.99), at(0.999), at(0.9999), at(1.0)};
}

// What one run times: the call (which must admit; a refusal ends the run
// with an error) and what keeps its bucket alive.
struct Subject {
  std::shared_ptr<void> owner;
  std::function<bool()> call;
};

// One path under test, building a fresh bucket for each run.
struct Path {
  const char* name;
  std::function<Subject()> make;
};

// A bucket and the permit caches over it, destroyed caches first.
struct LeasedBucket {
  std::unique_ptr<TokenBucket> bucket;
  std::unique_ptr<PermitCache> cache;
};

std::vector<Path> Paths(uint64_t batch, uint64_t max_batch) {
  constexpr uint64_t kRate = 1'000'000'000;
  const BucketConfig config{Rate::PerSecond(kRate), kRate};
  const auto empty = [] {
    asm volatile("" ::: "memory");
    return true;
  };
  const auto word = [config] {
    std::shared_ptr<TokenBucket> b = *TokenBucket::Create(config);
    return Subject{b, [b = b.get()] { return b->TryAcquire(1).granted(); }};
  };
  const auto mutex = [] {
    auto b = std::make_shared<MutexBucket>(1.0, 1e9);  // 1e9/s
    return Subject{b, [b = b.get()] { return b->TryAcquire(1); }};
  };
  const auto leased = [config](PermitCacheOptions options) {
    return [config, options] {
      auto l = std::make_shared<LeasedBucket>();
      l->bucket = *TokenBucket::Create(config);
      l->cache = *PermitCache::Create(l->bucket->ref(), options);
      return Subject{l, [c = l->cache.get()] { return c->TryAcquire(1).granted(); }};
    };
  };
  return {{"timer",
           [empty] {
             return Subject{nullptr, empty};
           }},
          {"word", word},
          {"mutex", mutex},
          {"leased", leased({.batch = batch})},
          {"growing", leased({.batch = batch, .max_batch = max_batch})}};
}

// Times `calls` calls of `call` on each of `threads` threads started
// together, after as many untimed ones; returns all threads' samples, or
// nullopt when a call refused.
std::optional<Tally> TimeCalls(const std::function<bool()>& call, int threads, int64_t calls) {
  std::vector<Tally> tallies(threads);
  std::atomic<int> ready{0};
  std::atomic<bool> refused{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      Tally tally;  // on this thread's own memory
      tally.over.reserve(1 << 16);
      bool ok = true;
      for (int64_t i = 0; i < calls; ++i) ok &= call();
      ready.fetch_add(1);
      while (ready.load() < threads) {
      }
      for (int64_t i = 0; i < calls; ++i) {
        const uint64_t start = TickBefore();
        ok &= call();
        tally.Add(TickAfter() - start);
      }
      if (!ok) refused.store(true);
      tallies[t] = std::move(tally);
    });
  }
  for (std::thread& t : pool) t.join();
  if (refused.load()) return std::nullopt;
  for (int t = 1; t < threads; ++t) tallies[0].Merge(tallies[t]);
  return std::move(tallies[0]);
}

// Each percentile's median over `repetitions` runs of `path` on a fresh
// bucket (this VM's noise comes in bursts that can fill one run's top
// 0.01%); nullopt when a call refused.
std::optional<Percentiles> Measure(const Path& path, int threads, int64_t calls, int repetitions,
                                   double ticks_per_ns) {
  std::vector<Percentiles> runs;
  for (int i = 0; i < repetitions; ++i) {
    const Subject subject = path.make();
    std::optional<Tally> tally = TimeCalls(subject.call, threads, calls);
    if (!tally.has_value()) return std::nullopt;
    runs.push_back(Summarize(*tally, ticks_per_ns));
  }
  const auto median = [&](double Percentiles::*field) {
    std::vector<double> values;
    for (const Percentiles& run : runs) values.push_back(run.*field);
    std::sort(values.begin(), values.end());
    return values[values.size() / 2];
  };
  return Percentiles{median(&Percentiles::p50), median(&Percentiles::p99),
                     median(&Percentiles::p999), median(&Percentiles::p9999),
                     median(&Percentiles::max)};
}

struct Row {
  std::string path;
  int threads;
  Percentiles ns;
};

void PrintTable(const std::vector<Row>& rows, double ticks_per_ns, int64_t calls, int repetitions) {
  absl::PrintF("sluice_latency: %d timed calls per thread; TSC %.4f ticks/ns\n", calls,
               ticks_per_ns);
  absl::PrintF(
      "per-call latency in ns, timer overhead (the `timer` row) included; each figure\n"
      "the median of %d runs\n\n",
      repetitions);
  absl::PrintF("%-8s %7s %9s %9s %9s %9s %11s\n", "path", "threads", "p50", "p99", "p99.9",
               "p99.99", "max");
  for (const Row& r : rows) {
    absl::PrintF("%-8s %7d %9.1f %9.1f %9.1f %9.1f %11.1f\n", r.path, r.threads, r.ns.p50, r.ns.p99,
                 r.ns.p999, r.ns.p9999, r.ns.max);
  }
  for (const Row& r : rows) {
    if ((r.path == "leased" || r.path == "growing") && r.threads == 2) {
      absl::PrintF("%s%s, 2 threads: p99.99 / p50 = %.2f (goal <= 2)\n",
                   r.path == "leased" ? "\n" : "", r.path, r.ns.p9999 / r.ns.p50);
    }
  }
}

void PrintJson(const std::vector<Row>& rows, double ticks_per_ns, int64_t calls, int repetitions,
               bool invariant_tsc) {
  nlohmann::ordered_json out = {{"calls_per_thread", calls},
                                {"repetitions", repetitions},
                                {"tsc_ticks_per_ns", ticks_per_ns},
                                {"invariant_tsc", invariant_tsc},
                                {"runs", nlohmann::ordered_json::array()}};
  for (const Row& r : rows) {
    out["runs"].push_back({{"path", r.path},
                           {"threads", r.threads},
                           {"ns",
                            {{"p50", r.ns.p50},
                             {"p99", r.ns.p99},
                             {"p99.9", r.ns.p999},
                             {"p99.99", r.ns.p9999},
                             {"max", r.ns.max}}}});
  }
  absl::PrintF("%s\n", out.dump(2));
}

int Main() {
  const int64_t calls = absl::GetFlag(FLAGS_calls);
  const int64_t batch = absl::GetFlag(FLAGS_batch);
  const int64_t max_batch = absl::GetFlag(FLAGS_max_batch);
  const int repetitions = absl::GetFlag(FLAGS_repetitions);
  std::vector<int> thread_counts;
  for (const std::string& word : absl::GetFlag(FLAGS_threads)) {
    int n = 0;
    if (!absl::SimpleAtoi(word, &n) || n < 1 || n > 256) {
      absl::FPrintF(stderr, "sluice_latency: --threads: %s is not a count from 1 to 256\n", word);
      return 2;
    }
    thread_counts.push_back(n);
  }
  if (calls < 1 || batch < 1 || repetitions < 1 || max_batch < batch || max_batch > 1'000'000'000) {
    absl::FPrintF(stderr,
                  "sluice_latency: --calls, --batch and --repetitions must be at least 1, and "
                  "--max-batch from --batch to 1e9 (the buckets' capacity)\n");
    return 2;
  }
  const bool invariant_tsc = InvariantTsc();
  if (!invariant_tsc) {
    absl::FPrintF(stderr, "sluice_latency: the CPU reports no invariant TSC; ns are approximate\n");
  }
  const double ticks_per_ns = CalibrateTicksPerNano(50'000'000);
  std::vector<Row> rows;
  for (int threads : thread_counts) {
    for (const Path& path : Paths(static_cast<uint64_t>(batch), static_cast<uint64_t>(max_batch))) {
      const std::optional<Percentiles> ns =
          Measure(path, threads, calls, repetitions, ticks_per_ns);
      if (!ns.has_value()) {
        absl::FPrintF(stderr, "sluice_latency: the %s path refused a call\n", path.name);
        return 1;
      }
      rows.push_back({path.name, threads, *ns});
    }
  }
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(rows, ticks_per_ns, calls, repetitions, invariant_tsc);
  } else {
    PrintTable(rows, ticks_per_ns, calls, repetitions);
  }
  return 0;
}

}  // namespace
}  // namespace sluice

// Abseil spells flag names with underscores; this tool also takes them with
// dashes (--max-batch), as git and curl spell them. Values and anything after
// "--" are left alone.
void UnderscoreFlagNames(int argc, char** argv) {
  for (int i = 1; i < argc && std::string_view(argv[i]) != "--"; ++i) {
    if (!std::string_view(argv[i]).starts_with("--")) continue;
    for (char* c = argv[i] + 2; *c != '\0' && *c != '='; ++c) {
      if (*c == '-') *c = '_';
    }
  }
}

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "per-call admit latency percentiles on one bucket: the shared word, a mutex bucket and "
      "per-thread permit caches, with 1 and 2 threads");
  UnderscoreFlagNames(argc, argv);
  absl::ParseCommandLine(argc, argv);
  return sluice::Main();
}
