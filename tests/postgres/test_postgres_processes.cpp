// Several processes, each with its own connections, through one database: every body runs once
// (counted in the database), and a holder killed with SIGKILL is taken over after its expiry by
// the server's clock.

#include <catch2/catch.hpp>

#include "../engine_restart.hpp"
#include "pg_support.hpp"

namespace cs = cacheserialize;
namespace pg = test::pg;
using namespace std::chrono_literals;

namespace {

const std::string kWorker = CACHESERIALIZE_PG_WORKER;

// Creates the store's tables and the body log the workers append to.
std::string prepare_schema() {
  const cs::PostgresOptions o = pg::options();
  { cs::PostgresStorage create(o); }
  pg::Sql sql;
  sql.exec("CREATE TABLE \"" + o.schema + "\".body_log (k bigint NOT NULL, pid int NOT NULL)");
  sql.exec("CREATE TABLE \"" + o.schema + "\".ready (pid int NOT NULL)");
  return o.schema;
}

}  // namespace

TEST_CASE("3 processes x 4 threads x 24 keys through separate connections: each body runs once") {
  const std::string schema = prepare_schema();
  constexpr int processes = 3;
  constexpr int keys = 24;
  std::vector<std::unique_ptr<pg::Child>> workers;
  for (int i = 0; i < processes; ++i) {
    workers.push_back(std::make_unique<pg::Child>(
        std::vector<std::string>{kWorker, "run", pg::server().conninfo(), schema, "4",
                                 std::to_string(keys), "10", std::to_string(processes)}));
  }
  for (auto& w : workers) CHECK(w->wait(std::chrono::seconds(90)) == 0);
  pg::Sql sql;
  const std::string log = "\"" + schema + "\".body_log";
  CHECK(sql.number("SELECT count(*) FROM " + log) == keys);
  CHECK(sql.number("SELECT count(DISTINCT k) FROM " + log) == keys);
  CHECK(sql.number("SELECT count(*) FROM \"" + schema + "\".entries WHERE output IS NOT NULL") ==
        keys);
  // Several processes did run bodies: the work was shared, not done by one.
  INFO("bodies per process: " << sql.value("SELECT string_agg(n::text, ',') FROM (SELECT count(*)"
                                           " AS n FROM " +
                                           log + " GROUP BY pid) c"));
  CHECK(sql.number("SELECT count(DISTINCT pid) FROM " + log) >= 2);
}

TEST_CASE("a SIGKILLed holder is taken over once its reservation expires by the server's clock") {
  const std::string schema = prepare_schema();
  pg::Sql sql;
  constexpr long key = 42;
  // This "machine" runs two hours ahead: by its own clock the reservation will have expired
  // long ago, yet it must wait for the server's clock to pass the expiry. It connects first, so
  // that it is ready the moment the holder dies.
  test::Recorder recorder;
  cs::ManagerOptions mo;
  mo.listener = recorder.listener();
  cs::ReservationManager<pg::SkewedClock, cs::PostgresStorage> manager(
      cs::PostgresStorage(pg::options(schema)), pg::SkewedClock(2h), mo);
  std::atomic<int> runs{0};
  auto square = cs::serialize_cached(
      [&](long k) {
        runs.fetch_add(1);
        return k * k + 7;
      },
      cs::TaskOptions{"square", "1"}, manager);

  // The holder heartbeats every 400ms: its reservation lives 1.2s past its last beat.
  pg::Child holder({kWorker, "hold", pg::server().conninfo(), schema, std::to_string(key), "400"});
  const std::string log = "\"" + schema + "\".body_log";
  REQUIRE(test::eventually([&] { return sql.number("SELECT count(*) FROM " + log) == 1; }));
  const std::string entries = "\"" + schema + "\".entries";
  // Once a heartbeat has extended it, kill it without warning: no release, no more beats.
  const std::string first_expiry = sql.value("SELECT expires_ns FROM " + entries);
  REQUIRE(test::eventually([&] {
    return sql.number("SELECT count(*) FROM " + entries + " WHERE expires_ns > " + first_expiry) ==
           1;
  }));
  holder.kill(SIGKILL);
  CHECK(holder.wait() == 128 + SIGKILL);
  const long long dead_expiry = sql.number("SELECT expires_ns FROM " + entries);
  const std::string dead_owner = sql.value("SELECT convert_from(owner, 'UTF8') FROM " + entries);

  CHECK(square(key) == key * key + 7);
  CHECK(runs.load() == 1);
  const auto took = recorder.of(cs::EventKind::took_over);
  REQUIRE(took.size() == 1);
  CHECK(took[0].holder == dead_owner);
  // Our reservation expires ttl after the server's time of the takeover.
  const long long taken_at = cs::to_unix_nanos(took[0].expires_at) - 30'000'000'000LL;
  CHECK(taken_at >= dead_expiry);
  CHECK(recorder.count(cs::EventKind::waiting) == 1);
  CHECK(manager.stats().takeovers == 1);
}

TEST_CASE(
    "an engine process SIGKILLed while its work runs elsewhere resumes its reservations when "
    "restarted, and a waiting engine neither takes them over nor runs them") {
  const cs::PostgresOptions o = pg::options();
  cs::PostgresStorage storage(o);  // creates the tables the workers use
  struct Engine : test::EngineProcess {
    explicit Engine(const std::vector<std::string>& args) : child(args) {}
    void kill9() override {
      child.kill(SIGKILL);
      child.wait();
    }
    int wait_exit() override { return child.wait(); }
    pg::Child child;
  };
  const test::EngineRestartSettings settings;
  test::check_engine_restart(
      "postgres", storage,
      [&](const std::string& phase, const std::string& report, const std::string& log) {
        return std::make_unique<Engine>(std::vector<std::string>{
            kWorker, "engine", phase, pg::server().conninfo(), o.schema, report, log,
            std::to_string(settings.keys), std::to_string(settings.heartbeat.count()),
            std::to_string(static_cast<int>(settings.grace)),
            std::to_string(settings.work.count())});
      },
      settings);
}
