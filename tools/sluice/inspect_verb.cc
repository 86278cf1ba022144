// `sluice inspect [--json]`: a segment's header, buckets and attached
// processes, as text or JSON. Only reads: this process is not recorded in it.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "sluice/segment.h"
#include "sluice/segment_info.h"
#include "sluice/token_bucket.h"
#include "tools/sluice/cli.h"

namespace sluice {
namespace {

// The segment is untrusted: a corrupt header could claim more used slots than
// it has, and an unsigned subtraction would print a huge count.
uint32_t FreeSlots(const SegmentInfo& info) {
  return info.slots >= info.slots_used ? info.slots - info.slots_used : 0;
}

double PercentAvailable(const SegmentInfo::Bucket& b) {
  return b.config.capacity > 0
             ? 100.0 * static_cast<double>(b.available) / static_cast<double>(b.config.capacity)
             : 0.0;
}

void PrintBuckets(const std::vector<SegmentInfo::Bucket>& buckets) {
  if (buckets.empty()) {
    absl::FPrintF(stdout, "\nbuckets: none\n");
    return;
  }
  std::vector<std::string> rates;
  int name_width = 6;  // "BUCKET"
  int rate_width = 4;  // "RATE"
  for (const SegmentInfo::Bucket& b : buckets) {
    rates.push_back(b.config.rate.ToString());
    name_width = std::max(name_width, static_cast<int>(b.name.size()));
    rate_width = std::max(rate_width, static_cast<int>(rates.back().size()));
  }
  absl::FPrintF(stdout, "\n%-*s  %-*s  %10s  %10s  %s\n", name_width, "BUCKET", rate_width, "RATE",
                "BURST", "AVAILABLE", "PRESSURE");
  for (size_t i = 0; i < buckets.size(); ++i) {
    const SegmentInfo::Bucket& b = buckets[i];
    absl::FPrintF(stdout, "%-*s  %-*s  %10d  %10d  %s\n", name_width, b.name, rate_width, rates[i],
                  b.config.capacity, b.available, PressureName(b.pressure));
  }
}

void PrintProcesses(const std::vector<SegmentInfo::Process>& processes) {
  if (processes.empty()) {
    absl::FPrintF(stdout, "\nprocesses: none\n");
    return;
  }
  absl::FPrintF(stdout, "\n%-10s  %-5s  %s\n", "PID", "ALIVE", "ATTACHED");
  for (const SegmentInfo::Process& p : processes) {
    absl::FPrintF(stdout, "%-10d  %-5s  %s\n", p.pid, p.alive ? "yes" : "no",
                  LocalTime(p.attached_unix_ns));
  }
}

void PrintText(const SegmentInfo& info) {
  absl::FPrintF(stdout, "segment  %s\n", info.path);
  absl::FPrintF(stdout, "abi      %d.%d\n", info.abi_major, info.abi_minor);
  absl::FPrintF(stdout, "size     %d bytes\n", info.size_bytes);
  absl::FPrintF(stdout, "slots    %d used, %d free, %d in all\n", info.slots_used, FreeSlots(info),
                info.slots);
  absl::FPrintF(stdout, "created  %s\n", LocalTime(info.created_unix_ns));
  absl::FPrintF(stdout, "clock    %s%s\n", info.clock,
                info.clock_reason.empty() ? "" : absl::StrCat(" (", info.clock_reason, ")"));
  PrintBuckets(info.buckets);
  PrintProcesses(info.processes);
}

void PrintJson(const SegmentInfo& info) {
  // ordered_json keeps the fields in the order a reader expects.
  using Json = nlohmann::ordered_json;
  Json doc;
  doc["path"] = info.path;
  doc["abi"] = {{"major", info.abi_major}, {"minor", info.abi_minor}};
  doc["size_bytes"] = info.size_bytes;
  doc["slots"] = {{"total", info.slots}, {"used", info.slots_used}, {"free", FreeSlots(info)}};
  doc["created"] = Rfc3339(info.created_unix_ns);
  doc["clock"] = {
      {"name", info.clock}, {"reason", info.clock_reason}, {"tsc_generation", info.tsc_generation}};
  doc["buckets"] = Json::array();
  for (const SegmentInfo::Bucket& b : info.buckets) {
    doc["buckets"].push_back({
        {"name", b.name},
        {"slot", b.slot},
        {"rate", b.config.rate.ToString()},
        {"permits", b.config.rate.permits()},
        {"period_ns", absl::ToInt64Nanoseconds(b.config.rate.period())},
        {"capacity", b.config.capacity},
        {"available", b.available},
        {"pressure", PressureName(b.pressure)},
        {"percent_available", PercentAvailable(b)},
    });
  }
  doc["processes"] = Json::array();
  for (const SegmentInfo::Process& p : info.processes) {
    doc["processes"].push_back({
        {"pid", p.pid},
        {"start_time", p.start_time},
        {"alive", p.alive},
        {"attached", Rfc3339(p.attached_unix_ns)},
    });
  }
  // Bucket names come from shared memory and need not be valid UTF-8; the
  // default handler would throw on them, `replace` substitutes U+FFFD.
  absl::FPrintF(stdout, "%s\n", doc.dump(2, ' ', false, Json::error_handler_t::replace));
}

int RunInspect(const Command& cmd) {
  absl::StatusOr<std::unique_ptr<Segment>> segment = OpenExisting();
  if (!segment.ok()) return Fail(cmd, segment.status());
  absl::StatusOr<SegmentInfo> info = (*segment)->Inspect();
  if (!info.ok()) return Fail(cmd, info.status());
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(*info);
  } else {
    PrintText(*info);
  }
  return kExitOk;
}

constexpr absl::string_view kInspectFlags[] = {"segment", "json"};

const Verb kInspectVerb = {
    .order = 20,
    .name = "inspect",
    .usage = "inspect [--segment NAME] [--json]",
    .summary = "show a segment's buckets and attached processes",
    .description =
        "Prints the segment's header (path, layout version, size, slots, creation time),\n"
        "each bucket's rate, burst, available permits and pressure, and the processes\n"
        "attached to it. Only reads: the segment must exist and this process is not\n"
        "recorded in it.",
    .flags = kInspectFlags,
    .required = {},
    .args = {},
    .run = RunInspect,
};
SLUICE_VERB(kInspectVerb);

}  // namespace
}  // namespace sluice
