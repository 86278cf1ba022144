#include "tools/fake_provider/delivery.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "tools/fake_provider/dialect.h"

namespace sluice {
namespace fake_provider_internal {
namespace {

// What a misbehaving proxy might pass on: the text cut short and followed
// by junk.
void Spoil(std::string& text) {
  text.resize(text.size() / 2);
  text.append("<!-- upstream connection reset -->");
}

// `body` in kSlowBodyPieces pieces of about equal size.
std::vector<std::string> Split(const std::string& body) {
  const size_t size = (body.size() + kSlowBodyPieces - 1) / kSlowBodyPieces;
  std::vector<std::string> pieces;
  for (size_t at = 0; at < body.size(); at += size) pieces.push_back(body.substr(at, size));
  return pieces;
}

}  // namespace

Outgoing Deliver(Delivery delivery, bool stream, std::vector<std::string> body) {
  Outgoing out;
  if (delivery == Delivery::kReset) {
    out.reset = true;
    return out;
  }
  out.content_type = stream ? kEventStream : kJson;
  if (!stream) {
    // One body: join defensively, though a JSON reply is one piece.
    std::string whole = absl::StrJoin(body, "");
    out.content_length = whole.size();
    body = {std::move(whole)};
  }
  switch (delivery) {
    case Delivery::kTruncated:
      // A stream too goes out under a content-length for all of it, so that
      // the server closes the connection, unmistakably short, once the half
      // is out (a chunked body would have to be cut mid-write).
      if (stream) {
        uint64_t length = 0;
        for (const std::string& event : body) length += event.size();
        out.content_length = length;
        body.resize(body.size() / 2);
      } else {
        body[0].resize(body[0].size() / 2);
      }
      out.cut_short = true;
      break;
    case Delivery::kMalformed:
      Spoil(body[body.size() / 2]);
      if (!stream) out.content_length = body[0].size();
      break;
    case Delivery::kSlow:
      if (!stream) body = Split(body[0]);
      out.pause = kSlowBody / std::max<size_t>(body.size(), 1);
      break;
    case Delivery::kWhole:
    case Delivery::kReset:
      break;
  }
  out.pieces = std::move(body);
  return out;
}

}  // namespace fake_provider_internal
}  // namespace sluice
