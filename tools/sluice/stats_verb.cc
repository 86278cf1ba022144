// sluice stats, sluice top, sluice metrics: what a segment's buckets, budgets,
// concurrency caps and processes look like now, as a table (once or every
// --watch), a live full-screen view, or a Prometheus /metrics endpoint. The
// snapshots and their JSON and Prometheus forms live in the library
// (sluice/stats.h, sluice/stats_exposition.h), the text view and the /metrics
// server in tools/stats; this file wires flags, signals and the terminal to
// them.
//
// Every report opens the segment afresh (read-only, unregistered), so that a
// segment removed and created again is followed, and looking never shows up
// as a user of the segment.

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sluice/cluster_settings.h"
#include "sluice/cluster_stats.h"
#include "sluice/limits.h"
#include "tools/sluice/cli.h"
#include "tools/stats/stats.h"

ABSL_FLAG(bool, prometheus, false,
          "print the Prometheus text exposition (format 0.0.4) instead of a table");
ABSL_FLAG(absl::Duration, watch, absl::ZeroDuration(),
          "print the stats every DURATION (e.g. 1m) until SIGINT or SIGTERM; 0 prints them once");
ABSL_FLAG(absl::Duration, interval, absl::Seconds(1), "how often the view is redrawn");
ABSL_FLAG(int64_t, iterations, 0,
          "stop after this many reports (0: until SIGINT or SIGTERM, or q in top)");

namespace sluice {
namespace {

// The --config limits, or none: without a file, stats group by key only.
absl::StatusOr<std::optional<LimitsConfig>> ConfigFromFlags() {
  const std::string path = absl::GetFlag(FLAGS_config);
  if (path.empty()) return std::optional<LimitsConfig>();
  absl::StatusOr<LimitsConfig> config = LoadLimitsConfig(path);
  if (!config.ok()) return config.status();
  return std::optional<LimitsConfig>(*std::move(config));
}

// The fleet to show: --redis (over the file's [cluster] table, if any), or
// the file's [cluster] table; none without either.
absl::StatusOr<std::optional<ClusterSettings>> ClusterFor(
    const Command& cmd, const std::optional<LimitsConfig>& config) {
  const bool in_file = config && config->cluster;
  if (cmd.Given("redis")) {
    absl::StatusOr<ClusterSettings> cluster =
        ClusterFromFlags(cmd, in_file ? *config->cluster : ClusterSettings());
    if (!cluster.ok()) return cluster.status();
    return std::optional<ClusterSettings>(*std::move(cluster));
  }
  if (cmd.Given("mode")) return absl::InvalidArgumentError("--mode needs --redis");
  return in_file ? config->cluster : std::nullopt;
}

// A snapshot of the segment and, with `cluster`, of the fleet's Redis.
absl::StatusOr<StatsSnapshot> Snapshot(const std::optional<LimitsConfig>& config,
                                       const std::optional<ClusterSettings>& cluster = {}) {
  const LimitsConfig* limits = config ? &*config : nullptr;
  absl::StatusOr<StatsSnapshot> snapshot = TakeStatsSnapshot(absl::GetFlag(FLAGS_segment), limits);
  if (snapshot.ok() && cluster) AddClusterStats(*cluster, limits, &*snapshot);
  return snapshot;
}

// Checks --iterations and returns it.
absl::StatusOr<int64_t> IterationsFromFlags() {
  const int64_t iterations = absl::GetFlag(FLAGS_iterations);
  if (iterations < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--iterations must be 0 (no end) or more, got ", iterations));
  }
  return iterations;
}

// Blocks SIGINT and SIGTERM (and any `more`) in this thread and reads them
// from a signalfd, so that a loop waits for its next tick, a stop signal or a
// key in one poll, and never dies halfway through drawing.
class Signals {
 public:
  enum class Wake { kDeadline, kStop, kResize, kInput };

  static absl::StatusOr<std::unique_ptr<Signals>> Block(std::vector<int> more = {}) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    for (int sig : more) sigaddset(&set, sig);
    if (int err = pthread_sigmask(SIG_BLOCK, &set, nullptr); err != 0) {
      return absl::InternalError(absl::StrCat("blocking signals: ", std::strerror(err)));
    }
    const int fd = signalfd(-1, &set, SFD_CLOEXEC);
    if (fd < 0) return absl::InternalError(absl::StrCat("signalfd: ", std::strerror(errno)));
    return std::unique_ptr<Signals>(new Signals(fd));
  }
  ~Signals() { close(fd_); }

  // Waits until `deadline`, a signal, or input on `input_fd` (-1: none).
  Wake WaitUntil(absl::Time deadline, int input_fd) {
    for (;;) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return Wake::kDeadline;
      pollfd fds[2] = {{fd_, POLLIN, 0}, {input_fd, POLLIN, 0}};
      const int timeout_ms = static_cast<int>(std::min<int64_t>(
          absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))), 1 << 30));
      const int n = poll(fds, input_fd >= 0 ? 2 : 1, timeout_ms);
      if (n < 0 && errno != EINTR) return Wake::kStop;  // nothing left to wait with
      if (n <= 0) continue;
      if (fds[0].revents & POLLIN) {
        signalfd_siginfo info;
        if (read(fd_, &info, sizeof(info)) == sizeof(info) && info.ssi_signo == SIGWINCH) {
          return Wake::kResize;
        }
        return Wake::kStop;
      }
      if (input_fd >= 0 && fds[1].revents != 0) return Wake::kInput;
    }
  }

 private:
  explicit Signals(int fd) : fd_(fd) {}
  int fd_;
};

// The next tick of a schedule that started at `start`: never drifts, and
// skips ticks missed while a report was slow.
absl::Time NextTick(absl::Time start, absl::Duration every, absl::Time now) {
  absl::Duration remainder;
  const int64_t ticks = absl::IDivDuration(now - start, every, &remainder) + 1;
  return start + every * ticks;
}

// sluice stats -------------------------------------------------------------------

int RunStats(const Command& cmd) {
  const Verb& verb = *cmd.verb;
  const bool json = absl::GetFlag(FLAGS_json);
  const bool prometheus = absl::GetFlag(FLAGS_prometheus);
  if (json && prometheus) return UsageError(verb, "--json and --prometheus exclude each other");
  const absl::Duration watch = absl::GetFlag(FLAGS_watch);
  if (watch < absl::ZeroDuration() || watch == absl::InfiniteDuration()) {
    return UsageError(verb,
                      absl::StrCat("--watch must be a positive duration (or 0 for once), got ",
                                   absl::FormatDuration(watch)));
  }
  absl::StatusOr<int64_t> iterations = IterationsFromFlags();
  if (!iterations.ok()) return UsageError(verb, iterations.status().message());
  if (*iterations > 0 && watch == absl::ZeroDuration()) {
    return UsageError(verb, "--iterations counts --watch reports; give --watch too");
  }
  absl::StatusOr<std::optional<LimitsConfig>> config = ConfigFromFlags();
  if (!config.ok()) return Fail(cmd, config.status());
  absl::StatusOr<std::optional<ClusterSettings>> cluster = ClusterFor(cmd, *config);
  if (!cluster.ok()) return UsageError(verb, cluster.status().message());
  // The exposition has no cluster families: nothing to ask Redis.
  if (prometheus) cluster->reset();

  auto report = [&]() -> absl::Status {
    absl::StatusOr<StatsSnapshot> snapshot = Snapshot(*config, *cluster);
    if (!snapshot.ok()) return snapshot.status();
    const std::string text = json         ? FormatStatsJson(*snapshot)
                             : prometheus ? FormatPrometheus(*snapshot)
                                          : FormatStatsText(*snapshot);
    absl::FPrintF(stdout, "%s", text);
    std::fflush(stdout);
    return absl::OkStatus();
  };
  if (watch == absl::ZeroDuration()) {
    absl::Status s = report();
    return s.ok() ? kExitOk : Fail(cmd, s);
  }

  absl::StatusOr<std::unique_ptr<Signals>> signals = Signals::Block();
  if (!signals.ok()) return Fail(cmd, signals.status());
  const absl::Time start = absl::Now();
  for (int64_t n = 1;; ++n) {
    // A blank line between text reports, so that a log reads as one per tick.
    if (n > 1 && !json && !prometheus) absl::FPrintF(stdout, "\n");
    if (absl::Status s = report(); !s.ok()) return Fail(cmd, s);
    if (*iterations > 0 && n >= *iterations) return kExitOk;
    if ((*signals)->WaitUntil(NextTick(start, watch, absl::Now()), -1) == Signals::Wake::kStop) {
      return kExitOk;
    }
  }
}

// sluice top ---------------------------------------------------------------------

// The terminal as top leaves it: the alternate screen and a hidden cursor
// while drawing on a terminal; stdin without line buffering or echo, so that
// a 'q' is read at once (ISIG stays on, so Ctrl-C still stops it). Everything
// is restored when this goes away, before any error is printed.
class Terminal {
 public:
  Terminal() : out_tty_(isatty(STDOUT_FILENO) == 1) {
    if (isatty(STDIN_FILENO) == 1 && tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      in_raw_ = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    if (out_tty_) Write("\x1b[?1049h\x1b[?25l");
  }
  ~Terminal() {
    if (out_tty_) Write("\x1b[?25h\x1b[?1049l");
    if (in_raw_) tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;

  // stdin, when keys can be read from it; -1 otherwise.
  int input_fd() const { return in_raw_ ? STDIN_FILENO : -1; }

  // Reads what was typed; true if it holds a 'q'.
  bool QuitTyped() const {
    char buf[64];
    const ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] == 'q' || buf[i] == 'Q') return true;
    }
    return false;
  }

  // On a terminal, redraws in place: cursor home, each line cut to the
  // window's width (so nothing wraps) and cleared to its end, the rows past
  // the window left out, the rest of the screen cleared. Elsewhere, prints the
  // frame as it is, then a blank line.
  void Draw(absl::string_view frame) const {
    if (!out_tty_) {
      absl::FPrintF(stdout, "%s\n", frame);
      std::fflush(stdout);
      return;
    }
    winsize ws{};
    const bool sized = ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0;
    std::string out = "\x1b[H";
    int row = 0;
    for (absl::string_view line : absl::StrSplit(absl::StripSuffix(frame, "\n"), '\n')) {
      if (sized && row == ws.ws_row) break;
      if (row++ > 0) out += "\n";  // the terminal's output processing adds the CR
      if (sized && line.size() > ws.ws_col) line = line.substr(0, ws.ws_col);
      absl::StrAppend(&out, line, "\x1b[K");
    }
    out += "\x1b[J";
    Write(out);
  }

 private:
  static void Write(absl::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  }

  const bool out_tty_;
  bool in_raw_ = false;
  termios saved_{};
};

absl::Status TopLoop(absl::Duration interval, int64_t iterations,
                     const std::optional<LimitsConfig>& config,
                     const std::optional<ClusterSettings>& cluster, Signals& signals) {
  const Terminal terminal;
  const absl::Time start = absl::Now();
  for (int64_t n = 1;; ++n) {
    absl::StatusOr<StatsSnapshot> snapshot = Snapshot(config, cluster);
    if (!snapshot.ok()) return snapshot.status();
    terminal.Draw(
        absl::StrCat("sluice top: every ", absl::FormatDuration(interval),
                     terminal.input_fd() >= 0 ? ", q or Ctrl-C quits\n" : ", Ctrl-C quits\n",
                     FormatStatsText(*snapshot)));
    if (iterations > 0 && n >= iterations) return absl::OkStatus();
    for (bool redraw = false; !redraw;) {
      switch (signals.WaitUntil(NextTick(start, interval, absl::Now()), terminal.input_fd())) {
        case Signals::Wake::kStop:
          return absl::OkStatus();
        case Signals::Wake::kInput:
          if (terminal.QuitTyped()) return absl::OkStatus();
          break;
        case Signals::Wake::kDeadline:
        case Signals::Wake::kResize:
          redraw = true;
          break;
      }
    }
  }
}

int RunTop(const Command& cmd) {
  const Verb& verb = *cmd.verb;
  const absl::Duration interval = absl::GetFlag(FLAGS_interval);
  if (interval <= absl::ZeroDuration() || interval == absl::InfiniteDuration()) {
    return UsageError(verb, absl::StrCat("--interval must be a positive duration, got ",
                                         absl::FormatDuration(interval)));
  }
  absl::StatusOr<int64_t> iterations = IterationsFromFlags();
  if (!iterations.ok()) return UsageError(verb, iterations.status().message());
  absl::StatusOr<std::optional<LimitsConfig>> config = ConfigFromFlags();
  if (!config.ok()) return Fail(cmd, config.status());
  absl::StatusOr<std::optional<ClusterSettings>> cluster = ClusterFor(cmd, *config);
  if (!cluster.ok()) return UsageError(verb, cluster.status().message());
  // Checked before the screen is taken over, so that the error stays visible.
  if (absl::StatusOr<StatsSnapshot> first = Snapshot(*config); !first.ok()) {
    return Fail(cmd, first.status());
  }
  absl::StatusOr<std::unique_ptr<Signals>> signals = Signals::Block({SIGWINCH});
  if (!signals.ok()) return Fail(cmd, signals.status());
  absl::Status s = TopLoop(interval, *iterations, *config, *cluster, **signals);
  return s.ok() ? kExitOk : Fail(cmd, s);
}

// sluice metrics -----------------------------------------------------------------

int RunMetrics(const Command& cmd) {
  const Verb& verb = *cmd.verb;
  absl::StatusOr<ListenAddress> address = ParseListenAddress(absl::GetFlag(FLAGS_listen));
  if (!address.ok()) return UsageError(verb, address.status().message());
  absl::StatusOr<std::optional<LimitsConfig>> config = ConfigFromFlags();
  if (!config.ok()) return Fail(cmd, config.status());
  if (absl::StatusOr<StatsSnapshot> first = Snapshot(*config); !first.ok()) {
    return Fail(cmd, first.status());
  }
  if (absl::Status s = BlockStopSignals(); !s.ok()) return Fail(cmd, s);
  const std::optional<LimitsConfig>& limits = *config;
  absl::StatusOr<std::unique_ptr<MetricsServer>> server =
      MetricsServer::Start(*address, [&limits]() -> absl::StatusOr<std::string> {
        absl::StatusOr<StatsSnapshot> snapshot = Snapshot(limits);
        if (!snapshot.ok()) return snapshot.status();
        return FormatPrometheus(*snapshot);
      });
  if (!server.ok()) return Fail(cmd, server.status());
  absl::FPrintF(stdout, "metrics listening on %s\n", (*server)->url());
  std::fflush(stdout);  // a script waiting for the line must see it now
  if (absl::Status s = WaitForStopSignal(); !s.ok()) return Fail(cmd, s);
  (*server)->Stop();
  return kExitOk;
}

// The verbs ----------------------------------------------------------------------

constexpr absl::string_view kStatsFlags[] = {"segment", "config",     "json",  "prometheus",
                                             "watch",   "iterations", "redis", "mode"};
constexpr absl::string_view kTopFlags[] = {"segment",    "config", "interval",
                                           "iterations", "redis",  "mode"};
constexpr absl::string_view kMetricsFlags[] = {"listen", "segment", "config"};
constexpr absl::string_view kMetricsRequired[] = {"listen"};

const Verb kStatsVerb = {
    .order = 70,
    .name = "stats",
    .usage =
        "stats [--segment NAME] [--config FILE] [--json|--prometheus] "
        "[--watch DURATION [--iterations N]] [--redis URL [--mode lease|exact]]",
    .summary = "show every bucket's headroom, pressure and bottlenecks, budgets and processes",
    .description =
        "Prints, per scope and per provider model class, each bucket's rate, burst,\n"
        "available permits (and percent), pressure (low at 60% or more available,\n"
        "medium from 30%, high below) and how often it was the bottleneck; each USD\n"
        "budget's spend in the current UTC day or month; concurrency caps in flight;\n"
        "and the attached processes. Groups come from the bucket keys; with --config\n"
        "they also show the configured limits and each scope's path to its root, and\n"
        "list what no process has opened yet. --json prints one JSON document,\n"
        "--prometheus the Prometheus text exposition. --watch DURATION prints the\n"
        "report every DURATION until SIGINT or SIGTERM (exit 0), or --iterations\n"
        "times. Only reads: the segment must exist, and this process is not recorded\n"
        "in it.\n"
        "With a [cluster] table in the --config file (or --redis URL, which overrides\n"
        "its redis; the password comes from its password_env, or $SLUICE_REDIS_PASSWORD)\n"
        "it also shows the fleet: its Redis and mode, the hosts that leased in the last\n"
        "minute and how long ago, and each bucket's level in Redis beside this host's\n"
        "pool. Reading Redis changes nothing there and waits at most the table's timeout\n"
        "per command; when Redis cannot be read the report says why and the rest is\n"
        "shown as usual (exit 0). --prometheus leaves the fleet out.",
    .flags = kStatsFlags,
    .required = {},
    .args = {},
    .run = RunStats,
};
SLUICE_VERB(kStatsVerb);

const Verb kTopVerb = {
    .order = 71,
    .name = "top",
    .usage =
        "top [--segment NAME] [--config FILE] [--interval DURATION] [--iterations N] "
        "[--redis URL [--mode lease|exact]]",
    .summary = "a live full-screen view of the stats, redrawn in place",
    .description =
        "Shows what `sluice stats` prints, redrawn in place every --interval on the\n"
        "terminal's alternate screen, until q is typed (when stdin is a terminal),\n"
        "SIGINT or SIGTERM, or --iterations frames; the terminal is restored on exit.\n"
        "When stdout is not a terminal, the frames are printed one after another,\n"
        "separated by a blank line.",
    .flags = kTopFlags,
    .required = {},
    .args = {},
    .run = RunTop,
};
SLUICE_VERB(kTopVerb);

const Verb kMetricsVerb = {
    .order = 72,
    .name = "metrics",
    .usage = "metrics --listen HOST:PORT [--segment NAME] [--config FILE]",
    .summary = "serve the stats on /metrics for Prometheus to scrape",
    .description =
        "Serves GET /metrics on HOST:PORT (an IPv4 address, localhost or [IPv6]; port\n"
        "0 picks a free one) in the Prometheus text exposition format 0.0.4, from a\n"
        "fresh snapshot of the segment at every scrape (503 with the reason when the\n"
        "segment cannot be read); any other path is 404. The stats hold no secrets,\n"
        "but scope names, limits and process ids are there for anyone who can connect:\n"
        "listen on a non-loopback address only where the network is trusted. Prints\n"
        "\"metrics listening on http://HOST:PORT/metrics\" once it accepts connections\n"
        "and serves until SIGINT or SIGTERM, then exits 0.",
    .flags = kMetricsFlags,
    .required = kMetricsRequired,
    .args = {},
    .run = RunMetrics,
};
SLUICE_VERB(kMetricsVerb);

}  // namespace
}  // namespace sluice
