// What the batch unit tests share: a scratch directory, files in it, input
// lines of both shapes, and a sender that answers at once on the test thread.
#ifndef SLUICE_TESTS_BATCH_BATCH_TEST_UTIL_H_
#define SLUICE_TESTS_BATCH_BATCH_TEST_UTIL_H_

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace sluice {
namespace batch_test {

// A fresh directory per test, removed after it.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "sluice-batch-XXXXXX").string();
    EXPECT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  ~ScratchDir() { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
};

inline void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The result lines of a results file, parsed.
inline std::vector<nlohmann::json> ReadResults(const std::string& path) {
  std::vector<nlohmann::json> results;
  std::istringstream in(ReadFile(path));
  for (std::string line; std::getline(in, line);) results.push_back(nlohmann::json::parse(line));
  return results;
}

inline std::string AnthropicLine(int i) {
  return absl::StrCat(R"({"custom_id": "req-)", i,
                      R"(", "params": {"model": "claude-sonnet-4", "max_tokens": 16, )",
                      R"("messages": [{"role": "user", "content": "hi"}]}})");
}

inline std::string OpenAiLine(int i) {
  return absl::StrCat(R"({"custom_id": "req-)", i,
                      R"(", "method": "POST", "url": "/v1/chat/completions", )",
                      R"("body": {"model": "gpt-4o", "messages": []}})");
}

// n lines made by `line` (0-based ids), each ending in a newline.
template <typename F>
std::string Lines(int n, F line) {
  std::string text;
  for (int i = 0; i < n; ++i) absl::StrAppend(&text, line(i), "\n");
  return text;
}

}  // namespace batch_test
}  // namespace sluice

#endif  // SLUICE_TESTS_BATCH_BATCH_TEST_UTIL_H_
