#pragma once

// The heartbeat: one background thread per manager that extends every reservation the manager
// holds, each at its own interval. Modelled on a periodic worker: it sleeps on the manager's
// clock (so a fake clock drives it in tests) until the earliest due extension, a new lease that
// is due sooner, or stop. With a storage that has `extend_many`, the leases falling due close
// together are extended in batches, one storage call (one round trip) per batch: at network
// latency, one call per lease would not keep up with thousands of holds.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../cache_key.hpp"
#include "../events.hpp"
#include "../signal.hpp"
#include "../storage.hpp"
#include "../time.hpp"
#include "counters.hpp"

namespace cacheserialize {
namespace detail {

/// How one reservation is kept: its timing, and what the claim asked for.
struct LeaseTerms {
  Duration interval{};          // between extensions
  Duration ttl{};               // each extension's lifetime
  std::string tag;              // ClaimOptions::tag, for every event of the hold
  std::function<bool()> alive;  // ClaimOptions::alive; empty: always
  /// Where the owner id comes from, which decides how a second lease of one reservation (same
  /// key and owner) is refused. A generated id is unique per call: nothing to check, so a miss
  /// pays nothing for this. A chosen one (ClaimOptions::owner) is looked up in an index. An
  /// adopted reservation may be any hold's: the index, then every lease (adopt is rare).
  enum class Owner { generated, chosen, adopted } owner = Owner::generated;
};

/// One held reservation, as the heartbeat sees it. Made with std::make_shared.
struct Lease : std::enable_shared_from_this<Lease> {
  /// Copies the terms' fields in place. `r` is moved from only once nothing else can throw, so
  /// that a failed construction leaves it to the caller (who releases it).
  /// @param borrow whether to refer to `k` instead of copying it: only for a holder that removes
  ///        the lease (Heartbeat::remove) before `k` is gone, and never lets another thread see
  ///        the lease but the heartbeat, which copies the key before it first uses it.
  Lease(const Key& k, bool borrow, Reservation&& r, Duration interval, Duration ttl,
        const std::string& tag, const std::function<bool()>& alive, LeaseTerms::Owner owner)
      : terms{interval, ttl, tag, alive, owner},
        owned_(borrow ? std::nullopt : std::optional<Key>(k)),
        key_(borrow ? &k : &*owned_),
        reservation(std::move(r)),
        expires_at(to_unix_nanos(reservation.expires_at)) {}

  /// @return the key held: the holder's own while borrowed, else the lease's copy.
  const Key& key() const noexcept { return *key_.load(std::memory_order_acquire); }
  /// Copies a borrowed key into the lease. Called by the heartbeat under its mutex, before the
  /// heartbeat thread uses the lease: the holder's key is alive while the lease is registered.
  void own_key() {
    if (owned_) return;
    owned_.emplace(*key_.load(std::memory_order_relaxed));
    key_.store(&*owned_, std::memory_order_release);
  }

  const LeaseTerms terms;

 private:
  std::optional<Key> owned_;  // written once, by the constructor or own_key
  std::atomic<const Key*> key_;

 public:
  const Reservation reservation;         // owner and token never change; expiry is `expires_at`
  std::atomic<std::int64_t> expires_at;  // latest expiry, nanoseconds since the epoch
  std::atomic<bool> lost{false};         // an extension found another owner (or none)
  std::atomic<bool> removed{false};      // the holder is done: results about it are moot

  // Scheduling, guarded by the heartbeat's mutex. A new lease is only linked into the list of
  // fresh ones (no allocation); the heartbeat thread moves it onto the schedule when the first
  // fresh lease falls due or it extends others, so a hold that finishes sooner never reaches it.
  bool scheduled = false;
  bool fresh = false;
  TimePoint due{};              // while fresh: when the first extension is due
  Lease* fresh_prev = nullptr;  // the heartbeat's list of fresh leases
  Lease* fresh_next = nullptr;
  bool indexed = false;   // in the heartbeat's index of chosen and adopted owners
  Lease* prev = nullptr;  // the heartbeat's list of every lease not yet removed
  Lease* next = nullptr;
  std::size_t id_hash = 0;  // of the owner, once indexed; equality also compares the key
  std::multimap<TimePoint, std::shared_ptr<Lease>>::iterator where;
};

/// The heartbeat's index of leases by key and owner, for chosen and adopted owners. Entries are
/// the leases themselves, hashed once: indexing a lease allocates one node only.
struct LeaseIdHash {
  std::size_t operator()(const Lease* l) const noexcept { return l->id_hash; }
};
struct LeaseIdEqual {
  bool operator()(const Lease* a, const Lease* b) const noexcept {
    return a->reservation.owner == b->reservation.owner && a->key() == b->key();
  }
};

/// @tparam Core the manager's shared state: `storage`, `clock`, `counters`, `emit(const Event&)`.
///
/// Lifetime: the destructor stops the thread, wakes it and joins it; an extension in progress
/// finishes first. Leases still registered are simply no longer extended. Non-copyable.
template <class Core>
class Heartbeat {
 public:
  explicit Heartbeat(Core& core) : core_(core) {}
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify();
    if (!thread_.joinable()) return;
    // Only a listener running on the heartbeat thread could drop the last manager handle; a
    // thread cannot join itself, so it is let go and exits at the top of its loop.
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
  }

  /// Starts extending a reservation acquired at `acquired_at`; the first extension is due one
  /// interval after it. Starts the thread on first use.
  /// @param lease a new lease (std::make_shared), added once.
  /// @return false if this heartbeat already extends a reservation of that owner on that key (a
  ///         second lease would be a second holder), as far as `terms.owner` says it can be.
  /// @throws std::system_error if the thread cannot be started (the lease is then not added).
  bool add(const std::shared_ptr<Lease>& lease, TimePoint acquired_at) {
    const TimePoint due = saturating_add(acquired_at, lease->terms.interval);
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (lease->terms.owner == LeaseTerms::Owner::adopted && in_list(*lease)) return false;
      if (lease->terms.owner != LeaseTerms::Owner::generated) {
        lease->id_hash = std::hash<std::string>()(lease->reservation.owner);
        if (!indexed_.insert(lease.get()).second) return false;
        lease->indexed = true;
      }
      try {
        if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
      } catch (...) {
        if (lease->indexed) indexed_.erase(lease.get());
        throw;
      }
      lease->next = all_;
      if (all_) all_->prev = lease.get();
      all_ = lease.get();
      ++count_;
      lease->due = due;
      lease->fresh = true;
      lease->fresh_next = fresh_;
      if (fresh_) fresh_->fresh_prev = lease.get();
      fresh_ = lease.get();
      fresh_due_ = std::min(fresh_due_, due);
      wake = due < sleeping_until_;
    }
    if (wake) wake_.notify();
    return true;
  }

  /// Stops extending `lease`, once. Call it before releasing the reservation, so that a failed
  /// extension caused by that release is not reported as a loss.
  void remove(Lease& lease) {
    if (lease.removed.exchange(true)) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (lease.fresh) {
        (lease.fresh_prev ? lease.fresh_prev->fresh_next : fresh_) = lease.fresh_next;
        if (lease.fresh_next) lease.fresh_next->fresh_prev = lease.fresh_prev;
        lease.fresh_prev = lease.fresh_next = nullptr;
        lease.fresh = false;
        if (!fresh_) fresh_due_ = TimePoint::max();
      }
      if (lease.scheduled) {
        schedule_.erase(lease.where);
        lease.scheduled = false;
      }
      if (lease.indexed) {
        indexed_.erase(&lease);
        lease.indexed = false;
      }
      (lease.prev ? lease.prev->next : all_) = lease.next;
      if (lease.next) lease.next->prev = lease.prev;
      lease.prev = lease.next = nullptr;
      --count_;
    }
  }
  /// @return how many leases are added and not yet removed (the holds not yet finished).
  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      const TimePoint now = core_.clock.now();
      const bool beat_due = !schedule_.empty() && schedule_.begin()->first <= now;
      if (fresh_ && (beat_due || fresh_due_ <= now)) {
        schedule_fresh();
        continue;
      }
      if (beat_due) {
        std::vector<std::shared_ptr<Lease>> due = take_due(now);
        lock.unlock();  // storage calls may be slow: never hold the schedule across them
        if constexpr (batches()) {
          beat_in_batches(due);
        } else {
          for (const auto& lease : due) beat(*lease);
        }
        lock.lock();
        for (auto& lease : due) {
          if (lease->removed.load() || lease->lost.load()) continue;
          lease->where = schedule_.emplace(saturating_add(now, lease->terms.interval), lease);
          lease->scheduled = true;
        }
        continue;
      }
      sleeping_until_ =
          std::min(fresh_due_, schedule_.empty() ? TimePoint::max() : schedule_.begin()->first);
      wake_.reset();
      lock.unlock();
      core_.clock.wait_until(wake_, sleeping_until_);
      lock.lock();
      sleeping_until_ = TimePoint::min();  // awake: a new lease is seen at the top of the loop
    }
  }

  // Moves every fresh lease onto the schedule, each at its first due time. Called with mu_
  // held: a fresh lease is alive (its holder removes it before letting it go).
  void schedule_fresh() {
    for (Lease* l = std::exchange(fresh_, nullptr); l;) {
      Lease* const next = std::exchange(l->fresh_next, nullptr);
      l->fresh_prev = nullptr;
      l->fresh = false;
      l->own_key();
      l->where = schedule_.emplace(l->due, l->shared_from_this());
      l->scheduled = true;
      l = next;
    }
    fresh_due_ = TimePoint::max();
  }

  // Takes the leases due at `now` off the schedule; with batches, also those due within a tenth
  // of the smallest interval among them (at most kMaxSlack): extending a little early is
  // harmless, and leases acquired a few milliseconds apart then share a round trip instead of
  // each waking the thread for one of their own. Called with mu_ held.
  std::vector<std::shared_ptr<Lease>> take_due(TimePoint now) {
    std::vector<std::shared_ptr<Lease>> due;
    Duration slack = Duration::max();
    auto horizon = [&] {
      if constexpr (!batches()) return now;
      return due.empty() ? now : saturating_add(now, std::min(slack / 10, kMaxSlack));
    };
    while (!schedule_.empty() && schedule_.begin()->first <= horizon()) {
      due.push_back(std::move(schedule_.begin()->second));
      due.back()->scheduled = false;
      slack = std::min(slack, due.back()->terms.interval);
      schedule_.erase(schedule_.begin());
    }
    return due;
  }

  void beat(Lease& lease) {
    if (lease.removed.load()) return;
    if (!alive(lease)) {
      abandon(lease);
      return;
    }
    const TimePoint now = core_.clock.now();
    Counters::bump(core_.counters.heartbeat_batches);
    try {
      settle(lease, core_.storage.extend(lease.key(), lease.reservation, now, lease.terms.ttl));
    } catch (...) {
      failed(lease, std::current_exception());
    }
  }

  // The storage's extend_many: one call per kMaxBatch leases, each answered on its own.
  void beat_in_batches(const std::vector<std::shared_ptr<Lease>>& due) {
    std::vector<Lease*> live;
    live.reserve(due.size());
    for (const auto& lease : due) {
      if (lease->removed.load()) continue;
      if (alive(*lease)) {
        live.push_back(lease.get());
      } else {
        abandon(*lease);
      }
    }
    std::vector<Extension> batch;
    for (std::size_t begin = 0; begin < live.size(); begin += kMaxBatch) {
      const std::size_t end = std::min(live.size(), begin + kMaxBatch);
      batch.clear();
      for (std::size_t i = begin; i < end; ++i) {
        batch.push_back(Extension{&live[i]->key(), &live[i]->reservation, live[i]->terms.ttl});
      }
      const TimePoint now = core_.clock.now();
      Counters::bump(core_.counters.heartbeat_batches);
      std::vector<ExtendResult> results;
      try {
        results = core_.storage.extend_many(batch, now);
        if (results.size() != batch.size()) {
          throw std::logic_error("extend_many answered " + std::to_string(results.size()) +
                                 " results for " + std::to_string(batch.size()) + " extensions");
        }
      } catch (...) {
        const std::exception_ptr why = std::current_exception();
        for (std::size_t i = begin; i < end; ++i) failed(*live[i], why);
        continue;
      }
      for (std::size_t i = begin; i < end; ++i) settle(*live[i], results[i - begin]);
    }
  }

  // An extension's answer: the new expiry, or the loss (reported once).
  void settle(Lease& lease, const ExtendResult& r) {
    if (r.status == ExtendStatus::extended) {
      lease.expires_at.store(to_unix_nanos(r.current.expires_at));
      Counters::bump(core_.counters.heartbeats);
      return;
    }
    // A failure caused by the holder's own release is not a loss: it removed the lease first.
    if (lease.removed.load() || lease.lost.exchange(true)) return;
    Counters::bump(core_.counters.lost);
    Event e = event_of(lease);
    e.kind = EventKind::lost;
    e.holder = r.current.owner;
    e.detail = r.current.owner.empty() ? "the reservation is gone"
                                       : "the reservation belongs to another owner";
    core_.emit(e);
  }

  // An extension that could not reach the storage; the next beat retries it.
  void failed(Lease& lease, const std::exception_ptr& error) {
    std::string why = "unknown exception";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& ex) {
      why = ex.what();
    } catch (...) {
    }
    Counters::bump(core_.counters.heartbeat_failures);
    Event e = event_of(lease);
    e.kind = EventKind::heartbeat_failed;
    e.detail = why;
    core_.emit(e);
  }

  // Whether a lease of `lease`'s key and owner is registered. Called with mu_ held.
  bool in_list(const Lease& lease) const {
    const LeaseIdEqual same;
    for (const Lease* l = all_; l; l = l->next) {
      if (same(l, &lease)) return true;
    }
    return false;
  }

  static bool alive(const Lease& lease) noexcept {
    if (!lease.terms.alive) return true;
    try {
      return lease.terms.alive();
    } catch (...) {  // a liveness check that cannot answer: the work is taken for gone
      return false;
    }
  }

  // The work behind the lease is gone: release at once, so that a waiter need not sit out the
  // expiry, and mark the hold lost (its store would be refused; it must not be extended).
  void abandon(Lease& lease) {
    if (lease.lost.exchange(true)) return;
    std::string what;
    try {
      what = to_string(core_.storage.release(lease.key(), lease.reservation));
    } catch (const std::exception& ex) {  // it expires on its own
      what = std::string("the release failed, the reservation expires on its own: ") + ex.what();
    } catch (...) {
      what = "the release failed, the reservation expires on its own";
    }
    Counters::bump(core_.counters.abandoned);
    Event e = event_of(lease);
    e.kind = EventKind::abandoned;
    e.detail = what;
    core_.emit(e);
  }

  static Event event_of(const Lease& lease) {
    Event e;
    e.key = &lease.key();
    e.owner = lease.reservation.owner;
    e.token = lease.reservation.token;
    e.tag = lease.terms.tag;
    return e;
  }

  // Whether the storage has extend_many. A function, not a constant: the manager's core is
  // incomplete where this class is instantiated, and complete where its members run.
  static constexpr bool batches() {
    return storage_traits<
        std::decay_t<decltype(std::declval<Core&>().storage)>>::extends_in_batches;
  }
  static constexpr std::size_t kMaxBatch = 1000;  // extensions per extend_many call
  static constexpr Duration kMaxSlack = std::chrono::seconds(1);

  Core& core_;
  mutable std::mutex mu_;  // guards everything below; never held across storage or listener calls
  std::multimap<TimePoint, std::shared_ptr<Lease>> schedule_;
  std::unordered_set<const Lease*, LeaseIdHash, LeaseIdEqual> indexed_;  // chosen, adopted owners
  Lease* all_ = nullptr;                    // every lease not yet removed, newest first
  Lease* fresh_ = nullptr;                  // leases not yet on the schedule, newest first
  TimePoint fresh_due_ = TimePoint::max();  // at most the earliest due among them
  std::size_t count_ = 0;
  TimePoint sleeping_until_ = TimePoint::min();
  bool stop_ = false;
  Signal wake_;
  std::thread thread_;
};

}  // namespace detail
}  // namespace cacheserialize
