// File: tsc.h
// -----------------------------------------------------------------------------
// The time-stamp counter (TSC) as a nanosecond clock on CLOCK_MONOTONIC's
// origin. Reading the TSC costs about half of what clock_gettime does; a
// TscCalibration turns its ticks into nanoseconds with integer fixed point
// (no floating point, no syscall, no lock on the read path).
//
// When it is used. Only where the CPU reports an invariant TSC (the
// `constant_tsc` and `nonstop_tsc` flags of /proc/cpuinfo: it ticks at one
// rate in every power state and on every core) and the kernel itself keeps
// time with it (the current clocksource is `tsc`: the kernel has checked that
// the cores' counters agree). TscUsable() says why not otherwise, and
// Clock::Tsc() then falls back to CLOCK_MONOTONIC.
//
// How it converts. A TscCalibration is a piecewise-linear function F from
// ticks to nanoseconds, published as generations. Generation g holds the line
// in use, ns = base_ns + (tsc - base_tsc) * mult / 2^32, and the one before it,
// each valid up to a tick (valid_until) beyond which its readers hold the
// line's last value rather than extrapolate. Once a reading passes the
// generation's check point, the reader that gets there first measures the TSC
// against CLOCK_MONOTONIC again and publishes generation g + 1, whose new line
// starts no earlier than where the old one stops (its valid_until), at the
// old line's value there or CLOCK_MONOTONIC's if that is later (time may step
// forward, never back), with a slope that meets CLOCK_MONOTONIC again by the
// end of the new line. NTP slews CLOCK_MONOTONIC by up to 500 ppm; with a check
// every 100 ms the two stay within a fraction of a millisecond.
//
// Why it never goes backwards. Every reading of any generation equals F(t')
// for some t' <= the tick t it read (a line's readers stop at its
// valid_until, and the next line starts there at a value no lower), F is
// non-decreasing, and a reading that follows another (in one thread, or after
// seeing its result through memory) sees the same or a later generation and a
// later tick (the TSC is read after the calibration, behind an lfence, as the
// kernel reads it for clock_gettime). So it never returns less than a reading
// that happened before it, in any thread or process.
//
// Where it lives. A TscCalibration is a block of atomics with no pointers, so
// it can sit in shared memory: the segment header holds one, and every process
// on the host converts with it in the same way. A process without a segment
// gets a process-wide one from Clock::Tsc().
//
// Thread safety: all methods except Init are safe from any number of threads
// and processes. Readers never wait for a writer: a recalibration is published
// with one compare-and-swap after its record is written, and concurrent ones
// write different records (one wins, the others are dropped). A process killed
// at any point leaves a calibration that is still read correctly; a claim it
// held is taken over after steal_ticks. A writer enters a record only when it
// is older than the generation the writer computed from (so not live, and
// never to be published again) and nobody else is writing it, so a stopped
// writer can never tear a record that readers use.

#ifndef SLUICE_TSC_H_
#define SLUICE_TSC_H_

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include <atomic>
#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sluice {

// Why the TSC may not be used here, read once per process from /proc/cpuinfo
// and the kernel's current clocksource: OK when it may; FailedPrecondition
// naming the missing flag or the clocksource in use; Unimplemented off x86-64;
// Unavailable when a file cannot be read.
absl::Status TscUsable();

// The same decision from the texts of /proc/cpuinfo and of
// /sys/devices/system/clocksource/clocksource0/current_clocksource.
absl::Status TscUsableFrom(absl::string_view cpuinfo, absl::string_view clocksource);

// The TSC, read after every earlier load of this thread has completed (lfence;
// rdtsc): a reading ordered after what the thread saw. 0 off x86-64.
inline uint64_t ReadTscOrdered() {
#if defined(__x86_64__)
  _mm_lfence();
  return __rdtsc();
#else
  return 0;
#endif
}

// One paired reading: a tick and the CLOCK_MONOTONIC nanoseconds at it.
struct TscSample {
  uint64_t tsc;
  int64_t ns;
};

// The tightest of a few TSC / CLOCK_MONOTONIC / TSC brackets, the sample's
// tick being the bracket's midpoint (within ~20 ns of the clock read).
TscSample SampleMonotonic();

// How often a calibration is checked, in nanoseconds (turned into ticks by
// Init). The defaults keep the offset from CLOCK_MONOTONIC well under 1 ms
// under NTP's 500 ppm slew; tests shorten them.
struct TscTiming {
  int64_t interval_ns = 100'000'000;  // a line's length before its check point
  int64_t slack_ns = 100'000'000;     // check point to valid_until
  int64_t steal_ns = 10'000'000;      // a recalibration claim older than this is taken over
};

// TscCalibration
//
// See the file comment. Zero bytes are an uninitialized calibration. 128-byte
// aligned; its size and layout are part of the segment layout.
class alignas(128) TscCalibration {
 public:
  static constexpr int kShift = 32;   // mult is ns per tick * 2^kShift
  static constexpr int kRecords = 8;  // generations in flight

  // State words (unlikely values, so corruption shows).
  static constexpr uint32_t kUnset = 0;
  static constexpr uint32_t kReady = 0x75C0CA1Bu;
  static constexpr uint32_t kUnusable = 0x0B5C7E55u;  // the creator's TSC was unusable

  // Publishes generation 1 from two samples taken some time apart (`first`
  // before `second`; a millisecond gives a rate within tens of ppm, refined at
  // every check). REQUIRES: no other thread or process uses it yet.
  void Init(TscSample first, TscSample second, const TscTiming& timing = {});
  // Measures and Init()s over `window_ns` of real time (spinning).
  void Calibrate(int64_t window_ns = 1'000'000, const TscTiming& timing = {});
  // Records that the TSC is not usable (readers must not use this one).
  void MarkUnusable() { state_.store(kUnusable, std::memory_order_release); }

  uint32_t state() const { return state_.load(std::memory_order_acquire); }
  bool ready() const { return state() == kReady; }

  // Nanoseconds now. REQUIRES: ready(). A calibration whose current record
  // cannot be read (corrupt shared memory) reads CLOCK_MONOTONIC instead.
  int64_t Now();

  // The reading a thread would get at tick `tsc`, recalibrating first with
  // `reference` when `tsc` has passed the check point (what Now() does with
  // ReadTscOrdered() and SampleMonotonic). For tests and simulations.
  int64_t ReadAt(uint64_t tsc, absl::FunctionRef<TscSample()> reference);

  // Claims the next generation, takes `reference()` (a paired reading at or
  // after every tick already read) and publishes the generation computed from
  // it; `tsc` is a tick the caller has read (it times the claim). False, and
  // nothing changed, when another recalibration holds the claim (for less
  // than steal_ticks) or published first. Never waits.
  bool Recalibrate(uint64_t tsc, absl::FunctionRef<TscSample()> reference);

  // The conversion the current generation gives at `tsc`, without any check.
  int64_t Convert(uint64_t tsc) const;

  // The published generation (1 after Init), and its next check point.
  uint64_t generation() const { return published_.load(std::memory_order_acquire); }
  uint64_t check_tsc() const;

  // OK when the state is known and a ready calibration's current record is
  // sound (for a calibration read from an untrusted segment); else
  // FailedPrecondition saying what is wrong.
  absl::Status Validate() const;

  // Implementation details follow.
  struct Line {
    uint64_t base_tsc;
    int64_t base_ns;
    uint64_t mult;
    uint64_t valid_until;  // readers hold At(valid_until) beyond it
    int64_t At(uint64_t tsc) const;
  };
  // One generation, copied out of its record.
  struct Snapshot {
    uint64_t generation;
    Line prev, cur;  // prev serves ticks before cur.base_tsc
    uint64_t check_tsc;
    TscSample anchor;   // the reference sample the rate was last measured from
    uint64_t rate;      // measured ns per tick * 2^kShift
    uint64_t interval;  // ticks
    uint64_t slack;     // ticks
    int64_t At(uint64_t tsc) const { return tsc < cur.base_tsc ? prev.At(tsc) : cur.At(tsc); }
  };
  // The generation after `s` for reference sample `now` (pure; exposed for tests).
  static Snapshot Next(const Snapshot& s, TscSample now);

 private:
  struct alignas(128) Record {
    std::atomic<uint64_t> tag;  // the generation held; kWriting bit while written
    std::atomic<uint64_t> words[14];
  };
  static constexpr uint64_t kWriting = uint64_t{1} << 63;

  // Copies generation `gen` out of its record: the lines and check point, and
  // with `full` what writers need too. False when the record holds another
  // generation or was being rewritten.
  bool Load(uint64_t gen, Snapshot* s, bool full = false) const;
  bool LoadCurrent(Snapshot* s) const;
  // Writes generation `gen`, computed from generation `base`, into its
  // record; false when that record may be live or is being written.
  bool Store(uint64_t gen, uint64_t base, const Snapshot& s);
  int64_t NowSlow(uint64_t tsc);
  bool Claim(uint64_t published, uint64_t tsc, uint64_t* gen);

  std::atomic<uint32_t> state_;
  std::atomic<uint32_t> reserved_;
  std::atomic<uint64_t> published_;  // the generation readers use
  std::atomic<uint64_t> claim_;      // the latest generation claimed by a writer
  std::atomic<uint64_t> claim_tsc_;  // when it was claimed
  std::atomic<uint64_t> steal_;      // ticks before a claim may be taken over
  Record records_[kRecords];
};

static_assert(sizeof(TscCalibration) == 128 + 128 * TscCalibration::kRecords);

// Implementation details follow.

inline int64_t TscCalibration::Line::At(uint64_t tsc) const {
  const uint64_t t = tsc < valid_until ? tsc : valid_until;
  const __int128 delta = static_cast<int64_t>(t - base_tsc);
  return base_ns + static_cast<int64_t>((delta * static_cast<__int128>(mult)) >> kShift);
}

inline bool TscCalibration::Load(uint64_t gen, Snapshot* s, bool full) const {
  const Record& r = records_[gen % kRecords];
  if (r.tag.load(std::memory_order_acquire) != gen) return false;
  s->generation = gen;
  s->cur = {r.words[0].load(std::memory_order_relaxed),
            static_cast<int64_t>(r.words[1].load(std::memory_order_relaxed)),
            r.words[2].load(std::memory_order_relaxed), r.words[3].load(std::memory_order_relaxed)};
  s->prev = {r.words[4].load(std::memory_order_relaxed),
             static_cast<int64_t>(r.words[5].load(std::memory_order_relaxed)),
             r.words[6].load(std::memory_order_relaxed),
             r.words[7].load(std::memory_order_relaxed)};
  s->check_tsc = r.words[8].load(std::memory_order_relaxed);
  if (full) {
    s->anchor = {r.words[9].load(std::memory_order_relaxed),
                 static_cast<int64_t>(r.words[10].load(std::memory_order_relaxed))};
    s->rate = r.words[11].load(std::memory_order_relaxed);
    s->interval = r.words[12].load(std::memory_order_relaxed);
    s->slack = r.words[13].load(std::memory_order_relaxed);
  }
  std::atomic_thread_fence(std::memory_order_acquire);
  return r.tag.load(std::memory_order_relaxed) == gen;
}

inline int64_t TscCalibration::Now() {
  Snapshot s;
  if (!Load(published_.load(std::memory_order_acquire), &s)) return NowSlow(ReadTscOrdered());
  const uint64_t tsc = ReadTscOrdered();
  if (tsc >= s.check_tsc) [[unlikely]]
    return NowSlow(tsc);
  return s.At(tsc);
}

}  // namespace sluice

#endif  // SLUICE_TSC_H_
