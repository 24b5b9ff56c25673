#pragma once

// A throwaway PostgreSQL server for the tests: initdb into a temporary directory, pg_ctl start on
// a free loopback port with password (SCRAM) authentication, stop and remove at the end.
//
// initdb and pg_ctl refuse to run as root, and CI runs as root: then every server command runs as
// an unprivileged user (CACHESERIALIZE_PG_USER, else "postgres", else "nobody") in a forked child
// that drops its privileges before exec, and the temporary directory is given to that user.
//
// The server binaries are looked up in CACHESERIALIZE_PG_BIN (only there, if it is set), else in
// the directory CMake found (CACHESERIALIZE_PG_BIN_DEFAULT), then in
// /usr/lib/postgresql/<newest>/bin.

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../server_support.hpp"

#ifndef CACHESERIALIZE_PG_BIN_DEFAULT
#define CACHESERIALIZE_PG_BIN_DEFAULT ""
#endif

namespace test {
namespace pg {

/// Where a running server is and how to log in.
struct ServerInfo {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string user = "cs_admin";
  std::string password;
  std::string dbname = "postgres";

  std::string conninfo() const {
    return "host=" + host + " port=" + std::to_string(port) + " user=" + user +
           " password=" + password + " dbname=" + dbname + " sslmode=disable";
  }
};

inline bool executable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

/// @return the directory with initdb and pg_ctl, or "" with `why` set.
inline std::string find_bin_dir(std::string& why) {
  std::vector<std::string> candidates;
  const char* env = std::getenv("CACHESERIALIZE_PG_BIN");
  if (env && *env) {  // an explicit choice: only there
    if (executable(std::string(env) + "/initdb") && executable(std::string(env) + "/pg_ctl")) {
      return env;
    }
    why = std::string("no initdb and pg_ctl in CACHESERIALIZE_PG_BIN=") + env;
    return "";
  }
  if (std::strlen(CACHESERIALIZE_PG_BIN_DEFAULT) > 0) {
    candidates.emplace_back(CACHESERIALIZE_PG_BIN_DEFAULT);
  }
  std::error_code ec;
  std::vector<std::string> installed;
  for (const auto& e : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
    installed.push_back(e.path().string() + "/bin");
  }
  std::sort(installed.begin(), installed.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() > b.size() : a > b;  // newest version first
  });
  for (std::string& dir : installed) candidates.push_back(std::move(dir));
  for (const std::string& dir : candidates) {
    if (executable(dir + "/initdb") && executable(dir + "/pg_ctl")) return dir;
  }
  why = "PostgreSQL server binaries (initdb, pg_ctl) not found; looked in";
  for (const std::string& dir : candidates) why += " " + dir;
  if (candidates.empty()) why += " nothing (set CACHESERIALIZE_PG_BIN)";
  why += "; install the 'postgresql' package or set CACHESERIALIZE_PG_BIN";
  return "";
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::string tail(const std::string& text, std::size_t n = 1500) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

/// The account that runs the server: the current one, or an unprivileged one when root.
struct Account {
  bool drop = false;  // we are root: switch to uid/gid in the child
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name;

  static Account choose() {
    Account a;
    if (::geteuid() != 0) return a;
    std::vector<std::string> names;
    if (const char* env = std::getenv("CACHESERIALIZE_PG_USER")) names.emplace_back(env);
    names.emplace_back("postgres");
    names.emplace_back("nobody");
    for (const std::string& n : names) {
      if (const passwd* pw = ::getpwnam(n.c_str())) {
        if (pw->pw_uid == 0) continue;
        a.drop = true;
        a.uid = pw->pw_uid;
        a.gid = pw->pw_gid;
        a.name = n;
        return a;
      }
    }
    throw std::runtime_error("running as root and no unprivileged user (postgres, nobody) exists");
  }
};

/// Runs `argv` (as `account`), output appended to `log`, in directory `cwd`; waits for it.
/// @return its exit status, or -1 if it did not exit normally.
inline int run_command(const Account& account, const std::vector<std::string>& argv,
                       const std::string& log, const std::string& cwd) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  const int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (out < 0 || in < 0) throw std::runtime_error("cannot open " + log);
  if (account.drop && ::fchown(out, account.uid, account.gid) != 0) {
    throw std::runtime_error("cannot chown " + log);
  }
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    // The child: only async-signal-safe calls until exec. The server that pg_ctl starts inherits
    // these descriptors, so nothing of ours (a ctest pipe) may stay open in it.
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    for (int fd = 3; fd < 1024; ++fd) ::close(fd);
    if (account.drop) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(account.gid) != 0 ||
          ::setuid(account.uid) != 0) {
        ::_exit(126);
      }
    }
    if (::chdir(cwd.c_str()) != 0) ::_exit(126);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out);
  ::close(in);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline std::string random_password() {
  std::random_device rd;
  const char* alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  std::string p = "pw-";
  for (int i = 0; i < 20; ++i) p += alphabet[rd() % 56];
  return p;
}

/// One throwaway server. Stopped and removed on destruction.
class Server {
 public:
  /// initdb + start. @throws std::runtime_error with the reason and the log's tail.
  static std::unique_ptr<Server> start(const std::string& bin) {
    std::unique_ptr<Server> s(new Server());
    s->bin_ = bin;
    s->account_ = Account::choose();
    char dir[] = "/tmp/cacheserialize-pg-XXXXXX";
    if (!::mkdtemp(dir)) throw std::runtime_error("mkdtemp failed");
    s->dir_ = dir;
    s->owns_dir_ = true;
    if (s->account_.drop && ::chown(dir, s->account_.uid, s->account_.gid) != 0) {
      throw std::runtime_error(std::string("cannot give ") + dir + " to " + s->account_.name);
    }
    s->info_.password = random_password();
    {
      std::ofstream pw(s->dir_ + "/pwfile");
      pw << s->info_.password << "\n";
    }
    if (s->account_.drop &&
        ::chown((s->dir_ + "/pwfile").c_str(), s->account_.uid, s->account_.gid) != 0) {
      throw std::runtime_error("cannot chown the password file");
    }
    const int rc = run_command(
        s->account_,
        {bin + "/initdb", "-D", s->data(), "-U", s->info_.user, "--pwfile=" + s->dir_ + "/pwfile",
         "-A", "scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C", "-N"},
        s->dir_ + "/initdb.log", s->dir_);
    if (rc != 0) {
      throw std::runtime_error("initdb failed (exit " + std::to_string(rc) +
                               "): " + tail(read_file(s->dir_ + "/initdb.log")));
    }
    std::string last_error;
    for (int attempt = 0; attempt < 3; ++attempt) {  // a port may be taken meanwhile
      s->info_.port = free_port();
      if (s->launch(last_error)) return s;
    }
    throw std::runtime_error(last_error);
  }

  /// Re-attaches to a server started by another process (the ctest fixture), to stop it.
  static std::unique_ptr<Server> attach(const std::string& bin, const std::string& dir) {
    std::unique_ptr<Server> s(new Server());
    s->bin_ = bin;
    s->account_ = Account::choose();
    s->dir_ = dir;
    s->owns_dir_ = true;
    s->running_ = true;
    return s;
  }

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  ~Server() {
    try {
      stop();
    } catch (...) {
    }
    if (owns_dir_) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  /// Leaves the server running after this object is gone (the fixture's setup; its cleanup
  /// stops it through `attach`).
  void detach() noexcept {
    running_ = false;
    owns_dir_ = false;
  }

  const ServerInfo& info() const noexcept { return info_; }
  const std::string& dir() const noexcept { return dir_; }

  /// Fast shutdown: sessions are terminated, data is flushed.
  void stop() {
    if (!running_) return;
    running_ = false;
    run_command(account_, {bin_ + "/pg_ctl", "-D", data(), "-m", "fast", "-w", "-t", "60", "stop"},
                dir_ + "/pg_ctl.log", dir_);
  }

  /// Starts the stopped server again on the same port.
  void start_again() {
    std::string error;
    if (!launch(error)) throw std::runtime_error(error);
  }

 private:
  Server() = default;

  std::string data() const { return dir_ + "/data"; }

  bool launch(std::string& error) {
    const std::string options =
        "-p " + std::to_string(info_.port) +
        " -c listen_addresses=127.0.0.1 -c unix_socket_directories=" + dir_ +
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        " -c max_connections=300 -c max_prepared_transactions=10 -c shared_buffers=16MB";
    const int rc = run_command(account_,
                               {bin_ + "/pg_ctl", "-D", data(), "-l", dir_ + "/server.log", "-w",
                                "-t", "60", "-o", options, "start"},
                               dir_ + "/pg_ctl.log", dir_);
    if (rc == 0) {
      running_ = true;
      return true;
    }
    error = "pg_ctl start failed (exit " + std::to_string(rc) +
            "): " + tail(read_file(dir_ + "/server.log"));
    return false;
  }

  std::string bin_;
  Account account_;
  std::string dir_;
  bool owns_dir_ = false;
  bool running_ = false;
  ServerInfo info_;
};

/// The fixture's state file: "key=value" lines.
inline std::map<std::string, std::string> read_state(const std::string& path) {
  std::map<std::string, std::string> kv;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return kv;
}

inline void write_state(const std::string& path, const std::map<std::string, std::string>& kv) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    for (const auto& e : kv) out << e.first << "=" << e.second << "\n";
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace pg
}  // namespace test
