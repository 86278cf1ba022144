// The results journal: one line per Append, the lock against a second batch,
// a torn last line cut off, and resuming: the last result of a line counts,
// failed ones are sent again only with retry_failed, and the results of
// another input are refused.
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sluice/batch_journal.h"
#include "tests/batch/batch_test_util.h"

namespace sluice {
namespace batch {
namespace {

using ::sluice::batch_test::ReadFile;
using ::sluice::batch_test::WriteFile;
using ::testing::HasSubstr;

std::string Result(int line, const std::string& custom_id, const std::string& status) {
  return nlohmann::ordered_json{{"line", line}, {"custom_id", custom_id}, {"status", status}}
             .dump() +
         "\n";
}

class JournalTest : public ::testing::Test {
 protected:
  JournalTest() : input_(ParseInput(batch_test::Lines(4, batch_test::AnthropicLine), "in.jsonl")) {}
  std::string Path() const { return dir_.Path("out.jsonl"); }

  batch_test::ScratchDir dir_;
  const Input input_;  // req-0 .. req-3 on lines 1 .. 4
};

TEST_F(JournalTest, ANewFileIsCreatedEmptyAndEachAppendIsOneLine) {
  absl::StatusOr<std::unique_ptr<ResultsJournal>> journal = ResultsJournal::Open(Path());
  ASSERT_TRUE(journal.ok()) << journal.status();
  EXPECT_EQ((*journal)->size(), 0u);
  EXPECT_FALSE((*journal)->dropped_torn_line());
  ASSERT_TRUE((*journal)->Append({{"line", 1}, {"custom_id", "req-0"}, {"status", "ok"}}).ok());
  ASSERT_TRUE((*journal)->Append({{"line", 2}, {"text", "a\nb"}}).ok());
  ASSERT_TRUE((*journal)->Sync().ok());
  EXPECT_EQ(ReadFile(Path()),
            "{\"line\":1,\"custom_id\":\"req-0\",\"status\":\"ok\"}\n"
            "{\"line\":2,\"text\":\"a\\nb\"}\n");
}

TEST_F(JournalTest, ASecondOpenIsRefusedWhileTheFirstHoldsTheLock) {
  absl::StatusOr<std::unique_ptr<ResultsJournal>> first = ResultsJournal::Open(Path());
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<std::unique_ptr<ResultsJournal>> second = ResultsJournal::Open(Path());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr("in use by another sluice batch"));
  first->reset();  // closing releases the lock
  EXPECT_TRUE(ResultsJournal::Open(Path()).ok());
}

TEST_F(JournalTest, ATornLastLineIsCutOff) {
  const std::string whole = Result(1, "req-0", "succeeded") + Result(2, "req-1", "succeeded");
  WriteFile(Path(), whole + R"({"line": 3, "custom_id": "re)");
  absl::StatusOr<std::unique_ptr<ResultsJournal>> journal = ResultsJournal::Open(Path());
  ASSERT_TRUE(journal.ok()) << journal.status();
  EXPECT_TRUE((*journal)->dropped_torn_line());
  EXPECT_EQ((*journal)->size(), 2u);
  EXPECT_EQ(ReadFile(Path()), whole);
  // Appends follow the last whole line.
  ASSERT_TRUE((*journal)->Append({{"line", 3}, {"custom_id", "req-2"}}).ok());
  EXPECT_EQ(ReadFile(Path()), whole + "{\"line\":3,\"custom_id\":\"req-2\"}\n");
}

TEST_F(JournalTest, AFileOfOnlyATornLineIsEmptied) {
  WriteFile(Path(), R"({"line": 1)");
  absl::StatusOr<std::unique_ptr<ResultsJournal>> journal = ResultsJournal::Open(Path());
  ASSERT_TRUE(journal.ok()) << journal.status();
  EXPECT_TRUE((*journal)->dropped_torn_line());
  EXPECT_EQ(ReadFile(Path()), "");
}

TEST_F(JournalTest, ALineThatIsNoResultIsRefusedAndTheFileLeftAlone) {
  const std::string text = Result(1, "req-0", "succeeded") + "{\"hello\": 1}\n";
  WriteFile(Path(), text);
  absl::StatusOr<std::unique_ptr<ResultsJournal>> journal = ResultsJournal::Open(Path());
  EXPECT_EQ(journal.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(journal.status().message(), HasSubstr("out.jsonl:2: not a sluice batch result line"));
  EXPECT_EQ(ReadFile(Path()), text);
}

TEST_F(JournalTest, ResumeCountsTheLastResultOfEachLine) {
  WriteFile(Path(), Result(2, "req-1", "failed") + Result(4, "req-3", "succeeded") +
                        Result(3, "req-2", "failed") + Result(2, "req-1", "succeeded"));
  absl::StatusOr<std::unique_ptr<ResultsJournal>> journal = ResultsJournal::Open(Path());
  ASSERT_TRUE(journal.ok()) << journal.status();
  absl::StatusOr<ResumePoint> resume = (*journal)->Resume(input_, /*retry_failed=*/false);
  ASSERT_TRUE(resume.ok()) << resume.status();
  EXPECT_FALSE(resume->IsDone(1));
  EXPECT_TRUE(resume->IsDone(2));
  EXPECT_TRUE(resume->IsDone(3));  // failed is final without retry_failed
  EXPECT_TRUE(resume->IsDone(4));
  EXPECT_FALSE(resume->IsDone(5));  // beyond the input
  EXPECT_EQ(resume->done_count, 3u);
  EXPECT_EQ(resume->retried, 0u);

  // With retry_failed, line 3 (last result failed) is sent again; line 2's
  // failure was superseded by its success.
  absl::StatusOr<ResumePoint> retry = (*journal)->Resume(input_, /*retry_failed=*/true);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_TRUE(retry->IsDone(2));
  EXPECT_FALSE(retry->IsDone(3));
  EXPECT_EQ(retry->done_count, 2u);
  EXPECT_EQ(retry->retried, 1u);
}

TEST_F(JournalTest, ResultsOfAnotherInputAreRefused) {
  WriteFile(Path(), Result(1, "req-0", "succeeded") + Result(2, "other-2", "succeeded"));
  absl::StatusOr<std::unique_ptr<ResultsJournal>> journal = ResultsJournal::Open(Path());
  ASSERT_TRUE(journal.ok()) << journal.status();
  absl::StatusOr<ResumePoint> resume = (*journal)->Resume(input_, false);
  EXPECT_EQ(resume.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(resume.status().message(),
              HasSubstr("out.jsonl:2: result for line 2 has custom_id 'other-2' but "
                        "in.jsonl:2 has 'req-1'"));
  journal->reset();

  WriteFile(Path(), Result(5, "req-4", "succeeded"));
  journal = ResultsJournal::Open(Path());
  ASSERT_TRUE(journal.ok()) << journal.status();
  resume = (*journal)->Resume(input_, false);
  EXPECT_THAT(resume.status().message(),
              HasSubstr("out.jsonl:1: result for line 5, but in.jsonl has 4 lines"));
  journal->reset();

  WriteFile(Path(), Result(0, "req-0", "succeeded"));
  journal = ResultsJournal::Open(Path());
  ASSERT_TRUE(journal.ok()) << journal.status();
  EXPECT_THAT((*journal)->Resume(input_, false).status().message(), HasSubstr("result for line 0"));
}

TEST_F(JournalTest, AnUnopenableFileIsAnError) {
  absl::StatusOr<std::unique_ptr<ResultsJournal>> journal =
      ResultsJournal::Open(dir_.Path("no-such-dir/out.jsonl"));
  EXPECT_EQ(journal.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(journal.status().message(), HasSubstr("no-such-dir/out.jsonl"));
}

}  // namespace
}  // namespace batch
}  // namespace sluice
