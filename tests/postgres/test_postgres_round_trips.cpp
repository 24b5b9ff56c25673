// Round trips per call, counted by the storage's own counter (every statement sent goes through
// it), not assumed: a hit is one, a miss two, an extension one.

#include <algorithm>
#include <catch2/catch.hpp>
#include <iostream>
#include <optional>
#include <vector>

#include "../engine_contract.hpp"
#include "pg_support.hpp"

namespace cs = cacheserialize;
namespace pg = test::pg;
using namespace std::chrono_literals;

namespace {

using Manager = cs::ReservationManager<cs::ManualClock, cs::PostgresStorage>;

}  // namespace

TEST_CASE("through PostgresStorage a hit is one round trip, a miss two and an extension one") {
  cs::PostgresStorage storage(pg::options());
  cs::ManualClock clock;  // schedules the heartbeat; expiries are still the server's
  cs::ManagerOptions mo;
  mo.heartbeat_interval = 10s;
  Manager manager(storage, clock, mo);
  test::Busy busy;
  std::atomic<bool> block{false};
  auto triple = cs::serialize_cached(
      [&](int n) {
        if (block.load()) busy.enter();
        return n * 3;
      },
      cs::TaskOptions{"triple", "1"}, manager);

  SECTION("a miss: acquire, then store-and-release; a hit: acquire, which returns the output") {
    std::uint64_t before = storage.round_trips();
    CHECK(triple(1) == 3);
    CHECK(storage.round_trips() - before == 2);
    before = storage.round_trips();
    CHECK(triple(1) == 3);
    CHECK(storage.round_trips() - before == 1);
    CHECK(manager.stats().executions == 1);
    CHECK(manager.stats().hits == 1);
  }

  SECTION("an extension by the heartbeat is one round trip") {
    block = true;
    test::Threads threads;
    threads.spawn([&] { triple(2); });
    REQUIRE(busy.started.wait_for(1));
    REQUIRE(clock.wait_for_sleepers(1));  // the heartbeat thread, waiting for the first beat
    const std::uint64_t before = storage.round_trips();
    clock.advance(10s);
    REQUIRE(test::eventually([&] { return manager.stats().heartbeats == 1; }));
    CHECK(storage.round_trips() - before == 1);
    busy.gate.open();
    threads.join();
    CHECK(storage.round_trips() - before == 2);  // plus the store
  }

  SECTION("a waiter: acquire, acquire again once subscribed, and one acquire per wake-up") {
    block = true;
    test::Threads threads;
    const std::uint64_t before = storage.round_trips();
    threads.spawn([&] { triple(3); });
    REQUIRE(busy.started.wait_for(1));
    int waited_result = 0;
    threads.spawn([&] { waited_result = triple(3); });
    REQUIRE(clock.wait_for_sleepers(2));  // the heartbeat and the waiter, asleep
    CHECK(storage.round_trips() - before == 3);
    busy.gate.open();  // the store wakes the waiter at once: no time passes on its clock
    threads.join();
    CHECK(waited_result == 9);
    CHECK(storage.round_trips() - before == 5);
    CHECK(manager.stats().executions == 1);
    CHECK(manager.stats().waits == 1);
  }

  SECTION("direct operations: release, put and get are one round trip each") {
    const cs::Key key("t", "1", "k");
    std::uint64_t before = storage.round_trips();
    const auto r = storage.acquire(key, {"a", {}, 30s, false});
    CHECK(storage.release(key, r.reservation) == cs::ReleaseStatus::released);
    storage.put(key, cs::StoredOutput::from_bytes("x"));
    CHECK(storage.get(key));
    CHECK(storage.round_trips() - before == 4);
  }

  SECTION(
      "an acquire that overwrites is one round trip; a rejected store two, to name the holder") {
    const cs::Key key("t", "1", "k");
    const auto a = storage.acquire(key, {"a", {}, 30s, false});
    REQUIRE(storage.store_and_release(key, a.reservation, cs::StoredOutput::from_bytes("x"), {})
                .status == cs::StoreStatus::stored);
    std::uint64_t before = storage.round_trips();
    const auto b = storage.acquire(key, {"b", {}, 30s, true});
    CHECK(b.status == cs::AcquireStatus::acquired);
    CHECK(b.reservation.token > a.reservation.token);
    CHECK(storage.round_trips() - before == 1);
    before = storage.round_trips();
    const cs::StoreResult r =
        storage.store_and_release(key, a.reservation, cs::StoredOutput::from_bytes("y"), {});
    CHECK(r.status == cs::StoreStatus::rejected);
    CHECK(r.current.owner == "b");
    CHECK(r.current.token == b.reservation.token);
    CHECK(storage.round_trips() - before == 2);
    CHECK(storage.get(key)->bytes == "x");
  }
}

TEST_CASE("PostgresStorage: extend_many of 100 reservations is one statement and keeps them all") {
  cs::PostgresStorage storage(pg::options());
  std::vector<cs::Key> keys;
  std::vector<cs::Reservation> held;
  for (int i = 0; i < 100; ++i) {
    keys.emplace_back("batch", "1", "key-" + std::to_string(i));
    held.push_back(storage.acquire(keys.back(), {"a", {}, 2s, false}).reservation);
  }
  // Two of them ended meanwhile: one taken by another owner, one released. Each is fenced off
  // alone.
  REQUIRE(storage.release(keys[7], held[7]) == cs::ReleaseStatus::released);
  const auto b = storage.acquire(keys[7], {"b", {}, 30s, false}).reservation;
  REQUIRE(storage.release(keys[8], held[8]) == cs::ReleaseStatus::released);
  std::vector<cs::Extension> batch;
  for (std::size_t i = 0; i < keys.size(); ++i) batch.push_back({&keys[i], &held[i], 60s});
  batch.push_back(batch[0]);  // the same item twice is extended twice, answered twice

  const std::uint64_t before = storage.round_trips();
  const std::vector<cs::ExtendResult> r = storage.extend_many(batch, {});
  CHECK(storage.round_trips() - before == 1);
  REQUIRE(r.size() == 101);
  for (std::size_t i = 0; i < r.size(); ++i) {
    if (i == 7 || i == 8) continue;
    CHECK(r[i].status == cs::ExtendStatus::extended);
    CHECK(r[i].current.owner == "a");
    CHECK(r[i].current.token == held[i % 100].token);
  }
  CHECK(r[7].status == cs::ExtendStatus::lost);
  CHECK(r[7].current.owner == "b");
  CHECK(r[7].current.token == b.token);
  CHECK(r[8].status == cs::ExtendStatus::lost);
  CHECK(r[8].current.owner.empty());
  // By the server's clock, 60 s from now where the acquisition gave 2 s.
  CHECK(storage.reservation(keys[1])->expires_at == r[1].current.expires_at);
  CHECK(storage.reservation(keys[1])->expires_at - held[1].expires_at > 50s);
  CHECK(storage.extend_many({}, {}).empty());
  CHECK(storage.round_trips() - before == 3);  // plus the two reads; the empty batch sends nothing
}

TEST_CASE(
    "through PostgresStorage try_claim (hit, acquired or held), holder and adopt are one round "
    "trip") {
  cs::PostgresStorage storage(pg::options());
  test::check_engine_round_trips(storage, [&] { return storage.round_trips(); });
}

// Not run by default: prints latencies for docs/storage-postgres.md (`cacheserialize_postgres_tests
// "[latency]"`).
TEST_CASE("PostgresStorage latencies", "[.][latency]") {
  cs::PostgresStorage storage(pg::options());
  constexpr std::size_t n = 500;
  auto report = [](const char* what, std::vector<double>& us) {
    std::sort(us.begin(), us.end());
    std::cout << what << ": median " << us[us.size() / 2] << " us, p99 " << us[us.size() * 99 / 100]
              << " us\n";
  };
  auto time = [](auto&& f) {
    const auto t = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t).count();
  };
  std::vector<double> miss, store, hit, extend, get;
  std::vector<cs::Key> keys;
  for (std::size_t i = 0; i < n; ++i) keys.emplace_back("t", "1", "key " + std::to_string(i));
  std::vector<cs::Reservation> held(n);
  for (std::size_t i = 0; i < n; ++i) {
    miss.push_back(time([&] {
      held[i] = storage.acquire(keys[i], {"a", {}, 30s, false}).reservation;
    }));
  }
  for (std::size_t i = 0; i < n; ++i) {
    extend.push_back(time([&] { storage.extend(keys[i], held[i], {}, 30s); }));
  }
  for (std::size_t i = 0; i < n; ++i) {
    store.push_back(time([&] {
      storage.store_and_release(keys[i], held[i],
                                cs::StoredOutput::from_bytes(std::string(100, 'x')), {});
    }));
  }
  for (std::size_t i = 0; i < n; ++i) {
    hit.push_back(time([&] { storage.acquire(keys[i], {"b", {}, 30s, false}); }));
  }
  for (std::size_t i = 0; i < n; ++i) get.push_back(time([&] { storage.get(keys[i]); }));
  report("acquire (miss, takes the reservation)", miss);
  report("store_and_release (100-byte output)", store);
  report("acquire (hit, 100-byte output)", hit);
  report("extend", extend);
  report("get", get);

  auto triple =
      cs::serialize_cached([](int x) { return x * 3; }, cs::TaskOptions{"triple", "1"}, storage);
  std::vector<double> call_miss, call_hit;
  for (int i = 0; i < static_cast<int>(n); ++i) call_miss.push_back(time([&] { triple(i); }));
  for (int i = 0; i < static_cast<int>(n); ++i) call_hit.push_back(time([&] { triple(i); }));
  report("serialize_cached call, miss (2 round trips)", call_miss);
  report("serialize_cached call, hit (1 round trip)", call_hit);
}
