#include <cacheserialize/cacheserialize.hpp>
#include <iostream>

int main() {
  namespace cs = cacheserialize;
  cs::InMemoryStorage storage;
  auto square =
      cs::serialize_cached([](int n) { return n * n; }, cs::TaskOptions{"square", "1"}, storage);
  const bool ok = square(3) == 9 && square(3) == 9 && square.manager().stats().hits == 1;
  std::cout << "consumer: " << (ok ? "ok" : "FAILED") << "\n";
  return ok ? 0 : 1;
}
