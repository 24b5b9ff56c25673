// Load across processes (issue 14): N worker processes x M threads call the library's
// `serialize_cached` over one shared storage, or a hand-written baseline of the same operation
// with the same client library, for a fixed time; calls per second over all threads and the
// p50/p99 of per-call latency, library against baseline, measured in the same run.
//
//   bench_load [--processes=8] [--threads=2] [--seconds=3] [--keys=10000] [--filter=TEXT]
//              [--quick] [--benchmark_repetitions=N]      (default: REPETITIONS, else 5)
//
// Cases, per shared storage (`--filter` keeps those whose name contains TEXT):
// - fs (FileSystemStorage, durable: the default): hit one hot key, hit over `keys` keys, miss
//   (a trivial body); baselines: open+read+close of a file; flock on a lock file + write + fsync
//   + rename. fs_not_durable (`durable = false`): miss; baseline: write + rename.
// - redis: hits and miss; baselines: a plain hiredis GET; SET NX PX + SET + DEL.
// - pg: hits and miss; baselines: a prepared SELECT by primary key on a plain table; a prepared
//   INSERT ... ON CONFLICT DO NOTHING + UPDATE.
// - memory (InMemoryStorage, one per process): a reference without a target, against a
//   std::mutex over a std::unordered_map.
//
// Not Google Benchmark's runner: a measurement here is a set of processes, which its
// per-thread loop cannot drive. The parent starts the servers (the tests' fixtures, with the
// PostgreSQL watchdog), stores the hit keys, then for each measurement re-executes itself as N
// workers (`--worker`, so no thread or connection of the parent is forked). Each worker reads
// its settings from its stdin, opens its own storage and manager (library) or one connection
// per thread (baseline), warms up, says "ready", and on "go <steady-clock time>" runs its
// threads from that time for the duration, recording every call's latency in a per-thread
// histogram; it reports counts, the storage's round trips and the histogram on its stdout.
// Library and baseline of a case are measured back to back in a random order, each
// repetition; the table shows medians, and the ratio is the median of the repetitions' ratios.
//
// Checked, and a failure exits non-zero (also under --quick, which CI runs): every call's
// answer (100 bytes), one manager hit per library hit and one execution per miss, and the
// storage's round trips per call (PostgreSQL and Redis: 1 per hit, 2 per miss). A server that
// cannot start skips its cases, or fails with CACHESERIALIZE_REQUIRE_SERVERS=1. SIGINT or
// SIGTERM stops the workers and removes the servers and temporary directories.

#include <fcntl.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cacheserialize/cacheserialize.hpp>
#include <cacheserialize/storage/filesystem.hpp>
#include <cacheserialize/storage/memory.hpp>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../tests/server_support.hpp"
#include "storage_bench.hpp"
#if defined(CACHESERIALIZE_BENCH_REDIS)
#include <hiredis/hiredis.h>

#include <cacheserialize/storage/redis.hpp>

#include "../tests/redis/redis_server.hpp"
#endif
#if defined(CACHESERIALIZE_BENCH_POSTGRES)
#include <cacheserialize/storage/postgres.hpp>

#include "postgres_server.hpp"
#endif

extern char** environ;

namespace {

namespace cs = cacheserialize;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// ---- cases -------------------------------------------------------------------------------------

enum class Store { memory, fs, fs_not_durable, redis, pg };
enum class Op { hit_hot, hit_keys, miss };

struct Case {
  std::string name;  // "<store>/<op>"
  Store store;
  Op op;
  double target;         // the least ratio library/baseline of calls/s; 0: a reference
  std::string baseline;  // what the baseline does
};

const char* store_name(Store s) {
  switch (s) {
    case Store::memory:
      return "memory";
    case Store::fs:
      return "fs";
    case Store::fs_not_durable:
      return "fs_not_durable";
    case Store::redis:
      return "redis";
    case Store::pg:
      return "pg";
  }
  return "?";
}

std::vector<Case> all_cases() {
  std::vector<Case> c;
  auto add = [&](Store s, Op op, double target, std::string baseline) {
    const char* ops[] = {"hit_hot", "hit_keys", "miss"};
    c.push_back({std::string(store_name(s)) + "/" + ops[static_cast<int>(op)], s, op, target,
                 std::move(baseline)});
  };
  add(Store::memory, Op::hit_hot, 0, "mutex + unordered_map find");
  add(Store::memory, Op::miss, 0, "mutex + unordered_map insert");
  add(Store::fs, Op::hit_hot, 0.85, "open + read + close");
  add(Store::fs, Op::hit_keys, 0.85, "open + read + close");
  add(Store::fs, Op::miss, 0.8, "flock + write + fsync + rename");
  add(Store::fs_not_durable, Op::miss, 0.5, "write + rename");
#if defined(CACHESERIALIZE_BENCH_REDIS)
  add(Store::redis, Op::hit_hot, 0.9, "GET");
  add(Store::redis, Op::hit_keys, 0.9, "GET");
  add(Store::redis, Op::miss, 0.95, "SET NX PX + SET + DEL");
#endif
#if defined(CACHESERIALIZE_BENCH_POSTGRES)
  add(Store::pg, Op::hit_hot, 0.85, "prepared SELECT by primary key");
  add(Store::pg, Op::hit_keys, 0.85, "prepared SELECT by primary key");
  add(Store::pg, Op::miss, 0.8, "prepared INSERT ON CONFLICT DO NOTHING + UPDATE");
#endif
  return c;
}

/// The hot key of `hit_hot`; hit keys are 0..keys-1.
constexpr std::int64_t kHotKey = 0;

/// Calls each worker thread makes before the start: connections opened, the in-process store
/// given its hot key.
constexpr std::int64_t kWarmUpCalls = 20;

/// Library round trips per call the storage must count (0: the storage has no counter).
std::uint64_t expected_round_trips(const Case& c) {
  if (c.store != Store::redis && c.store != Store::pg) return 0;
  return c.op == Op::miss ? 2 : 1;
}

// ---- latency histogram -------------------------------------------------------------------------

/// Nanoseconds in log-linear buckets: exact below 256, then 128 buckets per power of two
/// (under 1% error), so that a thread records a call with one increment and processes merge
/// by addition.
class Histogram {
 public:
  static constexpr int kBits = 7;
  Histogram() : counts_(64 << kBits) {}

  void add(std::uint64_t ns) { ++counts_[index(ns)]; }
  void add(std::size_t i, std::uint64_t n) { counts_.at(i) += n; }
  void merge(const Histogram& o) {
    for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += o.counts_[i];
  }
  const std::vector<std::uint64_t>& counts() const noexcept { return counts_; }

  /// @return the p-th percentile (0..100) in ns, nearest rank, at its bucket's middle.
  double percentile(double p) const {
    std::uint64_t total = 0;
    for (std::uint64_t n : counts_) total += n;
    if (total == 0) return 0;
    const auto rank = std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>(std::ceil(p / 100 * static_cast<double>(total))));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank) return middle(i);
    }
    return middle(counts_.size() - 1);
  }

 private:
  static std::size_t index(std::uint64_t v) {
    if (v < (2u << kBits)) return static_cast<std::size_t>(v);
    const int shift = 63 - __builtin_clzll(v) - kBits;
    return (static_cast<std::size_t>(shift + 1) << kBits) + ((v >> shift) - (1u << kBits));
  }
  static double middle(std::size_t i) {
    if (i < (2u << kBits)) return static_cast<double>(i);
    const std::size_t shift = (i >> kBits) - 1;
    const double low = static_cast<double>(((i & ((1u << kBits) - 1)) + (1u << kBits)) << shift);
    return low + static_cast<double>(std::uint64_t{1} << shift) / 2;
  }

  std::vector<std::uint64_t> counts_;
};

// ---- signals -----------------------------------------------------------------------------------

volatile std::sig_atomic_t g_signal = 0;

struct Interrupted {};

void throw_if_interrupted() {
  if (g_signal != 0) throw Interrupted{};
}

[[noreturn]] void fail_errno(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

// ---- a worker process ------------------------------------------------------------------------

/// What the parent tells a worker, one "key=value" line each on its stdin, before "end".
using Settings = std::map<std::string, std::string>;

/// One call of one side, on the thread that made it; throws on a wrong answer.
using Call = std::function<void(std::int64_t)>;

/// One side of a case in one worker process.
class Side {
 public:
  virtual ~Side() = default;
  /// @return a call for one thread, with its own connection (baselines). Before the start.
  virtual Call caller() = 0;
  /// @return the storage's round-trip counter, or 0 if none.
  virtual std::uint64_t round_trips() const { return 0; }
  /// @return the manager's hits (hit cases) or executions (misses), or the calls (baselines).
  virtual std::uint64_t answered() const { return 0; }
};

void check_payload(std::size_t size) {
  if (size != bench::kPayloadBytes) {
    throw std::runtime_error("a call returned " + std::to_string(size) + " bytes, not " +
                             std::to_string(bench::kPayloadBytes));
  }
}

/// `serialize_cached(Payload)` over a storage, as a user calls it.
template <class Storage>
class Library : public Side {
 public:
  Library(Storage storage, Op op, std::function<std::uint64_t(const Storage&)> round_trips)
      : storage_(storage),
        fn_(cs::serialize_cached(bench::Payload{}, cs::TaskOptions{"payload", "1"},
                                 cs::ReservationManager<cs::SystemClock, Storage>(storage))),
        op_(op),
        round_trips_(std::move(round_trips)) {}

  Call caller() override {
    return [this](std::int64_t n) { check_payload(fn_(n).size()); };
  }
  std::uint64_t round_trips() const override { return round_trips_ ? round_trips_(storage_) : 0; }
  std::uint64_t answered() const override {
    const cs::Stats s = fn_.manager().stats();
    return op_ == Op::miss ? s.executions : s.hits;
  }

 private:
  Storage storage_;
  bench::CachedPayload<Storage> fn_;
  Op op_;
  std::function<std::uint64_t(const Storage&)> round_trips_;
};

/// The in-process reference: one mutex over one map.
class MemoryBaseline : public Side {
 public:
  explicit MemoryBaseline(Op op) : op_(op) {}
  Call caller() override {
    return [this](std::int64_t n) {
      std::string key = std::to_string(n);
      if (op_ == Op::miss) {
        map_.put(std::move(key), bench::Payload{}(n));
        return;
      }
      std::optional<std::string> v = map_.get(key);
      if (!v) map_.put(key, *(v = bench::Payload{}(n)));  // the warm-up stores it
      check_payload(v->size());
    };
  }

 private:
  Op op_;
  bench::MutexMap<std::string> map_;
};

/// Files under `dir` named by the key number: the hand-written file cache.
class FsBaseline : public Side {
 public:
  FsBaseline(std::string dir, Op op, bool durable)
      : dir_(std::move(dir)), op_(op), durable_(durable) {}
  Call caller() override {
    return [this](std::int64_t n) { op_ == Op::miss ? store(n) : read(n); };
  }

 private:
  void read(std::int64_t n) const {
    const std::string path = dir_ + "/" + std::to_string(n);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail_errno("open " + path);
    char buf[4096];
    const ssize_t got = ::read(fd, buf, sizeof buf);
    ::close(fd);
    if (got < 0) fail_errno("read " + path);
    check_payload(static_cast<std::size_t>(got));
  }

  // Durable: under an exclusive flock on the key's lock file, write a temporary file, fsync it,
  // rename it into place. Not durable: write and rename only.
  void store(std::int64_t n) const {
    const std::string path = dir_ + "/" + std::to_string(n);
    int lock = -1;
    if (durable_) {
      const std::string lock_path = path + ".lock";
      lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (lock < 0 || ::flock(lock, LOCK_EX) != 0) fail_errno("lock " + lock_path);
    }
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) fail_errno("open " + tmp);
    const std::string value = bench::Payload{}(n);
    const bool written =
        ::write(fd, value.data(), value.size()) == static_cast<ssize_t>(value.size());
    const bool synced = !durable_ || ::fsync(fd) == 0;
    ::close(fd);
    if (!written || !synced) fail_errno("write " + tmp);
    if (::rename(tmp.c_str(), path.c_str()) != 0) fail_errno("rename " + tmp);
    if (lock >= 0) ::close(lock);  // releases the flock
  }

  std::string dir_;
  Op op_;
  bool durable_;
};

#if defined(CACHESERIALIZE_BENCH_REDIS)
/// One hiredis connection per thread: GET for a hit; SET NX PX (reserve), SET, DEL for a miss.
class RedisBaseline : public Side {
 public:
  RedisBaseline(int port, Op op) : port_(port), op_(op) {}
  Call caller() override {
    std::shared_ptr<redisContext> c(redisConnect("127.0.0.1", port_), [](redisContext* p) {
      if (p) redisFree(p);
    });
    if (!c || c->err) {
      throw std::runtime_error(std::string("cannot connect to redis: ") +
                               (c ? c->errstr : "out of memory"));
    }
    return [c, this](std::int64_t n) {
      const std::string key = "raw:" + std::to_string(n);
      if (op_ != Op::miss) {
        check_payload(reply(c.get(), {"GET", key}, REDIS_REPLY_STRING).size());
        return;
      }
      const std::string reservation = "res:" + std::to_string(n);
      if (reply(c.get(), {"SET", reservation, "owner", "NX", "PX", "30000"}, REDIS_REPLY_STATUS) !=
          "OK") {
        throw std::runtime_error("SET NX: the key was reserved already");
      }
      reply(c.get(), {"SET", key, bench::Payload{}(n)}, REDIS_REPLY_STATUS);
      reply(c.get(), {"DEL", reservation}, REDIS_REPLY_INTEGER);
    };
  }

 private:
  static std::string reply(redisContext* c, std::initializer_list<std::string> args, int type) {
    const char* argv[8];
    std::size_t lens[8];
    int n = 0;
    for (const std::string& a : args) {
      argv[n] = a.data();
      lens[n++] = a.size();
    }
    auto* r = static_cast<redisReply*>(redisCommandArgv(c, n, argv, lens));
    if (!r) throw std::runtime_error(std::string("redis: ") + c->errstr);
    const bool ok = r->type == type;
    std::string out = r->str ? std::string(r->str, r->len) : std::string();
    freeReplyObject(r);
    if (!ok) throw std::runtime_error("redis: unexpected reply " + out);
    return out;
  }

  int port_;
  Op op_;
};
#endif

#if defined(CACHESERIALIZE_BENCH_POSTGRES)
/// The baselines' plain table.
constexpr const char* kPgTable = "load_kv";

/// One libpq connection per thread with prepared statements: a SELECT by primary key for a hit;
/// INSERT ... ON CONFLICT DO NOTHING (reserve) and UPDATE (store, release) for a miss.
class PgBaseline : public Side {
 public:
  PgBaseline(std::string conninfo, Op op) : conninfo_(std::move(conninfo)), op_(op) {}
  Call caller() override {
    auto c = std::make_shared<bench::pg_bench::Connection>(conninfo_);
    const std::string t = kPgTable;
    c->prepare("get", "SELECT value FROM " + t + " WHERE key = $1");
    c->prepare("reserve", "INSERT INTO " + t +
                              " (key, owner) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1");
    c->prepare("store", "UPDATE " + t + " SET value = $2, owner = NULL WHERE key = $1");
    return [c, this](std::int64_t n) {
      const std::string key = std::to_string(n);
      if (op_ != Op::miss) {
        if (c->run("get", {&key}) != 1) throw std::runtime_error("SELECT found no row");
        return;
      }
      const std::string owner = "owner";
      if (c->run("reserve", {&key, &owner}) != 1) throw std::runtime_error("reserved already");
      const std::string value = bench::Payload{}(n);
      c->run("store", {&key, &value});
    };
  }

 private:
  std::string conninfo_;
  Op op_;
};
#endif

std::unique_ptr<Side> make_side(const Case& c, bool library, const Settings& s) {
  const std::string dir = s.count("dir") ? s.at("dir") : "";
  switch (c.store) {
    case Store::memory:
      if (!library) return std::make_unique<MemoryBaseline>(c.op);
      return std::make_unique<Library<cs::InMemoryStorage>>(cs::InMemoryStorage(), c.op, nullptr);
    case Store::fs:
    case Store::fs_not_durable: {
      const bool durable = c.store == Store::fs;
      if (!library) return std::make_unique<FsBaseline>(dir, c.op, durable);
      cs::FileSystemOptions o;
      o.root = dir;
      o.durable = durable;
      return std::make_unique<Library<cs::FileSystemStorage>>(cs::FileSystemStorage(o), c.op,
                                                              nullptr);
    }
    case Store::redis:
#if defined(CACHESERIALIZE_BENCH_REDIS)
    {
      const int port = std::stoi(s.at("redis_port"));
      if (!library) return std::make_unique<RedisBaseline>(port, c.op);
      cs::RedisOptions o;
      o.port = port;
      o.key_prefix = "lib:";
      o.pool_size = std::max<std::size_t>(8, std::stoul(s.at("threads")));
      o.connect_timeout = o.command_timeout = std::chrono::seconds(5);
      return std::make_unique<Library<cs::RedisStorage>>(
          cs::RedisStorage(o), c.op, [](const cs::RedisStorage& st) {
            const cs::RedisStats stats = st.stats();
            return stats.round_trips - stats.connects;  // less the handshakes, one per connect
          });
    }
#else
      break;
#endif
    case Store::pg:
#if defined(CACHESERIALIZE_BENCH_POSTGRES)
    {
      if (!library) return std::make_unique<PgBaseline>(s.at("conninfo"), c.op);
      cs::PostgresOptions o;
      o.conninfo = s.at("conninfo");
      o.schema = "load";
      o.pool_size = std::max<std::size_t>(4, std::stoul(s.at("threads")));
      return std::make_unique<Library<cs::PostgresStorage>>(
          cs::PostgresStorage(o), c.op,
          [](const cs::PostgresStorage& st) { return st.round_trips(); });
    }
#else
      break;
#endif
  }
  throw std::runtime_error("this binary was built without the storage of " + c.name);
}

struct ThreadResult {
  Histogram histogram;
  std::uint64_t calls = 0;
  std::string error;
};

/// The first key of a thread's misses: no other thread, process or measurement uses its range
/// of 2^24 keys, and all are above the hit keys (processes <= 256, threads <= 64).
std::int64_t miss_base(const Settings& s, int thread, bool warm_up) {
  const std::int64_t id = std::stoll(s.at("measurement")) * 2 + (warm_up ? 1 : 0);
  return (std::int64_t{1} << 40) + (((id * 256 + std::stoll(s.at("index"))) * 64 + thread) << 24);
}

/// A worker: `--worker`, settings on stdin, results on stdout. @return the exit status.
int worker_main() {
  std::string line;
  Settings s;
  while (std::getline(std::cin, line) && line != "end") {
    const auto eq = line.find('=');
    if (eq != std::string::npos) s[line.substr(0, eq)] = line.substr(eq + 1);
  }
  // Dies with the parent, even a killed one (then nothing is left to report to).
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != static_cast<pid_t>(std::stol(s.at("parent")))) return 1;
  try {
    const std::vector<Case> cases = all_cases();
    const auto found = std::find_if(cases.begin(), cases.end(),
                                    [&](const Case& k) { return k.name == s.at("case"); });
    if (found == cases.end()) throw std::runtime_error("no case " + s.at("case"));
    const Case& c = *found;
    const bool library = s.at("side") == "library";
    const int threads = std::stoi(s.at("threads"));
    const std::int64_t keys = std::stoll(s.at("keys"));
    std::unique_ptr<Side> side = make_side(c, library, s);
    // The threads connect and warm up together, so that each has its own pooled connection
    // before the start (a connection's handshake is not a call's round trip), then wait for it.
    std::mutex mu;
    std::condition_variable cv;
    int warm = 0;
    bool go = false;
    Clock::time_point start;
    Clock::time_point end;
    std::vector<ThreadResult> results(static_cast<std::size_t>(threads));
    std::vector<std::thread> running;
    for (int t = 0; t < threads; ++t) {
      running.emplace_back([&, t] {
        ThreadResult& r = results[static_cast<std::size_t>(t)];
        std::uint64_t x = std::uint64_t{0x9e3779b97f4a7c15} * static_cast<std::uint64_t>(t + 1) +
                          static_cast<std::uint64_t>(::getpid());
        const std::int64_t first_miss = miss_base(s, t, false);
        Call call;
        try {
          call = side->caller();
          for (std::int64_t i = 0; i < kWarmUpCalls; ++i) {
            call(c.op == Op::miss ? miss_base(s, t, true) + i : kHotKey);
          }
        } catch (const std::exception& e) {
          r.error = e.what();
        }
        {
          std::unique_lock<std::mutex> lock(mu);
          ++warm;
          cv.notify_all();
          cv.wait(lock, [&] { return go; });
        }
        if (!r.error.empty() || start == Clock::time_point()) return;  // no start: aborted
        std::this_thread::sleep_until(start);
        try {
          for (std::int64_t i = 0;; ++i) {
            const Clock::time_point t0 = Clock::now();
            if (t0 >= end) break;
            std::int64_t n = kHotKey;
            if (c.op == Op::miss) {
              n = first_miss + i;
            } else if (c.op == Op::hit_keys) {
              x ^= x << 13;
              x ^= x >> 7;
              x ^= x << 17;
              n = static_cast<std::int64_t>(x % static_cast<std::uint64_t>(keys));
            }
            call(n);
            r.histogram.add(static_cast<std::uint64_t>((Clock::now() - t0).count()));
            ++r.calls;
          }
        } catch (const std::exception& e) {
          r.error = e.what();
        }
      });
    }
    auto release = [&](Clock::time_point at) {
      std::lock_guard<std::mutex> lock(mu);
      start = at;
      end = at + std::chrono::duration_cast<Clock::duration>(
                     std::chrono::duration<double>(std::stod(s.at("seconds"))));
      go = true;
      cv.notify_all();
    };
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return warm == threads; });
    }
    const std::uint64_t round_trips = side->round_trips();
    const std::uint64_t answered = side->answered();
    bool warmed = true;
    for (const ThreadResult& r : results) warmed = warmed && r.error.empty();
    if (warmed) std::cout << "ready" << std::endl;
    if (warmed && std::getline(std::cin, line) && line.rfind("go ", 0) == 0) {
      release(Clock::time_point(Clock::duration(std::stoll(line.substr(3)))));
    } else {
      release(Clock::time_point());
    }
    for (std::thread& t : running) t.join();
    Histogram all;
    std::uint64_t total = 0;
    if (start == Clock::time_point()) {
      for (const ThreadResult& r : results) {
        if (!r.error.empty()) throw std::runtime_error(r.error);
      }
      return 1;  // the parent went away before the start
    }
    for (const ThreadResult& r : results) {
      if (!r.error.empty()) throw std::runtime_error(r.error);
      all.merge(r.histogram);
      total += r.calls;
    }
    std::cout << "result " << total << " " << side->round_trips() - round_trips << " "
              << (library ? side->answered() - answered : total) << "\n";
    for (std::size_t i = 0; i < all.counts().size(); ++i) {
      if (all.counts()[i] != 0) std::cout << "h " << i << " " << all.counts()[i] << "\n";
    }
    std::cout << "end" << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cout << "error " << e.what() << std::endl;
    return 1;
  }
}

// ---- the parent --------------------------------------------------------------------------------

struct Config {
  int processes = 8;
  int threads = 2;
  double seconds = 3;
  std::int64_t keys = 10000;
  int repetitions = 5;
  bool quick = false;
  std::string filter;  // a substring of the case names
  std::string regex;   // --benchmark_filter (bench/run.sh's extra flags)
};

using bench::TempDir;

/// Runs `store(k)` for k in 0..keys-1 on 4 threads: the hit keys, before any measurement.
void store_keys(std::int64_t keys, const std::function<void(std::int64_t)>& store) {
  std::vector<std::thread> threads;
  std::vector<std::string> errors(4);
  for (std::size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (std::int64_t k = static_cast<std::int64_t>(t); k < keys && g_signal == 0; k += 4) {
          store(k);
        }
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  throw_if_interrupted();
  for (const std::string& e : errors) {
    if (!e.empty()) throw std::runtime_error("storing the hit keys: " + e);
  }
}

/// The parent's servers and directories, made for the stores whose cases run; removed at exit.
class World {
 public:
  explicit World(const Config& config) : config_(config), dir_("cacheserialize-bench-load") {}

  /// Starts `store`'s server and stores the hit keys. @return why it cannot run, or "".
  std::string prepare(Store store) {
    if (ready_.count(store)) return ready_[store];
    std::string why;
    try {
      make(store);
    } catch (const std::exception& e) {
      why = e.what();
    }
    return ready_[store] = why;
  }

  /// The settings of a worker of `side` for case `c`; `measurement` numbers it in the run.
  Settings settings(const Case& c, bool library, int measurement) {
    Settings s;
    s["case"] = c.name;
    s["side"] = library ? "library" : "baseline";
    s["threads"] = std::to_string(config_.threads);
    s["seconds"] = std::to_string(config_.seconds);
    s["keys"] = std::to_string(config_.keys);
    s["measurement"] = std::to_string(measurement);
    s["parent"] = std::to_string(::getpid());
    if (c.store == Store::fs || c.store == Store::fs_not_durable) {
      s["dir"] = dir_.path() + (library ? "/library" : "/baseline");
      if (c.op == Op::miss) s["dir"] = miss_dir(c.store, library);
    }
#if defined(CACHESERIALIZE_BENCH_REDIS)
    if (redis_) s["redis_port"] = std::to_string(redis_->port());
#endif
#if defined(CACHESERIALIZE_BENCH_POSTGRES)
    if (pg_) s["conninfo"] = pg_->info().conninfo();
#endif
    return s;
  }

  /// Removes the files a measurement's misses wrote, keeping the directories (as a cache in use
  /// has them: making its subdirectories is a first use's cost, not a miss's).
  void clean(const Settings& s) {
    if (s.count("dir") && s.at("dir").find("/miss-") != std::string::npos)
      remove_files(s.at("dir"));
  }

 private:
  template <class Storage>
  static void store_library_keys(Storage storage, std::int64_t keys) {
    auto fn = cs::serialize_cached(bench::Payload{}, cs::TaskOptions{"payload", "1"},
                                   cs::ReservationManager<cs::SystemClock, Storage>(storage));
    store_keys(keys, [&fn](std::int64_t k) { check_payload(fn(k).size()); });
  }

  std::string miss_dir(Store store, bool library) const {
    return dir_.path() + "/miss-" + store_name(store) + (library ? "-library" : "-baseline");
  }

  static void remove_files(const std::string& dir) {
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      if (!e.is_directory()) fs::remove(e.path());
    }
  }

  // The misses' directories, the library's with its subdirectories made (by storing keys
  // enough to reach each of them with near certainty; fewer under --quick), then emptied of
  // files.
  void make_miss_dirs(Store store) {
    fs::create_directories(miss_dir(store, false));
    cs::FileSystemOptions o;
    o.root = miss_dir(store, true);
    o.durable = false;
    fs::create_directories(o.root);
    store_library_keys(cs::FileSystemStorage(o), config_.quick ? 100 : 3000);
    remove_files(o.root);
  }

  void make(Store store) {
    switch (store) {
      case Store::memory:
        return;
      case Store::fs_not_durable:
        make_miss_dirs(store);
        return;
      case Store::fs: {
        // The hit keys, in the library's files and the baseline's. Written without fsync: the
        // files are the same either way, and a hit never syncs.
        const std::string library = dir_.path() + "/library";
        const std::string baseline = dir_.path() + "/baseline";
        fs::create_directories(library);
        fs::create_directories(baseline);
        cs::FileSystemOptions o;
        o.root = library;
        o.durable = false;
        store_library_keys(cs::FileSystemStorage(o), config_.keys);
        make_miss_dirs(store);
        for (std::int64_t k = 0; k < config_.keys; ++k) {
          const std::string path = baseline + "/" + std::to_string(k);
          const std::string value = bench::Payload{}(k);
          std::FILE* f = std::fopen(path.c_str(), "wb");
          if (!f || std::fwrite(value.data(), 1, value.size(), f) != value.size()) {
            fail_errno("write " + path);
          }
          std::fclose(f);
        }
        return;
      }
      case Store::redis:
#if defined(CACHESERIALIZE_BENCH_REDIS)
      {
        redis_ = std::make_unique<test::RedisServer>();
        cs::RedisOptions o = redis_->options("lib:");
        store_library_keys(cs::RedisStorage(o), config_.keys);
        test::RawRedis raw(redis_->port());
        std::vector<std::string> mset = {"MSET"};
        for (std::int64_t k = 0; k < config_.keys; ++k) {
          mset.push_back("raw:" + std::to_string(k));
          mset.push_back(bench::Payload{}(k));
        }
        raw.command(mset);
        return;
      }
#else
        break;
#endif
      case Store::pg:
#if defined(CACHESERIALIZE_BENCH_POSTGRES)
      {
        pg_ = bench::pg_bench::start_server();
        cs::PostgresOptions o;
        o.conninfo = pg_->info().conninfo();
        o.schema = "load";
        store_library_keys(cs::PostgresStorage(o), config_.keys);
        bench::pg_bench::Connection raw(o.conninfo);
        const std::string t = kPgTable;
        raw.exec("CREATE TABLE " + t + " (key text PRIMARY KEY, value text, owner text)");
        raw.exec("INSERT INTO " + t + " SELECT g::text, repeat('a', " +
                 std::to_string(bench::kPayloadBytes) + "), NULL FROM generate_series(0, " +
                 std::to_string(config_.keys - 1) + ") g");
        return;
      }
#else
        break;
#endif
    }
    throw std::runtime_error(std::string("this binary was built without ") + store_name(store));
  }

  const Config& config_;
  TempDir dir_;  // the file stores' directories
#if defined(CACHESERIALIZE_BENCH_REDIS)
  std::unique_ptr<test::RedisServer> redis_;
#endif
#if defined(CACHESERIALIZE_BENCH_POSTGRES)
  std::unique_ptr<test::pg::Server> pg_;
#endif
  std::map<Store, std::string> ready_;
};

/// A worker process with a pipe on its stdin and one on its stdout. Killed and reaped by the
/// destructor if it is still running.
class WorkerProcess {
 public:
  explicit WorkerProcess(const Settings& settings) {
    int in[2];
    int out[2];
    if (::pipe2(in, O_CLOEXEC) != 0) fail_errno("pipe2");
    if (::pipe2(out, O_CLOEXEC) != 0) {
      ::close(in[0]);
      ::close(in[1]);
      fail_errno("pipe2");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    char exe[] = "/proc/self/exe";
    char flag[] = "--worker";
    char* argv[] = {exe, flag, nullptr};
    const int rc = ::posix_spawn(&pid_, exe, &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
    if (rc != 0) {
      pid_ = -1;
      throw std::runtime_error(std::string("cannot start a worker: ") + std::strerror(rc));
    }
    std::string text;
    for (const auto& kv : settings) text += kv.first + "=" + kv.second + "\n";
    send(text + "end\n");
  }
  ~WorkerProcess() {
    if (stdin_ >= 0) ::close(stdin_);
    if (stdout_ >= 0) ::close(stdout_);
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  void send(const std::string& text) {
    if (::write(stdin_, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
      fail_errno("writing to a worker");
    }
  }

  /// @return the next line of the worker's stdout; throws at its end, after `deadline` or on a
  ///         signal.
  std::string read_line(Clock::time_point deadline) {
    for (;;) {
      const auto nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        if (line.rfind("error ", 0) == 0) throw std::runtime_error("a worker: " + line.substr(6));
        return line;
      }
      throw_if_interrupted();
      if (Clock::now() > deadline) throw std::runtime_error("a worker did not answer in time");
      pollfd p{stdout_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[65536];
      const ssize_t n = ::read(stdout_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error("a worker ended without a result");
      buffer_.append(buf, static_cast<std::size_t>(n));
    }
  }

  /// Waits for the worker to exit. @return whether it exited with 0.
  bool exited_well() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0) {
      if (errno != EINTR) return false;
    }
    pid_ = -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  std::string buffer_;
};

/// What one measurement of one side gave, over all its processes and threads.
struct Measured {
  std::uint64_t calls = 0;
  std::uint64_t round_trips = 0;
  std::uint64_t answered = 0;
  Histogram histogram;
};

Measured measure(World& world, const Config& config, const Case& c, bool library, int measurement) {
  const Settings settings = world.settings(c, library, measurement);
  Measured m;
  {
    std::vector<std::unique_ptr<WorkerProcess>> workers;
    for (int i = 0; i < config.processes; ++i) {
      Settings s = settings;
      s["index"] = std::to_string(i);
      workers.push_back(std::make_unique<WorkerProcess>(s));
    }
    const auto setup = Clock::now() + std::chrono::seconds(120);
    for (auto& w : workers) {
      if (w->read_line(setup) != "ready") throw std::runtime_error("a worker is not ready");
    }
    // A common start, a little later, so that every process's threads start together.
    const Clock::time_point start = Clock::now() + std::chrono::milliseconds(100);
    for (auto& w : workers) {
      w->send("go " + std::to_string(start.time_since_epoch().count()) + "\n");
    }
    const auto done = start + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(config.seconds + 120));
    for (auto& w : workers) {
      std::istringstream result(w->read_line(done));
      std::string word;
      std::uint64_t calls = 0;
      std::uint64_t round_trips = 0;
      std::uint64_t answered = 0;
      if (!(result >> word >> calls >> round_trips >> answered) || word != "result") {
        throw std::runtime_error("a worker's result is garbled");
      }
      m.calls += calls;
      m.round_trips += round_trips;
      m.answered += answered;
      for (std::string line; (line = w->read_line(done)) != "end";) {
        std::istringstream h(line);
        std::size_t i = 0;
        std::uint64_t n = 0;
        if (!(h >> word >> i >> n) || word != "h") throw std::runtime_error("garbled: " + line);
        m.histogram.add(i, n);
      }
      if (!w->exited_well()) throw std::runtime_error("a worker failed");
    }
  }
  world.clean(settings);
  if (m.calls == 0) throw std::runtime_error(c.name + ": no call completed");
  const char* side = library ? "library" : "baseline";
  if (m.answered != m.calls) {
    throw std::runtime_error(c.name + " (" + side + "): " + std::to_string(m.answered) +
                             (c.op == Op::miss ? " executions" : " hits") + " in " +
                             std::to_string(m.calls) + " calls");
  }
  const std::uint64_t expected = library ? expected_round_trips(c) : 0;
  if (expected != 0 && m.round_trips != expected * m.calls) {
    throw std::runtime_error(c.name + ": the storage counted " + std::to_string(m.round_trips) +
                             " round trips in " + std::to_string(m.calls) + " calls, expected " +
                             std::to_string(expected) + " per call");
  }
  return m;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

std::string fixed(double x, int digits) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(digits) << x;
  return out.str();
}

std::string micros(double ns) {
  if (ns < 1000) return fixed(ns, 0) + " ns";
  return fixed(ns / 1000, ns < 10000 ? 1 : 0) + " us";
}

/// Per case and side, each repetition's figures.
struct Figures {
  std::vector<double> rate[2];  // calls/s; [0] baseline, [1] library
  std::vector<double> p50[2];
  std::vector<double> p99[2];
  std::vector<double> ratio;  // library/baseline calls/s of each repetition
  std::uint64_t calls = 0;    // library calls, and their round trips
  std::uint64_t round_trips = 0;
};

/// @return whether the POSIX extended regular expression `pattern` matches part of `text`
///         (POSIX regex rather than std::regex, whose libstdc++ code warns under sanitizers).
bool matches(const std::string& pattern, const std::string& text) {
  regex_t re;
  if (::regcomp(&re, pattern.c_str(), REG_EXTENDED | REG_NOSUB) != 0) {
    throw std::invalid_argument("bench_load: --benchmark_filter is not a regular expression: " +
                                pattern);
  }
  const bool found = ::regexec(&re, text.c_str(), 0, nullptr, 0) == 0;
  ::regfree(&re);
  return found;
}

bool parse_flag(const std::string& arg, const char* name, std::string* value) {
  const std::string prefix = std::string("--") + name + "=";
  if (arg.rfind(prefix, 0) != 0) return false;
  *value = arg.substr(prefix.size());
  return true;
}

int parent_main(int argc, char** argv) {
  Config config;
  if (const char* r = std::getenv("REPETITIONS")) config.repetitions = std::atoi(r);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    std::string v;
    try {
      if (arg == "--quick") {
        config.quick = true;
      } else if (arg == "--list_probes") {
        return 0;  // bench/run.sh --callgrind: no probe, since this measures processes
      } else if (parse_flag(arg, "processes", &v)) {
        config.processes = std::stoi(v);
      } else if (parse_flag(arg, "threads", &v)) {
        config.threads = std::stoi(v);
      } else if (parse_flag(arg, "seconds", &v)) {
        config.seconds = std::stod(v);
      } else if (parse_flag(arg, "keys", &v)) {
        config.keys = std::stoll(v);
      } else if (parse_flag(arg, "filter", &v)) {
        config.filter = v;
      } else if (parse_flag(arg, "benchmark_filter", &v)) {
        config.regex = v;
      } else if (parse_flag(arg, "benchmark_repetitions", &v)) {
        config.repetitions = std::stoi(v);
      } else if (arg.rfind("--benchmark_", 0) == 0) {
        // Other Google Benchmark flags from bench/run.sh (random interleaving: done anyway).
      } else {
        throw std::invalid_argument("unknown argument");
      }
    } catch (const std::exception&) {
      std::fprintf(stderr, "bench_load: bad argument %s (see the comment atop bench_load.cpp)\n",
                   arg.c_str());
      return 2;
    }
  }
  if (config.quick) {
    config.processes = 2;
    config.threads = 1;
    config.seconds = 0.2;
    config.keys = 100;
    config.repetitions = 1;
  }
  if (config.processes < 1 || config.processes > 256 || config.threads < 1 || config.threads > 64 ||
      !(config.seconds > 0) || config.keys < 1 || config.repetitions < 1) {
    std::fprintf(stderr,
                 "bench_load: need 1..256 processes, 1..64 threads, seconds > 0, keys >= 1, "
                 "repetitions >= 1\n");
    return 2;
  }

  std::vector<Case> cases;
  for (const Case& c : all_cases()) {
    if (c.name.find(config.filter) == std::string::npos) continue;
    if (!config.regex.empty() && !matches(config.regex, c.name)) continue;
    cases.push_back(c);
  }

  World world(config);
  std::map<std::string, std::string> skipped;
  bool failed = false;
  for (const Case& c : cases) {
    skipped[c.name] = world.prepare(c.store);
    throw_if_interrupted();
    if (!skipped[c.name].empty()) {
      std::fprintf(stderr, "bench_load: %s cannot run: %s\n", c.name.c_str(),
                   skipped[c.name].c_str());
      if (test::servers_required()) failed = true;
    }
  }

  std::map<std::string, Figures> figures;
  std::mt19937 random(std::random_device{}());
  int measurement = 0;
  for (int rep = 0; rep < config.repetitions; ++rep) {
    for (const Case& c : cases) {
      if (!skipped[c.name].empty()) continue;
      Figures& f = figures[c.name];
      const bool library_first = random() % 2 == 0;
      double rate[2] = {0, 0};
      for (bool library : {library_first, !library_first}) {
        const Measured m = measure(world, config, c, library, ++measurement);
        const int i = library ? 1 : 0;
        rate[i] = static_cast<double>(m.calls) / config.seconds;
        f.rate[i].push_back(rate[i]);
        f.p50[i].push_back(m.histogram.percentile(50));
        f.p99[i].push_back(m.histogram.percentile(99));
        if (library) {
          f.calls += m.calls;
          f.round_trips += m.round_trips;
        }
      }
      f.ratio.push_back(rate[1] / rate[0]);
    }
  }

  std::cout << "\n## bench_load: " << config.processes << " processes x " << config.threads
            << " threads, " << config.seconds << " s per measurement, median of "
            << config.repetitions << " (" << std::thread::hardware_concurrency() << " CPUs"
            << (config.quick ? ", --quick: figures are not meaningful" : "") << ")\n\n"
            << "| case | baseline | calls/s lib | calls/s baseline | ratio | p50 lib | p50 "
               "baseline | p99 lib | p99 baseline | round trips/call lib | target | met |\n"
            << "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (const Case& c : cases) {
    std::cout << "| " << c.name << " | " << c.baseline << " |";
    if (!skipped[c.name].empty()) {
      std::cout << " skipped: " << skipped[c.name] << " |\n";
      continue;
    }
    Figures& f = figures[c.name];
    const double ratio = median(f.ratio);
    std::cout << " " << fixed(median(f.rate[1]), 0) << " | " << fixed(median(f.rate[0]), 0) << " | "
              << fixed(ratio, 2) << "x | " << micros(median(f.p50[1])) << " | "
              << micros(median(f.p50[0])) << " | " << micros(median(f.p99[1])) << " | "
              << micros(median(f.p99[0])) << " | "
              << (expected_round_trips(c)
                      ? fixed(static_cast<double>(f.round_trips) / static_cast<double>(f.calls), 2)
                      : "-")
              << " | " << (c.target > 0 ? ">= " + fixed(c.target, 2) + "x" : "-") << " | "
              << (c.target > 0 ? (ratio >= c.target ? "yes" : "**no**") : "-") << " |\n";
  }
  std::cout << std::flush;
  return failed ? 1 : 0;
}

extern "C" void on_signal(int sig) { g_signal = sig; }

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--worker") == 0) return worker_main();
  struct sigaction sa {};
  sa.sa_handler = on_signal;  // no SA_RESTART: a wait returns to look at the flag
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a worker that died: its write fails, it is reported
  try {
    return parent_main(argc, argv);
  } catch (const Interrupted&) {
    std::fprintf(stderr, "bench_load: interrupted; servers and directories removed\n");
    return 128 + g_signal;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_load: %s\n", e.what());
    return 1;
  }
}
