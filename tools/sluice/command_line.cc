#include "tools/sluice/command_line.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace sluice {
namespace {

const absl::CommandLineFlag* VerbFlag(const Verb& verb, absl::string_view name) {
  if (!absl::c_linear_search(verb.flags, name)) return nullptr;
  return absl::FindCommandLineFlag(name);
}

// One argument spelled as a flag ("-x", "--x", "--x=value").
struct FlagArg {
  std::string name;  // Abseil's name: underscores, without a negation's "no"
  bool negated = false;
  absl::string_view value;                      // "=value" when given that way, else empty
  const absl::CommandLineFlag* flag = nullptr;  // null: not one of the verb's
};

// REQUIRES: `arg` starts with '-', is longer than one character and is not "--".
FlagArg ReadFlagArg(const Verb& verb, absl::string_view arg) {
  absl::string_view body = arg.substr(arg[1] == '-' ? 2 : 1);
  FlagArg out;
  if (const size_t eq = body.find('='); eq != absl::string_view::npos) {
    out.value = body.substr(eq);
    body = body.substr(0, eq);
  }
  out.name = absl::StrReplaceAll(body, {{"-", "_"}});
  out.flag = VerbFlag(verb, out.name);
  if (out.flag == nullptr && absl::StartsWith(out.name, "no")) {
    // --nojson (Abseil) or --no-json (git).
    const absl::string_view rest = absl::StripPrefix(absl::string_view(out.name).substr(2), "_");
    const absl::CommandLineFlag* negated = VerbFlag(verb, rest);
    if (negated != nullptr && negated->IsOfType<bool>()) {
      out.flag = negated;
      out.negated = true;
      out.name = std::string(rest);
    }
  }
  return out;
}

// Calls visit(index, flag_arg) for each argument before "--" that is spelled
// as a flag, stepping over the value of each of the verb's non-boolean flags
// given as the next argument.
template <typename Visit>
void ForEachFlag(const Verb& verb, absl::Span<const char* const> args, Visit visit) {
  for (size_t i = 0; i < args.size(); ++i) {
    const absl::string_view arg = args[i];
    if (arg == "--") return;
    if (arg.size() < 2 || arg[0] != '-') continue;  // a positional argument
    const FlagArg flag = ReadFlagArg(verb, arg);
    visit(i, flag);
    if (flag.flag != nullptr && flag.value.empty() && !flag.flag->IsOfType<bool>()) ++i;
  }
}

// Set while absl::ParseCommandLine runs. Abseil reports a malformed value
// itself ("ERROR: Illegal value ...") and then calls std::exit(1); a bad value
// is a usage error here, so an exit handler turns that exit into EX_USAGE.
const Verb* parsing_verb = nullptr;

void ExitUsageIfParsing() {
  if (parsing_verb == nullptr) return;
  absl::FPrintF(stderr, "sluice %s: bad flag value (see above and 'sluice %s --help')\n",
                parsing_verb->name, parsing_verb->name);
  std::_Exit(kExitUsage);
}

}  // namespace

FlagScan ScanFlags(const Verb& verb, absl::Span<const char* const> args) {
  FlagScan scan;
  ForEachFlag(verb, args, [&](size_t i, const FlagArg& flag) {
    if (flag.name == "help" || flag.name == "h") {
      scan.help = true;
    } else if (flag.flag == nullptr) {
      if (scan.error.empty()) {
        scan.error =
            absl::StrCat("flag '", args[i], "' is not one of ", verb.name, "'s: ", FlagList(verb));
      }
    } else {
      scan.given.push_back(flag.name);
    }
  });
  return scan;
}

std::vector<std::string> AbslSpelling(const Verb& verb, absl::Span<const char* const> args) {
  std::vector<std::string> spelled(args.begin(), args.end());
  ForEachFlag(verb, args, [&](size_t i, const FlagArg& flag) {
    if (flag.flag == nullptr) return;
    spelled[i] = absl::StrCat("--", flag.negated ? "no" : "", flag.name, flag.value);
  });
  return spelled;
}

std::vector<std::string> ParseVerbFlags(const Verb& verb, const char* argv0,
                                        const std::vector<std::string>& args) {
  std::vector<std::string> owned = {argv0};  // the verb itself is not Abseil's
  owned.insert(owned.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : owned) argv.push_back(arg.data());
  std::atexit(ExitUsageIfParsing);
  parsing_verb = &verb;
  std::vector<char*> rest = absl::ParseCommandLine(static_cast<int>(argv.size()), argv.data());
  parsing_verb = nullptr;
  return std::vector<std::string>(rest.begin() + 1, rest.end());  // rest[0] is argv0
}

std::string FlagList(const Verb& verb) {
  return absl::StrJoin(verb.flags, ", ", [](std::string* out, absl::string_view flag) {
    absl::StrAppend(out, DashedFlag(flag));
  });
}

}  // namespace sluice
