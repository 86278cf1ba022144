// The proxy's log line, as text and as JSON.

#include "src/proxy/request_log.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace sluice {
namespace proxy_internal {
namespace {

RequestRecord Record() {
  RequestRecord r;
  r.at = absl::FromUnixMillis(1764504000123);  // 2025-11-30T12:00:00.123Z
  r.method = "POST";
  r.path = "/v1/messages";
  r.provider = "anthropic";
  r.scope = "team:a";
  r.priority = "high";
  r.status = 200;
  r.outcome = "ok";
  r.queued = absl::Microseconds(1250);
  r.total = absl::Milliseconds(340);
  r.input_tokens = 12;
  r.output_tokens = 40;
  r.attempts = 1;
  r.request_id = "req_1";
  return r;
}

TEST(RequestLogTest, TextLine) {
  EXPECT_EQ(FormatRecord(Record(), /*json=*/false),
            "2025-11-30T12:00:00.123Z POST /v1/messages anthropic scope=team:a priority=high "
            "status=200 outcome=ok queued_ms=1.2 total_ms=340.0 in=12 out=40 attempts=1 "
            "request_id=req_1");
  RequestRecord pass = Record();
  pass.scope.clear();
  pass.request_id.clear();
  EXPECT_THAT(FormatRecord(pass, false), ::testing::Not(::testing::HasSubstr("scope=")));
}

TEST(RequestLogTest, JsonLine) {
  const nlohmann::json line = nlohmann::json::parse(FormatRecord(Record(), /*json=*/true));
  EXPECT_EQ(line["time"], "2025-11-30T12:00:00.123Z");
  EXPECT_EQ(line["scope"], "team:a");
  EXPECT_EQ(line["priority"], "high");
  EXPECT_EQ(line["status"], 200);
  EXPECT_EQ(line["outcome"], "ok");
  EXPECT_DOUBLE_EQ(line["queued_ms"].get<double>(), 1.25);
  EXPECT_EQ(line["output_tokens"], 40);
  EXPECT_EQ(line["request_id"], "req_1");
  // A path that is not UTF-8 still makes a line.
  RequestRecord odd = Record();
  odd.path = "/v1/\xff";
  EXPECT_NO_THROW(nlohmann::json::parse(FormatRecord(odd, true)));
}

}  // namespace
}  // namespace proxy_internal
}  // namespace sluice
