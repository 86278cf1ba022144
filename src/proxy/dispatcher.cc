#include "src/proxy/dispatcher.h"

#include <utility>

namespace sluice {
namespace proxy_internal {

Dispatcher::Dispatcher(Submit submit, Withdraw withdraw)
    : submit_(std::move(submit)), withdraw_(std::move(withdraw)) {}

std::list<Ticket*>& Dispatcher::QueueOf(const Ticket* ticket) {
  return queues_[static_cast<size_t>(ticket->priority)];
}

void Dispatcher::Add(Ticket* ticket) {
  std::list<Ticket*>& queue = QueueOf(ticket);
  ticket->where = queue.insert(queue.end(), ticket);
  ticket->state = Ticket::State::kQueued;
  ++queued_;
  // Priorities are ordered high first: a smaller value is more urgent.
  if (reserving_ != nullptr && ticket->priority < reserving_->priority) WithdrawReserving();
  Pump();
}

void Dispatcher::WithdrawReserving() {
  if (reserving_ == nullptr || reserving_->withdrawing) return;
  reserving_->withdrawing = true;
  withdraw_(reserving_);
}

void Dispatcher::Started(Ticket* ticket) {
  ticket->state = Ticket::State::kStarted;
  ticket->withdrawing = false;
  if (reserving_ == ticket) reserving_ = nullptr;
  Pump();
}

void Dispatcher::Returned(Ticket* ticket) {
  if (reserving_ == ticket) reserving_ = nullptr;
  ticket->withdrawing = false;
  std::list<Ticket*>& queue = QueueOf(ticket);
  ticket->where = queue.insert(queue.begin(), ticket);
  ticket->state = Ticket::State::kQueued;
  ++queued_;
  Pump();
}

void Dispatcher::Ended(Ticket* ticket) {
  if (ticket->state == Ticket::State::kQueued) Remove(ticket);
  ticket->state = Ticket::State::kDone;
  if (reserving_ == ticket) reserving_ = nullptr;
  Pump();
}

bool Dispatcher::Remove(Ticket* ticket) {
  if (ticket->state != Ticket::State::kQueued) return false;
  QueueOf(ticket).erase(ticket->where);
  --queued_;
  ticket->state = Ticket::State::kDone;
  return true;
}

void Dispatcher::Pump() {
  if (reserving_ != nullptr) return;
  for (std::list<Ticket*>& queue : queues_) {
    if (queue.empty()) continue;
    Ticket* next = queue.front();
    queue.pop_front();
    --queued_;
    next->state = Ticket::State::kReserving;
    reserving_ = next;
    submit_(next);
    return;
  }
}

}  // namespace proxy_internal
}  // namespace sluice
