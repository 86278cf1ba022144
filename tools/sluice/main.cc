// sluice: the command-line tool's entry point. It finds the verb, answers
// help, checks the verb's flags (command_line.h) and runs it. Each verb lives
// in a file of its own (tools/sluice/*_verb.cc) and registers itself with
// SLUICE_VERB (cli.h):
//
//   sluice acquire KEY --rate N/UNIT --burst B [--tokens N] [--timeout D] [--segment NAME]
//   sluice inspect [--segment NAME] [--json]
//   sluice rm [--segment NAME] [--force]
//   sluice call [--provider P] [--base-url URL] [--max-tokens N] ... PROMPT
//   sluice fake-provider --port N [--rpm N] [--itpm N] [--otpm N] [--tpm N] [--unlimited] ...
//   sluice config check, batch, demo, stats, top, metrics, lab
//
// Exit codes follow sysexits.h so that a shell script can tell "try again
// later" (75, EX_TEMPFAIL) from a mistake in the command (64, EX_USAGE) and
// from a failure (1). Every error is one line on stderr, "sluice VERB: ...".
//
// Flags are Abseil flags, all linked into this one binary; each verb names the
// ones it takes, and a flag of another verb is refused before Abseil parses.
// They are spelled with dashes (--base-url) or underscores (--base_url).

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "tools/sluice/cli.h"
#include "tools/sluice/command_line.h"

namespace sluice {
namespace {

const Verb* FindVerb(absl::string_view name) {
  for (const Verb* verb : AllVerbs()) {
    if (verb->name == name) return verb;
  }
  return nullptr;
}

std::string VerbNames() {
  return absl::StrJoin(AllVerbs(), ", ",
                       [](std::string* out, const Verb* v) { absl::StrAppend(out, v->name); });
}

// Help -------------------------------------------------------------------------

void PrintVerbs(FILE* out) {
  absl::FPrintF(out,
                "usage: sluice VERB [flags] [args]\n\n"
                "Throttles calls to AI model APIs (Anthropic, OpenAI) with token buckets\n"
                "that every process on this host shares through a shared-memory segment.\n\n"
                "verbs:\n");
  int width = 0;
  const std::vector<const Verb*> verbs = AllVerbs();
  for (const Verb* verb : verbs) width = std::max(width, static_cast<int>(verb->name.size()));
  for (const Verb* verb : verbs) {
    absl::FPrintF(out, "  %-*s  %s\n", width, verb->name, verb->summary);
  }
  absl::FPrintF(out,
                "\nRun 'sluice VERB --help' for a verb's flags. Exit status: 0 success, 75\n"
                "refused or timed out, 64 usage error, 1 any other error.\n");
}

// Lists the verb's flags from the flag registry, so that the help text, the
// default and the flag itself cannot drift apart. Flags show with dashes.
void PrintVerbHelp(const Verb& verb) {
  absl::FPrintF(stdout, "usage: sluice %s\n\n%s\n\nflags:\n", DashFlagNames(verb.usage),
                DashFlagNames(verb.description));
  int width = 8;
  for (absl::string_view name : verb.flags) width = std::max(width, static_cast<int>(name.size()));
  for (absl::string_view name : verb.flags) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) continue;  // every name a verb lists is defined
    const std::string note = absl::c_linear_search(verb.required, name)
                                 ? "required"
                                 : absl::StrCat("default: ", flag->DefaultValue());
    absl::FPrintF(stdout, "  %-*s  %s (%s)\n", width + 2, DashedFlag(name),
                  DashFlagNames(flag->Help()), note);
  }
}

// `sluice help [VERB]`, `sluice --help`.
int RunHelp(int argc, char** argv) {
  if (argc < 3) {
    PrintVerbs(stdout);
    return kExitOk;
  }
  const Verb* verb = FindVerb(argv[2]);
  if (verb == nullptr) {
    absl::FPrintF(stderr, "sluice help: unknown verb '%s'; verbs are %s\n", argv[2], VerbNames());
    return kExitUsage;
  }
  PrintVerbHelp(*verb);
  return kExitOk;
}

// Dispatch ---------------------------------------------------------------------

// Checks the verb's command line (`args`, what follows the verb), sets its
// flags and runs it.
int RunVerb(const Verb& verb, const char* argv0, absl::Span<const char* const> args) {
  const FlagScan scan = ScanFlags(verb, args);
  if (scan.help) {
    PrintVerbHelp(verb);
    return kExitOk;
  }
  if (!scan.error.empty()) return UsageError(verb, scan.error);
  for (absl::string_view required : verb.required) {
    if (!absl::c_linear_search(scan.given, required)) {
      return UsageError(verb, absl::StrCat("missing required flag ", DashedFlag(required)));
    }
  }

  Command cmd{.verb = &verb,
              .args = ParseVerbFlags(verb, argv0, AbslSpelling(verb, args)),
              .given = scan.given};
  if (cmd.args.size() < verb.args.size()) {
    return UsageError(verb, absl::StrCat("missing argument ", verb.args[cmd.args.size()]));
  }
  if (cmd.args.size() > verb.args.size() && !verb.more_args) {
    return UsageError(verb, absl::StrCat("unexpected argument '", cmd.args[verb.args.size()],
                                         "'; usage: sluice ", verb.usage));
  }
  const int code = verb.run(cmd);
  // A report cut short (a full disk, a closed pipe) must not pass for success.
  if (std::fflush(stdout) != 0) {
    return Report(verb, kExitError, absl::StrCat("writing output: ", std::strerror(errno)));
  }
  return code;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage("sluice VERB [flags] [args]; run 'sluice help' for the verbs");
  if (argc < 2) {
    PrintVerbs(stderr);
    return kExitUsage;
  }
  const absl::string_view first = argv[1];
  if (first == "help" || first == "--help" || first == "-help" || first == "-h") {
    return RunHelp(argc, argv);
  }
  const Verb* verb = FindVerb(first);
  if (verb == nullptr) {
    absl::FPrintF(stderr, "sluice: unknown verb '%s'; verbs are %s (see 'sluice help')\n", first,
                  VerbNames());
    return kExitUsage;
  }
  return RunVerb(*verb, argv[0],
                 absl::Span<const char* const>(argv + 2, static_cast<size_t>(argc - 2)));
}

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) { return sluice::Main(argc, argv); }
