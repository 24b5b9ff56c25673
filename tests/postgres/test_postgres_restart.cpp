// Restarting the server mid-run (a server of this test's own, so that no other test notices):
// a statement in flight fails with storage_error (its retry finds the server down), calls while
// it is down fail at once, a holder across the restart stores its output on a new connection,
// waiters recover through the listener, and nothing stored before is lost or changed.

#include <catch2/catch.hpp>

#include "pg_support.hpp"

namespace cs = cacheserialize;
namespace pg = test::pg;
using namespace std::chrono_literals;

namespace {

using Manager = cs::ReservationManager<cs::SystemClock, cs::PostgresStorage>;

// A digest of the stored outputs (with their keys) of the rows chosen by `where`.
std::string outputs_digest(pg::Sql& sql, const std::string& schema, const std::string& where) {
  return sql.value(
      "SELECT count(*) || ':' || md5(string_agg(encode(key_hash, 'hex') || "
      "encode(output, 'hex'), ',' ORDER BY key_hash)) FROM \"" +
      schema + "\".entries WHERE output IS NOT NULL AND " + where);
}

}  // namespace

TEST_CASE("after a server restart mid-run, everything works and nothing stored is lost") {
  std::string why;
  const std::string bin = pg::find_bin_dir(why);
  REQUIRE(!bin.empty());
  std::unique_ptr<pg::Server> server = pg::Server::start(bin);
  cs::PostgresOptions o = pg::options();
  o.conninfo = server->info().conninfo();
  o.connect_timeout = 2s;
  o.statement_timeout = 2s;
  cs::PostgresStorage storage(o);
  cs::PostgresStorage waiter_storage(o);  // another "process", with its own listener
  Manager manager(storage);
  Manager waiter_manager(waiter_storage);
  std::atomic<int> runs{0};
  test::Busy busy;
  auto body = [&](int k) {
    runs.fetch_add(1);
    if (k == 100) busy.enter();
    return k * 10;
  };
  auto f = cs::serialize_cached(body, cs::TaskOptions{"times_ten", "1"}, manager);
  auto g = cs::serialize_cached(body, cs::TaskOptions{"times_ten", "1"}, waiter_manager);

  for (int k = 0; k < 10; ++k) REQUIRE(f(k) == k * 10);
  std::unique_ptr<pg::Sql> sql = std::make_unique<pg::Sql>(o.conninfo);
  const std::string before = outputs_digest(*sql, o.schema, "true");
  REQUIRE(before.rfind("10:", 0) == 0);
  const std::string the_ten = "encode(key_hash, 'hex') IN (SELECT unnest(string_to_array('" +
                              sql->value("SELECT string_agg(encode(key_hash, 'hex'), ',') FROM \"" +
                                         o.schema + "\".entries") +
                              "', ',')))";

  // In flight across the restart: a holder inside its body, a waiter on it, and a statement
  // blocked on a row lock.
  test::Threads threads;
  int held_result = 0;
  threads.spawn([&] { held_result = f(100); });
  REQUIRE(busy.started.wait_for(1));
  int waited_result = 0;
  std::string waiter_error;
  threads.spawn([&] {
    try {
      waited_result = g(100);
    } catch (const cs::storage_error& e) {  // if its re-check fell while the server was down
      waiter_error = e.what();
    }
  });
  REQUIRE(test::eventually([&] { return waiter_manager.stats().waits == 1; }));
  const cs::Key locked("t", "1", "locked");
  storage.release(locked, storage.acquire(locked, {"a", {}, 30s, false}).reservation);
  // The row lock is held by a prepared transaction, which outlives the shutdown: the statement
  // is still blocked when the server terminates its session, however the shutdown is ordered.
  sql->exec("BEGIN");
  sql->exec("SELECT 1 FROM \"" + o.schema +
            "\".entries WHERE owner IS NULL AND output IS NULL FOR UPDATE");
  sql->exec("PREPARE TRANSACTION 'restart_test_lock'");
  std::string in_flight_error;
  std::thread in_flight([&] {
    try {
      storage.acquire(locked, {"b", {}, 30s, false});
    } catch (const cs::storage_error& e) {
      in_flight_error = e.what();
    }
  });
  REQUIRE(test::eventually([&] {
    pg::Sql probe(o.conninfo);
    return probe.number("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") ==
           1;
  }));

  sql.reset();
  server->stop();  // with the lock still held: the statement is in flight when it goes
  in_flight.join();
  CHECK_THAT(in_flight_error, Catch::Contains("PostgreSQL acquire"));
  CHECK(storage.stats().retries >= 1);  // it was retried once, on a server that was gone

  // While it is down, calls fail at once with libpq's message.
  const auto t = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(f(200), Catch::Contains("Connection refused"));
  CHECK(pg::seconds_since(t) < 5.0);

  server->start_again();
  busy.gate.open();  // the holder stores on a new connection; the waiter then finds the output
  threads.join();
  CHECK(held_result == 1000);
  if (waiter_error.empty()) {
    CHECK(waited_result == 1000);
  } else {
    CHECK_THAT(waiter_error, Catch::Contains("PostgreSQL"));
  }
  CHECK(manager.stats().store_failures == 0);

  sql = std::make_unique<pg::Sql>(o.conninfo);
  sql->exec("ROLLBACK PREPARED 'restart_test_lock'");
  CHECK(storage.acquire(locked, {"b", {}, 30s, false}).status == cs::AcquireStatus::acquired);
  CHECK(outputs_digest(*sql, o.schema, the_ten) == before);            // unchanged, byte for byte
  CHECK(outputs_digest(*sql, o.schema, "true").rfind("11:", 0) == 0);  // and 100's
  const int runs_before = runs.load();
  for (int k = 0; k < 10; ++k) CHECK(f(k) == k * 10);  // hits: nothing ran again
  CHECK(g(100) == 1000);
  CHECK(runs.load() == runs_before);
  CHECK(f(300) == 3000);  // and new work is stored as before
  CHECK(f(300) == 3000);
  CHECK(runs.load() == runs_before + 1);
  REQUIRE(test::eventually([&] { return waiter_storage.stats().listener_reconnects >= 1; }));
}
