// Redis URLs: what is accepted, its defaults, and each refusal, which names
// the URL and what is wrong but never repeats a password.

#include "sluice/redis_url.h"

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sluice {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

RedisEndpoint Parsed(absl::string_view url) {
  absl::StatusOr<RedisEndpoint> endpoint = ParseRedisUrl(url);
  EXPECT_TRUE(endpoint.ok()) << url << ": " << endpoint.status();
  return endpoint.value_or(RedisEndpoint{});
}

std::string ErrorOf(absl::string_view url) {
  absl::StatusOr<RedisEndpoint> endpoint = ParseRedisUrl(url);
  if (endpoint.ok()) return "(parsed without error)";
  EXPECT_EQ(endpoint.status().code(), absl::StatusCode::kInvalidArgument) << endpoint.status();
  return std::string(endpoint.status().message());
}

TEST(RedisUrlTest, ReadsHostPortAndDb) {
  EXPECT_EQ(Parsed("redis://127.0.0.1:6379/0"),
            (RedisEndpoint{.host = "127.0.0.1", .port = 6379, .db = 0}));
  EXPECT_EQ(Parsed("redis://cache.internal:6380/15"),
            (RedisEndpoint{.host = "cache.internal", .port = 6380, .db = 15}));
  EXPECT_EQ(Parsed("redis://h:1/2147483646"),
            (RedisEndpoint{.host = "h", .port = 1, .db = kMaxRedisDb}));
  EXPECT_EQ(Parsed("redis://h:65535/0").port, 65535);
  EXPECT_EQ(Parsed("REDIS://h:7000/3"), (RedisEndpoint{.host = "h", .port = 7000, .db = 3}));
}

TEST(RedisUrlTest, DefaultsArePort6379AndDb0) {
  const RedisEndpoint expected = {.host = "localhost", .port = 6379, .db = 0};
  EXPECT_EQ(Parsed("redis://localhost"), expected);
  EXPECT_EQ(Parsed("redis://localhost/"), expected);
  EXPECT_EQ(Parsed("redis://localhost:"), expected);
  EXPECT_EQ(Parsed("redis://localhost:6379"), expected);
  EXPECT_EQ(RedisEndpoint{}.port, kDefaultRedisPort);
}

TEST(RedisUrlTest, Ipv6AddressesLoseTheirBrackets) {
  EXPECT_EQ(Parsed("redis://[::1]:6380/1"), (RedisEndpoint{.host = "::1", .port = 6380, .db = 1}));
  EXPECT_EQ(Parsed("redis://[2001:db8::7]").host, "2001:db8::7");
}

TEST(RedisUrlTest, ToStringWritesEveryPartAndParsesBack) {
  EXPECT_EQ(Parsed("redis://h").ToString(), "redis://h:6379/0");
  EXPECT_EQ(Parsed("redis://[::1]:7/9").ToString(), "redis://[::1]:7/9");
  for (absl::string_view url : {"redis://127.0.0.1:6379/0", "redis://[2001:db8::7]:1/2147483646",
                                "redis://cache.internal:65535/15"}) {
    const RedisEndpoint endpoint = Parsed(url);
    EXPECT_EQ(endpoint.ToString(), url);
    EXPECT_EQ(Parsed(endpoint.ToString()), endpoint);
  }
}

TEST(RedisUrlTest, RefusesOtherSchemesAndShapes) {
  EXPECT_EQ(ErrorOf("http://h:6379/0"),
            "redis URL \"http://h:6379/0\": the scheme must be redis, not http; write "
            "redis://HOST[:PORT][/DB]");
  EXPECT_THAT(ErrorOf("rediss://h/0"), HasSubstr("TLS (rediss://) is not supported"));
  EXPECT_THAT(ErrorOf("unix:///run/redis.sock"), HasSubstr("the scheme must be redis, not unix"));
  EXPECT_THAT(ErrorOf(""), StartsWith("redis URL is empty"));
  EXPECT_THAT(ErrorOf("localhost:6379"),
              StartsWith("redis URL \"localhost:6379\": is not a URL ("));
  EXPECT_THAT(ErrorOf("127.0.0.1:6379"), StartsWith("redis URL \"127.0.0.1:6379\": "));
  EXPECT_THAT(ErrorOf(" redis://h"), HasSubstr("is not a URL"));
  EXPECT_THAT(ErrorOf("redis://h st/0"), HasSubstr("is not a URL"));
  // curl would read these as hosts "h" and "0".
  EXPECT_THAT(ErrorOf("redis:/h/0"), HasSubstr("the host must follow redis:// directly"));
  EXPECT_THAT(ErrorOf("redis:///0"), HasSubstr("the host must follow redis:// directly"));
  EXPECT_THAT(ErrorOf("redis://:6379/0"), HasSubstr("No host"));
  EXPECT_THAT(ErrorOf("redis://[fe80::1%25eth0]:6379/0"), HasSubstr("zone id"));
  EXPECT_THAT(ErrorOf(std::string("redis://h\0x/0", 13)), HasSubstr("holds a NUL byte"));
  EXPECT_EQ(ErrorOf(std::string(1025, 'a')),
            "the redis URL (not repeated: it may hold a password): is longer than 1024 bytes");
}

// curl percent-decodes a host: "127.0.%%%379" would reach hiredis as
// "127.0.%%79", which formats back to a URL that reads "127.0.%y" (found by
// limits_fuzz). A host holds letters, digits, '-', '.' and '_' only.
TEST(RedisUrlTest, RefusesHostsThatAreNoHostName) {
  EXPECT_EQ(ErrorOf("redis://127.0.%%%379/0"),
            "redis URL \"redis://127.0.%%%379/0\": a host name may hold letters, digits, '-', "
            "'.' and '_' only (no %-escapes); write redis://HOST[:PORT][/DB]");
  EXPECT_EQ(Parsed("redis://ca%63he/0").host, "cache");  // decoded, as a URL's host is
  EXPECT_EQ(Parsed("redis://redis_primary-1.internal/0").host, "redis_primary-1.internal");
}

TEST(RedisUrlTest, RefusesPortsOutOfRange) {
  EXPECT_EQ(ErrorOf("redis://h:0/0"),
            "redis URL \"redis://h:0/0\": the port must be 1 to 65535, "
            "got 0");
  EXPECT_THAT(ErrorOf("redis://h:65536/0"), StartsWith("redis URL \"redis://h:65536/0\": is not a "
                                                       "URL ("));
  EXPECT_THAT(ErrorOf("redis://h:-1/0"), HasSubstr("is not a URL"));
  EXPECT_THAT(ErrorOf("redis://h:x/0"), HasSubstr("is not a URL"));
}

TEST(RedisUrlTest, RefusesPathsThatAreNotOneDb) {
  for (absl::string_view url :
       {"redis://h/x", "redis://h/-1", "redis://h/+1", "redis://h/1/2", "redis://h//0",
        "redis://h/2147483647", "redis://h/99999999999", "redis://h/%30", "redis://h/0;x"}) {
    EXPECT_THAT(ErrorOf(url), AllOf(StartsWith(absl::StrCat("redis URL \"", url, "\": ")),
                                    HasSubstr("the path must be empty or /DB, a database number "
                                              "0 to 2147483646")))
        << url;
  }
}

TEST(RedisUrlTest, RefusesQueriesAndFragments) {
  EXPECT_EQ(ErrorOf("redis://h/0?db=1"),
            "redis URL \"redis://h/0?db=1\": a query (?...) is not supported");
  EXPECT_THAT(ErrorOf("redis://h/0?"), HasSubstr("a query (?...) is not supported"));
  EXPECT_EQ(ErrorOf("redis://h/0#x"),
            "redis URL \"redis://h/0#x\": a fragment (#...) is not "
            "supported");
}

TEST(RedisUrlTest, RefusesCredentialsWithoutRepeatingThem) {
  const std::string kAdvice = "set password_env to the name of an environment variable";
  for (absl::string_view url :
       {"redis://:hunter2secret@h:6379/0", "redis://alice:hunter2secret@h:6379/0",
        "redis://hunter2secret@h:6379/0", "redis://alice:hunter2secret:more@h:6379/0"}) {
    const std::string error = ErrorOf(url);
    EXPECT_THAT(error,
                AllOf(StartsWith("redis URL \"redis://h:6379/0\": holds a user or a "
                                 "password"),
                      HasSubstr(kAdvice), Not(HasSubstr("hunter2secret")), Not(HasSubstr("alice"))))
        << url;
  }
  // Credentials come first: a URL that is also wrong otherwise still says so.
  EXPECT_THAT(ErrorOf("redis://:hunter2secret@h:0/x?q"),
              AllOf(HasSubstr(kAdvice), Not(HasSubstr("hunter2secret"))));
  // A URL with an '@' that curl refuses is not repeated at all.
  for (absl::string_view url : {"redis://:hunter2@secret@h/0", "redis://:hunter2secret@h:99999/0",
                                "redis://:hunter2secret@h st/0", "redis://:hunter2secret@[::1/0"}) {
    const std::string error = ErrorOf(url);
    EXPECT_THAT(error, AllOf(StartsWith("the redis URL (not repeated: it may hold a password): "
                                        "is not a URL ("),
                             Not(HasSubstr("hunter2")), Not(HasSubstr("secret"))))
        << url;
  }
  EXPECT_THAT(ErrorOf(std::string("redis://:hunter2secret@h\0/0", 27)),
              AllOf(HasSubstr("NUL"), Not(HasSubstr("hunter2secret"))));
  EXPECT_THAT(ErrorOf("redis://:" + std::string(1100, 's') + "@h/0"),
              AllOf(HasSubstr("longer than"), Not(HasSubstr("ssss"))));
}

}  // namespace
}  // namespace sluice
