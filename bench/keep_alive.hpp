#pragma once

// Heartbeats at network latency (issue 12: 5): many holds kept alive in real time by one
// manager's heartbeat thread, and what that costs: the heartbeat's storage calls (round trips)
// and extensions per second, its thread's CPU time, and whether a live hold's reservation was
// ever found expired. Shared by bench_memory (a store with a fixed latency per round trip) and
// the Redis and PostgreSQL benchmarks (the real servers).

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common.hpp"

namespace bench {

/// A storage `S` that notes which thread extends (the manager's heartbeat thread), so that a
/// benchmark can read that thread's CPU clock. Copies share what they noted.
template <class S>
class HeartbeatObserved : public S {
 public:
  HeartbeatObserved() = default;
  explicit HeartbeatObserved(S base) : S(std::move(base)) {}

  cs::ExtendResult extend(const cs::Key& key, const cs::Reservation& mine, cs::TimePoint now,
                          cs::Duration ttl) {
    note();
    return S::extend(key, mine, now, ttl);
  }
  template <class B = S>
  auto extend_many(const std::vector<cs::Extension>& batch, cs::TimePoint now)
      -> decltype(std::declval<B&>().extend_many(batch, now)) {
    note();
    return B::extend_many(batch, now);
  }

  /// @return the thread that extended, once one has.
  std::optional<pthread_t> extender() const {
    if (!seen_->known.load(std::memory_order_acquire)) return std::nullopt;
    std::lock_guard<std::mutex> lock(seen_->mu);
    return seen_->thread;
  }

 private:
  struct Seen {
    std::mutex mu;
    std::atomic<bool> known{false};
    pthread_t thread{};
  };
  void note() {
    if (seen_->known.load(std::memory_order_acquire)) return;
    std::lock_guard<std::mutex> lock(seen_->mu);
    seen_->thread = pthread_self();
    seen_->known.store(true, std::memory_order_release);
  }
  std::shared_ptr<Seen> seen_ = std::make_shared<Seen>();
};

/// `S` without `extend_many` (deleted, so the trait does not see it): the heartbeat extends one
/// call, one round trip, per hold, as it did before batches. The baseline.
template <class S>
class WithoutBatches : public S {
 public:
  WithoutBatches() = default;
  WithoutBatches(S base) : S(std::move(base)) {}  // NOLINT: converts, as S's handle it is
  std::vector<cs::ExtendResult> extend_many(const std::vector<cs::Extension>&,
                                            cs::TimePoint) = delete;
};

struct KeepAlive {
  std::int64_t holds = 10000;
  cs::Duration interval = std::chrono::seconds(1);
  int grace = 3;
  /// How long the holds are kept, in real time, once all are claimed.
  cs::Duration run_for = std::chrono::seconds(60);
  /// Every this long, `sampled` holds (in turn) are checked in the storage.
  cs::Duration sample_every = std::chrono::milliseconds(200);
  std::int64_t sampled = 10000;
  /// Whether a check (`reservation`) is a round trip the storage counts: it is then not
  /// counted as the heartbeat's.
  bool checks_are_round_trips = false;
  /// Fail the benchmark if a live hold was found expired (the baseline only shows it).
  bool must_keep = true;
};

/// Claims `o.holds` keys through a manager over `storage` (a HeartbeatObserved storage), spread
/// evenly over one interval (as holds taken at random times are; a storage slower than that spreads
/// them further), keeps them for `o.run_for` while the heartbeat extends them, checking them in the
/// storage, then lets them go. Counters, per second of the run: `round_trips_per_s` (the storage's,
/// `round_trips`, less the checks), `hb_calls_per_s` (Stats::heartbeat_batches),
/// `extensions_per_s`; and `expired_seen`: checks that found a live hold's reservation expired or
/// another's, plus holds reported lost (must be 0); `pct_checks_expired`; `hb_failures`;
/// `hb_cpu_ms_per_min`: the heartbeat thread's CPU time (its POSIX thread CPU clock) per minute of
/// the run.
template <class Storage>
void keep_alive(benchmark::State& state, const Storage& storage, const KeepAlive& o,
                const std::function<std::uint64_t()>& round_trips) {
  using Manager = cs::ReservationManager<cs::SystemClock, Storage>;
  cs::ManagerOptions options;
  options.heartbeat_interval = o.interval;
  options.grace_multiplier = o.grace;
  const Manager manager(storage, cs::SystemClock(), options);
  static std::atomic<std::int64_t> next_run{0};
  const std::string run = std::to_string(next_run++);
  std::vector<cs::Key> keys;
  std::vector<typename Manager::claim_type> held;
  keys.reserve(static_cast<std::size_t>(o.holds));
  held.reserve(static_cast<std::size_t>(o.holds));
  const auto claimed_from = std::chrono::steady_clock::now();
  for (std::int64_t i = 0; i < o.holds; ++i) {
    keys.emplace_back("keep-alive", "1", run + "/" + std::to_string(i));
    held.push_back(manager.claim(keys.back()));
    if (held.back().is_hit()) throw std::runtime_error("a fresh key was a hit");
    std::this_thread::sleep_until(claimed_from + o.interval * (i + 1) / o.holds);
  }
  // The first extensions are due one interval after the first claim.
  const auto bound = std::chrono::steady_clock::now() + o.interval + std::chrono::seconds(10);
  while (!storage.extender()) {
    if (std::chrono::steady_clock::now() > bound) throw std::runtime_error("no heartbeat");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const pthread_t heartbeat = *storage.extender();
  const cs::Stats s0 = manager.stats();
  const std::uint64_t trips0 = round_trips();
  const auto t0 = std::chrono::steady_clock::now();
  const auto cpu0 = thread_cpu_time(heartbeat);

  std::uint64_t checks = 0;
  std::uint64_t expired = 0;
  std::size_t next = 0;
  for (auto at = t0 + o.sample_every; at < t0 + o.run_for; at += o.sample_every) {
    std::this_thread::sleep_until(at);
    for (std::int64_t n = 0; n < o.sampled; ++n, next = (next + 1) % held.size()) {
      const cs::Reservation& mine = held[next].hold().reservation();
      const cs::TimePoint now = cs::SystemClock().now();
      const std::optional<cs::Reservation> r = storage.reservation(keys[next]);
      ++checks;
      if (!r || r->owner != mine.owner || r->token != mine.token || r->expires_at <= now) {
        ++expired;
      }
    }
  }
  std::this_thread::sleep_until(t0 + o.run_for);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = std::chrono::duration<double>(thread_cpu_time(heartbeat) - cpu0).count();
  const cs::Stats s = manager.stats();
  const std::uint64_t trips =
      round_trips() - trips0 - (o.checks_are_round_trips ? checks : std::uint64_t{0});
  held.clear();  // releases them; the heartbeat skips the leases removed meanwhile

  state.SetIterationTime(seconds);
  state.counters["round_trips_per_s"] = static_cast<double>(trips) / seconds;
  state.counters["hb_calls_per_s"] =
      static_cast<double>(s.heartbeat_batches - s0.heartbeat_batches) / seconds;
  state.counters["extensions_per_s"] = static_cast<double>(s.heartbeats - s0.heartbeats) / seconds;
  state.counters["expired_seen"] = static_cast<double>(expired + s.lost);
  state.counters["pct_checks_expired"] =
      checks ? 100.0 * static_cast<double>(expired) / static_cast<double>(checks) : 0.0;
  state.counters["hb_failures"] = static_cast<double>(s.heartbeat_failures);
  state.counters["hb_cpu_ms_per_min"] = cpu / seconds * 60e3;
  state.counters["holds"] = static_cast<double>(o.holds);
  if (o.must_keep && expired + s.lost > 0) {
    state.SkipWithError((std::to_string(expired) +
                         " checks found a live hold's reservation expired, " +
                         std::to_string(s.lost) + " holds were lost")
                            .c_str());
  }
}

/// Registers `<name>/unbatched` (the baseline) and `<name>/batched`, each run once whatever the
/// flags say (a run lasts up to a minute), and their table.
inline void add_keep_alive_pair(const std::string& name,
                                std::function<void(benchmark::State&)> unbatched,
                                std::function<void(benchmark::State&)> batched) {
  for (auto* v : {&unbatched, &batched}) {
    benchmark::RegisterBenchmark((name + (v == &batched ? "/batched" : "/unbatched")).c_str(), *v)
        ->UseManualTime()
        ->Iterations(1)
        ->Repetitions(1);
  }
  compare({name,
           "unbatched",
           "round_trips_per_s",
           "",
           0,
           0,
           false,
           {"expired_seen", "pct_checks_expired", "extensions_per_s", "hb_calls_per_s",
            "hb_cpu_ms_per_min"}});
}

}  // namespace bench
