// sluice config check FILE [--json]: validates a limits file and prints the
// limits it sets (every provider model class bucket after headroom, every
// scope's buckets, budgets and concurrency cap, each scope's path) and the
// fleet's Redis it names, if any (never a password: only its variable's name).

#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "sluice/bucket_key.h"
#include "sluice/cluster_settings.h"
#include "sluice/effective_limits.h"
#include "sluice/limits.h"
#include "tools/sluice/cli.h"

namespace sluice {
namespace {

// sluice config check -----------------------------------------------------------

using Json = nlohmann::ordered_json;

std::string ScopePathText(const ScopePath& path) {
  return absl::StrJoin(path.scopes, " -> ", [](std::string* out, const ScopeLimits* scope) {
    absl::StrAppend(out, scope->name);
  });
}

absl::string_view PrechargeName(OutputPrecharge precharge) {
  return precharge == OutputPrecharge::kMaxTokens ? "max_tokens" : "none";
}

// The model classes of `provider`, its default class first.
std::vector<const OwnerLimits*> ClassesOf(const EffectiveLimits& limits,
                                          const ProviderLimits& provider) {
  std::vector<const OwnerLimits*> classes;
  for (const OwnerLimits& owner : limits.owners()) {
    if (owner.type == BucketKey::Owner::kProvider && owner.provider == &provider) {
      classes.push_back(&owner);
    }
  }
  return classes;
}

// What the MODELS column says of a model class.
std::string ModelsText(const OwnerLimits& model_class) {
  if (model_class.model_class != nullptr) return absl::StrJoin(model_class.models, ", ");
  return model_class.provider->models.empty() ? "(any model)" : "(any other model)";
}

std::vector<std::string> BucketRow(const BucketSpec& spec) {
  return {spec.key, spec.config.rate.ToString(), absl::StrCat(spec.config.capacity)};
}

// The [cluster] table, one key a row; the password is not read, its
// variable is named.
void PrintClusterText(const std::optional<ClusterSettings>& cluster) {
  if (!cluster) {
    absl::FPrintF(stdout, "\ncluster: none (no [cluster] table: these limits hold on this host)\n");
    return;
  }
  absl::FPrintF(stdout, "\ncluster (every host reading this file shares these limits)\n");
  PrintTable({
      {"KEY", "VALUE"},
      {"redis", cluster->redis.ToString()},
      {"password_env", cluster->password_env.empty()
                           ? "none (no password)"
                           : absl::StrCat("$", cluster->password_env, " (not shown)")},
      {"key_prefix", absl::StrCat("\"", cluster->key_prefix, "\"")},
      {"mode", std::string(ClusterModeName(cluster->mode))},
      {"on_redis_down", std::string(RedisDownPolicyName(cluster->on_redis_down))},
      {"timeout", absl::FormatDuration(cluster->timeout)},
      {"expected_hosts", absl::StrCat(cluster->expected_hosts)},
      {"concurrency_lease_ttl", absl::FormatDuration(cluster->concurrency_lease_ttl)},
  });
}

void PrintConfigText(const EffectiveLimits& limits) {
  const LimitsConfig& config = limits.config();
  absl::FPrintF(stdout, "%s: valid\n", config.source);
  absl::FPrintF(stdout, "headroom %g: provider limits are scaled by it, scope limits are not\n",
                config.headroom);
  absl::FPrintF(stdout, "default bursts: %s of a per-minute limit, %s of a per-day limit\n",
                absl::FormatDuration(config.minute_burst), absl::FormatDuration(config.day_burst));

  for (const auto& [name, provider] : config.providers) {
    absl::FPrintF(stdout, "\nprovider %s (output precharge %s, cache reads %s)\n", name,
                  PrechargeName(provider.output_precharge),
                  provider.count_cache_reads ? "counted" : "not counted");
    std::vector<std::vector<std::string>> rows = {{"BUCKET", "LIMIT", "BURST", "MODELS"}};
    for (const OwnerLimits* model_class : ClassesOf(limits, provider)) {
      for (const BucketSpec& spec : model_class->buckets) {
        rows.push_back(BucketRow(spec));
        rows.back().push_back(ModelsText(*model_class));
      }
    }
    if (rows.size() == 1) {
      absl::FPrintF(stdout, "  no limits\n");
    } else {
      PrintTable(rows);
    }
  }

  if (config.scopes.empty()) {
    absl::FPrintF(stdout, "\nscopes: none\n");
  } else {
    absl::FPrintF(stdout, "\nscopes\n");
    std::vector<std::vector<std::string>> paths = {{"SCOPE", "PATH"}};
    std::vector<std::vector<std::string>> rows = {{"BUCKET", "LIMIT", "BURST"}};
    for (const OwnerLimits& scope : limits.owners()) {
      if (scope.type != BucketKey::Owner::kScope) continue;
      paths.push_back({scope.name, ScopePathText(ResolveScope(config, scope.name))});
      for (const BucketSpec& spec : scope.buckets) rows.push_back(BucketRow(spec));
      for (const BudgetSpec& spec : scope.budgets) {
        rows.push_back({spec.key,
                        absl::StrFormat("%g USD/%s", spec.limit_micro_usd / 1e6,
                                        spec.period == BudgetPeriod::kDay ? "day" : "month"),
                        "-"});
      }
      if (const std::optional<ConcurrencySpec>& spec = scope.concurrency) {
        rows.push_back({spec->key, absl::StrCat(spec->max_in_flight, " in flight"), "-"});
      }
    }
    PrintTable(paths);
    absl::FPrintF(stdout, "\n");
    PrintTable(rows);
  }

  if (!config.prices.empty()) {
    absl::FPrintF(stdout, "\nprices (USD per million tokens)\n");
    std::vector<std::vector<std::string>> rows = {
        {"MODEL", "INPUT", "OUTPUT", "CACHE WRITE", "CACHE READ"}};
    for (const auto& [pattern, price] : config.prices) {
      rows.push_back({pattern, absl::StrFormat("%g", price.input),
                      absl::StrFormat("%g", price.output), absl::StrFormat("%g", price.cache_write),
                      absl::StrFormat("%g", price.cache_read)});
    }
    PrintTable(rows);
  }
  PrintClusterText(config.cluster);
}

Json BucketJson(const BucketSpec& spec) {
  return {{"key", spec.key},
          {"kind", LimitKindKey(spec.kind)},
          {"limit", spec.limit},
          {"rate", spec.config.rate.ToString()},
          {"burst", spec.config.capacity}};
}

Json ClusterJson(const std::optional<ClusterSettings>& cluster) {
  if (!cluster) return nullptr;
  return {
      {"redis", cluster->redis.ToString()},
      {"host", cluster->redis.host},
      {"port", cluster->redis.port},
      {"db", cluster->redis.db},
      {"password_env", cluster->password_env.empty() ? Json(nullptr) : Json(cluster->password_env)},
      {"key_prefix", cluster->key_prefix},
      {"mode", ClusterModeName(cluster->mode)},
      {"on_redis_down", RedisDownPolicyName(cluster->on_redis_down)},
      {"timeout", absl::FormatDuration(cluster->timeout)},
      {"expected_hosts", cluster->expected_hosts},
      {"concurrency_lease_ttl", absl::FormatDuration(cluster->concurrency_lease_ttl)},
  };
}

void PrintConfigJson(const EffectiveLimits& limits) {
  const LimitsConfig& config = limits.config();
  Json doc;
  doc["source"] = config.source;
  doc["valid"] = true;
  doc["headroom"] = config.headroom;
  doc["minute_burst"] = absl::FormatDuration(config.minute_burst);
  doc["day_burst"] = absl::FormatDuration(config.day_burst);
  doc["providers"] = Json::array();
  for (const auto& [name, provider] : config.providers) {
    Json classes = Json::array();
    for (const OwnerLimits* owner : ClassesOf(limits, provider)) {
      const ModelClass* model_class = owner->model_class;
      Json buckets = Json::array();
      for (const BucketSpec& spec : owner->buckets) buckets.push_back(BucketJson(spec));
      classes.push_back({
          {"name", model_class == nullptr ? "default" : model_class->name},
          {"match", owner->models},
          {"count_cache_reads", model_class != nullptr && model_class->count_cache_reads
                                    ? *model_class->count_cache_reads
                                    : provider.count_cache_reads},
          {"buckets", std::move(buckets)},
      });
    }
    doc["providers"].push_back({
        {"name", name},
        {"output_precharge", PrechargeName(provider.output_precharge)},
        {"count_cache_reads", provider.count_cache_reads},
        {"classes", std::move(classes)},
    });
  }
  doc["scopes"] = Json::array();
  for (const OwnerLimits& owner : limits.owners()) {
    if (owner.type != BucketKey::Owner::kScope) continue;
    const ScopeLimits& scope = *owner.scope;
    Json path = Json::array();
    for (const ScopeLimits* s : ResolveScope(config, scope.name).scopes) path.push_back(s->name);
    Json buckets = Json::array();
    for (const BucketSpec& spec : owner.buckets) buckets.push_back(BucketJson(spec));
    Json budgets = Json::array();
    for (const BudgetSpec& spec : owner.budgets) {
      budgets.push_back({{"key", spec.key},
                         {"period", spec.period == BudgetPeriod::kDay ? "day" : "month"},
                         {"limit_micro_usd", spec.limit_micro_usd}});
    }
    Json concurrency = nullptr;
    if (const std::optional<ConcurrencySpec>& spec = owner.concurrency) {
      concurrency = {{"key", spec->key}, {"max_in_flight", spec->max_in_flight}};
    }
    doc["scopes"].push_back({
        {"name", scope.name},
        {"parent", scope.parent.empty() ? Json(nullptr) : Json(scope.parent)},
        {"path", std::move(path)},
        {"buckets", std::move(buckets)},
        {"budgets", std::move(budgets)},
        {"concurrency", std::move(concurrency)},
    });
  }
  doc["prices"] = Json::array();
  for (const auto& [pattern, price] : config.prices) {
    doc["prices"].push_back({{"model", pattern},
                             {"input", price.input},
                             {"output", price.output},
                             {"cache_write", price.cache_write},
                             {"cache_read", price.cache_read}});
  }
  doc["cluster"] = ClusterJson(config.cluster);
  // Names come from the file and need not be valid UTF-8 (see PrintJson).
  absl::FPrintF(stdout, "%s\n", doc.dump(2, ' ', false, Json::error_handler_t::replace));
}

int RunConfig(const Command& cmd) {
  if (cmd.args[0] != "check") {
    return UsageError(
        *cmd.verb, absl::StrCat("unknown config verb '", cmd.args[0], "'; the one verb is check"));
  }
  absl::StatusOr<LimitsConfig> config = LoadLimitsConfig(cmd.args[1]);
  if (!config.ok()) return Fail(cmd, config.status());
  const EffectiveLimits limits(*config);
  if (absl::GetFlag(FLAGS_json)) {
    PrintConfigJson(limits);
  } else {
    PrintConfigText(limits);
  }
  return kExitOk;
}

constexpr absl::string_view kConfigFlags[] = {"json"};
constexpr absl::string_view kConfigArgs[] = {"check", "FILE"};

const Verb kConfigVerb = {
    .order = 40,
    .name = "config",
    .usage = "config check FILE [--json]",
    .summary = "check a limits file and show the limits it sets",
    .description =
        "Parses and validates the limits file FILE (TOML; see examples/seed-limits.toml)\n"
        "and prints the effective limits: every provider model class bucket after\n"
        "headroom, every scope's buckets, budgets and concurrency cap, each scope's\n"
        "path to its root, and the [cluster] table's Redis and settings (the password's\n"
        "variable by name: the password is never read or shown). Exits 0 when the file\n"
        "is valid, 1 with the first error as FILE:LINE:COLUMN: KEY: message otherwise.\n"
        "Touches no segment and no Redis.",
    .flags = kConfigFlags,
    .required = {},
    .args = kConfigArgs,
    .run = RunConfig,
};
SLUICE_VERB(kConfigVerb);

}  // namespace
}  // namespace sluice
