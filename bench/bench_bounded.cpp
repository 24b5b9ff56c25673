// A bounded InMemoryStorage (issue 13): hits on a bounded store against the mutex + map floor
// and the unbounded store; hit ratios of its S3-FIFO eviction against an exact LRU of the same
// capacity on generated traces; and the resident memory of 500,000 outputs of 1 KiB in a store
// bounded to 64 MiB against the same outputs in an unbounded store.

#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cache_sim.hpp"
#include "common.hpp"

namespace {

namespace cs = cacheserialize;
using Value = std::int64_t;

struct Square {
  Value operator()(std::int64_t n) const { return n * n; }
};

// ---- hits ------------------------------------------------------------------------------------

enum class Store { mutex_map, unbounded, bounded };

const char* name_of(Store s) {
  // The bounded store is the library variant the target is judged on.
  static const char* const names[] = {"mutex_map", "unbounded", "cacheserialize"};
  return names[static_cast<int>(s)];
}

constexpr std::int64_t kKeys = 10000;

cs::InMemoryOptions bounded_options() {
  cs::InMemoryOptions o;
  o.max_bytes = std::size_t{64} << 20;  // holds every key: hits, no evictions
  o.max_entries = 1000000;
  return o;
}

using Wrapped = decltype(cs::serialize_cached(Square{}, cs::TaskOptions{"hit", "1"},
                                              std::declval<cs::ReservationManager<>>()));

struct HitWorld {
  HitWorld()
      : unbounded(make("bounded_hit", cs::InMemoryStorage())),
        bounded(make("bounded_hit", cs::InMemoryStorage(bounded_options()))),
        bytes("bounded_hit",
              cs::KeySchema<Value(std::int64_t)>(cs::TaskSignature{"bounded_hit", ""}, "1")
                  .signature()
                  .interface,
              "1", 1) {
    if (bytes.make(std::int64_t{7}) != bounded.key(std::int64_t{7}).encoded()) {
      std::fprintf(stderr, "bench: the baseline's key bytes differ from the library's\n");
      std::abort();
    }
    for (std::int64_t n = 0; n < kKeys; ++n) {
      unbounded(n);
      bounded(n);
      floor.put(bytes.make(n), Square{}(n));
    }
  }
  static Wrapped make(const char* name, cs::InMemoryStorage storage) {
    return cs::serialize_cached(Square{}, cs::TaskOptions{name, "1"},
                                cs::ReservationManager<>(std::move(storage)));
  }
  Wrapped unbounded;
  Wrapped bounded;
  bench::KeyBytes bytes;
  bench::MutexMap<Value> floor;
};

HitWorld& hit_world() {
  static HitWorld world;
  return world;
}

template <Store S>
void hit(benchmark::State& state, std::int64_t keys) {
  HitWorld& w = hit_world();
  std::int64_t n = keys == 1 ? 42 : (state.thread_index() * 1237) % keys;
  for (auto _ : state) {
    if constexpr (S == Store::mutex_map) {
      benchmark::DoNotOptimize(w.floor.get(w.bytes.make(n)));
    } else if constexpr (S == Store::unbounded) {
      benchmark::DoNotOptimize(w.unbounded(n));
    } else {
      benchmark::DoNotOptimize(w.bounded(n));
    }
    if (keys > 1) {
      n += 7919;
      if (n >= keys) n -= keys;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

// ---- hit ratios ------------------------------------------------------------------------------

constexpr std::size_t kCapacity = 10000;

const std::vector<bench::Trace>& traces() {
  static const std::vector<bench::Trace> all =
      bench::issue_traces(kCapacity, bench::scaled<std::size_t>(2000000, 60000));
  return all;
}

// Replays `trace` into an exact LRU, or into a store bounded to the same number of entries
// (a miss puts the key); reports the hit ratio in percent, the first 2 x capacity accesses
// (the warm-up) left out.
void hit_ratio(benchmark::State& state, std::size_t t, bool lru) {
  const bench::Trace& trace = traces()[t];
  std::vector<cs::Key> keys;
  if (!lru) {
    keys.reserve(trace.ids.size());
    for (std::uint64_t id : trace.ids) keys.emplace_back("trace", "1", std::to_string(id));
  }
  const cs::StoredOutput output = cs::StoredOutput::from_object(std::make_shared<const int>(1));
  double pct = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    std::size_t hits = 0;
    std::size_t counted = 0;
    const std::size_t warm = 2 * kCapacity;
    if (lru) {
      bench::ExactLru cache(kCapacity);
      for (std::size_t i = 0; i < trace.ids.size(); ++i) {
        const bool hit = cache.access(trace.ids[i]);
        if (i >= warm) {
          hits += hit ? 1 : 0;
          ++counted;
        }
      }
    } else {
      cs::InMemoryOptions o;
      o.max_entries = kCapacity;
      cs::InMemoryStorage cache(o);
      for (std::size_t i = 0; i < keys.size(); ++i) {
        const bool hit = cache.visit_output(keys[i], [](const cs::StoredOutput&) {});
        if (!hit) cache.put(keys[i], output);
        if (i >= warm) {
          hits += hit ? 1 : 0;
          ++counted;
        }
      }
    }
    pct = 100.0 * static_cast<double>(hits) / static_cast<double>(counted);
    state.SetIterationTime(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  state.counters["hit_pct"] = pct;
}

// ---- resident memory -------------------------------------------------------------------------

// The issue's bound; --quick (CI, maybe unoptimised) fills a quarter of it with a tenth of the
// outputs.
std::size_t bound() {
  return bench::scaled<std::size_t>(std::size_t{64} << 20, std::size_t{16} << 20);
}

struct MemoryFigures {
  double growth_mib = 0;
  double entries = 0;
  double bytes_mib = 0;
};

// Puts `outputs` strings of 1 KiB into a fresh store and measures how much the resident set
// grew, in a child process, so that each store starts from the same heap. The child first hands
// the free memory it inherited back to the system (malloc_trim), so that the store cannot grow
// into pages already resident.
MemoryFigures fill(bool bounded, std::size_t outputs) {
  int fds[2];
  if (pipe(fds) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    malloc_trim(0);
    cs::InMemoryOptions o;
    if (bounded) o.max_bytes = bound();
    MemoryFigures f;
    {
      cs::InMemoryStorage storage(o);
      const double before = bench::rss_mib();
      for (std::size_t i = 0; i < outputs; ++i) {
        storage.put(cs::Key("rss", "1", std::to_string(i)),
                    cs::StoredOutput::from_object(std::make_shared<const std::string>(
                        1024, static_cast<char>('a' + i % 26))));
      }
      f.growth_mib = bench::rss_mib() - before;
      f.entries = static_cast<double>(storage.size());
      f.bytes_mib = static_cast<double>(storage.bytes()) / (1 << 20);
    }
    const ssize_t n = write(fds[1], &f, sizeof f);
    _exit(n == static_cast<ssize_t>(sizeof f) ? 0 : 1);
  }
  close(fds[1]);
  MemoryFigures f;
  const ssize_t n = read(fds[0], &f, sizeof f);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (n != static_cast<ssize_t>(sizeof f)) return {};
  return f;
}

void memory(benchmark::State& state, bool bounded) {
  const std::size_t outputs = bench::scaled<std::size_t>(500000, 50000);
  MemoryFigures f;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    f = fill(bounded, outputs);
    state.SetIterationTime(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  if (f.entries == 0) state.SkipWithError("the child process failed");
  state.counters["rss_growth_mib"] = f.growth_mib;
  state.counters["x_bound"] = f.growth_mib / static_cast<double>(bound() >> 20);
  state.counters["entries"] = f.entries;
  state.counters["charged_mib"] = f.bytes_mib;
}

}  // namespace

void bench::register_benchmarks() {
  // Hits: the bounded store against the floor, with the unbounded store for comparison.
  for (std::int64_t keys : {std::int64_t{1}, kKeys}) {
    const std::string name = keys == 1 ? "bounded_hit/1_key" : "bounded_hit/10000_keys";
    auto add = [&](Store s, auto fn) {
      benchmark::RegisterBenchmark((name + "/" + name_of(s)).c_str(), fn, keys)
          ->Threads(1)
          ->Threads(2)
          ->Threads(8)
          ->UseRealTime();
    };
    add(Store::mutex_map, hit<Store::mutex_map>);
    add(Store::unbounded, hit<Store::unbounded>);
    add(Store::bounded, hit<Store::bounded>);
    bench::compare({name, "mutex_map", "",
                    "bounded store (cacheserialize) <= 1.3x mutex_map at 1 thread; scales", 1.3, 0,
                    true});
    const std::string probe = keys == 1 ? "bounded_hit_1_key" : "bounded_hit_10000_keys";
    bench::probe(probe + "/mutex_map", [keys](std::int64_t calls) {
      HitWorld& w = hit_world();
      for (std::int64_t i = 0, n = 0; i < calls; ++i, n = (n + 7919) % keys) {
        benchmark::DoNotOptimize(w.floor.get(w.bytes.make(n)));
      }
    });
    bench::probe(probe + "/unbounded", [keys](std::int64_t calls) {
      HitWorld& w = hit_world();
      for (std::int64_t i = 0, n = 0; i < calls; ++i, n = (n + 7919) % keys) {
        benchmark::DoNotOptimize(w.unbounded(n));
      }
    });
    bench::probe(probe + "/cacheserialize", [keys](std::int64_t calls) {
      HitWorld& w = hit_world();
      for (std::int64_t i = 0, n = 0; i < calls; ++i, n = (n + 7919) % keys) {
        benchmark::DoNotOptimize(w.bounded(n));
      }
    });
  }

  // One run each of the cases below, timed by the benchmark itself.
  const auto once = [](const std::string& name, auto fn, auto... args) {
    benchmark::RegisterBenchmark(name.c_str(), fn, args...)
        ->UseManualTime()
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
  };

  // Hit ratios, 10,000 entries, against an exact LRU.
  const std::vector<std::string> names = {"zipf_0.6", "zipf_0.8",  "zipf_1.0",
                                          "zipf_1.2", "loop_1.5x", "zipf_1.0_with_scans"};
  for (std::size_t t = 0; t < names.size(); ++t) {
    const std::string name = "hit_ratio/10000_entries_" + names[t];
    once(name + "/exact_lru", hit_ratio, t, true);
    once(name + "/s3fifo", hit_ratio, t, false);
    bench::compare({name, "exact_lru", "hit_pct", "", 0, 0, false, {}});
  }

  // Resident memory.
  const std::string rss = bench::quick() ? "rss/50000_outputs_of_1KiB_16MiB_bound"
                                         : "rss/500000_outputs_of_1KiB_64MiB_bound";
  once(rss + "/unbounded", memory, false);
  once(rss + "/cacheserialize", memory, true);
  bench::compare({rss,
                  "unbounded",
                  "rss_growth_mib",
                  "bounded store (cacheserialize): growth <= 1.25 x the bound",
                  0,
                  bench::quick() ? 20.0 : 80.0,
                  false,
                  {"x_bound", "entries", "charged_mib"}});
}
