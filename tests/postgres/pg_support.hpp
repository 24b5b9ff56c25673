#pragma once

// Support for the PostgreSQL tests: the server of this test run (started by main.cpp or by the
// ctest fixture), a fresh schema per storage so that tests running in parallel against one
// server never meet, a raw libpq connection for checks, and child processes with bounded waits.

#include <libpq-fe.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cacheserialize/storage/postgres.hpp>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../support.hpp"
#include "server.hpp"

extern char** environ;

namespace test {
namespace pg {

/// The server every test of this process uses (set by main before the tests run).
inline ServerInfo& server() {
  static ServerInfo info;
  return info;
}

/// @return a schema name no other storage of this test run uses.
inline std::string unique_schema() {
  static std::atomic<int> n{0};
  return "t" + std::to_string(::getpid()) + "_" + std::to_string(n.fetch_add(1));
}

/// Options for a fresh store on the test server, with timeouts short enough for tests.
inline cs::PostgresOptions options(std::string schema = unique_schema()) {
  cs::PostgresOptions o;
  o.conninfo = server().conninfo();
  o.schema = std::move(schema);
  o.connect_timeout = std::chrono::seconds(5);
  o.statement_timeout = std::chrono::seconds(5);
  o.listener_ping_interval = std::chrono::seconds(1);
  o.listener_retry_interval = std::chrono::milliseconds(100);
  return o;
}

/// A plain libpq connection for setting up and checking, outside the storage under test.
class Sql {
 public:
  explicit Sql(const std::string& conninfo = server().conninfo())
      : conn_(PQconnectdb(conninfo.c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) {
      const std::string why = PQerrorMessage(conn_);
      PQfinish(conn_);
      throw std::runtime_error("test connection failed: " + why);
    }
  }
  Sql(const Sql&) = delete;
  Sql& operator=(const Sql&) = delete;
  ~Sql() { PQfinish(conn_); }

  /// Runs SQL; @return the first column of the first row ("" if none).
  std::string value(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    const ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
      const std::string why = PQresultErrorMessage(r);
      PQclear(r);
      throw std::runtime_error("test SQL failed: " + why + " in: " + sql);
    }
    std::string out = PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "";
    PQclear(r);
    return out;
  }
  long long number(const std::string& sql) { return std::stoll(value(sql)); }
  void exec(const std::string& sql) { value(sql); }

  /// Runs a statement with one binary bytea parameter; @return its first value as text.
  std::string value_with_bytes(const std::string& sql, const std::string& param) {
    const char* values[] = {param.data()};
    const int lengths[] = {static_cast<int>(param.size())};
    const int formats[] = {1};
    PGresult* r = PQexecParams(conn_, sql.c_str(), 1, nullptr, values, lengths, formats, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      const std::string why = PQresultErrorMessage(r);
      PQclear(r);
      throw std::runtime_error("test SQL failed: " + why);
    }
    std::string out = PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "";
    PQclear(r);
    return out;
  }

 private:
  PGconn* conn_;
};

/// @return the server's current time, as the storage's statements see it.
inline cs::TimePoint server_now(Sql& sql) {
  return cs::from_unix_nanos(
      sql.number("SELECT (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint"));
}

/// A clock policy that runs at real speed but `offset` off the real time: a machine whose
/// clock is wrong.
class SkewedClock {
 public:
  explicit SkewedClock(cs::Duration offset) : offset_(offset) {}
  cs::TimePoint now() const noexcept { return cs::SystemClock().now() + offset_; }
  bool wait_until(cs::Signal& signal, cs::TimePoint deadline) const {
    return cs::SystemClock().wait_until(signal, deadline - offset_);
  }

 private:
  cs::Duration offset_;
};

inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

/// A child process, killed on destruction if still running.
class Child {
 public:
  explicit Child(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (::posix_spawn(&pid_, args[0], nullptr, nullptr, args.data(), environ) != 0) {
      throw std::runtime_error("cannot start " + argv[0]);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const noexcept { return pid_; }

  void kill(int sig) { ::kill(pid_, sig); }

  /// Waits for the child to end, at most `bound`.
  /// @return its exit code; 128 + signal if killed; -1 if still running at the bound.
  int wait(std::chrono::milliseconds bound = std::chrono::seconds(60)) {
    int status = 0;
    const bool done = eventually(
        [&] {
          const pid_t r = ::waitpid(pid_, &status, WNOHANG);
          return r == pid_;
        },
        bound);
    if (!done) return -1;
    pid_ = -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
  }

 private:
  pid_t pid_ = -1;
};

}  // namespace pg
}  // namespace test
