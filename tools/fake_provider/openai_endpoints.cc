#include "tools/fake_provider/openai_endpoints.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "tools/fake_provider/chat_body.h"

namespace sluice {
namespace fake_provider_internal {
namespace {

// The numbers of an embedding: fixed, as nothing reads their meaning.
constexpr int kEmbeddingSize = 8;

// The Responses API's response object: in progress (no output yet, no
// usage) or finished with `output_tokens` words.
Json Response(const ChatRequest& chat, std::optional<uint64_t> output_tokens,
              absl::string_view reply_id, absl::Time now) {
  const bool done = output_tokens.has_value();
  const bool ran_out = done && *output_tokens == chat.max_tokens;
  Json output = Json::array();
  if (done) {
    output.push_back({{"type", "message"},
                      {"id", absl::StrCat("msg_", reply_id.substr(5))},
                      {"status", "completed"},
                      {"role", "assistant"},
                      {"content", Json::array({{{"type", "output_text"},
                                                {"text", ReplyText(*output_tokens)},
                                                {"annotations", Json::array()}}})}});
  }
  Json usage = nullptr;
  if (done) {
    usage = {{"input_tokens", chat.input_tokens},
             {"input_tokens_details", {{"cached_tokens", 0}}},
             {"output_tokens", *output_tokens},
             {"output_tokens_details", {{"reasoning_tokens", 0}}},
             {"total_tokens", chat.input_tokens + *output_tokens}};
  }
  return {{"id", reply_id},
          {"object", "response"},
          {"created_at", absl::ToUnixSeconds(now)},
          {"status", !done     ? "in_progress"
                     : ran_out ? "incomplete"
                               : "completed"},
          {"incomplete_details", ran_out ? Json({{"reason", "max_output_tokens"}}) : Json(nullptr)},
          {"model", chat.model},
          {"output", std::move(output)},
          {"max_output_tokens", chat.max_tokens},
          {"usage", std::move(usage)}};
}

}  // namespace

std::optional<Reply> OpenAiResponsesDialect::ParseBody(const std::string& body,
                                                       const FakeProviderOptions& options,
                                                       absl::string_view, ChatRequest* out) const {
  return BadBody(ParseResponses(body, options, out));
}

std::string OpenAiResponsesDialect::ReplyBody(const ChatRequest& chat, uint64_t output_tokens,
                                              absl::string_view reply_id, absl::Time now) const {
  return Dump(Response(chat, output_tokens, reply_id, now));
}

std::vector<std::string> OpenAiResponsesDialect::StreamEvents(const ChatRequest& chat,
                                                              uint64_t output_tokens,
                                                              absl::string_view reply_id,
                                                              absl::Time now) const {
  std::vector<std::string> events;
  const auto event = [&events](absl::string_view type, Json data) {
    Json head = {{"type", type}, {"sequence_number", events.size()}};
    head.update(data);
    events.push_back(absl::StrCat("event: ", type, "\ndata: ", Dump(head), "\n\n"));
  };
  event("response.created", {{"response", Response(chat, std::nullopt, reply_id, now)}});
  const std::string item_id = absl::StrCat("msg_", reply_id.substr(5));
  for (std::string& text : ReplyTextPieces(output_tokens)) {
    event("response.output_text.delta", {{"item_id", item_id},
                                         {"output_index", 0},
                                         {"content_index", 0},
                                         {"delta", std::move(text)}});
  }
  event("response.completed", {{"response", Response(chat, output_tokens, reply_id, now)}});
  return events;
}

std::optional<Reply> OpenAiEmbeddingsDialect::ParseBody(const std::string& body,
                                                        const FakeProviderOptions&,
                                                        absl::string_view, ChatRequest* out) const {
  return BadBody(ParseEmbeddings(body, out));
}

std::string OpenAiEmbeddingsDialect::ReplyBody(const ChatRequest& chat, uint64_t, absl::string_view,
                                               absl::Time) const {
  Json data = Json::array();
  for (uint64_t i = 0; i < chat.embeddings; ++i) {
    data.push_back({{"object", "embedding"},
                    {"index", i},
                    {"embedding", std::vector<double>(kEmbeddingSize, 0.125)}});
  }
  return Dump(
      {{"object", "list"},
       {"data", std::move(data)},
       {"model", chat.model},
       {"usage", {{"prompt_tokens", chat.input_tokens}, {"total_tokens", chat.input_tokens}}}});
}

std::vector<std::string> OpenAiEmbeddingsDialect::StreamEvents(const ChatRequest& chat,
                                                               uint64_t output_tokens,
                                                               absl::string_view reply_id,
                                                               absl::Time now) const {
  return {ReplyBody(chat, output_tokens, reply_id, now)};
}

}  // namespace fake_provider_internal
}  // namespace sluice
