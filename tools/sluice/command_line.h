// How the `sluice` tool reads a verb's command line before the verb runs:
// which of the verb's flags were given (and whether one given is not the
// verb's), and the positional arguments once Abseil has set the flags.
//
// Flags take both spellings: with dashes, as git, curl and kubectl spell them
// (--base-url, --max-in-flight, --no-force), and with Abseil's underscores
// (--base_url, --max_in_flight, --noforce). Each is rewritten to Abseil's
// spelling before Abseil parses; help and error messages show the dashes.
// Values are never rewritten, including a value given as the next argument
// (which may start with '-'), nor is anything after "--".
//
// Thread safety: ParseVerbFlags sets process-wide flags; call it once, from
// main's thread.

#ifndef SLUICE_TOOLS_SLUICE_COMMAND_LINE_H_
#define SLUICE_TOOLS_SLUICE_COMMAND_LINE_H_

#include <string>
#include <vector>

#include "absl/types/span.h"
#include "tools/sluice/cli.h"

namespace sluice {

// The flags named on a command line, found before Abseil parses them.
struct FlagScan {
  bool help = false;               // -h, --help
  std::vector<std::string> given;  // the verb's flags that were given, Abseil's names
  std::string error;               // about the first flag the verb does not take
};

// Reads `args` (what follows the verb) the way Abseil will: "-f" or "--f",
// "=value" or the next argument as a non-boolean flag's value, "--nof" or
// "--no-f" for a boolean, nothing after "--". Only names are looked at:
// Abseil alone would accept every flag linked into the binary (another verb's,
// or its own --flagfile) and answer --help its own way.
FlagScan ScanFlags(const Verb& verb, absl::Span<const char* const> args);

// `args` with every flag of the verb spelled as Abseil knows it.
std::vector<std::string> AbslSpelling(const Verb& verb, absl::Span<const char* const> args);

// Sets the verb's flags from `args` (Abseil's spelling) and returns the
// positional arguments. A value Abseil cannot parse exits the process with
// EX_USAGE after Abseil's own message and one line naming the verb.
// REQUIRES: ScanFlags(verb, args) found no error.
std::vector<std::string> ParseVerbFlags(const Verb& verb, const char* argv0,
                                        const std::vector<std::string>& args);

// The verb's flags as help shows them: "--rate, --burst, ...".
std::string FlagList(const Verb& verb);

}  // namespace sluice

#endif  // SLUICE_TOOLS_SLUICE_COMMAND_LINE_H_
