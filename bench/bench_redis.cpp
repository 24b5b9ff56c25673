// RedisStorage against bare round trips to the same server: a hit against one GET of a value of
// the output's size, a miss against a hand-written lock (SET NX PX a lock key, SET the value, DEL
// the lock: what a cache that runs each key once writes without a library), an extension
// against one GET; each baseline on a connection of its own. The server is a real redis-server on
// loopback, started once per binary by the tests' fixture (tests/redis/redis_server.hpp) and
// stopped at exit; when it cannot start, the benchmarks skip (fail under
// CACHESERIALIZE_REQUIRE_SERVERS).

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

/// A key never used before, under a hand-written lock: SET lock NX PX, SET the value, DEL lock.
void lock_set_unlock(benchmark::State& state) {
  World* w = world.get(state);
  if (!w) return;
  bench::guarded(state, [&] {
    for (auto _ : state) {
      const std::string key = "raw:miss:" + std::to_string(bench::unique_number());
      const std::string lock = key + ":lock";
      if (w->raw.command({"SET", lock, "owner", "NX", "PX", "30000"}) != "OK") {
        throw std::runtime_error("the lock is taken");
      }
      benchmark::DoNotOptimize(w->raw.command({"SET", key, bench::Payload{}(7)}));
      benchmark::DoNotOptimize(w->raw.command({"DEL", lock}));
    }
    bench::per_call(state, "round_trips_per_miss",
                    3 * static_cast<std::uint64_t>(state.iterations()), 3);
  });
}

}  // namespace

void bench::register_benchmarks() {
  constexpr int kQuickCalls = 50;
  bench::add("redis_hit/1_key/get", kQuickCalls, get, "round_trips_per_hit");
  bench::add("redis_miss/unique_keys/lock_set_unlock", kQuickCalls, lock_set_unlock);
  bench::add("redis_extend/1_key/get", kQuickCalls, get, "round_trips_per_extension");
  bench::add_library_cases<cs::RedisStorage>("redis", world, kQuickCalls);
  // Issue 14's targets are calls/s under load (>= 0.9x the GET's for a hit, >= 0.95x the lock's
  // for a miss); here, one thread, as time per call.
  bench::compare(
      {"redis_hit/1_key", "get", "", "<= 1.11x", 1.11, 0, false, {"round_trips_per_hit"}});
  bench::compare({"redis_miss/unique_keys",
                  "lock_set_unlock",
                  "",
                  "<= 1.05x",
                  1.05,
                  0,
                  false,
                  {"round_trips_per_miss"}});
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
