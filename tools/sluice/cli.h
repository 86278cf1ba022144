// What the verbs of the `sluice` tool share: the verb table, error reporting,
// exit codes, the flags more than one verb takes, and small formatting helpers.
//
// Each verb lives in its own file and registers itself with SLUICE_VERB; main.cc
// only dispatches. A verb's own flags are defined in its file; a flag that several
// verbs take is defined once in cli.cc and declared here.

#ifndef SLUICE_TOOLS_SLUICE_CLI_H_
#define SLUICE_TOOLS_SLUICE_CLI_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "sluice/client.h"
#include "sluice/cluster_settings.h"
#include "sluice/limits.h"
#include "sluice/segment.h"
#include "sluice/store.h"
#include "tools/fake_provider/fake_provider.h"

ABSL_DECLARE_FLAG(std::string, segment);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(absl::Duration, timeout);
ABSL_DECLARE_FLAG(std::string, config);
ABSL_DECLARE_FLAG(std::string, provider);
ABSL_DECLARE_FLAG(std::string, base_url);
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(uint64_t, max_tokens);
ABSL_DECLARE_FLAG(std::string, scope);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(int, port);
ABSL_DECLARE_FLAG(std::string, listen);
ABSL_DECLARE_FLAG(double, time_scale);
ABSL_DECLARE_FLAG(absl::Duration, latency);
ABSL_DECLARE_FLAG(std::string, redis);
ABSL_DECLARE_FLAG(std::string, mode);

namespace sluice {

// Exit codes follow sysexits.h.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 64;     // EX_USAGE
inline constexpr int kExitTempFail = 75;  // EX_TEMPFAIL
inline constexpr int kExitConfig = 78;    // EX_CONFIG

struct Verb;

// One invocation, after its flags are parsed.
struct Command {
  const Verb* verb;
  std::vector<std::string> args;   // the positional arguments after the verb
  std::vector<std::string> given;  // the flags given on the command line

  // Whether --`flag` was given (as opposed to left at its default).
  bool Given(absl::string_view flag) const;
};

struct Verb {
  int order;  // its place in `sluice help`
  absl::string_view name;
  absl::string_view usage;                       // what follows "sluice " in the usage line
  absl::string_view summary;                     // one line, for `sluice help`
  absl::string_view description;                 // a paragraph, for `sluice VERB --help`
  absl::Span<const absl::string_view> flags;     // the flags it takes
  absl::Span<const absl::string_view> required;  // those it cannot do without
  absl::Span<const absl::string_view> args;      // its positional arguments, all required
  int (*run)(const Command&);
  // When set, `args` lists the leading required arguments and any number of
  // further ones may follow (e.g. `sluice lab` workloads); otherwise the count
  // must match exactly.
  bool more_args = false;
};

// Every registered verb, in `order`.
std::vector<const Verb*> AllVerbs();

// Adds a verb to the table; used through SLUICE_VERB at namespace scope.
struct VerbRegistration {
  explicit VerbRegistration(const Verb* verb);
};
#define SLUICE_VERB_CONCAT_INNER(a, b) a##b
#define SLUICE_VERB_CONCAT(a, b) SLUICE_VERB_CONCAT_INNER(a, b)
#define SLUICE_VERB(verb) \
  static const ::sluice::VerbRegistration SLUICE_VERB_CONCAT(sluice_verb_, __LINE__)(&(verb))

// Prints "sluice VERB: message" as one line on stderr and returns `code`.
// Newlines in the message are folded so that scripts can rely on one line
// per error.
int Report(const Verb& verb, int code, absl::string_view message);
// Report(kExitError, status.message()).
int Fail(const Command& cmd, const absl::Status& status);
// Report(kExitUsage, ...) with a pointer to the verb's --help. Name flags in
// `message` as users spell them, with dashes ("--max-tokens").
int UsageError(const Verb& verb, absl::string_view message);

// How help and errors spell a flag, whose Abseil name has underscores:
// DashedFlag("base_url") is "--base-url".
std::string DashedFlag(absl::string_view absl_name);
// `text` with each flag named in it ("--max_tokens") spelled with dashes
// ("--max-tokens"); everything else is left as it is. Help shows every verb's
// usage, description and flag texts through it.
std::string DashFlagNames(absl::string_view text);

// Formatting.
std::string Rfc3339(int64_t unix_ns);
std::string LocalTime(int64_t unix_ns);
// Prints rows as left-aligned columns, the first row being the heading.
void PrintTable(const std::vector<std::vector<std::string>>& rows);

// The q-quantile (0 <= q <= 1) of `values` by nearest rank; 0 when empty.
// Reorders `values`.
double Percentile(std::vector<double>& values, double q);

// {"p50", "p90", "p99", "max"} of throttle waits in seconds.
nlohmann::ordered_json WaitPercentilesJson(std::vector<double> waits_s);

// Points `options` at `provider`, a simulated provider this process started
// with `started_with`: its URL, a key it accepts and its time scale. (No
// connection cap: it serves any number of connections at once.)
void UseSimulatedProvider(const FakeProvider& provider, const FakeProviderOptions& started_with,
                          ClientOptions* options);

// For verbs that serve until stopped: BlockStopSignals() blocks SIGINT and
// SIGTERM (and SIGHUP) in this thread, before any server thread starts (they inherit the
// mask), so that the signals end WaitForStopSignal() instead of the process.
absl::Status BlockStopSignals();
absl::Status WaitForStopSignal();
// The same, for verbs that also reload on SIGHUP (blocked with the others):
// returns the signal received, SIGINT, SIGTERM or SIGHUP.
absl::StatusOr<int> WaitForSignal();

// Where --redis's password comes from (never a flag: flags show in process
// listings).
inline constexpr char kRedisPasswordEnv[] = "SLUICE_REDIS_PASSWORD";

// The fleet that --redis URL (REQUIRES: given) and --mode name, over `base`
// (a limits file's [cluster] table, or the defaults): --mode replaces the
// base's mode only when given; the password comes from the base's
// password_env or else from $SLUICE_REDIS_PASSWORD when it is set.
// InvalidArgument naming the flag that is wrong.
absl::StatusOr<ClusterSettings> ClusterFromFlags(const Command& cmd, ClusterSettings base = {});

// Opens the --segment that must already exist, without recording this process
// in it: the tools that only look or remove must not show up as users.
absl::StatusOr<std::unique_ptr<Segment>> OpenExisting();

// The limits a command runs under: the --config file, or, without one, a
// bare `global` scope with no limits.
absl::StatusOr<LimitsConfig> LimitsFromFlags();

// The store a verb's policy runs over: `local` itself, or, when the limits
// file has a [cluster] table, a fleet store over it (sluice/fleet_store.h;
// lease mode), kept in `*fleet`, whose refiller runs until it is destroyed.
// ClusterSettings' errors (exact mode, a password variable unset).
absl::StatusOr<Store*> StoreForLimits(const LimitsConfig& limits, Store* local,
                                      std::unique_ptr<Store>* fleet);

// The limits `sluice demo` runs under (examples/demo-limits.toml): the
// simulated provider's own, with no headroom. `sluice batch` uses them too
// when it runs against the simulated provider without a --config.
absl::string_view DemoLimitsToml();

}  // namespace sluice

#endif  // SLUICE_TOOLS_SLUICE_CLI_H_
