#pragma once

// The SQL of PostgresStorage: the tables (schema version 1) and its statements, one round trip
// each. Only configuration (the schema and table prefix, checked to be plain identifiers)
// is spliced into SQL text; keys, owners and outputs are always binary parameters.
//
// Every statement is a single autocommit statement whose row lock and conditions are on the
// key's latest row version (INSERT ... ON CONFLICT DO UPDATE and UPDATE ... WHERE re-check a row
// changed concurrently), so there is no read-then-write race. Time is the server's:
// statement_timestamp(), as nanoseconds since the epoch, is "now" for every expiry.

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../sha256.hpp"

namespace cacheserialize {
namespace detail {
namespace pg {

/// The schema version these statements expect; stored in the meta table.
inline constexpr int schema_version = 1;

/// The prepared statements' names (one set per connection).
inline constexpr const char* stmt_get = "cacheserialize_get";
inline constexpr const char* stmt_acquire = "cacheserialize_acquire";
inline constexpr const char* stmt_extend = "cacheserialize_extend";
inline constexpr const char* stmt_extend_many = "cacheserialize_extend_many";
inline constexpr const char* stmt_release = "cacheserialize_release";
inline constexpr const char* stmt_store = "cacheserialize_store";
inline constexpr const char* stmt_put = "cacheserialize_put";
inline constexpr const char* stmt_reservation = "cacheserialize_reservation";
inline constexpr const char* stmt_prune = "cacheserialize_prune";

/// @throws std::invalid_argument unless `name` is a plain SQL identifier (or, for a prefix, may
///         be empty), short enough for PostgreSQL's 63-byte limit with `reserve` bytes appended.
inline void check_identifier(const char* option, const std::string& name, bool may_be_empty,
                             std::size_t reserve) {
  auto bad = [&](const std::string& why) {
    throw std::invalid_argument(std::string("cacheserialize::PostgresOptions::") + option + " '" +
                                name + "' " + why);
  };
  if (name.empty()) {
    if (may_be_empty) return;
    bad("is empty");
  }
  if (name.size() + reserve > 63) {
    bad("is too long: PostgreSQL names have at most 63 bytes (" + std::to_string(reserve) +
        " are appended)");
  }
  const char first = name[0];
  if (!((first >= 'a' && first <= 'z') || (first >= 'A' && first <= 'Z') || first == '_')) {
    bad("must start with a letter or '_'");
  }
  for (const char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) {
      bad("may contain only ASCII letters, digits and '_'");
    }
  }
}

/// The database objects of one store, quoted for splicing into SQL.
struct Names {
  Names(const std::string& schema_name, const std::string& table_prefix) {
    check_identifier("schema", schema_name, false, 0);
    check_identifier("table_prefix", table_prefix, true, 7);  // + "entries"
    schema = schema_name;
    prefix = table_prefix;
    quoted_schema = "\"" + schema + "\"";
    entries = quoted_schema + ".\"" + prefix + "entries\"";
    meta = quoted_schema + ".\"" + prefix + "meta\"";
    tokens = quoted_schema + ".\"" + prefix + "tokens\"";
    // One channel per store, named by a digest so it always fits in 63 bytes; a collision
    // would only cost spurious wake-ups.
    const std::string id = sha256_hex(schema + '\0' + prefix);
    channel = "cacheserialize_" + id.substr(0, 16);
    std::uint64_t k = 0;
    for (std::size_t i = 0; i < 15; ++i) {
      const char c = id[16 + i];
      k = k * 16 + static_cast<std::uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    setup_lock = std::to_string(k);  // 60 bits: a positive bigint
  }

  std::string schema;
  std::string prefix;
  std::string quoted_schema;
  std::string entries;
  std::string meta;
  std::string tokens;
  std::string channel;
  std::string setup_lock;
};

/// "Now" on the server, in nanoseconds since the epoch (extract returns numeric from
/// PostgreSQL 14 on, so the microseconds are exact).
inline const char* server_now_ns() {
  return "(extract(epoch FROM statement_timestamp()) * 1000000000)::bigint";
}

/// Session settings for every connection: a server-side statement bound, and a search path that
/// resolves every unqualified function and operator in pg_catalog only.
inline std::string session_sql(std::int64_t statement_timeout_ms) {
  return "SET statement_timeout = " + std::to_string(statement_timeout_ms) +
         "; SET search_path = pg_catalog; SET idle_in_transaction_session_timeout = " +
         std::to_string(statement_timeout_ms);
}

/// @return one query answering: do the schema's tables exist?
inline std::string tables_exist_sql(const Names& n) {
  return "SELECT to_regclass('" + n.entries + "') IS NOT NULL AND to_regclass('" + n.meta +
         "') IS NOT NULL AND to_regclass('" + n.tokens + "') IS NOT NULL";
}

/// Creates what is missing, under an advisory lock so that processes starting together do not
/// race on the catalogs. One transaction, one round trip.
inline std::string create_sql(const Names& n) {
  return "BEGIN; SELECT pg_advisory_xact_lock(" + n.setup_lock +
         ");"
         " CREATE SCHEMA IF NOT EXISTS " +
         n.quoted_schema + ";" + " CREATE TABLE IF NOT EXISTS " + n.meta +
         " (name text PRIMARY KEY, value text NOT NULL);"
         " CREATE SEQUENCE IF NOT EXISTS " +
         n.tokens + " AS bigint;" + " CREATE TABLE IF NOT EXISTS " + n.entries +
         " ("
         "key_hash bytea PRIMARY KEY,"  // SHA-256 of the key's canonical bytes
         " key bytea NOT NULL,"         // the canonical bytes
         " output bytea,"               // NULL: no output stored
         " stored_at timestamptz,"      // when the output was stored (server time)
         " owner bytea,"                // NULL: no reservation
         " token bigint,"               // the fencing token of the (last) reservation
         " expires_ns bigint,"          // the reservation's expiry, server ns since the epoch
         " prev_owner bytea,"           // the expired reservation the last acquisition replaced
         " prev_token bigint,"
         " prev_expires_ns bigint"
         ") WITH (fillfactor = 90);"
         " COMMENT ON TABLE " +
         n.entries +
         " IS 'cacheserialize: cached outputs and reservations';"
         " INSERT INTO " +
         n.meta + " (name, value) VALUES ('schema_version', '" + std::to_string(schema_version) +
         "') ON CONFLICT (name) DO NOTHING;"
         " COMMIT";
}

inline std::string version_sql(const Names& n) {
  return "SELECT value FROM " + n.meta + " WHERE name = 'schema_version'";
}

/// A statement that changes the key's row only while its reservation is still ($2 owner,
/// $3 token): it answers one row `matched` (over the updated row's `returning` columns), or else
/// one row `otherwise` over the key's current row (none if the key has no row).
inline std::string fenced_update(const Names& n, const std::string& set,
                                 const std::string& returning, const std::string& matched,
                                 const std::string& otherwise) {
  return " WITH up AS (UPDATE " + n.entries + " SET " + set +
         " WHERE key_hash = $1 AND owner = $2 AND token = $3 RETURNING " + returning + ") SELECT " +
         matched + " FROM up UNION ALL SELECT " + otherwise + " FROM " + n.entries +
         " WHERE key_hash = $1 AND NOT EXISTS (SELECT FROM up)";
}

/// PREPAREs every statement (one round trip); run on each new connection.
inline std::string prepare_sql(const Names& n) {
  const std::string now = server_now_ns();
  const std::string notify = "pg_notify('" + n.channel + "', encode(key_hash, 'hex'))::text";
  // acquire: $1 key_hash, $2 key, $3 owner, $4 ttl_ns, $5 overwrite. Conditions on `e`, the
  // key's latest row, locked by ON CONFLICT.
  const std::string open = "(e.output IS NULL OR $5)";
  const std::string take = "(" + open +
                           " AND e.owner IS DISTINCT FROM $3 AND (e.owner IS NULL OR"
                           " e.expires_ns <= (SELECT now_ns FROM clock)))";
  const std::string own = "(" + open + " AND e.owner = $3)";
  std::string sql;
  sql += "PREPARE " + std::string(stmt_get) + " (bytea) AS SELECT output FROM " + n.entries +
         " WHERE key_hash = $1 AND output IS NOT NULL;";
  // reservation: $1 key_hash. Read-only: the row's holder, live or expired, if any.
  sql += "PREPARE " + std::string(stmt_reservation) +
         " (bytea) AS SELECT owner, token, expires_ns FROM " + n.entries +
         " WHERE key_hash = $1 AND owner IS NOT NULL;";

  // A hit is read from the statement's snapshot without a lock or a write. Otherwise one upsert
  // decides on the latest row: take it (free, released or expired: a new token from the
  // sequence, drawn under the row lock so tokens grow per key), extend it (ours already), or
  // leave it (another owner's live reservation, or an output stored meanwhile) and report it.
  auto decide = [&](const std::string& column, const std::string& if_taken,
                    const std::string& if_own) {
    return column + " = CASE WHEN " + take + " THEN " + if_taken + " WHEN " + own + " THEN " +
           if_own + " ELSE e." + column + " END";
  };
  const std::string next_token = "nextval('" + n.tokens + "')";
  const std::string set =
      decide("owner", "$3", "e.owner") + ", " + decide("token", next_token, "e.token") + ", " +
      decide("expires_ns", "EXCLUDED.expires_ns", "EXCLUDED.expires_ns") + ", " +
      decide("prev_owner", "e.owner", "NULL") + ", " + decide("prev_token", "e.token", "NULL") +
      ", " + decide("prev_expires_ns", "e.expires_ns", "NULL");
  const std::string is_hit = "u.output IS NOT NULL AND NOT $5";
  sql += "PREPARE " + std::string(stmt_acquire) + " (bytea, bytea, bytea, bigint, boolean) AS" +
         " WITH clock AS MATERIALIZED (SELECT " + now + " AS now_ns)," +
         " hit AS (SELECT output FROM " + n.entries +
         " WHERE key_hash = $1 AND output IS NOT NULL AND NOT $5)," + " up AS (INSERT INTO " +
         n.entries + " AS e (key_hash, key, owner, token, expires_ns) SELECT $1, $2, $3, " +
         next_token + ", c.now_ns + $4 FROM clock c WHERE NOT EXISTS (SELECT FROM hit)" +
         " ON CONFLICT (key_hash) DO UPDATE SET " + set +
         " RETURNING e.output, e.owner, e.token, e.expires_ns, e.prev_owner, e.prev_token,"
         " e.prev_expires_ns)"
         " SELECT 'h'::text AS status, h.output, NULL::bytea AS owner, NULL::bigint AS token,"
         " NULL::bigint AS expires_ns, NULL::bigint AS now_ns, NULL::bytea AS prev_owner,"
         " NULL::bigint AS prev_token, NULL::bigint AS prev_expires_ns FROM hit h UNION ALL"
         " SELECT CASE WHEN " +
         is_hit + " THEN 'h' WHEN u.owner = $3 THEN 'a' ELSE 'w' END, CASE WHEN " + is_hit +
         " THEN u.output END, u.owner, u.token, u.expires_ns, c.now_ns, u.prev_owner,"
         " u.prev_token, u.prev_expires_ns FROM up u, clock c;";

  // extend: $1 key_hash, $2 owner, $3 token, $4 ttl_ns.
  sql += "PREPARE " + std::string(stmt_extend) + " (bytea, bytea, bigint, bigint) AS" +
         fenced_update(n, "expires_ns = " + now + " + $4", "owner, token, expires_ns",
                       "true, owner, token, expires_ns", "false, owner, token, expires_ns") +
         ";";

  // extend_many: $1 key_hashes, $2 owners, $3 tokens, $4 ttl_ns, arrays of one length. Each
  // item as extend: the key's row is extended only while its reservation is still (owner,
  // token), by one UPDATE that decides each row on its latest version. One row per item, in
  // order: extended, then the holder (the item's own when extended, else the key's current row;
  // all NULL if the key has no row).
  sql += "PREPARE " + std::string(stmt_extend_many) + " (bytea[], bytea[], bigint[], bigint[]) AS" +
         " WITH b AS (SELECT * FROM unnest($1, $2, $3, $4) WITH ORDINALITY" +
         " AS b(key_hash, owner, token, ttl_ns, i))," + " up AS (UPDATE " + n.entries +
         " AS e SET expires_ns = " + now +
         " + b.ttl_ns FROM b WHERE e.key_hash = b.key_hash AND e.owner = b.owner AND"
         " e.token = b.token RETURNING e.key_hash, e.owner, e.token, e.expires_ns)"
         " SELECT u.key_hash IS NOT NULL, COALESCE(u.owner, e.owner),"
         " COALESCE(u.token, e.token), COALESCE(u.expires_ns, e.expires_ns) FROM b"
         " LEFT JOIN up u ON u.key_hash = b.key_hash AND u.owner = b.owner AND u.token = b.token"
         " LEFT JOIN " +
         n.entries + " e ON u.key_hash IS NULL AND e.key_hash = b.key_hash ORDER BY b.i;";

  const std::string clear =
      "owner = NULL, expires_ns = NULL, prev_owner = NULL, prev_token = NULL, prev_expires_ns = "
      "NULL";
  // release: $1 key_hash, $2 owner, $3 token. Notifies listeners on commit.
  sql += "PREPARE " + std::string(stmt_release) + " (bytea, bytea, bigint) AS" +
         fenced_update(n, clear, "key_hash", "'r'::text, " + notify,
                       "CASE WHEN owner IS NULL THEN 'n' ELSE 'o' END, NULL") +
         ";";

  // store_and_release: $1 key_hash, $2 owner, $3 token, $4 output. A rejected store reports
  // the current holder and whether the stored output is already this one (see the retry).
  sql += "PREPARE " + std::string(stmt_store) + " (bytea, bytea, bigint, bytea) AS" +
         fenced_update(n, "output = $4, stored_at = statement_timestamp(), " + clear, "key_hash",
                       "true, NULL::bytea, NULL::bigint, NULL::bigint, NULL::boolean, " + notify,
                       "false, owner, token, expires_ns, output IS NOT DISTINCT FROM $4, NULL") +
         ";";

  // prune: $1 older_than_ns, $2 batch size. One batch: deletes at most $2 rows that have no
  // live reservation (none, or one that expired at least $1 ago) and no output stored less than
  // $1 ago, by the server's clock. Rows are locked with SKIP LOCKED, so a batch never waits for
  // a key in use and holds its locks only for this one statement; the lock re-checks the
  // conditions on the row's latest version, so a row taken or written meanwhile is left alone.
  // Tokens come from the sequence, not the row: deleting a row never lets a token go back.
  // -> rows deleted, of them with an output.
  const std::string idle =
      "(e.owner IS NULL OR e.expires_ns <= c.now_ns - $1) AND (e.output IS NULL OR"
      " (extract(epoch FROM e.stored_at) * 1000000000)::bigint <= c.now_ns - $1)";
  sql += "PREPARE " + std::string(stmt_prune) + " (bigint, bigint) AS" +
         " WITH clock AS MATERIALIZED (SELECT " + now + " AS now_ns)," +
         " victims AS (SELECT e.key_hash FROM " + n.entries + " e, clock c WHERE " + idle +
         " LIMIT $2 FOR UPDATE OF e SKIP LOCKED)," + " gone AS (DELETE FROM " + n.entries +
         " e USING victims v, clock c WHERE e.key_hash = v.key_hash AND " + idle +
         " RETURNING e.output IS NOT NULL AS had_output)"
         " SELECT count(*), count(*) FILTER (WHERE had_output) FROM gone;";

  // put: $1 key_hash, $2 key, $3 output; leaves any reservation alone.
  sql += "PREPARE " + std::string(stmt_put) +
         " (bytea, bytea, bytea) AS"
         " WITH up AS (INSERT INTO " +
         n.entries +
         " (key_hash, key, output, stored_at) VALUES ($1, $2, $3, statement_timestamp())"
         " ON CONFLICT (key_hash) DO UPDATE SET output = EXCLUDED.output,"
         " stored_at = EXCLUDED.stored_at RETURNING key_hash)"
         " SELECT " +
         notify + " FROM up";
  return sql;
}

}  // namespace pg
}  // namespace detail
}  // namespace cacheserialize
