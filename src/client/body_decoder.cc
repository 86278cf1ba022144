#include "src/client/body_decoder.h"

#include <zlib.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/string_view.h"

namespace sluice {

struct BodyDecoder::Stream {
  z_stream z;
};

BodyDecoder::BodyDecoder() : stream_(std::make_unique<Stream>()) {
  std::memset(&stream_->z, 0, sizeof(stream_->z));
}

BodyDecoder::~BodyDecoder() {
  if (stream_ != nullptr) inflateEnd(&stream_->z);
}

std::unique_ptr<BodyDecoder> BodyDecoder::For(const Headers& headers) {
  const std::string* encoding = headers.Find("content-encoding");
  if (encoding == nullptr) return nullptr;
  const std::string name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(*encoding));
  // 15 + 32: a window of 2^15 with the gzip or zlib header detected; a raw
  // deflate stream (what some servers send as "deflate") is not.
  if (name != "gzip" && name != "x-gzip" && name != "deflate") return nullptr;
  std::unique_ptr<BodyDecoder> decoder(new BodyDecoder());
  if (inflateInit2(&decoder->stream_->z, 15 + 32) != Z_OK) return nullptr;
  return decoder;
}

std::string BodyDecoder::Feed(absl::string_view piece) {
  std::string out;
  if (failed_ || ended_ || piece.empty()) return out;
  z_stream& z = stream_->z;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(piece.data()));
  z.avail_in = static_cast<uInt>(piece.size());
  char buffer[16384];
  while (z.avail_in > 0 && !ended_) {
    z.next_out = reinterpret_cast<Bytef*>(buffer);
    z.avail_out = sizeof(buffer);
    const int rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      failed_ = true;
      break;
    }
    out.append(buffer, sizeof(buffer) - z.avail_out);
    if (rc == Z_STREAM_END) ended_ = true;
    if (rc == Z_BUF_ERROR && z.avail_out != 0) break;  // needs more input
  }
  return out;
}

}  // namespace sluice
