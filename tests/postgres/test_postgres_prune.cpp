// PostgresStorage::prune against the real server: what it deletes and what it never touches,
// by the server's clock, in bounded batches, with tokens that still grow after a row is gone.

#include <algorithm>
#include <catch2/catch.hpp>
#include <stdexcept>
#include <string>

#include "pg_support.hpp"

namespace cs = cacheserialize;
namespace pg = test::pg;
using namespace std::chrono_literals;

namespace {

cs::AcquireRequest request(const std::string& owner, cs::Duration ttl, bool overwrite = false) {
  return cs::AcquireRequest{owner, cs::TimePoint{}, ttl, overwrite};
}

std::string entries(const cs::PostgresOptions& o) { return "\"" + o.schema + "\".entries"; }

// Waits (bounded) until the server's clock has passed `since + d`.
void wait_server(pg::Sql& sql, cs::TimePoint since, cs::Duration d) {
  REQUIRE(test::eventually([&] { return pg::server_now(sql) >= since + d; }, 5000ms, 10ms));
}

}  // namespace

TEST_CASE("PostgresStorage prune deletes old outputs and free records, never a live reservation") {
  const cs::PostgresOptions o = pg::options();
  cs::PostgresStorage storage(o);
  pg::Sql sql;
  const cs::Key old_output("prune", "1", "old output");
  const cs::Key new_output("prune", "1", "new output");
  const cs::Key live("prune", "1", "live, no output");
  const cs::Key live_over_old("prune", "1", "live over an old output");
  const cs::Key released("prune", "1", "released");
  const cs::Key long_expired("prune", "1", "long expired");
  const cs::Key just_expired("prune", "1", "just expired");

  storage.put(old_output, cs::StoredOutput::from_bytes("old"));
  storage.put(live_over_old, cs::StoredOutput::from_bytes("old too"));
  const auto e = storage.acquire(long_expired, request("e", 1ms));
  REQUIRE(e.status == cs::AcquireStatus::acquired);
  const cs::TimePoint t0 = pg::server_now(sql);
  wait_server(sql, t0, 400ms);

  storage.put(new_output, cs::StoredOutput::from_bytes("new"));
  const auto l = storage.acquire(live, request("l", 60s));
  REQUIRE(l.status == cs::AcquireStatus::acquired);
  const auto lo = storage.acquire(live_over_old, request("lo", 60s, /*overwrite=*/true));
  REQUIRE(lo.status == cs::AcquireStatus::acquired);
  const auto r = storage.acquire(released, request("r", 60s));
  REQUIRE(storage.release(released, r.reservation) == cs::ReleaseStatus::released);
  const auto j = storage.acquire(just_expired, request("j", 1ms));
  REQUIRE(j.status == cs::AcquireStatus::acquired);
  REQUIRE(sql.value("SELECT count(*) FROM " + entries(o)) == "7");

  const cs::PruneResult result = storage.prune(300ms);
  CHECK(result.outputs_removed == 1);       // old_output
  CHECK(result.reservations_removed == 2);  // released, long_expired
  CHECK(result.temporaries_removed == 0);
  CHECK_FALSE(storage.get(old_output));
  REQUIRE(storage.get(new_output));
  CHECK(storage.get(new_output)->bytes == "new");
  // Live reservations, with or without an output, are untouched; so is one expired just now.
  REQUIRE(storage.reservation(live));
  CHECK(storage.reservation(live)->token == l.reservation.token);
  REQUIRE(storage.reservation(live_over_old));
  REQUIRE(storage.get(live_over_old));
  CHECK(storage.get(live_over_old)->bytes == "old too");
  REQUIRE(storage.reservation(just_expired));
  CHECK(storage.reservation(just_expired)->token == j.reservation.token);
  CHECK_FALSE(storage.reservation(long_expired));
  CHECK(sql.value("SELECT count(*) FROM " + entries(o)) == "4");
  // The live holders still store.
  CHECK(storage
            .store_and_release(live, l.reservation, cs::StoredOutput::from_bytes("l"),
                               cs::TimePoint{})
            .status == cs::StoreStatus::stored);

  SECTION("a token issued after prune is above every earlier one for the key") {
    const std::uint64_t highest =
        std::max({e.reservation.token, l.reservation.token, lo.reservation.token,
                  r.reservation.token, j.reservation.token});
    for (const cs::Key* k : {&released, &long_expired, &old_output}) {
      const auto again = storage.acquire(*k, request("again", 60s));
      REQUIRE(again.status == cs::AcquireStatus::acquired);
      CHECK(again.reservation.token > highest);
    }
  }

  SECTION("prune(0) keeps the live reservations and what was stored just now") {
    wait_server(sql, pg::server_now(sql), 1ms);
    const cs::PruneResult all = storage.prune(0s);
    CHECK(all.outputs_removed == 2);  // new_output, and live's just stored (no reservation left)
    CHECK(all.reservations_removed == 1);  // just_expired
    CHECK(storage.reservation(live_over_old));
    CHECK(sql.value("SELECT count(*) FROM " + entries(o)) == "1");
  }
}

TEST_CASE("PostgresStorage prune deletes in bounded batches, one short statement each") {
  const cs::PostgresOptions o = pg::options();
  cs::PostgresStorage storage(o);
  pg::Sql sql;
  // 2,500 outputs stored an hour ago, 10 live reservations and 5 free records, written
  // directly.
  sql.value("INSERT INTO " + entries(o) +
            " (key_hash, key, output, stored_at) SELECT sha256(('o' || i)::bytea),"
            " ('o' || i)::bytea, 'x'::bytea, now() - interval '1 hour'"
            " FROM generate_series(1, 2500) i");
  sql.value("INSERT INTO " + entries(o) +
            " (key_hash, key, owner, token, expires_ns) SELECT sha256(('l' || i)::bytea),"
            " ('l' || i)::bytea, 'holder'::bytea, nextval('\"" +
            o.schema +
            "\".tokens'), (extract(epoch FROM now() + interval '1 hour') * 1e9)::bigint"
            " FROM generate_series(1, 10) i");
  sql.value("INSERT INTO " + entries(o) +
            " (key_hash, key, token) SELECT sha256(('f' || i)::bytea), ('f' || i)::bytea,"
            " nextval('\"" +
            o.schema + "\".tokens') FROM generate_series(1, 5) i");
  const std::uint64_t before = storage.round_trips();
  const cs::PruneResult result = storage.prune(1min);
  const std::uint64_t statements = storage.round_trips() - before;
  CHECK(result.outputs_removed == 2500);
  CHECK(result.reservations_removed == 5);
  CHECK(statements == 3);  // 1,000 + 1,000 + 505: the last batch is short
  CHECK(statements == (2505 / cs::PostgresStorage::kPruneBatch) + 1);
  CHECK(sql.value("SELECT count(*) FROM " + entries(o)) == "10");
  CHECK(sql.value("SELECT count(*) FROM " + entries(o) + " WHERE owner IS NOT NULL") == "10");

  // Nothing left to delete: one statement.
  const std::uint64_t again = storage.round_trips();
  CHECK(storage.prune(0s).outputs_removed == 0);
  CHECK(storage.round_trips() - again == 1);
}

TEST_CASE("PostgresStorage prune skips a row locked by a transaction in progress") {
  const cs::PostgresOptions o = pg::options();
  cs::PostgresStorage storage(o);
  const cs::Key busy("prune", "1", "busy");
  const cs::Key idle("prune", "1", "idle");
  storage.put(busy, cs::StoredOutput::from_bytes("b"));
  storage.put(idle, cs::StoredOutput::from_bytes("i"));
  pg::Sql locker;
  locker.value("BEGIN");
  locker.value("SELECT 1 FROM " + entries(o) + " WHERE key = '\\x" +
               cs::detail::pg::hex(busy.encoded()) + "'::bytea FOR UPDATE");
  // Not blocked: the busy row is skipped, the idle one deleted.
  const cs::PruneResult result = storage.prune(0s);
  CHECK(result.outputs_removed == 1);
  CHECK(storage.get(busy));
  CHECK_FALSE(storage.get(idle));
  locker.value("ROLLBACK");
  CHECK(storage.prune(0s).outputs_removed == 1);
  CHECK_FALSE(storage.get(busy));
}

TEST_CASE("PostgresStorage prune rejects a negative age, naming it") {
  cs::PostgresStorage storage(pg::options());
  try {
    storage.prune(-1ms);
    FAIL("a negative age was accepted");
  } catch (const std::invalid_argument& e) {
    CHECK_THAT(e.what(), Catch::Contains("older_than"));
    CHECK_THAT(e.what(), Catch::Contains("prune"));
  }
}
