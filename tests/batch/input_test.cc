// The batch input: each line of both shapes on its own (ParseLine) and the
// file as a whole (ParseInput, ReadInput): errors name the file, the line and
// the field.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/batch_input.h"
#include "tests/batch/batch_test_util.h"

namespace sluice {
namespace batch {
namespace {

using ::sluice::batch_test::AnthropicLine;
using ::sluice::batch_test::OpenAiLine;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(ParseLineTest, AnthropicLineGivesItsParamsAsTheBody) {
  const ParsedLine p = ParseLine(AnthropicLine(7));
  EXPECT_EQ(p.error, "");
  EXPECT_EQ(p.custom_id, "req-7");
  EXPECT_EQ(p.shape, Provider::kAnthropic);
  EXPECT_EQ(p.body["model"], "claude-sonnet-4");
  EXPECT_EQ(p.body["max_tokens"], 16);
}

TEST(ParseLineTest, OpenAiLineGivesItsBody) {
  const ParsedLine p = ParseLine(OpenAiLine(3));
  EXPECT_EQ(p.error, "");
  EXPECT_EQ(p.custom_id, "req-3");
  EXPECT_EQ(p.shape, Provider::kOpenAi);
  EXPECT_EQ(p.body["model"], "gpt-4o");
  // method and url may be left out; max_tokens is not required.
  const ParsedLine bare =
      ParseLine(R"({"custom_id": "a", "body": {"model": "gpt-4o", "messages": []}})");
  EXPECT_EQ(bare.error, "");
  EXPECT_EQ(bare.shape, Provider::kOpenAi);
}

// Each error names the field; the custom_id and shape are read even then.
TEST(ParseLineTest, ErrorsNameTheField) {
  struct Case {
    std::string line;
    std::string error;  // a prefix of the expected error
  };
  const Case cases[] = {
      {"{not json", "not JSON: "},
      {"", "not JSON: "},
      {"[1, 2]", "a request line must be a JSON object"},
      {R"({"custom_id": "a", "params": {}, "extra": 1})", "extra: unknown field"},
      {R"({"params": {"model": "m", "max_tokens": 5, "messages": []}})",
       "custom_id: must be a non-empty string"},
      {R"({"custom_id": "", "params": {}})", "custom_id: must be a non-empty string"},
      {R"({"custom_id": 5, "params": {}})", "custom_id: must be a non-empty string"},
      {R"({"custom_id": "a"})", "params (Anthropic) or body (OpenAI): missing"},
      {R"({"custom_id": "a", "params": {}, "body": {}})",
       "both params (Anthropic) and body (OpenAI): give one"},
      {R"({"custom_id": "a", "method": "GET", "body": {}})", "method: must be \"POST\""},
      {R"({"custom_id": "a", "url": "/v1/embeddings", "body": {}})",
       "url: must be \"/v1/chat/completions\""},
      {R"({"custom_id": "a", "params": []})", "params: must be a JSON object"},
      {R"({"custom_id": "a", "params": {"messages": []}})",
       "params.model: must be a non-empty string"},
      {R"({"custom_id": "a", "body": {"model": "", "messages": []}})",
       "body.model: must be a non-empty string"},
      {R"({"custom_id": "a", "body": {"model": "m"}})", "body.messages: must be an array"},
      {R"({"custom_id": "a", "params": {"model": "m", "messages": []}})",
       "params.max_tokens: must be a positive integer"},
      {R"({"custom_id": "a", "params": {"model": "m", "messages": [], "max_tokens": 0}})",
       "params.max_tokens: must be a positive integer"},
      {R"({"custom_id": "a", "params": {"model": "m", "messages": [], "max_tokens": -3}})",
       "params.max_tokens: must be a positive integer"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.line);
    const ParsedLine p = ParseLine(c.line);
    EXPECT_THAT(p.error, StartsWith(c.error));
    EXPECT_TRUE(p.body.is_null());
  }
  const ParsedLine p = ParseLine(R"({"custom_id": "x", "params": {"model": "m", "messages": []}})");
  EXPECT_EQ(p.custom_id, "x");
  EXPECT_EQ(p.shape, Provider::kAnthropic);
}

// A number too large for a double makes the JSON parser throw out_of_range,
// not parse_error: it is a bad line like any other, not a crash.
TEST(ParseLineTest, ANumberPastADoubleIsABadLine) {
  const ParsedLine p = ParseLine(R"({"custom_id": "a", "params": {"max_tokens": 2e999}})");
  EXPECT_THAT(p.error, HasSubstr("not JSON"));
  EXPECT_THAT(p.error, HasSubstr("2e999"));
}

TEST(ParseInputTest, LinesAreNumberedFromOneAcrossEndings) {
  // CRLF endings, an empty line, and a last line without a newline.
  const Input input = ParseInput(AnthropicLine(0) + "\r\n\n" + AnthropicLine(2), "in.jsonl");
  ASSERT_EQ(input.size(), 3u);
  EXPECT_EQ(input.path(), "in.jsonl");
  EXPECT_EQ(input.provider(), Provider::kAnthropic);
  EXPECT_EQ(input.lines()[0].number, 1u);
  EXPECT_TRUE(input.lines()[0].valid());
  EXPECT_EQ(input.Text(input.lines()[0]), AnthropicLine(0));
  EXPECT_FALSE(input.lines()[1].valid());
  EXPECT_THAT(input.Error(input.lines()[1]), StartsWith("in.jsonl:2: not JSON"));
  EXPECT_EQ(input.lines()[2].custom_id, "req-2");
  EXPECT_EQ(input.Body(input.lines()[2])["max_tokens"], 16);
  EXPECT_EQ(ParseInput("", "empty.jsonl").size(), 0u);
}

TEST(ParseInputTest, RepeatedCustomIdIsInvalidAfterItsFirstLine) {
  const Input input =
      ParseInput(batch_test::Lines(3, AnthropicLine) + AnthropicLine(1) + "\n", "in.jsonl");
  ASSERT_EQ(input.size(), 4u);
  EXPECT_TRUE(input.lines()[1].valid());
  EXPECT_EQ(input.Error(input.lines()[3]), "in.jsonl:4: custom_id: 'req-1' repeats line 2");
}

TEST(ParseInputTest, TheFirstValidLineSetsTheProviderAndTheOtherShapeIsInvalid) {
  const Input input =
      ParseInput("{bad\n" + OpenAiLine(1) + "\n" + AnthropicLine(2) + "\n", "in.jsonl");
  EXPECT_EQ(input.provider(), Provider::kOpenAi);
  EXPECT_EQ(input.Error(input.lines()[2]),
            "in.jsonl:3: an Anthropic line (params) in a batch for openai (the shape of its "
            "first valid line)");
}

TEST(ParseInputTest, AProviderAskedForMakesTheOtherShapeInvalid) {
  const Input input =
      ParseInput(OpenAiLine(0) + "\n" + AnthropicLine(1) + "\n", "in.jsonl", Provider::kAnthropic);
  EXPECT_EQ(input.provider(), Provider::kAnthropic);
  EXPECT_THAT(input.Error(input.lines()[0]),
              HasSubstr("an OpenAI line (body) in a batch for anthropic (the provider asked for)"));
  EXPECT_TRUE(input.lines()[1].valid());
}

TEST(ParseInputTest, NoValidLineMeansAnthropic) {
  EXPECT_EQ(ParseInput("{}\n", "in.jsonl").provider(), Provider::kAnthropic);
}

TEST(ReadInputTest, ReadsTheFileAndNamesAMissingOne) {
  batch_test::ScratchDir dir;
  batch_test::WriteFile(dir.Path("in.jsonl"), batch_test::Lines(2, OpenAiLine));
  absl::StatusOr<Input> input = ReadInput(dir.Path("in.jsonl"));
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_EQ(input->size(), 2u);
  EXPECT_EQ(input->path(), dir.Path("in.jsonl"));
  absl::StatusOr<Input> missing = ReadInput(dir.Path("missing.jsonl"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("missing.jsonl"));
}

}  // namespace
}  // namespace batch
}  // namespace sluice
