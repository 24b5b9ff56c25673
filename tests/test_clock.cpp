#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "support.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

TEST_CASE("a manual clock moves only when told to") {
  cs::ManualClock clock;
  const cs::TimePoint t0 = clock.now();
  CHECK(t0 == cs::ManualClock::default_start());
  clock.advance(1500ms);
  CHECK(clock.now() == t0 + 1500ms);
  clock.advance_to(t0 + 1h);
  CHECK(clock.now() == t0 + 1h);

  SECTION("copies share one time line") {
    cs::ManualClock copy = clock;
    copy.advance(1s);
    CHECK(clock.now() == t0 + 1h + 1s);
  }
  SECTION("it never goes back") {
    REQUIRE_THROWS_AS(clock.advance(-1ns), std::invalid_argument);
    REQUIRE_THROWS_WITH(clock.advance_to(t0), Catch::Contains("before the current time"));
    CHECK(clock.now() == t0 + 1h);
  }
}

TEST_CASE("a sleeper on the manual clock wakes exactly when fake time reaches its deadline") {
  cs::ManualClock clock;
  const cs::TimePoint deadline = clock.now() + 10s;
  std::atomic<bool> woke{false};
  std::thread sleeper([&] {
    clock.sleep_until(deadline);
    woke = true;
  });
  REQUIRE(clock.wait_for_sleepers(1));
  CHECK(clock.next_deadline() == deadline);

  clock.advance(10s - 1ns);
  // Still asleep: its deadline is in the future, and it is counted as a sleeper.
  REQUIRE(clock.wait_for_sleepers(1));
  CHECK_FALSE(woke);

  clock.advance(1ns);
  sleeper.join();
  CHECK(woke);
  CHECK(clock.sleepers() == 0);
}

TEST_CASE("advance_to_next_deadline steps from one sleeper's deadline to the next") {
  cs::ManualClock clock;
  const cs::TimePoint t0 = clock.now();
  std::thread a([&] { clock.sleep_for(5s); });
  std::thread b([&] { clock.sleep_for(7s); });
  REQUIRE(clock.wait_for_sleepers(2));
  CHECK(clock.advance_to_next_deadline() == t0 + 5s);
  a.join();
  REQUIRE(clock.wait_for_sleepers(1));
  CHECK(clock.advance_to_next_deadline() == t0 + 7s);
  b.join();
  CHECK_FALSE(clock.advance_to_next_deadline().has_value());
  CHECK(clock.now() == t0 + 7s);
}

TEST_CASE("a raised signal ends a wait on either clock before its deadline") {
  SECTION("manual clock") {
    cs::ManualClock clock;
    cs::Signal signal;
    std::atomic<bool> result{false};
    std::thread waiter([&] { result = clock.wait_until(signal, clock.now() + 1h); });
    REQUIRE(clock.wait_for_sleepers(1));
    signal.notify();
    waiter.join();
    CHECK(result);
    CHECK(clock.now() == cs::ManualClock::default_start());
  }
  SECTION("system clock") {
    cs::SystemClock clock;
    cs::Signal signal;
    std::atomic<bool> result{false};
    std::thread waiter([&] { result = clock.wait_until(signal, cs::TimePoint::max()); });
    signal.notify();
    waiter.join();
    CHECK(result);
  }
  SECTION("a signal raised before the wait returns at once") {
    cs::ManualClock clock;
    cs::Signal signal;
    signal.notify();
    CHECK(clock.wait_until(signal, cs::TimePoint::max()));
    signal.reset();
    CHECK_FALSE(signal.raised());
  }
}

TEST_CASE("a wait whose deadline has passed returns at once without the signal") {
  cs::ManualClock manual;
  cs::Signal signal;
  CHECK_FALSE(manual.wait_until(signal, manual.now()));
  cs::SystemClock system;
  CHECK_FALSE(system.wait_until(signal, system.now() - 1s));
  CHECK_FALSE(system.wait_until(signal, system.now() + 1ms));  // a real, very short deadline
}

TEST_CASE("wait_for_sleepers gives up after its real-time bound") {
  cs::ManualClock clock;
  CHECK_FALSE(clock.wait_for_sleepers(1, 10ms));
}

TEST_CASE("a sleeper whose signal is raised no longer counts as asleep") {
  cs::ManualClock clock;
  cs::Signal signal;
  test::Gate release;
  std::thread waiter([&] {
    clock.wait_until(signal, cs::TimePoint::max());
    release.wait();
  });
  REQUIRE(clock.wait_for_sleepers(1));
  signal.notify();
  CHECK(clock.sleepers() == 0);
  release.open();
  waiter.join();
}

TEST_CASE("cancelling a source wakes its registered waiters and stays cancelled") {
  cs::CancellationSource source;
  const cs::CancellationToken token = source.token();
  CHECK(token.can_be_cancelled());
  CHECK_FALSE(token.cancelled());
  CHECK_FALSE(cs::CancellationToken().can_be_cancelled());

  cs::Signal signal;
  {
    auto registration = token.subscribe(signal);
    source.cancel();
    CHECK(signal.raised());
  }
  CHECK(token.cancelled());
  source.cancel();  // idempotent

  SECTION("subscribing after the fact raises the signal at once") {
    cs::Signal late;
    auto registration = token.subscribe(late);
    CHECK(late.raised());
  }
}
