// StreamReader: reads a streamed (server-sent events) response body as it
// goes past, for what the client must know at its end without keeping it:
// the usage to settle the request's permits with, and an error event that
// arrived after the 200.
//
//   * Anthropic: `message_start` carries the input side (input_tokens and
//     the cache fields), `message_delta` the cumulative output_tokens.
//   * OpenAI: the chunk with a `usage` object (sent when the request asked
//     for stream_options.include_usage).
//   * Either: a data line whose JSON has an `error` object (Anthropic's
//     `event: error`, OpenAI's streamed {"error": ...}).
// Each event's data is one line, as both providers send them; other fields
// (event:, id:, comments) are skipped. Token counts are read through
// ParseReply, so they are clamped as a whole reply's would be.
//
// Thread safety: a StreamReader belongs to one request on one thread.
// Internal to the client.
#ifndef SLUICE_SRC_CLIENT_STREAM_READER_H_
#define SLUICE_SRC_CLIENT_STREAM_READER_H_

#include <cstddef>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "sluice/policy.h"
#include "sluice/provider.h"

namespace sluice {

class StreamReader {
 public:
  explicit StreamReader(Provider provider) : provider_(provider) {}

  // The next piece of the body, split anywhere.
  void Feed(absl::string_view chunk);

  // The usage the events reported so far; nullopt when none did.
  const std::optional<Usage>& usage() const { return usage_; }
  // The first error event's data (JSON text); empty when there was none.
  const std::string& error() const { return error_; }

 private:
  // A line longer than this is not an event either provider sends: it is
  // skipped rather than held.
  static constexpr size_t kMaxLine = 1 << 20;

  void Line(absl::string_view line);

  const Provider provider_;
  std::string partial_;    // the current line, up to kMaxLine
  bool skipping_ = false;  // the current line passed kMaxLine
  std::optional<Usage> usage_;
  std::string error_;
};

}  // namespace sluice

#endif  // SLUICE_SRC_CLIENT_STREAM_READER_H_
