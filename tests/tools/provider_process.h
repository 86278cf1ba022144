// For tests that run `sluice fake-provider` as a process of its own: the URL
// it prints once it listens, and its /stats.
#ifndef SLUICE_TESTS_TOOLS_PROVIDER_PROCESS_H_
#define SLUICE_TESTS_TOOLS_PROVIDER_PROCESS_H_

#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/tools/cli_runner.h"

namespace sluice {

// The URL `sluice fake-provider` prints once it listens, read from its
// stdout (a temporary file) through /proc; empty if it never does.
inline std::string ProviderUrl(const CliProcess& provider) {
  for (int i = 0; i < 250; ++i) {
    std::ifstream out(absl::StrCat("/proc/", provider.pid(), "/fd/1"));
    std::string line;
    if (std::getline(out, line) && line.find("http://") != std::string::npos) {
      return line.substr(line.find("http://"));
    }
    usleep(20'000);
  }
  return "";
}

inline nlohmann::json ProviderStats(const std::string& base_url) {
  httplib::Client client(base_url);
  const httplib::Result res = client.Get("/stats");
  if (!res || res->status != 200) {
    ADD_FAILURE() << "GET " << base_url << "/stats failed";
    return nlohmann::json::object();
  }
  return nlohmann::json::parse(res->body);
}

}  // namespace sluice

#endif  // SLUICE_TESTS_TOOLS_PROVIDER_PROCESS_H_
