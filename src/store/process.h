// Naming a process so that a reused pid is not mistaken for it: pid plus
// start time (field 22 of /proc/PID/stat, clock ticks after boot).
//
// Unknown is not dead. A process counts as dead only on positive evidence:
// the kernel says no process has its pid (kill(pid, 0) fails with ESRCH), or
// the process with that pid started at another time (the pid was reused).
// When /proc cannot be read (too many open files, a sandbox), the answer is
// "unknown", and whoever asks treats the process as alive: its leases and
// its registry entry are kept.
#ifndef SLUICE_SRC_STORE_PROCESS_H_
#define SLUICE_SRC_STORE_PROCESS_H_

#include <sys/types.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace sluice {

// The start time of process `pid`: NotFound when no such process exists (or
// it has exited and awaits its parent: a zombie), Unavailable (naming the
// file) when it could not be read.
absl::StatusOr<uint64_t> ReadStartTime(pid_t pid);

enum class Liveness { kAlive, kDead, kUnknown };

// Whether the process `pid` that started at `start_time` still runs.
Liveness ProcessLiveness(pid_t pid, uint64_t start_time);

// True unless the process is known to be dead.
inline bool MaybeAlive(pid_t pid, uint64_t start_time) {
  return ProcessLiveness(pid, start_time) != Liveness::kDead;
}

// This process as one nonzero word: pid in the low 22 bits (Linux pid_max is
// at most 2^22), start time above. Recomputed after fork. Unavailable when
// this process's start time cannot be read (then nothing is cached, and the
// next call tries again).
absl::StatusOr<uint64_t> ProcessTag();

// True unless the process a tag names is known to be dead.
bool ProcessTagMaybeAlive(uint64_t tag);

// The PID namespace this process runs in (the inode of /proc/self/ns/pid):
// liveness can only be checked within one. Unavailable when it cannot be
// read.
absl::StatusOr<uint64_t> PidNamespace();

}  // namespace sluice

#endif  // SLUICE_SRC_STORE_PROCESS_H_
