#pragma once

/// @file storage/memory.hpp
/// `InMemoryStorage`: outputs and reservations in this process's memory, shared by every
/// wrapper and manager in the process that holds a copy of the handle.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
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

/// Why a bounded `InMemoryStorage` removed an output on its own.
enum class RemovalCause {
  size,     ///< evicted to keep the store within `max_entries` / `max_bytes`
  expired,  ///< older than `expire_after_write`
};

/// @return "size" or "expired".
inline const char* to_string(RemovalCause c) noexcept {
  return c == RemovalCause::size ? "size" : "expired";
}

/// What `InMemoryOptions::on_evict` receives. The view is valid only during the call.
struct Eviction {
  std::string_view key;  ///< the key's encoded bytes (`Key::encoded()`)
  /// Why the entry was removed.
  RemovalCause cause = RemovalCause::size;
  std::size_t weight = 0;  ///< the bytes the entry was charged (see `InMemoryOptions::max_bytes`)
};

/// Bounds and expiry of an `InMemoryStorage`. Every field left as it is: unbounded, no expiry,
/// and exactly as fast as a store built from a shard count.
struct InMemoryOptions {
  /// The number of lock shards (more shards, less contention between keys). A bounded store
  /// uses fewer when its bound is small, so that each shard keeps at least 32 entries (or
  /// 64 KiB): each shard picks its own victims.
  std::size_t shards = 64;
  /// At most this many outputs are kept (> 0, <= 2^40).
  std::optional<std::size_t> max_entries;
  /// At most this many bytes of outputs are kept (>= 4096, <= 2^60): each output is charged its
  /// weight (weight.hpp: its bytes including the heap it owns, or what `weigher` says) plus the
  /// store's own bookkeeping for the entry (`InMemoryStorage::entry_overhead()`, about 330 bytes,
  /// and its key), so the bound is close to the memory the outputs really take. An output heavier
  /// than the bound is not stored: the store throws `std::length_error` (a wrapper reports
  /// `store_failed` and returns the value).
  std::optional<std::size_t> max_bytes;
  /// The weight of an output, instead of its type's (weight.hpp). May throw: the output is then
  /// not stored and the exception reaches the storing call (after the reservation is released).
  std::function<std::size_t(const StoredOutput&)> weigher;
  /// An output older than this (since it was written) is never returned, and is removed when
  /// next touched, when eviction reaches it, or by `prune`. Must be > 0.
  std::optional<Duration> expire_after_write;
  /// The store's clock, for write times (`expire_after_write`, `prune`). Empty: the system clock.
  /// To drive a store from a `ManualClock` (or to share the manager's clock), pass
  /// `[clock] { return clock.now(); }`. Called on writes, and on hits when outputs expire, under
  /// a shard's lock: it must be quick and must not call the store.
  std::function<TimePoint()> clock;
  /// Called for every output evicted or expired by the store itself (not for `erase` or
  /// `prune`), on the thread that caused it, outside the store's locks. Exceptions are swallowed.
  std::function<void(const Eviction&)> on_evict;
};

/// A snapshot of an `InMemoryStorage`'s counts (`InMemoryStorage::stats`).
struct InMemoryStats {
  std::size_t entries = 0;        ///< outputs stored now (as `size()`)
  std::size_t bytes = 0;          ///< their charged bytes now (as `bytes()`)
  std::uint64_t evictions = 0;    ///< outputs evicted to respect the bounds, since creation
  std::uint64_t expirations = 0;  ///< outputs removed by `expire_after_write`
  std::uint64_t rejections = 0;   ///< outputs refused: heavier than `max_bytes`, or the weigher
                                  ///< threw
};

/// A thread-safe in-process store of outputs (kept as C++ objects, so a hit costs one copy of
/// the value and no serialisation) and reservations.
///
/// Keys are spread over shards, each a reader-writer lock over a hash map, so hits on different
/// keys never contend on one lock, and hits on the same key share it without writing a common
/// cache line (the lock's readers count themselves per thread slot, and `visit_output` lends the
/// output without its reference count). Waiters subscribe to a key and are woken the moment its
/// output is stored or its reservation released.
///
/// Bounds (`InMemoryOptions`): a store with `max_entries` or `max_bytes` evicts with S3-FIFO
/// (Yang et al., SOSP 2023) per shard: a new output enters a small FIFO queue (10% of the
/// shard); one that was hit while there moves to the main queue when it reaches the head,
/// one that was not is evicted and remembered in a ghost table (4 bytes per entry), and comes
/// back straight into the main queue if it is stored again soon; the main queue is a CLOCK of
/// 2-bit frequencies. A hit only raises the entry's frequency (a relaxed load and, until it
/// saturates, a relaxed store, under the shard's read lock): no list is reordered, so hits stay
/// read-only on the lock. The bound is global: a store evicts in its own shard first, then
/// round the others. An output whose key has a reservation or waiters, or that a `visit_output`
/// is reading (it holds the read lock), is never evicted; outputs in use may so exceed the bound
/// until they are no longer.
///
/// A handle: copies share the store; it lives until its last copy is gone.
///
/// Thread safety: every member may be called concurrently from any number of threads.
class InMemoryStorage {
 public:
  /// Copies share one store. Moving copies too, so that a handle is never left empty.
  InMemoryStorage(const InMemoryStorage&) = default;
  /// Makes this a handle to another store.
  InMemoryStorage& operator=(const InMemoryStorage&) = default;

  /// @return the same address for every copy of this handle, and another for every other store
  ///         handle alive: what `default_manager` shares one manager by.
  const void* identity() const noexcept { return state_.get(); }

  /// Outputs are kept as C++ objects: a hit copies the object, nothing is encoded.
  static constexpr bool stores_objects = true;

  /// An unbounded store.
  /// @param shards the number of lock shards (more shards, less contention between keys).
  /// @throws std::invalid_argument if `shards` is zero.
  explicit InMemoryStorage(std::size_t shards = 64) : InMemoryStorage(options_of(shards)) {}

  /// A store with the bounds and expiry of `options`.
  /// @throws std::invalid_argument naming the option for a zero or absurd limit.
  explicit InMemoryStorage(InMemoryOptions options) : state_(make_state(std::move(options))) {}

  /// @return the stored output for `key`, if any.
  std::optional<StoredOutput> get(const Key& key) const {
    const auto shard = lock_shard<ReadLock>(key);
    const Entry* e = shard.find(key.encoded());
    if (!e || !e->output) return std::nullopt;
    if (state_->bounded && !state_->hit(*e)) return std::nullopt;
    return e->output;
  }

  /// Calls `f(const StoredOutput&)` with the stored output for `key`, if any, under the
  /// shard's read lock: a hit that copies the value out this way shares no reference count with
  /// other threads' hits (see storage.hpp). The output is not evicted while `f` runs.
  /// @param f must not call this storage (it runs under the shard's lock); may throw, and the
  ///          exception propagates once the lock is released.
  /// @return whether there was an output (and `f` was called).
  /// @param key the key to look up.
  template <class F>
  bool visit_output(const Key& key, F&& f) const {
    const auto shard = lock_shard<ReadLock>(key);
    const Entry* e = shard.find(key.encoded());
    if (!e || !e->output) return false;
    if (state_->bounded && !state_->hit(*e)) return false;
    std::forward<F>(f)(static_cast<const StoredOutput&>(*e->output));
    return true;
  }

  /// Get-or-extend, as the storage contract in storage.hpp describes.
  AcquireResult acquire(const Key& key, const AcquireRequest& req) {
    Aftermath after(*state_);
    auto shard = lock_shard<WriteLock>(key, &after);
    Entry& e = shard.get_or_add(key.encoded());
    if (e.output && state_->expires && state_->expired(e, state_->now())) {
      shard.drop(e, RemovalCause::expired);
    }
    AcquireResult result;
    if (!req.overwrite && e.output) {
      if (state_->bounded) e.touch();
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
  /// The output's write time is the store's clock's (`InMemoryOptions::clock`), not `now`.
  /// @throws std::length_error if the output is heavier than `max_bytes`, or what the weigher
  ///         threw: nothing is stored, and `mine` is released first (its waiters proceed).
  StoreResult store_and_release(const Key& key, const Reservation& mine, StoredOutput output,
                                TimePoint /*now*/) {
    std::size_t charge = 0;
    try {
      charge = charge_of(key, output);
    } catch (...) {
      release(key, mine);
      throw;
    }
    const TimePoint written = state_->now();
    Aftermath after(*state_);
    auto shard = lock_shard<WriteLock>(key, &after);
    StoreResult result;
    Entry* e = shard.find(key.encoded());
    if (!e || !e->reservation) return result;
    if (!same(*e->reservation, mine)) {
      result.current = *e->reservation;
      return result;
    }
    shard.set_output(*e, std::move(output), charge, written);
    e->reservation.reset();
    shard.settle(*e);
    shard.make_room(e);
    result.status = StoreStatus::stored;
    return result;
  }

  /// Stores `output` whoever holds the key, and wakes the key's waiters.
  /// @throws as `store_and_release`, without a reservation to release.
  void put(const Key& key, StoredOutput output) {
    const std::size_t charge = charge_of(key, output);
    const TimePoint written = state_->now();
    Aftermath after(*state_);
    auto shard = lock_shard<WriteLock>(key, &after);
    Entry& e = shard.get_or_add(key.encoded());
    shard.set_output(e, std::move(output), charge, written);
    shard.settle(e);
    shard.make_room(&e);
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
    Aftermath after(*state_);
    auto shard = lock_shard<WriteLock>(key, &after);
    Entry* e = shard.find(key.encoded());
    if (!e || !e->output) return false;
    shard.drop(*e, std::nullopt);
    shard.settle(*e);
    return true;
  }

  /// Removes what is old, as `FileSystemStorage::prune` does on its directory: outputs written
  /// `older_than` ago or earlier (by the store's clock, `InMemoryOptions::clock`), and
  /// reservations that expired `older_than` ago or earlier. A key with a live reservation is left
  /// alone, output and all; outputs being read by `visit_output` are removed only after it
  /// returns (each shard is pruned under its write lock). Waiters of a key whose expired
  /// reservation is removed are woken, as by a release. Not reported to `on_evict`.
  /// @return the outputs and reservations removed (`temporaries_removed` is always 0).
  /// @throws std::invalid_argument for a negative age.
  PruneResult prune(Duration older_than) {
    if (older_than.count() < 0) {
      throw std::invalid_argument(
          "cacheserialize::InMemoryStorage::prune: older_than must not be negative");
    }
    const TimePoint now = state_->now();
    const TimePoint cutoff = detail::saturating_add(now, -older_than);
    PruneResult result;
    std::vector<Entry*> entries;
    for (std::size_t i = 0; i < state_->shard_count; ++i) {
      Aftermath after(*state_);
      LockedShard<WriteLock> shard(*state_, 0, i, &after);
      entries.clear();
      shard.entries().for_each([&](const Entry& e) { entries.push_back(const_cast<Entry*>(&e)); });
      for (Entry* e : entries) {
        if (e->reservation && e->reservation->expires_at > now) continue;  // live: left alone
        bool changed = false;
        if (e->output && e->written <= cutoff) {
          shard.drop(*e, std::nullopt);
          ++result.outputs_removed;
          changed = true;
        }
        if (e->reservation && e->reservation->expires_at <= cutoff) {
          e->reservation.reset();
          ++result.reservations_removed;
          changed = true;
        }
        if (changed) shard.settle(*e);
      }
    }
    return result;
  }

  /// @return the reservation on `key`, live or expired, if any.
  std::optional<Reservation> reservation(const Key& key) const {
    const auto shard = lock_shard<ReadLock>(key);
    const Entry* e = shard.find(key.encoded());
    if (!e) return std::nullopt;
    return e->reservation;
  }

  /// @return the number of stored outputs (expired ones included until they are removed): one
  ///         relaxed atomic load, no lock.
  std::size_t size() const noexcept { return state_->entries.load(std::memory_order_relaxed); }

  /// @return the bytes charged for the stored outputs (see `InMemoryOptions::max_bytes`): one
  ///         relaxed atomic load, no lock. Counted on unbounded stores too.
  std::size_t bytes() const noexcept { return state_->bytes.load(std::memory_order_relaxed); }

  /// @return the store's counts now; each is read without a lock.
  InMemoryStats stats() const noexcept {
    InMemoryStats s;
    s.entries = size();
    s.bytes = bytes();
    s.evictions = state_->evictions.load(std::memory_order_relaxed);
    s.expirations = state_->expirations.load(std::memory_order_relaxed);
    s.rejections = state_->rejections.load(std::memory_order_relaxed);
    return s;
  }

  /// @return the number of lock shards in use (fewer than asked for a small bound).
  std::size_t shard_count() const noexcept { return state_->shard_count; }

  /// @return the bytes a stored output is charged besides its weight and its key's bytes (which
  ///         the entry's block holds): the entry, the output's shared control block, the
  ///         allocator's headers, the entry's share of the hash table and of the ghost table.
  static constexpr std::size_t entry_overhead() noexcept { return sizeof(Entry) + 80; }

 private:
  enum class InQueue : std::uint8_t { none, small, main };

  struct Entry;
  // Frees an entry made by Entry::make.
  struct EntryDelete {
    void operator()(Entry* e) const noexcept {
      e->~Entry();
      ::operator delete(static_cast<void*>(e));
    }
  };
  using EntryPtr = std::unique_ptr<Entry, EntryDelete>;

  struct Entry {
    // The entry and its key's bytes in one allocation: a miss allocates one block, not two.
    static EntryPtr make(std::size_t h, std::string_view k) {
      void* block = ::operator new(sizeof(Entry) + k.size());
      char* bytes = static_cast<char*>(block) + sizeof(Entry);
      if (!k.empty()) std::memcpy(bytes, k.data(), k.size());
      return EntryPtr(::new (block) Entry(h, std::string_view(bytes, k.size())));
    }
    Entry(const Entry&) = delete;
    Entry& operator=(const Entry&) = delete;

    // What a hit reads comes first, so that it spans as few cache lines as it did before the
    // bounds: the hash, the write time and frequency (bounded stores), the key, the output.
    std::size_t hash;  // of `encoded`
    // Bookkeeping of the output, guarded by the shard's lock (freq: also raised under the read
    // lock, hence atomic).
    TimePoint written{};                        // when the output was written, by the store's clock
    mutable std::atomic<std::uint8_t> freq{0};  // hits while queued, saturating at 3
    InQueue queue = InQueue::none;
    const std::string_view encoded;  // the key: the bytes that follow the entry in its block
    std::optional<StoredOutput> output;
    std::optional<Reservation> reservation;
    std::vector<Notifiable*> watchers;  // subscribed waiters; each unsubscribes before it is gone
    EntryPtr next;                      // in the same bucket
    Entry* older = nullptr;             // the eviction queue's links (bounded stores only)
    Entry* newer = nullptr;
    std::size_t charge = 0;  // bytes charged for the output
    bool empty() const noexcept { return !output && !reservation && watchers.empty(); }
    // A key in use: its output is never evicted (a reader of it holds the shard's read lock).
    bool pinned() const noexcept { return reservation.has_value() || !watchers.empty(); }
    void touch() const noexcept {
      const std::uint8_t f = freq.load(std::memory_order_relaxed);
      if (f < 3) freq.store(static_cast<std::uint8_t>(f + 1), std::memory_order_relaxed);
    }

   private:
    Entry(std::size_t h, std::string_view k) : hash(h), encoded(k) {}
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
      EntryPtr entry = Entry::make(h, encoded);
      EntryPtr& head = buckets_[h & (buckets_.size() - 1)];
      entry->next = std::move(head);
      head = std::move(entry);
      ++size_;
      return *head;
    }

    /// Removes `e`, which must be in the table.
    void erase(const Entry& e) noexcept {
      EntryPtr* link = &buckets_[e.hash & (buckets_.size() - 1)];
      while (link->get() != &e) link = &(*link)->next;
      EntryPtr gone = std::move(*link);
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
      std::vector<EntryPtr> bigger(buckets_.empty() ? 8 : buckets_.size() * 2);
      for (auto& head : buckets_) {
        while (head) {
          EntryPtr e = std::move(head);
          head = std::move(e->next);
          EntryPtr& to = bigger[e->hash & (bigger.size() - 1)];
          e->next = std::move(to);
          to = std::move(e);
        }
      }
      buckets_.swap(bigger);
    }

    std::vector<EntryPtr> buckets_;
    std::size_t size_ = 0;
  };

  // A FIFO of entries with outputs, oldest first, linked through the entries.
  struct Queue {
    Entry* oldest = nullptr;
    Entry* newest = nullptr;
    std::size_t count = 0;
    std::size_t weight = 0;  // in the store's unit: bytes with max_bytes, else entries

    void push(Entry& e, std::size_t w) noexcept {
      e.older = newest;
      e.newer = nullptr;
      (newest ? newest->newer : oldest) = &e;
      newest = &e;
      ++count;
      weight += w;
    }
    void remove(Entry& e, std::size_t w) noexcept {
      (e.older ? e.older->newer : oldest) = e.newer;
      (e.newer ? e.newer->older : newest) = e.older;
      e.older = e.newer = nullptr;
      --count;
      weight -= w;
    }
  };

  // S3-FIFO's ghost queue, approximated: recently evicted keys' fingerprints in a direct-mapped
  // table (a newer key overwrites an older one in its slot), as many slots as the shard has
  // entries, rounded up to a power of two.
  class Ghosts {
   public:
    void remember(std::size_t h) noexcept {
      if (!slots_.empty()) slots_[h & (slots_.size() - 1)] = fingerprint(h);
    }
    // @return whether `h` was remembered (and forgets it).
    bool recall(std::size_t h) noexcept {
      if (slots_.empty()) return false;
      std::uint32_t& s = slots_[h & (slots_.size() - 1)];
      if (s != fingerprint(h)) return false;
      s = 0;
      return true;
    }
    void fit(std::size_t entries) {
      if (entries <= slots_.size()) return;
      std::size_t n = slots_.empty() ? 16 : slots_.size();
      while (n < entries) n *= 2;
      std::vector<std::uint32_t> bigger(n);
      for (std::size_t i = 0; i < slots_.size(); ++i) bigger[i] = slots_[i];  // same low bits
      slots_.swap(bigger);
    }

   private:
    static std::uint32_t fingerprint(std::size_t h) noexcept {
      return static_cast<std::uint32_t>(static_cast<std::uint64_t>(h) >> 32) | 1u;
    }
    std::vector<std::uint32_t> slots_;
  };

  using ReadLock = detail::ReaderSlotLocks::SharedGuard;
  using WriteLock = detail::ReaderSlotLocks::UniqueGuard;

  // Guarded by lock i of State::locks, for the shard i (shared: get, visit_output, reservation;
  // exclusive: every change and subscription). That lock is taken before any watcher's signal
  // mutex.
  struct alignas(64) Shard {
    Entries entries;
    Queue small;  // S3-FIFO's probation queue (bounded stores only)
    Queue main;
    Ghosts ghosts;
  };

  // The shard locks are reader-slot locks (detail/reader_slot_locks.hpp): hits on one hot key
  // from many threads write no cache line in common, where a std::shared_mutex's reader count
  // was written by every hit. Changes pay a scan of the slots instead (8 to 64 cache lines).
  // Memory, with the default 64 shards: 64 B per shard for its table, 64 B per shard for its
  // writer (mutex and flag), and 256 B of reader counters per slot: 10 KiB with 8 slots (up to
  // 4 hardware threads), 24 KiB with 64 (32 or more); the shards with their std::shared_mutex
  // took 8 KiB.
  struct State {
    explicit State(InMemoryOptions o, std::size_t n)
        : shard_count(n),
          shards(std::make_unique<Shard[]>(n)),
          locks(n),
          bounded(o.max_entries || o.max_bytes || o.expire_after_write),
          limited(o.max_entries || o.max_bytes),
          expires(o.expire_after_write.has_value()),
          by_bytes(o.max_bytes.has_value()),
          max_entries(o.max_entries.value_or(SIZE_MAX)),
          max_bytes(o.max_bytes.value_or(SIZE_MAX)),
          ttl(o.expire_after_write.value_or(Duration::max())),
          weigher(std::move(o.weigher)),
          clock(std::move(o.clock)),
          on_evict(std::move(o.on_evict)) {}
    std::size_t shard_count;
    std::unique_ptr<Shard[]> shards;
    detail::ReaderSlotLocks locks;
    const bool bounded;   // limited or expires: hits check and count
    const bool limited;   // max_entries or max_bytes: outputs are queued for eviction
    const bool expires;   // expire_after_write
    const bool by_bytes;  // queues weigh bytes (else entries)
    const std::size_t max_entries;
    const std::size_t max_bytes;
    const Duration ttl;
    const std::function<std::size_t(const StoredOutput&)> weigher;
    const std::function<TimePoint()> clock;
    const std::function<void(const Eviction&)> on_evict;
    std::atomic<std::uint64_t> last_token{0};
    alignas(64) std::atomic<std::size_t> entries{0};
    std::atomic<std::size_t> bytes{0};
    std::atomic<std::uint64_t> evictions{0};
    std::atomic<std::uint64_t> expirations{0};
    mutable std::atomic<std::uint64_t> rejections{0};  // counted by charge_of, a const member
    std::atomic<std::size_t> cursor{0};  // the next shard to evict from for another's store

    TimePoint now() const {
      if (clock) return clock();
      return std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
    }
    bool expired(const Entry& e, TimePoint t) const noexcept {
      return expires && t >= detail::saturating_add(e.written, ttl);
    }
    // A hit on a bounded store: misses an expired output, counts a live one.
    bool hit(const Entry& e) const {
      if (expires && expired(e, now())) return false;
      e.touch();
      return true;
    }
    bool over() const noexcept {
      return entries.load(std::memory_order_relaxed) > max_entries ||
             bytes.load(std::memory_order_relaxed) > max_bytes;
    }
    std::size_t unit(const Entry& e) const noexcept { return by_bytes ? e.charge : 1; }
  };

  // What a change leaves to do once its shard's lock is released: evict from other shards if
  // the store is still over its bound, tell `on_evict`, and destroy removed outputs (whose
  // destructors are the user's).
  struct Aftermath {
    explicit Aftermath(State& s) noexcept : state(s) {}
    Aftermath(const Aftermath&) = delete;
    Aftermath& operator=(const Aftermath&) = delete;
    ~Aftermath() {
      if (still_over) {
        try {
          evict_elsewhere();
        } catch (...) {  // a lock that could not be taken: the next store tries again
        }
      }
      for (const auto& r : removed) {
        try {
          state.on_evict(Eviction{r.key, r.cause, r.weight});
        } catch (...) {  // a listener cannot break the store
        }
      }
    }
    void evict_elsewhere();

    struct Removed {
      std::string key;
      RemovalCause cause;
      std::size_t weight;
    };
    State& state;
    bool still_over = false;
    std::size_t skip = 0;  // the shard already done
    std::vector<Removed> removed;
    std::vector<StoredOutput> garbage;
  };

  static InMemoryOptions options_of(std::size_t shards) {
    InMemoryOptions o;
    o.shards = shards;
    return o;
  }

  static std::shared_ptr<State> make_state(InMemoryOptions o) {
    const auto invalid = [](const std::string& what) {
      throw std::invalid_argument("cacheserialize::InMemoryOptions: " + what);
    };
    if (o.shards == 0) invalid("shards: the shard count must be > 0");
    if (o.shards > (std::size_t{1} << 20)) invalid("shards: more than 2^20 shards is absurd");
    if (o.max_entries) {
      if (*o.max_entries == 0) invalid("max_entries must be > 0");
      if (*o.max_entries > (std::uint64_t{1} << 40)) invalid("max_entries > 2^40 is absurd");
    }
    if (o.max_bytes) {
      if (*o.max_bytes < 4096) invalid("max_bytes must be >= 4096 (one entry's bookkeeping)");
      if (*o.max_bytes > (std::uint64_t{1} << 60)) invalid("max_bytes > 2^60 is absurd");
    }
    if (o.expire_after_write && o.expire_after_write->count() <= 0) {
      invalid("expire_after_write must be > 0");
    }
    std::size_t shards = o.shards;
    if (o.max_entries) shards = std::min(shards, std::max<std::size_t>(1, *o.max_entries / 32));
    if (o.max_bytes) shards = std::min(shards, std::max<std::size_t>(1, *o.max_bytes / 65536));
    return std::make_shared<State>(std::move(o), shards);
  }

  // @return the bytes to charge for `output` under `key`.
  // @throws std::length_error if they exceed max_bytes; whatever the weigher throws.
  std::size_t charge_of(const Key& key, const StoredOutput& output) const {
    const State& st = *state_;
    std::size_t w = 0;
    try {
      w = st.weigher                      ? st.weigher(output)
          : output.weigh && output.object ? output.weigh(output.object.get())
                                          : sizeof(void*);
    } catch (...) {
      st.rejections.fetch_add(1, std::memory_order_relaxed);
      throw;
    }
    const std::size_t overhead = entry_overhead() + key.encoded().size();
    const std::size_t charge = w > SIZE_MAX - overhead ? SIZE_MAX : w + overhead;
    if (charge > st.max_bytes) {
      st.rejections.fetch_add(1, std::memory_order_relaxed);
      throw std::length_error("cacheserialize::InMemoryStorage: an output of " +
                              std::to_string(charge) + " bytes (with its entry) exceeds " +
                              "InMemoryOptions::max_bytes (" + std::to_string(st.max_bytes) +
                              "): not stored");
    }
    return charge;
  }

  // a * b in 128 bits, folded to 64 by xor of the halves (wyhash's "mum"): one multiplication
  // mixes 16 bytes of key into every bit of the result.
  static std::uint64_t mum(std::uint64_t a, std::uint64_t b) noexcept {
#if defined(__SIZEOF_INT128__)
    __extension__ typedef unsigned __int128 u128;
    const u128 p = static_cast<u128>(a) * b;
    return static_cast<std::uint64_t>(p) ^ static_cast<std::uint64_t>(p >> 64);
#else
    const std::uint64_t al = a & 0xffffffffU, ah = a >> 32, bl = b & 0xffffffffU, bh = b >> 32;
    const std::uint64_t ll = al * bl, lh = al * bh, hl = ah * bl;
    const std::uint64_t mid = (ll >> 32) + (lh & 0xffffffffU) + (hl & 0xffffffffU);
    const std::uint64_t lo = (ll & 0xffffffffU) | (mid << 32);
    return lo ^ (ah * bh + (lh >> 32) + (hl >> 32) + (mid >> 32));
#endif
  }

  // The key's hash, after wyhash (final version 4): 16 bytes per multiplication, the last 16
  // read overlapping, the length mixed in, so that the high bits (the shard) and the low bits
  // (the bucket) both depend on every byte. Not for keys chosen to collide (neither is
  // std::hash). A miss hashes its key three times (look, acquire, store), a hit once: 67
  // instructions on a key of 63 bytes (callgrind), 90 with the 8-byte mixing it replaces.
  static std::size_t hash_of(const Key& key) noexcept {
    constexpr std::uint64_t k0 = 0xa0761d6478bd642fULL;
    constexpr std::uint64_t k1 = 0xe7037ed1a0b428dbULL;
    constexpr std::uint64_t k2 = 0x8ebc6af09c88c6e3ULL;
    const std::string& s = key.encoded();
    const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    const auto word = [](const unsigned char* q) {
      std::uint64_t w;
      std::memcpy(&w, q, 8);
      return w;
    };
    const auto half = [](const unsigned char* q) {
      std::uint32_t w;
      std::memcpy(&w, q, 4);
      return std::uint64_t{w};
    };
    std::uint64_t h = mum(k0 ^ n, k1);
    std::uint64_t a = 0;
    std::uint64_t b = 0;
    if (n > 16) {
      const unsigned char* const end = p + n;
      for (; end - p > 16; p += 16) h = mum(word(p) ^ k1, word(p + 8) ^ h);
      a = word(end - 16);
      b = word(end - 8);
    } else if (n >= 8) {
      a = word(p);
      b = word(p + n - 8);
    } else if (n >= 4) {
      a = half(p);
      b = half(p + n - 4);
    } else if (n > 0) {
      a = (std::uint64_t{p[0]} << 16) | (std::uint64_t{p[n >> 1]} << 8) | p[n - 1];
    }
    return static_cast<std::size_t>(mum(mum(a ^ k1, b ^ h) ^ k2, k1 ^ n));
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
    LockedShard(State& state, std::size_t hash, std::size_t index, Aftermath* after = nullptr)
        : hash_(hash),
          state_(state),
          shard_(state.shards[index]),
          after_(after),
          lock_(state.locks, index) {}

    Entry* find(std::string_view encoded) const noexcept {
      return shard_.entries.find(hash_, encoded);
    }
    Entry& get_or_add(const std::string& encoded) {
      return shard_.entries.get_or_add(hash_, encoded);
    }
    void erase(const Entry& e) noexcept { shard_.entries.erase(e); }
    const Entries& entries() const noexcept { return shard_.entries; }

    // After a change that may end a wait: wake the key's waiters, drop the entry if it is empty.
    void settle(Entry& e) noexcept {
      for (Notifiable* s : e.watchers) s->notify();
      if (e.empty()) erase(e);
    }

    // Stores `out` as e's output (replacing any), charged `charge` bytes, written at `t`. The
    // replaced output is destroyed after the lock is released. Needs an Aftermath.
    void set_output(Entry& e, StoredOutput&& out, std::size_t charge, TimePoint t) {
      if (e.output) {
        after_->garbage.push_back(std::move(*e.output));
        if (e.queue != InQueue::none) {
          Queue& q = e.queue == InQueue::small ? shard_.small : shard_.main;
          q.weight = q.weight - state_.unit(e) + (state_.by_bytes ? charge : 1);
        }
        state_.bytes.fetch_add(charge - e.charge, std::memory_order_relaxed);  // modular
      } else {
        state_.entries.fetch_add(1, std::memory_order_relaxed);
        state_.bytes.fetch_add(charge, std::memory_order_relaxed);
        if (state_.limited) {
          e.freq.store(0, std::memory_order_relaxed);
          e.charge = charge;
          const bool returning = shard_.ghosts.recall(e.hash);
          (returning ? shard_.main : shard_.small).push(e, state_.unit(e));
          e.queue = returning ? InQueue::main : InQueue::small;
          shard_.ghosts.fit(shard_.small.count + shard_.main.count);
        }
      }
      e.output = std::move(out);
      e.charge = charge;
      e.written = t;
    }

    // Removes e's output (destroyed once the lock is released); `cause`: reported and counted
    // as an eviction or expiry, none for an erase or prune. Needs an Aftermath. The caller
    // settles the entry.
    void drop(Entry& e, std::optional<RemovalCause> cause) {
      if (e.queue != InQueue::none) {
        (e.queue == InQueue::small ? shard_.small : shard_.main).remove(e, state_.unit(e));
        e.queue = InQueue::none;
      }
      state_.entries.fetch_sub(1, std::memory_order_relaxed);
      state_.bytes.fetch_sub(e.charge, std::memory_order_relaxed);
      if (cause) {
        (*cause == RemovalCause::size ? state_.evictions : state_.expirations)
            .fetch_add(1, std::memory_order_relaxed);
        if (state_.on_evict) after_->removed.push_back({std::string(e.encoded), *cause, e.charge});
      }
      after_->garbage.push_back(std::move(*e.output));
      e.output.reset();
      e.charge = 0;
    }

    // After a store: evicts from this shard, never `keep`, until the store is within its
    // bounds; if this shard cannot get it there, the Aftermath goes round the others.
    void make_room(Entry* keep) {
      if (!state_.limited) return;
      const TimePoint now = state_.expires ? state_.now() : TimePoint{};
      if (state_.expires) expire_oldest(now);
      while (state_.over()) {
        if (!evict_one(keep, now)) {
          after_->still_over = true;
          after_->skip = static_cast<std::size_t>(&shard_ - state_.shards.get());
          return;
        }
      }
    }

    // Evicts one output by S3-FIFO (see the class comment), never `keep` nor a pinned one.
    // @return false if none could be.
    bool evict_one(const Entry* keep, TimePoint now) {
      Queue& small = shard_.small;
      Queue& main = shard_.main;
      // Each entry is looked at most 4 times (its frequency falls by one each time in main).
      std::size_t budget = 4 * (small.count + main.count) + 4;
      bool skip_small = false;
      while (budget-- > 0) {
        const bool from_small = small.oldest && !skip_small &&
                                (!main.oldest || small.weight * 10 >= small.weight + main.weight);
        Queue& q = from_small ? small : main;
        Entry* t = q.oldest;
        if (!t) return false;
        if (t == keep) {  // the newest: alone in its queue
          if (from_small && main.oldest) {
            skip_small = true;
            continue;
          }
          return false;
        }
        if (t->pinned()) {  // in use: goes round again, in main
          q.remove(*t, state_.unit(*t));
          main.push(*t, state_.unit(*t));
          t->queue = InQueue::main;
          continue;
        }
        if (state_.expired(*t, now)) {
          remove(*t, RemovalCause::expired);
          return true;
        }
        const std::uint8_t f = t->freq.load(std::memory_order_relaxed);
        if (from_small) {
          if (f > 0) {  // hit while on probation: promoted
            small.remove(*t, state_.unit(*t));
            t->freq.store(0, std::memory_order_relaxed);
            main.push(*t, state_.unit(*t));
            t->queue = InQueue::main;
            continue;
          }
          shard_.ghosts.remember(t->hash);
        } else if (f > 0) {  // CLOCK: another round, one hit less
          t->freq.store(static_cast<std::uint8_t>(f - 1), std::memory_order_relaxed);
          main.remove(*t, state_.unit(*t));
          main.push(*t, state_.unit(*t));
          continue;
        }
        remove(*t, RemovalCause::size);
        return true;
      }
      return false;
    }

   private:
    void remove(Entry& e, RemovalCause cause) {
      drop(e, cause);
      settle(e);
    }

    // Removes expired outputs at the head of either queue: a few per store, so that a store
    // with expiry and no traffic on its old keys still sheds them.
    void expire_oldest(TimePoint now) {
      for (Queue* q : {&shard_.small, &shard_.main}) {
        for (int n = 0; n < 2 && q->oldest; ++n) {
          Entry* t = q->oldest;
          if (t->pinned() || !state_.expired(*t, now)) break;
          remove(*t, RemovalCause::expired);
        }
      }
    }

    std::size_t hash_;
    State& state_;
    Shard& shard_;
    Aftermath* after_;
    Lock lock_;
  };

  template <class Lock>
  LockedShard<Lock> lock_shard(const Key& key, Aftermath* after = nullptr) const {
    const std::size_t h = hash_of(key);
    return LockedShard<Lock>(*state_, h, shard_index(h), after);
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

// Round the shards from a moving cursor, one eviction at a time per shard, until the store is
// within its bounds or every shard was tried once (the rest is in use).
inline void InMemoryStorage::Aftermath::evict_elsewhere() {
  const TimePoint now = state.expires ? state.now() : TimePoint{};
  std::size_t idle = 0;  // shards in a row that had nothing to evict
  while (state.over() && idle < state.shard_count) {
    const std::size_t i = state.cursor.fetch_add(1, std::memory_order_relaxed) % state.shard_count;
    if (i == skip && state.shard_count > 1) continue;
    LockedShard<WriteLock> shard(state, 0, i, this);
    idle = shard.evict_one(nullptr, now) ? 0 : idle + 1;
  }
}

}  // namespace cacheserialize
