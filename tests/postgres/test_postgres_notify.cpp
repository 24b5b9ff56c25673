// Waiters wake at once through LISTEN/NOTIFY, also when the holder is another "process" (a
// storage handle with its own connections and listener), and are all woken when the listener
// had lost its connection and may have missed a notification.

#include <catch2/catch.hpp>
#include <future>
#include <stdexcept>
#include <string>

#include "pg_support.hpp"

namespace cs = cacheserialize;
namespace pg = test::pg;
using namespace std::chrono_literals;

namespace {

using Manager = cs::ReservationManager<cs::SystemClock, cs::PostgresStorage>;

cs::ManagerOptions long_reservations() {
  cs::ManagerOptions mo;
  mo.heartbeat_interval = 20s;  // a reservation lives 60s: a waiter woken sooner was notified
  return mo;
}

}  // namespace

TEST_CASE("a waiter on another connection wakes on the holder's NOTIFY, not at its expiry") {
  const cs::PostgresOptions o = pg::options();
  cs::PostgresStorage holder_store(o);
  cs::PostgresStorage waiter_store(o);  // its own connections and listener: "another process"
  Manager holder(holder_store, cs::SystemClock(), long_reservations());
  Manager waiter(waiter_store, cs::SystemClock(), long_reservations());
  test::Busy busy;
  std::atomic<bool> fail{false};
  auto body = [&](int n) {
    busy.enter();
    if (fail.load()) throw std::runtime_error("the holder's body failed");
    return n + 1;
  };
  auto held = cs::serialize_cached(body, cs::TaskOptions{"inc", "1"}, holder);
  auto waited =
      cs::serialize_cached([](int n) { return n + 1; }, cs::TaskOptions{"inc", "1"}, waiter);

  // The holder runs `held(n)` and blocks in its body; the waiter calls `waited(n)` and waits;
  // then the holder's body finishes. @return the waiter's result and how long it took to wake.
  std::string holder_error;
  auto meet = [&](int n, int& result) {
    test::Threads threads;
    threads.spawn([&] {
      try {
        held(n);
      } catch (const std::runtime_error& e) {
        holder_error = e.what();
      }
    });
    REQUIRE(busy.started.wait_for(1));
    threads.spawn([&] { result = waited(n); });
    REQUIRE(test::eventually([&] { return waiter.stats().waits == 1; }));
    const auto t = std::chrono::steady_clock::now();
    busy.gate.open();
    threads.join();
    return pg::seconds_since(t);
  };

  SECTION("a store wakes the waiter, which finds the output") {
    int result = 0;
    CHECK(meet(1, result) < 10.0);  // far sooner than the holder's 60s reservation
    CHECK(result == 2);
    CHECK(holder_error.empty());
    CHECK(waiter.stats().executions == 0);
    CHECK(waiter.stats().hits == 1);
    CHECK(waiter_store.stats().notifications >= 1);
  }

  SECTION("a release after a failure wakes the waiter, which runs the function at once") {
    fail = true;
    int result = 0;
    CHECK(meet(5, result) < 10.0);
    CHECK(holder_error == "the holder's body failed");
    CHECK(result == 6);
    CHECK(waiter.stats().executions == 1);
    CHECK(waiter.stats().takeovers == 0);  // released, not expired
  }
}

TEST_CASE("a subscriber is woken by another connection's store, put and release of its key only") {
  const cs::PostgresOptions o = pg::options();
  cs::PostgresStorage listening(o);
  cs::PostgresStorage writing(o);
  const cs::Key key("t", "1", "k");
  const cs::Key other("t", "1", "other");
  cs::Signal signal;
  cs::Subscription subscription = listening.subscribe(key, signal);
  writing.put(other, cs::StoredOutput::from_bytes("x"));
  const auto r = writing.acquire(key, {"a", {}, 30s, true});
  // Notifications arrive in commit order: once the later one is in, the earlier one was too.
  cs::Signal later;
  cs::Subscription later_subscription = listening.subscribe(cs::Key("t", "1", "later"), later);
  writing.put(cs::Key("t", "1", "later"), cs::StoredOutput::from_bytes("x"));
  REQUIRE(later.wait_for(test::kBound, [] { return false; }));
  CHECK_FALSE(signal.raised());  // neither the put of another key nor an acquire woke it
  writing.release(key, r.reservation);
  CHECK(signal.wait_for(test::kBound, [] { return false; }));
  signal.reset();
  writing.put(key, cs::StoredOutput::from_bytes("y"));
  CHECK(signal.wait_for(test::kBound, [] { return false; }));
  CHECK(listening.stats().notifications >= 3);
}

TEST_CASE("when the listener loses its connection it reconnects and wakes every subscriber") {
  cs::PostgresOptions o = pg::options();
  const std::string app = "listen_" + std::to_string(::getpid());
  o.conninfo += " application_name=" + app;
  cs::PostgresStorage storage(o);
  cs::Signal a;
  cs::Signal b;
  cs::Subscription sa = storage.subscribe(cs::Key("t", "1", "a"), a);
  cs::Subscription sb = storage.subscribe(cs::Key("t", "1", "b"), b);
  CHECK_FALSE(a.raised());
  pg::Sql sql;
  // Ends the listener's connection (and the operations' one: it is replaced on its next use).
  sql.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '" +
           app + "'");
  CHECK(a.wait_for(test::kBound, [] { return false; }));
  CHECK(b.wait_for(test::kBound, [] { return false; }));
  REQUIRE(test::eventually([&] { return storage.stats().listener_reconnects == 1; }));
  // And it listens again: another handle's put wakes a subscriber.
  a.reset();
  cs::PostgresStorage writer(pg::options(o.schema));
  writer.put(cs::Key("t", "1", "a"), cs::StoredOutput::from_bytes("x"));
  CHECK(a.wait_for(test::kBound, [] { return false; }));
}

TEST_CASE(
    "an async waiter outlives the listener's lost connection and wakes on the holder's store") {
  cs::PostgresOptions o = pg::options();
  const std::string app = "listen_async_" + std::to_string(::getpid());
  cs::PostgresStorage holder_store(o);  // its own connections and listener: "another process"
  o.conninfo += " application_name=" + app;
  cs::PostgresStorage waiter_store(o);
  const cs::Key key("lost-async", "1", "k");
  const cs::AcquireResult held =
      holder_store.acquire(key, cs::AcquireRequest{"holder", cs::SystemClock().now(), 60s, false});
  REQUIRE(held.status == cs::AcquireStatus::acquired);
  Manager manager(waiter_store, cs::SystemClock(), long_reservations());
  cs::ClaimOptions options;
  options.wait_timeout = 20s;  // far below the holder's 60 s: only a wake-up ends it sooner
  std::future<Manager::claim_type> waiter = manager.claim_async(key, options);
  REQUIRE(test::eventually([&] { return manager.stats().waiters_active == 1; }));

  pg::Sql sql;
  sql.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '" +
           app + "'");
  REQUIRE(test::eventually([&] { return waiter_store.stats().listener_reconnects == 1; }));
  CHECK(waiter.wait_for(0s) == std::future_status::timeout);  // it looked again; still held

  REQUIRE(holder_store
              .store_and_release(key, held.reservation, cs::StoredOutput::from_bytes("holder's"),
                                 cs::SystemClock().now())
              .status == cs::StoreStatus::stored);
  REQUIRE(waiter.wait_for(10s) == std::future_status::ready);
  auto claim = waiter.get();
  REQUIRE(claim.is_hit());
  CHECK(claim.output().bytes == "holder's");
  CHECK(manager.stats().waiters_active == 0);
}
