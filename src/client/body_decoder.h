// BodyDecoder: a decoded copy of a response body sent with a
// content-encoding (gzip or deflate), for what the client reads from it (the
// usage, an error event), while the body itself is passed on as it came: a
// proxy forwards compressed bytes compressed, and still settles with the
// usage inside them.
//
// Thread safety: a BodyDecoder belongs to one response on one thread.
// Internal to the client.

#ifndef SLUICE_SRC_CLIENT_BODY_DECODER_H_
#define SLUICE_SRC_CLIENT_BODY_DECODER_H_

#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "sluice/provider.h"

namespace sluice {

class BodyDecoder {
 public:
  // A decoder for the response's content-encoding: nullptr when there is
  // none ("identity" included), or when it is one this client cannot decode
  // (br, zstd): then usage cannot be read and the estimate stays charged.
  static std::unique_ptr<BodyDecoder> For(const Headers& headers);
  ~BodyDecoder();
  BodyDecoder(const BodyDecoder&) = delete;
  BodyDecoder& operator=(const BodyDecoder&) = delete;

  // Decodes the next piece of the body (split anywhere). Returns what it
  // decodes to, possibly nothing; once the stream is broken (not what the
  // encoding says), nothing more, and failed() is true.
  std::string Feed(absl::string_view piece);
  bool failed() const { return failed_; }

 private:
  BodyDecoder();
  struct Stream;
  std::unique_ptr<Stream> stream_;
  bool failed_ = false;
  bool ended_ = false;
};

}  // namespace sluice

#endif  // SLUICE_SRC_CLIENT_BODY_DECODER_H_
