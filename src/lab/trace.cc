#include "sluice/lab/trace.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace sluice {
namespace {

// A field's text as an error shows it: quoted, and cut short when long.
std::string Quoted(absl::string_view text) {
  constexpr size_t kShown = 40;
  if (text.size() <= kShown) return absl::StrCat("\"", text, "\"");
  return absl::StrCat("\"", text.substr(0, kShown), "...\"");
}

std::string PermitsRange() { return absl::StrCat("an integer from 1 to ", kMaxTracePermits); }

// A time as a line gives it: nanoseconds from the start, or an RFC 3339 time.
struct TimeValue {
  bool rfc3339 = false;
  int64_t ns = 0;   // when !rfc3339
  absl::Time time;  // when rfc3339
};

// `text` (a CSV field or a JSON string) as a time; `field` names it in errors.
absl::StatusOr<TimeValue> ParseTimeText(absl::string_view text, absl::string_view field) {
  if (int64_t ns = 0; absl::SimpleAtoi(text, &ns)) {
    if (ns < 0) return absl::InvalidArgumentError(absl::StrCat(field, " ", ns, " is negative"));
    return TimeValue{.ns = ns, .time = {}};
  }
  absl::Time time;
  std::string error;
  if (absl::ParseTime(absl::RFC3339_full, text, &time, &error)) {
    return TimeValue{.rfc3339 = true, .time = time};
  }
  return absl::InvalidArgumentError(absl::StrCat(
      field, " ", Quoted(text), " is neither integer nanoseconds nor an RFC 3339 time: ", error));
}

// What each line adds to the trace, and the checks that span lines: one kind
// of time, time order, the span, the client table, the size.
class TraceBuilder {
 public:
  // Adds the arrival of line `line`. InvalidArgument (without the line's
  // prefix) when it breaks a rule of the trace.
  absl::Status Add(size_t line, const TimeValue& t, uint64_t permits,
                   std::optional<absl::string_view> client) {
    if (first_line_ == 0) {
      first_line_ = line;
      rfc3339_ = t.rfc3339;
      start_ = t.time;
    } else if (t.rfc3339 != rfc3339_) {
      return absl::InvalidArgumentError(absl::StrCat("t is ", KindName(t.rfc3339), " but line ",
                                                     first_line_, "'s is ", KindName(rfc3339_),
                                                     "; a trace's times are all of one kind"));
    }
    // ToInt64Nanoseconds saturates: no time overflows here.
    const int64_t ns = t.rfc3339 ? absl::ToInt64Nanoseconds(t.time - start_) : t.ns;
    if (!trace_.arrivals.empty() && ns < trace_.arrivals.back().t_ns) {
      return absl::InvalidArgumentError(absl::StrCat(
          "t is ",
          // As Durations: a time centuries before the start saturates `ns` to int64's least.
          absl::FormatDuration(absl::Nanoseconds(trace_.arrivals.back().t_ns) -
                               absl::Nanoseconds(ns)),
          " before line ", last_line_, "'s; arrivals must be in time order"));
    }
    if (ns > absl::ToInt64Nanoseconds(kMaxTraceSpan)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "t is ", absl::FormatDuration(absl::Nanoseconds(ns)),
          " after the trace's start; a trace spans at most ", absl::FormatDuration(kMaxTraceSpan)));
    }
    absl::StatusOr<uint32_t> id = ClientId(client.value_or(""));
    if (!id.ok()) return id.status();
    if (trace_.arrivals.size() == kMaxTraceArrivals) {
      return absl::InvalidArgumentError(
          absl::StrCat("more than ", kMaxTraceArrivals, " arrivals in one trace"));
    }
    trace_.arrivals.push_back({ns, permits, *id});
    last_line_ = line;
    return absl::OkStatus();
  }

  bool empty() const { return trace_.arrivals.empty(); }
  TrafficTrace Take() && { return std::move(trace_); }

 private:
  static absl::string_view KindName(bool rfc3339) {
    return rfc3339 ? "an RFC 3339 time" : "integer nanoseconds";
  }

  absl::StatusOr<uint32_t> ClientId(absl::string_view label) {
    if (label.size() > kMaxClientLabelBytes) {
      return absl::InvalidArgumentError(absl::StrCat("client ", Quoted(label), " is longer than ",
                                                     kMaxClientLabelBytes, " bytes"));
    }
    if (auto it = ids_.find(label); it != ids_.end()) return it->second;
    if (trace_.clients.size() == kMaxTraceClients) {
      return absl::InvalidArgumentError(
          absl::StrCat("more than ", kMaxTraceClients, " clients in one trace"));
    }
    const uint32_t id = static_cast<uint32_t>(trace_.clients.size());
    trace_.clients.emplace_back(label);
    ids_.emplace(std::string(label), id);
    return id;
  }

  TrafficTrace trace_;
  absl::flat_hash_map<std::string, uint32_t> ids_;
  size_t first_line_ = 0;  // 0: no arrival yet
  size_t last_line_ = 0;
  bool rfc3339_ = false;
  absl::Time start_;
};

bool IsCsvHeader(const std::vector<absl::string_view>& fields) {
  return (fields.size() == 2 || (fields.size() == 3 && fields[2] == "client")) &&
         fields[0] == "t" && fields[1] == "permits";
}

std::vector<absl::string_view> CsvFields(absl::string_view line) {
  std::vector<absl::string_view> fields = absl::StrSplit(line, ',');
  for (absl::string_view& f : fields) f = absl::StripAsciiWhitespace(f);
  return fields;
}

absl::Status AddCsvLine(const std::vector<absl::string_view>& fields, size_t line,
                        TraceBuilder& trace) {
  if (fields.size() < 2 || fields.size() > 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected t,permits[,client] but found ", fields.size(), " fields"));
  }
  absl::StatusOr<TimeValue> t = ParseTimeText(fields[0], "t");
  if (!t.ok()) return t.status();
  uint64_t permits = 0;
  if (!absl::SimpleAtoi(fields[1], &permits) || permits == 0 || permits > kMaxTracePermits) {
    return absl::InvalidArgumentError(
        absl::StrCat("permits ", Quoted(fields[1]), " is not ", PermitsRange()));
  }
  std::optional<absl::string_view> client;
  if (fields.size() == 3 && !fields[2].empty()) client = fields[2];
  return trace.Add(line, *t, permits, client);
}

absl::StatusOr<TimeValue> JsonTime(const nlohmann::json& t) {
  if (t.is_number_unsigned()) {
    // Clamped: a time past int64 is past the longest span, and said so.
    const uint64_t ns = t.get<uint64_t>();
    return TimeValue{
        .ns = static_cast<int64_t>(std::min<uint64_t>(ns, std::numeric_limits<int64_t>::max())),
        .time = {}};
  }
  if (t.is_number_integer()) return absl::InvalidArgumentError("\"t\" is negative");
  if (t.is_string()) return ParseTimeText(t.get_ref<const std::string&>(), "\"t\"");
  return absl::InvalidArgumentError(
      "\"t\" must be integer nanoseconds or an RFC 3339 time in a string");
}

absl::Status AddJsonLine(absl::string_view line, size_t number, TraceBuilder& trace) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(line.begin(), line.end());
  } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e999
    return absl::InvalidArgumentError(absl::StrCat("not JSON: ", e.what()));
  }
  if (!doc.is_object()) return absl::InvalidArgumentError("a line must be a JSON object");
  const auto t = doc.find("t");
  if (t == doc.end()) return absl::InvalidArgumentError("missing \"t\"");
  absl::StatusOr<TimeValue> time = JsonTime(*t);
  if (!time.ok()) return time.status();
  const auto permits = doc.find("permits");
  if (permits == doc.end()) return absl::InvalidArgumentError("missing \"permits\"");
  if (!permits->is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"permits\" must be ", PermitsRange(), ", not a ", permits->type_name()));
  }
  if (!permits->is_number_unsigned() || permits->get<uint64_t>() == 0 ||
      permits->get<uint64_t>() > kMaxTracePermits) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"permits\" ", permits->dump(), " is not ", PermitsRange()));
  }
  std::string label;
  std::optional<absl::string_view> client;
  if (const auto c = doc.find("client"); c != doc.end()) {
    if (c->is_string()) {
      label = c->get<std::string>();
    } else if (c->is_number_unsigned()) {
      label = absl::StrCat(c->get<uint64_t>());
    } else if (c->is_number_integer()) {
      label = absl::StrCat(c->get<int64_t>());
    } else {
      return absl::InvalidArgumentError("\"client\" must be a string or an integer");
    }
    client = label;
  }
  return trace.Add(number, *time, permits->get<uint64_t>(), client);
}

}  // namespace

TraceFormat DetectTraceFormat(absl::string_view path, absl::string_view text) {
  if (absl::EndsWithIgnoreCase(path, ".csv")) return TraceFormat::kCsv;
  for (absl::string_view ext : {".jsonl", ".ndjson", ".json"}) {
    if (absl::EndsWithIgnoreCase(path, ext)) return TraceFormat::kJsonl;
  }
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    return line[0] == '{' ? TraceFormat::kJsonl : TraceFormat::kCsv;
  }
  return TraceFormat::kCsv;
}

absl::StatusOr<TrafficTrace> ParseTrace(absl::string_view text, TraceFormat format,
                                        absl::string_view name) {
  TraceBuilder trace;
  size_t number = 0;
  bool first = true;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    line = absl::StripAsciiWhitespace(line);  // a CRLF file's \r too
    if (line.empty()) continue;
    absl::Status status;
    if (format == TraceFormat::kJsonl) {
      status = AddJsonLine(line, number, trace);
    } else if (line[0] != '#') {
      const std::vector<absl::string_view> fields = CsvFields(line);
      if (!(first && IsCsvHeader(fields))) status = AddCsvLine(fields, number, trace);
      first = false;
    }
    if (!status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ":", number, ": ", status.message()));
    }
  }
  if (trace.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": no arrivals"));
  return std::move(trace).Take();
}

absl::StatusOr<TrafficTrace> ReadTraceFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string message = absl::StrCat(path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(message) : absl::UnavailableError(message);
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::UnavailableError(absl::StrCat("reading ", path));
  return ParseTrace(text.str(), DetectTraceFormat(path, text.str()), path);
}

}  // namespace sluice
