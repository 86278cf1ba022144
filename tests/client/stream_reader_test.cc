// StreamReader: usage and error events read from a streamed body, however
// the body is split into pieces.
#include "src/client/stream_reader.h"

#include <string>

#include "gtest/gtest.h"

namespace sluice {
namespace {

constexpr char kAnthropicStream[] =
    "event: message_start\r\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"content\":[],"
    "\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":3,"
    "\"cache_read_input_tokens\":7,\"output_tokens\":1}}}\r\n\r\n"
    "event: ping\ndata: {\"type\":\"ping\"}\n\n"
    "event: content_block_delta\n"
    "data: "
    "{\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
    "\"usage\":{\"output_tokens\":15}}\n\n"
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

constexpr char kOpenAiStream[] =
    "data: "
    "{\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"
    "data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,"
    "\"completion_tokens\":9,\"prompt_tokens_details\":{\"cached_tokens\":10}}}\n\n"
    "data: [DONE]\n\n";

// Feeds `body` split at every position (two pieces), and whole.
template <typename Check>
void ForEverySplit(Provider provider, const std::string& body, Check check) {
  for (size_t at = 0; at <= body.size(); ++at) {
    StreamReader reader(provider);
    reader.Feed(body.substr(0, at));
    reader.Feed(body.substr(at));
    check(reader, at);
  }
}

TEST(StreamReaderTest, AnthropicUsageComesFromMessageStartAndMessageDelta) {
  ForEverySplit(Provider::kAnthropic, kAnthropicStream, [](const StreamReader& r, size_t at) {
    ASSERT_TRUE(r.usage().has_value()) << at;
    EXPECT_EQ(r.usage()->input_tokens, 25u) << at;
    EXPECT_EQ(r.usage()->cache_creation_input_tokens, 3u) << at;
    EXPECT_EQ(r.usage()->cache_read_input_tokens, 7u) << at;
    EXPECT_EQ(r.usage()->output_tokens, 15u) << at;
    EXPECT_TRUE(r.error().empty()) << at;
  });
}

TEST(StreamReaderTest, OpenAiUsageComesFromTheUsageChunk) {
  ForEverySplit(Provider::kOpenAi, kOpenAiStream, [](const StreamReader& r, size_t at) {
    ASSERT_TRUE(r.usage().has_value()) << at;
    EXPECT_EQ(r.usage()->input_tokens, 20u) << at;  // cached ones apart
    EXPECT_EQ(r.usage()->cache_read_input_tokens, 10u) << at;
    EXPECT_EQ(r.usage()->output_tokens, 9u) << at;
  });
}

TEST(StreamReaderTest, AStreamWithoutUsageReportsNone) {
  StreamReader reader(Provider::kOpenAi);
  reader.Feed("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n");
  EXPECT_FALSE(reader.usage().has_value());
}

TEST(StreamReaderTest, AnErrorEventAfterTheStartIsKept) {
  const std::string body =
      std::string(kAnthropicStream).substr(0, 200) +
      "\n\nevent: error\n"
      "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}\n\n";
  StreamReader reader(Provider::kAnthropic);
  reader.Feed(body);
  EXPECT_EQ(reader.error(),
            "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}");
}

// A line longer than any event is skipped, not held; the next line is read.
TEST(StreamReaderTest, AnOverlongLineIsSkipped) {
  StreamReader reader(Provider::kOpenAi);
  reader.Feed("data: ");
  for (int i = 0; i < 2000; ++i) reader.Feed(std::string(1024, 'x'));
  reader.Feed("\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n");
  ASSERT_TRUE(reader.usage().has_value());
  EXPECT_EQ(reader.usage()->output_tokens, 2u);
}

}  // namespace
}  // namespace sluice
