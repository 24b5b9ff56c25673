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

#include <fcntl.h>
#include <libpq-fe.h>
#include <spawn.h>
#include <unistd.h>

#include <cacheserialize/storage/postgres.hpp>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "../tests/postgres/server.hpp"
#include "storage_bench.hpp"

extern char** environ;

namespace {

namespace cs = cacheserialize;
namespace pg = test::pg;
using Cached = bench::CachedPayload<cs::PostgresStorage>;

/// Starts a process that waits for this one to end, then stops the server in `dir` (SIGQUIT to
/// its postmaster: immediate shutdown) and removes `dir`. After a normal exit the server is
/// already gone and there is nothing left to do.
void start_watchdog(const std::string& dir) {
  const std::string script =
      "while kill -0 \"$1\" 2>/dev/null; do sleep 0.5; done; "
      "pid=$(head -n 1 \"$2/data/postmaster.pid\" 2>/dev/null) && kill -QUIT \"$pid\" && "
      "for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 \"$pid\" 2>/dev/null || break; sleep 0.5; done; "
      "rm -rf \"$2\"";
  std::vector<std::string> args = {"/bin/sh", "-c", script, "watchdog", std::to_string(::getpid()),
                                   dir};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  for (int fd = 0; fd < 3; ++fd) {  // holds none of our pipes open after we exit
    posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);
  }
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0)
    throw std::runtime_error("cannot start the watchdog: " + std::string(std::strerror(rc)));
}

std::unique_ptr<pg::Server> start_server() {
  std::string why;
  const std::string bin = pg::find_bin_dir(why);
  if (bin.empty()) throw std::runtime_error(why);
  std::unique_ptr<pg::Server> server = pg::Server::start(bin);
  start_watchdog(server->dir());
  return server;
}

/// A libpq connection with prepared statements, for the baselines.
class Connection {
 public:
  explicit Connection(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) {
      const std::string why = PQerrorMessage(conn_);
      PQfinish(conn_);
      throw std::runtime_error("cannot connect: " + why);
    }
  }
  ~Connection() { PQfinish(conn_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void exec(const std::string& sql) { check(PQexec(conn_, sql.c_str()), sql); }
  void prepare(const std::string& name, const std::string& sql) {
    check(PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr), name);
  }
  /// Runs a prepared statement with text parameters. @return the number of rows.
  int run(const char* name, std::initializer_list<const std::string*> params) {
    const char* values[4] = {};
    int n = 0;
    for (const std::string* p : params) values[n++] = p->c_str();
    PGresult* r = PQexecPrepared(conn_, name, n, values, nullptr, nullptr, 0);
    const int rows = PQntuples(r);
    check(r, name);
    return rows;
  }

 private:
  void check(PGresult* r, const std::string& what) {
    const ExecStatusType st = PQresultStatus(r);
    const std::string why = PQresultErrorMessage(r);
    PQclear(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
      throw std::runtime_error("SQL failed: " + why + " in: " + what);
    }
  }
  PGconn* conn_;
};

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
