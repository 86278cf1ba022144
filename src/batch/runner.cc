// The resumable batch runner (sluice/batch.h).

#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "sluice/batch.h"

namespace sluice {
namespace batch {
namespace {

// Written lines reach the kernel at once (a kill loses none); a sync this
// often bounds what a power cut could.
constexpr int64_t kSyncEveryNs = 1'000'000'000;

// One run's sending: pulls the pending lines into requests, writes each
// answer, counts it and reports it.
class Sending {
 public:
  Sending(const Input& input, ResultsJournal& journal, const RunnerOptions& options,
          const Callbacks& callbacks, std::stop_token stop, Progress& progress)
      : input_(input),
        journal_(journal),
        options_(options),
        callbacks_(callbacks),
        stop_(std::move(stop)),
        progress_(progress),
        last_sync_ns_(options.clock.Now()) {}

  void Add(size_t index) { pending_.push_back(index); }

  bool Next(CallRequest* request) {
    if (next_ == pending_.size() || !write_status_.ok() || stop_.stop_requested()) return false;
    const InputLine& line = input_.lines()[pending_[next_++]];
    request->body = input_.Body(line);
    request->scope = "";
    request->headers = {{kCustomIdHeader, line.custom_id}};
    by_index_.push_back(&line);
    if (first_sent_ns_ < 0) first_sent_ns_ = options_.clock.Now();
    return true;
  }

  void Done(size_t index, CallResult r) {
    const InputLine& line = *by_index_[index];
    write_status_.Update(journal_.Append(ResultLine(line, r, options_.simulated)));
    last_done_ns_ = options_.clock.Now();
    progress_.calls.Add(r);
    if (last_done_ns_ - last_sync_ns_ > kSyncEveryNs) {
      // A failed sync loses nothing a kill would; the writes are checked.
      journal_.Sync().IgnoreError();
      last_sync_ns_ = last_done_ns_;
    }
    if (callbacks_.on_result) callbacks_.on_result(line, r);
    if (callbacks_.on_progress) callbacks_.on_progress(progress_);
  }

  // The run is over: sync, and say how it ended.
  absl::Status Finish() {
    journal_.Sync().IgnoreError();
    if (first_sent_ns_ >= 0)
      progress_.sent_elapsed = absl::Nanoseconds(last_done_ns_ - first_sent_ns_);
    progress_.stopped = next_ < pending_.size() && stop_.stop_requested();
    return write_status_;
  }

 private:
  const Input& input_;
  ResultsJournal& journal_;
  const RunnerOptions& options_;
  const Callbacks& callbacks_;
  const std::stop_token stop_;
  Progress& progress_;
  std::vector<size_t> pending_;             // indexes into input_.lines()
  size_t next_ = 0;                         // into pending_
  std::vector<const InputLine*> by_index_;  // the client's index -> its line
  absl::Status write_status_;
  int64_t first_sent_ns_ = -1;
  int64_t last_done_ns_ = 0;
  int64_t last_sync_ns_;
};

}  // namespace

Runner::Runner(RunnerOptions options, Input input, std::unique_ptr<ResultsJournal> journal,
               ResumePoint resume)
    : options_(std::move(options)),
      input_(std::move(input)),
      journal_(std::move(journal)),
      resume_(std::move(resume)) {}

absl::StatusOr<std::unique_ptr<Runner>> Runner::Open(RunnerOptions options) {
  if (options.max_in_flight < 1) {
    return absl::InvalidArgumentError("max_in_flight must be at least 1");
  }
  absl::StatusOr<Input> input = ReadInput(options.input, options.provider);
  if (!input.ok()) return input.status();
  absl::StatusOr<std::unique_ptr<ResultsJournal>> journal = ResultsJournal::Open(options.results);
  if (!journal.ok()) return journal.status();
  absl::StatusOr<ResumePoint> resume = (*journal)->Resume(*input, options.retry_failed);
  if (!resume.ok()) return resume.status();
  return std::unique_ptr<Runner>(
      new Runner(std::move(options), *std::move(input), *std::move(journal), *std::move(resume)));
}

absl::Status Runner::CheckRoutes(Policy& policy, absl::string_view scope) const {
  std::set<std::string> models;
  for (const InputLine& line : input_.lines()) {
    if (resume_.IsDone(line.number) || !line.valid()) continue;
    models.insert(input_.Body(line).value("model", ""));
  }
  for (const std::string& model : models) {
    absl::StatusOr<const Route*> route =
        policy.Resolve(scope, ProviderName(input_.provider()), model);
    if (!route.ok()) return route.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<Progress> Runner::Run(Client& client, const Callbacks& callbacks,
                                     std::stop_token stop) {
  return Run(
      [&client](const std::function<bool(CallRequest*)>& next, int max_in_flight,
                const std::function<void(size_t, CallResult)>& done) {
        client.Run(next, max_in_flight, done);
      },
      callbacks, std::move(stop));
}

absl::StatusOr<Progress> Runner::Run(const Send& send, const Callbacks& callbacks,
                                     std::stop_token stop) {
  if (ran_) return absl::FailedPreconditionError("a batch Runner runs once; open another");
  ran_ = true;
  Progress progress;
  progress.total = input_.size();
  progress.already_done = resume_.done_count;
  progress.retried = resume_.retried;
  progress.this_run = input_.size() - resume_.done_count;
  if (stop.stop_requested()) {
    progress.stopped = progress.this_run > 0;
    return progress;
  }
  // Invalid lines are answered at once; the rest are sent.
  Sending sending(input_, *journal_, options_, callbacks, stop, progress);
  absl::Status write_status;
  for (size_t i = 0; i < input_.size(); ++i) {
    const InputLine& line = input_.lines()[i];
    if (resume_.IsDone(line.number)) continue;
    if (line.valid()) {
      sending.Add(i);
      continue;
    }
    write_status.Update(journal_->Append(InvalidResultLine(input_, line)));
    ++progress.invalid;
  }
  if (!write_status.ok()) return write_status;
  send([&](CallRequest* request) { return sending.Next(request); }, options_.max_in_flight,
       [&](size_t index, CallResult r) { sending.Done(index, std::move(r)); });
  if (absl::Status s = sending.Finish(); !s.ok()) return s;
  return progress;
}

}  // namespace batch
}  // namespace sluice
