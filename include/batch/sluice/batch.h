// File: batch.h
// -----------------------------------------------------------------------------
// The resumable batch runner: sends every line of a JSONL input file
// (batch_input.h) through a throttled Client, many at once, and appends one
// result line per input line (batch_result.h) to a results file
// (batch_journal.h) as soon as its request is done. A run killed at any
// moment — kill -9 included — resumes where it stopped: run again on the
// same files, it sends only the lines without a result (those in flight at
// the crash among them) and, with retry_failed, those whose last result
// failed. Invalid lines are answered at once with the reason; the others are
// sent. Each request carries its line's custom_id in the x-sluice-custom-id
// header (client.h's kCustomIdHeader).
//
// The pieces — ReadInput, ResultsJournal, Tally — are public for callers that
// drive their own loop; Runner is the loop `sluice batch` runs.
//
// Thread safety: a Runner may be used by one thread at a time; its callbacks
// run on the thread that called Run. RequestStop on the stop token may come
// from any thread.
//
// Example:
//   auto runner = sluice::batch::Runner::Open(
//       {.input = "requests.jsonl", .results = "results.jsonl"});
//   if (!runner.ok()) return runner.status();
//   // Lines bring no keys: without the client's, fail here, not on every line.
//   auto client = sluice::Client::Create(
//       {.provider = (*runner)->input().provider(), .require_api_key = true}, policy.get());
//   if (!client.ok()) return client.status();
//   absl::StatusOr<sluice::batch::Progress> done = (*runner)->Run(**client);

#ifndef SLUICE_BATCH_H_
#define SLUICE_BATCH_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/batch_input.h"
#include "sluice/batch_journal.h"
#include "sluice/batch_result.h"
#include "sluice/batch_tally.h"
#include "sluice/client.h"
#include "sluice/clock.h"
#include "sluice/policy.h"

namespace sluice {
namespace batch {

struct RunnerOptions {
  std::string input;    // the input file (JSONL)
  std::string results;  // the results file (JSONL); an existing one is resumed
  // The provider the batch is for; nullopt: the shape of the first valid line.
  std::optional<Provider> provider;
  // On resume, send again the lines whose last result is "failed".
  bool retry_failed = false;
  // Requests sent or waiting for permits at once. REQUIRES: >= 1.
  int max_in_flight = 64;
  // Mark every result line "simulated": answered by a simulated provider.
  bool simulated = false;
  // Times the run (Progress::sent_elapsed, how often results are synced).
  Clock clock = Clock::Monotonic();
};

// Progress
//
// Where a run stands: what the input holds, what earlier runs answered, and
// what this run has answered so far.
struct Progress {
  size_t total = 0;             // input lines
  size_t already_done = 0;      // answered by an earlier run
  size_t retried = 0;           // failed in an earlier run, sent again (retry_failed)
  size_t this_run = 0;          // lines this run is to answer
  size_t invalid = 0;           // answered as invalid by this run
  Tally calls;                  // the requests this run sent and had answered
  absl::Duration sent_elapsed;  // from the first request sent to the last answer
  bool stopped = false;         // the stop token ended the run with lines unanswered

  size_t finished() const { return invalid + calls.finished(); }  // by this run
  size_t done() const { return already_done + finished(); }       // all told
};

struct Callbacks {
  // After each answered request, once its result line is written.
  std::function<void(const Progress&)> on_progress;
  std::function<void(const InputLine&, const CallResult&)> on_result;
};

// Runner
class Runner {
 public:
  // What sends the requests: Client::Run's contract (pull requests from
  // `next` until it returns false, at most `max_in_flight` at once, and call
  // `done(index, result)` on this thread as each finishes, index = order
  // pulled; return when all are done).
  using Send = std::function<void(const std::function<bool(CallRequest*)>& next, int max_in_flight,
                                  const std::function<void(size_t, CallResult)>& done)>;

  // Reads and checks the input (ReadInput), then opens the results file
  // (ResultsJournal::Open) and reads where an earlier run stopped
  // (ResultsJournal::Resume). Fails with their errors; InvalidArgument when
  // max_in_flight < 1.
  static absl::StatusOr<std::unique_ptr<Runner>> Open(RunnerOptions options);

  const Input& input() const { return input_; }
  const ResultsJournal& journal() const { return *journal_; }
  const ResumePoint& resume() const { return resume_; }

  // Resolves, in `policy`, the route of every line still to send, charged to
  // `scope`. A route that cannot be resolved (a budget with no price for the
  // model) is a problem of the configuration, the same for every such line:
  // its error is returned, so that the caller can stop before anything is
  // sent rather than fail line after line.
  absl::Status CheckRoutes(Policy& policy, absl::string_view scope) const;

  // Answers the invalid lines still unanswered, then sends the valid ones
  // through `client` (its scope, no per-request scope) and appends each
  // result as it comes. Returns the final Progress; DataLoss when a result
  // cannot be written (nothing more is sent after that), FailedPrecondition
  // on a second call.
  //
  // Once `stop` is requested, no further request is pulled: those the client
  // already holds (at most max_in_flight) finish and their results are
  // written, and Run returns with Progress::stopped. A stop requested before
  // Run answers nothing. A later Runner on the same files resumes after the
  // answered lines.
  absl::StatusOr<Progress> Run(Client& client, const Callbacks& callbacks = {},
                               std::stop_token stop = {});
  // The same through any sender with Client::Run's contract.
  absl::StatusOr<Progress> Run(const Send& send, const Callbacks& callbacks = {},
                               std::stop_token stop = {});

 private:
  Runner(RunnerOptions options, Input input, std::unique_ptr<ResultsJournal> journal,
         ResumePoint resume);

  const RunnerOptions options_;
  const Input input_;
  std::unique_ptr<ResultsJournal> journal_;
  const ResumePoint resume_;
  bool ran_ = false;
};

}  // namespace batch
}  // namespace sluice

#endif  // SLUICE_BATCH_H_
