// PostgresStorage against the storage contract, with the server's clock as the authority.

#include <catch2/catch.hpp>
#include <set>

#include "../engine_contract.hpp"
#include "../storage_contract.hpp"
#include "pg_support.hpp"

namespace cs = cacheserialize;
namespace pg = test::pg;
using namespace std::chrono_literals;

namespace {

const cs::Key key("task", "1", std::string("k\0ey", 4));

cs::AcquireRequest request(const std::string& owner, cs::Duration ttl,
                           cs::TimePoint now = cs::TimePoint{}) {
  return cs::AcquireRequest{owner, now, ttl, false};
}

}  // namespace

TEST_CASE("PostgresStorage follows the storage contract, with the server's clock") {
  test::check_storage_contract([] { return cs::PostgresStorage(pg::options()); },
                               test::ContractOptions{false});
}

TEST_CASE("PostgresStorage follows the engine contract, with the server's clock") {
  test::check_engine_contract(
      [] { return cs::PostgresStorage(pg::options()); },
      // Another process's storage: its own connections and listener, same schema.
      [](const cs::PostgresStorage& s) { return cs::PostgresStorage(s.options()); },
      test::EngineContractOptions{false});
}

TEST_CASE("PostgresStorage keeps bytes, acquires without probing first, and notifies waiters") {
  STATIC_REQUIRE_FALSE(cs::storage_traits<cs::PostgresStorage>::stores_objects);
  STATIC_REQUIRE_FALSE(cs::storage_traits<cs::PostgresStorage>::probe_before_acquire);
  STATIC_REQUIRE(cs::storage_traits<cs::PostgresStorage>::notifies);
  STATIC_REQUIRE(cs::is_storage_v<cs::PostgresStorage>);
}

TEST_CASE("PostgresStorage copies share one store, and separate handles see each other's writes") {
  const cs::PostgresOptions o = pg::options();
  cs::PostgresStorage a(o);
  cs::PostgresStorage copy = a;
  cs::PostgresStorage other(o);  // as if in another process: own connections and listener
  a.put(key, cs::StoredOutput::from_bytes("seven"));
  REQUIRE(copy.get(key));
  CHECK(copy.get(key)->bytes == "seven");
  REQUIRE(other.get(key));
  CHECK(other.get(key)->bytes == "seven");
  CHECK(copy.round_trips() == a.round_trips());
  CHECK(other.round_trips() == 2);
}

TEST_CASE("PostgresStorage computes expiry with the server's clock and ignores the caller's now") {
  cs::PostgresStorage storage(pg::options());
  pg::Sql sql;
  const cs::TimePoint before = pg::server_now(sql);
  // A caller whose clock is a year behind still gets a reservation that expires one ttl after
  // the server's now.
  const cs::AcquireResult a =
      storage.acquire(key, request("a", 10s, cs::ManualClock::default_start() - 24h * 365));
  REQUIRE(a.status == cs::AcquireStatus::acquired);
  const cs::TimePoint after = pg::server_now(sql);
  CHECK(a.reservation.expires_at >= before + 10s);
  CHECK(a.reservation.expires_at <= after + 10s);

  SECTION("a caller whose clock is a year ahead does not take a live reservation over") {
    const cs::AcquireResult b =
        storage.acquire(key, request("b", 10s, cs::ManualClock::default_start() + 24h * 365));
    CHECK(b.status == cs::AcquireStatus::held);
    CHECK(b.reservation.owner == "a");
    CHECK(b.remaining > 0s);
    CHECK(b.remaining <= 10s);
  }
  SECTION("the extension's new expiry is the server's now + ttl, whatever now the caller says") {
    const cs::ExtendResult e = storage.extend(key, a.reservation, cs::TimePoint{}, 20s);
    REQUIRE(e.status == cs::ExtendStatus::extended);
    CHECK(e.current.expires_at >= after + 20s);
    CHECK(e.current.expires_at <= pg::server_now(sql) + 20s);
    CHECK(e.current.token == a.reservation.token);
  }
}

TEST_CASE("PostgresStorage lets another owner take over exactly when the server says it expired") {
  cs::PostgresStorage storage(pg::options());
  pg::Sql sql;
  const cs::Reservation dead = storage.acquire(key, request("dead", 300ms)).reservation;
  cs::AcquireResult r;
  REQUIRE(test::eventually([&] {
    r = storage.acquire(key, request("b", 30s));
    if (r.status == cs::AcquireStatus::held) CHECK(r.reservation.owner == "dead");
    return r.status == cs::AcquireStatus::acquired;
  }));
  CHECK(pg::server_now(sql) >= dead.expires_at);
  CHECK(r.reservation.owner == "b");
  CHECK(r.reservation.token > dead.token);
  REQUIRE(r.previous);
  CHECK(r.previous->owner == "dead");
  CHECK(r.previous->token == dead.token);
  CHECK(r.previous->expires_at == dead.expires_at);

  SECTION("the expired holder's extension and store are then refused (fencing)") {
    CHECK(storage.extend(key, dead, cs::TimePoint{}, 30s).status == cs::ExtendStatus::lost);
    const cs::StoreResult s =
        storage.store_and_release(key, dead, cs::StoredOutput::from_bytes("late"), {});
    CHECK(s.status == cs::StoreStatus::rejected);
    CHECK(s.current.owner == "b");
    CHECK_FALSE(storage.get(key));
  }
  SECTION("an expired holder that nobody replaced may still extend") {
    const cs::Key other("task", "1", "other");
    const cs::Reservation mine = storage.acquire(other, request("slow", 1ms)).reservation;
    REQUIRE(test::eventually([&] { return pg::server_now(sql) > mine.expires_at; }));
    CHECK(storage.extend(other, mine, {}, 30s).status == cs::ExtendStatus::extended);
    CHECK(storage.acquire(other, request("b", 30s)).status == cs::AcquireStatus::held);
  }
}

TEST_CASE("PostgresStorage fencing tokens grow per key across releases, takeovers and stores") {
  cs::PostgresStorage storage(pg::options());
  std::uint64_t last = 0;
  for (int i = 0; i < 6; ++i) {
    // overwrite: acquire even after an output was stored, to keep issuing tokens for the key
    const cs::AcquireResult r = storage.acquire(key, {"o" + std::to_string(i), {}, 30s, true});
    REQUIRE(r.status == cs::AcquireStatus::acquired);
    CHECK(r.reservation.token > last);
    last = r.reservation.token;
    // a live holder is respected even by an overwriting caller
    CHECK(storage.acquire(key, {"x", {}, 30s, true}).status == cs::AcquireStatus::held);
    if (i % 2 == 0) {
      CHECK(storage.release(key, r.reservation) == cs::ReleaseStatus::released);
    } else {
      CHECK(storage.store_and_release(key, r.reservation, cs::StoredOutput::from_bytes("v"), {})
                .status == cs::StoreStatus::stored);
    }
  }
  REQUIRE(storage.get(key));
  CHECK(storage.get(key)->bytes == "v");
}

TEST_CASE("PostgresStorage issues distinct tokens to concurrent acquisitions on many keys") {
  cs::PostgresOptions o = pg::options();
  o.pool_size = 4;
  cs::PostgresStorage storage(o);
  std::mutex mu;
  std::set<std::uint64_t> tokens;
  std::atomic<int> acquired{0};
  test::Threads threads;
  for (int t = 0; t < 4; ++t) {
    threads.spawn([&, t] {
      for (int i = 0; i < 50; ++i) {
        // Threads 0/1 and 2/3 race on the same keys: exactly one of each pair acquires.
        const cs::Key k("t", "1", std::to_string(t / 2) + ":" + std::to_string(i));
        const auto r = storage.acquire(k, {"owner-" + std::to_string(t), {}, 30s, false});
        if (r.status != cs::AcquireStatus::acquired) continue;
        acquired.fetch_add(1);
        std::lock_guard<std::mutex> lock(mu);
        tokens.insert(r.reservation.token);
      }
    });
  }
  threads.join();
  CHECK(acquired.load() == 100);
  CHECK(tokens.size() == 100);
}
