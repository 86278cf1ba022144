// Naming a process so that a reused pid is not mistaken for it: pid plus
// start time (field 22 of /proc/PID/stat, clock ticks after boot).
#ifndef SLUICE_SRC_STORE_PROCESS_H_
#define SLUICE_SRC_STORE_PROCESS_H_

#include <sys/types.h>

#include <cstdint>

namespace sluice {

// The start time of process `pid`; false when it does not exist.
bool ReadStartTime(pid_t pid, uint64_t* start_time);

// True when `pid` runs and started at `start_time`.
bool ProcessAlive(pid_t pid, uint64_t start_time);

// This process as one nonzero word: pid in the low 22 bits (Linux pid_max is
// at most 2^22), start time above. Recomputed after fork.
uint64_t ProcessTag();

// True when the process a tag names is still running.
bool ProcessTagAlive(uint64_t tag);

}  // namespace sluice

#endif  // SLUICE_SRC_STORE_PROCESS_H_
