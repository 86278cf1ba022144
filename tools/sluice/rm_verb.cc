// `sluice rm [--force]`: removes a segment's name, refusing while live
// processes are attached (or when it cannot be opened) unless --force.

#include <memory>
#include <string>

#include "absl/algorithm/container.h"
#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "sluice/segment.h"
#include "sluice/segment_info.h"
#include "tools/sluice/cli.h"

ABSL_FLAG(bool, force, false,
          "remove the segment even while live processes are attached to it, or when it is "
          "corrupt or of another layout version");

namespace sluice {
namespace {

int LiveProcesses(const SegmentInfo& info) {
  return static_cast<int>(
      absl::c_count_if(info.processes, [](const SegmentInfo::Process& p) { return p.alive; }));
}

int RunRm(const Command& cmd) {
  absl::StatusOr<std::unique_ptr<Segment>> segment = OpenExisting();
  if (!segment.ok()) {
    // A segment Open refuses (corrupt, half-written, another layout version)
    // cannot be asked who is attached; --force removes it unopened.
    if (segment.status().code() != absl::StatusCode::kFailedPrecondition) {
      return Fail(cmd, segment.status());
    }
    if (!absl::GetFlag(FLAGS_force)) {
      return Report(*cmd.verb, kExitError,
                    absl::StrCat(segment.status().message(), "; --force removes it anyway"));
    }
    absl::Status removed = Segment::Remove(absl::GetFlag(FLAGS_segment));
    return removed.ok() ? kExitOk : Fail(cmd, removed);
  }
  absl::StatusOr<SegmentInfo> info = (*segment)->Inspect();
  if (!info.ok()) return Fail(cmd, info.status());
  // Removing the name does not stop processes that have it mapped, but new
  // ones would create a fresh segment and stop sharing limits with them.
  const int live = LiveProcesses(*info);
  if (live > 0 && !absl::GetFlag(FLAGS_force)) {
    return Report(*cmd.verb, kExitError,
                  absl::StrFormat("%d live %s attached to %s; pass --force to remove it anyway",
                                  live, live == 1 ? "process is" : "processes are", info->path));
  }
  if (absl::Status s = (*segment)->Unlink(); !s.ok()) return Fail(cmd, s);
  return kExitOk;
}

constexpr absl::string_view kRmFlags[] = {"segment", "force"};

const Verb kRmVerb = {
    .order = 30,
    .name = "rm",
    .usage = "rm [--segment NAME] [--force]",
    .summary = "remove a segment",
    .description =
        "Removes the segment's name, so that the next process to open it creates a\n"
        "fresh one. Refused while live processes are attached, unless --force: they\n"
        "keep the old segment mapped and stop sharing limits with newcomers.",
    .flags = kRmFlags,
    .required = {},
    .args = {},
    .run = RunRm,
};
SLUICE_VERB(kRmVerb);

}  // namespace
}  // namespace sluice
