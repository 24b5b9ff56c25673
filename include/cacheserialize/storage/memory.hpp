#pragma once

/// @file storage/memory.hpp
/// `InMemoryStorage`: outputs and reservations in this process's memory, shared by every
/// wrapper and manager in the process that holds a copy of the handle.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../cache_key.hpp"
#include "../clock.hpp"
#include "../detail/get_or_extend.hpp"
#include "../signal.hpp"
#include "../storage.hpp"

namespace cacheserialize {

/// A thread-safe in-process store of outputs (kept as C++ objects, so a hit costs one copy of
/// the value and no serialisation) and reservations.
///
/// Keys are spread over shards, each a reader-writer lock over a hash map, so hits on different
/// keys never contend on one lock, and hits on the same key share it. Waiters subscribe to a key
/// and are woken the moment its output is stored or its reservation released.
///
/// A handle: copies share the store; it lives until its last copy is gone.
///
/// Thread safety: every member may be called concurrently from any number of threads.
class InMemoryStorage {
 public:
  static constexpr bool stores_objects = true;

  /// @param shards the number of lock shards (more shards, less contention between keys).
  /// @throws std::invalid_argument if `shards` is zero.
  explicit InMemoryStorage(std::size_t shards = 64) : state_(make_state(shards)) {}

  /// @return the stored output for `key`, if any.
  std::optional<StoredOutput> get(const Key& key) const {
    const Shard& shard = shard_for(key);
    std::shared_lock<std::shared_mutex> lock(shard.mu);
    const auto it = shard.entries.find(key.encoded());
    if (it == shard.entries.end() || !it->second.output) return std::nullopt;
    return it->second.output;
  }

  /// Get-or-extend, as the storage contract in storage.hpp describes.
  AcquireResult acquire(const Key& key, const AcquireRequest& req) {
    Shard& shard = shard_for(key);
    std::unique_lock<std::shared_mutex> lock(shard.mu);
    Entry& e = shard.entries[key.encoded()];
    AcquireResult result;
    if (!req.overwrite && e.output) {
      result.status = AcquireStatus::hit;
      result.output = *e.output;
      return result;
    }
    return detail::get_or_extend(e.reservation, req, [this] { return next_token(); });
  }

  /// Extends `mine` to `now + ttl` if it is still the key's reservation.
  ExtendResult extend(const Key& key, const Reservation& mine, TimePoint now, Duration ttl) {
    Shard& shard = shard_for(key);
    std::unique_lock<std::shared_mutex> lock(shard.mu);
    ExtendResult result;
    const auto it = shard.entries.find(key.encoded());
    if (it == shard.entries.end() || !it->second.reservation) return result;
    Reservation& r = *it->second.reservation;
    if (!same(r, mine)) {
      result.current = r;
      return result;
    }
    r.expires_at = detail::saturating_add(now, ttl);
    result.status = ExtendStatus::extended;
    result.current = r;
    return result;
  }

  /// Releases `mine` if it is still the key's reservation, and wakes the key's waiters.
  ReleaseStatus release(const Key& key, const Reservation& mine) {
    Shard& shard = shard_for(key);
    std::unique_lock<std::shared_mutex> lock(shard.mu);
    const auto it = shard.entries.find(key.encoded());
    if (it == shard.entries.end() || !it->second.reservation) return ReleaseStatus::not_held;
    if (!same(*it->second.reservation, mine)) return ReleaseStatus::held_by_other;
    it->second.reservation.reset();
    settle(shard, it);
    return ReleaseStatus::released;
  }

  /// Stores `output` and releases `mine` in one step, if `mine` is still the key's reservation.
  StoreResult store_and_release(const Key& key, const Reservation& mine, StoredOutput output,
                                TimePoint /*now*/) {
    Shard& shard = shard_for(key);
    std::unique_lock<std::shared_mutex> lock(shard.mu);
    StoreResult result;
    const auto it = shard.entries.find(key.encoded());
    if (it == shard.entries.end() || !it->second.reservation) return result;
    if (!same(*it->second.reservation, mine)) {
      result.current = *it->second.reservation;
      return result;
    }
    it->second.output = std::move(output);
    it->second.reservation.reset();
    settle(shard, it);
    result.status = StoreStatus::stored;
    return result;
  }

  /// Stores `output` whoever holds the key, and wakes the key's waiters.
  void put(const Key& key, StoredOutput output) {
    Shard& shard = shard_for(key);
    std::unique_lock<std::shared_mutex> lock(shard.mu);
    const auto it = shard.entries.try_emplace(key.encoded()).first;
    it->second.output = std::move(output);
    settle(shard, it);
  }

  /// Raises `signal` after every store, put, release or erase of `key` while the returned
  /// subscription lives.
  Subscription subscribe(const Key& key, Signal& signal) {
    Shard& shard = shard_for(key);
    {
      std::unique_lock<std::shared_mutex> lock(shard.mu);
      shard.entries[key.encoded()].watchers.push_back(&signal);
    }
    return Subscription([state = state_, &shard, encoded = key.encoded(), s = &signal] {
      std::unique_lock<std::shared_mutex> lock(shard.mu);
      const auto it = shard.entries.find(encoded);
      if (it == shard.entries.end()) return;
      auto& w = it->second.watchers;
      w.erase(std::find(w.begin(), w.end(), s));
      if (it->second.empty()) shard.entries.erase(it);
    });
  }

  /// Removes the stored output of `key`, if any; a reservation on it is left alone.
  /// @return whether an output was removed.
  bool erase(const Key& key) {
    Shard& shard = shard_for(key);
    std::unique_lock<std::shared_mutex> lock(shard.mu);
    const auto it = shard.entries.find(key.encoded());
    if (it == shard.entries.end() || !it->second.output) return false;
    it->second.output.reset();
    settle(shard, it);
    return true;
  }

  /// @return the reservation on `key`, live or expired, if any.
  std::optional<Reservation> reservation(const Key& key) const {
    const Shard& shard = shard_for(key);
    std::shared_lock<std::shared_mutex> lock(shard.mu);
    const auto it = shard.entries.find(key.encoded());
    if (it == shard.entries.end()) return std::nullopt;
    return it->second.reservation;
  }

  /// @return the number of stored outputs.
  std::size_t size() const {
    std::size_t n = 0;
    for (std::size_t i = 0; i < state_->shard_count; ++i) {
      const Shard& shard = state_->shards[i];
      std::shared_lock<std::shared_mutex> lock(shard.mu);
      for (const auto& kv : shard.entries) n += kv.second.output ? 1u : 0u;
    }
    return n;
  }

 private:
  struct Entry {
    std::optional<StoredOutput> output;
    std::optional<Reservation> reservation;
    std::vector<Signal*> watchers;  // subscribed waiters; each unsubscribes before it is gone
    bool empty() const noexcept { return !output && !reservation && watchers.empty(); }
  };

  struct alignas(64) Shard {
    mutable std::shared_mutex mu;  // taken before any watcher's signal mutex
    std::unordered_map<std::string, Entry> entries;
  };

  struct State {
    std::size_t shard_count = 0;
    std::unique_ptr<Shard[]> shards;
    std::atomic<std::uint64_t> last_token{0};
  };

  static std::shared_ptr<State> make_state(std::size_t shards) {
    if (shards == 0) {
      throw std::invalid_argument("cacheserialize::InMemoryStorage: the shard count must be > 0");
    }
    auto state = std::make_shared<State>();
    state->shard_count = shards;
    state->shards = std::make_unique<Shard[]>(shards);
    return state;
  }

  Shard& shard_for(const Key& key) const {
    const std::size_t h = std::hash<std::string_view>{}(key.encoded());
    return state_->shards[h % state_->shard_count];
  }

  static bool same(const Reservation& a, const Reservation& b) noexcept {
    return a.token == b.token && a.owner == b.owner;
  }

  // Tokens come from one counter per store, so they grow per key even across erasures.
  std::uint64_t next_token() noexcept {
    return state_->last_token.fetch_add(1, std::memory_order_relaxed) + 1;
  }

  // After a change that may end a wait: wake the key's waiters, drop the entry if it is empty.
  static void settle(Shard& shard, std::unordered_map<std::string, Entry>::iterator it) noexcept {
    for (Signal* s : it->second.watchers) s->notify();
    if (it->second.empty()) shard.entries.erase(it);
  }

  std::shared_ptr<State> state_;
};

}  // namespace cacheserialize
