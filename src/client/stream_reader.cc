#include "src/client/stream_reader.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace sluice {
namespace {

// The usage object `usage` as the provider's whole reply would carry it,
// read (and clamped) by ParseReply.
std::optional<Usage> ReadUsage(Provider provider, const nlohmann::json& usage) {
  if (!usage.is_object()) return std::nullopt;
  nlohmann::json reply = {{"usage", usage}};
  if (provider == Provider::kAnthropic) {
    reply["content"] = nlohmann::json::array();
  } else {
    reply["choices"] = {{{"message", {{"content", ""}}}}};
  }
  std::optional<Reply> parsed = ParseReply(provider, reply);
  if (!parsed) return std::nullopt;
  return parsed->usage;
}

}  // namespace

void StreamReader::Feed(absl::string_view chunk) {
  while (!chunk.empty()) {
    const size_t end = chunk.find('\n');
    const absl::string_view piece = chunk.substr(0, end);
    if (!skipping_ && partial_.size() + piece.size() <= kMaxLine) {
      partial_.append(piece.data(), piece.size());
    } else {
      skipping_ = true;
      partial_.clear();
    }
    if (end == absl::string_view::npos) return;
    if (!skipping_) Line(absl::StripSuffix(partial_, "\r"));
    partial_.clear();
    skipping_ = false;
    chunk.remove_prefix(end + 1);
  }
}

void StreamReader::Line(absl::string_view line) {
  if (!absl::ConsumePrefix(&line, "data:")) return;
  absl::ConsumePrefix(&line, " ");
  if (line == "[DONE]") return;
  const nlohmann::json data = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!data.is_object()) return;
  if (data.contains("error")) {
    if (error_.empty()) error_ = std::string(line);
    return;
  }
  if (provider_ == Provider::kOpenAi) {
    if (auto usage = ReadUsage(provider_, data.value("usage", nlohmann::json()))) usage_ = usage;
    return;
  }
  const std::string type = data.value("type", "");
  if (type == "message_start" && data.contains("message") && data["message"].is_object()) {
    if (auto usage = ReadUsage(provider_, data["message"].value("usage", nlohmann::json()))) {
      usage_ = usage;
    }
  } else if (type == "message_delta") {
    const nlohmann::json& delta_usage = data.value("usage", nlohmann::json());
    if (auto usage = ReadUsage(provider_, delta_usage)) {
      Usage merged = usage_.value_or(Usage{});
      // Cumulative counts: the output so far, and (newer API versions) the
      // input side again; never lower than what message_start said.
      merged.output_tokens = std::max(merged.output_tokens, usage->output_tokens);
      merged.input_tokens = std::max(merged.input_tokens, usage->input_tokens);
      merged.cache_creation_input_tokens =
          std::max(merged.cache_creation_input_tokens, usage->cache_creation_input_tokens);
      merged.cache_read_input_tokens =
          std::max(merged.cache_read_input_tokens, usage->cache_read_input_tokens);
      usage_ = merged;
    }
  }
}

}  // namespace sluice
