// What the client reads from a request body to estimate it: the prompt text
// and max_tokens, for every endpoint shape the proxy throttles.

#include "src/client/wire_request.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace sluice {
namespace {

nlohmann::json Json(const char* text) { return nlohmann::json::parse(text); }

TEST(WireRequestTest, PromptTextOfEveryShape) {
  EXPECT_EQ(PromptText(Json(R"({"system":"S","messages":[{"role":"user","content":"a"},
      {"role":"user","content":[{"type":"text","text":"b"},{"type":"image"}]}]})")),
            "Sab");
  // Responses: instructions and input as a string or as messages.
  EXPECT_EQ(PromptText(Json(R"({"instructions":"I","input":"hello"})")), "Ihello");
  EXPECT_EQ(PromptText(Json(R"({"input":[{"role":"user","content":"x"},
      {"role":"user","content":[{"type":"input_text","text":"y"}]}]})")),
            "xy");
  // Embeddings: a string or a list of strings.
  EXPECT_EQ(PromptText(Json(R"({"input":["one","two"]})")), "onetwo");
  EXPECT_EQ(PromptText(Json("null")), "");
  EXPECT_EQ(PromptText(Json("[1,2]")), "");
}

TEST(WireRequestTest, MaxTokensUnderEachName) {
  EXPECT_EQ(MaxTokens(Json(R"({"max_tokens":5})")), 5u);
  EXPECT_EQ(MaxTokens(Json(R"({"max_completion_tokens":6})")), 6u);
  EXPECT_EQ(MaxTokens(Json(R"({"max_output_tokens":7})")), 7u);
  EXPECT_EQ(MaxTokens(Json(R"({"max_tokens":-1})")), 0u);
  EXPECT_EQ(MaxTokens(Json("null")), 0u);
}

}  // namespace
}  // namespace sluice
