// fs_worker: the helper process of the multi-process FileSystemStorage tests. The tests start it
// as real child processes (posix_spawn) against one directory; it reports through an
// append-only execution log shared by all workers and through its own standard output.
//
//   fs_worker run   --root D --log L --threads T --keys K [--go F] [--body-ms M] [--big B]
//       T threads call fs_task for keys 0..K-1 (half from key 0, half from key K/2) and check
//       every value; with --go, first create F.ready.<pid> and wait until F exists, so that all
//       workers start at once. Prints one "stats ..." line; exits 0 if every value was right.
//   fs_worker hold  --root D --log L --key I
//       Calls fs_task(I) with a body that never returns: a holder to be killed.
//   fs_worker call  --root D --log L --key I
//       Calls fs_task(I) once, printing the manager's events with their wall-clock times.
//   fs_worker churn --root D --log L --threads T --keys K --seed S --until-ns N [--big B]
//       Until the wall clock reaches N: random keys, random bodies (0..--body-ms), plain,
//       overwriting and cache-only calls, and now and then a prune; checks every value.
//   fs_worker engine --phase claim|resume --root D --report R --log L --keys N [--work-ms W]
//       The restart tests' engine (engine_task.hpp): claim try_claims N keys as owners
//       "engine-1:task-<i>" and blocks (killed there); resume claims them again as the same
//       owners, keeps them W ms, then runs and stores each. Reports to R, logs bodies to L.
//   fs_worker lock  --path P
//       Takes an exclusive flock on P, prints "locked", and sleeps until killed.
//   fs_worker probe --root D [--uid U --gid G]
//       Drops to U:G if given, then constructs a FileSystemStorage on D; prints the outcome.
//
// Common options: --heartbeat-ms (100), --grace (5), --poll-ms (20).
// Every function body appends "exec <key> <pid> <unix ns>" to the log in one write(2) with
// O_APPEND, which is atomic between processes on a local file system, so counting lines per key
// counts executions; a wrong value appends "bad <key> <pid>".

#include <fcntl.h>
#include <grp.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cacheserialize/cacheserialize.hpp>
#include <cacheserialize/storage/filesystem.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine_task.hpp"
#include "fs_task.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

std::map<std::string, std::string> g_args;

std::string arg(const std::string& name, const std::string& fallback = "") {
  const auto it = g_args.find(name);
  if (it != g_args.end()) return it->second;
  if (fallback.empty()) {
    std::fprintf(stderr, "fs_worker: missing --%s\n", name.c_str());
    std::exit(64);
  }
  return fallback;
}

long long num(const std::string& name, long long fallback) {
  return std::stoll(arg(name, std::to_string(fallback)));
}

std::int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Writes one whole line with one write(2), so that lines of concurrent threads never mix.
void write_line(int fd, const std::string& line) {
  const std::string text = line + "\n";
  if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) std::abort();
}

void say(const std::string& line) { write_line(STDOUT_FILENO, line); }

class Log {
 public:
  explicit Log(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666)) {
    if (fd_ < 0) {
      std::perror("fs_worker: cannot open the log");
      std::exit(65);
    }
  }
  ~Log() { ::close(fd_); }
  void line(const std::string& text) const { write_line(fd_, text); }

 private:
  int fd_;
};

cs::FileSystemStorage make_storage(std::atomic<int>* corrupt = nullptr) {
  cs::FileSystemOptions o;
  o.root = arg("root");
  if (corrupt != nullptr) {
    o.listener = [corrupt](const cs::Event& e) {
      corrupt->fetch_add(1);
      std::fprintf(stderr, "fs_worker: corrupt output: %.*s\n", static_cast<int>(e.detail.size()),
                   e.detail.data());
    };
  }
  return cs::FileSystemStorage(o);
}

cs::ManagerOptions manager_options(cs::Listener listener = {}) {
  cs::ManagerOptions o;
  o.heartbeat_interval = std::chrono::milliseconds(num("heartbeat-ms", 100));
  o.grace_multiplier = static_cast<double>(num("grace", 5));
  o.listener = std::move(listener);
  return o;
}

cs::TaskOptions task_options() {
  cs::TaskOptions t{fs_task::name, fs_task::version};
  t.poll_interval = std::chrono::milliseconds(num("poll-ms", 20));
  return t;
}

using Manager = cs::ReservationManager<cs::SystemClock, cs::FileSystemStorage>;

std::string stats_line(const cs::Stats& s) {
  return "executions=" + std::to_string(s.executions) + " waits=" + std::to_string(s.waits) +
         " hits=" + std::to_string(s.hits) + " takeovers=" + std::to_string(s.takeovers) +
         " lost=" + std::to_string(s.lost) + " heartbeats=" + std::to_string(s.heartbeats);
}

/// Calls, wrong values and failures of one worker. Every call goes through `check`, which
/// never throws: a wrong value is logged ("bad <key> <pid>") and counted, as is an exception.
struct Tally {
  std::atomic<long> calls{0};
  std::atomic<long> errors{0};
  std::atomic<int> corrupt{0};  // corrupt_output events of the worker's storage

  template <class Call>
  void check(const Log& log, std::int64_t i, const std::string& expected, Call&& call) {
    try {
      if (call() != expected) {
        log.line("bad " + std::to_string(i) + " " + std::to_string(::getpid()));
        errors.fetch_add(1);
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "fs_worker: call %lld failed: %s\n", static_cast<long long>(i),
                   e.what());
      errors.fetch_add(1);
    }
    calls.fetch_add(1);
  }

  /// Prints the "stats ..." line. @return the exit code: 0 if all went right.
  int report(const cs::Stats& s) const {
    say("stats calls=" + std::to_string(calls.load()) + " errors=" + std::to_string(errors.load()) +
        " corrupt=" + std::to_string(corrupt.load()) + " " + stats_line(s));
    return errors.load() == 0 && corrupt.load() == 0 ? 0 : 2;
  }
};

int run() {
  const Log log(arg("log"));
  const auto threads = num("threads", 8);
  const auto keys = num("keys", 50);
  const auto body = std::chrono::milliseconds(num("body-ms", 10));
  const auto big = static_cast<std::size_t>(num("big", 0));
  Tally tally;
  Manager manager(make_storage(&tally.corrupt), cs::SystemClock(), manager_options());
  auto task = cs::serialize_cached(
      [&](std::int64_t i) {
        log.line("exec " + std::to_string(i) + " " + std::to_string(::getpid()) + " " +
                 std::to_string(wall_ns()));
        std::this_thread::sleep_for(body);
        return fs_task::expected(i, big);
      },
      task_options(), manager);

  if (g_args.count("go") != 0) {
    const std::string go = arg("go");
    { const Log ready(go + ".ready." + std::to_string(::getpid())); }
    const auto bound = std::chrono::steady_clock::now() + 60s;
    while (::access(go.c_str(), F_OK) != 0) {
      if (std::chrono::steady_clock::now() > bound) {
        say("error: the start signal never came");
        return 3;
      }
      std::this_thread::sleep_for(1ms);
    }
  }

  std::vector<std::thread> pool;
  for (long long t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      // Two starting points, each shared by half the threads of every process: every key has
      // many callers from all processes at the same moment.
      const long long first = (t % 2) * (keys / 2);
      for (long long j = 0; j < keys; ++j) {
        const std::int64_t i = (first + j) % keys;
        tally.check(log, i, fs_task::expected(i, big), [&] { return task(i); });
      }
    });
  }
  for (auto& th : pool) th.join();
  return tally.report(manager.stats());
}

int hold() {
  const Log log(arg("log"));
  const std::int64_t key = num("key", 0);
  Manager manager(make_storage(), cs::SystemClock(), manager_options());
  auto task = cs::serialize_cached(
      [&](std::int64_t i) -> std::string {
        log.line("exec " + std::to_string(i) + " " + std::to_string(::getpid()) + " " +
                 std::to_string(wall_ns()));
        for (;;) std::this_thread::sleep_for(1s);  // until killed
      },
      task_options(), manager);
  task(key);
  return 1;  // unreachable
}

int call() {
  const Log log(arg("log"));
  const std::int64_t key = num("key", 0);
  const auto listener = [](const cs::Event& e) {
    const std::string at = " at=" + std::to_string(wall_ns());
    switch (e.kind) {
      case cs::EventKind::waiting:
        say("waiting holder=" + std::string(e.holder) +
            " expires=" + std::to_string(cs::to_unix_nanos(e.expires_at)) + at);
        break;
      case cs::EventKind::took_over:
        say("took_over holder=" + std::string(e.holder) + at);
        break;
      case cs::EventKind::acquired:
        say("acquired token=" + std::to_string(e.token) + at);
        break;
      case cs::EventKind::hit:
        say("hit" + at);
        break;
      default:
        break;
    }
  };
  Manager manager(make_storage(), cs::SystemClock(), manager_options(listener));
  auto task = cs::serialize_cached(
      [&](std::int64_t i) {
        log.line("exec " + std::to_string(i) + " " + std::to_string(::getpid()) + " " +
                 std::to_string(wall_ns()));
        return fs_task::expected(i, 0);
      },
      task_options(), manager);
  const bool ok = task(key) == fs_task::expected(key, 0);
  say(ok ? "result ok" : "result bad");
  return ok ? 0 : 2;
}

int churn() {
  const Log log(arg("log"));
  const auto threads = num("threads", 4);
  const auto keys = num("keys", 40);
  const auto seed = static_cast<std::uint64_t>(num("seed", 1));
  const auto until = static_cast<std::int64_t>(num("until-ns", 0));
  const auto body_max = num("body-ms", 20);
  const auto big = static_cast<std::size_t>(num("big", 0));
  Tally tally;
  cs::FileSystemStorage storage = make_storage(&tally.corrupt);
  Manager manager(storage, cs::SystemClock(), manager_options());
  // The body's duration is drawn inside it, so that it is not an input (not part of the key).
  const auto body = [&](std::int64_t i) {
    thread_local std::mt19937_64 rng(seed * 1000003 +
                                     std::hash<std::thread::id>{}(std::this_thread::get_id()));
    log.line("exec " + std::to_string(i) + " " + std::to_string(::getpid()) + " " +
             std::to_string(wall_ns()));
    std::this_thread::sleep_for(
        std::chrono::milliseconds(rng() % static_cast<std::uint64_t>(body_max + 1)));
    return fs_task::expected(i, big);
  };
  // Three wrappers of one task (same name, version and interface, so the same keys): plain,
  // overwriting (runs and stores again, still one at a time) and cache-only (runs and puts).
  auto plain = cs::serialize_cached(body, task_options(), manager);
  cs::TaskOptions overwrite_options = task_options();
  overwrite_options.overwrite_cache = true;
  auto overwrite = cs::serialize_cached(body, overwrite_options, manager);
  cs::TaskOptions put_options = task_options();
  put_options.serialize = false;
  put_options.overwrite_cache = true;
  auto put = cs::serialize_cached(body, put_options, manager);

  std::vector<std::thread> pool;
  for (long long t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937_64 rng(seed * 1000 + static_cast<std::uint64_t>(t));
      while (wall_ns() < until) {
        const auto i = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(keys));
        const auto dice = rng() % 100;
        tally.check(log, i, fs_task::expected(i, big), [&] {
          if (dice < 70) return plain(i);
          if (dice < 85) return overwrite(i);
          if (dice < 98) return put(i);
          storage.prune(200ms);  // now and then, while the others work
          return fs_task::expected(i, big);
        });
      }
    });
  }
  for (auto& th : pool) th.join();
  return tally.report(manager.stats());
}

int engine() {
  engine_task::Settings s;
  s.phase = arg("phase");
  s.report = arg("report");
  s.log = arg("log");
  s.keys = static_cast<int>(num("keys", 4));
  s.heartbeat = std::chrono::milliseconds(num("heartbeat-ms", 100));
  s.grace = static_cast<double>(num("grace", 5));
  s.work = std::chrono::milliseconds(num("work-ms", 0));
  return engine_task::run(make_storage(), s);
}

int lock() {
  const std::string path = arg("path");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0 || ::flock(fd, LOCK_EX) != 0) {
    std::perror("fs_worker: cannot lock");
    return 3;
  }
  say("locked");
  for (;;) std::this_thread::sleep_for(1s);  // until killed
}

int probe() {
  if (g_args.count("uid") != 0) {
    const auto gid = static_cast<gid_t>(num("gid", 65534));
    const auto uid = static_cast<uid_t>(num("uid", 65534));
    if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) {
      say("cannot drop privileges");
      return 4;
    }
  }
  try {
    cs::FileSystemStorage storage(arg("root"));
    say("constructed");
    if (g_args.count("acquire") != 0) {  // a key whose record another user may own
      const cs::Key key("probe", "1", arg("acquire"));
      const cs::AcquireResult r =
          storage.acquire(key, {"probe-owner", cs::SystemClock().now(), 30s, false});
      say(r.status == cs::AcquireStatus::acquired ? "acquired" : "not acquired");
    }
    return 0;
  } catch (const cs::storage_error& e) {
    say(std::string("storage_error: ") + e.what());
    return 3;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: fs_worker run|hold|call|churn|engine|lock|probe --option value...\n");
    return 64;
  }
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string name = argv[i];
    if (name.rfind("--", 0) != 0) {
      std::fprintf(stderr, "fs_worker: expected an option, got %s\n", argv[i]);
      return 64;
    }
    g_args[name.substr(2)] = argv[i + 1];
  }
  const std::string mode = argv[1];
  try {
    if (mode == "run") return run();
    if (mode == "hold") return hold();
    if (mode == "call") return call();
    if (mode == "churn") return churn();
    if (mode == "engine") return engine();
    if (mode == "lock") return lock();
    if (mode == "probe") return probe();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fs_worker %s: %s\n", mode.c_str(), e.what());
    return 70;
  }
  std::fprintf(stderr, "fs_worker: unknown mode %s\n", mode.c_str());
  return 64;
}
