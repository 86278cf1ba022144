// For tests that run `sluice proxy` as a process of its own: in front of a
// simulated provider with no limits (in the test's process), on a scratch
// segment, with a limits file the test may rewrite and reload with SIGHUP.
#ifndef SLUICE_TESTS_TOOLS_PROXY_PROCESS_H_
#define SLUICE_TESTS_TOOLS_PROXY_PROCESS_H_

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/store/segment_test_util.h"
#include "tests/tools/cli_runner.h"
#include "tests/tools/provider_process.h"
#include "tools/fake_provider/fake_provider.h"

namespace sluice {

inline void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

class ProxyProcess {
 public:
  // Starts `sluice proxy --listen 127.0.0.1:0` with `limits` as its limits
  // file, then `flags`, and waits until it listens (url() is empty, and the
  // test has failed, if it does not).
  explicit ProxyProcess(const std::string& limits, const std::vector<std::string>& flags = {}) {
    FakeProviderOptions options;
    options.unlimited = true;
    auto provider = FakeProvider::Start(options);
    if (!provider.ok()) {
      ADD_FAILURE() << provider.status();
      return;
    }
    provider_ = *std::move(provider);
    WriteLimits(limits);
    std::vector<std::string> args = {"proxy",         "--listen",        "127.0.0.1:0",
                                     "--config",      limits_path_,      "--segment",
                                     segment_.path(), "--anthropic-url", provider_->base_url()};
    args.insert(args.end(), flags.begin(), flags.end());
    process_ = std::make_unique<CliProcess>(args);
    url_ = ProviderUrl(*process_);
    EXPECT_NE(url_, "") << "sluice proxy did not start";
  }
  ~ProxyProcess() { std::remove(limits_path_.c_str()); }
  ProxyProcess(const ProxyProcess&) = delete;
  ProxyProcess& operator=(const ProxyProcess&) = delete;

  // "http://127.0.0.1:PORT"; empty if it did not start.
  const std::string& url() const { return url_; }
  int port() const { return url_.empty() ? 0 : std::stoi(url_.substr(url_.rfind(':') + 1)); }
  CliProcess& process() { return *process_; }
  FakeProvider& provider() { return *provider_; }

  // Rewrites the limits file (SIGHUP makes the proxy read it).
  void WriteLimits(const std::string& limits) { WriteText(limits_path_, limits); }

 private:
  // Destroyed bottom up: the proxy (killed if still running) before the
  // segment it maps and the provider it calls.
  std::unique_ptr<FakeProvider> provider_;
  ScratchSegment segment_;
  std::string limits_path_ = absl::StrCat(segment_.path(), ".toml");
  std::unique_ptr<CliProcess> process_;
  std::string url_;
};

}  // namespace sluice

#endif  // SLUICE_TESTS_TOOLS_PROXY_PROCESS_H_
