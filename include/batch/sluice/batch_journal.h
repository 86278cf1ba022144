// File: batch_journal.h
// -----------------------------------------------------------------------------
// The results file of a batch as a crash-safe journal: one result line
// (batch_result.h) appended per answered input line, with one write(2) each,
// so that a process killed at any moment — kill -9 included — leaves every
// earlier result whole and at most one torn line at the end.
//
// Opening it takes an exclusive lock (flock) that a second batch on the same
// file cannot get, cuts off a torn last line, and reads what earlier runs
// answered; Resume() then says which input lines still need a result. The
// last result of a line is the one that counts, so a line sent again (one in
// flight at a crash, or a failed one with retry_failed) simply gets a newer
// result line.
//
// Thread safety: a ResultsJournal may be used by one thread at a time.
//
// Example:
//   auto journal = sluice::batch::ResultsJournal::Open("results.jsonl");
//   if (!journal.ok()) return journal.status();  // locked, unreadable, foreign
//   auto resume = (*journal)->Resume(input, /*retry_failed=*/false);
//   if (!resume.ok()) return resume.status();  // the results of another input
//   for (const auto& line : input.lines()) {
//     if (!resume->IsDone(line.number)) { /* send it, Append its result */ }
//   }

#ifndef SLUICE_BATCH_JOURNAL_H_
#define SLUICE_BATCH_JOURNAL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "sluice/batch_input.h"

namespace sluice {
namespace batch {

// ResumePoint
//
// Where a batch resumes: the input lines an earlier run answered for good.
struct ResumePoint {
  std::vector<bool> done;  // by line number (index 0 unused)
  size_t done_count = 0;   // lines done
  size_t retried = 0;      // lines whose last result failed, to send again (retry_failed)

  bool IsDone(size_t number) const { return number < done.size() && done[number]; }
};

// ResultsJournal
class ResultsJournal {
 public:
  // Opens (creating it when missing) the results file at `path`, locks it,
  // cuts off a torn last line and reads the result lines it holds.
  // PermissionDenied when it cannot be opened; FailedPrecondition when
  // another process holds its lock ("in use by another sluice batch") or a
  // line is not a result line ("PATH:N: not a sluice batch result line");
  // Internal when the torn line cannot be cut; NotFound/DataLoss when it
  // cannot be read.
  static absl::StatusOr<std::unique_ptr<ResultsJournal>> Open(const std::string& path);
  ~ResultsJournal();  // closes the file, which releases the lock
  ResultsJournal(const ResultsJournal&) = delete;
  ResultsJournal& operator=(const ResultsJournal&) = delete;

  const std::string& path() const { return path_; }
  // Whether Open cut off a torn last line (a crash mid-write).
  bool dropped_torn_line() const { return dropped_torn_line_; }
  // The result lines the file held when opened.
  size_t size() const { return records_.size(); }

  // Checks the results read at Open against `input` and says which lines are
  // done; with `retry_failed`, a line whose last result failed is not.
  // FailedPrecondition, naming both files and lines, when a result names a
  // line the input does not have or a custom_id other than the input line's
  // ("are these the results of another input?").
  absl::StatusOr<ResumePoint> Resume(const Input& input, bool retry_failed) const;

  // Appends `result` as one line, in as few write(2) calls as the kernel
  // allows (one, in practice). DataLoss ("PATH: reason") when writing fails.
  absl::Status Append(const nlohmann::ordered_json& result);

  // Flushes what was appended to the disk (fdatasync): appended lines reach
  // the kernel at once and survive a kill; this bounds what a power cut loses.
  absl::Status Sync();

 private:
  // One result line read at Open.
  struct Record {
    uint64_t line;  // the input line it answers, 1-based
    std::string custom_id;
    bool failed;
  };
  ResultsJournal(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  absl::Status Load();

  const std::string path_;
  const int fd_;
  bool dropped_torn_line_ = false;
  std::vector<Record> records_;  // in file order
};

}  // namespace batch
}  // namespace sluice

#endif  // SLUICE_BATCH_JOURNAL_H_
