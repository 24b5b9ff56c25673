#pragma once

// What the PostgreSQL benchmarks share (bench_postgres, bench_load): the tests' throwaway server
// (tests/postgres/server.hpp) with a watchdog that removes it if the binary dies without
// exiting, and a bare libpq connection with prepared statements for the baselines.

#include <fcntl.h>
#include <libpq-fe.h>
#include <spawn.h>
#include <unistd.h>

#include <cstring>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "../tests/postgres/server.hpp"

extern char** environ;

namespace bench {
namespace pg_bench {

/// Starts a process that waits for this one to end, then stops the server in `dir` (SIGQUIT to
/// its postmaster: immediate shutdown) and removes `dir`. After a normal exit the server is
/// already gone and there is nothing left to do.
inline void start_watchdog(const std::string& dir) {
  const std::string script =
      "while kill -0 \"$1\" 2>/dev/null; do sleep 0.5; done; "
      "pid=$(head -n 1 \"$2/data/postmaster.pid\" 2>/dev/null) && kill -QUIT \"$pid\" && "
      "for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 \"$pid\" 2>/dev/null || break; sleep 0.5; done; "
      "rm -rf \"$2\"";
  std::vector<std::string> args = {"/bin/sh", "-c", script, "watchdog", std::to_string(::getpid()),
                                   dir};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  for (int fd = 0; fd < 3; ++fd) {  // holds none of our pipes open after we exit
    posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);
  }
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0)
    throw std::runtime_error("cannot start the watchdog: " + std::string(std::strerror(rc)));
}

inline std::unique_ptr<test::pg::Server> start_server() {
  std::string why;
  const std::string bin = test::pg::find_bin_dir(why);
  if (bin.empty()) throw std::runtime_error(why);
  std::unique_ptr<test::pg::Server> server = test::pg::Server::start(bin);
  start_watchdog(server->dir());
  return server;
}

/// A libpq connection with prepared statements, for the baselines.
class Connection {
 public:
  explicit Connection(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) {
      const std::string why = PQerrorMessage(conn_);
      PQfinish(conn_);
      throw std::runtime_error("cannot connect: " + why);
    }
  }
  ~Connection() { PQfinish(conn_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void exec(const std::string& sql) { check(PQexec(conn_, sql.c_str()), sql); }
  void prepare(const std::string& name, const std::string& sql) {
    check(PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr), name);
  }
  /// Runs a prepared statement with text parameters. @return the number of rows.
  int run(const char* name, std::initializer_list<const std::string*> params) {
    const char* values[4] = {};
    int n = 0;
    for (const std::string* p : params) values[n++] = p->c_str();
    PGresult* r = PQexecPrepared(conn_, name, n, values, nullptr, nullptr, 0);
    const int rows = PQntuples(r);
    check(r, name);
    return rows;
  }

 private:
  void check(PGresult* r, const std::string& what) {
    const ExecStatusType st = PQresultStatus(r);
    const std::string why = PQresultErrorMessage(r);
    PQclear(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
      throw std::runtime_error("SQL failed: " + why + " in: " + what);
    }
  }
  PGconn* conn_;
};

}  // namespace pg_bench
}  // namespace bench
