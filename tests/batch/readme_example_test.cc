// The README's "A batch from C++" snippet, compiled and run here so that it
// cannot rot: the test checks that README.md holds the body of readme::main
// below verbatim, then runs it in a scratch directory without an API key,
// where it opens the batch and stops at the client (nothing is sent).
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sluice/batch.h"
#include "sluice/limits.h"
#include "sluice/store.h"
#include "tests/batch/batch_test_util.h"

namespace readme {

// README snippet begins
int main() {
  sluice::batch::RunnerOptions options;
  options.input = "requests.jsonl";   // OpenAI Batch or Anthropic Message Batches lines
  options.results = "results.jsonl";  // run it again after a crash: it resumes
  auto runner = sluice::batch::Runner::Open(options);
  auto limits = sluice::LoadLimitsConfig("limits.toml");
  if (!runner.ok() || !limits.ok()) return 1;
  auto store = sluice::NewLocalStore();  // NewSegmentStore: share the limits host-wide
  auto policy = sluice::Policy::Create(*limits, store.get());
  if (!policy.ok()) return 1;
  sluice::ClientOptions client_options;  // the key: ANTHROPIC_API_KEY or OPENAI_API_KEY
  client_options.provider = (*runner)->input().provider();
  client_options.require_api_key = true;  // no key: stop here, not fail every line
  auto client = sluice::Client::Create(client_options, policy->get());
  if (!client.ok()) return 1;
  auto done = (*runner)->Run(**client);
  if (!done.ok()) return 1;
  std::printf("%zu of %zu lines done\n", done->done(), done->total);
  return done->calls.failed() + done->invalid == 0 ? 0 : 1;
}
// README snippet ends

}  // namespace readme

namespace sluice {
namespace {

std::string Between(const std::string& text, const std::string& from, const std::string& to) {
  const size_t begin = text.find(from);
  if (begin == std::string::npos) return "";
  const size_t end = text.find(to, begin + from.size());
  if (end == std::string::npos) return "";
  return text.substr(begin + from.size(), end - begin - from.size());
}

TEST(ReadmeExampleTest, TheReadmeShowsThisCode) {
  const std::string self =
      batch_test::ReadFile(SLUICE_SOURCE_DIR "/tests/batch/readme_example_test.cc");
  const std::string code = Between(self, "// README snippet begins\n", "// README snippet ends\n");
  ASSERT_THAT(code, ::testing::StartsWith("int main() {"));
  const std::string readme = batch_test::ReadFile(SLUICE_SOURCE_DIR "/README.md");
  EXPECT_THAT(readme, ::testing::HasSubstr(code));
}

TEST(ReadmeExampleTest, ItOpensTheBatchAndStopsWithoutAKey) {
  batch_test::ScratchDir dir;
  batch_test::WriteFile(dir.Path("requests.jsonl"),
                        batch_test::Lines(3, batch_test::AnthropicLine));
  batch_test::WriteFile(dir.Path("limits.toml"),
                        "[providers.anthropic]\nrequests_per_minute = 50\n[scopes.global]\n");
  unsetenv("ANTHROPIC_API_KEY");
  char cwd[4096];
  ASSERT_NE(getcwd(cwd, sizeof(cwd)), nullptr);
  ASSERT_EQ(chdir(dir.Path("").c_str()), 0);
  const int status = readme::main();
  ASSERT_EQ(chdir(cwd), 0);
  EXPECT_EQ(status, 1);
  // The results file was opened (created, locked) and nothing was written.
  EXPECT_EQ(batch_test::ReadFile(dir.Path("results.jsonl")), "");
}

}  // namespace
}  // namespace sluice
