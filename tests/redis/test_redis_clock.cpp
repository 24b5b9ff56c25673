// Redis's clock is the authority: clients whose clocks are hours apart still serialise, and a
// holder's clock cannot lengthen its reservation.

#include <catch2/catch.hpp>
#include <chrono>
#include <exception>
#include <string>

#include "../support.hpp"
#include "redis_server.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;
using test::eventually;

namespace {

// The system clock, off by a fixed amount: a host whose clock is wrong.
class SkewedClock {
 public:
  explicit SkewedClock(cs::Duration offset) : offset_(offset) {}
  cs::TimePoint now() const noexcept { return cs::SystemClock().now() + offset_; }
  bool wait_until(cs::Signal& signal, cs::TimePoint deadline) const {
    return cs::SystemClock().wait_until(signal, cs::detail::saturating_add(deadline, -offset_));
  }

 private:
  cs::Duration offset_;
};

using SkewedManager = cs::ReservationManager<SkewedClock, cs::RedisStorage>;

cs::ManagerOptions short_reservations(test::Recorder& recorder) {
  cs::ManagerOptions o;
  o.heartbeat_interval = 100ms;
  o.grace_multiplier = 8;  // 800 ms by Redis's clock
  o.listener = recorder.listener();
  return o;
}

}  // namespace

TEST_CASE("Clients whose clocks are hours apart still run a body once: Redis's clock decides") {
  const cs::RedisOptions options = test::fresh_options();
  test::Recorder holder_events;
  test::Recorder waiter_events;
  const SkewedManager behind(cs::RedisStorage(options), SkewedClock(-3h),
                             short_reservations(holder_events));
  const SkewedManager ahead(cs::RedisStorage(options), SkewedClock(+3h),
                            short_reservations(waiter_events));
  test::Busy busy;
  auto slow = cs::serialize_cached(
      [&](int n) {
        busy.enter();
        return n + 1;
      },
      cs::TaskOptions{"skew", "1"}, behind);
  auto same_task_ahead =
      cs::serialize_cached([](int n) { return n + 1000; }, cs::TaskOptions{"skew", "1"}, ahead);

  int held_result = 0;
  int waiter_result = 0;
  std::string error;
  test::Threads threads;
  threads.spawn([&] { held_result = slow(1); });
  REQUIRE(busy.started.wait_for(1));
  threads.spawn([&] {
    try {
      waiter_result = same_task_ahead(1);
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  REQUIRE(waiter_events.wait_for(cs::EventKind::waiting));
  // By the waiter's clock the holder's expiry is 6 hours past; by Redis's, it is alive as long
  // as it heartbeats. Let several reservation lifetimes pass while it does.
  const auto extended = [&] { return behind.stats().heartbeats; };
  REQUIRE(eventually([&] { return extended() >= 20; }));  // 2 s: 2.5 reservation lifetimes
  CHECK(ahead.stats().executions == 0);
  const test::Recorded waiting = waiter_events.of(cs::EventKind::waiting).at(0);
  CHECK(waiting.expires_at < cs::SystemClock().now());  // the holder's own (slow) view

  busy.gate.open();
  threads.join();
  INFO(error);
  CHECK(error.empty());
  CHECK(held_result == 2);
  CHECK(waiter_result == 2);  // the holder's output, not its own
  CHECK(ahead.stats().executions == 0);
  CHECK(ahead.stats().takeovers == 0);
}

TEST_CASE("A holder whose clock runs hours ahead cannot lengthen its reservation") {
  const cs::RedisOptions options = test::fresh_options();
  cs::RedisStorage storage(options);
  test::Recorder events;
  const SkewedManager behind(storage, SkewedClock(-3h), short_reservations(events));
  auto task =
      cs::serialize_cached([](int n) { return n * 3; }, cs::TaskOptions{"skew", "2"}, behind);

  // A holder on a clock 3 hours ahead takes the reservation for 500 ms, then dies.
  const cs::TimePoint ahead_now = cs::SystemClock().now() + 3h;
  const auto dead = storage.acquire(task.key(5), {"dead-holder", ahead_now, 500ms, false});
  REQUIRE(dead.status == cs::AcquireStatus::acquired);

  const auto t0 = std::chrono::steady_clock::now();
  CHECK(task(5) == 15);  // taken over after ~500 ms of Redis's time, not 3 hours
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);
  CHECK(behind.stats().takeovers == 1);
  REQUIRE(events.count(cs::EventKind::took_over) == 1);
  CHECK(events.of(cs::EventKind::took_over)[0].holder == "dead-holder");
}

TEST_CASE(
    "A waiter takes over a dead holder within 20 ms of its expiry by Redis's clock, never before") {
  cs::RedisStorage storage = test::fresh_storage();
  const cs::ReservationManager<cs::SystemClock, cs::RedisStorage> manager(storage);
  REQUIRE(cs::ClaimOptions().poll_interval == 1s);  // the default: a poll is far longer than 20 ms
  storage.put(cs::Key("expiry", "1", "warm-up"), cs::StoredOutput::from_bytes("x"));

  // Redis's PTTL counts whole milliseconds: a waiter that wakes in the holder's last one is told
  // "alive, 0 ms left". It must look again at once, not a poll later.
  const cs::Duration ttl = 300ms;
  for (int i = 0; i < 20; ++i) {
    INFO("takeover " << i);
    const cs::Key key("expiry", "1", "k" + std::to_string(i));
    // The reservation's TTL starts on the server during the plant: its expiry falls between
    // the plant's start + ttl and its end + ttl.
    const auto plant_start = std::chrono::steady_clock::now();
    const cs::AcquireResult dead =
        storage.acquire(key, cs::AcquireRequest{"dead-owner", cs::SystemClock().now(), ttl, false});
    const auto plant_end = std::chrono::steady_clock::now();
    REQUIRE(dead.status == cs::AcquireStatus::acquired);

    auto claim = manager.claim(key);
    const auto taken = std::chrono::steady_clock::now();
    using us = std::chrono::microseconds;
    INFO("the plant took " << std::chrono::duration_cast<us>(plant_end - plant_start).count()
                           << " us, the takeover came "
                           << std::chrono::duration_cast<us>(taken - plant_start).count()
                           << " us after its start");
    REQUIRE_FALSE(claim.is_hit());
    CHECK(claim.waited());
    CHECK(claim.hold().took_over());
    CHECK(taken >= plant_start + ttl);       // not before the expiry
    CHECK(taken <= plant_end + ttl + 20ms);  // and within 20 ms of it
    CHECK(claim.hold().release() == cs::ReleaseStatus::released);
  }
  CHECK(manager.stats().takeovers == 20);
}
