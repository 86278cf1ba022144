// File: segment_info.h
// -----------------------------------------------------------------------------
// What Segment::Inspect reads from a shared-memory segment (segment.h): its
// header, every bucket, budget counter and concurrency cap, and the attached
// processes, copied out under the segment lock. A plain value for display and
// for snapshots (`sluice inspect`, `sluice stats`); nothing in it points into
// the segment.

#ifndef SLUICE_SEGMENT_INFO_H_
#define SLUICE_SEGMENT_INFO_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sluice/rate.h"
#include "sluice/token_bucket.h"

namespace sluice {

struct SegmentInfo {
  struct Bucket {
    std::string name;
    uint32_t slot;
    BucketConfig config;          // what it runs at; config.capacity is the burst
    BucketConfig configured;      // what the limits file (or a command) said
    std::optional<Rate> learned;  // a limit learned from the provider
    int64_t available;
    Pressure pressure;
    uint64_t bottlenecks;
  };
  struct Leases {
    std::string name;
    uint32_t slot;
    uint32_t capacity;
    uint32_t in_flight;
    uint64_t bottlenecks;
  };
  // A window counter (a budget), read as it is: the window the counter last
  // counted in and the amount used in it. The caller decides whether that
  // window is still the current one (a UTC day or month for budgets); an
  // older one means nothing is used in the current window yet.
  struct Counter {
    std::string name;
    uint32_t slot;
    int64_t window;
    int64_t used;  // micro-USD for budgets
    uint64_t bottlenecks;
  };
  struct Process {
    pid_t pid;
    uint64_t start_time;  // clock ticks after boot, from /proc/PID/stat
    bool alive;           // not known to be dead (unknown counts as alive)
    int64_t attached_unix_ns;
  };
  std::string path;
  uint32_t abi_major, abi_minor;
  uint64_t size_bytes;
  uint32_t slots, slots_used;
  uint32_t max_processes;
  int64_t created_unix_ns;
  // The host's best clock for the segment's buckets (Segment::TscClock):
  // "tsc" or "monotonic"; why it is not the TSC (empty when it is); and the
  // TSC calibration's generation (1 + recalibrations published; 0: none).
  std::string clock;
  std::string clock_reason;
  uint64_t tsc_generation = 0;
  std::vector<Bucket> buckets;
  std::vector<Leases> leases;
  std::vector<Counter> counters;  // window counters (budgets)
  std::vector<Process> processes;
};

}  // namespace sluice

#endif  // SLUICE_SEGMENT_INFO_H_
