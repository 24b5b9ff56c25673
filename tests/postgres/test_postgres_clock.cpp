// The database's clock is the authority: clients whose clocks are hours off, in either
// direction, still serialise correctly, because no expiry is ever computed or compared with a
// client's time.

#include <catch2/catch.hpp>

#include "pg_support.hpp"

namespace cs = cacheserialize;
namespace pg = test::pg;
using namespace std::chrono_literals;

TEST_CASE("clients whose clocks are hours off, either way, still run each body exactly once") {
  const cs::PostgresOptions o = pg::options();
  pg::Sql sql;
  // Three "machines", each with its own connections and a clock of its own: a fake clock stopped
  // three hours behind, a clock running three hours ahead, and one a day behind.
  cs::ManualClock stopped(pg::server_now(sql) - 3h);
  cs::ManagerOptions mo;
  mo.heartbeat_interval = 3s;  // reservations of 9s: a clock hours off would see them expired
  cs::ReservationManager<cs::ManualClock, cs::PostgresStorage> behind(cs::PostgresStorage(o),
                                                                      stopped, mo);
  cs::ReservationManager<pg::SkewedClock, cs::PostgresStorage> ahead(cs::PostgresStorage(o),
                                                                     pg::SkewedClock(3h), mo);
  cs::ReservationManager<pg::SkewedClock, cs::PostgresStorage> day_behind(
      cs::PostgresStorage(o), pg::SkewedClock(-24h), mo);
  std::atomic<int> runs{0};
  auto body = [&](int k) {
    runs.fetch_add(1);
    std::this_thread::sleep_for(20ms);  // long enough for the others to find it held
    return k * 2;
  };
  auto f1 = cs::serialize_cached(body, cs::TaskOptions{"double", "1"}, behind);
  auto f2 = cs::serialize_cached(body, cs::TaskOptions{"double", "1"}, ahead);
  auto f3 = cs::serialize_cached(body, cs::TaskOptions{"double", "1"}, day_behind);
  constexpr int keys = 6;
  std::atomic<int> wrong{0};
  test::Threads threads;
  for (int t = 0; t < 6; ++t) {
    threads.spawn([&, t] {
      for (int i = 0; i < keys; ++i) {
        const int k = (i + t) % keys;
        const int r = t % 3 == 0 ? f1(k) : t % 3 == 1 ? f2(k) : f3(k);
        if (r != k * 2) wrong.fetch_add(1);
      }
    });
  }
  threads.join();
  CHECK(wrong.load() == 0);
  CHECK(runs.load() == keys);
  CHECK(behind.stats().takeovers + ahead.stats().takeovers + day_behind.stats().takeovers == 0);
  // The stopped clock never moved: its waiters were woken by notifications alone.
  CHECK(stopped.now() < pg::server_now(sql) - 2h);
}

TEST_CASE("a reservation's expiry is the server's now plus its lifetime, whatever the client's") {
  const cs::PostgresOptions o = pg::options();
  pg::Sql sql;
  cs::ManualClock far_past(cs::from_unix_nanos(0));  // 1970
  cs::ReservationManager<cs::ManualClock, cs::PostgresStorage> manager(cs::PostgresStorage(o),
                                                                       far_past);
  const cs::Key key("t", "1", "k");
  const cs::TimePoint before = pg::server_now(sql);
  auto claim = manager.claim(key);
  REQUIRE_FALSE(claim.is_hit());
  const cs::TimePoint expiry = claim.hold().reservation().expires_at;
  CHECK(expiry >= before + 30s);  // the default 10s x 3
  CHECK(expiry <= pg::server_now(sql) + 30s);
  CHECK(claim.hold().store(cs::StoredOutput::from_bytes("v")) == cs::StoreStatus::stored);
}
