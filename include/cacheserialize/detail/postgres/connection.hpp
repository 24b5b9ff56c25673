#pragma once

// One libpq connection, driven in non-blocking mode so that every wait has a deadline: opening
// (PQconnectStartParams/PQconnectPoll), sending (PQflush) and reading (PQconsumeInput) all poll
// the socket until the deadline, and a connection that misses it is dropped. libpq itself would
// block without bound on a server that stops answering.
//
// Failures are classified for the caller's retry policy: `broken` (the connection is gone; a new
// one may work), `server` (the server refused the statement; the connection is still good) and
// `timeout` (no answer in time; the connection is dropped).
//
// POSIX only (poll(2)); libpq's own limitation applies too: resolving a host name in
// PQconnectStartParams blocks, so use `hostaddr` or a name the resolver answers at once.

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cacheserialize {
namespace detail {
namespace pg {

using SteadyClock = std::chrono::steady_clock;
using Deadline = SteadyClock::time_point;

enum class FailureKind {
  broken,   ///< the connection failed or was closed: a new connection may succeed
  server,   ///< the server answered with an error; the connection is still usable
  timeout,  ///< no answer before the deadline: the connection must be dropped
};

/// A failed libpq operation; the message is libpq's or the server's, tidied and scrubbed.
class Failure : public std::runtime_error {
 public:
  Failure(FailureKind kind, const std::string& message, std::string sqlstate = {})
      : std::runtime_error(message), kind_(kind), sqlstate_(std::move(sqlstate)) {}
  FailureKind kind() const noexcept { return kind_; }
  const std::string& sqlstate() const noexcept { return sqlstate_; }

 private:
  FailureKind kind_;
  std::string sqlstate_;
};

/// Words that must never appear in a message (the password of the connection string).
class Secrets {
 public:
  void add(std::string word) {
    // Short words are left alone: libpq never prints the password, and scrubbing every "ab" of a
    // message would garble it for no gain.
    if (word.size() >= 4) words_.push_back(std::move(word));
  }
  std::string scrub(std::string text) const {
    for (const std::string& w : words_) {
      for (std::size_t at = text.find(w); at != std::string::npos; at = text.find(w, at + 3)) {
        text.replace(at, w.size(), "***");
      }
    }
    return text;
  }

 private:
  std::vector<std::string> words_;
};

/// @return libpq's message on one line: trailing newlines dropped, inner ones turned to "; ".
inline std::string tidy(const char* message) {
  std::string s = message ? message : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  for (std::size_t at = s.find('\n'); at != std::string::npos; at = s.find('\n', at)) {
    std::size_t end = at + 1;
    while (end < s.size() && (s[end] == '\t' || s[end] == ' ')) ++end;
    s.replace(at, end - at, "; ");
  }
  return s.empty() ? "no message from libpq" : s;
}

/// @return "Ns" or "Nms", for messages.
inline std::string seconds_text(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + "s";
  return std::to_string(d.count()) + "ms";
}

/// Waits until the socket is ready as asked.
/// @return the poll revents, or 0 when the deadline passed first.
inline short wait_socket(int fd, bool for_read, bool for_write, Deadline deadline) {
  pollfd p{};
  p.fd = fd;
  p.events = static_cast<short>((for_read ? POLLIN : 0) | (for_write ? POLLOUT : 0));
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - SteadyClock::now());
    if (left.count() <= 0) return 0;
    const int timeout = static_cast<int>(std::min<std::int64_t>(left.count(), 60'000));
    const int n = ::poll(&p, 1, timeout);
    if (n > 0) return p.revents;
    if (n < 0 && errno != EINTR) {
      throw Failure(FailureKind::broken, std::string("poll failed: ") + std::strerror(errno));
    }
  }
}

/// Parameters of one statement, all in binary format: bytea as raw bytes, bigint as 8 bytes
/// big-endian, boolean as one byte. The values are views: they must outlive the call.
class Params {
 public:
  static constexpr int max = 6;

  Params& bytes(std::string_view b) {
    // A zero-length bytea still needs a non-null pointer, or libpq sends NULL.
    return add(b.empty() ? empty_ : b.data(), static_cast<int>(b.size()));
  }
  Params& int8(std::int64_t v) {
    char* buf = ints_[n_];
    const auto u = static_cast<std::uint64_t>(v);
    for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>((u >> (56 - 8 * i)) & 0xffu);
    return add(buf, 8);
  }
  Params& boolean(bool v) {
    ints_[n_][0] = v ? 1 : 0;
    return add(ints_[n_], 1);
  }

  int count() const noexcept { return n_; }
  const char* const* values() const noexcept { return values_; }
  const int* lengths() const noexcept { return lengths_; }
  const int* formats() const noexcept { return formats_; }

 private:
  Params& add(const char* data, int length) {
    if (n_ == max) throw std::logic_error("cacheserialize: too many statement parameters");
    values_[n_] = data;
    lengths_[n_] = length;
    formats_[n_] = 1;
    ++n_;
    return *this;
  }

  static constexpr const char* empty_ = "";
  int n_ = 0;
  const char* values_[max] = {};
  int lengths_[max] = {};
  int formats_[max] = {};
  char ints_[max][8] = {};
};

/// A one-dimensional array parameter without NULLs, in PostgreSQL's binary format: a header,
/// then each element's length and bytes (all integers big-endian). Pass `bytes()` as the value
/// of a `bytea[]` or `bigint[]` parameter.
class BinaryArray {
 public:
  static constexpr std::uint32_t bytea_oid = 17;
  static constexpr std::uint32_t bigint_oid = 20;

  /// @param element_oid the elements' type; @param count how many `add` or `int8` calls follow.
  BinaryArray(std::uint32_t element_oid, std::size_t count) {
    put(1, 4);  // dimensions
    put(0, 4);  // no NULLs
    put(element_oid, 4);
    put(count, 4);
    put(1, 4);  // the lower bound
  }
  BinaryArray& add(std::string_view b) {
    put(b.size(), 4);
    data_.append(b);
    return *this;
  }
  BinaryArray& int8(std::int64_t v) {
    put(8, 4);
    put(static_cast<std::uint64_t>(v), 8);
    return *this;
  }
  std::string_view bytes() const noexcept { return data_; }

 private:
  void put(std::uint64_t v, int width) {
    for (int i = width - 1; i >= 0; --i) data_.push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
  }
  std::string data_;
};

/// A statement's result (binary format for prepared statements). Owns the PGresult.
class Result {
 public:
  Result() = default;
  explicit Result(PGresult* r) : r_(r, &PQclear) {}

  bool empty() const noexcept { return !r_; }
  const PGresult* raw() const noexcept { return r_.get(); }
  int rows() const noexcept { return r_ ? PQntuples(r_.get()) : 0; }
  bool null(int row, int col) const { return PQgetisnull(r_.get(), row, col) != 0; }
  std::string bytes(int row, int col) const {
    return std::string(PQgetvalue(r_.get(), row, col),
                       static_cast<std::size_t>(PQgetlength(r_.get(), row, col)));
  }
  /// The value's bytes, valid while this result lives.
  std::string_view view(int row, int col) const {
    return std::string_view(PQgetvalue(r_.get(), row, col),
                            static_cast<std::size_t>(PQgetlength(r_.get(), row, col)));
  }
  /// A binary bigint.
  std::int64_t int8(int row, int col) const {
    if (PQgetlength(r_.get(), row, col) != 8) {
      throw Failure(FailureKind::server, "the server answered a bigint that is not 8 bytes");
    }
    const auto* p = reinterpret_cast<const unsigned char*>(PQgetvalue(r_.get(), row, col));
    std::uint64_t u = 0;
    for (int i = 0; i < 8; ++i) u = (u << 8) | p[i];
    return static_cast<std::int64_t>(u);
  }
  /// A binary boolean.
  bool boolean(int row, int col) const {
    return PQgetlength(r_.get(), row, col) == 1 && PQgetvalue(r_.get(), row, col)[0] != 0;
  }

 private:
  std::shared_ptr<PGresult> r_;
};

/// What every connection of one storage is opened with.
struct ConnectSettings {
  /// libpq keywords and values; a null entry ends each list. The user's connection string is
  /// the value of the last "dbname", which libpq expands, so that its settings win over ours.
  std::vector<std::string> keywords;
  std::vector<std::string> values;
  Secrets secrets;
  std::chrono::milliseconds connect_timeout{5000};
  /// The client's bound on one statement: the server's statement_timeout plus a margin for the
  /// network, after which the connection is dropped.
  std::chrono::milliseconds statement_bound{6000};
  /// Run once on every new connection (one round trip): session settings.
  std::string session_sql;
};

/// One open connection; used by one thread at a time.
class Connection {
 public:
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() {
    if (conn_) PQfinish(conn_);
  }

  /// Opens a connection and runs the session settings, all before `deadline`.
  /// @throws Failure (broken or timeout) with libpq's message.
  static std::unique_ptr<Connection> open(const ConnectSettings& settings, Deadline deadline) {
    std::vector<const char*> keywords;
    std::vector<const char*> values;
    for (std::size_t i = 0; i < settings.keywords.size(); ++i) {
      keywords.push_back(settings.keywords[i].c_str());
      values.push_back(settings.values[i].c_str());
    }
    keywords.push_back(nullptr);
    values.push_back(nullptr);
    std::unique_ptr<Connection> c(new Connection(settings));
    c->conn_ = PQconnectStartParams(keywords.data(), values.data(), 1);
    if (!c->conn_) throw Failure(FailureKind::broken, "libpq could not allocate a connection");
    PQsetNoticeReceiver(c->conn_, &Connection::on_notice, c.get());
    if (PQstatus(c->conn_) == CONNECTION_BAD) c->fail(FailureKind::broken, "could not connect");
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK) {
      if (st == PGRES_POLLING_FAILED) c->fail(FailureKind::broken, "could not connect");
      const short ready =
          wait_socket(PQsocket(c->conn_), st == PGRES_POLLING_READING,
                      st == PGRES_POLLING_WRITING || st == PGRES_POLLING_ACTIVE, deadline);
      if (ready == 0) {
        throw Failure(FailureKind::timeout, "could not connect within connect_timeout (" +
                                                seconds_text(settings.connect_timeout) + ")");
      }
      st = PQconnectPoll(c->conn_);
    }
    if (PQsetnonblocking(c->conn_, 1) != 0) c->fail(FailureKind::broken, "PQsetnonblocking");
    if (!settings.session_sql.empty()) c->simple(settings.session_sql, deadline);
    return c;
  }

  /// Runs a statement prepared on this connection: one round trip.
  /// @throws Failure; after a broken or timeout failure the connection must be dropped.
  Result prepared(const char* name, const Params& p) {
    const Deadline deadline = SteadyClock::now() + settings_->statement_bound;
    if (!PQsendQueryPrepared(conn_, name, p.count(), p.values(), p.lengths(), p.formats(), 1)) {
      fail(FailureKind::broken, "could not send the statement");
    }
    return finish(deadline);
  }

  /// Runs one or more SQL statements without parameters (simple protocol): one round trip.
  /// @return the last statement's result (text format).
  Result simple(const std::string& sql, Deadline deadline) {
    if (!PQsendQuery(conn_, sql.c_str())) fail(FailureKind::broken, "could not send the query");
    return finish(deadline);
  }

  /// As `simple`, bounded by the statement bound.
  Result simple(const std::string& sql) {
    return simple(sql, SteadyClock::now() + settings_->statement_bound);
  }

  /// Checks an idle connection before use: reads what the server sent meanwhile (a server that
  /// shut down says so, then closes), so that a dead connection is replaced before a statement
  /// is wasted on it.
  /// @return whether the connection still looks usable.
  bool usable() {
    if (doomed_ || PQstatus(conn_) != CONNECTION_OK) return false;
    // A server that ends a session sends its reason, then closes: read until nothing is left,
    // so that the close itself is seen too (a bounded number of times).
    for (int i = 0; i < 8; ++i) {
      pollfd p{};
      p.fd = PQsocket(conn_);
      p.events = POLLIN;
      if (::poll(&p, 1, 0) <= 0) break;
      if (!PQconsumeInput(conn_) || doomed_ || PQstatus(conn_) != CONNECTION_OK) return false;
      while (PGnotify* n = PQnotifies(conn_)) PQfreemem(n);
    }
    return !doomed_ && PQstatus(conn_) == CONNECTION_OK;
  }

  PGconn* raw() const noexcept { return conn_; }
  const ConnectSettings& settings() const noexcept { return *settings_; }

  /// Reads what has arrived, without blocking.
  /// @throws Failure (broken) if the connection failed.
  void consume() {
    if (!PQconsumeInput(conn_)) fail(FailureKind::broken, "lost the connection");
  }

 private:
  explicit Connection(const ConnectSettings& settings) : settings_(&settings) {}

  // Notices are dropped, except that a FATAL one that arrives while idle (the server ends the
  // session: a shutdown, pg_terminate_backend) marks the connection as doomed, even before the
  // server has closed it.
  static void on_notice(void* self, const PGresult* r) {
    const char* severity = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (severity && (std::strcmp(severity, "FATAL") == 0 || std::strcmp(severity, "PANIC") == 0)) {
      static_cast<Connection*>(self)->doomed_ = true;
    }
  }

  [[noreturn]] void fail(FailureKind kind, const char* what) const {
    throw Failure(kind, settings_->secrets.scrub(std::string(what) + ": " +
                                                 tidy(conn_ ? PQerrorMessage(conn_) : nullptr)));
  }

  // Flushes the request, then reads every result of it. Keeps the first error, else the last
  // result.
  Result finish(Deadline deadline) {
    const int fd = PQsocket(conn_);
    for (;;) {
      const int f = PQflush(conn_);
      if (f == 0) break;
      if (f < 0) fail(FailureKind::broken, "could not send the statement");
      const short ready = wait_socket(fd, true, true, deadline);
      if (ready == 0) timed_out();
      if ((ready & POLLIN) != 0 && !PQconsumeInput(conn_)) {
        fail(FailureKind::broken, "lost the connection");
      }
    }
    Result last;
    Result error;
    for (;;) {
      while (PQisBusy(conn_)) {
        if (wait_socket(fd, true, false, deadline) == 0) timed_out();
        if (!PQconsumeInput(conn_)) fail(FailureKind::broken, "lost the connection");
      }
      PGresult* r = PQgetResult(conn_);
      if (!r) break;
      const ExecStatusType st = PQresultStatus(r);
      const bool failed = st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE;
      if (failed && error.empty()) {
        error = Result(r);
      } else if (failed) {
        PQclear(r);
      } else {
        last = Result(r);
      }
    }
    if (!error.empty()) raise(error);
    return last;
  }

  [[noreturn]] void timed_out() const {
    throw Failure(FailureKind::timeout, "no answer from the server within " +
                                            seconds_text(settings_->statement_bound) +
                                            " (statement_timeout plus 1s)");
  }

  // Turns an error result into a Failure: broken if the connection is gone or the server is
  // shutting down (SQLSTATE classes 08 and 57P), otherwise a server error.
  [[noreturn]] void raise(const Result& r) const {
    const char* state = PQresultErrorField(r.raw(), PG_DIAG_SQLSTATE);
    std::string sqlstate = state ? state : "";
    std::string message = tidy(PQresultErrorMessage(r.raw()));
    const bool gone = PQstatus(conn_) != CONNECTION_OK || sqlstate.rfind("08", 0) == 0 ||
                      sqlstate.rfind("57P", 0) == 0;
    if (!sqlstate.empty()) message += " (SQLSTATE " + sqlstate + ")";
    throw Failure(gone ? FailureKind::broken : FailureKind::server,
                  settings_->secrets.scrub(message), std::move(sqlstate));
  }

  const ConnectSettings* settings_;
  PGconn* conn_ = nullptr;
  bool doomed_ = false;
};

}  // namespace pg
}  // namespace detail
}  // namespace cacheserialize
