// Runs the built `sluice` binary (SLUICE_CLI_PATH, defined by CMake) from a
// test, as a user would: its exit status, stdout and stderr. Output goes to
// temporary files rather than pipes, so that a chatty child can never block
// on a full pipe while the test waits for it (or kills it).
#ifndef SLUICE_TESTS_TOOLS_CLI_RUNNER_H_
#define SLUICE_TESTS_TOOLS_CLI_RUNNER_H_

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

extern char** environ;

namespace sluice {

struct CliResult {
  int status = -1;  // the exit code, or 128 + the signal that killed it
  std::string out;
  std::string err;
};

// Prints a result in failure messages, so a wrong status shows why.
inline void PrintTo(const CliResult& r, std::ostream* os) {
  *os << "status " << r.status << "\nstdout:\n" << r.out << "stderr:\n" << r.err;
}

// Starts `sluice args...` with the given descriptors as its stdin, stdout and
// stderr (-1 keeps the test's own). Returns the pid, or -1 (and fails the
// test) when it cannot start.
inline pid_t SpawnCli(const std::vector<std::string>& args, int in, int out, int err) {
  std::vector<std::string> words = {SLUICE_CLI_PATH};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (in >= 0) posix_spawn_file_actions_adddup2(&actions, in, STDIN_FILENO);
  if (out >= 0) posix_spawn_file_actions_adddup2(&actions, out, STDOUT_FILENO);
  if (err >= 0) posix_spawn_file_actions_adddup2(&actions, err, STDERR_FILENO);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << argv[0] << ": " << std::strerror(rc);
    return -1;
  }
  return pid;
}

// Waits for `pid` at most `limit`; past that, kills it and fails the test, so
// that a hung binary fails one test rather than the whole run. Returns the
// exit code, or 128 + the signal that ended it.
inline int WaitCli(pid_t pid, absl::Duration limit = absl::Minutes(4)) {
  const absl::Time deadline = absl::Now() + limit;
  int status = 0;
  for (;;) {
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) return -1;
    if (absl::Now() > deadline) {
      ADD_FAILURE() << "sluice did not exit within " << limit;
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Everything written to `f` so far.
inline std::string ReadAll(FILE* f) {
  std::string text;
  std::rewind(f);
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), f)) > 0;) text.append(buf, n);
  return text;
}

// One run of the binary, started and then waited for (or killed).
class CliProcess {
 public:
  explicit CliProcess(const std::vector<std::string>& args) {
    out_ = std::tmpfile();
    err_ = std::tmpfile();
    if (out_ == nullptr || err_ == nullptr) {
      ADD_FAILURE() << "tmpfile: " << std::strerror(errno);
      return;
    }
    pid_ = SpawnCli(args, -1, fileno(out_), fileno(err_));
  }
  CliProcess(const CliProcess&) = delete;
  CliProcess& operator=(const CliProcess&) = delete;
  ~CliProcess() {
    if (pid_ > 0 && !waited_) {
      kill(pid_, SIGKILL);
      Wait();
    }
    if (out_ != nullptr) std::fclose(out_);
    if (err_ != nullptr) std::fclose(err_);
  }

  pid_t pid() const { return pid_; }
  void Kill(int signal) {
    if (pid_ > 0 && !waited_) kill(pid_, signal);
  }

  // Waits for it to end and collects what it printed.
  CliResult Wait() {
    CliResult result;
    if (pid_ <= 0 || waited_) return result;
    result.status = WaitCli(pid_);
    waited_ = true;
    result.out = ReadAll(out_);
    result.err = ReadAll(err_);
    return result;
  }

 private:
  pid_t pid_ = -1;
  bool waited_ = false;
  FILE* out_ = nullptr;
  FILE* err_ = nullptr;
};

// Runs `sluice args...` to completion.
inline CliResult RunCli(const std::vector<std::string>& args) { return CliProcess(args).Wait(); }

}  // namespace sluice

#endif  // SLUICE_TESTS_TOOLS_CLI_RUNNER_H_
