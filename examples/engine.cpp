// An engine-style program: several workflow executions run the same pipeline at once. All
// tasks share one ReservationManager (one heartbeat thread, one set of counters, one listener),
// and the listener shows who each waiting task is waiting for, as an engine's UI would.

#include <cacheserialize/cacheserialize.hpp>
#include <chrono>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace cs = cacheserialize;
using namespace std::chrono_literals;

int main() {
  std::mutex out;
  cs::ManagerOptions options;
  options.heartbeat_interval = 200ms;  // short, so that this demo shows a few heartbeats
  options.listener = [&out](const cs::Event& e) {
    std::lock_guard<std::mutex> lock(out);
    switch (e.kind) {
      case cs::EventKind::acquired:
        std::cout << "  [" << e.key->task() << "] running as " << e.owner << "\n";
        break;
      case cs::EventKind::waiting:
        std::cout << "  [" << e.key->task() << "] waiting for " << e.holder << " (reserved until "
                  << cs::format_time(e.expires_at) << ")\n";
        break;
      case cs::EventKind::released:
        std::cout << "  [" << e.key->task() << "] stored its output\n";
        break;
      default:
        break;
    }
  };
  cs::ReservationManager<> manager(cs::InMemoryStorage(), cs::SystemClock(), options);

  auto fetch = cs::serialize_cached(
      [](const std::string& dataset) {
        std::this_thread::sleep_for(300ms);
        return std::vector<double>{1.0, 2.0, 3.0, static_cast<double>(dataset.size())};
      },
      cs::TaskOptions{"fetch", "2"}, manager);

  cs::TaskOptions train_options{"train", "1"};
  train_options.input_names = {"rows", "epochs", "run_id"};
  train_options.ignored_inputs = {"run_id"};  // logging only: must not split the cache
  auto train = cs::serialize_cached(
      [](const std::vector<double>& rows, int epochs, const std::string& /*run_id*/) {
        std::this_thread::sleep_for(500ms);  // longer than two heartbeats
        double sum = 0;
        for (double r : rows) sum += r;
        return sum * epochs;
      },
      train_options, manager);

  std::vector<std::thread> executions;
  std::vector<double> results(4);
  for (int i = 0; i < 4; ++i) {
    executions.emplace_back([&, i] {
      const auto rows = fetch("sales-2026");
      results[static_cast<std::size_t>(i)] = train(rows, 10, "execution-" + std::to_string(i));
    });
  }
  for (auto& t : executions) t.join();

  const cs::Stats s = manager.stats();
  std::cout << "4 executions, results:";
  for (double r : results) std::cout << ' ' << r;
  std::cout << "\nexecutions=" << s.executions << " waits=" << s.waits << " hits=" << s.hits
            << " heartbeats=" << s.heartbeats << "\n";
  for (double r : results) {
    if (r != results[0]) return 1;
  }
  return s.executions == 2 ? 0 : 1;  // fetch once, train once
}
