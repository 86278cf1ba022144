// The results file of a batch: lock, torn-line repair, resume, appends
// (sluice/batch_journal.h).

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "sluice/batch_journal.h"
#include "src/batch/file_text.h"

namespace sluice {
namespace batch {

absl::StatusOr<std::unique_ptr<ResultsJournal>> ResultsJournal::Open(const std::string& path) {
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (fd < 0) return absl::PermissionDeniedError(absl::StrCat(path, ": ", std::strerror(errno)));
  std::unique_ptr<ResultsJournal> journal(new ResultsJournal(path, fd));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": in use by another sluice batch (it holds the file's lock)"));
  }
  if (absl::Status s = journal->Load(); !s.ok()) return s;
  return journal;
}

ResultsJournal::~ResultsJournal() { close(fd_); }

absl::Status ResultsJournal::Load() {
  absl::StatusOr<std::string> text = batch_internal::ReadWholeFile(path_);
  if (!text.ok()) return text.status();
  // A crash mid-write leaves at most one torn line, the last: cut it off.
  const size_t newline = text->rfind('\n');
  const size_t keep = newline == std::string::npos ? 0 : newline + 1;
  if (keep < text->size()) {
    if (ftruncate(fd_, static_cast<off_t>(keep)) != 0) {
      return absl::InternalError(
          absl::StrCat(path_, ": truncating a torn last line: ", std::strerror(errno)));
    }
    text->resize(keep);
    dropped_torn_line_ = true;
  }
  for (absl::string_view line : batch_internal::SplitLines(*text)) {
    const nlohmann::json doc = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!doc.is_object() || !doc.contains("line") || !doc["line"].is_number_unsigned()) {
      return absl::FailedPreconditionError(
          absl::StrCat(path_, ":", records_.size() + 1,
                       ": not a sluice batch result line; refusing to append to this file"));
    }
    Record record;
    record.line = doc["line"].get<uint64_t>();
    if (doc.contains("custom_id") && doc["custom_id"].is_string()) {
      record.custom_id = doc["custom_id"].get<std::string>();
    }
    record.failed = doc.contains("status") && doc["status"] == "failed";
    records_.push_back(std::move(record));
  }
  return absl::OkStatus();
}

absl::StatusOr<ResumePoint> ResultsJournal::Resume(const Input& input, bool retry_failed) const {
  const size_t lines = input.size();
  ResumePoint resume;
  resume.done.assign(lines + 1, false);
  std::vector<bool> failed(lines + 1, false);  // by line: its last result failed
  for (size_t k = 1; k <= records_.size(); ++k) {
    const Record& r = records_[k - 1];
    if (r.line == 0 || r.line > lines) {
      return absl::FailedPreconditionError(
          absl::StrCat(path_, ":", k, ": result for line ", r.line, ", but ", input.path(), " has ",
                       lines, " lines; are these the results of another input?"));
    }
    const std::string& expected = input.lines()[r.line - 1].custom_id;
    if (r.custom_id != expected) {
      return absl::FailedPreconditionError(
          absl::StrCat(path_, ":", k, ": result for line ", r.line, " has custom_id '", r.custom_id,
                       "' but ", input.path(), ":", r.line, " has '", expected,
                       "'; are these the results of another input?"));
    }
    // The last result of a line is the one that counts.
    resume.done[r.line] = true;
    failed[r.line] = r.failed;
  }
  for (size_t n = 1; n <= lines; ++n) {
    if (retry_failed && failed[n]) {
      resume.done[n] = false;
      ++resume.retried;
    }
    resume.done_count += resume.done[n];
  }
  return resume;
}

absl::Status ResultsJournal::Append(const nlohmann::ordered_json& result) {
  std::string line = result.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  line.push_back('\n');
  absl::string_view rest = line;
  while (!rest.empty()) {
    const ssize_t n = write(fd_, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::DataLossError(absl::StrCat(path_, ": ", std::strerror(errno)));
    rest.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status ResultsJournal::Sync() {
  if (fdatasync(fd_) != 0) {
    return absl::DataLossError(absl::StrCat(path_, ": fdatasync: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace batch
}  // namespace sluice
