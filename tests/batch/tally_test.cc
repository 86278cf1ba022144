// Counting finished calls (Tally) and what a result line says about one
// (FailureClass, ResultLine, InvalidResultLine).
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sluice/batch_result.h"
#include "sluice/batch_tally.h"
#include "tests/batch/batch_test_util.h"

namespace sluice {
namespace batch {
namespace {

CallResult Succeeded(int attempts, int rate_limited, absl::Duration wait) {
  CallResult r;
  r.attempts = attempts;
  r.rate_limited = rate_limited;
  r.throttle_wait = wait;
  r.response = {{"type", "message"}};
  r.usage.input_tokens = 12;
  r.usage.output_tokens = 3;
  r.request_id = "req_1";
  return r;
}

CallResult Failed(absl::Status status, ErrorClass error_class = ErrorClass::kNone) {
  CallResult r;
  r.status = std::move(status);
  r.error.error_class = error_class;
  r.attempts = 1;
  return r;
}

TEST(FailureClassTest, TheProvidersClassOrWhatTheThrottleSaid) {
  EXPECT_EQ(FailureClass(Failed(absl::UnavailableError("x"), ErrorClass::kOverloaded)),
            std::string(ErrorClassName(ErrorClass::kOverloaded)));
  EXPECT_EQ(FailureClass(Failed(absl::DeadlineExceededError("x"))), "throttle_timeout");
  EXPECT_EQ(FailureClass(Failed(absl::ResourceExhaustedError("x"))), "throttle_refused");
  EXPECT_EQ(FailureClass(Failed(absl::OutOfRangeError("x"))), "never_fits");
  EXPECT_EQ(FailureClass(Failed(absl::InternalError("x"))), "error");
}

TEST(TallyTest, CountsSuccessesFailuresRetriesAndWaits) {
  Tally tally;
  tally.Add(Succeeded(1, 0, absl::Milliseconds(250)));
  tally.Add(Succeeded(3, 2, absl::Seconds(2)));
  tally.Add(Failed(absl::DeadlineExceededError("x")));
  tally.Add(Failed(absl::DeadlineExceededError("y")));
  tally.Add(Failed(absl::OutOfRangeError("z")));
  EXPECT_EQ(tally.succeeded, 2u);
  EXPECT_EQ(tally.failed(), 3u);
  EXPECT_EQ(tally.finished(), 5u);
  EXPECT_EQ(tally.failed_by_class.at("throttle_timeout"), 2u);
  EXPECT_EQ(tally.failed_by_class.at("never_fits"), 1u);
  EXPECT_EQ(tally.rate_limited, 2u);
  EXPECT_EQ(tally.retries, 2u);
  EXPECT_EQ(tally.attempts, 7u);
  ASSERT_EQ(tally.throttle_waits.size(), 5u);
  EXPECT_EQ(tally.throttle_waits[1], absl::Seconds(2));
  const std::vector<double> simulated = tally.ThrottleWaitSeconds(60);
  EXPECT_DOUBLE_EQ(simulated[0], 15.0);
  EXPECT_DOUBLE_EQ(tally.ThrottleWaitSeconds()[1], 2.0);
}

TEST(TallyTest, ACallWithoutAttemptsCountsNoRetry) {
  Tally tally;
  tally.Add(Failed(absl::OutOfRangeError("never fits")));  // refused before sending
  CallResult unsent = Failed(absl::OutOfRangeError("never fits"));
  unsent.attempts = 0;
  tally.Add(unsent);
  EXPECT_EQ(tally.retries, 0u);
  EXPECT_EQ(tally.attempts, 1u);
}

TEST(ResultLineTest, SucceededFailedAndInvalid) {
  const Input input = ParseInput(batch_test::AnthropicLine(0) + "\n{\n", "in.jsonl");
  const nlohmann::ordered_json ok =
      ResultLine(input.lines()[0], Succeeded(2, 1, absl::Milliseconds(5)), false);
  EXPECT_EQ(ok["line"], 1);
  EXPECT_EQ(ok["custom_id"], "req-0");
  EXPECT_EQ(ok["status"], "succeeded");
  EXPECT_EQ(ok["response"]["type"], "message");
  EXPECT_FALSE(ok.contains("error"));
  EXPECT_EQ(ok["usage"]["input_tokens"], 12);
  EXPECT_EQ(ok["usage"]["cache_read_input_tokens"], 0);
  EXPECT_EQ(ok["attempts"], 2);
  EXPECT_EQ(ok["rate_limited"], 1);
  EXPECT_DOUBLE_EQ(ok["throttle_wait_ms"].get<double>(), 5.0);
  EXPECT_EQ(ok["request_id"], "req_1");
  EXPECT_FALSE(ok.contains("simulated"));

  CallResult overloaded =
      Failed(absl::UnavailableError("overloaded_error: busy"), ErrorClass::kOverloaded);
  overloaded.http_status = 529;
  overloaded.error.provider_type = "overloaded_error";
  const nlohmann::ordered_json failed = ResultLine(input.lines()[0], overloaded, true);
  EXPECT_EQ(failed["status"], "failed");
  EXPECT_FALSE(failed.contains("response"));
  EXPECT_EQ(failed["error"]["class"], std::string(ErrorClassName(ErrorClass::kOverloaded)));
  EXPECT_EQ(failed["error"]["type"], "overloaded_error");
  EXPECT_EQ(failed["error"]["http_status"], 529);
  EXPECT_EQ(failed["error"]["message"], "overloaded_error: busy");
  EXPECT_EQ(failed["simulated"], true);

  const nlohmann::ordered_json invalid = InvalidResultLine(input, input.lines()[1]);
  EXPECT_EQ(invalid["line"], 2);
  EXPECT_EQ(invalid["status"], "invalid");
  EXPECT_EQ(invalid["error"]["class"], "invalid_line");
  EXPECT_EQ(invalid["error"]["message"].get<std::string>().rfind("in.jsonl:2: not JSON", 0), 0u);
  EXPECT_FALSE(invalid.contains("usage"));
}

}  // namespace
}  // namespace batch
}  // namespace sluice
