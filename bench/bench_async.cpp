// Asynchronous waiting (issue 12): many claims waiting on a few keys, three ways in one run
// (`claim_async` on the manager's one waiter thread; the blocking `claim` on a thread each; a
// minimal hand-written one-thread waiter over the storage contract, the floor), and what an
// asynchronous hit costs against a blocking one. InMemoryStorage and SystemClock (real time).

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <typeinfo>
#include <utility>
#include <vector>

#include "common.hpp"

namespace {

namespace cs = cacheserialize;
using namespace std::chrono_literals;
using Value = std::int64_t;
using Manager = cs::ReservationManager<>;
using Steady = std::chrono::steady_clock;

constexpr std::size_t kKeys = 10;

cs::StoredOutput output_of(Value v) {
  return cs::StoredOutput::from_object(std::make_shared<const Value>(v));
}

// ---- the process, from /proc
// ---------------------------------------------------------------------

/// Waits until no thread of this process but the caller is running or runnable (state R in
/// /proc/self/task/<tid>/stat): the waiters are asleep, and the first looks are made.
/// @throws std::runtime_error after 20 s.
void settle() {
  const long self = bench::current_tid();
  const auto bound = Steady::now() + 20s;
  for (;;) {
    bool running = false;
    if (DIR* dir = opendir("/proc/self/task")) {
      while (const dirent* e = readdir(dir)) {
        const long tid = std::atol(e->d_name);
        if (tid > 0 && tid != self && bench::thread_state(tid) == 'R') {
          running = true;
          break;
        }
      }
      closedir(dir);
    }
    if (!running) return;
    if (Steady::now() > bound) throw std::runtime_error("the waiters did not settle within 20 s");
    std::this_thread::sleep_for(1ms);
  }
}

// ---- waiting at scale
// ----------------------------------------------------------------------------

/// When each waiter of one run completed, and how many did so without a hit.
class Completions {
 public:
  explicit Completions(std::size_t waiters) : at_(waiters) {}

  /// Waiter `i` completed now (`hit`: with the stored output, as expected).
  void complete(std::size_t i, bool hit) noexcept {
    at_[i] = Steady::now();
    // Under the lock: the waiting thread may destroy this as soon as it sees the last one.
    std::lock_guard<std::mutex> lock(mu_);
    if (!hit) ++failed_;
    ++done_;
    cv_.notify_all();
  }

  /// Waits until `n` waiters have completed. @throws std::runtime_error after 60 s.
  void wait_for(std::size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, 60s, [&] { return done_ >= n; })) {
      throw std::runtime_error(std::to_string(done_) + " of " + std::to_string(n) +
                               " waiters completed within 60 s");
    }
  }

  Steady::time_point at(std::size_t i) const { return at_[i]; }
  std::size_t failed() {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_;
  }

 private:
  std::vector<Steady::time_point> at_;  // each written once, by its waiter's completion
  std::mutex mu_;                       // guards done_ and failed_
  std::size_t done_ = 0;
  std::size_t failed_ = 0;
  std::condition_variable cv_;
};

/// The floor: one thread that waits for many callers over the bare storage contract. It
/// subscribes one Notifiable per key; a notification queues the key and wakes the thread, which
/// then makes one `acquire` per queued key and completes all of a key's waiters on a hit.
class OneThreadWaiter {
 public:
  using Done = std::function<void(const cs::StoredOutput&)>;

  OneThreadWaiter(cs::InMemoryStorage storage, std::vector<cs::Key> keys)
      : storage_(std::move(storage)), keys_(std::move(keys)), watches_(keys_.size()) {
    for (std::size_t k = 0; k < keys_.size(); ++k) {
      watches_[k].owner = this;
      watches_[k].index = k;
      subscriptions_.push_back(storage_.subscribe(keys_[k], watches_[k]));
    }
    thread_ = std::thread([this] { loop(); });
  }
  ~OneThreadWaiter() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify();
    thread_.join();
    subscriptions_.clear();
  }
  OneThreadWaiter(const OneThreadWaiter&) = delete;
  OneThreadWaiter& operator=(const OneThreadWaiter&) = delete;

  /// Completes `done` once key `k` has an output (its first look is made on the thread).
  void wait(std::size_t k, Done done) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      watches_[k].waiters.push_back(std::move(done));
    }
    ready(k);
  }

  /// @return looks that took a reservation (the key was free: never, here).
  std::size_t acquired() const { return acquired_.load(); }

 private:
  struct Watch final : cs::Notifiable {
    void notify() noexcept override { owner->ready(index); }
    OneThreadWaiter* owner = nullptr;
    std::size_t index = 0;
    bool queued = false;        // guarded by mu_
    std::vector<Done> waiters;  // guarded by mu_
  };

  // Called by the storage, possibly under its shard lock: takes mu_ and the signal's, no more.
  void ready(std::size_t k) noexcept {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (watches_[k].queued) return;
      watches_[k].queued = true;
      dirty_.push_back(k);
    }
    wake_.notify();
  }

  void loop() {
    std::vector<std::size_t> keys;
    for (;;) {
      wake_.reset();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
        keys.swap(dirty_);
        for (std::size_t k : keys) watches_[k].queued = false;
      }
      if (keys.empty()) {
        wake_.wait([] { return false; });
        continue;
      }
      for (std::size_t k : keys) look(k);
      keys.clear();
    }
  }

  void look(std::size_t k) {
    const cs::AcquireResult r =
        storage_.acquire(keys_[k], cs::AcquireRequest{"one-thread-floor", cs::SystemClock().now(),
                                                      std::chrono::seconds(30), false});
    if (r.status == cs::AcquireStatus::acquired) {
      acquired_.fetch_add(1);
      storage_.release(keys_[k], r.reservation);
      return;
    }
    if (r.status != cs::AcquireStatus::hit) return;
    std::vector<Done> done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done.swap(watches_[k].waiters);
    }
    for (Done& d : done) d(r.output);
  }

  cs::InMemoryStorage storage_;
  const std::vector<cs::Key> keys_;
  std::vector<Watch> watches_;
  std::vector<cs::Subscription> subscriptions_;
  std::mutex mu_;  // guards dirty_, stop_ and each watch's queued and waiters
  std::vector<std::size_t> dirty_;
  bool stop_ = false;
  std::atomic<std::size_t> acquired_{0};
  cs::Signal wake_;
  std::thread thread_;
};

enum class Way { one_thread_floor, blocking_claim, claim_async };

const char* name_of(Way w) {
  static const char* const names[] = {"one_thread_floor", "blocking_claim", "cacheserialize"};
  return names[static_cast<int>(w)];
}

/// `waiters` callers wait on 10 keys (waiter i on key i % 10), each key held by a hold of this
/// process; once all are asleep the holds store, one key after the other, and each waiter's
/// latency is its completion minus the start of its key's store. Threads and RSS are read
/// before the manager is made (`threads_before`) and again while all wait.
template <Way W>
void wait_once(benchmark::State& state, std::size_t n, std::size_t threads_before) {
  static std::atomic<std::int64_t> next_run{0};
  const double rss_before = bench::rss_mib();
  const std::string run = std::to_string(next_run++);
  cs::InMemoryStorage storage;
  const Manager manager(storage);
  std::vector<cs::Key> keys;
  std::vector<Manager::hold_type> holds;
  for (std::size_t k = 0; k < kKeys; ++k) {
    keys.emplace_back("wait-at-scale", "1", run + "/" + std::to_string(k));
    holds.push_back(std::move(manager.claim(keys.back()).hold()));
  }
  Completions done(n);
  std::size_t started = 0;  // fewer than n only if the system refused a thread
  std::optional<OneThreadWaiter> floor;
  std::vector<std::thread> threads;
  try {
    if constexpr (W == Way::one_thread_floor) {
      floor.emplace(storage, keys);
      for (; started < n; ++started) {
        floor->wait(started % kKeys, [&done, i = started](const cs::StoredOutput& out) {
          done.complete(i, out.object != nullptr && *out.type == typeid(Value));
        });
      }
    } else if constexpr (W == Way::blocking_claim) {
      threads.reserve(n);
      for (; started < n; ++started) {
        try {
          threads.emplace_back([&, i = started] {
            bool hit = false;
            try {
              hit = manager.claim(keys[i % kKeys]).is_hit();
            } catch (...) {
            }
            done.complete(i, hit);
          });
        } catch (const std::system_error&) {
          break;  // the thread limit: as many as the system allows
        }
      }
      const auto bound = Steady::now() + 60s;
      while (manager.stats().waiters_active < started) {
        if (Steady::now() > bound) throw std::runtime_error("the threads did not all wait");
        std::this_thread::sleep_for(1ms);
      }
    } else {
      const cs::ClaimOptions options;
      for (; started < n; ++started) {
        manager.claim_async(keys[started % kKeys], options,
                            [&done, i = started](std::exception_ptr error,
                                                 std::optional<Manager::claim_type> claim) {
                              done.complete(i, !error && claim && claim->is_hit());
                            });
      }
      if (manager.stats().waiters_active != started) {
        throw std::runtime_error("not every claim_async waits");
      }
    }
    settle();
    const double threads_added =
        static_cast<double>(bench::thread_count()) - static_cast<double>(threads_before);
    const double rss_added = bench::rss_mib() - rss_before;

    std::vector<Steady::time_point> stored(kKeys);
    for (std::size_t k = 0; k < kKeys; ++k) {
      stored[k] = Steady::now();
      holds[k].store(output_of(static_cast<Value>(k)));
    }
    const auto stores_ended = Steady::now();
    done.wait_for(started);
    for (std::thread& t : threads) t.join();
    if (done.failed() != 0) {
      throw std::runtime_error(std::to_string(done.failed()) + " waiters completed without a hit");
    }
    if (floor && floor->acquired() != 0) throw std::runtime_error("the floor took a key");

    std::vector<double> ms;
    ms.reserve(started);
    Steady::time_point last = stored.front();
    for (std::size_t i = 0; i < started; ++i) {
      ms.push_back(
          std::chrono::duration<double, std::milli>(done.at(i) - stored[i % kKeys]).count());
      last = std::max(last, done.at(i));
    }
    state.SetIterationTime(std::chrono::duration<double>(last - stored.front()).count());
    state.counters["p50_ms"] = bench::percentile(ms, 50);
    state.counters["p99_ms"] = bench::percentile(ms, 99);
    state.counters["max_ms"] = bench::percentile(ms, 100);
    state.counters["threads_added"] = threads_added;
    state.counters["rss_added_mib"] = rss_added;
    state.counters["waiters"] = static_cast<double>(started);
    state.counters["stores_ms"] =
        std::chrono::duration<double, std::milli>(stores_ended - stored.front()).count();
  } catch (const std::exception& e) {
    for (auto& h : holds) {
      if (h.active()) h.release();  // the threads still waiting take the keys, and return
    }
    for (std::thread& t : threads) t.join();
    state.SkipWithError(e.what());
  }
}

/// Waits until this process has no more threads than `before` (those of a finished case may
/// still be exiting: a manager whose last handle its waiter thread dropped lets that thread
/// go).
/// @return whether it came to that within 5 s.
bool threads_gone(std::size_t before) {
  const auto bound = Steady::now() + 5s;
  while (bench::thread_count() > before) {
    if (Steady::now() > bound) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

template <Way W>
void wait_at_scale(benchmark::State& state, std::int64_t waiters) {
  for (auto _ : state) {
    const std::size_t threads_before = bench::thread_count();
    wait_once<W>(state, static_cast<std::size_t>(waiters), threads_before);
    if (state.error_occurred()) return;
    if (!threads_gone(threads_before)) {
      state.SkipWithError("threads of the case were still running 5 s after it");
      return;
    }
  }
}

// ---- a hit: asynchronous against blocking ------------------------------------------------------

/// The trivial body: the cost of what is cached is not what is measured.
struct Square {
  Value operator()(std::int64_t n) const { return n * n; }
};

using Wrapped = decltype(cs::serialize_cached(Square{}, cs::TaskOptions{"square", "1"},
                                              std::declval<Manager>()));

/// Where `SerializedFunction::async` would run the function: never, on a hit.
struct InlineExecutor {
  void operator()(std::function<void()> job) const { job(); }
};

/// One key with a stored output, claimed (or called) over and over.
struct HitWorld {
  HitWorld() {
    manager.put(key, output_of(42 * 42));
    fn(42);  // stores its own output
  }
  cs::InMemoryStorage storage;
  Manager manager{storage};
  cs::Key key{"async-hit", "1", "42"};
  cs::ClaimOptions options;
  Wrapped fn = cs::serialize_cached(Square{}, cs::TaskOptions{"square", "1"}, manager);
};

HitWorld& hit_world() {
  static HitWorld world;
  return world;
}

enum class Hit { claim, claim_async, claim_async_future, call, async };

/// One hit, read as the caller would (the claim's value decoded).
template <Hit H>
Value hit_once(HitWorld& w) {
  if constexpr (H == Hit::claim) {
    return w.manager.claim(w.key, w.options).value<Value>();
  } else if constexpr (H == Hit::claim_async) {
    Value v = 0;
    w.manager.claim_async(w.key, w.options,
                          [&v](std::exception_ptr, std::optional<Manager::claim_type> claim) {
                            v = claim->value<Value>();
                          });
    return v;
  } else if constexpr (H == Hit::claim_async_future) {
    return w.manager.claim_async(w.key, w.options).get().value<Value>();
  } else if constexpr (H == Hit::call) {
    return w.fn(42);
  } else {
    return w.fn.async(InlineExecutor{}, 42).get();
  }
}

template <Hit H>
void hit(benchmark::State& state) {
  HitWorld& w = hit_world();
  if (hit_once<H>(w) != 42 * 42) {
    state.SkipWithError("not the stored value");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(hit_once<H>(w));
  state.SetItemsProcessed(state.iterations());
}

template <Hit H>
void hit_probe(std::int64_t calls) {
  HitWorld& w = hit_world();
  for (std::int64_t i = 0; i < calls; ++i) benchmark::DoNotOptimize(hit_once<H>(w));
}

}  // namespace

void bench::register_benchmarks() {
  // Waiting at scale: 5,000 waiters on 10 keys (--quick: 500), three ways.
  const std::int64_t waiters = bench::scaled<std::int64_t>(5000, 500);
  const std::string scale_case = "wait_at_scale/" + std::to_string(waiters) + "_waiters_10_keys";
  for (Way w : {Way::one_thread_floor, Way::blocking_claim, Way::claim_async}) {
    auto fn = w == Way::one_thread_floor ? wait_at_scale<Way::one_thread_floor>
              : w == Way::blocking_claim ? wait_at_scale<Way::blocking_claim>
                                         : wait_at_scale<Way::claim_async>;
    benchmark::RegisterBenchmark((scale_case + "/" + name_of(w)).c_str(), fn, waiters)
        ->UseManualTime()
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
  }
  bench::compare({scale_case,
                  "one_thread_floor",
                  "p50_ms",
                  "p50 <= 5 ms, p99 <= 50 ms, threads added <= 3",
                  0,
                  5,
                  false,
                  {"p99_ms", "max_ms", "threads_added", "rss_added_mib", "stores_ms", "waiters"}});

  // A hit: claim_async (completes inline) against claim; SerializedFunction::async against ().
  struct HitCase {
    const char* name;
    void (*fn)(benchmark::State&);
    void (*probe)(std::int64_t);
  };
  const HitCase hits[] = {
      {"hit_claim/1_key/claim", hit<Hit::claim>, hit_probe<Hit::claim>},
      {"hit_claim/1_key/claim_async", hit<Hit::claim_async>, hit_probe<Hit::claim_async>},
      {"hit_claim/1_key/claim_async_future", hit<Hit::claim_async_future>,
       hit_probe<Hit::claim_async_future>},
      {"hit_call/1_key/call", hit<Hit::call>, hit_probe<Hit::call>},
      {"hit_call/1_key/async_future", hit<Hit::async>, hit_probe<Hit::async>},
  };
  for (const HitCase& h : hits) {
    benchmark::RegisterBenchmark(h.name, h.fn)->UseRealTime();
    bench::probe(h.name, h.probe);
  }
  bench::compare({"hit_claim/1_key", "claim", "", "", 0, 0, false});
  bench::compare({"hit_call/1_key", "call", "", "", 0, 0, false});
}
