// File: limits.h
// -----------------------------------------------------------------------------
// What the limits configuration says: provider limits (per model class),
// application scopes and their parents, headroom, bursts, prices, and the
// tables only some readers use ([proxy]; [cluster], cluster_settings.h).
// Parsed from TOML (toml++); every error names file:line:column and the
// offending key, and unknown keys are errors so that a typo never silently
// disables a limit.
//
// The configuration is turned into bucket specifications (BucketSpec,
// BudgetSpec, ConcurrencySpec) with stable keys (BucketKey, bucket_key.h);
// EffectiveLimits (effective_limits.h) lists all of a config's at once, and
// the policy (policy.h) opens them in a store and charges them.
//
// Thread safety: LimitsConfig and the specs are plain values; the functions
// here are pure.
//
// Example file (examples/seed-limits.toml reproduces the reference design):
//   headroom = 0.8
//   [providers.anthropic]
//   requests_per_minute = 1000
//   tokens_per_minute = 100000
//   tokens_per_day = 2500000
//   [scopes.global]
//   requests_per_minute = 800
//   [scopes."team:marketing"]
//   parent = "global"
//   requests_per_minute = 100
//
// A scope that names no parent gets "global" as its parent when a "global"
// scope exists (so every path ends there), and is a root otherwise.

#ifndef SLUICE_LIMITS_H_
#define SLUICE_LIMITS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/cluster_settings.h"
#include "sluice/token_bucket.h"

namespace sluice {

// The throttled dimensions. Requests cost 1 permit; token limits cost tokens.
enum class LimitKind : uint8_t {
  kRequestsPerMinute,      // requests_per_minute
  kInputTokensPerMinute,   // input_tokens_per_minute (Anthropic ITPM)
  kOutputTokensPerMinute,  // output_tokens_per_minute (Anthropic OTPM)
  kTokensPerMinute,        // tokens_per_minute (combined, OpenAI TPM)
  kTokensPerDay,           // tokens_per_day
};
inline constexpr LimitKind kAllLimitKinds[] = {
    LimitKind::kRequestsPerMinute, LimitKind::kInputTokensPerMinute,
    LimitKind::kOutputTokensPerMinute, LimitKind::kTokensPerMinute, LimitKind::kTokensPerDay};

// The TOML key ("requests_per_minute", ...) and the short bucket-key suffix
// ("rpm", "itpm", "otpm", "tpm", "tpd").
absl::string_view LimitKindKey(LimitKind kind);
absl::string_view LimitKindSuffix(LimitKind kind);

// Where something was written, for error messages: "file:line:column".
struct SourceLocation {
  std::string file;
  int line = 0;
  int column = 0;
  std::string ToString() const;  // "file:line:column"
};

// A set of limits, each optional (absent = not limited at this level), with
// optional explicit bursts (permits) for any of them. An explicit burst is
// used as written (headroom does not scale it) and may not exceed the
// limit's effective value; without one, the burst is derived from
// LimitsConfig::minute_burst or day_burst.
struct LimitSet {
  std::map<LimitKind, uint64_t> per_period;  // kind -> permits per minute (or per day)
  std::map<LimitKind, uint64_t> burst;       // kind -> capacity override
};

// How Anthropic's output-token limit is pre-charged before the call: older
// docs charge max_tokens up front, newer ones count output as it is produced.
enum class OutputPrecharge : uint8_t { kMaxTokens, kNone };

struct ModelClass {
  std::string name;                // the [providers.P.models.NAME] table name
  std::vector<std::string> match;  // model names; a trailing '*' matches a prefix
  // Overrides the provider's defaults per kind. A class that sets a kind's
  // limit but not its burst gets the derived burst, not the provider's
  // explicit one (which was sized for the provider's limit).
  LimitSet limits;
  // Whether cache reads count toward input-token limits (false for most
  // Anthropic models; a few older ones count them). Unset: the provider's.
  std::optional<bool> count_cache_reads;
  SourceLocation where;
};

struct ProviderLimits {
  std::string name;  // "anthropic", "openai", or any other
  LimitSet limits;   // defaults for every model class of this provider
  std::vector<ModelClass> models;
  OutputPrecharge output_precharge = OutputPrecharge::kMaxTokens;
  bool count_cache_reads = false;
  SourceLocation where;
};

// Which requests a queue in front of the provider (the proxy's) serves first:
// every high request before any normal one, every normal before any low; in
// arrival order within one priority.
enum class Priority : uint8_t { kHigh, kNormal, kLow };

// "high", "normal", "low"; and back (nullopt for any other word).
absl::string_view PriorityName(Priority priority);
std::optional<Priority> ParsePriority(absl::string_view name);

struct ScopeLimits {
  std::string name;    // "global", "team:marketing", "workflow:nightly-batch", any name
  std::string parent;  // empty for a root; "global" is the root of every path
  LimitSet limits;     // not scaled by headroom: application limits are exact
  std::optional<uint32_t> max_concurrency;
  std::optional<double> usd_per_day;    // calendar day, UTC
  std::optional<double> usd_per_month;  // calendar month, UTC
  // Its requests' priority in the proxy's queue when they name none.
  std::optional<Priority> priority;
  SourceLocation where;
};

// USD per million tokens. In the file, input and output are required;
// cache_write and cache_read default to the input price, so that a missing
// entry can only overestimate spend.
struct Price {
  double input = 0;
  double output = 0;
  double cache_write = 0;
  double cache_read = 0;
};

// The [proxy] table, read by `sluice proxy`:
//   [proxy]
//   count_tokens_requests_per_minute = 100   # Anthropic's count_tokens, a bucket of its own
//   retry_upstream = false                   # pass 429/529/5xx through (true: the client retries)
//   [proxy.keys]                             # lowercase hex SHA-256 of an API key = its scope
//   "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" = "team:marketing"
// Keys are never written in clear: `printf %s "$KEY" | sha256sum` gives the name.
struct ProxySettings {
  std::map<std::string, std::string> key_scopes;  // SHA-256 hex -> scope
  std::optional<uint64_t> count_tokens_requests_per_minute;
  bool retry_upstream = false;
};

struct LimitsConfig {
  std::string source;     // the file it came from (or a name given to the parser)
  double headroom = 0.8;  // applied to provider limits only, in (0, 1]
  // Default burst of per-minute buckets: this much of the rate, never a whole
  // minute (providers enforce at sub-minute granularity).
  absl::Duration minute_burst = absl::Seconds(6);
  // Default burst of per-day buckets.
  absl::Duration day_burst = absl::Hours(1);
  std::map<std::string, ProviderLimits> providers;
  std::map<std::string, ScopeLimits> scopes;
  std::map<std::string, Price> prices;  // model name (trailing '*' = prefix) -> price
  ProxySettings proxy;
  // The [cluster] table (cluster_settings.h): the fleet's Redis. Absent: this
  // host is on its own, and nothing speaks to Redis.
  std::optional<ClusterSettings> cluster;
};

// Parses and validates a TOML document. `source` names it in errors.
// InvalidArgument with "source:line:column: key: what is wrong" (the key as a
// dotted TOML path, e.g. scopes."team:marketing".requests_per_minute) for:
// syntax errors (toml++'s message, without a key); unknown keys (with "did
// you mean ...?" when a known key is close); wrong types; a missing required
// key (a class's match, a price's input or output); limits that are not
// positive integers, max_concurrency outside 1..65535, USD budgets that are
// not positive, under one micro-dollar or over what a budget counter holds
// (2^43 - 1 micro-dollars, about 8.8 million USD), negative prices; headroom outside
// (0, 1]; minute_burst not in (0, 1m) or day_burst not in (0, 24h); an
// explicit burst of 0, above the limit's effective value, or for a kind with
// no limit; a parent that does not exist; a cycle of parents; a parent on
// "global" (it is the root of every path); a provider or class name that is
// empty or holds ':' or whitespace, a class named "default", a scope name
// that is empty, holds whitespace or has an empty ':'-separated part; a
// match or price pattern with a '*' anywhere but at the end; a match
// pattern used by two classes of one provider; a name that makes a bucket
// key longer than kMaxBucketNameLength (segment.h); an output_precharge
// other than "max_tokens" or "none"; a limit too fast for a bucket
// (ValidateBucketConfig); a scope's priority other than "high", "normal" or
// "low"; in [proxy.keys], a name that is not 64 hex digits or a scope name
// that could not be one; in [cluster], a missing redis, a redis URL that
// ParseRedisUrl refuses (its message, which never repeats a password), a
// key_prefix that is not 1 to 32 of [A-Za-z0-9:_.-], a mode or on_redis_down
// not among their words, a password_env that is not an environment variable
// name ([A-Za-z_][A-Za-z0-9_]*), a timeout not in (0, 10s], an
// expected_hosts outside 1..100000, a concurrency_lease_ttl not in (0, 1h].
absl::StatusOr<LimitsConfig> ParseLimitsConfig(absl::string_view toml, absl::string_view source);

// Reads and parses a file (named in errors by `path`); NotFound if it cannot
// be read.
absl::StatusOr<LimitsConfig> LoadLimitsConfig(const std::string& path);

// One token bucket the configuration asks for, with its effective limit.
struct BucketSpec {
  // Stable store key, BucketKey::ToString(): "provider:anthropic:default:rpm",
  // "provider:anthropic:claude-opus:itpm", "scope:team:marketing:rpm".
  std::string key;
  std::string owner;  // scope name, or "provider/class"
  LimitKind kind = LimitKind::kRequestsPerMinute;
  uint64_t limit = 0;   // permits per minute or per day after headroom
  BucketConfig config;  // rate = limit per minute (or day), capacity = burst
  // The file gave this bucket's burst ([...burst] table): the user's word on
  // the provider's bucket, trusted as it is; a derived burst is only a guess,
  // which the client's cold start sizes from the provider's headers.
  bool explicit_burst = false;
};

enum class BudgetPeriod : uint8_t { kDay, kMonth };

// A scope's USD budget per calendar period, in micro-dollars.
struct BudgetSpec {
  std::string key;  // "scope:team:marketing:usd_day" / ":usd_month"
  std::string scope;
  BudgetPeriod period = BudgetPeriod::kDay;
  uint64_t limit_micro_usd = 0;  // llround(usd * 1e6)
};

struct ConcurrencySpec {
  std::string key;  // "scope:team:marketing:concurrency"
  std::string scope;
  uint32_t max_in_flight = 0;
};

// The budget window `t` falls in, as budget counters number them: days since
// the Unix epoch (UTC) for kDay, months since January 1970 (UTC) for kMonth.
int64_t BudgetWindowId(BudgetPeriod period, absl::Time t);

// The model class of `model` at `provider`: the class with an exact pattern
// equal to `model`, else the class with the longest matching prefix pattern,
// or nullptr for the default class. (Patterns are unique per provider, so
// there are no ties.)
const ModelClass* FindModelClass(const ProviderLimits& provider, absl::string_view model);

// The price of `model`: an exact entry, else the longest matching prefix
// pattern; nullptr when none matches.
const Price* FindPrice(const LimitsConfig& config, absl::string_view model);

// A scope's path from itself to its root, e.g. workflow:nightly-batch ->
// team:engineering -> global. An unknown scope falls back to its parent by
// name (the longest configured prefix ending before a ':', so "team:x:y" ->
// "team:x"), then to "global", as the reference design's get_throttler does;
// `fell_back` says so. A config without a "global" scope has an implicit one
// with no limits, so the path is never empty. The pointers point into
// `config`, or to that implicit scope (which lives forever).
struct ScopePath {
  std::vector<const ScopeLimits*> scopes;  // requested (or fallback) first, root last
  bool fell_back = false;                  // `scope` itself is not configured
};
ScopePath ResolveScope(const LimitsConfig& config, absl::string_view scope);

// TimeScaled()
//
// `config` for a rehearsal in which `scale` simulated minutes pass per real
// minute (the simulated provider's time_scale): every per-minute and per-day
// limit (the proxy's count_tokens limit too) is multiplied by `scale`
// (rounded, at least 1) and the default burst
// durations divided by it, so that every bucket keeps its capacity in permits
// (to within rounding) and refills `scale` times faster on the real clock. Explicit bursts,
// budgets and concurrency caps are not rates and stay as they are; so does the
// [cluster] table, whose durations (timeout, concurrency_lease_ttl) are real time on the
// link to Redis, not the simulated provider's.
// REQUIRES: scale > 0 and finite.
LimitsConfig TimeScaled(LimitsConfig config, double scale);

}  // namespace sluice

#endif  // SLUICE_LIMITS_H_
