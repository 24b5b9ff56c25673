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
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../cache_key.hpp"
#include "../clock.hpp"
#include "../detail/get_or_extend.hpp"
#include "../detail/reader_slot_locks.hpp"
#include "../signal.hpp"
#include "../storage.hpp"

namespace cacheserialize {

/// A thread-safe in-process store of outputs (kept as C++ objects, so a hit costs one copy of
/// the value and no serialisation) and reservations.
///
/// Keys are spread over shards, each a reader-writer lock over a hash map, so hits on different
/// keys never contend on one lock, and hits on the same key share it without writing a common
/// cache line (the lock's readers count themselves per thread slot, and `visit_output` lends the
/// output without its reference count). Waiters subscribe to a key and are woken the moment its
/// output is stored or its reservation released.
///
/// A handle: copies share the store; it lives until its last copy is gone.
///
/// Thread safety: every member may be called concurrently from any number of threads.
class InMemoryStorage {
 public:
  /// Copies share one store. Moving copies too, so that a handle is never left empty.
  InMemoryStorage(const InMemoryStorage&) = default;
  InMemoryStorage& operator=(const InMemoryStorage&) = default;

  /// @return the same address for every copy of this handle, and another for every other store
  ///         handle alive: what `default_manager` shares one manager by.
  const void* identity() const noexcept { return state_.get(); }

  static constexpr bool stores_objects = true;

  /// @param shards the number of lock shards (more shards, less contention between keys).
  /// @throws std::invalid_argument if `shards` is zero.
  explicit InMemoryStorage(std::size_t shards = 64) : state_(make_state(shards)) {}

  /// @return the stored output for `key`, if any.
  std::optional<StoredOutput> get(const Key& key) const {
    const auto shard = lock_shard<ReadLock>(key);
    const Entry* e = shard.find(key.encoded());
    if (!e || !e->output) return std::nullopt;
    return e->output;
  }

  /// Calls `f(const StoredOutput&)` with the stored output for `key`, if any, under the
  /// shard's read lock: a hit that copies the value out this way shares no reference count with
  /// other threads' hits (see storage.hpp).
  /// @param f must not call this storage (it runs under the shard's lock); may throw, and the
  ///          exception propagates once the lock is released.
  /// @return whether there was an output (and `f` was called).
  template <class F>
  bool visit_output(const Key& key, F&& f) const {
    const auto shard = lock_shard<ReadLock>(key);
    const Entry* e = shard.find(key.encoded());
    if (!e || !e->output) return false;
    std::forward<F>(f)(static_cast<const StoredOutput&>(*e->output));
    return true;
  }

  /// Get-or-extend, as the storage contract in storage.hpp describes.
  AcquireResult acquire(const Key& key, const AcquireRequest& req) {
    auto shard = lock_shard<WriteLock>(key);
    Entry& e = shard.get_or_add(key.encoded());
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
    auto shard = lock_shard<WriteLock>(key);
    ExtendResult result;
    Entry* e = shard.find(key.encoded());
    if (!e || !e->reservation) return result;
    Reservation& r = *e->reservation;
    if (!same(r, mine)) {
      result.current = r;
      return result;
    }
    r.expires_at = detail::saturating_add(now, ttl);
    result.status = ExtendStatus::extended;
    result.current = r;
    return result;
  }

  /// `extend` for each item of `batch` (storage.hpp), one after another: each key under its own
  /// shard lock, as `extend` takes it.
  /// @return result i for batch[i].
  std::vector<ExtendResult> extend_many(const std::vector<Extension>& batch, TimePoint now) {
    return detail::extend_each(*this, batch, now);
  }

  /// Releases `mine` if it is still the key's reservation, and wakes the key's waiters.
  ReleaseStatus release(const Key& key, const Reservation& mine) {
    auto shard = lock_shard<WriteLock>(key);
    Entry* e = shard.find(key.encoded());
    if (!e || !e->reservation) return ReleaseStatus::not_held;
    if (!same(*e->reservation, mine)) return ReleaseStatus::held_by_other;
    e->reservation.reset();
    shard.settle(*e);
    return ReleaseStatus::released;
  }

  /// Stores `output` and releases `mine` in one step, if `mine` is still the key's reservation.
  StoreResult store_and_release(const Key& key, const Reservation& mine, StoredOutput output,
                                TimePoint /*now*/) {
    auto shard = lock_shard<WriteLock>(key);
    StoreResult result;
    Entry* e = shard.find(key.encoded());
    if (!e || !e->reservation) return result;
    if (!same(*e->reservation, mine)) {
      result.current = *e->reservation;
      return result;
    }
    e->output = std::move(output);
    e->reservation.reset();
    shard.settle(*e);
    result.status = StoreStatus::stored;
    return result;
  }

  /// Stores `output` whoever holds the key, and wakes the key's waiters.
  void put(const Key& key, StoredOutput output) {
    auto shard = lock_shard<WriteLock>(key);
    Entry& e = shard.get_or_add(key.encoded());
    e.output = std::move(output);
    shard.settle(e);
  }

  /// Raises `signal` after every store, put, release or erase of `key` while the returned
  /// subscription lives.
  Subscription subscribe(const Key& key, Notifiable& signal) {
    const std::size_t h = hash_of(key);
    const std::size_t i = shard_index(h);
    {
      LockedShard<WriteLock> shard(*state_, h, i);
      shard.get_or_add(key.encoded()).watchers.push_back(&signal);
    }
    return Subscription([state = state_, i, h, encoded = key.encoded(), s = &signal] {
      LockedShard<WriteLock> shard(*state, h, i);
      Entry* e = shard.find(encoded);
      if (!e) return;
      auto& w = e->watchers;
      w.erase(std::find(w.begin(), w.end(), s));
      if (e->empty()) shard.erase(*e);
    });
  }

  /// Removes the stored output of `key`, if any; a reservation on it is left alone.
  /// @return whether an output was removed.
  bool erase(const Key& key) {
    auto shard = lock_shard<WriteLock>(key);
    Entry* e = shard.find(key.encoded());
    if (!e || !e->output) return false;
    e->output.reset();
    shard.settle(*e);
    return true;
  }

  /// @return the reservation on `key`, live or expired, if any.
  std::optional<Reservation> reservation(const Key& key) const {
    const auto shard = lock_shard<ReadLock>(key);
    const Entry* e = shard.find(key.encoded());
    if (!e) return std::nullopt;
    return e->reservation;
  }

  /// @return the number of stored outputs.
  std::size_t size() const {
    std::size_t n = 0;
    for (std::size_t i = 0; i < state_->shard_count; ++i) {
      const Shard& shard = state_->shards[i];
      ReadLock lock(state_->locks, i);
      shard.entries.for_each([&](const Entry& e) { n += e.output ? 1u : 0u; });
    }
    return n;
  }

 private:
  struct Entry {
    Entry(std::size_t h, const std::string& k) : hash(h), encoded(k) {}
    std::size_t hash;     // of `encoded`
    std::string encoded;  // the key
    std::optional<StoredOutput> output;
    std::optional<Reservation> reservation;
    std::vector<Notifiable*> watchers;  // subscribed waiters; each unsubscribes before it is gone
    std::unique_ptr<Entry> next;    // in the same bucket
    bool empty() const noexcept { return !output && !reservation && watchers.empty(); }
  };

  // A shard's entries: a chained hash table with a power-of-two number of buckets. The key is
  // hashed once per operation, for the shard and the bucket alike, and a bucket is picked with
  // a mask: std::unordered_map would hash again and take the hash modulo a prime, and those
  // divisions and the second hash were a third of the cost of a hit. Not thread-safe: the
  // shard's lock guards it.
  class Entries {
   public:
    Entry* find(std::size_t h, std::string_view encoded) const noexcept {
      if (buckets_.empty()) return nullptr;
      for (Entry* e = buckets_[h & (buckets_.size() - 1)].get(); e; e = e->next.get()) {
        if (e->hash == h && e->encoded == encoded) return e;
      }
      return nullptr;
    }

    Entry& get_or_add(std::size_t h, const std::string& encoded) {
      if (Entry* e = find(h, encoded)) return *e;
      if (size_ >= buckets_.size()) grow();
      auto entry = std::make_unique<Entry>(h, encoded);
      std::unique_ptr<Entry>& head = buckets_[h & (buckets_.size() - 1)];
      entry->next = std::move(head);
      head = std::move(entry);
      ++size_;
      return *head;
    }

    /// Removes `e`, which must be in the table.
    void erase(const Entry& e) noexcept {
      std::unique_ptr<Entry>* link = &buckets_[e.hash & (buckets_.size() - 1)];
      while (link->get() != &e) link = &(*link)->next;
      std::unique_ptr<Entry> gone = std::move(*link);
      *link = std::move(gone->next);
      --size_;
    }

    template <class F>
    void for_each(F f) const {
      for (const auto& head : buckets_) {
        for (const Entry* e = head.get(); e; e = e->next.get()) f(*e);
      }
    }

    ~Entries() {  // unlinks chains one entry at a time: no deep recursion on long chains
      for (auto& head : buckets_) {
        while (head) head = std::move(head->next);
      }
    }

   private:
    void grow() {
      std::vector<std::unique_ptr<Entry>> bigger(buckets_.empty() ? 8 : buckets_.size() * 2);
      for (auto& head : buckets_) {
        while (head) {
          std::unique_ptr<Entry> e = std::move(head);
          head = std::move(e->next);
          std::unique_ptr<Entry>& to = bigger[e->hash & (bigger.size() - 1)];
          e->next = std::move(to);
          to = std::move(e);
        }
      }
      buckets_.swap(bigger);
    }

    std::vector<std::unique_ptr<Entry>> buckets_;
    std::size_t size_ = 0;
  };

  using ReadLock = detail::ReaderSlotLocks::SharedGuard;
  using WriteLock = detail::ReaderSlotLocks::UniqueGuard;

  // Guarded by lock i of State::locks, for the shard i (shared: get, visit_output, reservation,
  // size; exclusive: every change and subscription). That lock is taken before any watcher's
  // signal mutex.
  struct alignas(64) Shard {
    Entries entries;
  };

  // The shard locks are reader-slot locks (detail/reader_slot_locks.hpp): hits on one hot key
  // from many threads write no cache line in common, where a std::shared_mutex's reader count
  // was written by every hit. Changes pay a scan of the slots instead (8 to 64 cache lines).
  // Memory, with the default 64 shards: 64 B per shard for its table, 64 B per shard for its
  // writer (mutex and flag), and 256 B of reader counters per slot: 10 KiB with 8 slots (up to
  // 4 hardware threads), 24 KiB with 64 (32 or more); the shards with their std::shared_mutex
  // took 8 KiB.
  struct State {
    explicit State(std::size_t n)
        : shard_count(n), shards(std::make_unique<Shard[]>(n)), locks(n) {}
    std::size_t shard_count;
    std::unique_ptr<Shard[]> shards;
    detail::ReaderSlotLocks locks;
    std::atomic<std::uint64_t> last_token{0};
  };

  static std::shared_ptr<State> make_state(std::size_t shards) {
    if (shards == 0) {
      throw std::invalid_argument("cacheserialize::InMemoryStorage: the shard count must be > 0");
    }
    return std::make_shared<State>(shards);
  }

  static std::size_t hash_of(const Key& key) noexcept {
    return std::hash<std::string_view>{}(key.encoded());
  }

  // The hash's high 32 bits scaled to the shard count (a shard count that fits in memory fits in
  // 32 bits): a multiplication, where `%` would be a slow 64-bit division. Buckets use the low
  // bits.
  std::size_t shard_index(std::size_t h) const noexcept {
    const std::uint64_t high = static_cast<std::uint64_t>(h) >> (sizeof(std::size_t) * 8 - 32);
    return static_cast<std::size_t>((high * state_->shard_count) >> 32);
  }

  // One operation's hold on the shard of a key: the key hashed once, for the shard and its
  // bucket alike, and the shard's lock held as `Lock` while this lives.
  template <class Lock>
  class LockedShard {
   public:
    LockedShard(State& state, std::size_t hash, std::size_t index)
        : hash_(hash), entries_(state.shards[index].entries), lock_(state.locks, index) {}

    Entry* find(std::string_view encoded) const noexcept { return entries_.find(hash_, encoded); }
    Entry& get_or_add(const std::string& encoded) { return entries_.get_or_add(hash_, encoded); }
    void erase(const Entry& e) noexcept { entries_.erase(e); }

    // After a change that may end a wait: wake the key's waiters, drop the entry if it is empty.
    void settle(Entry& e) noexcept {
      for (Notifiable* s : e.watchers) s->notify();
      if (e.empty()) erase(e);
    }

   private:
    std::size_t hash_;
    Entries& entries_;
    Lock lock_;
  };

  template <class Lock>
  LockedShard<Lock> lock_shard(const Key& key) const {
    const std::size_t h = hash_of(key);
    return LockedShard<Lock>(*state_, h, shard_index(h));
  }

  static bool same(const Reservation& a, const Reservation& b) noexcept {
    return a.token == b.token && a.owner == b.owner;
  }

  // Tokens come from one counter per store, so they grow per key even across erasures.
  std::uint64_t next_token() noexcept {
    return state_->last_token.fetch_add(1, std::memory_order_relaxed) + 1;
  }

  std::shared_ptr<State> state_;
};

}  // namespace cacheserialize
