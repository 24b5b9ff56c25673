// A worker process of the multi-process PostgreSQL tests: one "machine" with its own storage
// handle (own connections and listener), calling a serialized function. Every body run appends
// a row to <schema>.body_log through a connection of its own, so the parent counts runs in the
// database.
//
//   worker run CONNINFO SCHEMA THREADS KEYS WORK_MS PROCESSES
//       once PROCESSES workers have connected (a barrier in <schema>.ready), THREADS threads
//       each call square(k) for every k < KEYS (each from its own starting point); a body works
//       WORK_MS. Exit 0 if every result was right.
//   worker hold CONNINFO SCHEMA KEY HEARTBEAT_MS
//       call square(KEY) with a body that logs, prints "holding", and never returns (the parent
//       kills the process).
//   worker engine PHASE CONNINFO SCHEMA REPORT LOG KEYS HEARTBEAT_MS GRACE WORK_MS
//       the restart tests' engine (../engine_task.hpp): PHASE claim try_claims KEYS keys as
//       owners "engine-1:task-<i>" and blocks (killed there); resume claims them again as the
//       same owners, keeps them WORK_MS, then runs and stores each. Reports to the file REPORT.

#include <cacheserialize/storage/postgres.hpp>
#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../engine_task.hpp"
#include "pg_support.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

struct Args {
  std::string conninfo;
  std::string schema;
};

cs::PostgresStorage open_storage(const Args& a) {
  cs::PostgresOptions o;
  o.conninfo = a.conninfo;
  o.schema = a.schema;
  return cs::PostgresStorage(o);
}

void log_run(const Args& a, long k) {
  thread_local std::unique_ptr<test::pg::Sql> sql;
  if (!sql) sql = std::make_unique<test::pg::Sql>(a.conninfo);
  sql->exec("INSERT INTO \"" + a.schema + "\".body_log (k, pid) VALUES (" + std::to_string(k) +
            ", " + std::to_string(::getpid()) + ")");
}

// Waits until `processes` workers have arrived, so that they all start together.
void barrier(const Args& a, int processes) {
  test::pg::Sql sql(a.conninfo);
  const std::string ready = "\"" + a.schema + "\".ready";
  sql.exec("INSERT INTO " + ready + " (pid) VALUES (" + std::to_string(::getpid()) + ")");
  if (!test::eventually([&] { return sql.number("SELECT count(*) FROM " + ready) >= processes; })) {
    throw std::runtime_error("the other workers did not arrive");
  }
}

int run(const Args& a, int threads, long keys, int work_ms, int processes) {
  cs::ReservationManager<cs::SystemClock, cs::PostgresStorage> manager(open_storage(a));
  barrier(a, processes);
  auto square = cs::serialize_cached(
      [&](long k) {
        log_run(a, k);
        std::this_thread::sleep_for(std::chrono::milliseconds(work_ms));
        return k * k + 7;
      },
      cs::TaskOptions{"square", "1"}, manager);
  std::atomic<int> wrong{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const long start = (static_cast<long>(::getpid()) * 7 + t * 5) % keys;
      for (long i = 0; i < keys; ++i) {
        const long k = (start + i) % keys;
        try {
          if (square(k) != k * k + 7) wrong.fetch_add(1);
        } catch (const std::exception& e) {
          errors.fetch_add(1);
          std::cerr << "worker " << ::getpid() << ": " << e.what() << "\n";
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  const cs::Stats s = manager.stats();
  std::cout << "worker " << ::getpid() << ": executions " << s.executions << " hits " << s.hits
            << " waits " << s.waits << " wrong " << wrong.load() << " errors " << errors.load()
            << "\n";
  return wrong.load() == 0 && errors.load() == 0 ? 0 : 3;
}

int hold(const Args& a, long key, int heartbeat_ms) {
  cs::ManagerOptions mo;
  mo.heartbeat_interval = std::chrono::milliseconds(heartbeat_ms);
  mo.grace_multiplier = 3;
  cs::ReservationManager<cs::SystemClock, cs::PostgresStorage> manager(open_storage(a),
                                                                       cs::SystemClock(), mo);
  auto square = cs::serialize_cached(
      [&](long k) -> long {
        log_run(a, k);
        std::cout << "holding" << std::endl;
        for (;;) std::this_thread::sleep_for(1s);  // until killed
      },
      cs::TaskOptions{"square", "1"}, manager);
  return static_cast<int>(square(key));
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> v(argv, argv + argc);
  try {
    if (v.size() == 8 && v[1] == "run") {
      return run(Args{v[2], v[3]}, std::stoi(v[4]), std::stol(v[5]), std::stoi(v[6]),
                 std::stoi(v[7]));
    }
    if (v.size() == 11 && v[1] == "engine") {
      engine_task::Settings s;
      s.phase = v[2];
      s.report = v[5];
      s.log = v[6];
      s.keys = std::stoi(v[7]);
      s.heartbeat = std::chrono::milliseconds(std::stoi(v[8]));
      s.grace = std::stod(v[9]);
      s.work = std::chrono::milliseconds(std::stoi(v[10]));
      return engine_task::run(open_storage(Args{v[3], v[4]}), s);
    }
    if (v.size() == 6 && v[1] == "hold") {
      return hold(Args{v[2], v[3]}, std::stol(v[4]), std::stoi(v[5]));
    }
  } catch (const std::exception& e) {
    std::cerr << "worker: " << e.what() << "\n";
    return 2;
  }
  std::cerr << "usage: worker run CONNINFO SCHEMA THREADS KEYS WORK_MS PROCESSES\n"
               "       worker hold CONNINFO SCHEMA KEY HEARTBEAT_MS\n"
               "       worker engine PHASE CONNINFO SCHEMA REPORT LOG KEYS HEARTBEAT_MS GRACE "
               "WORK_MS\n";
  return 2;
}
