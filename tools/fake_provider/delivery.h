// The simulated provider's delivery of an admitted reply: what goes out on
// the wire, whole or damaged by a delivery fault, as pieces to write, apart
// from the HTTP server that writes them. Internal to the simulated provider.
#ifndef SLUICE_TOOLS_FAKE_PROVIDER_DELIVERY_H_
#define SLUICE_TOOLS_FAKE_PROVIDER_DELIVERY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace sluice {
namespace fake_provider_internal {

// The faults that damage or lose an admitted request's reply.
enum class Delivery { kWhole, kReset, kTruncated, kMalformed, kSlow };

// The slow_body fault: the body goes out in this many pieces (a stream in
// its events), each after a pause, about 400 ms in all (real time:
// time_scale does not apply).
inline constexpr int kSlowBodyPieces = 8;
inline constexpr absl::Duration kSlowBody = absl::Milliseconds(400);

// A 200 as the server must send it.
struct Outgoing {
  // Drop the connection without a response (the reset fault); nothing else
  // applies.
  bool reset = false;
  const char* content_type = nullptr;
  // A body of this many bytes, or nullopt for a chunked one (a stream).
  std::optional<uint64_t> content_length;
  // Written in order, each flushed on its own, each after `pause`.
  std::vector<std::string> pieces;
  absl::Duration pause = absl::ZeroDuration();
  // The pieces fall short of content_length (always set then): the
  // connection closes after them.
  bool cut_short = false;
};

// How a reply goes out under `delivery`: `body` is a JSON body, or with
// `stream` the events of a stream (Dialect::StreamEvents).
//   kWhole      all of it;
//   kReset      nothing, the connection dropped;
//   kTruncated  half the body, or half the events, under a content-length
//               for all of it, then the connection closes;
//   kMalformed  a 200 whose body (or middle event) is cut in half and
//               followed by junk;
//   kSlow       all of it in pieces spread over about 400 ms.
Outgoing Deliver(Delivery delivery, bool stream, std::vector<std::string> body);

}  // namespace fake_provider_internal
}  // namespace sluice

#endif  // SLUICE_TOOLS_FAKE_PROVIDER_DELIVERY_H_
