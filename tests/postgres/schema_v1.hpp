#pragma once

// Schema version 1 of PostgresStorage, verbatim as that release wrote it (sql.hpp at 891e89d; its
// advisory lock number is the one of schema "SCHEMA", which only serialises concurrent setups), for
// the migration tests: its setup script and its acquire statement, with "SCHEMA" where the
// schema name goes. Version 2 keeps its tables as they were and adds a function; a process of the
// old release that is still running keeps using these statements on them.

#include <cstddef>
#include <string>

namespace test {
namespace pg {

/// @return `sql` with every "SCHEMA" (quoted, as the scripts name it) replaced by `schema`.
inline std::string in_schema(std::string sql, const std::string& schema) {
  const std::string placeholder = "\"SCHEMA\"";
  const std::string name = "\"" + schema + "\"";
  for (std::size_t at = sql.find(placeholder); at != std::string::npos;
       at = sql.find(placeholder, at + name.size())) {
    sql.replace(at, placeholder.size(), name);
  }
  return sql;
}

/// Version 1's create_sql: the schema, tables and sequence, and schema_version '1'.
inline std::string v1_create_sql(const std::string& schema) {
  return in_schema(
      "BEGIN; SELECT pg_advisory_xact_lock(1017501805646252643); CREATE SCHEMA IF NOT EXISTS "
      "\"SCHEMA\"; CREATE TABLE IF NOT EXISTS \"SCHEMA\".\"meta\" (name text PRIMARY KEY, "
      "value text NOT NULL); CREATE SEQUENCE IF NOT EXISTS \"SCHEMA\".\"tokens\" AS bigint; "
      "CREATE TABLE IF NOT EXISTS \"SCHEMA\".\"entries\" (key_hash bytea PRIMARY KEY, key "
      "bytea NOT NULL, output bytea, stored_at timestamptz, owner bytea, token bigint, "
      "expires_ns bigint, prev_owner bytea, prev_token bigint, prev_expires_ns bigint) WITH "
      "(fillfactor = 90); COMMENT ON TABLE \"SCHEMA\".\"entries\" IS 'cacheserialize: cached "
      "outputs and reservations'; INSERT INTO \"SCHEMA\".\"meta\" (name, value) VALUES "
      "('schema_version', '1') ON CONFLICT (name) DO NOTHING; COMMIT",
      schema);
}

/// Version 1's acquire statement: $1 key_hash, $2 key, $3 owner, $4 ttl_ns, $5 overwrite ->
/// status ('h', 'a', 'w'), output, owner, token, expires_ns, now_ns, prev_owner, prev_token,
/// prev_expires_ns.
inline std::string v1_acquire_sql(const std::string& schema) {
  return in_schema(
      "WITH clock AS MATERIALIZED (SELECT (extract(epoch FROM statement_timestamp()) * "
      "1000000000)::bigint AS now_ns), hit AS (SELECT output FROM \"SCHEMA\".\"entries\" "
      "WHERE key_hash = $1 AND output IS NOT NULL AND NOT $5), up AS (INSERT INTO "
      "\"SCHEMA\".\"entries\" AS e (key_hash, key, owner, token, expires_ns) SELECT $1, $2, "
      "$3, nextval('\"SCHEMA\".\"tokens\"'), c.now_ns + $4 FROM clock c WHERE NOT EXISTS "
      "(SELECT FROM hit) ON CONFLICT (key_hash) DO UPDATE SET owner = CASE WHEN ((e.output IS "
      "NULL OR $5) AND e.owner IS DISTINCT FROM $3 AND (e.owner IS NULL OR e.expires_ns <= "
      "(SELECT now_ns FROM clock))) THEN $3 WHEN ((e.output IS NULL OR $5) AND e.owner = $3) "
      "THEN e.owner ELSE e.owner END, token = CASE WHEN ((e.output IS NULL OR $5) AND e.owner "
      "IS DISTINCT FROM $3 AND (e.owner IS NULL OR e.expires_ns <= (SELECT now_ns FROM "
      "clock))) THEN nextval('\"SCHEMA\".\"tokens\"') WHEN ((e.output IS NULL OR $5) AND "
      "e.owner = $3) THEN e.token ELSE e.token END, expires_ns = CASE WHEN ((e.output IS NULL "
      "OR $5) AND e.owner IS DISTINCT FROM $3 AND (e.owner IS NULL OR e.expires_ns <= (SELECT "
      "now_ns FROM clock))) THEN EXCLUDED.expires_ns WHEN ((e.output IS NULL OR $5) AND "
      "e.owner = $3) THEN EXCLUDED.expires_ns ELSE e.expires_ns END, prev_owner = CASE WHEN "
      "((e.output IS NULL OR $5) AND e.owner IS DISTINCT FROM $3 AND (e.owner IS NULL OR "
      "e.expires_ns <= (SELECT now_ns FROM clock))) THEN e.owner WHEN ((e.output IS NULL OR "
      "$5) AND e.owner = $3) THEN NULL ELSE e.prev_owner END, prev_token = CASE WHEN "
      "((e.output IS NULL OR $5) AND e.owner IS DISTINCT FROM $3 AND (e.owner IS NULL OR "
      "e.expires_ns <= (SELECT now_ns FROM clock))) THEN e.token WHEN ((e.output IS NULL OR "
      "$5) AND e.owner = $3) THEN NULL ELSE e.prev_token END, prev_expires_ns = CASE WHEN "
      "((e.output IS NULL OR $5) AND e.owner IS DISTINCT FROM $3 AND (e.owner IS NULL OR "
      "e.expires_ns <= (SELECT now_ns FROM clock))) THEN e.expires_ns WHEN ((e.output IS NULL "
      "OR $5) AND e.owner = $3) THEN NULL ELSE e.prev_expires_ns END RETURNING e.output, "
      "e.owner, e.token, e.expires_ns, e.prev_owner, e.prev_token, e.prev_expires_ns) SELECT "
      "'h'::text AS status, h.output, NULL::bytea AS owner, NULL::bigint AS token, "
      "NULL::bigint AS expires_ns, NULL::bigint AS now_ns, NULL::bytea AS prev_owner, "
      "NULL::bigint AS prev_token, NULL::bigint AS prev_expires_ns FROM hit h UNION ALL "
      "SELECT CASE WHEN u.output IS NOT NULL AND NOT $5 THEN 'h' WHEN u.owner = $3 THEN 'a' "
      "ELSE 'w' END, CASE WHEN u.output IS NOT NULL AND NOT $5 THEN u.output END, u.owner, "
      "u.token, u.expires_ns, c.now_ns, u.prev_owner, u.prev_token, u.prev_expires_ns FROM up "
      "u, clock c",
      schema);
}

}  // namespace pg
}  // namespace test
