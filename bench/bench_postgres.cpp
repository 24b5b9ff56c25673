// PostgresStorage against bare round trips to the same server, each on a libpq connection of its
// own with prepared statements (as the storage's): `SELECT 1` (one round trip, the floor of any
// statement) for a hit and an extension, two of them for a miss; and, as what a hand-written
// cache would do (issue 14's baselines, which the comparison divides by), a prepared primary-key
// SELECT from a plain table (hit) and INSERT ... ON CONFLICT DO NOTHING then UPDATE (miss).
//
// The server is the tests' throwaway one (tests/postgres/server.hpp: initdb, as an unprivileged
// user when root, and pg_ctl on a free loopback port, fsync and synchronous_commit off), started
// once per binary and stopped and removed at exit. A watchdog process removes it too if this
// process dies without exiting (a crash, a signal). When it cannot start, the benchmarks skip
// (fail under CACHESERIALIZE_REQUIRE_SERVERS).

#include <cacheserialize/storage/postgres.hpp>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "postgres_server.hpp"
#include "storage_bench.hpp"

namespace {

namespace cs = cacheserialize;
namespace pg = test::pg;
using bench::pg_bench::Connection;
using bench::pg_bench::start_server;
using Cached = bench::CachedPayload<cs::PostgresStorage>;

cs::PostgresOptions options(const pg::ServerInfo& info) {
  cs::PostgresOptions o;
  o.conninfo = info.conninfo();
  o.schema = "bench";
  return o;
}

/// The server, the storage on it with the wrapped function, and the baselines' connection.
struct World {
  World()
      : server(start_server()),
        storage(options(server->info())),
        fn(cs::serialize_cached(
            bench::Payload{}, cs::TaskOptions{"payload", "1"},
            cs::ReservationManager<cs::SystemClock, cs::PostgresStorage>(storage))),
        raw(server->info().conninfo()) {
    raw.exec("CREATE TABLE bench_kv (key text PRIMARY KEY, value text NOT NULL)");
    raw.prepare("one", "SELECT 1");
    raw.prepare("kv_get", "SELECT value FROM bench_kv WHERE key = $1");
    raw.prepare("kv_put", "INSERT INTO bench_kv (key, value) VALUES ($1, $2)");
    raw.prepare("kv_reserve",
                "INSERT INTO bench_kv (key, value) VALUES ($1, '') ON CONFLICT DO NOTHING");
    raw.prepare("kv_store", "UPDATE bench_kv SET value = $2 WHERE key = $1");
    const std::string key = "hit";
    const std::string value = bench::Payload{}(42);
    raw.run("kv_put", {&key, &value});
  }
  std::uint64_t round_trips() const { return storage.stats().round_trips; }

  std::unique_ptr<pg::Server> server;
  cs::PostgresStorage storage;
  Cached fn;
  Connection raw;
};

bench::Fixture<World> world([] { return std::make_unique<World>(); });

// ---- baselines -------------------------------------------------------------------------------

/// `statements` prepared `SELECT 1`s per call.
void select_1(benchmark::State& state, int statements, const char* counter_name) {
  World* w = world.get(state);
  if (!w) return;
  bench::guarded(state, [&] {
    for (auto _ : state) {
      for (int i = 0; i < statements; ++i) {
        if (w->raw.run("one", {}) != 1) throw std::runtime_error("SELECT 1 returned no row");
      }
    }
    const auto calls = static_cast<std::uint64_t>(state.iterations());
    bench::per_call(state, counter_name, calls * static_cast<std::uint64_t>(statements),
                    static_cast<std::uint64_t>(statements));
  });
}

/// A hand-written cache in a plain table: a hit is a SELECT by primary key; a miss (a key never
/// used) an INSERT ... ON CONFLICT DO NOTHING (the reservation), then an UPDATE (the output), both
/// autocommit.
void kv(benchmark::State& state, bool hit) {
  World* w = world.get(state);
  if (!w) return;
  bench::guarded(state, [&] {
    const std::string hit_key = "hit";
    const std::string value = bench::Payload{}(7);
    for (auto _ : state) {
      if (hit) {
        if (w->raw.run("kv_get", {&hit_key}) != 1) throw std::runtime_error("no row");
      } else {
        const std::string key = "miss " + std::to_string(bench::unique_number());
        w->raw.run("kv_reserve", {&key});
        w->raw.run("kv_store", {&key, &value});
      }
    }
    const auto calls = static_cast<std::uint64_t>(state.iterations());
    if (hit) {
      bench::per_call(state, "round_trips_per_hit", calls, 1);
    } else {
      bench::per_call(state, "round_trips_per_miss", 2 * calls, 2);
    }
  });
}

/// Housekeeping of a backlog: `stale` outputs stored an hour ago, and among them (by key hash)
/// `kept` live reservations, written directly before each call. The library's `prune(1min)`
/// deletes in batches of `kPruneBatch`; the floor is one DELETE of the same rows (one
/// statement, one scan, every row locked at once).
void prune_backlog(benchmark::State& state, bool library) {
  World* w = world.get(state);
  if (!w) return;
  bench::guarded(state, [&] {
    const std::string entries = "\"bench\".entries";
    const std::string stale = std::to_string(bench::scaled(50000, 2000));
    const std::string kept = std::to_string(bench::scaled(5000, 200));
    for (auto _ : state) {
      state.PauseTiming();
      w->raw.exec("DELETE FROM " + entries + " WHERE key LIKE 'prune %'");
      w->raw.exec("INSERT INTO " + entries +
                  " (key_hash, key, output, stored_at) SELECT sha256(k), k, 'x'::bytea,"
                  " now() - interval '1 hour' FROM (SELECT ('prune o' || i)::bytea AS k"
                  " FROM generate_series(1, " +
                  stale + ") i) s");
      w->raw.exec("INSERT INTO " + entries +
                  " (key_hash, key, owner, token, expires_ns) SELECT sha256(k), k,"
                  " 'holder'::bytea, i, (extract(epoch FROM now() + interval '1 hour') * 1e9)"
                  "::bigint FROM (SELECT i, ('prune l' || i)::bytea AS k FROM generate_series(1, " +
                  kept + ") i) s");
      w->raw.exec("VACUUM ANALYZE " + entries);  // no dead rows left from the last call
      state.ResumeTiming();
      if (library) {
        const cs::PruneResult r = w->storage.prune(std::chrono::minutes(1));
        if (r.outputs_removed != std::stoul(stale)) throw std::runtime_error("prune missed rows");
      } else {
        w->raw.exec("DELETE FROM " + entries +
                    " WHERE owner IS NULL AND stored_at < now() - interval '1 minute'");
      }
    }
    state.counters["rows_per_call"] = std::stod(stale);
  });
}

}  // namespace

void bench::register_benchmarks() {
  constexpr int kQuickCalls = 50;
  bench::add("pg_hit/1_key/select_1", kQuickCalls, select_1, 1, "round_trips_per_hit");
  bench::add("pg_hit/1_key/kv_select", kQuickCalls, kv, true);
  bench::add("pg_miss/unique_keys/select_1_twice", kQuickCalls, select_1, 2,
             "round_trips_per_miss");
  bench::add("pg_miss/unique_keys/kv_insert_update", kQuickCalls, kv, false);
  bench::add("pg_extend/1_key/select_1", kQuickCalls, select_1, 1, "round_trips_per_extension");
  bench::add_library_cases<cs::PostgresStorage>("pg", world, kQuickCalls);
  // Each call writes its backlog first (untimed): a few calls, not as many as fit in a second.
  for (const bool library : {false, true}) {
    benchmark::RegisterBenchmark(
        library ? "pg_prune/backlog/cacheserialize" : "pg_prune/backlog/one_delete", prune_backlog,
        library)
        ->Iterations(bench::scaled(5, 1));
  }
  // Issue 14: a hit at >= 0.85x the calls/s of a primary-key SELECT, a miss at >= 0.8x the two
  // statements', i.e. at most 1/0.85 and 1/0.8 of their time.
  bench::compare(
      {"pg_hit/1_key", "kv_select", "", "<= 1.18x", 1.18, 0, false, {"round_trips_per_hit"}});
  bench::compare({"pg_miss/unique_keys",
                  "kv_insert_update",
                  "",
                  "<= 1.25x",
                  1.25,
                  0,
                  false,
                  {"round_trips_per_miss"}});
  bench::compare(
      {"pg_extend/1_key", "select_1", "", "", 0, 0, false, {"round_trips_per_extension"}});
  bench::compare({"pg_prune/backlog", "one_delete", "", "", 0, 0, false, {}});

  // Heartbeats (issue 12: 5): many holds kept alive against the server, with and without batches.
  bench::add_keep_alive_cases<cs::PostgresStorage>("pg", world, [](World& w) {
    cs::PostgresOptions o = options(w.server->info());
    o.schema = "keep_alive_" + std::to_string(bench::unique_number());
    return cs::PostgresStorage(o);
  });

  // try_claim (issue 11) against the storage's acquire it makes.
  bench::add_try_claim_cases<cs::PostgresStorage>(
      "pg", world, kQuickCalls, [](World & w) -> const auto& { return w.fn.manager(); },
      [](World& w) { return std::function<std::uint64_t()>([&w] { return w.round_trips(); }); });
}
