// The proxy's queue: which waiting request is reserved next.
//
// Reservations through the policy go into debt in the order they are made:
// a request reserved now waits behind every request reserved before it, in
// this process and in every other sharing the buckets. So the proxy keeps
// its waiting requests in a queue of its own (one per upstream), by
// priority and FIFO within a priority, and hands one at a time to the
// client: the next is reserved only when the one before it has started
// (its permits came due and it was sent). A request that arrives with a
// higher priority than the one being reserved takes its place: the one
// being reserved is withdrawn (its reservation given back) and goes back to
// the front of its priority. So a high request never waits behind a low
// one's reservation.
//
// The dispatcher decides; it does not talk to the client. Submit and
// Withdraw do, and the proxy reports back with Started, Returned and Ended.
//
// Thread safety: not thread-safe; the proxy uses it on its loop thread only.

#ifndef SLUICE_SRC_PROXY_DISPATCHER_H_
#define SLUICE_SRC_PROXY_DISPATCHER_H_

#include <array>
#include <cstddef>
#include <functional>
#include <list>

#include "sluice/limits.h"

namespace sluice {
namespace proxy_internal {

// One request as the dispatcher sees it. The proxy owns it; it must outlive
// its time in the dispatcher (until Ended, or a Remove that returned true).
struct Ticket {
  enum class State { kNew, kQueued, kReserving, kStarted, kDone };
  Priority priority = Priority::kNormal;
  State state = State::kNew;
  bool withdrawing = false;  // Withdraw was asked and has not come back
  std::list<Ticket*>::iterator where;
};

class Dispatcher {
 public:
  // Hands a ticket to the client to be reserved and sent.
  using Submit = std::function<void(Ticket*)>;
  // Asks the client to give back a ticket being reserved, unless it has
  // started; it comes back through Returned (or Started, if it had).
  using Withdraw = std::function<void(Ticket*)>;

  Dispatcher(Submit submit, Withdraw withdraw);

  // A new request: queued, and submitted when its turn comes.
  void Add(Ticket* ticket);
  // The ticket being reserved was sent: the next one's turn.
  void Started(Ticket* ticket);
  // A withdrawn ticket came back unstarted: back to the front of its
  // priority.
  void Returned(Ticket* ticket);
  // A submitted ticket ended without starting (refused, timed out,
  // cancelled), or a started one finished.
  void Ended(Ticket* ticket);
  // Asks the client to give back the ticket being reserved, if there is one
  // and it is not being withdrawn already: after a reload, so that it is
  // reserved again under the new limits (it comes back through Returned, or
  // Started if it had started).
  void WithdrawReserving();
  // Takes a queued ticket out (its client went away, its time ran out):
  // true if it was queued. A ticket being reserved is not removed (cancel
  // it in the client; it ends through Ended).
  bool Remove(Ticket* ticket);

  size_t queued() const { return queued_; }
  const Ticket* reserving() const { return reserving_; }

 private:
  void Pump();
  std::list<Ticket*>& QueueOf(const Ticket* ticket);

  Submit submit_;
  Withdraw withdraw_;
  std::array<std::list<Ticket*>, 3> queues_;  // by Priority, high first
  size_t queued_ = 0;
  Ticket* reserving_ = nullptr;
};

}  // namespace proxy_internal
}  // namespace sluice

#endif  // SLUICE_SRC_PROXY_DISPATCHER_H_
