// File: batch_input.h
// -----------------------------------------------------------------------------
// The input of a batch: a JSONL file, one request a line, in either of the
// providers' batch shapes (one shape per file in practice):
//
//   OpenAI Batch API:          {"custom_id", "method": "POST",
//                               "url": "/v1/chat/completions", "body": {...}}
//   Anthropic Message Batches: {"custom_id", "params": {...}}
//
// `body` / `params` is the request body of Chat Completions / Messages: an
// object with a non-empty string `model` and an array `messages` (and, for
// Anthropic, a positive integer `max_tokens`). A line that breaks a rule is
// not an error of the file: it is an invalid line, answered in the results
// with the reason, "FILE:LINE: field: message", while the others are sent.
//
// Thread safety: the functions are thread-safe; an Input is an immutable value
// once built and may be read from any number of threads.
//
// Example:
//   absl::StatusOr<sluice::batch::Input> input =
//       sluice::batch::ReadInput("requests.jsonl");
//   if (!input.ok()) return input.status();  // unreadable: "requests.jsonl: ..."
//   for (const sluice::batch::InputLine& line : input->lines()) {
//     if (!line.valid()) std::cerr << input->Error(line) << "\n";
//   }

#ifndef SLUICE_BATCH_INPUT_H_
#define SLUICE_BATCH_INPUT_H_

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "sluice/provider.h"

namespace sluice {
namespace batch {

// ParsedLine
//
// One line read on its own. Its custom_id and shape are read even when some
// other part of it is wrong, so that an error result can name them.
struct ParsedLine {
  std::string custom_id;          // empty when the line has none (or not a string)
  std::optional<Provider> shape;  // params: Anthropic, body: OpenAI; unset when unknown
  nlohmann::json body;            // the request body; null unless `error` is empty
  std::string error;              // empty, or "field: message"
};

// ParseLine()
//
// Reads one input line (without its newline). Never fails: what is wrong with
// the line is in ParsedLine::error, naming the field as the line spells it
// ("params.max_tokens: must be a positive integer").
ParsedLine ParseLine(absl::string_view text);

// InputLine
//
// A line of an Input: what the batch needs to route, resume and answer it.
// Its body is read again when it is sent (Input::Body), so that a large
// batch holds its text once, not its text and a parsed copy.
struct InputLine {
  size_t number = 0;  // 1-based
  std::string custom_id;
  std::optional<Provider> shape;
  std::string error;  // empty, or "field: message": the line is invalid, and why
  size_t offset = 0;  // the line's text in the Input's text, in bytes
  size_t size = 0;

  bool valid() const { return error.empty(); }
};

// Input
//
// Every line of an input file, checked: each on its own (ParseLine), then
// against the others — a custom_id that repeats an earlier line's, or a
// line of the other provider's shape, is invalid.
class Input {
 public:
  const std::string& path() const { return path_; }
  // The provider every valid line is for: the one asked for, or else the
  // shape of the first valid line (Anthropic when no line is valid).
  Provider provider() const { return provider_; }
  const std::vector<InputLine>& lines() const { return lines_; }
  size_t size() const { return lines_.size(); }

  // The line's text, without its newline.
  absl::string_view Text(const InputLine& line) const;
  // The line's request body. REQUIRES: line.valid().
  nlohmann::json Body(const InputLine& line) const;
  // "PATH:NUMBER: field: message". REQUIRES: !line.valid().
  std::string Error(const InputLine& line) const;

 private:
  friend Input ParseInput(std::string text, std::string path, std::optional<Provider> provider);
  std::string path_;
  std::string text_;
  Provider provider_ = Provider::kAnthropic;
  std::vector<InputLine> lines_;
};

// ParseInput()
//
// Cuts `text` into lines ("\n" or "\r\n"; a last line without a newline
// counts) and checks each. `path` names the file in error messages.
// `provider`: the provider the batch is for (a line of the other shape is
// invalid), or nullopt to take it from the first valid line.
Input ParseInput(std::string text, std::string path,
                 std::optional<Provider> provider = std::nullopt);

// ReadInput()
//
// ParseInput() of the file at `path`. NotFound ("PATH: reason") when it
// cannot be opened, DataLoss when reading it fails.
absl::StatusOr<Input> ReadInput(const std::string& path,
                                std::optional<Provider> provider = std::nullopt);

}  // namespace batch
}  // namespace sluice

#endif  // SLUICE_BATCH_INPUT_H_
