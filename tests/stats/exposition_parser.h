// A Prometheus text exposition (format 0.0.4) parser and validator, for tests
// that read back what sluice serves: every sample, its family's TYPE and
// HELP, and sluice's own naming conventions.
#ifndef SLUICE_TESTS_STATS_EXPOSITION_PARSER_H_
#define SLUICE_TESTS_STATS_EXPOSITION_PARSER_H_

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sluice {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value;
};

struct Exposition {
  std::map<std::string, std::string> types;  // family -> counter, gauge, ...
  std::map<std::string, std::string> help;   // family -> text (unescaped)
  std::vector<Sample> samples;
  // "name{a="x",b="y"}" (labels sorted) -> value, for lookups.
  std::map<std::string, double> series;
};

inline bool IsMetricName(absl::string_view s) {
  if (s.empty() || !(absl::ascii_isalpha(s[0]) || s[0] == '_' || s[0] == ':')) return false;
  for (char c : s) {
    if (!(absl::ascii_isalnum(c) || c == '_' || c == ':')) return false;
  }
  return true;
}

inline bool IsLabelName(absl::string_view s) {
  if (s.empty() || !(absl::ascii_isalpha(s[0]) || s[0] == '_') || absl::StartsWith(s, "__")) {
    return false;
  }
  for (char c : s) {
    if (!(absl::ascii_isalnum(c) || c == '_')) return false;
  }
  return true;
}

inline bool IsUtf8(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

inline bool ParseValue(absl::string_view text, double* value) {
  if (text == "NaN") return *value = NAN, true;
  if (text == "+Inf") return *value = INFINITY, true;
  if (text == "-Inf") return *value = -INFINITY, true;
  if (text.empty() || absl::ascii_isalpha(text.back())) return false;  // "inf", "1e"
  return absl::SimpleAtod(text, value);
}

inline std::string SeriesKey(const std::string& name,
                             const std::map<std::string, std::string>& labels) {
  return absl::StrCat(name, "{",
                      absl::StrJoin(labels, ",",
                                    [](std::string* out, const auto& l) {
                                      absl::StrAppend(out, l.first, "=\"", l.second, "\"");
                                    }),
                      "}");
}

// The family a sample belongs to: its own name, or for a histogram or summary
// the name without _bucket, _sum or _count.
inline std::string FamilyOf(const std::string& name, const Exposition& e) {
  if (e.types.count(name) > 0) return name;
  for (absl::string_view suffix : {"_bucket", "_sum", "_count"}) {
    absl::string_view base = name;
    if (absl::ConsumeSuffix(&base, suffix)) {
      auto it = e.types.find(std::string(base));
      if (it != e.types.end() && (it->second == "histogram" || it->second == "summary")) {
        return it->first;
      }
    }
  }
  return name;
}

// Parses the labels of a sample starting after '{'; `*pos` ends after '}'.
inline absl::Status ParseLabels(absl::string_view line, size_t* pos,
                                std::map<std::string, std::string>* labels) {
  size_t i = *pos;
  while (i < line.size() && line[i] != '}') {
    const size_t eq = line.find('=', i);
    if (eq == absl::string_view::npos) return absl::InvalidArgumentError("label without '='");
    const std::string name(line.substr(i, eq - i));
    if (!IsLabelName(name))
      return absl::InvalidArgumentError(absl::StrCat("label name '", name, "'"));
    if (eq + 1 >= line.size() || line[eq + 1] != '"') {
      return absl::InvalidArgumentError("label value not quoted");
    }
    std::string value;
    size_t j = eq + 2;
    for (; j < line.size() && line[j] != '"'; ++j) {
      if (line[j] != '\\') {
        value += line[j];
        continue;
      }
      if (++j == line.size()) return absl::InvalidArgumentError("escape at the end");
      if (line[j] == '\\') {
        value += '\\';
      } else if (line[j] == '"') {
        value += '"';
      } else if (line[j] == 'n') {
        value += '\n';
      } else {
        return absl::InvalidArgumentError(absl::StrCat("bad escape \\", line.substr(j, 1)));
      }
    }
    if (j == line.size()) return absl::InvalidArgumentError("unterminated label value");
    if (!IsUtf8(value)) return absl::InvalidArgumentError("label value is not UTF-8");
    if (!labels->emplace(name, value).second) {
      return absl::InvalidArgumentError(absl::StrCat("label '", name, "' twice"));
    }
    i = j + 1;
    if (i < line.size() && line[i] == ',') ++i;
  }
  if (i == line.size()) return absl::InvalidArgumentError("labels not closed");
  *pos = i + 1;
  return absl::OkStatus();
}

inline absl::StatusOr<Exposition> ParseExposition(absl::string_view text) {
  Exposition e;
  if (!text.empty() && text.back() != '\n') return absl::InvalidArgumentError("no final newline");
  std::set<std::string> closed;  // families whose samples have ended
  std::string current;           // the family of the samples being read
  int number = 0;
  for (absl::string_view line : absl::StrSplit(absl::StripSuffix(text, "\n"), '\n')) {
    ++number;
    auto fail = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("line ", number, " '", line, "': ", why));
    };
    if (line.empty()) continue;
    if (line[0] == '#') {
      const std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(' ', 3));
      if (parts.size() < 3 || (parts[1] != "HELP" && parts[1] != "TYPE")) continue;  // a comment
      const std::string family(parts[2]);
      if (!IsMetricName(family)) return fail("bad metric name");
      if (e.series.count(family) > 0 || closed.count(family) > 0 || current == family) {
        return fail("HELP or TYPE after the family's samples");
      }
      const std::string rest = parts.size() > 3 ? std::string(parts[3]) : "";
      if (parts[1] == "TYPE") {
        static const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary",
                                                     "untyped"};
        if (kTypes.count(rest) == 0) return fail("unknown type");
        if (!e.types.emplace(family, rest).second) return fail("TYPE twice");
      } else {
        std::string help;
        for (size_t i = 0; i < rest.size(); ++i) {
          if (rest[i] != '\\') {
            help += rest[i];
          } else if (i + 1 < rest.size() && (rest[i + 1] == '\\' || rest[i + 1] == 'n')) {
            help += rest[++i] == 'n' ? '\n' : '\\';
          } else {
            return fail("bad escape in HELP");
          }
        }
        if (!e.help.emplace(family, help).second) return fail("HELP twice");
      }
      continue;
    }
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = std::string(line.substr(0, i));
    if (!IsMetricName(s.name)) return fail("bad metric name");
    if (i < line.size() && line[i] == '{') {
      ++i;
      if (absl::Status st = ParseLabels(line, &i, &s.labels); !st.ok()) return fail(st.message());
    }
    if (i >= line.size() || line[i] != ' ') return fail("no value");
    const std::vector<absl::string_view> fields = absl::StrSplit(line.substr(i + 1), ' ');
    if (fields.empty() || fields.size() > 2)
      return fail("expected a value and a timestamp at most");
    if (!ParseValue(fields[0], &s.value)) return fail("value is not a number");
    int64_t timestamp;
    if (fields.size() == 2 && !absl::SimpleAtoi(fields[1], &timestamp)) return fail("timestamp");
    const std::string family = FamilyOf(s.name, e);
    if (family != current) {
      if (closed.count(family) > 0) return fail("the family's samples are not together");
      if (!current.empty()) closed.insert(current);
      current = family;
    }
    if (!e.series.emplace(SeriesKey(s.name, s.labels), s.value).second) {
      return fail("duplicate series");
    }
    e.samples.push_back(std::move(s));
  }
  return e;
}

// sluice's own conventions on top of the format.
inline void ExpectSluiceConventions(const Exposition& e) {
  for (const Sample& s : e.samples) {
    const std::string family = FamilyOf(s.name, e);
    EXPECT_THAT(s.name, ::testing::StartsWith("sluice_"));
    ASSERT_EQ(e.types.count(family), 1u) << s.name << " has no TYPE";
    EXPECT_EQ(e.help.count(family), 1u) << s.name << " has no HELP";
    EXPECT_EQ(e.types.at(family) == "counter", absl::EndsWith(s.name, "_total")) << s.name;
    EXPECT_FALSE(absl::StrContains(s.name, "_ms")) << s.name << ": base units";
  }
}

inline double Get(const Exposition& e, const std::string& name,
                  const std::map<std::string, std::string>& labels) {
  auto it = e.series.find(SeriesKey(name, labels));
  EXPECT_TRUE(it != e.series.end()) << "no series " << SeriesKey(name, labels);
  return it == e.series.end() ? NAN : it->second;
}

inline bool Has(const Exposition& e, const std::string& name,
                const std::map<std::string, std::string>& labels) {
  return e.series.count(SeriesKey(name, labels)) > 0;
}

}  // namespace sluice

#endif  // SLUICE_TESTS_STATS_EXPOSITION_PARSER_H_
