#include "tools/fake_provider/chat_body.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace sluice {
namespace fake_provider_internal {
namespace {

// ordered_json keeps fields in the order the providers send them.
using Json = nlohmann::ordered_json;

// Request bodies nested deeper than this are refused. A chat body needs
// about 6 levels; without a cap a 4 MiB body of "[[[[..." would build a
// tree of millions of nodes before failing.
constexpr int kMaxJsonDepth = 64;

BadRequest Missing(std::string param) {
  return {std::move(param), "Field required", "missing_required_parameter"};
}

BadRequest WrongType(std::string param, absl::string_view expected) {
  return {std::move(param), absl::StrCat("Input should be ", expected), "invalid_type"};
}

// Adds the UTF-8 bytes of a content value (a string, or an array of parts
// whose "text" counts) to *bytes. Parts without text (images, tool calls)
// count nothing: the simulation counts text only.
std::optional<BadRequest> AddContentBytes(const Json& content, const std::string& param,
                                          uint64_t* bytes) {
  if (content.is_string()) {
    *bytes += content.get_ref<const std::string&>().size();
    return std::nullopt;
  }
  if (!content.is_array()) return WrongType(param, "a valid string or list of content blocks");
  for (size_t i = 0; i < content.size(); ++i) {
    const Json& part = content[i];
    if (!part.is_object()) return WrongType(absl::StrCat(param, ".", i), "a valid object");
    const auto text = part.find("text");
    if (text == part.end()) continue;
    if (!text->is_string()) {
      return WrongType(absl::StrCat(param, ".", i, ".text"), "a valid string");
    }
    *bytes += text->get_ref<const std::string&>().size();
  }
  return std::nullopt;
}

// Reads an optional integer field that must be >= 1. Absent (or null): 0.
std::optional<BadRequest> ReadMaxTokens(const Json& body, const char* field, uint64_t* out) {
  const auto it = body.find(field);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer()) return WrongType(field, "a valid integer");
  if (!it->is_number_unsigned() || it->get<uint64_t>() == 0) {
    return BadRequest{field, "Input should be greater than or equal to 1",
                      "integer_below_min_value"};
  }
  *out = it->get<uint64_t>();
  return std::nullopt;
}

// Reads an optional boolean field; absent or null leaves *out alone.
std::optional<BadRequest> ReadBool(const Json& object, const char* field, std::string param,
                                   bool* out) {
  const auto it = object.find(field);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) return WrongType(std::move(param), "a valid boolean");
  *out = it->get<bool>();
  return std::nullopt;
}

// "stream" and OpenAI's "stream_options": {"include_usage": ...}.
std::optional<BadRequest> ReadStream(const Json& body, ChatRequest* out) {
  out->stream = false;
  out->include_usage = false;
  if (auto bad = ReadBool(body, "stream", "stream", &out->stream)) return bad;
  const auto options = body.find("stream_options");
  if (options == body.end() || options->is_null()) return std::nullopt;
  if (!options->is_object()) return WrongType("stream_options", "a valid dictionary");
  return ReadBool(*options, "include_usage", "stream_options.include_usage", &out->include_usage);
}

// Parses a request body: a JSON object, nested at most kMaxJsonDepth deep.
std::optional<BadRequest> ParseObject(const std::string& text, Json* body) {
  bool too_deep = false;
  *body = Json::parse(
      text,
      [&too_deep](int depth, Json::parse_event_t, Json&) {
        if (depth <= kMaxJsonDepth) return true;
        too_deep = true;
        return false;  // keep nothing below the cap
      },
      /*allow_exceptions=*/false);
  if (too_deep) {
    return BadRequest{
        "", absl::StrCat("the body is nested more than ", kMaxJsonDepth, " levels deep"), ""};
  }
  if (body->is_discarded()) return BadRequest{"", "the body is not valid JSON", ""};
  if (!body->is_object()) return BadRequest{"", "the body must be a JSON object", ""};
  return std::nullopt;
}

std::optional<BadRequest> ReadModel(const Json& body, ChatRequest* out) {
  const auto model = body.find("model");
  if (model == body.end()) return Missing("model");
  if (!model->is_string()) return WrongType("model", "a valid string");
  out->model = model->get<std::string>();
  return std::nullopt;
}

// What every body that generates text starts with: a JSON object, its
// model and whether it streams.
std::optional<BadRequest> ReadGeneration(const std::string& text, Json* body, ChatRequest* out) {
  if (auto bad = ParseObject(text, body)) return bad;
  if (auto bad = ReadModel(*body, out)) return bad;
  return ReadStream(*body, out);
}

// Sets out->max_tokens, or names `param` when it is over the model's limit.
std::optional<BadRequest> CheckMaxTokens(uint64_t max_tokens, const char* param,
                                         const FakeProviderOptions& options, ChatRequest* out) {
  if (max_tokens > options.max_output_tokens) {
    return BadRequest{
        param,
        absl::StrCat(max_tokens, " > ", options.max_output_tokens,
                     ", which is the maximum allowed number of output tokens for ", out->model),
        "invalid_value"};
  }
  out->max_tokens = max_tokens;
  return std::nullopt;
}

// (B + 3) / 4: the token count of B bytes of text.
uint64_t TokensOf(uint64_t bytes) { return (bytes + 3) / 4; }

}  // namespace

// Validates a chat body and counts its input tokens (see the header). On a
// bad body, returns what is wrong; `*out` is then unspecified.
std::optional<BadRequest> ParseChat(const std::string& text, const BodyRules& rules,
                                    const FakeProviderOptions& options, ChatRequest* out) {
  Json body;
  if (auto bad = ReadGeneration(text, &body, out)) return bad;

  uint64_t max_tokens = 0;
  if (rules.max_tokens_required) {
    if (!body.contains("max_tokens")) return Missing("max_tokens");
    if (auto bad = ReadMaxTokens(body, "max_tokens", &max_tokens)) return bad;
    if (max_tokens == 0) return WrongType("max_tokens", "a valid integer");  // it was null
  } else {
    // max_completion_tokens replaced max_tokens; the newer name wins.
    if (auto bad = ReadMaxTokens(body, "max_tokens", &max_tokens)) return bad;
    if (auto bad = ReadMaxTokens(body, "max_completion_tokens", &max_tokens)) return bad;
    if (max_tokens == 0) max_tokens = options.default_max_tokens;
  }
  if (auto bad = CheckMaxTokens(max_tokens, "max_tokens", options, out)) return bad;

  uint64_t bytes = 0;
  if (rules.system_field) {
    const auto system = body.find("system");
    if (system != body.end() && !system->is_null()) {
      if (auto bad = AddContentBytes(*system, "system", &bytes)) return bad;
    }
  }
  const auto messages = body.find("messages");
  if (messages == body.end()) return Missing("messages");
  if (!messages->is_array()) return WrongType("messages", "a valid list");
  if (messages->empty()) {
    return BadRequest{"messages", "at least one message is required", "empty_array"};
  }
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& message = (*messages)[i];
    const std::string param = absl::StrCat("messages.", i);
    if (!message.is_object()) return WrongType(param, "a valid object");
    const auto role = message.find("role");
    if (role == message.end()) return Missing(param + ".role");
    if (!role->is_string()) return WrongType(param + ".role", "a valid string");
    const auto content = message.find("content");
    if (content == message.end() || content->is_null()) {
      if (rules.null_content_ok) continue;
      return Missing(param + ".content");
    }
    if (auto bad = AddContentBytes(*content, param + ".content", &bytes)) return bad;
  }
  out->input_tokens = TokensOf(bytes) + 4 * uint64_t{messages->size()};
  return std::nullopt;
}

// Responses: "input" is a string (one message) or a list of messages whose
// content is a string or a list of parts with text; "instructions" counts
// as a system prompt; "max_output_tokens" is optional.
std::optional<BadRequest> ParseResponses(const std::string& text,
                                         const FakeProviderOptions& options, ChatRequest* out) {
  Json body;
  if (auto bad = ReadGeneration(text, &body, out)) return bad;
  uint64_t max_tokens = 0;
  if (auto bad = ReadMaxTokens(body, "max_output_tokens", &max_tokens)) return bad;
  if (max_tokens == 0) max_tokens = options.default_max_tokens;
  if (auto bad = CheckMaxTokens(max_tokens, "max_output_tokens", options, out)) return bad;

  uint64_t bytes = 0;
  const auto instructions = body.find("instructions");
  if (instructions != body.end() && !instructions->is_null()) {
    if (!instructions->is_string()) return WrongType("instructions", "a valid string");
    bytes += instructions->get_ref<const std::string&>().size();
  }
  const auto input = body.find("input");
  if (input == body.end()) return Missing("input");
  uint64_t messages = 1;
  if (input->is_array()) {
    messages = input->size();
    for (size_t i = 0; i < input->size(); ++i) {
      const Json& item = (*input)[i];
      const std::string param = absl::StrCat("input.", i);
      if (!item.is_object()) return WrongType(param, "a valid object");
      const auto content = item.find("content");
      if (content == item.end()) return Missing(param + ".content");
      if (auto bad = AddContentBytes(*content, param + ".content", &bytes)) return bad;
    }
  } else if (auto bad = AddContentBytes(*input, "input", &bytes)) {
    return bad;
  }
  out->input_tokens = TokensOf(bytes) + 4 * messages;
  return std::nullopt;
}

// Embeddings: "input" is a string or a list of strings, each counted on its
// own; nothing is generated.
std::optional<BadRequest> ParseEmbeddings(const std::string& text, ChatRequest* out) {
  Json body;
  if (auto bad = ParseObject(text, &body)) return bad;
  if (auto bad = ReadModel(body, out)) return bad;
  const auto input = body.find("input");
  if (input == body.end()) return Missing("input");
  const Json inputs = input->is_array() ? *input : Json::array({*input});
  if (inputs.empty()) return BadRequest{"input", "at least one input is required", "empty_array"};
  out->input_tokens = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].is_string()) {
      return WrongType(input->is_array() ? absl::StrCat("input.", i) : "input", "a valid string");
    }
    out->input_tokens += TokensOf(inputs[i].get_ref<const std::string&>().size());
  }
  out->embeddings = inputs.size();
  out->max_tokens = 0;
  out->stream = false;
  return std::nullopt;
}

std::string ReplyText(uint64_t words) {
  std::string text;
  text.reserve(words * 4);
  for (uint64_t i = 0; i < words; ++i) text.append(i == 0 ? "tok" : " tok");
  return text;
}

std::vector<std::string> ReplyTextPieces(uint64_t words) {
  constexpr uint64_t kWordsPerPiece = 4;
  std::vector<std::string> pieces;
  std::string piece;
  for (uint64_t i = 0; i < words; ++i) {
    piece.append(i == 0 ? "tok" : " tok");
    if ((i + 1) % kWordsPerPiece == 0 || i + 1 == words) {
      pieces.push_back(std::move(piece));
      piece.clear();
    }
  }
  return pieces;
}

}  // namespace fake_provider_internal
}  // namespace sluice
