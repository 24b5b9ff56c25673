// RedisStorage against bare round trips to the same server: a hit against one GET of a value of
// the output's size, a miss against a GET and a SET (look, then store), an extension against one
// GET; each baseline on a connection of its own. The server is a real redis-server on loopback,
// started once per binary by the tests' fixture (tests/redis/redis_server.hpp) and stopped at
// exit; when it cannot start, the benchmarks skip (fail under CACHESERIALIZE_REQUIRE_SERVERS).

#include <cacheserialize/storage/redis.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "../tests/redis/redis_server.hpp"
#include "storage_bench.hpp"

namespace {

namespace cs = cacheserialize;
using Cached = bench::CachedPayload<cs::RedisStorage>;

/// The server, the storage on it with the wrapped function, and the baselines' connection.
struct World {
  World()
      : storage(server.options("bench:")),
        fn(cs::serialize_cached(
            bench::Payload{}, cs::TaskOptions{"payload", "1"},
            cs::ReservationManager<cs::SystemClock, cs::RedisStorage>(storage))),
        raw(server.port()) {
    raw.command({"SET", "raw:hit", bench::Payload{}(42)});
  }
  std::uint64_t round_trips() const { return storage.stats().round_trips; }

  test::RedisServer server;
  cs::RedisStorage storage;
  Cached fn;
  test::RawRedis raw;
};

bench::Fixture<World> world([] { return std::make_unique<World>(); });

// ---- baselines -------------------------------------------------------------------------------

void get(benchmark::State& state, const char* counter_name) {
  World* w = world.get(state);
  if (!w) return;
  bench::guarded(state, [&] {
    for (auto _ : state) {
      if (w->raw.command({"GET", "raw:hit"}).size() != bench::kPayloadBytes) {
        throw std::runtime_error("GET returned a wrong value");
      }
    }
    bench::per_call(state, counter_name, static_cast<std::uint64_t>(state.iterations()), 1);
  });
}

/// A key never used before: GET (nil), then SET.
void get_set(benchmark::State& state) {
  World* w = world.get(state);
  if (!w) return;
  bench::guarded(state, [&] {
    for (auto _ : state) {
      const std::string key = "raw:miss:" + std::to_string(bench::unique_number());
      if (w->raw.command({"GET", key}) != "(nil)") throw std::runtime_error("the key exists");
      benchmark::DoNotOptimize(w->raw.command({"SET", key, bench::Payload{}(7)}));
    }
    bench::per_call(state, "round_trips_per_miss",
                    2 * static_cast<std::uint64_t>(state.iterations()), 2);
  });
}

}  // namespace

void bench::register_benchmarks() {
  constexpr int kQuickCalls = 50;
  bench::add("redis_hit/1_key/get", kQuickCalls, get, "round_trips_per_hit");
  bench::add("redis_miss/unique_keys/get_set", kQuickCalls, get_set);
  bench::add("redis_extend/1_key/get", kQuickCalls, get, "round_trips_per_extension");
  bench::add_library_cases<cs::RedisStorage>("redis", world, kQuickCalls);
  bench::compare({"redis_hit/1_key", "get", "", "", 0, 0, false, {"round_trips_per_hit"}});
  bench::compare(
      {"redis_miss/unique_keys", "get_set", "", "", 0, 0, false, {"round_trips_per_miss"}});
  bench::compare({"redis_extend/1_key", "get", "", "", 0, 0, false, {"round_trips_per_extension"}});

  // Heartbeats (issue 12: 5): many holds kept alive against the server, with and without batches.
  bench::add_keep_alive_cases<cs::RedisStorage>("redis", world, [](World& w) {
    return cs::RedisStorage(
        w.server.options("keep-alive:" + std::to_string(bench::unique_number()) + ":"));
  });

  // try_claim (issue 11) against the storage's acquire it makes.
  bench::add_try_claim_cases<cs::RedisStorage>(
      "redis", world, kQuickCalls, [](World & w) -> const auto& { return w.fn.manager(); },
      [](World& w) { return std::function<std::uint64_t()>([&w] { return w.round_trips(); }); });
}
