// Hostile keys, owners and outputs: quotes, SQL, NUL bytes, invalid UTF-8, backslashes and 1 MB
// strings are stored and found byte for byte, never interpreted, and never harm the tables.

#include <catch2/catch.hpp>
#include <random>

#include "pg_support.hpp"

namespace cs = cacheserialize;
namespace pg = test::pg;
using namespace std::chrono_literals;

namespace {

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(gen() & 0xffu);
  return s;
}

std::vector<std::string> hostile_strings() {
  return {
      "",
      "'",
      "\"",
      "'; DROP TABLE entries; --",
      "\"; DROP SCHEMA public CASCADE; --",
      "$1 $2 $$ E'\\x00' \\\\ \\",
      std::string("nul\0in\0the\0middle", 18),
      std::string(3, '\0'),
      "\xff\xfe\xc0\xaf invalid UTF-8 \xed\xa0\x80",
      "\\x414243",  // looks like a bytea hex literal
      "line\nbreak\rcarriage\ttab",
      "ünïcödé ✓ 🚀",
      random_bytes(1 << 20, 7),  // 1 MB of every byte value
  };
}

}  // namespace

TEST_CASE("hostile keys and outputs are stored and found exactly, byte for byte") {
  const cs::PostgresOptions o = pg::options();
  cs::PostgresStorage storage(o);
  const std::vector<std::string> strings = hostile_strings();
  for (std::size_t i = 0; i < strings.size(); ++i) {
    // The key's canonical bytes are the hostile string itself, and so are its task and version
    // (which only appear in messages).
    const cs::Key key(strings[i], strings[i], strings[i]);
    const std::string output = strings[(i + 3) % strings.size()];
    const std::string owner = strings[(i + 5) % strings.size()] + std::to_string(i);
    INFO("string #" << i);
    const cs::AcquireResult a = storage.acquire(key, {owner, {}, 30s, false});
    REQUIRE(a.status == cs::AcquireStatus::acquired);
    CHECK(a.reservation.owner == owner);
    const cs::AcquireResult held = storage.acquire(key, {"other", {}, 30s, false});
    REQUIRE(held.status == cs::AcquireStatus::held);
    CHECK(held.reservation.owner == owner);  // the holder's id comes back exactly
    REQUIRE(storage.store_and_release(key, a.reservation, cs::StoredOutput::from_bytes(output), {})
                .status == cs::StoreStatus::stored);
    const cs::AcquireResult hit = storage.acquire(key, {"other", {}, 30s, false});
    REQUIRE(hit.status == cs::AcquireStatus::hit);
    CHECK(hit.output.bytes == output);
    if (strings[i].size() < 1000) {  // hashing a 1 MB key is slow in unoptimised builds
      REQUIRE(storage.get(key));
      CHECK(storage.get(key)->bytes == output);
    }
  }
  pg::Sql sql;
  const std::string entries = "\"" + o.schema + "\".entries";
  CHECK(sql.number("SELECT count(*) FROM " + entries) == static_cast<long long>(strings.size()));
  for (const std::string& s : strings) {  // the canonical bytes themselves are in the table
    CHECK(sql.value_with_bytes("SELECT count(*) FROM " + entries + " WHERE key = $1", s) == "1");
  }
}

TEST_CASE("an empty output is an output, distinct from none") {
  cs::PostgresStorage storage(pg::options());
  const cs::Key key("t", "1", "k");
  storage.put(key, cs::StoredOutput::from_bytes(""));
  REQUIRE(storage.get(key));
  CHECK(storage.get(key)->bytes.empty());
  CHECK(storage.acquire(key, {"a", {}, 30s, false}).status == cs::AcquireStatus::hit);
}

TEST_CASE("serialize_cached over PostgresStorage round-trips hostile inputs and results") {
  cs::PostgresStorage storage(pg::options());
  std::atomic<int> runs{0};
  auto echo = cs::serialize_cached(
      [&](const std::string& in, const std::vector<std::string>& more) {
        runs.fetch_add(1);
        std::string out = std::string("\0<", 2) + in + ">";
        for (const auto& m : more) out += m;
        return out;
      },
      cs::TaskOptions{"echo", "1"}, storage);
  const std::vector<std::string> strings = hostile_strings();
  for (std::size_t i = 0; i < strings.size(); ++i) {
    // Each string is an input once, beside a container of small hostile strings; the output
    // holds them all (so the 1 MB input makes a 1 MB output).
    const std::vector<std::string> more{strings[(i + 1) % strings.size()].substr(0, 64), "'"};
    const std::string expected = std::string("\0<", 2) + strings[i] + ">" + more[0] + "'";
    CHECK(echo(strings[i], more) == expected);
    CHECK(echo(strings[i], more) == expected);  // the hit decodes to the same bytes
  }
  CHECK(runs.load() == static_cast<int>(strings.size()));
}
