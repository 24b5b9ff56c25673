#pragma once

// A manager's counters. The hit counter is bumped on the hot path by every thread, so it is
// striped over cache lines (one per thread slot) instead of being one contended atomic.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "../events.hpp"

namespace cacheserialize {
namespace detail {

class StripedCounter {
 public:
  void add(std::uint64_t n = 1) noexcept {
    slots_[slot()].value.fetch_add(n, std::memory_order_relaxed);
  }
  std::uint64_t load() const noexcept {
    std::uint64_t sum = 0;
    for (const auto& s : slots_) sum += s.value.load(std::memory_order_relaxed);
    return sum;
  }

 private:
  static constexpr std::size_t kSlots = 16;
  struct alignas(64) Slot {
    std::atomic<std::uint64_t> value{0};
  };
  static std::size_t slot() noexcept {
    static std::atomic<std::size_t> next{0};
    thread_local const std::size_t mine = next.fetch_add(1, std::memory_order_relaxed) % kSlots;
    return mine;
  }
  std::array<Slot, kSlots> slots_{};
};

struct Counters {
  StripedCounter hits;
  StripedCounter misses;
  std::atomic<std::uint64_t> executions{0};
  std::atomic<std::uint64_t> waits{0};
  std::atomic<std::uint64_t> takeovers{0};
  std::atomic<std::uint64_t> failures{0};
  std::atomic<std::uint64_t> lost{0};
  std::atomic<std::uint64_t> heartbeats{0};
  std::atomic<std::uint64_t> heartbeat_failures{0};
  std::atomic<std::uint64_t> heartbeat_batches{0};
  std::atomic<std::uint64_t> store_failures{0};
  std::atomic<std::uint64_t> corrupt_outputs{0};
  std::atomic<std::uint64_t> held{0};
  std::atomic<std::uint64_t> adoptions{0};
  std::atomic<std::uint64_t> detached{0};
  std::atomic<std::uint64_t> abandoned{0};
  std::atomic<std::uint64_t> aborted{0};
  std::atomic<std::uint64_t> waiters_active{0};  // gauge

  static void bump(std::atomic<std::uint64_t>& c) noexcept {
    c.fetch_add(1, std::memory_order_relaxed);
  }

  Stats snapshot() const noexcept {
    Stats s;
    s.hits = hits.load();
    s.misses = misses.load();
    s.executions = executions.load(std::memory_order_relaxed);
    s.waits = waits.load(std::memory_order_relaxed);
    s.takeovers = takeovers.load(std::memory_order_relaxed);
    s.failures = failures.load(std::memory_order_relaxed);
    s.lost = lost.load(std::memory_order_relaxed);
    s.heartbeats = heartbeats.load(std::memory_order_relaxed);
    s.heartbeat_failures = heartbeat_failures.load(std::memory_order_relaxed);
    s.heartbeat_batches = heartbeat_batches.load(std::memory_order_relaxed);
    s.store_failures = store_failures.load(std::memory_order_relaxed);
    s.corrupt_outputs = corrupt_outputs.load(std::memory_order_relaxed);
    s.held = held.load(std::memory_order_relaxed);
    s.adoptions = adoptions.load(std::memory_order_relaxed);
    s.detached = detached.load(std::memory_order_relaxed);
    s.abandoned = abandoned.load(std::memory_order_relaxed);
    s.aborted = aborted.load(std::memory_order_relaxed);
    s.waiters_active = waiters_active.load(std::memory_order_relaxed);
    return s;
  }
};

}  // namespace detail
}  // namespace cacheserialize
