// Bucket keys: the factories, the format, the parser and the name rules
// that both the parser and the limits file apply.

#include "sluice/bucket_key.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace sluice {
namespace {

constexpr absl::string_view kProviderPrefix = "provider:";
constexpr absl::string_view kScopePrefix = "scope:";
constexpr absl::string_view kUsdDay = "usd_day";
constexpr absl::string_view kUsdMonth = "usd_month";
constexpr absl::string_view kConcurrency = "concurrency";

bool HasSpaceOrControl(absl::string_view name) {
  return std::any_of(name.begin(), name.end(),
                     [](char c) { return absl::ascii_isspace(c) || absl::ascii_iscntrl(c); });
}

std::optional<LimitKind> LimitKindOfSuffix(absl::string_view suffix) {
  for (LimitKind kind : kAllLimitKinds) {
    if (LimitKindSuffix(kind) == suffix) return kind;
  }
  return std::nullopt;
}

absl::string_view PartName(BucketKey::Part part) {
  switch (part) {
    case BucketKey::Part::kProvider:
      return "provider";
    case BucketKey::Part::kModelClass:
      return "model class";
    case BucketKey::Part::kScope:
      return "scope";
    case BucketKey::Part::kAccount:
      return "account";
  }
  return "name";
}

}  // namespace

BucketKey BucketKey::ProviderLimit(absl::string_view provider, absl::string_view model_class,
                                   LimitKind kind, absl::string_view account) {
  BucketKey key;
  key.owner_ = Owner::kProvider;
  key.provider_ = std::string(provider);
  key.model_class_ = std::string(model_class);
  key.account_ = std::string(account);
  key.limit_kind_ = kind;
  return key;
}

BucketKey BucketKey::ScopeLimit(absl::string_view scope, LimitKind kind) {
  BucketKey key = ScopeConcurrency(scope);
  key.limit_kind_ = kind;
  return key;
}

BucketKey BucketKey::ScopeBudget(absl::string_view scope, BudgetPeriod period) {
  BucketKey key = ScopeConcurrency(scope);
  key.budget_period_ = period;
  return key;
}

BucketKey BucketKey::ScopeConcurrency(absl::string_view scope) {
  BucketKey key;
  key.owner_ = Owner::kScope;
  key.scope_ = std::string(scope);
  return key;
}

absl::Status BucketKey::ValidateName(Part part, absl::string_view name) {
  const absl::string_view what = PartName(part);
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " name is empty"));
  if (part == Part::kAccount) {
    const bool lower_alnum = std::all_of(name.begin(), name.end(), [](char c) {
      return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'z');
    });
    if (!lower_alnum || name.size() > kMaxAccountLength) {
      return absl::InvalidArgumentError(
          absl::StrCat("account name must be 1 to ", kMaxAccountLength, " characters of [0-9a-z]"));
    }
    return absl::OkStatus();
  }
  // '@' separates a provider from its account in a key.
  if (part == Part::kProvider && absl::StrContains(name, '@')) {
    return absl::InvalidArgumentError(
        "provider name must not hold '@' (it names a provider account in bucket keys)");
  }
  if (part != Part::kScope) {
    if (absl::StrContains(name, ':') || HasSpaceOrControl(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " name must not hold ':', spaces or control characters"));
    }
    return absl::OkStatus();
  }
  // Scope names are ':'-separated paths ("team:marketing:campaign-7"), which
  // ResolveScope falls back along: no part may be empty.
  if (HasSpaceOrControl(name)) {
    return absl::InvalidArgumentError("scope name must not hold spaces or control characters");
  }
  if (absl::StartsWith(name, ":") || absl::EndsWith(name, ":") || absl::StrContains(name, "::")) {
    return absl::InvalidArgumentError("scope name has an empty ':'-separated part");
  }
  return absl::OkStatus();
}

absl::StatusOr<BucketKey> BucketKey::Parse(absl::string_view text) {
  auto bad = [text](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("bucket key \"", text, "\": ", why));
  };
  auto check = [&](Part part, absl::string_view name) -> absl::Status {
    absl::Status s = ValidateName(part, name);
    return s.ok() ? s : bad(s.message());
  };
  absl::string_view rest = text;
  if (absl::ConsumePrefix(&rest, kProviderPrefix)) {
    const std::vector<absl::string_view> parts = absl::StrSplit(rest, ':');
    if (parts.size() != 3) {
      return bad(
          absl::StrCat("a provider key has 3 parts after \"provider:\" (provider, model "
                       "class, kind), this one has ",
                       parts.size()));
    }
    // "anthropic" or "anthropic@<account>".
    const std::pair<absl::string_view, absl::string_view> owner =
        absl::StrSplit(parts[0], absl::MaxSplits('@', 1));
    if (absl::Status s = check(Part::kProvider, owner.first); !s.ok()) return s;
    if (absl::StrContains(parts[0], '@')) {
      if (absl::Status s = check(Part::kAccount, owner.second); !s.ok()) return s;
    }
    if (absl::Status s = check(Part::kModelClass, parts[1]); !s.ok()) return s;
    const std::optional<LimitKind> kind = LimitKindOfSuffix(parts[2]);
    if (!kind) {
      return bad(absl::StrCat("unknown kind \"", parts[2],
                              "\" for a provider key; expected rpm, itpm, otpm, tpm or tpd"));
    }
    return ProviderLimit(owner.first, parts[1], *kind, owner.second);
  }
  if (!absl::ConsumePrefix(&rest, kScopePrefix)) {
    return bad("does not start with \"provider:\" or \"scope:\"");
  }
  const size_t colon = rest.rfind(':');
  if (colon == absl::string_view::npos) {
    return bad("a scope key is \"scope:<scope>:<kind>\"; this one has no kind");
  }
  const absl::string_view scope = rest.substr(0, colon);
  const absl::string_view suffix = rest.substr(colon + 1);
  if (absl::Status s = check(Part::kScope, scope); !s.ok()) return s;
  if (const std::optional<LimitKind> kind = LimitKindOfSuffix(suffix)) {
    return ScopeLimit(scope, *kind);
  }
  if (suffix == kUsdDay) return ScopeBudget(scope, BudgetPeriod::kDay);
  if (suffix == kUsdMonth) return ScopeBudget(scope, BudgetPeriod::kMonth);
  if (suffix == kConcurrency) return ScopeConcurrency(scope);
  return bad(absl::StrCat("unknown kind \"", suffix,
                          "\" for a scope key; expected rpm, itpm, otpm, tpm, tpd, usd_day, "
                          "usd_month or concurrency"));
}

// "anthropic" or "anthropic@<account>".
std::string BucketKey::ProviderPart() const {
  return account_.empty() ? provider_ : absl::StrCat(provider_, "@", account_);
}

std::string BucketKey::OwnerName() const {
  return owner_ == Owner::kProvider ? absl::StrCat(ProviderPart(), "/", model_class_) : scope_;
}

absl::string_view BucketKey::suffix() const {
  if (limit_kind_) return LimitKindSuffix(*limit_kind_);
  if (budget_period_) return *budget_period_ == BudgetPeriod::kDay ? kUsdDay : kUsdMonth;
  return kConcurrency;
}

std::string BucketKey::ToString() const {
  if (owner_ == Owner::kProvider) {
    return absl::StrCat(kProviderPrefix, ProviderPart(), ":", model_class_, ":", suffix());
  }
  return absl::StrCat(kScopePrefix, scope_, ":", suffix());
}

}  // namespace sluice
