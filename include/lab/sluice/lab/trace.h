// File: sluice/lab/trace.h
// -----------------------------------------------------------------------------
// A trace of real traffic for the algorithm lab (`sluice lab --trace FILE`):
// when each request arrived, how many permits it takes, and which client sent
// it. Part of sluice::lab.
//
// Two formats, one arrival per line:
//
//   CSV    t,permits[,client]
//          An optional header line `t,permits` or `t,permits,client` may come
//          first. Fields are split at commas and trimmed of spaces; there is no
//          quoting, so a client label cannot hold a comma. Blank lines and
//          lines whose first non-space character is `#` are skipped.
//   JSONL  {"t": ..., "permits": ..., "client": ...}
//          One JSON object per line; "client" may be left out, and other
//          fields are ignored (so a log's lines can be replayed as they are).
//          Blank lines are skipped; there are no comments.
//
// The format: a path ending in .csv is CSV; one ending in .jsonl, .ndjson or
// .json is JSONL; otherwise the first line that is neither blank nor a `#`
// comment decides: JSONL if it starts with `{`, else CSV.
//
//   t        integer nanoseconds from the trace's start (a JSON integer, or a
//            string of digits), or an RFC 3339 time with its offset
//            ("2026-11-30T12:00:00.25Z"), in which case the trace starts at
//            its first event's time. All of a trace's times are of one kind.
//            At most kMaxTraceSpan after the start.
//   permits  an integer from 1 to kMaxTracePermits.
//   client   optional: a label (a string, or a JSON integer, which stands for
//            its decimal text: 7 and "7" are one client) of at most
//            kMaxClientLabelBytes bytes. Clients are numbered 0, 1, ... in the
//            order they first appear; arrivals with no client are one client
//            of their own, labelled "".
//
// Arrivals must be in time order (equal times are fine): a line whose t is
// before the previous arrival's is an error naming both lines, since a trace
// out of order is usually a wrong file or a merge that needs a sort.
//
// Every error is InvalidArgument and reads "NAME:LINE: what was wrong" (JSON
// fields named in quotes), NAME being the file's path or the name given to
// ParseTrace; a file that cannot be read is NotFound or Unavailable.
//
// Thread safety: the functions are pure; call them from any thread.
//
// Example:
//   absl::StatusOr<sluice::TrafficTrace> trace = sluice::ReadTraceFile("calls.csv");
//   if (!trace.ok()) return trace.status();  // "calls.csv:12: permits ..."
//   for (const sluice::TraceArrival& a : trace->arrivals) { /* a.t_ns, ... */ }

#ifndef SLUICE_LAB_TRACE_H_
#define SLUICE_LAB_TRACE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sluice {

inline constexpr uint64_t kMaxTracePermits = uint64_t{1} << 32;
inline constexpr size_t kMaxTraceArrivals = 10'000'000;
inline constexpr size_t kMaxTraceClients = 1'000'000;
inline constexpr size_t kMaxClientLabelBytes = 256;
inline constexpr absl::Duration kMaxTraceSpan = absl::Hours(24 * 365);

enum class TraceFormat : uint8_t {
  kCsv,    // t,permits[,client]
  kJsonl,  // {"t": ..., "permits": ..., "client": ...}
};

struct TraceArrival {
  int64_t t_ns;      // from the trace's start, 0 .. kMaxTraceSpan
  uint64_t permits;  // 1 .. kMaxTracePermits
  uint32_t client;   // an index into TrafficTrace::clients
};

struct TrafficTrace {
  std::vector<TraceArrival> arrivals;  // in time order, at least one
  std::vector<std::string> clients;    // labels by client number
};

// The format of a trace at `path` whose text is `text` (see the file comment).
TraceFormat DetectTraceFormat(absl::string_view path, absl::string_view text);

// The arrivals of `text`, read as `format`; `name` prefixes every error.
// InvalidArgument "NAME:LINE: ..." for the first bad line, and "NAME: ..."
// for a trace with no arrivals or more than kMaxTraceArrivals of them.
absl::StatusOr<TrafficTrace> ParseTrace(absl::string_view text, TraceFormat format,
                                        absl::string_view name);

// Reads `path` and parses it in the format DetectTraceFormat gives. NotFound
// or Unavailable naming the path when it cannot be read; else as ParseTrace.
absl::StatusOr<TrafficTrace> ReadTraceFile(const std::string& path);

}  // namespace sluice

#endif  // SLUICE_LAB_TRACE_H_
