#pragma once

// Shared by every benchmark binary: the baselines each case is measured against (in the same
// binary, in the same run), the comparisons the closing table prints, and small helpers
// (process threads, thread CPU clocks, percentiles). main() and the table reporter are in
// common.cpp; each storage adds one bench_<storage>.cpp that includes this header.
//
// Naming: every benchmark is called "<case>/<variant>", e.g. "hit/1_key/mutex_map". Variants of
// one case with the same thread count are compared with the case's baseline variant, which
// `compare()` declares. The table then shows each variant's median and its ratio to the baseline
// measured in the same run, so load from other processes affects both sides alike.

#include <benchmark/benchmark.h>
#include <pthread.h>

#include <cacheserialize/cacheserialize.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace bench {

namespace cs = cacheserialize;

// ---- running mode ----------------------------------------------------------------------------

/// Whether the binary runs with `--quick` (CI): every benchmark once, briefly, with small
/// fixed sample sizes, only to prove that it still builds and runs.
bool quick();

/// Registers the binary's benchmarks, after the command line is parsed (so that sizes may
/// depend on `quick()`). Each bench_*.cpp defines it once.
void register_benchmarks();

/// @return `full`, or `quick_value` under `--quick`.
template <class T>
T scaled(T full, T quick_value) {
  return quick() ? quick_value : full;
}

// ---- the table -------------------------------------------------------------------------------

/// What a case's variants are compared on.
struct Comparison {
  /// The case, i.e. the benchmark names up to their last '/': "hit/1_key".
  std::string name;
  /// The variant every other variant of the case is divided by: "mutex_map".
  std::string baseline;
  /// What is compared: empty for wall and CPU time per call, else a user counter's name.
  std::string metric;
  /// The target for the `cacheserialize` variant, as text ("<= 1.5x"); empty: none.
  std::string target;
  /// The largest ratio that meets the target at one thread (of CPU times, which load from other
  /// processes stretches less than wall time); 0 when the target is not a ratio.
  double max_ratio = 0;
  /// The largest value of the metric that meets the target; 0 when the target is not one.
  double max_value = 0;
  /// Also print how throughput scales from one thread to more.
  bool scaling = false;
  /// User counters shown in columns of their own (medians), e.g. other percentiles.
  std::vector<std::string> also = {};
};

/// Declares how a case's variants are compared in the closing table; call it from
/// `register_benchmarks()`. Cases are printed in the order they are declared.
void compare(Comparison c);

/// Skips a benchmark that cannot run here (a storage whose server is not installed), with the
/// reason in the table. Unlike any other error it does not fail the binary, unless
/// CACHESERIALIZE_REQUIRE_SERVERS=1 is set (as in CI, where the servers must be there).
void skip(benchmark::State& state, const std::string& why);

// ---- instruction counts ----------------------------------------------------------------------

/// Registers a probe for a load-independent cross-check: `calls(n)` makes n calls of one
/// variant. `bench_x --probe=NAME` runs it (after a warm-up) inside the function
/// `cacheserialize_bench_probe`, so that `valgrind --tool=callgrind
/// --toggle-collect=cacheserialize_bench_probe` counts only those calls; `bench/run.sh
/// --callgrind` does that for every probe and prints instructions per call. Name probes
/// "<case>/<variant>"; the first probe of a case is its baseline.
void probe(std::string name, std::function<void(std::int64_t)> calls);

// ---- processes and threads -------------------------------------------------------------------

/// @return how many times this process called pthread_create since it started, or -1 if the
///         counter is not hooked in (not Linux/glibc, or the binary does not export it).
long threads_created();

/// @return the number of threads of this process now (Linux /proc), or 0 if unknown.
std::size_t thread_count();

/// @return the resident set size of this process in MiB (/proc/self/statm), or 0 if unknown.
double rss_mib();

/// @return the calling thread's kernel id (Linux), for `thread_state`.
long current_tid();

/// @return the scheduler state of one of this process's threads: 'R' running, 'S' asleep
///         (blocked in a futex, for example), ..., or '?' if unknown.
char thread_state(long tid);

/// @return the CPU time the calling thread has used so far.
std::chrono::nanoseconds thread_cpu_time();

/// @return the CPU time the thread `thread` has used so far (it must be alive).
std::chrono::nanoseconds thread_cpu_time(pthread_t thread);

/// The p-th percentile (0..100) of `samples`, nearest-rank; sorts them.
double percentile(std::vector<double>& samples, double p);

// ---- cache keys --------------------------------------------------------------------------------

/// The key bytes of a task, made without the library's Key type: the baselines key their maps by
/// exactly the bytes the library stores, computed with the public Writer, so that both sides pay
/// for the same encoding inside the measured region.
class KeyBytes {
 public:
  /// @param name, interface, cache_version as the task's KeySchema has them.
  KeyBytes(const std::string& name, const std::string& interface, const std::string& version,
           std::size_t inputs);

  /// @return the encoded key of a call with `inputs`.
  template <class... Inputs>
  std::string make(const Inputs&... inputs) const {
    std::string out;
    out.reserve(prefix_.size() + sizeof...(Inputs) * 16);
    out.append(prefix_);
    cs::Writer w(out, cs::Writer::Mode::key);
    (w.write(inputs), ...);
    return out;
  }

 private:
  std::string prefix_;
};

// ---- baselines ---------------------------------------------------------------------------------

/// The floor of an in-process hit: one std::mutex over one std::unordered_map from the encoded
/// key to the value. No reservations, no events, no counters.
template <class V>
class MutexMap {
 public:
  std::optional<V> get(const std::string& key) const {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    return it->second;
  }
  void put(std::string key, V value) {
    std::lock_guard<std::mutex> lock(mu_);
    map_.insert_or_assign(std::move(key), std::move(value));
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, V> map_;
};

/// The minimal single-flight cache: one mutex over a map from the encoded key to a
/// std::shared_future. The first caller of a key inserts a future, runs the function outside the
/// lock and fulfils it; concurrent and later callers wait on, or read, the same future. No
/// reservations, expiry, heartbeats, fencing, cancellation or failure handling.
template <class V>
class SingleFlight {
 public:
  template <class Fn>
  V get_or_run(const std::string& key, Fn&& fn) {
    std::promise<V> mine;
    std::shared_future<V> future;
    bool first = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto [it, inserted] = map_.try_emplace(key);
      if (inserted) it->second = mine.get_future().share();
      future = it->second;
      first = inserted;
    }
    if (first) mine.set_value(fn());
    return future.get();
  }

  /// The first caller's half of `get_or_run`, for a benchmark that plays the holder itself:
  /// registers a pending future for `key`; callers of `get_or_run` wait until the returned
  /// promise is fulfilled.
  std::promise<V> hold(const std::string& key) {
    std::promise<V> mine;
    std::lock_guard<std::mutex> lock(mu_);
    map_.insert_or_assign(key, mine.get_future().share());
    return mine;
  }

  /// Forgets every entry (between batches of unique keys, outside the measured region).
  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    map_.clear();
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_future<V>> map_;
};

}  // namespace bench
