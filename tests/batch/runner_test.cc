// The batch runner over a sender that answers at once on the test thread, on
// a fake clock, with no network: what it sends (only the lines without a
// final result, with their custom_id header), what it writes, how it counts,
// and that a stop token stops it and a later run resumes after it.
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/batch.h"
#include "sluice/limits.h"
#include "sluice/store.h"
#include "tests/batch/batch_test_util.h"

namespace sluice {
namespace batch {
namespace {

using ::sluice::batch_test::AnthropicLine;
using ::sluice::batch_test::Lines;
using ::sluice::batch_test::ReadResults;
using ::sluice::batch_test::WriteFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kSec = 1'000'000'000;

// Client::Run's contract, on the test thread: holds up to max_in_flight
// requests, and answers the newest first (so that results come back out of
// the order pulled), a second of fake time apart.
class FakeSender {
 public:
  explicit FakeSender(FakeClock* clock) : clock_(clock) {}

  Runner::Send send() {
    return [this](const std::function<bool(CallRequest*)>& next, int max_in_flight,
                  const std::function<void(size_t, CallResult)>& done) {
      std::deque<size_t> held;
      bool more = true;
      while (true) {
        while (more && static_cast<int>(held.size()) < max_in_flight) {
          CallRequest request;
          if (!next(&request)) {
            more = false;
            break;
          }
          held.push_back(sent_.size());
          sent_.push_back(std::move(request));
          max_held_ = std::max(max_held_, held.size());
        }
        if (held.empty()) return;
        clock_->Advance(kSec);
        const size_t index = held.back();
        held.pop_back();
        done(index, answer_(sent_[index]));
      }
    };
  }

  // The custom_id header of each request sent, in the order pulled.
  std::vector<std::string> SentIds() const {
    std::vector<std::string> ids;
    for (const CallRequest& r : sent_) {
      EXPECT_EQ(r.headers.size(), 1u);
      EXPECT_EQ(r.headers[0].first, kCustomIdHeader);
      ids.push_back(r.headers[0].second);
    }
    return ids;
  }
  const std::vector<CallRequest>& sent() const { return sent_; }
  size_t max_held() const { return max_held_; }
  void set_answer(std::function<CallResult(const CallRequest&)> answer) {
    answer_ = std::move(answer);
  }

 private:
  FakeClock* clock_;
  std::vector<CallRequest> sent_;
  size_t max_held_ = 0;
  std::function<CallResult(const CallRequest&)> answer_ = [](const CallRequest&) {
    CallResult r;
    r.attempts = 1;
    r.response = {{"type", "message"}};
    return r;
  };
};

class RunnerTest : public ::testing::Test {
 protected:
  RunnerTest() : clock_(1000 * kSec), sender_(&clock_) {
    options_.input = dir_.Path("in.jsonl");
    options_.results = dir_.Path("out.jsonl");
    options_.clock = Clock::Fake(&clock_);
  }

  std::unique_ptr<Runner> Open() {
    absl::StatusOr<std::unique_ptr<Runner>> runner = Runner::Open(options_);
    EXPECT_TRUE(runner.ok()) << runner.status();
    return runner.ok() ? *std::move(runner) : nullptr;
  }

  batch_test::ScratchDir dir_;
  FakeClock clock_;
  FakeSender sender_;
  RunnerOptions options_;
};

std::string Result(int line, int id, const std::string& status) {
  return nlohmann::json{{"line", line}, {"custom_id", absl::StrCat("req-", id)}, {"status", status}}
             .dump() +
         "\n";
}

TEST_F(RunnerTest, SendsOnlyTheLinesWithoutAFinalResultAndAnswersInvalidOnesAtOnce) {
  std::string text = Lines(6, AnthropicLine);
  text.replace(text.find(AnthropicLine(2)), AnthropicLine(2).size(), "{broken");
  WriteFile(options_.input, text);
  // Lines 1 and 2 done; line 5's last result failed.
  WriteFile(options_.results,
            Result(1, 0, "succeeded") + Result(2, 1, "succeeded") + Result(5, 4, "failed"));
  options_.retry_failed = true;
  options_.max_in_flight = 2;
  std::unique_ptr<Runner> runner = Open();
  ASSERT_NE(runner, nullptr);

  std::vector<size_t> answered;
  std::vector<size_t> finished;
  Callbacks callbacks;
  callbacks.on_result = [&](const InputLine& line, const CallResult& r) {
    EXPECT_TRUE(r.status.ok());
    answered.push_back(line.number);
  };
  callbacks.on_progress = [&](const Progress& p) { finished.push_back(p.finished()); };
  absl::StatusOr<Progress> progress = runner->Run(sender_.send(), callbacks);
  ASSERT_TRUE(progress.ok()) << progress.status();

  EXPECT_THAT(sender_.SentIds(), ElementsAre("req-3", "req-4", "req-5"));
  EXPECT_LE(sender_.max_held(), 2u);
  for (const CallRequest& r : sender_.sent()) {
    EXPECT_EQ(r.scope, "");  // the client's
    EXPECT_EQ(r.body["model"], "claude-sonnet-4");
    EXPECT_EQ(r.body["max_tokens"], 16);
  }
  EXPECT_THAT(answered, ElementsAre(5, 6, 4));  // newest first
  EXPECT_THAT(finished, ElementsAre(2, 3, 4));  // the invalid line counts first

  EXPECT_EQ(progress->total, 6u);
  EXPECT_EQ(progress->already_done, 2u);
  EXPECT_EQ(progress->retried, 1u);
  EXPECT_EQ(progress->this_run, 4u);
  EXPECT_EQ(progress->invalid, 1u);
  EXPECT_EQ(progress->calls.succeeded, 3u);
  EXPECT_EQ(progress->done(), 6u);
  EXPECT_FALSE(progress->stopped);
  // First request pulled at the start, last answer three fake seconds on.
  EXPECT_EQ(progress->sent_elapsed, absl::Seconds(3));

  const std::vector<nlohmann::json> results = ReadResults(options_.results);
  ASSERT_EQ(results.size(), 7u);
  EXPECT_EQ(results[3]["line"], 3);
  EXPECT_EQ(results[3]["status"], "invalid");
  EXPECT_THAT(results[3]["error"]["message"].get<std::string>(), HasSubstr("in.jsonl:3: not JSON"));
  for (size_t i = 4; i < 7; ++i) {
    EXPECT_EQ(results[i]["status"], "succeeded");
    EXPECT_EQ(results[i]["custom_id"], absl::StrCat("req-", results[i]["line"].get<int>() - 1));
  }
}

TEST_F(RunnerTest, AFailedLineIsFinalWithoutRetryFailed) {
  WriteFile(options_.input, Lines(3, AnthropicLine));
  WriteFile(options_.results, Result(2, 1, "failed"));
  std::unique_ptr<Runner> runner = Open();
  ASSERT_NE(runner, nullptr);
  absl::StatusOr<Progress> progress = runner->Run(sender_.send());
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_THAT(sender_.SentIds(), ElementsAre("req-0", "req-2"));
  EXPECT_EQ(progress->retried, 0u);
  EXPECT_EQ(progress->this_run, 2u);
}

TEST_F(RunnerTest, FailuresAreWrittenAndCountedByClass) {
  WriteFile(options_.input, Lines(3, AnthropicLine));
  sender_.set_answer([](const CallRequest& request) {
    CallResult r;
    r.attempts = 1;
    if (request.headers[0].second == "req-1") r.status = absl::DeadlineExceededError("waited");
    return r;
  });
  std::unique_ptr<Runner> runner = Open();
  ASSERT_NE(runner, nullptr);
  absl::StatusOr<Progress> progress = runner->Run(sender_.send());
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_EQ(progress->calls.succeeded, 2u);
  EXPECT_EQ(progress->calls.failed_by_class.at("throttle_timeout"), 1u);
  int failed = 0;
  for (const nlohmann::json& r : ReadResults(options_.results)) {
    if (r["status"] != "failed") continue;
    ++failed;
    EXPECT_EQ(r["custom_id"], "req-1");
    EXPECT_EQ(r["error"]["class"], "throttle_timeout");
  }
  EXPECT_EQ(failed, 1);
}

// A stop pulls no further request; the one still held finishes and is
// written; a later Runner on the same files sends exactly the rest.
TEST_F(RunnerTest, AStopEndsTheRunAndALaterRunResumesAfterIt) {
  WriteFile(options_.input, Lines(10, AnthropicLine));
  options_.max_in_flight = 2;
  std::stop_source stop;
  Callbacks callbacks;
  int answered = 0;
  callbacks.on_result = [&](const InputLine&, const CallResult&) {
    if (++answered == 3) stop.request_stop();
  };
  std::unique_ptr<Runner> runner = Open();
  ASSERT_NE(runner, nullptr);
  absl::StatusOr<Progress> progress = runner->Run(sender_.send(), callbacks, stop.get_token());
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_TRUE(progress->stopped);
  // Three answered, then the one in flight at the stop; nothing pulled after.
  EXPECT_EQ(sender_.sent().size(), 4u);
  EXPECT_EQ(progress->calls.finished(), 4u);
  EXPECT_EQ(ReadResults(options_.results).size(), 4u);
  const std::vector<std::string> first = sender_.SentIds();
  runner.reset();  // releases the results file's lock

  FakeSender again(&clock_);
  runner = Open();
  ASSERT_NE(runner, nullptr);
  EXPECT_EQ(runner->resume().done_count, 4u);
  progress = runner->Run(again.send());
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_FALSE(progress->stopped);
  EXPECT_EQ(progress->already_done, 4u);
  EXPECT_EQ(progress->this_run, 6u);
  std::set<std::string> ids(first.begin(), first.end());
  for (const std::string& id : again.SentIds()) {
    EXPECT_TRUE(ids.insert(id).second) << id << " sent twice";
  }
  EXPECT_EQ(ids.size(), 10u);
  EXPECT_EQ(ReadResults(options_.results).size(), 10u);
}

TEST_F(RunnerTest, AStopBeforeTheRunAnswersNothing) {
  WriteFile(options_.input, Lines(3, AnthropicLine) + "{bad\n");
  std::stop_source stop;
  stop.request_stop();
  std::unique_ptr<Runner> runner = Open();
  ASSERT_NE(runner, nullptr);
  absl::StatusOr<Progress> progress = runner->Run(sender_.send(), {}, stop.get_token());
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_TRUE(progress->stopped);
  EXPECT_EQ(progress->finished(), 0u);
  EXPECT_TRUE(sender_.sent().empty());
  EXPECT_EQ(batch_test::ReadFile(options_.results), "");
}

TEST_F(RunnerTest, ARunnerRunsOnce) {
  WriteFile(options_.input, Lines(2, AnthropicLine));
  std::unique_ptr<Runner> runner = Open();
  ASSERT_NE(runner, nullptr);
  ASSERT_TRUE(runner->Run(sender_.send()).ok());
  EXPECT_EQ(runner->Run(sender_.send()).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sender_.sent().size(), 2u);
}

TEST_F(RunnerTest, OpenFailsOnBadOptionsAMissingInputAndALockedResultsFile) {
  WriteFile(options_.input, Lines(2, AnthropicLine));
  options_.max_in_flight = 0;
  EXPECT_EQ(Runner::Open(options_).status().code(), absl::StatusCode::kInvalidArgument);
  options_.max_in_flight = 4;
  std::unique_ptr<Runner> holder = Open();
  ASSERT_NE(holder, nullptr);
  EXPECT_THAT(Runner::Open(options_).status().message(), HasSubstr("in use by another"));
  options_.input = dir_.Path("missing.jsonl");
  EXPECT_EQ(Runner::Open(options_).status().code(), absl::StatusCode::kNotFound);
}

// A budget without a price for the model cannot route any line: the check
// says so before anything is sent. Lines already done are not checked.
TEST_F(RunnerTest, CheckRoutesRefusesAConfigThatCannotRouteTheLinesToSend) {
  WriteFile(options_.input, Lines(2, AnthropicLine));
  auto store = NewLocalStore(Clock::Fake(&clock_));
  absl::StatusOr<LimitsConfig> budget =
      ParseLimitsConfig("[scopes.global]\nusd_per_day = 5.0\n", "budget.toml");
  ASSERT_TRUE(budget.ok()) << budget.status();
  absl::StatusOr<std::unique_ptr<Policy>> policy = Policy::Create(*budget, store.get());
  ASSERT_TRUE(policy.ok()) << policy.status();
  {
    std::unique_ptr<Runner> runner = Open();
    ASSERT_NE(runner, nullptr);
    const absl::Status s = runner->CheckRoutes(**policy, "global");
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(s.message(), HasSubstr("[prices]"));
  }
  WriteFile(options_.results, Result(1, 0, "succeeded") + Result(2, 1, "succeeded"));
  std::unique_ptr<Runner> done = Open();
  ASSERT_NE(done, nullptr);
  EXPECT_TRUE(done->CheckRoutes(**policy, "global").ok());

  absl::StatusOr<LimitsConfig> plain = ParseLimitsConfig(
      "[providers.anthropic]\nrequests_per_minute = 60\n[scopes.global]\n", "plain.toml");
  ASSERT_TRUE(plain.ok()) << plain.status();
  auto plain_store = NewLocalStore(Clock::Fake(&clock_));
  absl::StatusOr<std::unique_ptr<Policy>> plain_policy = Policy::Create(*plain, plain_store.get());
  ASSERT_TRUE(plain_policy.ok()) << plain_policy.status();
  done.reset();
  WriteFile(options_.results, "");
  std::unique_ptr<Runner> fresh = Open();
  ASSERT_NE(fresh, nullptr);
  EXPECT_TRUE(fresh->CheckRoutes(**plain_policy, "global").ok());
}

}  // namespace
}  // namespace batch
}  // namespace sluice
