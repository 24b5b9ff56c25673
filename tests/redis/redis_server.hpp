#pragma once

// Test support for the Redis storage: a real redis-server started on a free loopback port (and
// a Unix socket) in a temporary directory, persistence off, stopped at the end; a raw client
// for commands the storage does not send (SCRIPT FLUSH, CLIENT KILL...); and child processes.
//
// `test::shared_redis()` is one server per test process, started on first use (so listing the
// tests starts nothing). ctest runs each test case in its own process, so each case gets a
// fresh server (it starts in ~20 ms): no state leaks between cases, and the cases that restart
// or flush a server cannot disturb others running in parallel.
//
// When redis-server is not installed the test process prints why and exits with 77, which
// ctest reports as skipped; with CACHESERIALIZE_REQUIRE_SERVERS=1 (CI) that is a failure.

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cacheserialize/storage/redis.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../server_support.hpp"
#include "../support.hpp"

extern char** environ;

namespace test {

namespace cs = cacheserialize;

/// @return the path of an executable found on PATH, if any.
inline std::optional<std::string> find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

/// A raw hiredis connection for test-side commands.
class RawRedis {
 public:
  explicit RawRedis(int port, const std::string& password = "") {
    timeval tv{2, 0};
    ctx_ = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!ctx_ || ctx_->err) {
      const std::string why = ctx_ ? ctx_->errstr : "out of memory";
      if (ctx_) redisFree(ctx_);
      throw std::runtime_error("test: cannot connect to redis on port " + std::to_string(port) +
                               ": " + why);
    }
    redisSetTimeout(ctx_, tv);
    if (!password.empty()) command({"AUTH", password});
  }
  ~RawRedis() { redisFree(ctx_); }
  RawRedis(const RawRedis&) = delete;
  RawRedis& operator=(const RawRedis&) = delete;

  /// @return the reply as text: a string, status or error as is, an integer in decimal, nil as
  ///         "(nil)", an array as its elements joined by '\n'.
  std::string command(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    void* raw = redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data());
    if (!raw) throw std::runtime_error(std::string("test: redis command failed: ") + ctx_->errstr);
    redisReply* r = static_cast<redisReply*>(raw);
    std::string out = render(*r);
    freeReplyObject(r);
    return out;
  }

  long long integer(const std::vector<std::string>& args) { return std::stoll(command(args)); }

 private:
  static std::string render(const redisReply& r) {
    switch (r.type) {
      case REDIS_REPLY_INTEGER:
        return std::to_string(r.integer);
      case REDIS_REPLY_NIL:
        return "(nil)";
      case REDIS_REPLY_ARRAY: {
        std::string out;
        for (size_t i = 0; i < r.elements; ++i) out += (i ? "\n" : "") + render(*r.element[i]);
        return out;
      }
      default:
        return std::string(r.str, r.len);
    }
  }
  redisContext* ctx_ = nullptr;
};

/// A redis-server child process in its own temporary directory.
class RedisServer {
 public:
  struct Config {
    std::string password;  // requirepass, for the default user
  };

  explicit RedisServer(Config config = {}) : config_(std::move(config)) {
    const std::optional<std::string> bin = binary();
    if (!bin)
      throw std::runtime_error("redis-server is not installed (apt-get install redis-server)");
    binary_ = *bin;
    char tmpl[] = "/tmp/csredis-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("test: mkdtemp failed");
    dir_ = tmpl;
    for (int attempt = 0;; ++attempt) {
      port_ = free_port();
      try {
        start();
        return;
      } catch (const std::exception&) {
        if (attempt == 4) throw;  // another process may have taken the port: try another
      }
    }
  }

  ~RedisServer() {
    stop();
    std::remove((dir_ + "/redis.log").c_str());
    std::remove(unix_socket().c_str());  // left behind if the server had to be killed
    ::rmdir(dir_.c_str());
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  /// @return redis-server's path (CACHESERIALIZE_REDIS_SERVER, else PATH), if installed.
  static std::optional<std::string> binary() {
    if (const char* env = std::getenv("CACHESERIALIZE_REDIS_SERVER")) {
      if (::access(env, X_OK) == 0) return std::string(env);
      return std::nullopt;
    }
    return find_on_path("redis-server");
  }

  int port() const noexcept { return port_; }
  std::string unix_socket() const { return dir_ + "/redis.sock"; }
  bool running() const noexcept { return pid_ > 0; }

  /// Options for a storage on this server, with a key prefix of its own.
  cs::RedisOptions options(const std::string& prefix) const {
    cs::RedisOptions o;
    o.port = port_;
    o.password = config_.password;
    o.key_prefix = prefix;
    o.connect_timeout = std::chrono::seconds(2);
    o.command_timeout = std::chrono::seconds(2);
    o.fallback_poll_interval = std::chrono::milliseconds(50);
    return o;
  }

  /// Starts the server on its port and waits (bounded) until it answers.
  /// @throws std::runtime_error with the server's log if it does not come up.
  void start() {
    if (pid_ > 0) return;
    const std::string log = dir_ + "/redis.log";
    std::vector<std::string> args = {binary_,
                                     "--port",
                                     std::to_string(port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--unixsocket",
                                     unix_socket(),
                                     "--unixsocketperm",
                                     "700",
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--dir",
                                     dir_,
                                     "--logfile",
                                     log,
                                     "--daemonize",
                                     "no"};
    if (!config_.password.empty()) {
      args.push_back("--requirepass");
      args.push_back(config_.password);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("test: fork failed");
    if (pid == 0) {
      // Die with the test process, even if it crashes; nothing but async-signal-safe calls here.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      ::close_range(3, ~0U, 0);  // no test sockets or pipes leak into the server
      const int null = ::open("/dev/null", O_RDWR);
      ::dup2(null, 0);
      ::dup2(null, 1);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pid_ = pid;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("test: redis-server exited at start: " + read_log());
      }
      if (answers()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling a condition
    }
    stop();
    throw std::runtime_error("test: redis-server did not answer within 20s: " + read_log());
  }

  /// Stops the server (SIGTERM, then SIGKILL after a bound) and reaps it. Its data is lost.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) != pid_) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    pid_ = -1;
  }

  /// A raw client on this server.
  std::unique_ptr<RawRedis> raw() const {
    return std::make_unique<RawRedis>(port_, config_.password);
  }

 private:
  bool answers() const {
    timeval tv{0, 200000};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
    bool ok = false;
    if (c && !c->err) {
      redisSetTimeout(c, tv);
      void* r = config_.password.empty() ? redisCommand(c, "PING")
                                         : redisCommand(c, "AUTH %s", config_.password.c_str());
      ok = r != nullptr;
      if (r) freeReplyObject(r);
    }
    if (c) redisFree(c);
    return ok;
  }

  std::string read_log() const {
    std::ifstream in(dir_ + "/redis.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  Config config_;
  std::string binary_;
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

/// Skips (exit 77) or, when servers are required, fails, if redis-server is not installed.
inline void require_redis_binary() {
  if (RedisServer::binary()) return;
  const std::string why =
      "redis-server is not installed (apt-get install redis-server): the Redis tests need a "
      "real server";
  if (servers_required()) throw std::runtime_error(why + ", and CACHESERIALIZE_REQUIRE_SERVERS=1");
  std::cerr << "SKIPPED: " << why << "\n";
  std::exit(77);
}

/// The test process's server, started on first use and stopped at exit.
inline RedisServer& shared_redis() {
  require_redis_binary();
  static RedisServer server;
  return server;
}

/// @return a key prefix no other storage in any test uses.
inline std::string unique_prefix() {
  static std::atomic<int> counter{0};
  return "t" + std::to_string(::getpid()) + "-" + std::to_string(++counter) + ":";
}

/// Options for a storage on the shared server with a prefix of its own (so it starts empty).
inline cs::RedisOptions fresh_options() { return shared_redis().options(unique_prefix()); }

/// A storage on the shared server with a prefix of its own.
inline cs::RedisStorage fresh_storage() { return cs::RedisStorage(fresh_options()); }

/// A child process with a pipe on its stdin (closing it is the start signal, or the stop) and
/// one on its stdout (read line by line). Killed and reaped by the destructor if still running.
class Child {
 public:
  explicit Child(const std::vector<std::string>& args) {
    int in[2];
    int out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) {
      throw std::runtime_error("test: pipe2 failed");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
    if (rc != 0) {
      pid_ = -1;
      throw std::runtime_error("test: cannot spawn " + args[0] + ": " + std::strerror(rc));
    }
  }
  ~Child() {
    close_stdin();
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    if (stdout_ >= 0) ::close(stdout_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const noexcept { return pid_; }

  void close_stdin() {
    if (stdin_ >= 0) ::close(stdin_);
    stdin_ = -1;
  }

  /// @return the next line of the child's stdout, without '\n', or nothing at EOF or after
  ///         `bound` of real time.
  std::optional<std::string> read_line(std::chrono::milliseconds bound = std::chrono::seconds(30)) {
    const auto deadline = std::chrono::steady_clock::now() + bound;
    for (;;) {
      const auto nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{stdout_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::read(stdout_, buf, sizeof buf);
      if (n <= 0) return std::nullopt;
      buffer_.append(buf, static_cast<size_t>(n));
    }
  }

  /// @return everything the child writes until EOF (bounded).
  std::string read_all(std::chrono::milliseconds bound = std::chrono::seconds(60)) {
    std::string all;
    while (auto line = read_line(bound)) all += *line + "\n";
    return all + buffer_;
  }

  /// Waits (bounded) for the child to exit.
  /// @return its exit status as waitpid gives it, or nothing if it is still running.
  std::optional<int> wait(std::chrono::milliseconds bound = std::chrono::seconds(60)) {
    const auto deadline = std::chrono::steady_clock::now() + bound;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) != pid_) {
      if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));  // polling a condition
    }
    pid_ = -1;
    return status;
  }

  void kill(int sig) { ::kill(pid_, sig); }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  std::string buffer_;
};

}  // namespace test
