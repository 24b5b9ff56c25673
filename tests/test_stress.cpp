// Many threads x many keys on a fake clock that moves in random steps: when no holder dies,
// every key's function runs exactly once and every caller gets the right value.
//
// Time moves only when the system is quiescent (every worker and every heartbeat thread asleep
// on the clock), so a step can never catch a holder between acquiring and heartbeating: the
// run is as adversarial as the random steps make it, and still deterministic in its outcome.

#include <algorithm>
#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <random>

#include "support.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

TEST_CASE("stress: many threads and keys, random clock steps, each key runs exactly once") {
  const int managers = GENERATE(1, 3);
  CAPTURE(managers);
  constexpr int kWorkers = 6;
  constexpr int kKeys = 48;
  constexpr int kRounds = 3;  // each worker calls every key this many times

  cs::ManualClock clock;
  cs::InMemoryStorage storage;  // shared, as a store shared by processes would be
  std::vector<test::Manager> mgrs;
  for (int m = 0; m < managers; ++m) mgrs.emplace_back(storage, clock);
  // Start every manager's heartbeat thread now, so that quiescence has a fixed head count.
  for (auto& m : mgrs) {
    m.claim(cs::Key("warm-up", "1", std::to_string(&m - mgrs.data()))).hold().release();
  }

  std::array<std::atomic<int>, kKeys> runs{};
  using Fn = std::function<long(int)>;
  std::vector<cs::SerializedFunction<Fn, cs::ManualClock, cs::InMemoryStorage, long(int)>> fns;
  for (int m = 0; m < managers; ++m) {
    Fn body = [&, m](int k) -> long {
      ++runs[static_cast<std::size_t>(k)];
      // Work that lasts 0 to 45 fake seconds: up to four heartbeats.
      std::mt19937 rng(static_cast<unsigned>(k * 7919 + m));
      clock.sleep_for(std::chrono::milliseconds(rng() % 45000));
      return static_cast<long>(k) * k + 1;
    };
    fns.push_back(cs::serialize_cached(body, cs::TaskOptions{"stress", "1"},
                                       mgrs[static_cast<std::size_t>(m)]));
  }

  const cs::TimePoint end = clock.now() + std::chrono::hours(24 * 365);
  std::atomic<int> finished{0};
  std::atomic<int> wrong{0};
  test::Threads threads;
  for (int w = 0; w < kWorkers; ++w) {
    threads.spawn([&, w] {
      std::mt19937 rng(static_cast<unsigned>(w + 1));
      std::vector<int> order(kKeys);
      for (int k = 0; k < kKeys; ++k) order[static_cast<std::size_t>(k)] = k;
      auto& f = fns[static_cast<std::size_t>(w % managers)];
      for (int round = 0; round < kRounds; ++round) {
        std::shuffle(order.begin(), order.end(), rng);
        for (int k : order) {
          if (f(k) != static_cast<long>(k) * k + 1) ++wrong;
        }
      }
      ++finished;
      clock.sleep_until(end);  // stay counted as asleep until the test ends
    });
  }

  std::mt19937 rng(12345);
  const std::size_t everyone = kWorkers + static_cast<std::size_t>(managers);
  int steps = 0;
  for (;;) {
    REQUIRE(clock.wait_for_sleepers(everyone));
    if (finished == kWorkers) break;
    clock.advance(std::chrono::milliseconds(1 + rng() % 2000));
    ++steps;
  }
  clock.advance_to(end);
  threads.join();

  CHECK(wrong == 0);
  for (int k = 0; k < kKeys; ++k) {
    CAPTURE(k);
    CHECK(runs[static_cast<std::size_t>(k)] == 1);
  }
  std::uint64_t executions = 0, takeovers = 0, lost = 0, heartbeats = 0;
  for (auto& m : mgrs) {
    const cs::Stats s = m.stats();
    executions += s.executions;
    takeovers += s.takeovers;
    lost += s.lost;
    heartbeats += s.heartbeats;
  }
  CHECK(executions == static_cast<std::uint64_t>(kKeys + managers));  // + the warm-ups
  CHECK(takeovers == 0);
  CHECK(lost == 0);
  CHECK(heartbeats > 0);  // long bodies were kept alive by heartbeats
  CHECK(steps > 100);
}
