// File: bucket_key.h
// -----------------------------------------------------------------------------
// The name under which the policy keeps one bucket, USD budget or
// concurrency cap in a store, formatted and parsed in one place:
//
//   provider:<provider>:<model class>:<kind>   provider:anthropic:default:rpm
//   provider:<provider>@<account>:<class>:<kind>
//                                   provider:anthropic@3f2a9c0d1e4b5a68:default:itpm
//   scope:<scope>:<kind>                       scope:team:marketing:usd_day
//
// <kind> is a limit kind's suffix ("rpm", "itpm", "otpm", "tpm", "tpd"; see
// LimitKindSuffix), "usd_day" or "usd_month" for a scope's budget, or
// "concurrency" for a scope's cap. Provider and model class names hold no
// ':'; a scope name may (it is a ':'-separated path such as
// "team:marketing"), so a scope key's kind is the part after its last ':'.
// Names hold no spaces or control characters. The default model class (models
// no [models] table matches) is named "default".
//
// A provider key may name a provider account (one API key's own buckets, see
// Policy::Resolve): 1 to 32 characters of [0-9a-z] after an '@', which is why
// provider names hold no '@'.
//
// Keys written by anything other than the policy ("anthropic:itpm" from
// `sluice acquire --key`) do not parse; readers such as the stats group them
// by their own rules.
//
// Thread safety: BucketKey is a plain value; the functions are pure.
//
// Example:
//   const BucketKey key = BucketKey::ProviderLimit("anthropic", "default",
//                                                  LimitKind::kRequestsPerMinute);
//   key.ToString();  // "provider:anthropic:default:rpm"
//   absl::StatusOr<BucketKey> back = BucketKey::Parse("scope:team:marketing:usd_day");
//   back->scope();          // "team:marketing"
//   back->budget_period();  // BudgetPeriod::kDay

#ifndef SLUICE_BUCKET_KEY_H_
#define SLUICE_BUCKET_KEY_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sluice/limits.h"

namespace sluice {

class BucketKey {
 public:
  // The longest provider account name.
  static constexpr size_t kMaxAccountLength = 32;

  // Who a key belongs to.
  enum class Owner : uint8_t { kProvider, kScope };
  // The parts of a key that carry a name, for ValidateName.
  enum class Part : uint8_t { kProvider, kModelClass, kScope, kAccount };

  // A provider model class's bucket of `kind`; with a non-empty `account`,
  // that provider account's bucket of it.
  static BucketKey ProviderLimit(absl::string_view provider, absl::string_view model_class,
                                 LimitKind kind, absl::string_view account = "");
  // A scope's bucket of `kind`, its USD budget per `period`, its concurrency cap.
  static BucketKey ScopeLimit(absl::string_view scope, LimitKind kind);
  static BucketKey ScopeBudget(absl::string_view scope, BudgetPeriod period);
  static BucketKey ScopeConcurrency(absl::string_view scope);

  // Parse()
  //
  // The key `text` names. InvalidArgument, quoting the text and saying what is
  // wrong, when it does not start with "provider:" or "scope:", has the wrong
  // number of parts, names an unknown kind (or a budget or cap for a
  // provider), or has a name ValidateName refuses. Parse(k.ToString()) == k
  // for every key made by the factories above from valid names.
  static absl::StatusOr<BucketKey> Parse(absl::string_view text);

  // ValidateName()
  //
  // OK when `name` can stand as `part` of a key; otherwise InvalidArgument
  // saying why, e.g. "provider name must not hold ':', spaces or control
  // characters" or "scope name has an empty ':'-separated part". The limits
  // parser refuses the same names with the same words. An account is 1 to
  // kMaxAccountLength characters of [0-9a-z].
  static absl::Status ValidateName(Part part, absl::string_view name);

  Owner owner() const { return owner_; }
  // The provider and model class of a provider key ("" for a scope key).
  const std::string& provider() const { return provider_; }
  const std::string& model_class() const { return model_class_; }
  // The provider account of a provider key ("" for none, and for a scope key).
  const std::string& account() const { return account_; }
  // The scope of a scope key ("" for a provider key).
  const std::string& scope() const { return scope_; }
  // "provider/class" ("provider@account/class" with an account) for a
  // provider key, the scope name for a scope key: how BucketSpec::owner and
  // the stats name the key's group.
  std::string OwnerName() const;

  // What the key holds: exactly one of these is set.
  std::optional<LimitKind> limit_kind() const { return limit_kind_; }
  std::optional<BudgetPeriod> budget_period() const { return budget_period_; }
  bool is_concurrency() const { return !limit_kind_ && !budget_period_; }
  // The last part of the key: "rpm", ..., "usd_day", "usd_month", "concurrency".
  absl::string_view suffix() const;

  // The key as stored: "provider:P:C:KIND", "provider:P@A:C:KIND" or
  // "scope:S:KIND".
  std::string ToString() const;

  friend bool operator==(const BucketKey& a, const BucketKey& b) {
    return a.owner_ == b.owner_ && a.provider_ == b.provider_ && a.model_class_ == b.model_class_ &&
           a.account_ == b.account_ && a.scope_ == b.scope_ && a.limit_kind_ == b.limit_kind_ &&
           a.budget_period_ == b.budget_period_;
  }
  friend bool operator!=(const BucketKey& a, const BucketKey& b) { return !(a == b); }

 private:
  BucketKey() = default;
  std::string ProviderPart() const;

  Owner owner_ = Owner::kScope;
  std::string provider_;
  std::string model_class_;
  std::string account_;
  std::string scope_;
  std::optional<LimitKind> limit_kind_;
  std::optional<BudgetPeriod> budget_period_;
};

}  // namespace sluice

#endif  // SLUICE_BUCKET_KEY_H_
