// libFuzzer target for the batch input parser: the input as one line
// (ParseLine) and as a whole file (ParseInput), and the result line an
// invalid line gets. Whatever the bytes, parsing never crashes or throws, a
// line it accepts has what the runner sends (a body with a model, messages
// and, for Anthropic, max_tokens), every refusal names the file and line, and
// the result lines serialize. Seeds: tests/fuzz/corpus/batch_input.
#include <cstdint>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "sluice/batch_input.h"
#include "sluice/batch_result.h"

namespace {

// A line the parser accepts is one the runner can send.
void CheckAccepted(const sluice::batch::ParsedLine& p) {
  if (p.custom_id.empty() || !p.shape || !p.body.is_object()) __builtin_trap();
  if (!p.body.contains("model") || !p.body["model"].is_string()) __builtin_trap();
  if (p.body["model"].get_ref<const std::string&>().empty()) __builtin_trap();
  if (!p.body.contains("messages") || !p.body["messages"].is_array()) __builtin_trap();
  if (*p.shape == sluice::Provider::kAnthropic &&
      (!p.body["max_tokens"].is_number_unsigned() || p.body["max_tokens"].get<uint64_t>() == 0)) {
    __builtin_trap();
  }
}

void CheckLine(absl::string_view text) {
  const sluice::batch::ParsedLine p = sluice::batch::ParseLine(text);
  if (p.error.empty()) {
    CheckAccepted(p);
  } else if (!p.body.is_null()) {
    __builtin_trap();  // a refused line gives no body to send
  }
}

void CheckInput(const sluice::batch::Input& input) {
  std::set<std::string> ids;
  size_t number = 0;
  for (const sluice::batch::InputLine& line : input.lines()) {
    if (line.number != ++number) __builtin_trap();
    const absl::string_view text = input.Text(line);
    if (text.find('\n') != absl::string_view::npos) __builtin_trap();
    if (line.valid()) {
      if (line.shape != input.provider()) __builtin_trap();
      if (!ids.insert(line.custom_id).second) __builtin_trap();  // repeats are invalid
      sluice::batch::ParsedLine again = sluice::batch::ParseLine(text);
      again.custom_id = line.custom_id;
      again.body = input.Body(line);
      CheckAccepted(again);
    } else {
      const std::string prefix = absl::StrCat("fuzz.jsonl:", line.number, ": ");
      if (input.Error(line).rfind(prefix, 0) != 0) __builtin_trap();
      // The journal writes with replacement of invalid UTF-8: never throws.
      sluice::batch::InvalidResultLine(input, line)
          .dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  CheckLine(text);
  CheckInput(sluice::batch::ParseInput(std::string(text), "fuzz.jsonl"));
  CheckInput(sluice::batch::ParseInput(std::string(text), "fuzz.jsonl", sluice::Provider::kOpenAi));
  return 0;
}
