// The seed example: a hundred threads call square(2) at once; the function body runs once and
// every caller gets 4. Later calls are answered from the cache.

#include <atomic>
#include <cacheserialize/cacheserialize.hpp>
#include <chrono>
#include <iostream>
#include <thread>
#include <vector>

namespace cs = cacheserialize;

int main() {
  cs::InMemoryStorage storage;  // shared by every wrapper in the process
  std::atomic<int> runs{0};
  auto square = cs::serialize_cached(
      [&runs](int n) {
        ++runs;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // expensive work
        return n * n;
      },
      cs::TaskOptions{"square", "1.0"}, storage);

  std::atomic<int> wrong{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < 100; ++i) {
    callers.emplace_back([&] {
      if (square(2) != 4) ++wrong;
    });
  }
  for (auto& t : callers) t.join();

  const cs::Stats s = square.manager().stats();
  std::cout << "100 concurrent calls of square(2) returned 4; the function ran " << runs
            << " time(s)\n"
            << "  executions=" << s.executions << " waits=" << s.waits << " hits=" << s.hits
            << "\n";
  const auto t0 = std::chrono::steady_clock::now();
  const int again = square(2);
  const auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  std::cout << "a later call returned " << again << " from the cache in " << us << " us\n";
  return runs == 1 && wrong == 0 ? 0 : 1;
}
