#pragma once

// The SQL of PostgresStorage: the tables and function (schema version 2) and its statements, one
// round trip each (a rejected store asks a second, `stmt_store_rejected`, for the holder). Only
// configuration (the schema and table prefix, checked to be plain identifiers) is spliced into SQL
// text; keys, owners and outputs are always binary parameters.
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

/// The schema version these statements expect; stored in the meta table. Version 1 had the same
/// tables and no function; version 2 added the acquire function (`acquire_function_sql`).
inline constexpr int schema_version = 2;

/// The prepared statements' names (one set per connection).
inline constexpr const char* stmt_get = "cacheserialize_get";
inline constexpr const char* stmt_acquire = "cacheserialize_acquire";
inline constexpr const char* stmt_acquire_overwrite = "cacheserialize_acquire_overwrite";
inline constexpr const char* stmt_extend = "cacheserialize_extend";
inline constexpr const char* stmt_extend_many = "cacheserialize_extend_many";
inline constexpr const char* stmt_release = "cacheserialize_release";
inline constexpr const char* stmt_store = "cacheserialize_store";
inline constexpr const char* stmt_store_rejected = "cacheserialize_store_rejected";
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
    check_identifier("table_prefix", table_prefix, true, 7);  // + "entries", "acquire"
    schema = schema_name;
    prefix = table_prefix;
    quoted_schema = "\"" + schema + "\"";
    entries = quoted_schema + ".\"" + prefix + "entries\"";
    meta = quoted_schema + ".\"" + prefix + "meta\"";
    tokens = quoted_schema + ".\"" + prefix + "tokens\"";
    acquire = quoted_schema + ".\"" + prefix + "acquire\"";
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
  std::string acquire;  // the acquire function
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

/// The acquire function (schema version 2): the write side of an acquire, which the acquire
/// statement calls only when the key has no stored output in its snapshot (or to overwrite).
/// Parameters: key_hash, key, owner, ttl_ns, overwrite. "Now" is the server's
/// statement_timestamp().
///
/// A key never seen (most misses) is one INSERT ... ON CONFLICT DO NOTHING: a new row holding
/// the reservation. Otherwise the key's row is locked (SELECT ... FOR UPDATE: in READ COMMITTED
/// it waits for a concurrent writer and reads the latest version) and decided on under that
/// lock, which is held until the statement commits: take it (free, released or expired: a new
/// token from the sequence, drawn under the lock, so tokens grow per key), extend it (ours
/// already), or leave it unwritten (another owner's live reservation, or an output stored since
/// the statement's read: a hit). So there is no read-then-write race; and, unlike an upsert's
/// DO UPDATE, a waiter's poll writes nothing. A row deleted between the two (prune) sends it
/// back to the INSERT.
///
/// -> the answer in one bytea, so that the acquire statement has two result columns, not nine
/// (each column costs the server a type lookup and a description per execution, hits
/// included). Big-endian: 'h' then the stored output; or 'a' (acquired) or 'w' (held by
/// another), then token, expires_ns and now_ns (8 bytes each), the owner's length (4) and bytes,
/// then, if an expired reservation was replaced, its token and expires_ns (8 each) and owner
/// (the rest). See `parse_answer`.
///
/// plpgsql, not SQL: it keeps its statements' plans for the session. No `SET search_path`
/// clause (a configuration save and restore per call): the store's names are schema-qualified,
/// and the built-ins resolve through the session's search_path, pg_catalog alone for
/// PostgresStorage (`session_sql`).
inline std::string acquire_function_sql(const Names& n) {
  const std::string next_token = "nextval('" + n.tokens + "')";
  // 'a' or 'w', then the holder ($token, $expires, its $owner) and now.
  auto held = [](const std::string& status, const std::string& token, const std::string& expires,
                 const std::string& owner) {
    return "'" + status + "'::bytea || int8send(" + token + ") || int8send(" + expires +
           ") || int8send(v_now_ns) || int4send(length(" + owner + ")) || " + owner;
  };
  return "CREATE OR REPLACE FUNCTION " + n.acquire +
         " (p_key_hash bytea, p_key bytea, p_owner bytea, p_ttl_ns bigint, p_overwrite boolean)"
         " RETURNS bytea LANGUAGE plpgsql VOLATILE AS $cacheserialize$"
         " DECLARE v_now_ns bigint := " +
         std::string(server_now_ns()) +
         "; v_expires_ns bigint := v_now_ns + p_ttl_ns; v_token bigint; r record;"
         " BEGIN LOOP INSERT INTO " +
         n.entries +
         " (key_hash, key, owner, token, expires_ns) VALUES (p_key_hash, p_key, p_owner, " +
         next_token +
         ", v_expires_ns) ON CONFLICT (key_hash) DO NOTHING RETURNING token INTO v_token;"
         " IF FOUND THEN RETURN " +
         held("a", "v_token", "v_expires_ns", "p_owner") +
         "; END IF;"
         " SELECT e.output, e.owner, e.token, e.expires_ns INTO r FROM " +
         n.entries +
         " e WHERE e.key_hash = p_key_hash FOR UPDATE; EXIT WHEN FOUND; END LOOP;"
         " IF r.output IS NOT NULL AND NOT p_overwrite THEN RETURN 'h'::bytea || r.output;"
         " END IF;"
         " IF r.owner = p_owner THEN UPDATE " +
         n.entries +
         " SET expires_ns = v_expires_ns, prev_owner = NULL, prev_token = NULL,"
         " prev_expires_ns = NULL WHERE key_hash = p_key_hash; RETURN " +
         held("a", "r.token", "v_expires_ns", "p_owner") +
         "; END IF;"
         " IF r.owner IS NULL OR r.expires_ns <= v_now_ns THEN v_token := " +
         next_token + "; UPDATE " + n.entries +
         " SET owner = p_owner, token = v_token, expires_ns = v_expires_ns, prev_owner = r.owner,"
         " prev_token = r.token, prev_expires_ns = r.expires_ns WHERE key_hash = p_key_hash;"
         " RETURN " +
         held("a", "v_token", "v_expires_ns", "p_owner") +
         " || CASE WHEN r.owner IS NULL THEN ''::bytea ELSE int8send(r.token) ||"
         " int8send(COALESCE(r.expires_ns, 0)) || r.owner END; END IF;"
         " RETURN " +
         held("w", "r.token", "r.expires_ns", "r.owner") + "; END $cacheserialize$";
}

/// Creates what is missing, and migrates version 1 tables (the same tables, without the
/// function) to version 2, under an advisory lock so that processes starting together do not
/// race on the catalogs. One transaction, one round trip; safe to run again.
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
         // The function, and the version, only for tables this code knows (a fresh store, or
         // version 1): tables of a later release are left alone, to be refused by its version.
         " DO $do$ BEGIN IF (SELECT value FROM " +
         n.meta + " WHERE name = 'schema_version') IN ('1', '" + std::to_string(schema_version) +
         "') THEN EXECUTE $fn$" + acquire_function_sql(n) + "$fn$; UPDATE " + n.meta +
         " SET value = '" + std::to_string(schema_version) +
         "' WHERE name = 'schema_version'; END IF; END $do$;"
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
  std::string sql;
  sql += "PREPARE " + std::string(stmt_get) + " (bytea) AS SELECT output FROM " + n.entries +
         " WHERE key_hash = $1 AND output IS NOT NULL;";
  // reservation: $1 key_hash. Read-only: the row's holder, live or expired, if any.
  sql += "PREPARE " + std::string(stmt_reservation) +
         " (bytea) AS SELECT owner, token, expires_ns FROM " + n.entries +
         " WHERE key_hash = $1 AND owner IS NOT NULL;";

  // acquire: $1 key_hash, $2 key, $3 owner, $4 ttl_ns. -> one row: the stored output (a hit),
  // else the answer of the acquire function. A hit is a plain primary-key read from the
  // statement's snapshot: no lock, no write, no function call (CASE evaluates the call only when
  // no output was found), about a primary-key SELECT's cost. Otherwise the function's upsert
  // decides on the key's latest row under its lock, so the read only ever answers hits: no
  // read-then-write race. Overwriting has a statement of its own (below), so that this one has
  // no parameter in its join condition: a condition on a parameter alone is planned as a gating
  // node of its own, which cost every hit about 5% of the server's instructions.
  sql += "PREPARE " + std::string(stmt_acquire) + " (bytea, bytea, bytea, bigint) AS" +
         " SELECT e.output, CASE WHEN e.output IS NULL THEN " + n.acquire +
         " ($1, $2, $3, $4, false) END FROM (SELECT) AS one LEFT JOIN " + n.entries +
         " e ON e.key_hash = $1 AND e.output IS NOT NULL;";
  // acquire_overwrite: acquire's parameters and answer, for a caller that recomputes whatever
  // is stored: never a hit.
  sql += "PREPARE " + std::string(stmt_acquire_overwrite) + " (bytea, bytea, bytea, bigint) AS" +
         " SELECT NULL::bytea, " + n.acquire + " ($1, $2, $3, $4, true);";

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

  // store_and_release: $1 key_hash, $2 owner, $3 token, $4 output. -> one row if stored (and
  // notifies listeners on commit), none if rejected. A bare fenced UPDATE, as every miss makes
  // one: answering a rejection in the same statement (a CTE, and a UNION ALL with the key's
  // current row) made it cost the server about 55,000 more instructions (a sixth of a miss),
  // stored or not. A rejected store asks store_rejected instead, a second round trip on a rare
  // path.
  sql += "PREPARE " + std::string(stmt_store) + " (bytea, bytea, bigint, bytea) AS UPDATE " +
         n.entries + " SET output = $4, stored_at = statement_timestamp(), " + clear +
         " WHERE key_hash = $1 AND owner = $2 AND token = $3 RETURNING " + notify + ";";
  // store_rejected: $1 key_hash, $2 the output a retried store carried (else empty, and the
  // last column unused). -> the key's holder (owner NULL: nobody), and whether the output stored
  // is that one (see the store's retry).
  sql += "PREPARE " + std::string(stmt_store_rejected) + " (bytea, bytea) AS" +
         " SELECT owner, token, expires_ns, output IS NOT DISTINCT FROM $2 FROM " + n.entries +
         " WHERE key_hash = $1;";

  // prune: $1 older_than_ns, $2 batch size, $3 the last key_hash the previous batch examined
  // ('' at first). One batch: deletes at most $2 rows after $3, in key_hash order, that have no
  // live reservation (none, or one that expired at least $1 ago) and no output stored less than
  // $1 ago, by the server's clock. Each batch walks the primary key on from where the last one
  // stopped, so one pass reads each row once, however many it keeps; rescanning from the start
  // would read every kept row, and every row deleted but not yet vacuumed, again in each batch.
  // The DELETE looks its victims up by the primary key (= ANY of an array): joined to the CTE,
  // the planner hashes the whole table instead, in every batch.
  // Rows are locked with SKIP LOCKED, so a batch never waits for a key in use and holds its
  // locks only for this one statement; the lock re-checks the conditions on the row's latest
  // version, so a row taken or written meanwhile is left alone. Tokens come from the sequence,
  // not the row: deleting a row never lets a token go back.
  // -> rows deleted, of them with an output, rows examined, the last key_hash examined.
  const std::string idle =
      "(e.owner IS NULL OR e.expires_ns <= c.now_ns - $1) AND (e.output IS NULL OR"
      " (extract(epoch FROM e.stored_at) * 1000000000)::bigint <= c.now_ns - $1)";
  sql += "PREPARE " + std::string(stmt_prune) + " (bigint, bigint, bytea) AS" +
         " WITH clock AS MATERIALIZED (SELECT " + now + " AS now_ns)," +
         " victims AS (SELECT e.key_hash FROM " + n.entries + " e, clock c WHERE " + idle +
         " AND e.key_hash > $3 ORDER BY e.key_hash LIMIT $2 FOR UPDATE OF e SKIP LOCKED)," +
         " gone AS (DELETE FROM " + n.entries + " e USING clock c" +
         " WHERE e.key_hash = ANY (ARRAY(SELECT key_hash FROM victims)) AND " + idle +
         " RETURNING e.output IS NOT NULL AS had_output)"
         " SELECT count(*), count(*) FILTER (WHERE had_output),"
         " (SELECT count(*) FROM victims),"
         " (SELECT key_hash FROM victims ORDER BY key_hash DESC LIMIT 1) FROM gone;";

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
