// client_bench: how close sluice's client gets to wrk's request rate against
// the same endpoint — the simulated provider on 127.0.0.1 with limits off and
// no latency — with the same number of connections, in the same run.
//
//   BM_Wrk_Messages/connections:N     wrk (a C load generator), for the ceiling
//   BM_Client_Messages/connections:N  sluice::Client, N requests in flight,
//                                     through a policy whose limits never bind
//
// Each reports requests per second as the counter `req_per_s`; the ratio
// Client / Wrk is printed after the table (the floor is 0.5).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "benchmark/benchmark.h"
#include "sluice/client.h"
#include "sluice/limits.h"
#include "sluice/policy.h"
#include "sluice/store.h"
#include "tools/fake_provider/fake_provider.h"

namespace sluice {
namespace {

constexpr char kKey[] = "bench-key";
constexpr int kSeconds = 3;

// A fresh server for each benchmark, so that neither inherits the other's
// connections.
std::unique_ptr<FakeProvider> StartServer() {
  FakeProviderOptions options;
  options.unlimited = true;
  auto started = FakeProvider::Start(options);
  if (!started.ok()) {
    absl::FPrintF(stderr, "client_bench: %s\n", started.status().ToString());
    std::exit(1);
  }
  return *std::move(started);
}

const char kBody[] =
    R"({"model":"claude-sonnet-4","max_tokens":8,"messages":[{"role":"user","content":"hi"}]})";

// Runs wrk for kSeconds with `connections` connections (and as many
// threads as cores, at most that many) and returns its Requests/sec.
double RunWrk(const FakeProvider& server, int connections) {
  const std::string script = absl::StrFormat("/tmp/sluice-wrk-%d.lua", getpid());
  std::ofstream(script) << "wrk.method = \"POST\"\n"
                        << "wrk.body = '" << kBody << "'\n"
                        << "wrk.headers[\"content-type\"] = \"application/json\"\n"
                        << "wrk.headers[\"x-api-key\"] = \"" << kKey << "\"\n"
                        << "wrk.headers[\"anthropic-version\"] = \"2023-06-01\"\n";
  const std::string command =
      absl::StrFormat("wrk -t%d -c%d -d%ds -s %s %s/v1/messages 2>&1", std::min(2, connections),
                      connections, kSeconds, script, server.base_url());
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return 0;
  std::string output;
  char buf[512];
  while (fgets(buf, sizeof(buf), pipe) != nullptr) output += buf;
  pclose(pipe);
  unlink(script.c_str());
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    if (!absl::StartsWith(line, "Requests/sec:")) continue;
    double rate = 0;
    if (absl::SimpleAtod(absl::StripAsciiWhitespace(line.substr(13)), &rate)) return rate;
  }
  absl::FPrintF(stderr, "client_bench: no Requests/sec from wrk:\n%s\n", output);
  return 0;
}

void BM_Wrk_Messages(benchmark::State& state) {
  const std::unique_ptr<FakeProvider> server = StartServer();
  for (auto _ : state) {
    const double rate = RunWrk(*server, static_cast<int>(state.range(0)));
    state.counters["req_per_s"] = rate;
    state.SetIterationTime(kSeconds);
  }
}

void BM_Client_Messages(benchmark::State& state) {
  const std::unique_ptr<FakeProvider> server = StartServer();
  const int connections = static_cast<int>(state.range(0));
  auto config = ParseLimitsConfig(R"(
[providers.anthropic]
requests_per_minute = 6000000000
[scopes.global]
requests_per_minute = 6000000000
)",
                                  "bench");
  auto store = NewLocalStore();
  auto policy = Policy::Create(*config, store.get());
  ClientOptions options;
  options.provider = Provider::kAnthropic;
  options.base_url = server->base_url();
  options.api_key = kKey;
  auto client = Client::Create(options, policy->get());
  if (!client.ok()) {
    state.SkipWithError(std::string(client.status().message()).c_str());
    return;
  }
  const CallRequest request{.body = nlohmann::json::parse(kBody), .scope = ""};
  for (auto _ : state) {
    const int64_t start = Clock::MonotonicNanos();
    const int64_t end = start + int64_t{kSeconds} * 1'000'000'000;
    int64_t ok = 0, failed = 0;
    (*client)->Run(
        [&](CallRequest* r) {
          if (Clock::MonotonicNanos() >= end) return false;
          *r = request;
          return true;
        },
        connections, [&](size_t, CallResult r) { (r.status.ok() ? ok : failed) += 1; });
    const double seconds = static_cast<double>(Clock::MonotonicNanos() - start) / 1e9;
    state.counters["req_per_s"] = static_cast<double>(ok) / seconds;
    state.counters["failed"] = static_cast<double>(failed);
    state.SetIterationTime(seconds);
  }
}

BENCHMARK(BM_Wrk_Messages)->ArgName("connections")->Arg(16)->Iterations(1)->UseManualTime();
BENCHMARK(BM_Client_Messages)->ArgName("connections")->Arg(16)->Iterations(1)->UseManualTime();

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  RatioReporter() : ConsoleReporter(isatty(fileno(stdout)) ? OO_ColorTabular : OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      auto it = run.counters.find("req_per_s");
      if (it != run.counters.end()) rates_[run.run_name.function_name] = it->second.value;
    }
    ConsoleReporter::ReportRuns(runs);
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    const double wrk = rates_["BM_Wrk_Messages"], client = rates_["BM_Client_Messages"];
    if (wrk <= 0) return;
    absl::FPrintF(stdout,
                  "\nwrk %.0f req/s, sluice client %.0f req/s: ratio %.2f (floor 0.50) %s\n", wrk,
                  client, client / wrk, client / wrk >= 0.5 ? "ok" : "BELOW FLOOR");
  }

 private:
  std::map<std::string, double> rates_;
};

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  sluice::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
