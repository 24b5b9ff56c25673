// Schema versions: a store of version 1 (the same tables, no acquire function) opened by this
// release is migrated to version 2 in place: outputs, live reservations and tokens are kept, and
// a process of the old release still running keeps working on it beside the new one. A role
// that may not create (create_tables = false) is told to run tables_sql, which migrates. A
// version from a later release is never touched.

#include <libpq-fe.h>

#include <catch2/catch.hpp>

#include "pg_support.hpp"
#include "schema_v1.hpp"

namespace cs = cacheserialize;
namespace pg = test::pg;
using namespace std::chrono_literals;

namespace {

/// A process of the version 1 release: its acquire statement, prepared on a connection of its
/// own before the migration and still used after it.
class V1Process {
 public:
  explicit V1Process(const std::string& schema)
      : conn_(PQconnectdb(pg::server().conninfo().c_str())) {
    REQUIRE(PQstatus(conn_) == CONNECTION_OK);
    PQclear(PQexec(conn_, "SET search_path = pg_catalog"));
    PGresult* r = PQprepare(conn_, "v1_acquire", pg::v1_acquire_sql(schema).c_str(), 0, nullptr);
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    REQUIRE(ok);
  }
  V1Process(const V1Process&) = delete;
  V1Process& operator=(const V1Process&) = delete;
  ~V1Process() { PQfinish(conn_); }

  struct Answer {
    std::string status;  // "h", "a" or "w"
    std::string output;  // a hit's, as hex ("\x...")
    std::string owner;   // the holder, as hex
    std::uint64_t token = 0;
  };

  Answer acquire(const cs::Key& key, const std::string& owner, std::chrono::seconds ttl) {
    const std::string hash = "\\x" + key.digest();
    const std::string encoded = "\\x" + cs::detail::pg::hex(key.encoded());
    const std::string who = "\\x" + cs::detail::pg::hex(owner);
    const std::string ttl_ns = std::to_string(std::chrono::nanoseconds(ttl).count());
    const char* values[] = {hash.c_str(), encoded.c_str(), who.c_str(), ttl_ns.c_str(), "false"};
    PGresult* r = PQexecPrepared(conn_, "v1_acquire", 5, values, nullptr, nullptr, 0);
    Answer a;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
      a.status = PQgetvalue(r, 0, 0);
      a.output = PQgetvalue(r, 0, 1);
      a.owner = PQgetvalue(r, 0, 2);
      if (!PQgetisnull(r, 0, 3)) a.token = std::stoull(PQgetvalue(r, 0, 3));
    } else {
      a.status = std::string("failed: ") + PQresultErrorMessage(r);
    }
    PQclear(r);
    return a;
  }

 private:
  PGconn* conn_;
};

std::string hex_of(const std::string& raw) { return "\\x" + cs::detail::pg::hex(raw); }

std::string version_of(pg::Sql& sql, const std::string& schema) {
  return sql.value("SELECT value FROM \"" + schema + "\".meta WHERE name = 'schema_version'");
}

}  // namespace

TEST_CASE("a version 1 store is migrated when opened: outputs, live reservations and tokens kept") {
  const cs::PostgresOptions o = pg::options();
  pg::Sql sql;
  sql.exec(pg::v1_create_sql(o.schema));
  REQUIRE(version_of(sql, o.schema) == "1");

  // The old release at work: an output stored, a reservation held for a minute.
  V1Process old(o.schema);
  const cs::Key stored("t", "1", "stored");
  const cs::Key held("t", "1", "held");
  REQUIRE(old.acquire(stored, "old", 60s).status == "a");
  sql.exec("UPDATE \"" + o.schema +
           "\".entries SET output = 'out', owner = NULL WHERE key_hash = '\\x" + stored.digest() +
           "'");  // as version 1's store_and_release leaves it
  const V1Process::Answer hold = old.acquire(held, "old", 60s);
  REQUIRE(hold.status == "a");

  cs::PostgresStorage storage(o);
  CHECK(version_of(sql, o.schema) == "2");
  CHECK(sql.value("SELECT to_regprocedure('\"" + o.schema +
                  "\".acquire(bytea, bytea, bytea, bigint, boolean)') IS NOT NULL") == "t");

  SECTION("the new release sees the old data and honours the old reservation") {
    const auto hit = storage.acquire(stored, {"new", {}, 30s, false});
    CHECK(hit.status == cs::AcquireStatus::hit);
    CHECK(hit.output.bytes == "out");
    const auto busy = storage.acquire(held, {"new", {}, 30s, false});
    CHECK(busy.status == cs::AcquireStatus::held);
    CHECK(busy.reservation.owner == "old");
    CHECK(busy.reservation.token == hold.token);
    CHECK(busy.remaining > 50s);
    CHECK(busy.remaining <= 60s);
    // The old holder's token still fences: its store goes through the new release's statement.
    const cs::Reservation mine{"old", hold.token, busy.reservation.expires_at};
    CHECK(storage.store_and_release(held, mine, cs::StoredOutput::from_bytes("done"), {}).status ==
          cs::StoreStatus::stored);
    CHECK(storage.get(held)->bytes == "done");
    // Tokens keep growing from the same sequence.
    const auto fresh = storage.acquire(cs::Key("t", "1", "fresh"), {"new", {}, 30s, false});
    CHECK(fresh.status == cs::AcquireStatus::acquired);
    CHECK(fresh.reservation.token > hold.token);
  }

  SECTION("a process of the old release still running works beside the new one") {
    const V1Process::Answer hit = old.acquire(stored, "old", 60s);
    CHECK(hit.status == "h");
    CHECK(hit.output == hex_of("out"));
    const cs::Key shared("t", "1", "shared");
    const auto taken = storage.acquire(shared, {"new", {}, 30s, false});
    REQUIRE(taken.status == cs::AcquireStatus::acquired);
    const V1Process::Answer refused = old.acquire(shared, "old", 60s);
    CHECK(refused.status == "w");
    CHECK(refused.owner == hex_of("new"));
    CHECK(refused.token == taken.reservation.token);
    CHECK(
        storage.store_and_release(shared, taken.reservation, cs::StoredOutput::from_bytes("x"), {})
            .status == cs::StoreStatus::stored);
    CHECK(old.acquire(shared, "old", 60s).output == hex_of("x"));
  }
}

TEST_CASE("a version 1 store and create_tables = false: tables_sql migrates it") {
  cs::PostgresOptions o = pg::options();
  o.create_tables = false;
  pg::Sql sql;
  sql.exec(pg::v1_create_sql(o.schema));
  try {
    cs::PostgresStorage storage(o);
    FAIL("a version 1 store was opened without migrating it");
  } catch (const cs::storage_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("schema version 1") && Catch::Contains("tables_sql"));
  }
  CHECK(version_of(sql, o.schema) == "1");
  sql.exec(cs::PostgresStorage::tables_sql(o));  // as a DBA would
  CHECK(version_of(sql, o.schema) == "2");
  cs::PostgresStorage storage(o);
  CHECK(storage.acquire(cs::Key("t", "1", "k"), {"a", {}, 30s, false}).status ==
        cs::AcquireStatus::acquired);
}

TEST_CASE("tables of a later schema version are left as they are, by opening and by tables_sql") {
  const cs::PostgresOptions o = pg::options();
  { cs::PostgresStorage created(o); }
  pg::Sql sql;
  const std::string fn = "\"" + o.schema + "\".acquire(bytea, bytea, bytea, bigint, boolean)";
  sql.exec("UPDATE \"" + o.schema + "\".meta SET value = '3' WHERE name = 'schema_version'");
  sql.exec("DROP FUNCTION " + fn);  // as a later release might have
  CHECK_THROWS_AS(cs::PostgresStorage(o), cs::storage_error);
  sql.exec(cs::PostgresStorage::tables_sql(o));
  CHECK(version_of(sql, o.schema) == "3");
  CHECK(sql.value("SELECT to_regprocedure('" + fn + "') IS NULL") == "t");
}
