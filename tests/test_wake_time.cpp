// When a waiter looks again: the poll jitter's distribution, and a holder about to expire.

#include <catch2/catch.hpp>
#include <random>

#include "support.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

TEST_CASE("poll jitter spans 0.8x to 1.2x the poll interval, both ends included") {
  SECTION("the extreme random values give exactly the ends") {
    CHECK(cs::detail::jittered_poll(1s, 0) == 800ms);
    CHECK(cs::detail::jittered_poll(1s, 400) == 1200ms);
    CHECK(cs::detail::jittered_poll(1s, 401) == 800ms);  // the value is taken modulo 401
    CHECK(cs::detail::jittered_poll(1s, 200) == 1s);
  }

  SECTION("a seeded source reaches both ends and never leaves the range") {
    for (const cs::Duration poll : {cs::Duration(1s), cs::Duration(7ms), cs::Duration(5us),
                                    cs::Duration(std::chrono::hours(24 * 365))}) {
      std::mt19937_64 random(42);
      cs::Duration low = cs::Duration::max();
      cs::Duration high = cs::Duration::min();
      for (int i = 0; i < 20000; ++i) {
        const cs::Duration d = cs::detail::jittered_poll(poll, random());
        low = std::min(low, d);
        high = std::max(high, d);
      }
      INFO("poll " << poll.count() << " ns");
      CHECK(low == poll - poll / 5);
      CHECK(high == poll + poll / 5);
    }
  }

  SECTION("the distribution is even: each fifth of the range gets about a fifth of the draws") {
    std::mt19937_64 random(7);
    int buckets[5] = {};
    const int n = 50000;
    for (int i = 0; i < n; ++i) {
      const auto ms = std::chrono::duration_cast<std::chrono::microseconds>(
                          cs::detail::jittered_poll(1s, random()))
                          .count();
      ++buckets[std::min<long long>(4, (ms - 800000) / 80000)];
    }
    for (int b : buckets) {
      CHECK(b > n / 5 * 9 / 10);
      CHECK(b < n / 5 * 11 / 10);
    }
  }

  SECTION("a poll too long to scale is used as it is, not overflowed") {
    CHECK(cs::detail::jittered_poll(cs::Duration::max(), 400) == cs::Duration::max());
  }
}

TEST_CASE("a waiter wakes at the holder's expiry, the give-up time or the next poll") {
  const cs::TimePoint now = cs::ManualClock::default_start();
  const cs::TimePoint never = cs::TimePoint::max();

  SECTION("a notifying storage is not polled: the waiter sleeps until the expiry") {
    CHECK(cs::detail::wake_time(now, 30s, never, 1s, true) == now + 30s);
  }
  SECTION("a storage that cannot notify is polled") {
    CHECK(cs::detail::wake_time(now, 30s, never, 1s, false) == now + 1s);
    CHECK(cs::detail::wake_time(now, 300ms, never, 1s, false) == now + 300ms);
  }
  SECTION("the give-up time comes first") {
    CHECK(cs::detail::wake_time(now, 30s, now + 2s, 1s, true) == now + 2s);
  }
  SECTION("a live holder with no time left is looked at again within a millisecond") {
    CHECK(cs::detail::wake_time(now, 0s, never, 1s, true) == now + 1ms);
    CHECK(cs::detail::wake_time(now, 0s, never, 1s, false) == now + 1ms);
    CHECK(cs::detail::wake_time(now, 0s, never, 100us, false) == now + 100us);
  }
  SECTION("while the holder keeps reporting no time left, the pause doubles up to the poll") {
    cs::Duration recheck = cs::detail::expiry_recheck;
    std::vector<cs::Duration> pauses;
    for (int i = 0; i < 12; ++i) {
      pauses.push_back(cs::detail::wake_time(now, 0s, never, 1s, true, recheck) - now);
      recheck = cs::detail::next_recheck(0s, recheck, 1s);
    }
    CHECK(pauses == std::vector<cs::Duration>{1ms, 2ms, 4ms, 8ms, 16ms, 32ms, 64ms, 128ms, 256ms,
                                              512ms, 1s, 1s});
    CHECK(cs::detail::next_recheck(5ms, recheck, 1s) == cs::detail::expiry_recheck);
  }
}

namespace {

// An in-memory store that reports a holder's remaining life in whole milliseconds, rounded
// down, as Redis's PTTL does: a waiter that sleeps it wakes just before the expiry.
class MillisecondStorage : public cs::InMemoryStorage {
 public:
  cs::AcquireResult acquire(const cs::Key& key, const cs::AcquireRequest& req) {
    cs::AcquireResult r = cs::InMemoryStorage::acquire(key, req);
    r.remaining = std::chrono::duration_cast<std::chrono::milliseconds>(r.remaining);
    return r;
  }
};

}  // namespace

TEST_CASE(
    "a waiter takes over a holder whose remaining life rounds to zero at once, not a poll "
    "later") {
  cs::ManualClock clock;
  MillisecondStorage storage;
  cs::ReservationManager<cs::ManualClock, MillisecondStorage> manager(storage, clock);
  const cs::Key key("task", "1", "dead holder");
  const cs::TimePoint expiry = clock.now() + 300ms + 500us;
  // A holder that died: its reservation lives 300.5 ms and is never extended.
  REQUIRE(storage.acquire(key, {"dead", clock.now(), 300ms + 500us, false}).status ==
          cs::AcquireStatus::acquired);

  cs::CancellationSource stop;  // ends the waiter if the test fails before it takes over
  cs::ClaimOptions options;     // the default poll interval: 1 s
  options.cancel = stop.token();
  std::atomic<bool> took_over{false};
  cs::TimePoint acquired_at{};
  test::Threads threads;
  threads.spawn([&] {
    try {
      auto claim = manager.claim(key, options);
      acquired_at = clock.now();
      took_over = claim.hold().took_over();
      claim.hold().release();
    } catch (const cs::cancelled_error&) {
    }
  });
  REQUIRE(clock.wait_for_sleepers(1));
  CHECK(clock.next_deadline() == clock.now() + 300ms);  // "300 ms left": just before the expiry
  clock.advance_to(*clock.next_deadline());
  REQUIRE(clock.wait_for_sleepers(1));
  CHECK(*clock.next_deadline() <= expiry + 1ms);  // "0 ms left": looked at again very soon
  clock.advance_to(expiry + 1ms);
  stop.cancel();
  threads.join();
  CHECK(took_over.load());
  CHECK(acquired_at >= expiry);
  CHECK(acquired_at <= expiry + 1ms);
}
