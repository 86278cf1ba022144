// The batch input: each line read on its own, then against the others
// (sluice/batch_input.h).

#include <cstdint>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sluice/batch_input.h"
#include "src/batch/file_text.h"

namespace sluice {
namespace batch {
namespace {

std::string CheckBody(const nlohmann::json& body, absl::string_view field, Provider shape) {
  if (!body.is_object()) return absl::StrCat(field, ": must be a JSON object");
  if (!body.contains("model") || !body["model"].is_string() ||
      body["model"].get_ref<const std::string&>().empty()) {
    return absl::StrCat(field, ".model: must be a non-empty string");
  }
  if (!body.contains("messages") || !body["messages"].is_array()) {
    return absl::StrCat(field, ".messages: must be an array");
  }
  if (shape == Provider::kAnthropic &&
      (!body.contains("max_tokens") || !body["max_tokens"].is_number_unsigned() ||
       body["max_tokens"].get<uint64_t>() == 0)) {
    return absl::StrCat(field, ".max_tokens: must be a positive integer");
  }
  return "";
}

// A custom_id seen before makes the later line invalid; then, a valid line
// of the other provider's shape.
void CheckAgainstOthers(std::vector<InputLine>& lines, Provider provider, bool provider_given) {
  std::map<std::string, size_t> first_seen;
  for (InputLine& line : lines) {
    if (line.custom_id.empty()) continue;
    auto [it, inserted] = first_seen.emplace(line.custom_id, line.number);
    if (!inserted && line.valid()) {
      line.error = absl::StrCat("custom_id: '", line.custom_id, "' repeats line ", it->second);
    }
  }
  for (InputLine& line : lines) {
    if (line.valid() && line.shape && *line.shape != provider) {
      line.error = absl::StrCat(
          *line.shape == Provider::kOpenAi ? "an OpenAI line (body)" : "an Anthropic line (params)",
          " in a batch for ", ProviderName(provider),
          provider_given ? " (the provider asked for)" : " (the shape of its first valid line)");
    }
  }
}

}  // namespace

ParsedLine ParseLine(absl::string_view text) {
  ParsedLine p;
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    // parse_error, and out_of_range for a number past a double (2e999).
    p.error = absl::StrCat("not JSON: ", e.what());
    return p;
  }
  if (!doc.is_object()) {
    p.error = "a request line must be a JSON object";
    return p;
  }
  if (doc.contains("custom_id") && doc["custom_id"].is_string()) {
    p.custom_id = doc["custom_id"].get<std::string>();
  }
  for (const auto& [key, value] : doc.items()) {
    if (key != "custom_id" && key != "method" && key != "url" && key != "body" && key != "params") {
      p.error = absl::StrCat(key,
                             ": unknown field (a line has custom_id and either params, "
                             "or method, url and body)");
      return p;
    }
  }
  if (p.custom_id.empty()) {
    p.error = "custom_id: must be a non-empty string";
    return p;
  }
  const bool anthropic = doc.contains("params");
  const bool openai = doc.contains("body");
  if (anthropic == openai) {
    p.error = anthropic ? "both params (Anthropic) and body (OpenAI): give one"
                        : "params (Anthropic) or body (OpenAI): missing";
    return p;
  }
  p.shape = anthropic ? Provider::kAnthropic : Provider::kOpenAi;
  if (openai) {
    if (doc.contains("method") && doc["method"] != "POST") {
      p.error = "method: must be \"POST\"";
      return p;
    }
    if (doc.contains("url") && doc["url"] != "/v1/chat/completions") {
      p.error = "url: must be \"/v1/chat/completions\" (the one endpoint sluice batches)";
      return p;
    }
  }
  nlohmann::json& body = doc[anthropic ? "params" : "body"];
  p.error = CheckBody(body, anthropic ? "params" : "body", *p.shape);
  if (p.error.empty()) p.body = std::move(body);
  return p;
}

absl::string_view Input::Text(const InputLine& line) const {
  return absl::string_view(text_).substr(line.offset, line.size);
}

nlohmann::json Input::Body(const InputLine& line) const { return ParseLine(Text(line)).body; }

std::string Input::Error(const InputLine& line) const {
  return absl::StrCat(path_, ":", line.number, ": ", line.error);
}

Input ParseInput(std::string text, std::string path, std::optional<Provider> provider) {
  const bool given = provider.has_value();
  Input input;
  input.path_ = std::move(path);
  input.text_ = std::move(text);
  for (absl::string_view line_text : batch_internal::SplitLines(input.text_)) {
    ParsedLine parsed = ParseLine(line_text);
    InputLine line;
    line.number = input.lines_.size() + 1;
    line.custom_id = std::move(parsed.custom_id);
    line.shape = parsed.shape;
    line.error = std::move(parsed.error);
    line.offset = static_cast<size_t>(line_text.data() - input.text_.data());
    line.size = line_text.size();
    if (!provider && line.shape && line.valid()) provider = line.shape;
    input.lines_.push_back(std::move(line));
  }
  input.provider_ = provider.value_or(Provider::kAnthropic);
  CheckAgainstOthers(input.lines_, input.provider_, given);
  return input;
}

absl::StatusOr<Input> ReadInput(const std::string& path, std::optional<Provider> provider) {
  absl::StatusOr<std::string> text = batch_internal::ReadWholeFile(path);
  if (!text.ok()) return text.status();
  return ParseInput(*std::move(text), path, provider);
}

}  // namespace batch
}  // namespace sluice
