// File: segment_testing.h
// -----------------------------------------------------------------------------
// Fault hooks for the segment's crash tests, kept out of the public API. Each
// hook is process-wide: a test sets it in a child process it is about to
// kill, before opening a segment there, and the hook runs at the named point
// of every Segment in that process.
//
// Thread safety: set a hook before any thread opens or reconfigures a segment
// in the process; never while one may run.

#ifndef SLUICE_SRC_STORE_SEGMENT_TESTING_H_
#define SLUICE_SRC_STORE_SEGMENT_TESTING_H_

#include <functional>

namespace sluice::segment_testing {

// Called by the process initializing a segment after the file is sized and
// half-written, before the header is published. A hook that kills the
// process simulates a creator dying mid-initialization.
void SetInitFaultHook(std::function<void()> hook);

// Called by a process reconfiguring a bucket right after the cell takes its
// new parameters, before anything else is written.
void SetReconfigureFaultHook(std::function<void()> hook);

// The hooks as set (empty functions when unset), for the segment's code.
const std::function<void()>& InitFaultHook();
const std::function<void()>& ReconfigureFaultHook();

}  // namespace sluice::segment_testing

#endif  // SLUICE_SRC_STORE_SEGMENT_TESTING_H_
