// A unit test of user code with the fake clock: a nightly report generator, wrapped with
// serialize_cached, must recover when the worker that started the report dies. The test
// simulates the dead worker's reservation, then moves fake time to just before and just after
// its expiry. No real sleeps, fully deterministic, and instant.

#include <atomic>
#include <cacheserialize/cacheserialize.hpp>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

namespace cs = cacheserialize;
using namespace std::chrono_literals;

// --- the user's code under test ----------------------------------------------------------
template <class Manager>
auto make_report_task(Manager manager, std::atomic<int>& generated) {
  return cs::serialize_cached(
      [&generated](const std::string& date) {
        ++generated;
        return "report for " + date;
      },
      cs::TaskOptions{"nightly-report", "3"}, manager);
}
// -----------------------------------------------------------------------------------------

#define EXPECT(cond)                                                       \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::cerr << __FILE__ << ":" << __LINE__ << ": failed: " #cond "\n"; \
      std::exit(1);                                                        \
    }                                                                      \
  } while (0)

int main() {
  cs::ManualClock clock;
  cs::InMemoryStorage storage;
  cs::ReservationManager<cs::ManualClock, cs::InMemoryStorage> manager(storage, clock);
  std::atomic<int> generated{0};
  auto report = make_report_task(manager, generated);

  // A worker on another host reserved tonight's report, then crashed: it will never heartbeat.
  const cs::TimePoint crash = clock.now();
  storage.acquire(report.key("2026-11-25"), {"worker-7:311:5eed:1", crash, 30s, false});

  std::string result;
  std::thread caller([&] { result = report("2026-11-25"); });
  EXPECT(clock.wait_for_sleepers(1));  // the caller waits for the dead worker's reservation

  clock.advance(30s - 1ms);  // still reserved: nobody may take over yet
  EXPECT(clock.wait_for_sleepers(1));
  EXPECT(generated == 0);

  clock.advance(1ms);  // expired: the caller takes over and generates the report
  caller.join();
  EXPECT(result == "report for 2026-11-25");
  EXPECT(generated == 1);
  EXPECT(manager.stats().takeovers == 1);

  EXPECT(report("2026-11-25") == "report for 2026-11-25");  // now a cache hit
  EXPECT(generated == 1);
  std::cout << "fake-clock test passed: takeover exactly at expiry, then a cache hit\n";
  return 0;
}
