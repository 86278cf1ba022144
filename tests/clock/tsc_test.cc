// The TSC clock's calibration on simulated counters and reference clocks:
// detection, the fixed-point conversion, recalibration that never steps back
// and follows a slewed reference, and many threads reading while it is
// recalibrated from a skewed reference.

#include "sluice/tsc.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/clock.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

constexpr char kTwoCpus[] =
    "processor\t: 0\nflags\t\t: fpu tsc constant_tsc nonstop_tsc rdtscp\n\n"
    "processor\t: 1\nflags\t\t: fpu tsc constant_tsc nonstop_tsc rdtscp\n";

TEST(TscUsableTest, InvariantTscAndTheTscClocksourceAreUsable) {
  EXPECT_TRUE(TscUsableFrom(kTwoCpus, "tsc\n").ok());
}

TEST(TscUsableTest, EachMissingFlagIsNamed) {
  const absl::Status no_nonstop = TscUsableFrom(
      "flags\t: constant_tsc nonstop_tsc\nflags\t: constant_tsc nonstop_tscx\n", "tsc");
  EXPECT_EQ(no_nonstop.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(no_nonstop.message(), HasSubstr("'nonstop_tsc'"));
  const absl::Status no_constant = TscUsableFrom("flags\t: tsc nonstop_tsc\n", "tsc");
  EXPECT_THAT(no_constant.message(), HasSubstr("'constant_tsc'"));
  EXPECT_FALSE(TscUsableFrom("", "tsc").ok()) << "no flags line at all";
}

TEST(TscUsableTest, AnotherClocksourceIsNamed) {
  const absl::Status hpet = TscUsableFrom(kTwoCpus, "hpet\n");
  EXPECT_EQ(hpet.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(hpet.message(), HasSubstr("'hpet'"));
  EXPECT_THAT(hpet.message(), HasSubstr("CLOCK_MONOTONIC"));
}

TEST(TscUsableTest, ClockTscFallsBackExactlyWhenTheTscIsUnusable) {
  const Clock clock = Clock::Tsc();
  EXPECT_EQ(clock.kind(), TscUsable().ok() ? Clock::Kind::kTsc : Clock::Kind::kMonotonic)
      << TscUsable();
  EXPECT_EQ(std::string(clock.name()), TscUsable().ok() ? "tsc" : "monotonic");
}

// floor(a * b / 2^32) by long multiplication on 32-bit halves: an
// independent reference for the conversion's 128-bit product (exact while
// |a| < 2^40 and b < 2^40, as here).
int64_t FloorMulShift(int64_t a, uint64_t b) {
  const bool negative = a < 0;
  const uint64_t m = negative ? uint64_t(0) - uint64_t(a) : uint64_t(a);
  const uint64_t ml = m & 0xffffffff, mh = m >> 32, bl = b & 0xffffffff, bh = b >> 32;
  // m * b = mh*bh * 2^64 + (ml*bh + mh*bl) * 2^32 + ml*bl
  const uint64_t low = ml * bl;
  const uint64_t quotient = ((mh * bh) << 32) + ml * bh + mh * bl + (low >> 32);
  const bool remainder = (low & 0xffffffff) != 0;
  if (!negative) return static_cast<int64_t>(quotient);
  return -static_cast<int64_t>(quotient) - (remainder ? 1 : 0);
}

TEST(TscLineTest, ConversionIsExactFloorOfTheFixedPointProduct) {
  std::mt19937_64 rng(15);
  for (int i = 0; i < 200'000; ++i) {
    TscCalibration::Line line;
    line.base_tsc = rng() >> 2;
    line.base_ns = static_cast<int64_t>(rng() >> 4);
    line.mult = (rng() >> 26) + 1;  // up to 64 ns per tick
    line.valid_until = ~uint64_t{0};
    // Ticks within 2^36 either side of the base (years at a few GHz).
    const int64_t delta = static_cast<int64_t>(rng() >> 28) - (int64_t{1} << 35);
    const uint64_t tsc = line.base_tsc + static_cast<uint64_t>(delta);
    ASSERT_EQ(line.At(tsc), line.base_ns + FloorMulShift(delta, line.mult))
        << "base " << line.base_tsc << " mult " << line.mult << " delta " << delta;
  }
}

TEST(TscLineTest, ReadingsHoldAtValidUntil) {
  const TscCalibration::Line line{1000, 5000, uint64_t{3} << 31, 2000};  // 1.5 ns a tick
  EXPECT_EQ(line.At(1000), 5000);
  EXPECT_EQ(line.At(1001), 5001);  // floor(1.5)
  EXPECT_EQ(line.At(2000), 6500);
  EXPECT_EQ(line.At(1'000'000), 6500);
}

// A simulated host: true time in ns, a TSC at `ghz` ticks per ns, and a
// CLOCK_MONOTONIC that NTP slews by `ppm` (changed at will).
struct SimulatedHost {
  double ghz = 3.0;
  double true_ns = 1e12;
  double mono_ns = 1e12;
  double ppm = 0;
  uint64_t Tsc() const { return static_cast<uint64_t>(true_ns * ghz); }
  int64_t Mono() const { return static_cast<int64_t>(mono_ns); }
  void Advance(double ns) {
    true_ns += ns;
    mono_ns += ns * (1 + ppm * 1e-6);
  }
  TscSample Sample() const { return {Tsc(), Mono()}; }
};

TEST(TscCalibrationTest, InitConvertsTheSecondSampleExactly) {
  SimulatedHost host;
  TscCalibration cal;
  const TscSample first = host.Sample();
  host.Advance(1e6);
  const TscSample second = host.Sample();
  cal.Init(first, second);
  ASSERT_TRUE(cal.ready());
  ASSERT_TRUE(cal.Validate().ok());
  EXPECT_EQ(cal.generation(), 1u);
  EXPECT_EQ(cal.Convert(second.tsc), second.ns);
  EXPECT_NEAR(cal.Convert(second.tsc + 3'000'000), second.ns + 1'000'000, 2);
  EXPECT_EQ(cal.check_tsc(), second.tsc + 300'000'000);  // 100 ms at 3 ticks/ns
}

TEST(TscCalibrationTest, NextStartsWhereTheOldLineStopsAndNeverBelowIt) {
  SimulatedHost host;
  TscCalibration cal;
  const TscSample first = host.Sample();
  host.Advance(1e6);
  cal.Init(first, host.Sample());
  TscCalibration::Snapshot s{};
  s.cur = {host.Tsc(), host.Mono(), uint64_t{1} << 32, host.Tsc() + 3'000'000};
  s.rate = uint64_t{1} << 32;
  s.anchor = first;
  s.interval = 1'000'000;
  s.slack = 1'000'000;
  // A reference behind the line: the new line starts at the old one's last
  // value and runs slower, to meet the reference at its end.
  const TscSample behind{host.Tsc() + 10, host.Mono() - 500'000};
  const TscCalibration::Snapshot n = TscCalibration::Next(s, behind);
  EXPECT_EQ(n.cur.base_tsc, s.cur.valid_until);
  EXPECT_EQ(n.cur.base_ns, s.cur.At(s.cur.valid_until));
  EXPECT_LT(n.cur.mult, n.rate);
  EXPECT_GE(n.cur.mult, n.rate / 2);
  // A reference ahead: time steps forward to it.
  const TscSample ahead{host.Tsc() + 10, host.Mono() + 500'000};
  const TscCalibration::Snapshot m = TscCalibration::Next(s, ahead);
  EXPECT_GT(m.cur.base_ns, s.cur.At(s.cur.valid_until));
  EXPECT_EQ(m.cur.mult, m.rate);
}

// Reads the simulated host every `step_ns` for `seconds`, with NTP's slew
// switching between +500 and -500 ppm every `flip_ns`, and returns the
// largest offset from CLOCK_MONOTONIC; fails on any reading that goes back.
int64_t SimulateSlewedRun(SimulatedHost& host, TscCalibration& cal, double step_ns, double seconds,
                          double flip_ns) {
  int64_t last = 0, worst = 0;
  double next_flip = host.true_ns + flip_ns;
  const double end = host.true_ns + seconds * 1e9;
  while (host.true_ns < end) {
    host.Advance(step_ns);
    if (host.true_ns >= next_flip) {
      host.ppm = host.ppm > 0 ? -500 : 500;
      next_flip += flip_ns;
    }
    const int64_t now = cal.ReadAt(host.Tsc(), [&] { return host.Sample(); });
    EXPECT_GE(now, last) << "went backwards at " << host.true_ns;
    if (now < last) return worst;
    last = now;
    worst = std::max(worst, std::abs(now - host.Mono()));
  }
  return worst;
}

TEST(TscCalibrationTest, FollowsAReferenceSlewedBy500PpmWithinAMillisecond) {
  SimulatedHost host;
  host.ppm = 500;
  TscCalibration cal;
  const TscSample first = host.Sample();
  host.Advance(1e6);
  cal.Init(first, host.Sample());
  // 60 s read every 20 us, the slew reversing every 7 s (the worst NTP does).
  const int64_t worst = SimulateSlewedRun(host, cal, 20'000, 60, 7e9);
  EXPECT_LT(worst, 1'000'000) << "ns off CLOCK_MONOTONIC";
  EXPECT_LT(worst, 300'000) << "ns off CLOCK_MONOTONIC";
  EXPECT_GT(cal.generation(), 250u) << "recalibrated about every 200 ms";
}

TEST(TscCalibrationTest, AFirstReadingAfterLongIdleIsOnTime) {
  SimulatedHost host;
  host.ppm = -500;
  TscCalibration cal;
  const TscSample first = host.Sample();
  host.Advance(1e6);
  cal.Init(first, host.Sample());
  const int64_t before = cal.ReadAt(host.Tsc(), [&] { return host.Sample(); });
  host.Advance(3600e9);  // an hour without a reading, slewed all along
  const int64_t after = cal.ReadAt(host.Tsc(), [&] { return host.Sample(); });
  EXPECT_GT(after, before);
  EXPECT_LT(std::abs(after - host.Mono()), 1'000);
  // And sparse readings (one a second) stay within the bound too.
  EXPECT_LT(SimulateSlewedRun(host, cal, 1e9, 30, 5e9), 1'000'000);
}

// A reference that lies (jumps of milliseconds either way) moves the clock
// forward or slows it, never back.
TEST(TscCalibrationTest, ASkewedReferenceNeverTurnsTheClockBack) {
  SimulatedHost host;
  TscCalibration cal;
  const TscSample first = host.Sample();
  host.Advance(1e6);
  cal.Init(first, host.Sample(), {1'000'000, 1'000'000, 1'000'000});
  std::mt19937_64 rng(7);
  int64_t last = 0;
  for (int i = 0; i < 100'000; ++i) {
    host.Advance(static_cast<double>(rng() % 50'000));
    const int64_t skew = static_cast<int64_t>(rng() % 10'000'000) - 5'000'000;
    const TscSample lie{host.Tsc(), host.Mono() + skew};
    if (rng() % 4 == 0) cal.Recalibrate(host.Tsc(), [&] { return lie; });
    const int64_t now = cal.ReadAt(host.Tsc(), [&] { return lie; });
    ASSERT_GE(now, last) << "step " << i;
    last = now;
  }
}

// Real time: threads hammer Now() on a calibration with 200 us checks while
// another forces recalibrations from a reference skewed by up to +-2 ms. Each
// reading must be at least every reading that was published before it was
// taken (through `latest`), in its own thread and across threads.
TEST(TscCalibrationConcurrencyTest, NeverBackwardsAcrossThreadsWhileRecalibrated) {
  if (!TscUsable().ok()) GTEST_SKIP() << TscUsable();
  TscCalibration cal;
  cal.Calibrate(200'000, {200'000, 200'000, 1'000'000});
  std::atomic<int64_t> latest{0};
  std::atomic<bool> stop{false};
  std::atomic<int64_t> backwards{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        const int64_t seen = latest.load(std::memory_order_acquire);
        const int64_t now = cal.Now();
        if (now < seen) backwards.fetch_add(1);
        int64_t cur = seen;
        while (cur < now && !latest.compare_exchange_weak(cur, now, std::memory_order_acq_rel)) {
        }
      }
    });
  }
  std::mt19937_64 rng(3);
  int forced = 0;
  const int64_t end = Clock::MonotonicNanos() + 1'500'000'000;
  while (Clock::MonotonicNanos() < end) {
    const int64_t skew = static_cast<int64_t>(rng() % 4'000'000) - 2'000'000;
    forced += cal.Recalibrate(ReadTscOrdered(), [&] {
      TscSample s = SampleMonotonic();
      s.ns += skew;
      return s;
    });
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  stop = true;
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(backwards.load(), 0);
  EXPECT_GT(forced, 10);
  EXPECT_GT(cal.generation(), 100u);
}

}  // namespace
}  // namespace sluice
