// The client's scheduler: everything between "a request arrived" and "its
// result is known" except moving bytes. It holds the requests waiting to
// start (for their arrival time, reserved start time or retry delay, or for
// a full concurrency cap to free up), reserves their permits in the order
// they became due, hands them to a Transport, classifies what comes back,
// settles the permits, decides retries and feeds rate-limit headers back
// into the policy. It reads time only from its Clock and waits only in
// Transport::Poll, so on a fake clock and a scripted transport its timing
// is exact and a test needs no sleeps and no sockets.
//
// Thread safety: Run and Serve (the loop) are called from one thread at a
// time; Submit, Cancel and Stop from any thread. Internal to the client.
#ifndef SLUICE_SRC_CLIENT_SCHEDULER_H_
#define SLUICE_SRC_CLIENT_SCHEDULER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "sluice/client.h"
#include "sluice/clock.h"
#include "sluice/policy.h"
#include "sluice/transport.h"
#include "src/client/cold_start.h"
#include "src/client/release_watcher.h"

namespace sluice {

class Scheduler {
 public:
  // REQUIRES: `options` validated by Client::Create (base URL without a
  // trailing slash, the key resolved); `policy` (may be null) and
  // `transport` outlive the scheduler. `clock` is the policy store's when
  // there is a policy.
  Scheduler(ClientOptions options, Policy* policy, Transport* transport, Clock clock);
  ~Scheduler();

  // As Client::Run, Client::Serve, Client::Submit, Client::Cancel and
  // Client::Stop.
  void Run(const std::function<bool(CallRequest*)>& next, int max_in_flight,
           const std::function<void(size_t, CallResult)>& done);
  void Serve();
  uint64_t Submit(CallRequest request, std::function<void(CallResult)> done);
  void Cancel(uint64_t id);
  void Withdraw(uint64_t id);
  void Stop();

 private:
  struct Job;
  class Queue;
  struct CancelOrder {
    uint64_t id;
    bool only_unstarted;  // Withdraw: leave it be if its first attempt went out
  };
  // Where the loop's requests come from: Run's function, or only Submit.
  struct Source {
    const std::function<bool(CallRequest*)>* next = nullptr;
    const std::function<void(size_t, CallResult)>* done = nullptr;
    int max_in_flight = 0;
    size_t pulled = 0;
    bool more = false;
  };

  void Loop(Source& source);
  // Takes what other threads submitted and cancelled; true once stopped.
  bool TakeInbox();
  void Pull(Source& source);
  // Works out what the request sends and pays, and queues it.
  void Admit(std::unique_ptr<Job> job);
  void StartDue(int64_t now);
  void StartAttempt(std::unique_ptr<Job> job);
  void ExpireBlocked(int64_t now);
  void Finish(std::unique_ptr<Job> job);
  // What the response's headers say, fed back into the job's provider
  // buckets; `usage`: what the provider reported it counted, if anything.
  void Feedback(Job& job, const RateLimitInfo& info, const Classification& c,
                const std::optional<Usage>& usage);
  // One dimension of a response's rate-limit headers, the kind of bucket it
  // speaks of, and by how much its counts may be rounded.
  struct ReportedDimension {
    const RateLimitInfo::Dimension& dim;
    LimitKind kind;
    int64_t rounding;
  };
  static std::array<ReportedDimension, 4> Dimensions(Provider provider, const RateLimitInfo& info);
  // The provider buckets' burst, learned from what remains after this
  // request (the cold start; Policy::LearnProviderBurst).
  void LearnBurst(const Job& job, const std::array<ReportedDimension, 4>& dims,
                  const std::optional<Usage>& usage);
  // Resolves the job's route again when learned provider buckets superseded it.
  absl::Status Refresh(Job& job);
  // Holds a job back while another request probes its cold provider
  // buckets; true when it did (or ended it: its throttle wait ran out).
  bool AwaitProbe(std::unique_ptr<Job>& job, int64_t now, int64_t deadline);
  // The job's attempt ended (`responded`: with a response) or it went away:
  // ends its probe, if it was one, and any response ends the cold start.
  void EndProbe(Job& job, bool responded);
  // The error of a request whose wait for a probe outlasted its throttle timeout.
  absl::Status ColdWaitExpired(const Job& job) const;
  void Deliver(std::unique_ptr<Job> job, absl::Status status);
  // Ends job `id` (waiting or in flight) with Cancelled, saying `why`.
  void CancelNow(uint64_t id, absl::string_view why);
  void CancelAll();
  // Points the release watcher at the caps blocked jobs wait for.
  absl::Status WatchReleases();
  size_t outstanding() const;
  // The request's own limit on waiting in the throttle, or the client's.
  absl::Duration ThrottleTimeout(const Job& job) const;
  int64_t Now() const { return clock_.Now(); }

  const ClientOptions options_;
  Policy* const policy_;
  Transport* const transport_;
  const Clock clock_;
  CharacterEstimator estimator_;
  std::mt19937_64 rng_;
  std::unique_ptr<Queue> waiting_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Job>> in_flight_;
  std::vector<uint64_t> finished_;  // in flight, heard the end; filled inside Poll
  // Hears of leases returned anywhere on the host while requests wait on a
  // full concurrency cap; made the first time one does.
  std::unique_ptr<ReleaseWatcher> watcher_;
  std::vector<std::string> watched_caps_;
  ColdStart cold_start_;

  std::atomic<uint64_t> next_id_{1};
  // What other threads hand the loop.
  std::mutex mu_;
  std::vector<std::unique_ptr<Job>> submitted_;  // guarded by mu_
  std::vector<CancelOrder> cancels_;             // guarded by mu_
  bool stop_ = false;                            // guarded by mu_
};

}  // namespace sluice

#endif  // SLUICE_SRC_CLIENT_SCHEDULER_H_
