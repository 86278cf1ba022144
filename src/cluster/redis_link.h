// File: redis_link.h
// -----------------------------------------------------------------------------
// One connection to one Redis (hiredis, synchronous), for the cluster layer's
// scripts: every command waits at most the link's timeout, a broken
// connection is dropped and reconnected with exponential backoff and full
// jitter, and while the backoff runs commands fail at once (Unavailable)
// instead of waiting. So no caller ever waits on Redis longer than the
// timeout, whatever Redis does.
//
// Scripts are run by their SHA (EVALSHA): each is loaded once per connection
// and again if Redis answers NOSCRIPT (a restart, SCRIPT FLUSH).
//
// A password, if any, is sent with AUTH on every connect and kept nowhere
// else; it never appears in an error.
//
// Thread safety: a RedisLink is safe for concurrent use; commands are
// serialized on its one connection.

#ifndef SLUICE_SRC_CLUSTER_REDIS_LINK_H_
#define SLUICE_SRC_CLUSTER_REDIS_LINK_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/redis_buckets.h"

struct redisContext;
struct redisReply;

namespace sluice {
namespace internal_cluster {

struct RedisLinkOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 6379;
  uint32_t db = 0;
  std::string password;  // empty: no AUTH
  // The longest a connect or a command may take.
  absl::Duration timeout = absl::Milliseconds(50);
  // Reconnect backoff: full jitter over [0, min(max, base * 2^failures)).
  absl::Duration backoff_base = absl::Milliseconds(10);
  absl::Duration backoff_max = absl::Seconds(1);
};

// The link a fleet's options (sluice/redis_buckets.h) describe.
RedisLinkOptions LinkOptionsOf(const RedisBucketsOptions& options);

// A Redis reply as plain values (hiredis's is freed at once).
struct RedisValue {
  enum class Type : uint8_t { kNil, kInteger, kString, kStatus, kArray };
  Type type = Type::kNil;
  long long integer = 0;
  std::string text;  // kString, kStatus
  std::vector<RedisValue> elements;
};

class RedisLink {
 public:
  // Connects at once; Unavailable (naming host:port) when it cannot.
  static absl::StatusOr<std::unique_ptr<RedisLink>> Connect(RedisLinkOptions options);
  // Connects at the first command instead (a host that starts while Redis
  // is down still starts).
  static std::unique_ptr<RedisLink> Lazy(RedisLinkOptions options);
  ~RedisLink();
  RedisLink(const RedisLink&) = delete;
  RedisLink& operator=(const RedisLink&) = delete;

  // One command. A Redis error reply is FailedPrecondition with Redis's
  // message; a broken or timed-out connection is Unavailable (and is
  // dropped: the next command reconnects, after the backoff).
  absl::StatusOr<RedisValue> Command(const std::vector<std::string>& argv);

  // Runs `script` (Lua source) with its keys and arguments, by SHA.
  absl::StatusOr<RedisValue> Eval(absl::string_view script, const std::vector<std::string>& keys,
                                  const std::vector<std::string>& args);

  // Whether the link holds a connection now.
  bool connected() const;
  // Commands sent to Redis since the link was made (scripts loads included),
  // and connections made.
  uint64_t commands() const;
  uint64_t connects() const;
  const RedisLinkOptions& options() const { return options_; }

 private:
  explicit RedisLink(RedisLinkOptions options);
  absl::Status EnsureConnectedLocked();
  absl::StatusOr<RedisValue> CommandLocked(const std::vector<std::string>& argv);
  void DropLocked(absl::string_view why);
  std::string Where() const;

  const RedisLinkOptions options_;
  mutable std::mutex mu_;
  redisContext* context_ = nullptr;             // guarded by mu_
  absl::Time retry_at_ = absl::InfinitePast();  // guarded by mu_
  int failures_ = 0;                            // guarded by mu_
  std::string last_error_;                      // guarded by mu_
  // Script source -> SHA loaded on the current connection.
  std::vector<std::pair<std::string, std::string>> loaded_;  // guarded by mu_
  uint64_t commands_ = 0;                                    // guarded by mu_
  uint64_t connects_ = 0;                                    // guarded by mu_
  absl::BitGen rng_;                                         // guarded by mu_
};

}  // namespace internal_cluster
}  // namespace sluice

#endif  // SLUICE_SRC_CLUSTER_REDIS_LINK_H_
