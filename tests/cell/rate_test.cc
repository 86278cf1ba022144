#include "sluice/rate.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

TEST(RateTest, ParsesEveryUnit) {
  EXPECT_EQ(*Rate::Parse("50/min"), Rate::PerMinute(50));
  EXPECT_EQ(*Rate::Parse("7/s"), Rate::PerSecond(7));
  EXPECT_EQ(*Rate::Parse("7/sec"), Rate::PerSecond(7));
  EXPECT_EQ(*Rate::Parse("3/h"), Rate::PerHour(3));
  EXPECT_EQ(*Rate::Parse("2500000/day"), Rate::PerDay(2'500'000));
  EXPECT_EQ(*Rate::Parse(" 10 / minute "), Rate::PerMinute(10));
}

TEST(RateTest, RejectsMalformedTextNamingIt) {
  EXPECT_THAT(Rate::Parse("50").status().message(), HasSubstr("N/UNIT"));
  EXPECT_THAT(Rate::Parse("0/min").status().message(), HasSubstr("'0' is not a positive"));
  EXPECT_THAT(Rate::Parse("-5/min").status().message(), HasSubstr("'-5'"));
  EXPECT_THAT(Rate::Parse("x/min").status().message(), HasSubstr("'x'"));
  EXPECT_THAT(Rate::Parse("5/fortnight").status().message(), HasSubstr("unknown unit 'fortnight'"));
  EXPECT_EQ(Rate::Parse("5/").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RateTest, PrintsTheWayItParses) {
  EXPECT_EQ(Rate::PerMinute(50).ToString(), "50/min");
  EXPECT_EQ(Rate::PerDay(3).ToString(), "3/day");
  EXPECT_EQ(Rate::PerHour(3).ToString(), "3/h");
  EXPECT_EQ(Rate::PerSecond(9).ToString(), "9/s");
  EXPECT_EQ(Rate(7, absl::Seconds(90)).ToString(), "7/1m30s");
}

TEST(RateTest, ValidateNamesTheBadField) {
  EXPECT_TRUE(Rate::PerSecond(1).Validate().ok());
  EXPECT_THAT(Rate::PerSecond(0).Validate().message(), HasSubstr("permits"));
  EXPECT_THAT(Rate(1, absl::Seconds(-1)).Validate().message(), HasSubstr("period"));
}

}  // namespace
}  // namespace sluice
