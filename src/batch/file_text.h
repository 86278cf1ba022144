// Reading the batch's two files as text: a whole file at once, and its lines.
// Internal to src/batch.
#ifndef SLUICE_SRC_BATCH_FILE_TEXT_H_
#define SLUICE_SRC_BATCH_FILE_TEXT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice {
namespace batch_internal {

// The whole of `path`. NotFound ("path: reason") when it cannot be opened,
// DataLoss when reading fails part way.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// `text` cut into lines: a last line without '\n' counts, a "\r\n" ending
// loses its '\r'. The views point into `text`.
std::vector<absl::string_view> SplitLines(absl::string_view text);

}  // namespace batch_internal
}  // namespace sluice

#endif  // SLUICE_SRC_BATCH_FILE_TEXT_H_
