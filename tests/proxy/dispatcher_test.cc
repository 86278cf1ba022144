// The proxy's queue: priority order, FIFO within a priority, one
// reservation at a time, and a high request taking the place of a low one
// being reserved.

#include "src/proxy/dispatcher.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sluice {
namespace proxy_internal {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

struct Named : Ticket {
  explicit Named(std::string n, Priority p = Priority::kNormal) : name(std::move(n)) {
    priority = p;
  }
  std::string name;
};

// Records what the dispatcher asks of the client.
class DispatcherTest : public ::testing::Test {
 protected:
  Dispatcher dispatcher_{[this](Ticket* t) { submitted_.push_back(Name(t)); },
                         [this](Ticket* t) { withdrawn_.push_back(Name(t)); }};
  std::vector<std::string> submitted_;
  std::vector<std::string> withdrawn_;

  static std::string Name(Ticket* t) { return static_cast<Named*>(t)->name; }
};

TEST_F(DispatcherTest, OneReservationAtATimeInArrivalOrder) {
  Named a("a"), b("b"), c("c");
  dispatcher_.Add(&a);
  dispatcher_.Add(&b);
  dispatcher_.Add(&c);
  EXPECT_THAT(submitted_, ElementsAre("a"));
  EXPECT_EQ(dispatcher_.queued(), 2u);
  EXPECT_EQ(a.state, Ticket::State::kReserving);
  EXPECT_EQ(b.state, Ticket::State::kQueued);
  dispatcher_.Started(&a);
  EXPECT_THAT(submitted_, ElementsAre("a", "b"));
  dispatcher_.Ended(&b);  // refused: the next one's turn all the same
  EXPECT_THAT(submitted_, ElementsAre("a", "b", "c"));
  EXPECT_EQ(dispatcher_.queued(), 0u);
  EXPECT_EQ(b.state, Ticket::State::kDone);
}

TEST_F(DispatcherTest, HigherPrioritiesFirstFifoWithin) {
  Named first("first");
  dispatcher_.Add(&first);  // being reserved
  Named low1("low1", Priority::kLow), normal1("normal1"), low2("low2", Priority::kLow),
      high1("high1", Priority::kHigh), normal2("normal2"), high2("high2", Priority::kHigh);
  for (Named* t : {&low1, &normal1, &low2, &high1, &normal2, &high2}) dispatcher_.Add(t);
  // "first" is normal: the high arrivals withdraw it once.
  EXPECT_THAT(withdrawn_, ElementsAre("first"));
  dispatcher_.Started(&first);  // it had started before the withdrawal reached it
  for (Named* t : {&high1, &high2, &normal1, &normal2, &low1, &low2}) {
    ASSERT_EQ(dispatcher_.reserving(), t);
    dispatcher_.Started(t);
  }
  EXPECT_THAT(submitted_,
              ElementsAre("first", "high1", "high2", "normal1", "normal2", "low1", "low2"));
  EXPECT_EQ(dispatcher_.reserving(), nullptr);
}

TEST_F(DispatcherTest, AWithdrawnTicketGoesBackToTheFrontOfItsPriority) {
  Named low1("low1", Priority::kLow), low2("low2", Priority::kLow);
  dispatcher_.Add(&low1);
  dispatcher_.Add(&low2);
  Named high("high", Priority::kHigh);
  dispatcher_.Add(&high);
  EXPECT_THAT(withdrawn_, ElementsAre("low1"));
  EXPECT_TRUE(low1.withdrawing);
  // Another high arrival does not withdraw it twice.
  Named high2("high2", Priority::kHigh);
  dispatcher_.Add(&high2);
  EXPECT_THAT(withdrawn_, ElementsAre("low1"));
  dispatcher_.Returned(&low1);
  EXPECT_FALSE(low1.withdrawing);
  dispatcher_.Started(&high);
  dispatcher_.Started(&high2);
  EXPECT_EQ(dispatcher_.reserving(), &low1);  // ahead of low2, which came later
  EXPECT_THAT(submitted_, ElementsAre("low1", "high", "high2", "low1"));
}

TEST_F(DispatcherTest, WithdrawReservingGivesBackTheTicketBeingReservedOnce) {
  dispatcher_.WithdrawReserving();  // nothing being reserved: nothing to do
  EXPECT_THAT(withdrawn_, IsEmpty());
  Named a("a"), b("b");
  dispatcher_.Add(&a);
  dispatcher_.Add(&b);
  dispatcher_.WithdrawReserving();
  dispatcher_.WithdrawReserving();
  EXPECT_THAT(withdrawn_, ElementsAre("a"));
  dispatcher_.Returned(&a);  // reserved again, ahead of b
  EXPECT_EQ(dispatcher_.reserving(), &a);
  EXPECT_THAT(submitted_, ElementsAre("a", "a"));
}

TEST_F(DispatcherTest, EqualOrLowerPriorityNeverWithdraws) {
  Named normal("normal"), normal2("normal2"), low("low", Priority::kLow);
  dispatcher_.Add(&normal);
  dispatcher_.Add(&normal2);
  dispatcher_.Add(&low);
  EXPECT_THAT(withdrawn_, IsEmpty());
}

TEST_F(DispatcherTest, RemoveTakesOutQueuedTicketsOnly) {
  Named a("a"), b("b"), c("c");
  dispatcher_.Add(&a);
  dispatcher_.Add(&b);
  dispatcher_.Add(&c);
  EXPECT_FALSE(dispatcher_.Remove(&a));  // being reserved: the client cancels it
  EXPECT_TRUE(dispatcher_.Remove(&b));
  EXPECT_FALSE(dispatcher_.Remove(&b));
  EXPECT_EQ(dispatcher_.queued(), 1u);
  dispatcher_.Ended(&a);
  EXPECT_THAT(submitted_, ElementsAre("a", "c"));
}

}  // namespace
}  // namespace proxy_internal
}  // namespace sluice
