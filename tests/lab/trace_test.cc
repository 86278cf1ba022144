// The trace parser (sluice/lab/trace.h): both formats and both kinds of time
// on good input, and every refusal, with the file and line it names.
#include "sluice/lab/trace.h"

#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sluice {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<int64_t> Times(const TrafficTrace& trace) {
  std::vector<int64_t> times;
  for (const TraceArrival& a : trace.arrivals) times.push_back(a.t_ns);
  return times;
}

std::string CsvError(absl::string_view text) {
  return std::string(ParseTrace(text, TraceFormat::kCsv, "x.csv").status().message());
}

std::string JsonError(absl::string_view text) {
  return std::string(ParseTrace(text, TraceFormat::kJsonl, "x.jsonl").status().message());
}

TEST(TraceTest, CsvWithHeaderCommentsBlankLinesAndCrlf) {
  const absl::StatusOr<TrafficTrace> trace = ParseTrace(
      "# calls from Monday\r\nt,permits,client\r\n\r\n0,1,alice\r\n  10 , 3 , bob \r\n"
      "10,2\n# done\n20,1,alice",
      TraceFormat::kCsv, "x.csv");
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_THAT(Times(*trace), ElementsAre(0, 10, 10, 20));
  EXPECT_THAT(trace->clients, ElementsAre("alice", "bob", ""));
  EXPECT_EQ(trace->arrivals[1].permits, 3u);
  EXPECT_EQ(trace->arrivals[1].client, 1u);
  EXPECT_EQ(trace->arrivals[2].client, 2u);  // no client: the unnamed one
  EXPECT_EQ(trace->arrivals[3].client, 0u);
}

TEST(TraceTest, CsvHeaderOnlyFirstAndWithoutClient) {
  const absl::StatusOr<TrafficTrace> trace = ParseTrace("t,permits\n5,1\n", TraceFormat::kCsv, "x");
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_THAT(Times(*trace), ElementsAre(5));
  // A header after the first line is a bad line.
  EXPECT_EQ(CsvError("5,1\nt,permits\n"),
            "x.csv:2: t \"t\" is neither integer nanoseconds nor an RFC 3339 time: "
            "Failed to parse input");
}

TEST(TraceTest, JsonlWithIntegerAndStringTimesAndClients) {
  const absl::StatusOr<TrafficTrace> trace = ParseTrace(
      "{\"t\": 0, \"permits\": 2, \"client\": 7, \"model\": \"x\"}\n\n"
      "{\"t\": \"15\", \"permits\": 1, \"client\": \"7\"}\n"
      "{\"permits\": 4294967296, \"t\": 15}\n",
      TraceFormat::kJsonl, "x.jsonl");
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_THAT(Times(*trace), ElementsAre(0, 15, 15));
  EXPECT_THAT(trace->clients, ElementsAre("7", ""));  // 7 and "7" are one client
  EXPECT_EQ(trace->arrivals[1].client, 0u);
  EXPECT_EQ(trace->arrivals[2].permits, kMaxTracePermits);
}

TEST(TraceTest, Rfc3339TimesCountFromTheFirstEvent) {
  const absl::StatusOr<TrafficTrace> csv =
      ParseTrace("2026-11-30T12:00:00Z,1\n2026-11-30T12:00:00.25Z,1\n2026-11-30T13:00:01+01:00,1\n",
                 TraceFormat::kCsv, "x.csv");
  ASSERT_TRUE(csv.ok()) << csv.status();
  EXPECT_THAT(Times(*csv), ElementsAre(0, 250'000'000, 1'000'000'000));
  const absl::StatusOr<TrafficTrace> json = ParseTrace(
      "{\"t\": \"2026-11-30T12:00:00.000000001Z\", \"permits\": 1}\n"
      "{\"t\": \"2026-11-30T12:00:02Z\", \"permits\": 1}",
      TraceFormat::kJsonl, "x.jsonl");
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(Times(*json), ElementsAre(0, 1'999'999'999));
}

TEST(TraceTest, CsvRefusalsNameTheLine) {
  EXPECT_EQ(CsvError("0,1\n1,1,a,b\n"), "x.csv:2: expected t,permits[,client] but found 4 fields");
  EXPECT_EQ(CsvError("0\n"), "x.csv:1: expected t,permits[,client] but found 1 fields");
  EXPECT_EQ(CsvError("0,1\n\n5,0\n"),
            "x.csv:3: permits \"0\" is not an integer from 1 to 4294967296");
  EXPECT_EQ(CsvError("0,4294967297\n"),
            "x.csv:1: permits \"4294967297\" is not an integer from 1 to 4294967296");
  EXPECT_EQ(CsvError("0,-1\n"), "x.csv:1: permits \"-1\" is not an integer from 1 to 4294967296");
  EXPECT_EQ(CsvError("0,1.5\n"), "x.csv:1: permits \"1.5\" is not an integer from 1 to 4294967296");
  EXPECT_EQ(CsvError("-5,1\n"), "x.csv:1: t -5 is negative");
  EXPECT_THAT(CsvError("0,1\nnoon,1\n"),
              HasSubstr("x.csv:2: t \"noon\" is neither integer nanoseconds nor an RFC 3339 time"));
  EXPECT_EQ(
      CsvError("0,1\n1,1," + std::string(257, 'c') + "\n"),
      absl::StrCat("x.csv:2: client \"", std::string(40, 'c'), "...\" is longer than 256 bytes"));
}

TEST(TraceTest, TimesInOrderOfOneKindWithinTheSpan) {
  EXPECT_EQ(CsvError("0,1\n10,1\n5,1\n"),
            "x.csv:3: t is 5ns before line 2's; arrivals must be in time order");
  EXPECT_EQ(CsvError("2026-11-30T12:00:01Z,1\n2026-11-30T12:00:00Z,1\n"),
            "x.csv:2: t is 1s before line 1's; arrivals must be in time order");
  // Centuries back: the difference saturates, and is still said right.
  EXPECT_EQ(CsvError("2026-11-30T12:00:00Z,1\n1013-11-30T12:00:00Z,1\n"),
            "x.csv:2: t is 2562047h47m16.854775808s before line 1's; arrivals must be in time "
            "order");
  EXPECT_EQ(CsvError("# c\n0,1\n2026-11-30T12:00:00Z,1\n"),
            "x.csv:3: t is an RFC 3339 time but line 2's is integer nanoseconds; a trace's times "
            "are all of one kind");
  EXPECT_EQ(CsvError("2026-11-30T12:00:00Z,1\n7,1\n"),
            "x.csv:2: t is integer nanoseconds but line 1's is an RFC 3339 time; a trace's times "
            "are all of one kind");
  EXPECT_EQ(CsvError("31536000000000001,1\n"),
            "x.csv:1: t is 8760h0.000000001s after the trace's start; a trace spans at most 8760h");
  EXPECT_EQ(CsvError("2025-01-01T00:00:00Z,1\n2026-01-02T00:00:00Z,1\n"),
            "x.csv:2: t is 8784h after the trace's start; a trace spans at most 8760h");
  EXPECT_TRUE(ParseTrace("31536000000000000,1\n", TraceFormat::kCsv, "x").ok());
}

TEST(TraceTest, JsonlRefusalsNameTheLineAndField) {
  EXPECT_THAT(JsonError("{\"t\": 0, \"permits\": 1}\n{\"t\": 1,\n"),
              HasSubstr("x.jsonl:2: not JSON: [json.exception.parse_error"));
  EXPECT_EQ(JsonError("{\"t\": 2e999, \"permits\": 1}"),
            "x.jsonl:1: not JSON: [json.exception.out_of_range.406] number overflow parsing "
            "'2e999'");
  EXPECT_EQ(JsonError("[0, 1]"), "x.jsonl:1: a line must be a JSON object");
  EXPECT_EQ(JsonError("{\"permits\": 1}"), "x.jsonl:1: missing \"t\"");
  EXPECT_EQ(JsonError("{\"t\": 1}"), "x.jsonl:1: missing \"permits\"");
  EXPECT_EQ(JsonError("{\"t\": -1, \"permits\": 1}"), "x.jsonl:1: \"t\" is negative");
  EXPECT_EQ(JsonError("{\"t\": 1.5, \"permits\": 1}"),
            "x.jsonl:1: \"t\" must be integer nanoseconds or an RFC 3339 time in a string");
  EXPECT_THAT(
      JsonError("{\"t\": \"soon\", \"permits\": 1}"),
      HasSubstr("x.jsonl:1: \"t\" \"soon\" is neither integer nanoseconds nor an RFC 3339"));
  EXPECT_EQ(JsonError("{\"t\": 0, \"permits\": \"1\"}"),
            "x.jsonl:1: \"permits\" must be an integer from 1 to 4294967296, not a string");
  EXPECT_EQ(JsonError("{\"t\": 0, \"permits\": 0}"),
            "x.jsonl:1: \"permits\" 0 is not an integer from 1 to 4294967296");
  EXPECT_EQ(JsonError("{\"t\": 0, \"permits\": -2}"),
            "x.jsonl:1: \"permits\" -2 is not an integer from 1 to 4294967296");
  EXPECT_EQ(JsonError("{\"t\": 0, \"permits\": 2.5}"),
            "x.jsonl:1: \"permits\" 2.5 is not an integer from 1 to 4294967296");
  EXPECT_EQ(JsonError("{\"t\": 0, \"permits\": 1, \"client\": true}"),
            "x.jsonl:1: \"client\" must be a string or an integer");
  EXPECT_EQ(JsonError("{\"t\": 18446744073709551615, \"permits\": 1}"),
            "x.jsonl:1: t is 2562047h47m16.854775807s after the trace's start; a trace spans at "
            "most 8760h");
}

TEST(TraceTest, AnEmptyTraceIsRefused) {
  EXPECT_EQ(CsvError(""), "x.csv: no arrivals");
  EXPECT_EQ(CsvError("t,permits,client\n# nothing\n\n"), "x.csv: no arrivals");
  EXPECT_EQ(JsonError("\n\n"), "x.jsonl: no arrivals");
}

TEST(TraceTest, FormatFromTheExtensionElseTheFirstLine) {
  EXPECT_EQ(DetectTraceFormat("a.csv", "{\"t\": 0}"), TraceFormat::kCsv);
  EXPECT_EQ(DetectTraceFormat("a.JSONL", "0,1"), TraceFormat::kJsonl);
  EXPECT_EQ(DetectTraceFormat("a.ndjson", ""), TraceFormat::kJsonl);
  EXPECT_EQ(DetectTraceFormat("a.json", ""), TraceFormat::kJsonl);
  EXPECT_EQ(DetectTraceFormat("trace", "\n# c\n  {\"t\": 0}"), TraceFormat::kJsonl);
  EXPECT_EQ(DetectTraceFormat("trace", "\n# c\nt,permits"), TraceFormat::kCsv);
  EXPECT_EQ(DetectTraceFormat("trace", ""), TraceFormat::kCsv);
}

TEST(TraceTest, ReadTraceFile) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/trace_test_", getpid(), ".log");
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("{\"t\": 0, \"permits\": 1}\n{\"t\": 9, \"permits\": 0}\n", f);
  std::fclose(f);
  // No extension: the first line says JSONL; the error names the path.
  EXPECT_EQ(ReadTraceFile(path).status().message(),
            absl::StrCat(path, ":2: \"permits\" 0 is not an integer from 1 to 4294967296"));
  unlink(path.c_str());
  const absl::Status missing = ReadTraceFile(path).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.message(), absl::StrCat(path, ": No such file or directory"));
}

}  // namespace
}  // namespace sluice
