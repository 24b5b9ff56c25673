#pragma once

// Shared by the benchmarks of the shared storages (bench_fs, bench_redis, bench_postgres): the
// cached function, a fixture made once per binary (a server), and the library's side of the hit,
// miss and extension cases, written once for any storage. Each binary adds its baselines: the
// same operation without the library (a file read, a bare GET, a SELECT 1).
//
// Round trips are counted by the storage's own counter and checked: a count other than the
// expected one fails the benchmark, so CI's --quick run guards it too.

#include <stdlib.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include "common.hpp"
#include "keep_alive.hpp"

namespace bench {

/// Size of the cached output: a small value, so that the figures are the storage's own costs,
/// not the copying of a large output.
constexpr std::size_t kPayloadBytes = 100;

/// The cached function: a string of kPayloadBytes that depends on `n`.
struct Payload {
  std::string operator()(std::int64_t n) const {
    return std::string(kPayloadBytes, static_cast<char>('a' + (n % 26 + 26) % 26));
  }
};

/// `Payload` wrapped by serialize_cached over `Storage`, as users call it.
template <class Storage>
using CachedPayload = decltype(cs::serialize_cached(
    Payload{}, cs::TaskOptions{"payload", "1"},
    std::declval<cs::ReservationManager<cs::SystemClock, Storage>>()));

/// A fresh directory under the system's temporary directory, named `<name>-XXXXXX`, removed with
/// everything in it at destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& name) {
    std::string pattern = (std::filesystem::temp_directory_path() / (name + "-XXXXXX")).string();
    if (!::mkdtemp(pattern.data()))
      throw std::system_error(errno, std::generic_category(), "mkdtemp " + pattern);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

/// @return a key number that no call of this process has used (for misses).
inline std::int64_t unique_number() {
  static std::atomic<std::int64_t> next{1000};
  return next.fetch_add(1, std::memory_order_relaxed);
}

/// Something costly made once per binary, on first use (a server and the storage on it), and
/// kept until exit, so that its cost is paid once and not by any benchmark's measured region.
/// If making it failed, every benchmark that asks for it skips with the reason (a failure when
/// CACHESERIALIZE_REQUIRE_SERVERS is set; see bench::skip).
template <class T>
class Fixture {
 public:
  explicit Fixture(std::function<std::unique_ptr<T>()> make) : make_(std::move(make)) {}

  /// @return the fixture, or nullptr after skipping `state`.
  T* get(benchmark::State& state) {
    std::call_once(once_, [&] {
      try {
        value_ = make_();
      } catch (const std::exception& e) {
        why_ = e.what();
      }
    });
    if (!value_) skip(state, why_);
    return value_.get();
  }

 private:
  std::function<std::unique_ptr<T>()> make_;
  std::once_flag once_;
  std::unique_ptr<T> value_;
  std::string why_;
};

/// Sets `counter` to `count` per iteration, and fails the benchmark unless that is `expected`.
/// @return whether it was.
inline bool per_call(benchmark::State& state, const char* counter, std::uint64_t count,
                     std::uint64_t expected) {
  const auto calls = static_cast<std::uint64_t>(state.iterations());
  state.counters[counter] = calls ? static_cast<double>(count) / static_cast<double>(calls) : 0;
  if (count == expected * calls) return true;
  state.SkipWithError((std::string(counter) + ": expected " + std::to_string(expected) +
                       ", counted " + std::to_string(count) + " in " + std::to_string(calls) +
                       " calls")
                          .c_str());
  return false;
}

/// Runs `body`, turning an exception into the benchmark's error (a failure, not a skip).
template <class Body>
void guarded(benchmark::State& state, Body body) {
  try {
    body();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

/// Hits on one key through the wrapped function. `round_trips()` reads the storage's counter;
/// pass nullptr for a storage without one.
template <class Storage>
void cached_hit(benchmark::State& state, CachedPayload<Storage>& fn,
                const std::function<std::uint64_t()>& round_trips) {
  guarded(state, [&] {
    constexpr std::int64_t kKey = 42;
    if (fn(kKey) != Payload{}(kKey)) throw std::runtime_error("wrong output");  // now stored
    const auto hits = fn.manager().stats().hits;
    const std::uint64_t before = round_trips ? round_trips() : 0;
    for (auto _ : state) benchmark::DoNotOptimize(fn(kKey));
    const std::uint64_t made = round_trips ? round_trips() - before : 0;
    if (round_trips && !per_call(state, "round_trips_per_hit", made, 1)) return;
    per_call(state, "hits_per_call", fn.manager().stats().hits - hits, 1);
  });
}

/// Misses (a key never used before) through the wrapped function: reserve, run, store.
template <class Storage>
void cached_miss(benchmark::State& state, CachedPayload<Storage>& fn,
                 const std::function<std::uint64_t()>& round_trips) {
  guarded(state, [&] {
    // Outside the measured calls: a first operation may connect and load scripts, which some
    // storages count as round trips.
    benchmark::DoNotOptimize(fn(unique_number()));
    const auto executions = fn.manager().stats().executions;
    const std::uint64_t before = round_trips ? round_trips() : 0;
    for (auto _ : state) benchmark::DoNotOptimize(fn(unique_number()));
    const std::uint64_t made = round_trips ? round_trips() - before : 0;
    if (round_trips && !per_call(state, "round_trips_per_miss", made, 2)) return;
    per_call(state, "executions_per_call", fn.manager().stats().executions - executions, 1);
  });
}

/// Extensions of one held reservation by the storage's `extend`: what the manager's heartbeat
/// calls for each reservation it keeps alive.
template <class Storage>
void storage_extend(benchmark::State& state, Storage& storage,
                    const std::function<std::uint64_t()>& round_trips) {
  guarded(state, [&] {
    using namespace std::chrono_literals;
    constexpr cs::Duration kTtl = 30s;
    const cs::Key key("bench-extend", "1", std::to_string(unique_number()));
    const cs::AcquireResult r =
        storage.acquire(key, {"bench-owner", cs::SystemClock{}.now(), kTtl});
    if (r.status != cs::AcquireStatus::acquired) throw std::runtime_error("not acquired");
    const std::uint64_t before = round_trips ? round_trips() : 0;
    for (auto _ : state) {
      if (storage.extend(key, r.reservation, cs::SystemClock{}.now(), kTtl).status !=
          cs::ExtendStatus::extended) {
        throw std::runtime_error("the reservation was lost");
      }
    }
    const std::uint64_t made = round_trips ? round_trips() - before : 0;
    storage.release(key, r.reservation);
    if (round_trips) per_call(state, "round_trips_per_extension", made, 1);
  });
}

/// Registers a single-threaded benchmark that makes `quick_calls` calls under --quick.
template <class Fn, class... Args>
void add(const std::string& name, int quick_calls, Fn fn, Args... args) {
  benchmark::internal::Benchmark* b = benchmark::RegisterBenchmark(name.c_str(), fn, args...);
  if (quick()) b->Iterations(quick_calls);
}

/// Registers the library's side of `<prefix>_hit/1_key`, `<prefix>_miss/unique_keys` and
/// `<prefix>_extend/1_key` (variant `cacheserialize`), for a server's world: a World has the
/// wrapped function `fn`, the `storage`, and `round_trips()` from the storage's counter.
template <class Storage, class World>
void add_library_cases(const std::string& prefix, Fixture<World>& world, int quick_calls) {
  auto counter = [](World* w) {
    return std::function<std::uint64_t()>([w] { return w->round_trips(); });
  };
  add(prefix + "_hit/1_key/cacheserialize", quick_calls,
      [&world, counter](benchmark::State& state) {
        if (World* w = world.get(state)) cached_hit<Storage>(state, w->fn, counter(w));
      });
  add(prefix + "_miss/unique_keys/cacheserialize", quick_calls,
      [&world, counter](benchmark::State& state) {
        if (World* w = world.get(state)) cached_miss<Storage>(state, w->fn, counter(w));
      });
  add(prefix + "_extend/1_key/cacheserialize", quick_calls,
      [&world, counter](benchmark::State& state) {
        if (World* w = world.get(state)) storage_extend(state, w->storage, counter(w));
      });
}

// ---- heartbeats (issue 12: 5) ----------------------------------------------------------------

/// Registers `<prefix>_keep_alive/<n>_holds_1s/{unbatched,batched}`: 10,000 holds (1,000 under
/// --quick) kept alive with a 1 s interval for 30 s (3 s) on a storage `make(World&)` returns
/// (one with names of its own), extended one round trip per hold (the baseline) or in batches.
/// 100 holds are checked every 200 ms.
template <class Storage, class World, class Make>
void add_keep_alive_cases(const std::string& prefix, Fixture<World>& world, Make make) {
  const std::int64_t holds = scaled<std::int64_t>(10000, 1000);
  const cs::Duration run_for =
      scaled<cs::Duration>(std::chrono::seconds(30), std::chrono::seconds(3));
  const std::string name = prefix + "_keep_alive/" + std::to_string(holds) + "_holds_1s";
  auto variant = [&world, make, holds, run_for](auto tag) {
    using Observed = typename decltype(tag)::type;
    return [&world, make, holds, run_for](benchmark::State& state) {
      World* w = world.get(state);
      if (!w) return;
      guarded(state, [&] {
        for (auto _ : state) {
          const Observed storage(make(*w));
          KeepAlive o;
          o.holds = holds;
          o.run_for = run_for;
          o.sampled = 100;
          o.checks_are_round_trips = true;
          o.must_keep = cs::storage_traits<Observed>::extends_in_batches;
          keep_alive(state, storage, o, [&] { return storage.stats().round_trips; });
        }
      });
    };
  };
  add_keep_alive_pair(name, variant(std::common_type<HeartbeatObserved<WithoutBatches<Storage>>>()),
                      variant(std::common_type<HeartbeatObserved<Storage>>()));
}

// ---- try_claim (issue 11) --------------------------------------------------------------------

/// The key states a `try_claim` finds.
enum class KeyState {
  hit,   ///< an output is stored
  held,  ///< another owner holds a live reservation
};

/// One look at one key, in one of the `KeyState`s, repeated: through `manager.try_claim`
/// (`library`), or through the bare `storage.acquire` it makes (the baseline: same owner, same
/// ttl, same key state). Both must be one round trip per call and find the state expected.
template <class Storage>
void try_claim_case(benchmark::State& state,
                    const cs::ReservationManager<cs::SystemClock, Storage>& manager,
                    KeyState key_state, bool library,
                    const std::function<std::uint64_t()>& round_trips) {
  guarded(state, [&] {
    using namespace std::chrono_literals;
    Storage& storage = manager.storage();
    const cs::Key key("bench-try-claim", "1", std::to_string(unique_number()));
    if (key_state == KeyState::hit) {  // stored through the library, as an engine would
      auto first = manager.try_claim(key);
      if (!first.is_acquired()) throw std::runtime_error("a new key was not acquired");
      first.hold().store_value(Payload{}(7));
    } else if (storage.acquire(key, {"bench-holder", cs::SystemClock{}.now(), 1h}).status !=
               cs::AcquireStatus::acquired) {
      throw std::runtime_error("the holder did not acquire the key");
    }
    cs::ClaimOptions options;
    options.owner = "bench-engine";  // an engine's owner id, derived once per task
    options.tag = "node-1";
    const cs::Duration ttl = manager.options().heartbeat_interval * 3;
    const cs::ClaimStatus expected_claim =
        key_state == KeyState::hit ? cs::ClaimStatus::hit : cs::ClaimStatus::held;
    const cs::AcquireStatus expected_acquire =
        key_state == KeyState::hit ? cs::AcquireStatus::hit : cs::AcquireStatus::held;
    const std::uint64_t before = round_trips ? round_trips() : 0;
    if (library) {
      for (auto _ : state) {
        auto r = manager.try_claim(key, options);
        if (r.status() != expected_claim) throw std::runtime_error("unexpected try_claim status");
        benchmark::DoNotOptimize(r);
      }
    } else {
      for (auto _ : state) {
        cs::AcquireResult r = storage.acquire(
            key, cs::AcquireRequest{*options.owner, cs::SystemClock{}.now(), ttl, false});
        if (r.status != expected_acquire) throw std::runtime_error("unexpected acquire status");
        benchmark::DoNotOptimize(r);
      }
    }
    const std::uint64_t made = round_trips ? round_trips() - before : 0;
    if (round_trips) per_call(state, "round_trips_per_call", made, 1);
  });
}

/// Registers `<prefix>_try_claim_hit/1_key` and `<prefix>_try_claim_held/1_key`, variants
/// `storage_acquire` (the baseline) and `cacheserialize`, and their comparisons. `manager(w)`
/// gives the world's manager; `counter(w)` its round-trip counter (or an empty function).
template <class Storage, class World, class GetManager, class GetCounter>
void add_try_claim_cases(const std::string& prefix, Fixture<World>& world, int quick_calls,
                         GetManager manager, GetCounter counter) {
  for (KeyState key_state : {KeyState::hit, KeyState::held}) {
    const std::string name =
        prefix + (key_state == KeyState::hit ? "_try_claim_hit" : "_try_claim_held") + "/1_key";
    for (bool library : {false, true}) {
      add(name + (library ? "/cacheserialize" : "/storage_acquire"), quick_calls,
          [&world, manager, counter, key_state, library](benchmark::State& state) {
            if (World* w = world.get(state)) {
              try_claim_case<Storage>(state, manager(*w), key_state, library, counter(*w));
            }
          });
    }
    compare({name, "storage_acquire", "", "", 0, 0, false, {"round_trips_per_call"}});
  }
}

}  // namespace bench
