// The in-process library (InMemoryStorage, SystemClock unless said otherwise) against its
// baselines: hits against a std::mutex + std::unordered_map, misses and wake-ups against a
// minimal single-flight of std::shared_future, heartbeats against calling extend directly.
//
// Key encoding is inside the measured region on both sides of every comparison: the library
// encodes the call's arguments into a Key (KeySchema::make), the baselines encode the same
// bytes into a std::string (bench::KeyBytes), and a mismatch stops the binary.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common.hpp"
#include "keep_alive.hpp"
#include "storage_bench.hpp"

namespace {

namespace cs = cacheserialize;
using namespace std::chrono_literals;
using Value = std::int64_t;

/// The trivial body: the cost of what is cached is not what is measured.
struct Square {
  Value operator()(std::int64_t n) const { return n * n; }
};

enum class Variant { direct, mutex_map, single_flight, cacheserialize };

const char* name_of(Variant v) {
  static const char* const names[] = {"direct", "mutex_map", "single_flight", "cacheserialize"};
  return names[static_cast<int>(v)];
}

using Wrapped = decltype(cs::serialize_cached(Square{}, cs::TaskOptions{"square", "1"},
                                              std::declval<cs::ReservationManager<>>()));

/// A wrapped task and the baselines' key bytes for it, checked to be the same bytes.
struct Task {
  Task(const std::string& name, cs::ReservationManager<> manager)
      : fn(cs::serialize_cached(Square{}, cs::TaskOptions{name, "1"}, std::move(manager))),
        bytes(name, derived_interface(name), "1", 1) {
    for (std::int64_t n : {0, 1, 4242, -7}) {
      if (bytes.make(n) != fn.key(n).encoded()) {
        std::fprintf(stderr, "bench: the baseline's key bytes differ from the library's\n");
        std::abort();
      }
    }
  }
  static std::string derived_interface(const std::string& name) {
    return cs::KeySchema<Value(std::int64_t)>(cs::TaskSignature{name, ""}, "1")
        .signature()
        .interface;
  }

  Wrapped fn;
  bench::KeyBytes bytes;
};

// ---- hits ------------------------------------------------------------------------------------

constexpr std::int64_t kManyKeys = 10000;

struct HitWorld {
  HitWorld() : task("hit", cs::ReservationManager<>(storage)) {
    for (std::int64_t n = 0; n < kManyKeys; ++n) {
      task.fn(n);
      floor.put(task.bytes.make(n), Square{}(n));
    }
  }
  cs::InMemoryStorage storage;
  Task task;
  bench::MutexMap<Value> floor;
};

HitWorld& hit_world() {
  static HitWorld world;  // built by the first thread to get here; the others wait
  return world;
}

template <Variant V>
void hit(benchmark::State& state, std::int64_t keys) {
  HitWorld& w = hit_world();
  // Each thread walks all keys in its own order (7919 is prime to 10000).
  std::int64_t n = keys == 1 ? 42 : (state.thread_index() * 1237) % keys;
  for (auto _ : state) {
    if constexpr (V == Variant::direct) {
      benchmark::DoNotOptimize(Square{}(n));
    } else if constexpr (V == Variant::mutex_map) {
      benchmark::DoNotOptimize(w.floor.get(w.task.bytes.make(n)));
    } else {
      benchmark::DoNotOptimize(w.task.fn(n));
    }
    if (keys > 1) {
      n += 7919;
      if (n >= keys) n -= keys;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

// ---- misses ----------------------------------------------------------------------------------

/// Unique keys, trivial body. Outputs pile up in both caches, so every kBatch calls both are
/// emptied outside the measured region.
struct MissWorld {
  MissWorld() : task("miss", cs::ReservationManager<>(storage)) {
    task.fn(-1);  // starts the manager's heartbeat thread, once
  }
  cs::InMemoryStorage storage;
  Task task;
  bench::SingleFlight<Value> flight;
  std::atomic<std::int64_t> next{0};
};

MissWorld& miss_world() {
  static MissWorld world;
  return world;
}

template <Variant V>
void miss(benchmark::State& state) {
  constexpr std::int64_t kBatch = 4096;
  MissWorld& w = miss_world();
  const std::int64_t threads_before = bench::threads_created();
  std::int64_t first = w.next.fetch_add(kBatch);
  std::int64_t n = first;
  for (auto _ : state) {
    if constexpr (V == Variant::direct) {
      benchmark::DoNotOptimize(Square{}(n));
    } else if constexpr (V == Variant::single_flight) {
      benchmark::DoNotOptimize(
          w.flight.get_or_run(w.task.bytes.make(n), [n] { return Square{}(n); }));
    } else {
      benchmark::DoNotOptimize(w.task.fn(n));
    }
    if (++n == first + kBatch) {
      state.PauseTiming();
      if constexpr (V == Variant::single_flight) {
        if (state.thread_index() == 0) w.flight.clear();
      } else if constexpr (V == Variant::cacheserialize) {
        for (std::int64_t m = first; m < n; ++m) w.storage.erase(w.task.fn.key(m));
      }
      first = n = w.next.fetch_add(kBatch);
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations());
  // GB starts the other threads of a multi-threaded run around this one, so the count is only
  // meaningful with one.
  if (state.threads() == 1 && threads_before >= 0) {
    const auto created = bench::threads_created() - threads_before;
    state.counters["threads_created"] = static_cast<double>(created);
    if (created != 0) state.SkipWithError("threads were created during the measured calls");
  }
}

// ---- waking a waiter -------------------------------------------------------------------------

/// A thread that makes one blocking call at a time on request, and says when it returned.
class Waiter {
 public:
  explicit Waiter(std::function<void(std::int64_t)> call)
      : call_(std::move(call)), thread_([this] { run(); }) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return tid_ != 0; });
  }
  ~Waiter() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  /// Starts `call(n)` on the waiter thread and returns once the thread is asleep inside it and
  /// `blocked()` holds.
  /// @throws std::runtime_error if that takes more than 10 s.
  template <class Blocked>
  void start(std::int64_t n, Blocked blocked) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = n;
      done_ = false;
      in_call_.store(false);
    }
    cv_.notify_all();
    const auto bound = std::chrono::steady_clock::now() + 10s;
    while (!(in_call_.load() && blocked() && bench::thread_state(tid_) == 'S')) {
      if (std::chrono::steady_clock::now() > bound) {
        throw std::runtime_error("the waiter did not block within 10 s");
      }
      std::this_thread::sleep_for(20us);
    }
  }

  /// @return when the call returned, once it has.
  std::chrono::steady_clock::time_point finish() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, 10s, [&] { return done_; })) {
      throw std::runtime_error("the waiter was not woken within 10 s");
    }
    return returned_;
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mu_);
    tid_ = bench::current_tid();
    cv_.notify_all();
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || job_; });
      if (stop_) return;
      const std::int64_t n = *job_;
      job_.reset();
      lock.unlock();
      in_call_.store(true);
      call_(n);
      const auto t = std::chrono::steady_clock::now();
      lock.lock();
      returned_ = t;
      done_ = true;
      cv_.notify_all();
    }
  }

  std::function<void(std::int64_t)> call_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<std::int64_t> job_;
  bool done_ = false;
  bool stop_ = false;
  long tid_ = 0;
  std::atomic<bool> in_call_{false};
  std::chrono::steady_clock::time_point returned_;
  std::thread thread_;
};

void report_latencies(benchmark::State& state, std::vector<double> us) {
  state.counters["p50_us"] = bench::percentile(us, 50);
  state.counters["p90_us"] = bench::percentile(us, 90);
  state.counters["p99_us"] = bench::percentile(us, 99);
  state.counters["min_us"] = bench::percentile(us, 0);
  state.counters["max_us"] = bench::percentile(us, 100);
}

/// The holder stores (or fulfils the promise) at t0; the waiter, asleep in the same call, has
/// returned at t1. Each iteration's time is t1 - t0.
template <Variant V>
void wakeup(benchmark::State& state) {
  cs::InMemoryStorage storage;
  cs::ReservationManager<> manager(storage);
  Task task("wakeup", manager);
  bench::SingleFlight<Value> flight;
  Waiter waiter([&](std::int64_t n) {
    if constexpr (V == Variant::single_flight) {
      benchmark::DoNotOptimize(flight.get_or_run(task.bytes.make(n), [n] { return n; }));
    } else {
      benchmark::DoNotOptimize(task.fn(n));
    }
  });
  std::vector<double> us;
  std::vector<double> store_us;  // the holder's own call: store, or set_value
  std::int64_t n = 0;
  try {
    for (auto _ : state) {
      ++n;
      std::chrono::steady_clock::time_point t0;
      std::chrono::steady_clock::time_point stored;
      if constexpr (V == Variant::single_flight) {
        std::promise<Value> holder = flight.hold(task.bytes.make(n));
        waiter.start(n, [] { return true; });
        t0 = std::chrono::steady_clock::now();
        holder.set_value(Square{}(n));
        stored = std::chrono::steady_clock::now();
      } else {
        auto claim = manager.claim(task.fn.key(n));
        const std::uint64_t waits = manager.stats().waits;
        waiter.start(n, [&] { return manager.stats().waits > waits; });
        cs::StoredOutput out = cs::StoredOutput::from_object(std::make_shared<const Value>(n * n));
        t0 = std::chrono::steady_clock::now();
        claim.hold().store(std::move(out));
        stored = std::chrono::steady_clock::now();
      }
      const double seconds = std::chrono::duration<double>(waiter.finish() - t0).count();
      state.SetIterationTime(seconds);
      us.push_back(seconds * 1e6);
      store_us.push_back(std::chrono::duration<double, std::micro>(stored - t0).count());
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  report_latencies(state, std::move(us));
  state.counters["holder_p50_us"] = bench::percentile(store_us, 50);
}

// ---- heartbeats ------------------------------------------------------------------------------

/// InMemoryStorage that notes which thread extends: the manager's heartbeat thread, whose CPU
/// clock the benchmark then reads.
using ObservedStorage = bench::HeartbeatObserved<cs::InMemoryStorage>;

enum class Due { together, spread };

/// One fake minute of heartbeats for `n` reservations held at once by one manager. The heartbeat
/// variant reports the heartbeat thread's CPU time (its own CPU clock) over the minute; the
/// baseline makes the same extensions by calling `extend` in a loop on the benchmark thread.
template <Variant V>
void heartbeat(benchmark::State& state, std::int64_t n, Due due) {
  using Manager = cs::ReservationManager<cs::ManualClock, ObservedStorage>;
  constexpr cs::Duration kInterval = 10s;
  constexpr int kRounds = 6;  // extensions per reservation in a minute
  for (auto _ : state) {
    const std::size_t threads_before = bench::thread_count();
    cs::ManualClock clock;
    ObservedStorage storage;
    cs::ManagerOptions options;
    options.heartbeat_interval = kInterval;
    Manager manager(storage, clock, options);
    try {
      // Warm-up: one reservation and one heartbeat, to learn the heartbeat thread.
      {
        auto warm = manager.claim(cs::Key("heartbeat-warm-up", "1", "0"));
        clock.advance(kInterval);
        const auto bound = std::chrono::steady_clock::now() + 10s;
        while (!storage.extender()) {
          if (std::chrono::steady_clock::now() > bound) throw std::runtime_error("no heartbeat");
          std::this_thread::sleep_for(100us);
        }
      }
      const pthread_t heartbeat_thread = *storage.extender();
      // Reservations acquired at one instant (all due together), or evenly over one interval
      // (each due on its own, as reservations taken at random times are).
      const cs::Duration step = due == Due::spread ? kInterval / n : cs::Duration(0);
      std::vector<Manager::claim_type> held;
      held.reserve(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i) {
        held.push_back(manager.claim(cs::Key("heartbeat", "1", std::to_string(i))));
        if (step.count() > 0) clock.advance(step);
      }
      if (!clock.wait_for_sleepers(1)) throw std::runtime_error("the heartbeat did not settle");
      const std::size_t added = bench::thread_count() - threads_before;
      if (added != 1) {
        throw std::runtime_error(std::to_string(added) + " threads for " + std::to_string(n) +
                                 " reservations; expected one heartbeat thread");
      }
      const std::uint64_t beats = manager.stats().heartbeats;
      const cs::Duration minute = kInterval * kRounds;

      std::chrono::nanoseconds cpu{};
      if constexpr (V == Variant::direct) {  // the baseline: the same extensions, in a loop
        const auto t0 = bench::thread_cpu_time();
        for (int r = 0; r < kRounds; ++r) {
          for (auto& c : held) {
            const cs::Reservation mine = c.hold().reservation();
            benchmark::DoNotOptimize(
                storage.extend(c.hold().key(), mine, clock.now(), kInterval * 3));
          }
        }
        cpu = bench::thread_cpu_time() - t0;
      } else {
        const auto t0 = bench::thread_cpu_time(heartbeat_thread);
        const cs::Duration tick = due == Due::spread ? step : kInterval;
        for (cs::Duration t{}; t < minute; t += tick) {
          clock.advance(tick);
          if (!clock.wait_for_sleepers(1)) throw std::runtime_error("the heartbeat is stuck");
        }
        cpu = bench::thread_cpu_time(heartbeat_thread) - t0;
        const std::uint64_t made = manager.stats().heartbeats - beats;
        if (made != static_cast<std::uint64_t>(n * kRounds)) {
          throw std::runtime_error("expected " + std::to_string(n * kRounds) +
                                   " extensions in the minute, the heartbeat made " +
                                   std::to_string(made));
        }
      }
      const double seconds = std::chrono::duration<double>(cpu).count();
      state.SetIterationTime(seconds);
      state.counters["cpu_ms_per_min"] = seconds * 1e3;
      state.counters["pct_of_a_core"] = seconds / 60.0 * 100.0;
      state.counters["us_per_extension"] = seconds * 1e6 / static_cast<double>(n * kRounds);
      state.counters["heartbeat_threads"] = static_cast<double>(added);
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      return;
    }
  }
}

/// The spread case's wake-ups alone: a thread that sleeps on the same ManualClock until each of
/// the same steps, and does nothing else. The heartbeat's CPU time beyond this and the extend
/// loop is its own bookkeeping.
void clock_wakeups(benchmark::State& state, std::int64_t n) {
  constexpr cs::Duration kInterval = 10s;
  const cs::Duration step = kInterval / n;
  const std::int64_t steps = 6 * n;  // one fake minute
  for (auto _ : state) {
    cs::ManualClock clock;
    std::atomic<std::int64_t> cpu_ns{0};
    std::thread sleeper([&] {
      cs::Signal never;
      const auto t0 = bench::thread_cpu_time();
      cs::TimePoint next = clock.now();
      for (std::int64_t i = 0; i < steps; ++i) clock.wait_until(never, next += step);
      cpu_ns = (bench::thread_cpu_time() - t0).count();
    });
    bool stuck = false;
    for (std::int64_t i = 0; i < steps && !stuck; ++i) {
      stuck = !clock.wait_for_sleepers(1);
      clock.advance(step);
    }
    if (stuck) clock.advance(std::chrono::hours(24 * 365));  // lets the sleeper finish
    sleeper.join();
    if (stuck) {
      state.SkipWithError("the sleeper did not settle");
      return;
    }
    const double seconds = static_cast<double>(cpu_ns.load()) / 1e9;
    state.SetIterationTime(seconds);
    state.counters["cpu_ms_per_min"] = seconds * 1e3;
    state.counters["pct_of_a_core"] = seconds / 60.0 * 100.0;
    state.counters["us_per_extension"] = seconds * 1e6 / static_cast<double>(steps);
  }
}

// ---- heartbeats at network latency (issue 12: 5) -----------------------------------------------

constexpr auto kRoundTrip = 2ms;

/// InMemoryStorage behind a network: every extension call, `extend` or a whole `extend_many`
/// batch, costs one round trip of kRoundTrip (a real sleep). Other operations cost none, so that
/// claiming 10,000 holds stays quick. Copies share the count.
class LatencyStorage : public ObservedStorage {
 public:
  cs::ExtendResult extend(const cs::Key& key, const cs::Reservation& mine, cs::TimePoint now,
                          cs::Duration ttl) {
    round_trip();
    return ObservedStorage::extend(key, mine, now, ttl);
  }
  std::vector<cs::ExtendResult> extend_many(const std::vector<cs::Extension>& batch,
                                            cs::TimePoint now) {
    round_trip();
    return ObservedStorage::extend_many(batch, now);
  }
  std::uint64_t round_trips() const { return trips_->load(); }

 private:
  void round_trip() {
    trips_->fetch_add(1);
    std::this_thread::sleep_for(kRoundTrip);
  }
  std::shared_ptr<std::atomic<std::uint64_t>> trips_ =
      std::make_shared<std::atomic<std::uint64_t>>(0);
};

/// The same without `extend_many`: the heartbeat extends one round trip per hold, as before.
class UnbatchedLatencyStorage : public LatencyStorage {
 public:
  std::vector<cs::ExtendResult> extend_many(const std::vector<cs::Extension>&,
                                            cs::TimePoint) = delete;
};

/// 10,000 holds, interval 1 s, grace 3, kRoundTrip per round trip, for `run_for` of real time.
template <class S>
void heartbeat_latency(benchmark::State& state, cs::Duration run_for) {
  for (auto _ : state) {
    try {
      S storage;
      bench::KeepAlive o;
      o.run_for = run_for;
      o.must_keep = cs::storage_traits<S>::extends_in_batches;
      bench::keep_alive(state, storage, o, [&] { return storage.round_trips(); });
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      return;
    }
  }
}

// ---- try_claim on InMemoryStorage (issue 11) ---------------------------------------------------

struct MemoryWorld {
  cs::ReservationManager<> manager;
};

bench::Fixture<MemoryWorld> memory_world([] { return std::make_unique<MemoryWorld>(); });

// ---- an engine's pool: blocking claims against try_claim rounds (issue 11) ----------------------

/// A fixed pool of worker threads over one queue, as a small engine has.
class Pool {
 public:
  explicit Pool(int threads) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : workers_) t.join();
  }
  void submit(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

constexpr int kPoolWorkers = 4;
constexpr int kPoolTasks = 200;
constexpr int kPoolShared = 150;  // tasks on one key, whose body takes 20 ms

struct PoolTask {
  cs::Key key;
  std::chrono::milliseconds body;
  std::string owner;
};

/// The 200 tasks of one makespan, on keys no other makespan uses, in a fixed shuffled order.
std::vector<PoolTask> pool_tasks() {
  static std::atomic<std::int64_t> next_run{0};
  const std::string run = std::to_string(next_run++);
  std::vector<PoolTask> tasks;
  for (int i = 0; i < kPoolTasks; ++i) {
    const bool shared = i < kPoolShared;
    tasks.push_back({cs::Key("pool", "1", run + "/" + (shared ? "shared" : std::to_string(i))),
                     shared ? 20ms : 2ms, "run-" + run + "/task-" + std::to_string(i)});
  }
  std::shuffle(tasks.begin(), tasks.end(), std::mt19937(11));
  return tasks;
}

struct PoolWorld {
  cs::ReservationManager<> manager;
  Pool pool{kPoolWorkers};
};

PoolWorld& pool_world() {
  static PoolWorld w;
  return w;
}

/// Counts finished tasks; the engine's thread waits on it.
struct Progress {
  std::mutex mu;
  std::condition_variable cv;
  int finished = 0;
  void add() {
    {
      std::lock_guard<std::mutex> lock(mu);
      ++finished;
    }
    cv.notify_all();
  }
};

/// Every task is a pool job that calls the blocking `claim()`: a worker whose task's key is held
/// sleeps until the holder stores.
void pool_blocking(benchmark::State& state) {
  PoolWorld& w = pool_world();
  for (auto _ : state) {
    const std::vector<PoolTask> tasks = pool_tasks();
    Progress progress;
    for (const PoolTask& t : tasks) {
      w.pool.submit([&w, &t, &progress] {
        cs::ClaimOptions options;
        options.owner = t.owner;
        auto claim = w.manager.claim(t.key, options);
        if (!claim.is_hit()) {
          auto hold = std::move(claim.hold());
          std::this_thread::sleep_for(t.body);
          hold.store_value(Value{1});
        }
        progress.add();
      });
    }
    std::unique_lock<std::mutex> lock(progress.mu);
    progress.cv.wait(lock, [&] { return progress.finished == kPoolTasks; });
  }
}

/// The engine's thread looks at every unfinished task once per round with `try_claim`: a hit is
/// done, an acquired key goes to the pool with its hold, a held one waits for a later round. A
/// round starts when a pool job finishes, or after 5 ms (a holder in another process).
void pool_rounds(benchmark::State& state) {
  PoolWorld& w = pool_world();
  std::int64_t rounds = 0;
  for (auto _ : state) {
    const std::vector<PoolTask> tasks = pool_tasks();
    std::vector<char> pending(tasks.size(), 1);  // neither done nor in the pool
    Progress progress;
    int done = 0;  // by hits, on this thread
    int seen = 0;  // progress.finished at the last round
    while (done + seen < kPoolTasks) {
      ++rounds;
      for (std::size_t i = 0; i < tasks.size(); ++i) {
        if (!pending[i]) continue;
        const PoolTask& t = tasks[i];
        cs::ClaimOptions options;
        options.owner = t.owner;
        auto r = w.manager.try_claim(t.key, options);
        if (r.is_hit()) {
          pending[i] = 0;
          ++done;
        } else if (r.is_acquired()) {
          pending[i] = 0;
          auto hold = std::make_shared<cs::ReservationManager<>::hold_type>(std::move(r.hold()));
          w.pool.submit([&t, &progress, hold] {
            std::this_thread::sleep_for(t.body);
            hold->store_value(Value{1});
            progress.add();
          });
        }  // held: next round
      }
      std::unique_lock<std::mutex> lock(progress.mu);
      progress.cv.wait_for(lock, 5ms, [&] { return progress.finished != seen; });
      seen = progress.finished;
    }
    std::unique_lock<std::mutex> lock(progress.mu);  // the last jobs' notifications
    progress.cv.wait(lock, [&] { return done + progress.finished == kPoolTasks; });
  }
  state.counters["rounds_per_makespan"] =
      static_cast<double>(rounds) / static_cast<double>(state.iterations());
}

}  // namespace

void bench::register_benchmarks() {
  // Hits.
  for (std::int64_t keys : {std::int64_t{1}, kManyKeys}) {
    const std::string name = keys == 1 ? "hit/1_key" : "hit/10000_keys";
    auto add = [&](Variant v, auto fn) {
      benchmark::RegisterBenchmark((name + "/" + name_of(v)).c_str(), fn, keys)
          ->Threads(1)
          ->Threads(2)
          ->Threads(8)
          ->UseRealTime();
    };
    add(Variant::direct, hit<Variant::direct>);
    add(Variant::mutex_map, hit<Variant::mutex_map>);
    add(Variant::cacheserialize, hit<Variant::cacheserialize>);
    bench::compare({name, "mutex_map", "", "<= 1.5x mutex_map at 1 thread; scales with threads",
                    1.5, 0, true});
    // The same single-threaded hits, for callgrind (bench/run.sh --callgrind).
    const std::string probe = keys == 1 ? "hit_1_key" : "hit_10000_keys";
    bench::probe(probe + "/mutex_map", [keys](std::int64_t calls) {
      HitWorld& w = hit_world();
      for (std::int64_t i = 0, n = 0; i < calls; ++i, n = (n + 7919) % keys) {
        benchmark::DoNotOptimize(w.floor.get(w.task.bytes.make(n)));
      }
    });
    bench::probe(probe + "/cacheserialize", [keys](std::int64_t calls) {
      HitWorld& w = hit_world();
      for (std::int64_t i = 0, n = 0; i < calls; ++i, n = (n + 7919) % keys) {
        benchmark::DoNotOptimize(w.task.fn(n));
      }
    });
  }

  // Misses.
  for (Variant v : {Variant::direct, Variant::single_flight, Variant::cacheserialize}) {
    auto fn = v == Variant::direct          ? miss<Variant::direct>
              : v == Variant::single_flight ? miss<Variant::single_flight>
                                            : miss<Variant::cacheserialize>;
    benchmark::RegisterBenchmark((std::string("miss/unique_keys/") + name_of(v)).c_str(), fn)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
  }
  bench::probe("miss_unique_keys/single_flight", [](std::int64_t calls) {
    MissWorld& w = miss_world();
    for (std::int64_t i = 0; i < calls; ++i) {
      const std::int64_t n = w.next++;
      benchmark::DoNotOptimize(w.flight.get_or_run(w.task.bytes.make(n), [n] { return n * n; }));
    }
  });
  bench::probe("miss_unique_keys/cacheserialize", [](std::int64_t calls) {
    MissWorld& w = miss_world();
    for (std::int64_t i = 0; i < calls; ++i) benchmark::DoNotOptimize(w.task.fn(w.next++));
  });
  bench::compare({"miss/unique_keys",
                  "single_flight",
                  "",
                  "<= 2x single_flight at 1 thread (issue 14), no thread created per call",
                  2.0,
                  0,
                  false,
                  {"threads_created"}});

  // Wake-up latency.
  const int samples = bench::scaled(1000, 20);
  benchmark::RegisterBenchmark("wakeup/after_store/single_flight", wakeup<Variant::single_flight>)
      ->UseManualTime()
      ->Iterations(samples);
  benchmark::RegisterBenchmark("wakeup/after_store/cacheserialize", wakeup<Variant::cacheserialize>)
      ->UseManualTime()
      ->Iterations(samples);
  bench::compare({"wakeup/after_store",
                  "single_flight",
                  "p50_us",
                  "median <= 50 us",
                  0,
                  50,
                  false,
                  {"p90_us", "p99_us", "max_us", "holder_p50_us"}});

  // Heartbeats.
  const std::int64_t reservations = bench::scaled<std::int64_t>(10000, 500);
  for (Due due : {Due::together, Due::spread}) {
    const std::string name = "heartbeat_minute/" + std::to_string(reservations) +
                             (due == Due::together ? "_due_together" : "_spread");
    benchmark::RegisterBenchmark((name + "/extend_loop").c_str(), heartbeat<Variant::direct>,
                                 reservations, due)
        ->UseManualTime()
        ->Iterations(1);
    if (due == Due::spread) {
      benchmark::RegisterBenchmark((name + "/clock_wakeups").c_str(), clock_wakeups, reservations)
          ->UseManualTime()
          ->Iterations(1);
    }
    benchmark::RegisterBenchmark((name + "/cacheserialize").c_str(),
                                 heartbeat<Variant::cacheserialize>, reservations, due)
        ->UseManualTime()
        ->Iterations(1);
    bench::compare({name,
                    "extend_loop",
                    "cpu_ms_per_min",
                    "",
                    0,
                    0,
                    false,
                    {"pct_of_a_core", "us_per_extension", "heartbeat_threads"}});
  }

  // Heartbeats at network latency (issue 12: 5): the heartbeat without batches is the baseline.
  const cs::Duration keep_for = bench::scaled<cs::Duration>(60s, 3s);
  const std::string latency_case = "heartbeat_latency/10000_holds_1s_2ms";
  bench::add_keep_alive_pair(
      latency_case,
      [keep_for](benchmark::State& state) {
        heartbeat_latency<UnbatchedLatencyStorage>(state, keep_for);
      },
      [keep_for](benchmark::State& state) { heartbeat_latency<LatencyStorage>(state, keep_for); });

  // try_claim (issue 11) against the storage's acquire it makes.
  bench::add_try_claim_cases<cs::InMemoryStorage>(
      "memory", memory_world, 1000, [](MemoryWorld & w) -> const auto& { return w.manager; },
      [](MemoryWorld&) { return std::function<std::uint64_t()>(); });

  // An engine's pool (issue 11): 4 workers, 200 tasks, 150 of them on one key (20 ms), the
  // others 2 ms each; the makespan, blocking claims against try_claim rounds.
  const std::string pool_case = "pool/4_workers_200_tasks_150_shared";
  const int makespans = bench::scaled(20, 1);
  benchmark::RegisterBenchmark((pool_case + "/blocking_claim").c_str(), pool_blocking)
      ->Iterations(makespans)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark((pool_case + "/try_claim_rounds").c_str(), pool_rounds)
      ->Iterations(makespans)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  bench::compare({pool_case, "blocking_claim", "", "", 0, 0, false, {"rounds_per_makespan"}});
}
