// Several processes, one Redis: each daily report is computed once, by whichever process asks
// first; the others wait for it (woken by pub/sub) and reuse it.
//
//   redis_workers [--host H] [--port P] [--prefix X] [--days N] [--threads T] [--measure]
//
// Start a Redis server (`redis-server`), then run a few of these at once:
//
//   for i in 1 2 3; do ./build/examples/redis_workers & done; wait
//
// The executions they print add up to --days (8): no report is computed twice. A second round
// computes nothing: the reports are stored (change --prefix to start afresh). --measure also
// prints the latency of a hit, a miss and a heartbeat extension, and their round trips.

#include <algorithm>
#include <atomic>
#include <cacheserialize/cacheserialize.hpp>
#include <cacheserialize/storage/redis.hpp>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

std::string expected_report(int day) { return "report for day " + std::to_string(day); }

// Runs `op` n times; prints the median and 99th percentile latency and the round trips per call.
template <class Op>
void measure(const char* what, int n, const cs::RedisStorage& storage, Op op) {
  std::vector<double> micros;
  micros.reserve(static_cast<std::size_t>(n));
  const std::uint64_t before = storage.stats().round_trips;
  for (int i = 0; i < n; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    op(i);
    const std::chrono::duration<double, std::micro> d = std::chrono::steady_clock::now() - t0;
    micros.push_back(d.count());
  }
  const double trips = static_cast<double>(storage.stats().round_trips - before) / n;
  std::sort(micros.begin(), micros.end());
  const auto at = [&](double q) { return micros[static_cast<std::size_t>(q * (n - 1))]; };
  std::cout << what << ": p50 " << static_cast<int>(at(0.5)) << " us, p99 "
            << static_cast<int>(at(0.99)) << " us, " << trips << " round trips per call\n";
}

}  // namespace

int main(int argc, char** argv) {
  cs::RedisOptions options;
  options.key_prefix = "redis_workers:";
  int days = 8;
  int threads = 4;
  bool latency = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--host" && has_value) {
      options.host = argv[++i];
    } else if (arg == "--port" && has_value) {
      options.port = std::stoi(argv[++i]);
    } else if (arg == "--prefix" && has_value) {
      options.key_prefix = argv[++i];
    } else if (arg == "--days" && has_value) {
      days = std::stoi(argv[++i]);
    } else if (arg == "--threads" && has_value) {
      threads = std::stoi(argv[++i]);
    } else if (arg == "--measure") {
      latency = true;
    } else {
      std::cerr << "usage: redis_workers [--host H] [--port P] [--prefix X] [--days N] "
                   "[--threads T] [--measure]\n";
      return 2;
    }
  }

  cs::RedisStorage storage(options);
  try {
    storage.ping();  // fail early, with the reason, if the server is not there
  } catch (const cs::storage_error& e) {
    std::cerr << e.what() << "\n(start a server with: redis-server)\n";
    return 1;
  }

  // One manager: one heartbeat thread and one set of counters for this process's tasks.
  const cs::ReservationManager<cs::SystemClock, cs::RedisStorage> manager(storage);
  auto report = cs::serialize_cached(
      [](int day) {
        std::this_thread::sleep_for(50ms);  // the expensive part
        return expected_report(day);
      },
      cs::TaskOptions{"daily_report", "1"}, manager);

  std::atomic<int> wrong{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < days; ++i) {
        const int day = (i + t) % days;
        if (report(day) != expected_report(day)) ++wrong;  // checked after join
      }
    });
  }
  for (auto& w : workers) w.join();

  const cs::Stats s = manager.stats();
  std::cout << "executions=" << s.executions << " hits=" << s.hits << " waits=" << s.waits
            << std::endl;

  if (latency) {
    auto probe = cs::serialize_cached([](std::uint64_t n) { return n; },
                                      cs::TaskOptions{"latency_probe", "1"}, manager);
    const std::uint64_t run = std::random_device{}();
    const cs::Key key = probe.key(run);
    measure("hit", 2000, storage, [&](int) { report(0); });
    measure("miss", 1000, storage,
            [&](int i) { probe((run << 20) + static_cast<std::uint64_t>(i) + 1); });
    const auto held = storage.acquire(key, {"latency", cs::SystemClock().now(), 30s, false});
    measure("extension", 2000, storage,
            [&](int) { storage.extend(key, held.reservation, cs::SystemClock().now(), 30s); });
    storage.release(key, held.reservation);
  }
  return wrong.load() == 0 ? 0 : 1;
}
