// Thousands of damaged segments: random bytes flipped, files truncated. Every
// open either works (and the segment is then usable) or fails with a clear
// error naming the path; nothing crashes (this suite also runs under
// ASan+UBSan in CI).
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/segment.h"
#include "sluice/segment_info.h"
#include "src/store/segment_layout.h"
#include "tests/store/segment_test_util.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

const char* const kNames[] = {"global", "team:marketing", "anthropic:rpm", "openai:tpm"};

std::vector<char> ValidImage(const std::string& path) {
  SegmentOptions options;
  options.slots = 16;
  options.max_processes = 4;
  auto segment = Segment::Open(path, options);
  EXPECT_TRUE(segment.ok()) << segment.status();
  for (const char* name : kNames) {
    auto bucket = (*segment)->OpenBucket(name, {Rate::PerMinute(600), 10});
    EXPECT_TRUE(bucket.ok());
    bucket->TryAcquire(3);
  }
  return ReadFile(path);
}

// Uses a segment that opened: every bucket, inspection, a new bucket.
void Exercise(Segment& segment) {
  for (const char* name : kNames) {
    auto bucket = segment.FindBucket(name);
    if (!bucket.ok()) continue;
    bucket->TryAcquire(1);
    const sluice::Decision d = bucket->Reserve(2, 1'000'000);
    bucket->Refund(1, d.terms);
    bucket->Debit(1);
    (void)bucket->Available();
    (void)bucket->GetPressure();
  }
  (void)segment.OpenBucket("new", {Rate::PerSecond(1), 1});
  (void)segment.Inspect();
  (void)segment.ReclaimIdle(absl::ZeroDuration());
}

TEST(SegmentCorruptionTest, FlippedOrTruncatedSegmentsOpenOrFailClearly) {
  ScratchSegment original, damaged;
  const std::vector<char> image = ValidImage(original.path());
  ASSERT_GT(image.size(), 8192u);
  std::mt19937_64 rng(2026);
  int opened = 0, refused = 0;
  for (int round = 0; round < 3000; ++round) {
    std::vector<char> bytes = image;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f) {
      // Most damage lands where meaning lives: the header and the slots.
      const size_t span = rng() % 4 == 0 ? bytes.size() : 4096 + 16 * 256;
      bytes[rng() % span] ^= static_cast<char>(1 + rng() % 255);
    }
    if (rng() % 5 == 0) bytes.resize(rng() % bytes.size());
    ASSERT_TRUE(WriteFile(damaged.path(), bytes));
    auto segment = Segment::Open(damaged.path());
    if (segment.ok()) {
      ++opened;
      Exercise(**segment);
    } else {
      ++refused;
      EXPECT_THAT(segment.status().message(), HasSubstr(damaged.path())) << segment.status();
    }
  }
  // Both outcomes occur: the check is neither vacuous nor paranoid.
  EXPECT_GT(opened, 100);
  EXPECT_GT(refused, 100);
}

TEST(SegmentCorruptionTest, ValidatorNamesTheDamagedSlot) {
  ScratchSegment original;
  const std::vector<char> bytes = ValidImage(original.path());
  // Aligned like a mapping.
  std::unique_ptr<char, decltype(&free)> image(
      static_cast<char*>(aligned_alloc(4096, bytes.size())), &free);
  memcpy(image.get(), bytes.data(), bytes.size());
  ASSERT_TRUE(ValidateSegmentImage(image.get(), bytes.size(), "img").ok());
  EXPECT_EQ(ValidateSegmentImage(image.get() + 8, bytes.size() - 8, "img").code(),
            absl::StatusCode::kInvalidArgument);
  // Find a ready slot and break its bucket's interval.
  const size_t slots = segment_layout::kHeaderBytes;
  for (size_t i = 0; i < 16; ++i) {
    auto* slot = reinterpret_cast<segment_layout::Slot*>(image.get() + slots +
                                                         i * sizeof(segment_layout::Slot));
    if (slot->state.load() != segment_layout::kSlotReady) continue;
    // The cell was derived from capacity 10; so must the record of its
    // parameters be.
    slot->params[0].capacity = 11;
    slot->params[1].capacity = 11;
    const absl::Status s = ValidateSegmentImage(image.get(), bytes.size(), "img");
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("img: slot ", i, " ('")));
    EXPECT_THAT(s.message(), HasSubstr("do not match its configuration"));
    return;
  }
  FAIL() << "no ready slot in the image";
}

}  // namespace
}  // namespace sluice
