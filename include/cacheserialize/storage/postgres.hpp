#pragma once

/// @file storage/postgres.hpp
/// `PostgresStorage`: outputs and reservations in a PostgreSQL database (14 or later), shared by
/// every process on every machine that connects to it. Link `cacheserialize::postgres` (libpq).
/// Not included by cacheserialize.hpp: only programs that use it need libpq.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../cache_key.hpp"
#include "../detail/postgres/connection.hpp"
#include "../detail/postgres/listener.hpp"
#include "../detail/postgres/pool.hpp"
#include "../detail/postgres/sql.hpp"
#include "../detail/sha256.hpp"
#include "../errors.hpp"
#include "../options.hpp"
#include "../signal.hpp"
#include "../storage.hpp"
#include "../time.hpp"

namespace cacheserialize {

/// How to reach the database and where the store lives in it.
struct PostgresOptions {
  /// A libpq connection string or URI: "host=db.internal dbname=flows user=worker
  /// sslmode=verify-full", "postgresql://worker@db.internal/flows". Empty: libpq's environment
  /// (PGHOST, PGUSER, PGPASSWORD...) and defaults. TLS, authentication and passwords are libpq's
  /// business and pass through unchanged; messages never contain the password.
  std::string conninfo{};
  /// The schema that holds the store's tables; created if missing (see `create_tables`).
  std::string schema = "cacheserialize";
  /// Prepended to the table names ("entries", "meta", "tokens"), so that several stores can
  /// share a schema. Letters, digits and '_' only.
  std::string table_prefix{};
  /// Create the schema and tables when missing. false: they must exist (a DBA created them with
  /// `PostgresStorage::tables_sql`), and this role needs no CREATE privilege.
  bool create_tables = true;
  /// Bound on opening a connection (TCP, TLS, authentication, session setup). Host name lookup
  /// is not covered (libpq resolves synchronously): use an IP address or a fast resolver.
  Duration connect_timeout = std::chrono::seconds(5);
  /// The server cancels a statement that runs longer (statement_timeout); the client waits this
  /// plus one second for an answer before it drops the connection.
  Duration statement_timeout = std::chrono::seconds(5);
  /// Connections for the callers' operations; a caller waits when all are busy. The heartbeat
  /// and the listener have one connection each, besides these.
  std::size_t pool_size = 4;
  /// After this long without traffic the listener pings, to find a dead connection; and while
  /// it cannot listen, it wakes every waiter this often, so that waiters poll instead of
  /// missing a store.
  Duration listener_ping_interval = std::chrono::seconds(5);
  /// While the listener cannot listen, it tries to reconnect this often. Once it listens again
  /// it wakes every waiter (a notification may have been missed).
  Duration listener_retry_interval = std::chrono::seconds(1);
};

/// Counters of one store (shared by the copies of a `PostgresStorage` handle).
struct PostgresStats {
  /// Statements sent for storage operations, each one network round trip (retries included;
  /// connection setup, listener pings and LISTEN not included).
  std::uint64_t round_trips = 0;
  /// Operations retried on a new connection after theirs broke.
  std::uint64_t retries = 0;
  /// Connections opened: for operations, the heartbeat and the listener.
  std::uint64_t connections = 0;
  /// NOTIFYs received by the listener.
  std::uint64_t notifications = 0;
  /// Times the listener re-established LISTEN after losing it (then it woke every waiter).
  std::uint64_t listener_reconnects = 0;
};

namespace detail {
namespace pg {

/// The state shared by the copies of a PostgresStorage handle. Member order matters: the
/// listener and the pools use the settings and counters declared before them, and are
/// destroyed first (the listener's thread is joined).
struct StoreState {
  StoreState(PostgresOptions o, Names n, ConnectSettings s)
      : options(std::move(o)),
        names(std::move(n)),
        settings(std::move(s)),
        ops(settings, options.pool_size, prepare_sql(names), connections),
        heartbeat(settings, 1, prepare_sql(names), connections),
        listener(
            settings, names.channel,
            std::chrono::duration_cast<std::chrono::milliseconds>(options.listener_ping_interval),
            std::chrono::duration_cast<std::chrono::milliseconds>(options.listener_retry_interval),
            listener_counters) {}

  const PostgresOptions options;
  const Names names;
  const ConnectSettings settings;
  std::atomic<std::uint64_t> round_trips{0};
  std::atomic<std::uint64_t> retries{0};
  std::atomic<std::uint64_t> connections{0};
  ListenerCounters listener_counters;
  Pool ops;        // callers' operations
  Pool heartbeat;  // extensions only: a busy pool never delays a heartbeat
  Listener listener;
};

inline std::chrono::milliseconds whole_ms(Duration d) {
  return std::chrono::ceil<std::chrono::milliseconds>(d);
}

inline void check_positive(const char* option, Duration d) {
  if (d < std::chrono::milliseconds(1)) {
    throw std::invalid_argument(std::string("cacheserialize::PostgresOptions::") + option +
                                " must be at least 1ms, got " + format_duration(d));
  }
}

/// Checks the options and builds the connection settings.
/// @throws std::invalid_argument naming the bad option.
inline ConnectSettings connect_settings(const PostgresOptions& o) {
  check_positive("connect_timeout", o.connect_timeout);
  check_positive("statement_timeout", o.statement_timeout);
  check_positive("listener_ping_interval", o.listener_ping_interval);
  check_positive("listener_retry_interval", o.listener_retry_interval);
  if (o.pool_size == 0) {
    throw std::invalid_argument("cacheserialize::PostgresOptions::pool_size must be at least 1");
  }
  ConnectSettings s;
  if (!o.conninfo.empty()) {
    char* error = nullptr;
    PQconninfoOption* parsed = PQconninfoParse(o.conninfo.c_str(), &error);
    if (!parsed) {
      // libpq quotes pieces of the string in its message; they may be a password: drop them.
      std::string why = tidy(error);
      if (error) PQfreemem(error);
      for (std::size_t a = why.find('"'); a != std::string::npos; a = why.find('"', a + 5)) {
        const std::size_t b = why.find('"', a + 1);
        if (b == std::string::npos) break;
        why.replace(a, b - a + 1, "\"...\"");
      }
      throw std::invalid_argument(
          "cacheserialize::PostgresOptions::conninfo is not a valid libpq connection string: " +
          why);
    }
    for (PQconninfoOption* p = parsed; p->keyword; ++p) {
      if (p->val && std::string(p->keyword) == "password") s.secrets.add(p->val);
    }
    PQconninfoFree(parsed);
  }
  // Our defaults first: the connection string, expanded from the last "dbname", overrides them.
  const std::pair<const char*, const char*> defaults[] = {
      {"fallback_application_name", "cacheserialize"},
      {"keepalives", "1"},
      {"keepalives_idle", "10"},
      {"keepalives_interval", "5"},
      {"keepalives_count", "3"},
  };
  for (const auto& kv : defaults) {
    s.keywords.emplace_back(kv.first);
    s.values.emplace_back(kv.second);
  }
  if (!o.conninfo.empty()) {
    s.keywords.emplace_back("dbname");
    s.values.push_back(o.conninfo);
  }
  s.connect_timeout = whole_ms(o.connect_timeout);
  s.statement_bound = whole_ms(o.statement_timeout) + std::chrono::seconds(1);
  s.session_sql = session_sql(whole_ms(o.statement_timeout).count());
  return s;
}

inline std::string key_hash(const Key& key) {
  const auto h = sha256(key.encoded());
  return std::string(reinterpret_cast<const char*>(h.data()), h.size());
}

inline std::string hex(const std::string& raw) {
  return to_hex(reinterpret_cast<const std::uint8_t*>(raw.data()), raw.size());
}

}  // namespace pg
}  // namespace detail

/// A storage policy backed by PostgreSQL, for workers on many machines sharing one store.
///
/// - **Round trips.** A hit is one statement; a miss is two (an acquire that returns the output
///   if present, else takes or reports the reservation; then a store-and-release fenced by the
///   token); an extension, a release and a put are one each. A hit is a plain primary-key read
///   (no lock, no write); every change is decided on the key's latest row under its row lock,
///   within one statement: no read-then-write race (see sql.hpp).
/// - **Server time.** Expiries are computed and compared with the server's clock inside the
///   statements; the `now` the manager passes is ignored and `remaining` is the server's, so
///   client clocks may be off by hours without harm.
/// - **Fencing tokens** come from a sequence: they grow per key for the database's life, also
///   across releases.
/// - **Waking waiters.** A store, put or release NOTIFYs the store's channel with the key's
///   digest; one listener connection and thread per store raise the subscribed waiters. When
///   LISTEN was lost, every waiter is woken once it is back (and, while it is not, every
///   `listener_ping_interval`, so that waiters poll).
/// - **Connections.** A pool of `pool_size` for operations, one for the heartbeat's extensions
///   and one for the listener, opened on demand. A connection found broken is replaced; an
///   operation whose connection broke under it is retried once on a new one (every operation is
///   safe to repeat: see docs/storage-postgres.md). A server that is down or silent gives
///   `storage_error` with libpq's message after at most the configured timeouts; never a hang.
/// - **Security.** Keys, owners and outputs are binary parameters of prepared statements, never
///   SQL text; outputs are `bytea`. Statements run with `search_path = pg_catalog`.
///
/// Keys are stored under their SHA-256 digest (with their canonical bytes alongside), so a key
/// of any size and any bytes works. Outputs are bytes (`stores_objects` is false).
///
/// Requires a single primary: a standby is read-only, and an asynchronous replica promoted after
/// a failover may have lost the last reservations and outputs (see docs/storage-postgres.md).
///
/// A handle: copies share the connections, listener and counters, which live until the last
/// copy (and the last subscription) is gone. Thread safety: every member may be called
/// concurrently. POSIX only.
class PostgresStorage {
 public:
  /// Copies share one store. Moving copies too, so that a handle is never left empty.
  PostgresStorage(const PostgresStorage&) = default;
  /// Makes this a handle to another store.
  PostgresStorage& operator=(const PostgresStorage&) = default;

  /// @return the same address for every copy of this handle, and another for every other store
  ///         handle alive: what `default_manager` shares one manager by.
  const void* identity() const noexcept { return state_.get(); }

  /// Outputs are kept as encoded bytes (`serializer<T>`), readable by other processes.
  static constexpr bool stores_objects = false;
  /// A hit is answered by `acquire` itself: one statement, no separate look-up.
  static constexpr bool probe_before_acquire = false;

  /// Connects, creates the tables if missing (`create_tables`) and checks their schema version.
  /// @throws std::invalid_argument for bad options (naming the option).
  /// @throws storage_error if the database cannot be reached or set up, with libpq's message;
  ///         after at most `connect_timeout` plus four statement bounds.
  explicit PostgresStorage(PostgresOptions options) : state_(open(std::move(options))) {}

  /// Connects with default options to the database named by a libpq connection string.
  explicit PostgresStorage(std::string conninfo)
      : PostgresStorage(PostgresOptions{std::move(conninfo)}) {}

  /// @return the stored output for `key`, if any. One round trip.
  std::optional<StoredOutput> get(const Key& key) {
    const std::string h = detail::pg::key_hash(key);
    const detail::pg::Result r = run(state_->ops, key, "get", [&](detail::pg::Connection& c, int) {
      detail::pg::Params p;
      p.bytes(h);
      return c.prepared(detail::pg::stmt_get, p);
    });
    if (r.rows() == 0) return std::nullopt;
    return StoredOutput::from_bytes(r.bytes(0, 0));
  }

  /// @return the key's reservation (live, or expired with nobody taking it since), if any, its
  ///         expiry by the server's clock. Read-only; one round trip.
  std::optional<Reservation> reservation(const Key& key) const {
    const std::string h = detail::pg::key_hash(key);
    const detail::pg::Result r =
        run(state_->ops, key, "reservation", [&](detail::pg::Connection& c, int) {
          detail::pg::Params p;
          p.bytes(h);
          return c.prepared(detail::pg::stmt_reservation, p);
        });
    if (r.rows() == 0) return std::nullopt;
    return reservation(r, 0);
  }

  /// Get-or-extend (storage.hpp), with the server's clock: `req.now` is ignored. One round trip.
  AcquireResult acquire(const Key& key, const AcquireRequest& req) {
    const std::string h = detail::pg::key_hash(key);
    const detail::pg::Result r =
        run(state_->ops, key, "acquire", [&](detail::pg::Connection& c, int) {
          detail::pg::Params p;
          p.bytes(h).bytes(key.encoded()).bytes(req.owner).int8(ttl_ns(req.ttl));
          return c.prepared(
              req.overwrite ? detail::pg::stmt_acquire_overwrite : detail::pg::stmt_acquire, p);
        });
    expect_rows(r, 1, key, "acquire");
    AcquireResult out;
    if (!r.null(0, 0)) {  // the stored output, read without the function
      out.status = AcquireStatus::hit;
      out.output = StoredOutput::from_bytes(r.bytes(0, 0));
      return out;
    }
    if (r.null(0, 1)) throw storage_error("PostgreSQL acquire: no answer", key.describe());
    parse_answer(r.view(0, 1), key, out);
    return out;
  }

  /// Extends `mine` to the server's now + `ttl` if it is still the key's reservation (`now` is
  /// ignored). Runs on the heartbeat's own connection. One round trip.
  ExtendResult extend(const Key& key, const Reservation& mine, TimePoint /*now*/, Duration ttl) {
    const std::string h = detail::pg::key_hash(key);
    const detail::pg::Result r =
        run(state_->heartbeat, key, "extend", [&](detail::pg::Connection& c, int) {
          detail::pg::Params p;
          p.bytes(h).bytes(mine.owner).int8(token_param(mine.token)).int8(ttl_ns(ttl));
          return c.prepared(detail::pg::stmt_extend, p);
        });
    if (r.rows() == 0) return ExtendResult{};
    return extended(r, 0);
  }

  /// `extend` for each item of `batch` (storage.hpp), by the server's clock (`now` is ignored):
  /// one statement over arrays, so one round trip for the whole batch, on the heartbeat's own
  /// connection. Each item is fenced on its own. An empty batch sends nothing.
  /// @return result i for batch[i].
  /// @throws storage_error if the statement fails: nothing is known of the batch.
  std::vector<ExtendResult> extend_many(const std::vector<Extension>& batch, TimePoint /*now*/) {
    std::vector<ExtendResult> out(batch.size());
    if (batch.empty()) return out;
    using detail::pg::BinaryArray;
    BinaryArray hashes(BinaryArray::bytea_oid, batch.size());
    BinaryArray owners(BinaryArray::bytea_oid, batch.size());
    BinaryArray tokens(BinaryArray::bigint_oid, batch.size());
    BinaryArray ttls(BinaryArray::bigint_oid, batch.size());
    for (const Extension& x : batch) {
      hashes.add(detail::pg::key_hash(*x.key));
      owners.add(x.mine->owner);
      tokens.int8(token_param(x.mine->token));
      ttls.int8(ttl_ns(x.ttl));
    }
    const detail::pg::Result r =
        run(state_->heartbeat, nullptr, "extend", [&](detail::pg::Connection& c, int) {
          detail::pg::Params p;
          p.bytes(hashes.bytes()).bytes(owners.bytes()).bytes(tokens.bytes()).bytes(ttls.bytes());
          return c.prepared(detail::pg::stmt_extend_many, p);
        });
    if (r.rows() != static_cast<int>(batch.size())) {
      throw storage_error("PostgreSQL extend: expected " + std::to_string(batch.size()) +
                          " rows, the server answered " + std::to_string(r.rows()));
    }
    for (int i = 0; i < r.rows(); ++i) out[static_cast<std::size_t>(i)] = extended(r, i);
    return out;
  }

  /// Releases `mine` if it is still the key's reservation, and wakes the key's waiters. One
  /// round trip.
  ReleaseStatus release(const Key& key, const Reservation& mine) {
    const std::string h = detail::pg::key_hash(key);
    const detail::pg::Result r =
        run(state_->ops, key, "release", [&](detail::pg::Connection& c, int) {
          detail::pg::Params p;
          p.bytes(h).bytes(mine.owner).int8(token_param(mine.token));
          return c.prepared(detail::pg::stmt_release, p);
        });
    if (r.rows() == 0) return ReleaseStatus::not_held;
    const std::string status = r.bytes(0, 0);
    if (status == "r") {
      state_->listener.raise(detail::pg::hex(h));
      return ReleaseStatus::released;
    }
    return status == "o" ? ReleaseStatus::held_by_other : ReleaseStatus::not_held;
  }

  /// Stores `output` and releases `mine` in one statement, if `mine` is still the key's
  /// reservation (fencing), and wakes the key's waiters. One round trip; a rejected store makes
  /// a second, to report the key's holder.
  StoreResult store_and_release(const Key& key, const Reservation& mine, StoredOutput output,
                                TimePoint /*now*/) {
    const std::string h = detail::pg::key_hash(key);
    bool retried = false;
    const detail::pg::Result r =
        run(state_->ops, key, "store", [&](detail::pg::Connection& c, int attempt) {
          retried = attempt > 0;
          detail::pg::Params p;
          p.bytes(h).bytes(mine.owner).int8(token_param(mine.token)).bytes(output.bytes);
          return c.prepared(detail::pg::stmt_store, p);
        });
    StoreResult out;
    if (r.rows() == 1) {
      state_->listener.raise(detail::pg::hex(h));
      out.status = StoreStatus::stored;
      return out;
    }
    // Rejected: by another holder, or, on a retry after the connection broke, because the
    // first attempt did store (released, and the output there is this one: stored after all).
    // Only a retry needs the comparison, so only a retry sends the output again.
    const detail::pg::Result q =
        run(state_->ops, key, "store", [&](detail::pg::Connection& c, int) {
          detail::pg::Params p;
          p.bytes(h).bytes(retried ? std::string_view(output.bytes) : std::string_view());
          return c.prepared(detail::pg::stmt_store_rejected, p);
        });
    if (q.rows() != 1) return out;
    if (retried && q.null(0, 0) && !q.null(0, 3) && q.boolean(0, 3)) {
      state_->listener.raise(detail::pg::hex(h));
      out.status = StoreStatus::stored;
      return out;
    }
    if (!q.null(0, 0)) out.current = reservation(q, 0);
    return out;
  }

  /// Stores `output` whoever holds the key, and wakes the key's waiters. One round trip.
  void put(const Key& key, StoredOutput output) {
    const std::string h = detail::pg::key_hash(key);
    run(state_->ops, key, "put", [&](detail::pg::Connection& c, int) {
      detail::pg::Params p;
      p.bytes(h).bytes(key.encoded()).bytes(output.bytes);
      return c.prepared(detail::pg::stmt_put, p);
    });
    state_->listener.raise(detail::pg::hex(h));
  }

  /// Housekeeping, safe while other processes use the store: deletes, by the server's clock,
  /// the rows that have no live reservation (none, released, or expired at least `older_than`
  /// ago) and no output stored less than `older_than` ago: old outputs, and the records of free
  /// or long-expired reservations. A live reservation, and the row of a key in use at that
  /// moment (locked), are left alone. Deletes in batches of kPruneBatch rows, each one short
  /// statement (one round trip) of its own, until a batch finds fewer: no lock is held for long.
  /// Fencing tokens come from the store's sequence, so a key taken after its row was deleted
  /// still gets a token above every earlier one.
  /// @return outputs_removed: deleted rows that had an output; reservations_removed: deleted
  ///         rows that had none (a key's reservation record alone); temporaries_removed: 0.
  /// @throws std::invalid_argument for a negative `older_than`.
  /// @throws storage_error if a statement fails (the batches before it stay deleted).
  PruneResult prune(Duration older_than) {
    if (older_than < Duration::zero()) {
      throw std::invalid_argument(
          "cacheserialize::PostgresStorage::prune: older_than must not be negative, got " +
          format_duration(older_than));
    }
    PruneResult out;
    std::string after;  // the last key_hash examined: each batch goes on from there
    for (;;) {
      const detail::pg::Result r =
          run(state_->ops, nullptr, "prune", [&](detail::pg::Connection& c, int) {
            detail::pg::Params p;
            p.int8(older_than.count()).int8(static_cast<std::int64_t>(kPruneBatch)).bytes(after);
            return c.prepared(detail::pg::stmt_prune, p);
          });
      if (r.rows() != 1) {
        throw storage_error("PostgreSQL prune: expected 1 row, the server answered " +
                            std::to_string(r.rows()));
      }
      const auto deleted = static_cast<std::size_t>(r.int8(0, 0));
      const auto outputs = static_cast<std::size_t>(r.int8(0, 1));
      const auto examined = static_cast<std::size_t>(r.int8(0, 2));
      out.outputs_removed += outputs;
      out.reservations_removed += deleted - outputs;
      if (examined < kPruneBatch) return out;
      after = r.bytes(0, 3);
    }
  }

  /// Rows `prune` deletes per statement.
  static constexpr std::size_t kPruneBatch = 1000;

  /// Raises `signal` after every store, put or release of `key`, by any process, while the
  /// returned subscription lives. The first subscription starts the listener and waits until it
  /// listens (at most the connect timeout plus a statement bound).
  Subscription subscribe(const Key& key, Notifiable& signal) {
    std::string digest = key.digest();
    state_->listener.add(digest, signal);
    return Subscription([state = state_, digest = std::move(digest), s = &signal] {
      state->listener.remove(digest, *s);
    });
  }

  /// @return the store's counters; `round_trips` is how tests count statements per call.
  PostgresStats stats() const noexcept {
    PostgresStats s;
    s.round_trips = state_->round_trips.load();
    s.retries = state_->retries.load();
    s.connections = state_->connections.load() + state_->listener_counters.connections.load();
    s.notifications = state_->listener_counters.notifications.load();
    s.listener_reconnects = state_->listener_counters.reconnects.load();
    return s;
  }

  /// @return `stats().round_trips`.
  std::uint64_t round_trips() const noexcept { return state_->round_trips.load(); }

  /// @return the options this store was opened with.
  const PostgresOptions& options() const noexcept { return state_->options; }

  /// @return the SQL script that creates the store's schema, tables and sequence (what
  ///         `create_tables` runs), for a DBA to run when the workers' role may not create them.
  /// @throws std::invalid_argument for a bad schema or table prefix.
  static std::string tables_sql(const PostgresOptions& options) {
    return detail::pg::create_sql(detail::pg::Names(options.schema, options.table_prefix));
  }

  /// @return the NOTIFY channel of this store (schema and prefix digest), for tools that want
  ///         to watch it.
  const std::string& channel() const noexcept { return state_->names.channel; }

 private:
  using State = detail::pg::StoreState;

  static std::shared_ptr<State> open(PostgresOptions options) {
    detail::pg::Names names(options.schema, options.table_prefix);
    detail::pg::ConnectSettings settings = detail::pg::connect_settings(options);
    const bool create = options.create_tables;
    auto state = std::make_shared<State>(std::move(options), std::move(names), std::move(settings));
    const std::string where = "schema '" + state->names.schema + "'";
    try {
      const auto deadline = detail::pg::SteadyClock::now() + state->settings.connect_timeout;
      auto c = detail::pg::Connection::open(state->settings, deadline);
      state->connections.fetch_add(1);
      const int version = PQserverVersion(c->raw());
      if (version < 140000) {
        throw storage_error("PostgresStorage needs PostgreSQL 14 or later; the server is " +
                            std::to_string(version / 10000) + "." + std::to_string(version % 100));
      }
      if (!exists(*c, state->names)) {
        if (!create) {
          throw storage_error("the tables of " + where +
                              " do not exist and PostgresOptions::create_tables is false");
        }
        c->simple(detail::pg::create_sql(state->names));
      }
      if (read_version(*c, state->names) == "1") {
        // Version 1: the same tables without the acquire function. Migrated in place: the data
        // and live reservations stay, and processes still running version 1's statements keep
        // working on the unchanged tables.
        if (!create) {
          throw storage_error("the tables of " + where +
                              " have schema version 1 and PostgresOptions::create_tables is "
                              "false: run PostgresStorage::tables_sql, which migrates them to " +
                              std::to_string(detail::pg::schema_version));
        }
        c->simple(detail::pg::create_sql(state->names));
      }
      check_version(*c, state->names);
      c->simple(detail::pg::prepare_sql(state->names));
      state->ops.adopt(std::move(c));
    } catch (const detail::pg::Failure& e) {
      throw storage_error("cannot open the PostgreSQL store in " + where + ": " + e.what());
    }
    return state;
  }

  static bool exists(detail::pg::Connection& c, const detail::pg::Names& names) {
    const detail::pg::Result r = c.simple(detail::pg::tables_exist_sql(names));
    return r.rows() == 1 && r.bytes(0, 0) == "t";
  }

  // @return the stored schema version, "" if there is none.
  static std::string read_version(detail::pg::Connection& c, const detail::pg::Names& names) {
    const detail::pg::Result r = c.simple(detail::pg::version_sql(names));
    return r.rows() == 1 ? r.bytes(0, 0) : std::string();
  }

  static void check_version(detail::pg::Connection& c, const detail::pg::Names& names) {
    const std::string v = read_version(c, names);
    const std::string where = "the tables in schema '" + names.schema + "'";
    if (v.empty()) throw storage_error(where + " have no schema_version row");
    if (v != std::to_string(detail::pg::schema_version)) {
      // Version 1 was migrated by now: any other value is from a later release (or not ours).
      throw storage_error(where + " have schema version " + v + "; this cacheserialize uses " +
                          std::to_string(detail::pg::schema_version) +
                          " (upgrade cacheserialize, or use another schema)");
    }
  }

  // Runs one statement on a borrowed connection. A connection that broke under the statement is
  // dropped and the statement retried once on a new one; every other failure (no connection,
  // a server error, a timeout) is a storage_error at once.
  template <class F>
  detail::pg::Result run(detail::pg::Pool& pool, const Key& key, const char* op, F&& f) const {
    return run(pool, &key, op, std::forward<F>(f));
  }
  // As above; `key` null for an operation on many keys.
  template <class F>
  detail::pg::Result run(detail::pg::Pool& pool, const Key* key, const char* op, F&& f) const {
    for (int attempt = 0;; ++attempt) {
      std::optional<detail::pg::Pool::Lease> c;
      try {
        c.emplace(pool.take());
      } catch (const detail::pg::Failure& e) {
        throw storage_error(std::string("PostgreSQL ") + op + ": " + e.what(),
                            key ? key->describe() : std::string());
      }
      try {
        state_->round_trips.fetch_add(1, std::memory_order_relaxed);
        return f(**c, attempt);
      } catch (const detail::pg::Failure& e) {
        if (e.kind() != detail::pg::FailureKind::server) c->drop();
        if (e.kind() == detail::pg::FailureKind::broken && attempt == 0) {
          state_->retries.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        throw storage_error(std::string("PostgreSQL ") + op + " failed: " + e.what(),
                            key ? key->describe() : std::string());
      }
    }
  }

  // Reads the acquire function's answer (sql.hpp, acquire_function_sql) into `out`.
  static void parse_answer(std::string_view a, const Key& key, AcquireResult& out) {
    auto bad = [&] {
      return storage_error("PostgreSQL acquire: malformed answer from the server", key.describe());
    };
    if (a.empty()) throw bad();
    const char status = a[0];
    if (status == 'h') {
      out.status = AcquireStatus::hit;
      out.output = StoredOutput::from_bytes(std::string(a.substr(1)));
      return;
    }
    if ((status != 'a' && status != 'w') || a.size() < 29) throw bad();
    auto int8 = [&](std::size_t at) {
      std::uint64_t u = 0;
      for (std::size_t i = 0; i < 8; ++i) u = (u << 8) | static_cast<unsigned char>(a[at + i]);
      return static_cast<std::int64_t>(u);
    };
    std::uint64_t owner_size = 0;
    for (std::size_t i = 25; i < 29; ++i) {
      owner_size = (owner_size << 8) | static_cast<unsigned char>(a[i]);
    }
    if (a.size() < 29 + owner_size) throw bad();
    const std::int64_t expires = int8(9);
    out.reservation = Reservation{std::string(a.substr(29, owner_size)), token_of(int8(1)),
                                  from_unix_nanos(expires)};
    if (status == 'w') {
      out.status = AcquireStatus::held;
      out.remaining = Duration(expires - int8(17));
      return;
    }
    out.status = AcquireStatus::acquired;
    const std::size_t prev = 29 + owner_size;
    if (a.size() > prev) {
      if (a.size() < prev + 16) throw bad();
      out.previous = Reservation{std::string(a.substr(prev + 16)), token_of(int8(prev)),
                                 from_unix_nanos(int8(prev + 8))};
    }
  }

  static void expect_rows(const detail::pg::Result& r, int n, const Key& key, const char* op) {
    if (r.rows() != n) {
      throw storage_error(std::string("PostgreSQL ") + op + ": expected " + std::to_string(n) +
                              " row(s), the server answered " + std::to_string(r.rows()),
                          key.describe());
    }
  }

  static Reservation reservation(const detail::pg::Result& r, int col, int row = 0) {
    return Reservation{r.bytes(row, col), token_of(r.int8(row, col + 1)),
                       from_unix_nanos(r.int8(row, col + 2))};
  }

  // An extension's answer in `row`: extended, then the holder (owner NULL: nobody).
  static ExtendResult extended(const detail::pg::Result& r, int row) {
    ExtendResult out;
    if (r.boolean(row, 0)) out.status = ExtendStatus::extended;
    if (!r.null(row, 1)) out.current = reservation(r, 1, row);
    return out;
  }

  static std::int64_t ttl_ns(Duration ttl) {
    return std::clamp(ttl, Duration::zero(), detail::max_ttl).count();
  }
  static std::uint64_t token_of(std::int64_t v) { return static_cast<std::uint64_t>(v); }
  // Tokens are positive bigints; a forged one beyond that range matches nothing.
  static std::int64_t token_param(std::uint64_t t) {
    constexpr auto max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    return t > max ? -1 : static_cast<std::int64_t>(t);
  }

  std::shared_ptr<State> state_;
};

}  // namespace cacheserialize
