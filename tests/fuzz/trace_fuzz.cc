// libFuzzer target for the lab's trace parser (sluice/lab/trace.h): the input
// read as CSV, as JSONL and as the format it is detected to be. Whatever the
// bytes, parsing never crashes or throws; a trace it accepts keeps every rule
// the lab relies on (at least one arrival, times from 0 within the span and in
// order, permits in range, clients numbered within the table, labels distinct
// and bounded); every refusal names the trace. Seeds: tests/fuzz/corpus/trace.
#include <cstdint>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/lab/trace.h"

namespace {

void CheckAccepted(const sluice::TrafficTrace& trace) {
  if (trace.arrivals.empty() || trace.arrivals.size() > sluice::kMaxTraceArrivals) {
    __builtin_trap();
  }
  if (trace.clients.empty() || trace.clients.size() > sluice::kMaxTraceClients) __builtin_trap();
  const int64_t span = absl::ToInt64Nanoseconds(sluice::kMaxTraceSpan);
  int64_t last = 0;
  for (const sluice::TraceArrival& a : trace.arrivals) {
    if (a.t_ns < last || a.t_ns > span) __builtin_trap();
    if (a.permits == 0 || a.permits > sluice::kMaxTracePermits) __builtin_trap();
    if (a.client >= trace.clients.size()) __builtin_trap();
    last = a.t_ns;
  }
  std::set<std::string> labels;
  for (const std::string& label : trace.clients) {
    if (label.size() > sluice::kMaxClientLabelBytes) __builtin_trap();
    if (!labels.insert(label).second) __builtin_trap();
  }
}

void Check(absl::string_view text, sluice::TraceFormat format, absl::string_view name) {
  const absl::StatusOr<sluice::TrafficTrace> trace = sluice::ParseTrace(text, format, name);
  if (trace.ok()) {
    CheckAccepted(*trace);
  } else if (!absl::StartsWith(trace.status().message(), absl::StrCat(name, ":"))) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  Check(text, sluice::TraceFormat::kCsv, "fuzz.csv");
  Check(text, sluice::TraceFormat::kJsonl, "fuzz.jsonl");
  Check(text, sluice::DetectTraceFormat("fuzz", text), "fuzz");
  return 0;
}
