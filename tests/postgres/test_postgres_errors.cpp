// Failures: a server that is down, silent, slow or refuses us gives storage_error with libpq's
// or the server's message, within the configured timeouts, never with the password; a broken
// connection is replaced; bad options and foreign tables are refused clearly.

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include "../reply_dropping_proxy.hpp"
#include "pg_support.hpp"

namespace cs = cacheserialize;
namespace pg = test::pg;
using namespace std::chrono_literals;

namespace {

const std::string kSecret = "s3cret-Passw0rd-never-shown";

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const cs::storage_error& e) {
    return e.what();
  }
  FAIL("no storage_error was thrown");
  return {};
}

// A listening socket that never accepts nor answers: the kernel completes the TCP handshake, then
// nothing comes back.
class SilentServer {
 public:
  SilentServer() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
  }
  ~SilentServer() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_;
  int port_ = 0;
};

// The backend pid of the one connection whose application_name is `app`.
int backend_of(pg::Sql& sql, const std::string& app, const std::string& extra = "") {
  int pid = 0;
  REQUIRE(test::eventually([&] {
    const std::string v = sql.value("SELECT pid FROM pg_stat_activity WHERE application_name = '" +
                                    app + "'" + extra + " LIMIT 1");
    pid = v.empty() ? 0 : std::stoi(v);
    return pid != 0;
  }));
  return pid;
}

// Keeps a backend stopped (SIGSTOP), as a server that hangs; continues it on destruction.
class Stopped {
 public:
  explicit Stopped(int pid) : pid_(pid) { ::kill(pid_, SIGSTOP); }
  ~Stopped() { ::kill(pid_, SIGCONT); }

 private:
  int pid_;
};

}  // namespace

TEST_CASE("a PostgreSQL server that is down gives storage_error with libpq's message at once") {
  cs::PostgresOptions o = pg::options();
  o.conninfo = "host=127.0.0.1 port=" + std::to_string(test::free_port()) +
               " user=worker dbname=flows password=" + kSecret;
  const auto t = std::chrono::steady_clock::now();
  const std::string what = message_of([&] { cs::PostgresStorage storage(o); });
  CHECK(pg::seconds_since(t) < 5.0);
  CHECK_THAT(what, Catch::Contains("cannot open the PostgreSQL store in schema"));
  CHECK_THAT(what, Catch::Contains("Connection refused"));  // libpq's own words
  CHECK_THAT(what, !Catch::Contains(kSecret));
}

TEST_CASE("a PostgreSQL server that never answers gives storage_error after connect_timeout") {
  SilentServer silent;
  cs::PostgresOptions o = pg::options();
  o.conninfo = "host=127.0.0.1 port=" + std::to_string(silent.port()) + " password=" + kSecret;
  o.connect_timeout = 300ms;
  const auto t = std::chrono::steady_clock::now();
  const std::string what = message_of([&] { cs::PostgresStorage storage(o); });
  const double took = pg::seconds_since(t);
  CHECK(took >= 0.25);
  CHECK(took < 3.0);
  CHECK_THAT(what, Catch::Contains("could not connect within connect_timeout (300ms)"));
  CHECK_THAT(what, !Catch::Contains(kSecret));
}

TEST_CASE("a wrong password is a storage_error with the server's reason, without the password") {
  cs::PostgresOptions o = pg::options();
  o.conninfo = pg::server().conninfo() + " password=" + kSecret;  // the last one wins
  const std::string what = message_of([&] { cs::PostgresStorage storage(o); });
  CHECK_THAT(what, Catch::Contains("password authentication failed"));
  CHECK_THAT(what, !Catch::Contains(kSecret));
}

TEST_CASE(
    "a statement that runs past statement_timeout is a storage_error, and the store goes on") {
  cs::PostgresOptions o = pg::options();
  o.statement_timeout = 300ms;
  cs::PostgresStorage storage(o);
  const cs::Key key("t", "1", "locked");
  const auto r = storage.acquire(key, {"a", {}, 30s, false});
  REQUIRE(r.status == cs::AcquireStatus::acquired);
  pg::Sql sql;
  sql.exec("BEGIN");
  sql.exec("SELECT 1 FROM \"" + o.schema + "\".entries FOR UPDATE");  // holds the row's lock
  const auto t = std::chrono::steady_clock::now();
  const std::string what = message_of([&] { storage.acquire(key, {"b", {}, 30s, false}); });
  CHECK(pg::seconds_since(t) < 3.0);
  CHECK_THAT(what, Catch::Contains("statement timeout") && Catch::Contains("57014"));
  CHECK_THAT(what, Catch::Contains("task 't'"));  // names the key
  sql.exec("ROLLBACK");
  CHECK(storage.acquire(key, {"b", {}, 30s, false}).status == cs::AcquireStatus::held);
  CHECK(storage.stats().retries == 0);  // a server error is not retried
}

TEST_CASE("a server that stops answering mid-session gives storage_error, not a hang") {
  cs::PostgresOptions o = pg::options();
  const std::string app = "hang_" + std::to_string(::getpid());
  o.conninfo += " application_name=" + app;
  o.statement_timeout = 200ms;
  cs::PostgresStorage storage(o);
  const cs::Key key("t", "1", "k");
  storage.put(key, cs::StoredOutput::from_bytes("v"));
  pg::Sql sql;
  {
    Stopped hung(backend_of(sql, app));
    const auto t = std::chrono::steady_clock::now();
    const std::string what = message_of([&] { storage.get(key); });
    const double took = pg::seconds_since(t);
    CHECK(took >= 1.1);  // statement_timeout + 1s: the server itself cannot cancel a hung backend
    CHECK(took < 5.0);
    CHECK_THAT(what, Catch::Contains("no answer from the server within 1200ms"));
  }
  const std::uint64_t opened = storage.stats().connections;
  REQUIRE(storage.get(key));  // a new connection replaces the dropped one
  CHECK(storage.get(key)->bytes == "v");
  CHECK(storage.stats().connections == opened + 1);
}

TEST_CASE("a connection that breaks under a statement is replaced and the statement retried once") {
  cs::PostgresOptions o = pg::options();
  const std::string app = "retry_" + std::to_string(::getpid());
  o.conninfo += " application_name=" + app;
  cs::PostgresStorage storage(o);
  const cs::Key key("t", "1", "k");
  const auto a = storage.acquire(key, {"a", {}, 30s, false});
  REQUIRE(storage.release(key, a.reservation) == cs::ReleaseStatus::released);

  SECTION("an idle connection closed by the server is found dead before use") {
    pg::Sql sql;
    sql.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '" +
             app + "'");
    REQUIRE(test::eventually([&] {
      return sql.number("SELECT count(*) FROM pg_stat_activity WHERE application_name = '" + app +
                        "'") == 0;
    }));
    const std::uint64_t before = storage.round_trips();
    CHECK(storage.acquire(key, {"b", {}, 30s, false}).status == cs::AcquireStatus::acquired);
    CHECK(storage.round_trips() - before == 1);
    CHECK(storage.stats().retries == 0);
  }

  SECTION("a connection killed while its statement waits is retried on a new one") {
    pg::Sql locker;
    locker.exec("BEGIN");
    locker.exec("SELECT 1 FROM \"" + o.schema + "\".entries FOR UPDATE");
    cs::AcquireResult result;
    std::string failure;
    test::Threads threads;
    threads.spawn([&] {
      try {
        result = storage.acquire(key, {"b", {}, 30s, false});
      } catch (const std::exception& e) {
        failure = e.what();
      }
    });
    pg::Sql sql;
    const std::string waiting = " AND wait_event_type = 'Lock'";
    const int first = backend_of(sql, app, waiting);
    sql.exec("SELECT pg_terminate_backend(" + std::to_string(first) + ")");
    const int second = backend_of(sql, app, waiting + " AND pid <> " + std::to_string(first));
    CHECK(second != first);
    locker.exec("ROLLBACK");
    threads.join();
    CHECK(failure.empty());
    CHECK(result.status == cs::AcquireStatus::acquired);
    CHECK(storage.stats().retries == 1);
  }
}

TEST_CASE(
    "a store whose reply is lost with its connection is retried and answered stored, once only") {
  test::ReplyDroppingProxy proxy(pg::server().port);
  cs::PostgresOptions o = pg::options();
  pg::ServerInfo through = pg::server();
  through.port = proxy.port();
  o.conninfo = through.conninfo();
  cs::PostgresStorage storage(o);
  const cs::Key key("lost-reply", "1", "k");
  const cs::AcquireResult a = storage.acquire(key, {"a", {}, 30s, false});  // pooled now
  REQUIRE(a.status == cs::AcquireStatus::acquired);
  const std::uint64_t opened = storage.stats().connections;

  proxy.drop_next_reply();
  const cs::StoreResult r =
      storage.store_and_release(key, a.reservation, cs::StoredOutput::from_bytes("A"), {});
  CHECK(proxy.dropped() == 1);  // the server committed the store; its reply never arrived
  CHECK(storage.stats().retries == 1);
  CHECK(storage.stats().connections == opened + 1);
  CHECK(r.status == cs::StoreStatus::stored);  // the retry found its own store done
  REQUIRE(storage.get(key));
  CHECK(storage.get(key)->bytes == "A");
  CHECK_FALSE(storage.reservation(key));

  SECTION("not a retry: the reservation already stored, so a second store is rejected") {
    CHECK(storage.store_and_release(key, a.reservation, cs::StoredOutput::from_bytes("A"), {})
              .status == cs::StoreStatus::rejected);
    CHECK(storage.stats().retries == 1);
  }
  SECTION("a retry whose first attempt was rejected is rejected: another output is stored") {
    const cs::Key other("lost-reply", "1", "other");
    const cs::AcquireResult b = storage.acquire(other, {"b", {}, 30s, false});
    REQUIRE(b.status == cs::AcquireStatus::acquired);
    REQUIRE(storage.store_and_release(other, b.reservation, cs::StoredOutput::from_bytes("B"), {})
                .status == cs::StoreStatus::stored);
    proxy.drop_next_reply();
    const cs::Reservation stale{"a", b.reservation.token, b.reservation.expires_at};
    const cs::StoreResult s =
        storage.store_and_release(other, stale, cs::StoredOutput::from_bytes("A"), {});
    CHECK(proxy.dropped() == 2);
    CHECK(storage.stats().retries == 2);
    CHECK(s.status == cs::StoreStatus::rejected);  // a retry alone does not make it stored
    CHECK(s.current.owner.empty());
    CHECK(storage.get(other)->bytes == "B");
  }
}

TEST_CASE("PostgresOptions are checked, and a bad one is named") {
  auto rejects = [](const std::function<void(cs::PostgresOptions&)>& change, const char* name) {
    cs::PostgresOptions o = pg::options();
    change(o);
    CHECK_THROWS_WITH(cs::PostgresStorage(o), Catch::Contains(name));
    CHECK_THROWS_AS(cs::PostgresStorage(o), std::invalid_argument);
  };
  rejects([](cs::PostgresOptions& o) { o.schema = ""; }, "schema '' is empty");
  rejects([](cs::PostgresOptions& o) { o.schema = "a\"; DROP TABLE x; --"; }, "schema");
  rejects([](cs::PostgresOptions& o) { o.schema = "1abc"; }, "must start with a letter");
  rejects([](cs::PostgresOptions& o) { o.schema = std::string(64, 'a'); }, "too long");
  rejects([](cs::PostgresOptions& o) { o.table_prefix = "my prefix"; }, "table_prefix");
  rejects([](cs::PostgresOptions& o) { o.table_prefix = std::string(57, 'p'); }, "too long");
  rejects([](cs::PostgresOptions& o) { o.pool_size = 0; }, "pool_size");
  rejects([](cs::PostgresOptions& o) { o.connect_timeout = 0s; }, "connect_timeout");
  rejects([](cs::PostgresOptions& o) { o.statement_timeout = -1s; }, "statement_timeout");
  rejects([](cs::PostgresOptions& o) { o.listener_ping_interval = 0s; }, "listener_ping_interval");
  rejects([](cs::PostgresOptions& o) { o.listener_retry_interval = 0s; },
          "listener_retry_interval");
  rejects([](cs::PostgresOptions& o) { o.conninfo = "host=x " + kSecret + "=1"; }, "conninfo");
  cs::PostgresOptions o;
  o.conninfo = "host=x password='" + kSecret;  // unterminated
  CHECK_THROWS_WITH(cs::PostgresStorage(o), !Catch::Contains(kSecret));
  o.conninfo = "host=x " + kSecret + "=1";  // libpq quotes the unknown option
  CHECK_THROWS_WITH(cs::PostgresStorage(o), !Catch::Contains(kSecret));
}

TEST_CASE("tables of another schema version, or missing ones, are refused with a clear message") {
  const cs::PostgresOptions o = pg::options();
  SECTION("a schema version from a later release") {
    { cs::PostgresStorage created(o); }
    pg::Sql sql;
    sql.exec("UPDATE \"" + o.schema + "\".meta SET value = '3' WHERE name = 'schema_version'");
    const std::string what = message_of([&] { cs::PostgresStorage storage(o); });
    CHECK_THAT(what, Catch::Contains("schema version 3; this cacheserialize uses 2"));
  }
  SECTION("create_tables = false and no tables") {
    cs::PostgresOptions no_create = o;
    no_create.create_tables = false;
    const std::string what = message_of([&] { cs::PostgresStorage storage(no_create); });
    CHECK_THAT(what, Catch::Contains("do not exist and PostgresOptions::create_tables is false"));
    pg::Sql sql;  // as a DBA would: run the script the storage gives
    sql.exec(cs::PostgresStorage::tables_sql(o));
    cs::PostgresStorage storage(no_create);  // now they exist
    CHECK_FALSE(storage.get(cs::Key("t", "1", "k")));
  }
  SECTION("a table prefix keeps two stores apart in one schema") {
    cs::PostgresOptions a = o;
    cs::PostgresOptions b = o;
    b.table_prefix = "other_";
    cs::PostgresStorage sa(a);
    cs::PostgresStorage sb(b);
    const cs::Key key("t", "1", "k");
    sa.put(key, cs::StoredOutput::from_bytes("a"));
    CHECK_FALSE(sb.get(key));
    CHECK(sa.channel() != sb.channel());
  }
}
