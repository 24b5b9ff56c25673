#include <cacheserialize/cacheserialize.hpp>
#include <cacheserialize/storage/redis.hpp>
#include <iostream>

// Links hiredis and talks to a port where no server listens: a clear storage_error, no hang.
int main() {
  namespace cs = cacheserialize;
  cs::RedisOptions options;
  options.port = 1;
  options.password = "not-in-messages";
  cs::RedisStorage storage(options);
  auto square =
      cs::serialize_cached([](int n) { return n * n; }, cs::TaskOptions{"square", "1"}, storage);
  try {
    square(3);
  } catch (const cs::storage_error& e) {
    const std::string what = e.what();
    const bool ok = what.find("redis 127.0.0.1:1") != std::string::npos &&
                    what.find("not-in-messages") == std::string::npos;
    std::cout << "consumer_redis: " << (ok ? "ok" : "FAILED") << ": " << what << "\n";
    return ok ? 0 : 1;
  }
  std::cout << "consumer_redis: FAILED: no error\n";
  return 1;
}
