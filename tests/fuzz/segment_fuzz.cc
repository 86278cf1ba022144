// libFuzzer target for the segment validator and the cell code that trusts
// what it passes. The input is a patch over a valid segment image (so the
// fuzzer starts deep inside the format rather than at the magic number):
// triples (offset low, offset high, xor byte), then an optional trailing byte
// that truncates the image to that fraction of its size.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "sluice/segment.h"
#include "src/store/segment_layout.h"

namespace {

std::vector<char> BuildValidImage() {
  const std::string path = absl::StrCat("/dev/shm/sluice-fuzz-", getpid());
  unlink(path.c_str());
  sluice::SegmentOptions options;
  options.slots = 16;
  options.max_processes = 4;
  options.max_leases = 16;
  std::vector<char> bytes;
  {
    auto segment = sluice::Segment::Open(path, options);
    if (!segment.ok()) abort();
    for (const char* name : {"global", "team:a", "anthropic:itpm", "openai:tpm"}) {
      auto bucket = (*segment)->OpenBucket(name, {sluice::Rate::PerMinute(600), 10});
      if (!bucket.ok()) abort();
      bucket->TryAcquire(3);
    }
    // One of each other kind, so their validation is fuzzed too.
    if (!(*segment)->OpenCounter("scope:a:usd_day").ok()) abort();
    if (!(*segment)->OpenLeases("scope:a:concurrency", 4).ok()) abort();
    const int fd = open(path.c_str(), O_RDONLY);
    char buf[4096];
    for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) bytes.insert(bytes.end(), buf, buf + n);
    close(fd);
  }
  unlink(path.c_str());
  return bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<char> kImage = BuildValidImage();
  static char* const buffer = static_cast<char*>(aligned_alloc(4096, kImage.size()));
  memcpy(buffer, kImage.data(), kImage.size());
  size_t image_size = kImage.size();
  size_t i = 0;
  for (; i + 3 <= size; i += 3) {
    const size_t offset = (data[i] | size_t{data[i + 1]} << 8) % image_size;
    buffer[offset] ^= static_cast<char>(data[i + 2]);
  }
  if (i < size) image_size = image_size * data[i] / 256;

  if (!sluice::ValidateSegmentImage(buffer, image_size, "fuzz").ok()) return 0;
  // A valid image's buckets must be safe to use whatever their state.
  const auto* header = reinterpret_cast<const sluice::segment_layout::Header*>(buffer);
  const auto offsets = sluice::segment_layout::ComputeOffsets(
      header->slot_count, header->process_count, header->lease_count);
  auto* slots = reinterpret_cast<sluice::segment_layout::Slot*>(buffer + offsets.slots);
  for (uint32_t s = 0; s < header->slot_count; ++s) {
    if (slots[s].state.load() != sluice::segment_layout::kSlotReady ||
        slots[s].kind != sluice::segment_layout::kKindBucket) {
      continue;
    }
    const sluice::BucketRef bucket(sluice::segment_layout::BucketCellOf(slots[s]),
                                   sluice::Clock::Monotonic());
    for (int64_t now : {int64_t{0}, int64_t{1} << 40, INT64_MAX}) {
      bucket.TryAcquire(1, now);
      const sluice::Decision d = bucket.Reserve(5, 1'000'000'000, now);
      bucket.Refund(2, d.terms, now);
      bucket.Debit(UINT64_MAX, now);
      (void)bucket.Available(now);
      (void)bucket.GetPressure(now);
      (void)bucket.FullForNanos(now);
    }
  }
  return 0;
}
