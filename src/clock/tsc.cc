// The TSC calibration (sluice/tsc.h): detection, the calibration's writers,
// and the reader's slow path.

#include "sluice/tsc.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sluice/clock.h"

namespace sluice {
namespace {

constexpr char kCpuinfoPath[] = "/proc/cpuinfo";
constexpr char kClocksourcePath[] =
    "/sys/devices/system/clocksource/clocksource0/current_clocksource";
constexpr int kShift = TscCalibration::kShift;

absl::StatusOr<std::string> ReadText(const char* path) {
  std::ifstream in(path);
  if (!in) return absl::UnavailableError(absl::StrCat("cannot read ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Whether every "flags" line of `cpuinfo` (one per CPU) lists `flag`, and
// there is at least one.
bool EveryCpuHas(absl::string_view cpuinfo, absl::string_view flag) {
  int cpus = 0;
  for (absl::string_view line : absl::StrSplit(cpuinfo, '\n')) {
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    if (absl::StripAsciiWhitespace(line.substr(0, colon)) != "flags") continue;
    ++cpus;
    bool found = false;
    for (absl::string_view f : absl::StrSplit(line.substr(colon + 1), ' ', absl::SkipEmpty())) {
      found |= absl::StripAsciiWhitespace(f) == flag;
    }
    if (!found) return false;
  }
  return cpus > 0;
}

// ns per tick * 2^kShift between two samples; 0 when they do not span time.
uint64_t RateBetween(TscSample a, TscSample b) {
  if (b.tsc <= a.tsc || b.ns <= a.ns) return 0;
  return static_cast<uint64_t>((static_cast<__int128>(b.ns - a.ns) << kShift) / (b.tsc - a.tsc));
}

// Ticks in `ns` at `rate`, at least 1.
uint64_t TicksIn(int64_t ns, uint64_t rate) {
  const __int128 ticks = (static_cast<__int128>(std::max<int64_t>(ns, 1)) << kShift) / rate;
  return static_cast<uint64_t>(std::max<__int128>(ticks, 1));
}

// Nanoseconds in `ticks` at `rate`.
int64_t NanosIn(uint64_t ticks, uint64_t rate) {
  return static_cast<int64_t>((static_cast<__int128>(ticks) * rate) >> kShift);
}

}  // namespace

absl::Status TscUsableFrom(absl::string_view cpuinfo, absl::string_view clocksource) {
#if !defined(__x86_64__)
  return absl::UnimplementedError("the TSC clock is only built for x86-64");
#endif
  for (absl::string_view flag : {"constant_tsc", "nonstop_tsc"}) {
    if (!EveryCpuHas(cpuinfo, flag)) {
      return absl::FailedPreconditionError(
          absl::StrCat("the CPU does not report an invariant TSC (no '", flag, "' in ",
                       kCpuinfoPath, " flags); using CLOCK_MONOTONIC"));
    }
  }
  const absl::string_view source = absl::StripAsciiWhitespace(clocksource);
  if (source != "tsc") {
    return absl::FailedPreconditionError(
        absl::StrCat("the kernel keeps time with clocksource '", source,
                     "', not 'tsc' (it did not find the TSC reliable); using CLOCK_MONOTONIC"));
  }
  return absl::OkStatus();
}

absl::Status TscUsable() {
  static const absl::Status* const usable = [] {
    const absl::StatusOr<std::string> cpuinfo = ReadText(kCpuinfoPath);
    if (!cpuinfo.ok()) return new absl::Status(cpuinfo.status());
    const absl::StatusOr<std::string> source = ReadText(kClocksourcePath);
    if (!source.ok()) return new absl::Status(source.status());
    return new absl::Status(TscUsableFrom(*cpuinfo, *source));
  }();
  return *usable;
}

TscSample SampleMonotonic() {
  TscSample best{};
  uint64_t narrowest = std::numeric_limits<uint64_t>::max();
  for (int i = 0; i < 5; ++i) {
    const uint64_t before = ReadTscOrdered();
    const int64_t ns = Clock::MonotonicNanos();
    const uint64_t after = ReadTscOrdered();
    if (after >= before && after - before < narrowest) {
      narrowest = after - before;
      best = {before + (after - before) / 2, ns};
    }
  }
  return best;
}

void TscCalibration::Init(TscSample first, TscSample second, const TscTiming& timing) {
  uint64_t rate = RateBetween(first, second);
  if (rate == 0) rate = uint64_t{1} << kShift;  // no span: 1 ns a tick until the first check
  Snapshot s{};
  s.rate = rate;
  s.anchor = first;
  s.interval = TicksIn(timing.interval_ns, rate);
  s.slack = TicksIn(timing.slack_ns, rate);
  s.check_tsc = second.tsc + s.interval;
  s.cur = {second.tsc, second.ns, rate, s.check_tsc + s.slack};
  s.prev = {second.tsc, second.ns, rate, second.tsc};
  for (Record& r : records_) r.tag.store(0, std::memory_order_relaxed);
  Store(1, 1, s);
  published_.store(1, std::memory_order_relaxed);
  claim_.store(1, std::memory_order_relaxed);
  claim_tsc_.store(second.tsc, std::memory_order_relaxed);
  steal_.store(TicksIn(timing.steal_ns, rate), std::memory_order_relaxed);
  state_.store(kReady, std::memory_order_release);
}

void TscCalibration::Calibrate(int64_t window_ns, const TscTiming& timing) {
  const TscSample first = SampleMonotonic();
  while (Clock::MonotonicNanos() - first.ns < window_ns) {
  }
  Init(first, SampleMonotonic(), timing);
}

TscCalibration::Snapshot TscCalibration::Next(const Snapshot& s, TscSample now) {
  Snapshot n = s;
  // The rate over the longest span measured, once it is long enough to beat
  // the first short window, kept within 1% of the last (a physical TSC and
  // CLOCK_MONOTONIC differ by parts per million: more is a bad reference).
  const uint64_t measured = RateBetween(s.anchor, now);
  if (measured != 0 && now.tsc - s.anchor.tsc >= s.interval / 2) {
    n.rate = std::clamp(measured, s.rate - s.rate / 100, s.rate + s.rate / 100);
    n.anchor = now;
  }
  // The new line starts where the old one stops (or now, if that is later),
  // at the old line's value there, or CLOCK_MONOTONIC's if that is later.
  const uint64_t start = std::max(now.tsc, s.cur.valid_until);
  const int64_t held = s.cur.At(start);
  const int64_t monotonic = now.ns + NanosIn(start - now.tsc, n.rate);
  const int64_t base = std::max(held, monotonic);
  n.check_tsc = start + s.interval;
  const uint64_t end = n.check_tsc + s.slack;
  // A line running ahead slows down so as to meet CLOCK_MONOTONIC at its end,
  // at no less than half speed.
  const __int128 lead = (static_cast<__int128>(base - monotonic) << kShift) / (end - start);
  const uint64_t mult =
      lead >= static_cast<__int128>(n.rate / 2) ? n.rate - n.rate / 2 : n.rate - uint64_t(lead);
  n.prev = s.cur;
  n.cur = {start, base, mult, end};
  return n;
}

bool TscCalibration::Store(uint64_t gen, uint64_t base, const Snapshot& s) {
  Record& r = records_[gen % kRecords];
  // Only a record older than the generation it was computed from can be
  // rewritten: it is not live and can never be published again. One being
  // written (by a writer now stopped, or dead) is left alone.
  uint64_t tag = r.tag.load(std::memory_order_acquire);
  if ((tag & kWriting) != 0 || tag >= base) return false;
  if (!r.tag.compare_exchange_strong(tag, gen | kWriting, std::memory_order_relaxed)) return false;
  std::atomic_thread_fence(std::memory_order_release);
  const uint64_t words[14] = {s.cur.base_tsc,
                              static_cast<uint64_t>(s.cur.base_ns),
                              s.cur.mult,
                              s.cur.valid_until,
                              s.prev.base_tsc,
                              static_cast<uint64_t>(s.prev.base_ns),
                              s.prev.mult,
                              s.prev.valid_until,
                              s.check_tsc,
                              s.anchor.tsc,
                              uint64_t(s.anchor.ns),
                              s.rate,
                              s.interval,
                              s.slack};
  for (int i = 0; i < 14; ++i) r.words[i].store(words[i], std::memory_order_relaxed);
  r.tag.store(gen, std::memory_order_release);
  return true;
}

bool TscCalibration::LoadCurrent(Snapshot* s) const {
  // A record is rewritten only kRecords generations later, so a failed load
  // is a writer racing far ahead: retry. A calibration that never loads is
  // corrupt; its readers fail rather than spin.
  for (int i = 0; i < 1000; ++i) {
    if (Load(published_.load(std::memory_order_acquire), s, /*full=*/true)) return true;
  }
  return false;
}

bool TscCalibration::Claim(uint64_t published, uint64_t tsc, uint64_t* gen) {
  uint64_t claimed = claim_.load(std::memory_order_acquire);
  if (claimed > published) {
    // Another writer is at work; after steal_ticks it is taken for dead.
    const uint64_t since = claim_tsc_.load(std::memory_order_acquire);
    if (tsc < since || tsc - since < steal_.load(std::memory_order_relaxed)) return false;
  }
  uint64_t next = std::max(claimed, published) + 1;
  if ((next - published) % kRecords == 0) ++next;  // never the live record's slot
  if (!claim_.compare_exchange_strong(claimed, next, std::memory_order_acq_rel)) return false;
  claim_tsc_.store(tsc, std::memory_order_release);
  *gen = next;
  return true;
}

bool TscCalibration::Recalibrate(uint64_t tsc, absl::FunctionRef<TscSample()> reference) {
  Snapshot s;
  // Until the current line starts, the one before it is in force and a new
  // line would have to replace both: there is nothing to do yet.
  if (!LoadCurrent(&s) || tsc < s.cur.base_tsc) return false;
  const uint64_t published = s.generation;
  uint64_t gen;
  if (!Claim(published, tsc, &gen)) return false;
  // A record left half-written by a writer that died keeps the claim until it
  // is taken over (with the next record).
  if (!Store(gen, published, Next(s, reference()))) return false;
  uint64_t expected = published;
  if (published_.compare_exchange_strong(expected, gen, std::memory_order_acq_rel)) return true;
  // Another writer (one that took over our claim) published first: hand the
  // claim back if nobody has claimed since.
  claim_.compare_exchange_strong(gen, expected, std::memory_order_acq_rel);
  return false;
}

int64_t TscCalibration::ReadAt(uint64_t tsc, absl::FunctionRef<TscSample()> reference) {
  Snapshot s;
  // Twice at most: a generation published by this call covers `tsc`.
  for (int i = 0; i < 2; ++i) {
    if (!LoadCurrent(&s)) return Clock::MonotonicNanos();
    if (tsc < s.check_tsc) return s.At(tsc);
    // Past the check point: recalibrate, or if another thread is doing so,
    // hold at most the line's last value (At stops at valid_until).
    TscSample taken{};
    if (!Recalibrate(tsc, [&] { return taken = reference(); })) return s.At(tsc);
    // The new line may start only at the sample's tick (after a long pause,
    // `tsc` would read the old line's last value): read at that tick, a
    // moment later than `tsc`.
    tsc = std::max(tsc, taken.tsc);
  }
  return s.At(tsc);
}

int64_t TscCalibration::NowSlow(uint64_t tsc) { return ReadAt(tsc, SampleMonotonic); }

int64_t TscCalibration::Convert(uint64_t tsc) const {
  Snapshot s;
  return LoadCurrent(&s) ? s.At(tsc) : Clock::MonotonicNanos();
}

uint64_t TscCalibration::check_tsc() const {
  Snapshot s;
  return LoadCurrent(&s) ? s.check_tsc : 0;
}

absl::Status TscCalibration::Validate() const {
  const uint32_t st = state();
  if (st == kUnusable) return absl::OkStatus();
  if (st != kReady) {
    return absl::FailedPreconditionError(
        absl::StrCat("TSC calibration state 0x", absl::Hex(st), " is neither ready nor unusable"));
  }
  Snapshot s;
  if (!LoadCurrent(&s)) {
    return absl::FailedPreconditionError(
        absl::StrCat("TSC calibration generation ", generation(), " has no record"));
  }
  if (s.cur.mult == 0 || s.rate == 0 || s.interval == 0 || s.cur.valid_until < s.check_tsc ||
      s.check_tsc < s.cur.base_tsc) {
    return absl::FailedPreconditionError(
        absl::StrCat("TSC calibration generation ", generation(), " is inconsistent"));
  }
  return absl::OkStatus();
}

}  // namespace sluice
