#pragma once

/// @file reservation.hpp
/// `ReservationManager`: the reservation protocol over a clock and a storage policy, with one
/// heartbeat thread that keeps every reservation it holds alive. `serialize_cached` is built on
/// it; an engine that runs tasks itself can use it directly:
///
///     auto claim = manager.claim(key, options);  // hit, or wait, or take the reservation
///     if (claim.is_hit()) return cs::decode_value<Result>(claim.output().bytes);
///     auto hold = std::move(claim.hold());        // heartbeated until stored or released
///     Result r = run_task();
///     hold.store(cs::StoredOutput::from_bytes(cs::encode_value(r)));  // fenced
///
/// (a byte storage; an object storage, such as `InMemoryStorage`, keeps
/// `StoredOutput::from_object(std::make_shared<const Result>(r))`).

#include <algorithm>
#include <exception>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cache_key.hpp"
#include "clock.hpp"
#include "detail/counters.hpp"
#include "detail/heartbeat.hpp"
#include "detail/output_codec.hpp"
#include "detail/owner_id.hpp"
#include "detail/unique_function.hpp"
#include "detail/waiter_service.hpp"
#include "detail/wake_time.hpp"
#include "errors.hpp"
#include "events.hpp"
#include "options.hpp"
#include "signal.hpp"
#include "storage.hpp"
#include "storage/memory.hpp"

namespace cacheserialize {

template <class Clock, class Storage>
class ReservationManager;

/// The awaiter of `ReservationManager::claim_co`, defined by <cacheserialize/coroutine.hpp>
/// (C++20).
template <class Clock, class Storage>
class ClaimAwaiter;

namespace detail {

struct ManagerAccess;  // default_manager.hpp

/// A manager's shared state. Member order matters: the heartbeat is destroyed (joined) first,
/// so it never outlives the storage, clock or counters it uses. The keys that asynchronous
/// claims wait on each keep the state alive (a waiting claim must be able to finish), so it is
/// destroyed only once none waits.
template <class Clock, class Storage>
struct ManagerCore {
  ManagerCore(Storage s, Clock c, ManagerOptions o)
      : storage(std::move(s)), clock(std::move(c)), options(std::move(o)), waiters(clock) {}

  void emit(const Event& e) const noexcept {
    if (!options.listener) return;
    try {
      options.listener(e);
    } catch (...) {  // a listener cannot break the protocol
    }
  }

  Storage storage;
  Clock clock;
  const ManagerOptions options;
  Counters counters;
  WaiterService<Clock> waiters;
  std::mutex async_mu;  // guards async_keys and every waited key's list of waiters
  std::unordered_map<std::string, std::shared_ptr<WaiterTask>> async_keys;  // by waited key
  Heartbeat<ManagerCore> heartbeat{*this};
};

}  // namespace detail

/// Why a hold gives its reservation back without an output.
enum class ReleaseReason {
  failed,   ///< the work failed: a failure (`Stats::failures`, event `failed`)
  aborted,  ///< the work was cancelled, not failed (`Stats::aborted`, event `aborted`)
};

/// A reservation this process holds: extended by the manager's heartbeat until it is stored,
/// released, or destroyed (which releases it). Movable, not copyable.
///
/// States: active (heartbeated; `store`, `try_store` and `release` finish it), finished (after
/// any of those: `key()` and `reservation()` still answer, with the last expiry; the hold no
/// longer keeps the manager's state, heartbeat thread or storage alive) and moved-from (every
/// accessor but `active()`, `lost()` and `took_over()` throws `std::logic_error`).
///
/// Thread safety: one thread uses a hold at a time; `lost()` may be read from any thread.
template <class Clock, class Storage>
class Hold {
 public:
  /// Takes over `other`'s hold; `other` is left moved-from.
  Hold(Hold&&) noexcept = default;
  /// Abandons this hold (as the destructor does), then takes over `other`'s.
  Hold& operator=(Hold&& other) noexcept {
    if (this != &other) {
      abandon();
      core_ = std::move(other.core_);
      lease_ = std::move(other.lease_);
      took_over_ = other.took_over_;
    }
    return *this;
  }
  Hold(const Hold&) = delete;
  Hold& operator=(const Hold&) = delete;

  /// Releases the reservation if it is still held, as `release()` does, swallowing errors: the
  /// reservation then expires on its own.
  ~Hold() { abandon(); }

  /// @return whether the reservation is still this hold's to store or release.
  bool active() const noexcept { return core_ != nullptr; }

  /// @return the key held (or last held, once finished).
  /// @throws std::logic_error if the hold was moved from.
  const Key& key() const { return lease().key(); }

  /// @return the reservation, with the expiry of its latest extension (once finished: as it was
  ///         when the hold finished).
  /// @throws std::logic_error if the hold was moved from.
  Reservation reservation() const {
    const detail::Lease& l = lease();
    Reservation r = l.reservation;
    r.expires_at = from_unix_nanos(l.expires_at.load());
    return r;
  }

  /// @return whether a heartbeat found the reservation taken by another owner, or a store was
  ///         rejected by fencing. The function may still finish; its output will then not be
  ///         stored over the new holder's.
  bool lost() const noexcept { return lease_ && lease_->lost.load(); }

  /// @return whether this reservation replaced another owner's expired one.
  bool took_over() const noexcept { return took_over_; }

  /// Stores `output` and releases the reservation in one atomic step, if it is still ours
  /// (fencing token). Either way the hold is finished.
  /// @param output of the kind the storage keeps: `StoredOutput::from_object` for an object
  ///        storage (`storage_traits<Storage>::stores_objects`), `from_bytes` otherwise.
  /// @return stored, or rejected when another owner holds the key now (a `lost` event fires).
  /// @throws std::invalid_argument for an output of the wrong kind (or an empty object): nothing
  ///         is written and the hold stays active.
  /// @throws std::logic_error if the hold is finished or moved from.
  /// @throws storage_error if the storage fails; the hold is then finished too, after one
  ///         attempt to release the reservation so that waiters need not sit out its expiry.
  StoreStatus store(StoredOutput output) {
    if (active()) detail::check_output_kind<Storage>("cacheserialize::Hold::store", output);
    const std::shared_ptr<Core> core = finish();
    detail::Lease& lease = *lease_;
    StoreResult r;
    try {
      r = core->storage.store_and_release(lease.key(), lease.reservation, std::move(output),
                                          core->clock.now());
    } catch (...) {
      try {
        core->storage.release(lease.key(), lease.reservation);
      } catch (...) {  // it expires on its own
      }
      throw;
    }
    if (r.status == StoreStatus::stored) {
      if (core->options.listener) core->emit(event(lease, EventKind::released));
      return r.status;
    }
    if (lease.lost.exchange(true)) return r.status;  // the heartbeat already reported it
    detail::Counters::bump(core->counters.lost);
    Event e = event(lease, EventKind::lost);
    e.holder = r.current.owner;
    e.detail = "the store was rejected: the reservation is no longer ours (fencing token)";
    core->emit(e);
    return r.status;
  }

  /// Stores `value` as the manager's storage keeps outputs: a copy of the object for an object
  /// storage, its `serializer<T>` encoding otherwise; then as `store`. Callers that read it
  /// (`serialize_cached` wrappers, `Claim::value<T>()`) must expect a `T`: a reader of another
  /// type reports the output as `corrupt_output` and computes its own.
  /// @throws as `store`, and whatever encoding `value` throws (the hold then stays active).
  template <class T>
  StoreStatus store_value(const T& value) {
    if (!active()) finish();  // throws the logic_error before any encoding
    return store(detail::encode_output<Storage>(value));
  }

  /// Encodes and stores an output, best effort: a cache that cannot store must not cost the
  /// caller its value. If `make_output()` or the store throws, the failure is reported (a
  /// `store_failed` event and counter) and the reservation released.
  /// @return whether the output was stored; false for a finished hold.
  template <class MakeOutput>
  bool try_store(MakeOutput&& make_output) noexcept {
    if (!active()) return false;
    const std::shared_ptr<Core> core = core_;  // for the report, if it comes to that
    std::string why;
    try {
      StoredOutput out = std::forward<MakeOutput>(make_output)();
      return store(std::move(out)) == StoreStatus::stored;
    } catch (const std::exception& ex) {
      why = detail::reason_of(ex);
    } catch (...) {
      why = "unknown exception";
    }
    detail::Counters::bump(core->counters.store_failures);
    Event e = event(*lease_, EventKind::store_failed);
    e.detail = why;
    core->emit(e);
    abandon();  // encoding failed: the reservation is still ours to give back
    return false;
  }

  /// Releases the reservation without an output, so that a waiter takes over at once instead
  /// of at expiry.
  /// @param reason `failed` (the work failed: counted in `Stats::failures`, event `failed`) or
  ///        `aborted` (the work was cancelled, e.g. its workflow was: `Stats::aborted`, event
  ///        `aborted`; not a failure).
  /// @return what the storage found; releasing a reservation that is gone or not ours is a
  ///         harmless no-op.
  /// @throws std::logic_error if the hold is finished or moved from.
  /// @throws storage_error if the storage fails; the reservation then expires on its own.
  ReleaseStatus release(ReleaseReason reason = ReleaseReason::failed) {
    const std::shared_ptr<Core> core = finish();
    const bool aborted = reason == ReleaseReason::aborted;
    detail::Counters::bump(aborted ? core->counters.aborted : core->counters.failures);
    const ReleaseStatus status = core->storage.release(lease_->key(), lease_->reservation);
    Event e = event(*lease_, aborted ? EventKind::aborted : EventKind::failed);
    e.detail = to_string(status);
    core->emit(e);
    return status;
  }

  /// Hands the reservation on without releasing it: heartbeating stops here, and another
  /// process (or this one) continues it with `ReservationManager::adopt` before it expires,
  /// e.g. the worker that runs the task. Fires `detached` (never `lost` or `failed`).
  /// @return the reservation (owner, token, latest expiry), to pass to `adopt`.
  /// @throws std::logic_error if the hold is finished or moved from.
  Reservation detach() && {
    const std::shared_ptr<Core> core = finish();
    detail::Counters::bump(core->counters.detached);
    core->emit(event(*lease_, EventKind::detached));
    return reservation();
  }

 private:
  using Core = detail::ManagerCore<Clock, Storage>;
  friend class ReservationManager<Clock, Storage>;
  template <class Fn, class C, class S, class Signature>
  friend class SerializedFunction;

  Hold(std::shared_ptr<Core> core, std::shared_ptr<detail::Lease> lease, bool took_over)
      : core_(std::move(core)), lease_(std::move(lease)), took_over_(took_over) {}

  const detail::Lease& lease() const {
    if (!lease_) throw std::logic_error("cacheserialize::Hold: the hold was moved from");
    return *lease_;
  }

  // Ends heartbeating and hands the manager's state to the caller for the finishing call; the
  // hold keeps only its lease (key and last reservation).
  std::shared_ptr<Core> finish() {
    if (!active()) {
      throw std::logic_error(lease_ ? "cacheserialize::Hold: the reservation was already stored "
                                      "or released"
                                    : "cacheserialize::Hold: the hold was moved from");
    }
    core_->heartbeat.remove(*lease_);
    return std::move(core_);
  }

  // Gives the reservation back without counting a failure: the call found what it needed
  // without running the work (serialize_cached's recovery from an undecodable output).
  void discard() noexcept {
    if (!active()) return;
    const std::shared_ptr<Core> core = finish();
    try {
      core->storage.release(lease_->key(), lease_->reservation);
    } catch (...) {  // it expires on its own
    }
  }

  void abandon() noexcept {
    if (!active()) return;
    try {
      release();
    } catch (...) {  // it expires on its own
    }
  }

  static Event event(const detail::Lease& lease, EventKind kind) {
    Event e;
    e.kind = kind;
    e.key = &lease.key();
    e.owner = lease.reservation.owner;
    e.token = lease.reservation.token;
    e.expires_at = from_unix_nanos(lease.expires_at.load());
    e.tag = lease.terms.tag;
    return e;
  }

  std::shared_ptr<Core> core_;            // null once finished: a finished hold pins nothing
  std::shared_ptr<detail::Lease> lease_;  // null only when moved from
  bool took_over_ = false;
};

/// The outcome of `ReservationManager::claim`: a stored output, or a hold on the reservation.
template <class Clock, class Storage>
class Claim {
 public:
  /// @return whether an output was found (and no reservation taken).
  bool is_hit() const noexcept { return !hold_; }
  /// @return whether the call waited for another holder first.
  bool waited() const noexcept { return waited_; }
  /// @return the stored output.
  /// @throws std::logic_error if the claim is not a hit.
  StoredOutput& output() {
    if (hold_) throw std::logic_error("cacheserialize::Claim::output: the claim is not a hit");
    return output_;
  }
  /// @return the hold; move it out (`auto hold = std::move(claim.hold());`) for it to outlive
  ///         the claim.
  /// @throws std::logic_error if the claim is a hit.
  Hold<Clock, Storage>& hold() {
    if (!hold_) throw std::logic_error("cacheserialize::Claim::hold: the claim is a hit");
    return *hold_;
  }
  /// @return the stored output decoded as a `T`, as the storage keeps outputs (see
  ///         `Hold::store_value`).
  /// @throws std::logic_error if the claim is not a hit; codec_error if it is not a `T`.
  template <class T>
  T value() {
    return detail::decode_output_or_throw<Storage, T>(output());
  }

 private:
  friend class ReservationManager<Clock, Storage>;
  Claim(StoredOutput&& output, bool waited) : output_(std::move(output)), waited_(waited) {}
  Claim(Hold<Clock, Storage>&& hold, bool waited) : hold_(std::move(hold)), waited_(waited) {}

  StoredOutput output_;
  std::optional<Hold<Clock, Storage>> hold_;
  bool waited_ = false;
};

/// What `ReservationManager::try_claim` and `adopt` found.
enum class ClaimStatus {
  hit,       ///< an output is stored (try_claim): `output()`, `value<T>()`
  acquired,  ///< the reservation is the caller's: `hold()`, heartbeated
  held,      ///< another owner holds it: `holder()`, `remaining()`; nothing reserved or waited
  free,      ///< adopt only: the reservation ended and nobody holds the key
};

/// The outcome of a non-blocking `ReservationManager::try_claim` or `adopt`. Movable.
///
/// `held` also answers a claim by an owner id under which this manager already heartbeats the
/// key (an engine that claims a task it is already running): `holder().owner` is then the
/// caller's own owner id, and no second hold is made.
template <class Clock, class Storage>
class TryClaimResult {
 public:
  /// @return which outcome this is.
  ClaimStatus status() const noexcept { return status_; }
  /// @return whether an output was found: `output()`.
  bool is_hit() const noexcept { return status_ == ClaimStatus::hit; }
  /// @return whether the reservation is the caller's: `hold()`.
  bool is_acquired() const noexcept { return status_ == ClaimStatus::acquired; }
  /// @return whether another owner holds the key: `holder()`, `remaining()`.
  bool is_held() const noexcept { return status_ == ClaimStatus::held; }

  /// @return the stored output. @throws std::logic_error unless `is_hit()`.
  StoredOutput& output() {
    expect(ClaimStatus::hit, "output");
    return output_;
  }
  /// @return the stored output decoded as a `T` (see `Hold::store_value`).
  /// @throws std::logic_error unless `is_hit()`; codec_error if it is not a `T`.
  template <class T>
  T value() {
    return detail::decode_output_or_throw<Storage, T>(output());
  }
  /// @return the heartbeated hold; move it out to keep it. @throws std::logic_error unless
  ///         `is_acquired()`.
  Hold<Clock, Storage>& hold() {
    expect(ClaimStatus::acquired, "hold");
    return *hold_;
  }
  /// @return the holder's reservation (its expiry in the holder's own clock).
  /// @throws std::logic_error unless `is_held()`.
  const Reservation& holder() const {
    expect(ClaimStatus::held, "holder");
    return holder_;
  }
  /// @return how long the holder's reservation still lives, by the storage's clock (for
  ///         `adopt`: by this manager's clock, from the holder's expiry).
  /// @throws std::logic_error unless `is_held()`.
  Duration remaining() const {
    expect(ClaimStatus::held, "remaining");
    return remaining_;
  }

 private:
  friend class ReservationManager<Clock, Storage>;
  TryClaimResult() = default;

  void expect(ClaimStatus s, const char* what) const {
    static const char* const names[] = {"a hit", "acquired", "held", "free"};
    if (status_ != s) {
      throw std::logic_error(std::string("cacheserialize::TryClaimResult::") + what +
                             ": the result is " + names[static_cast<int>(status_)] + ", not " +
                             names[static_cast<int>(s)]);
    }
  }

  ClaimStatus status_ = ClaimStatus::free;
  StoredOutput output_;
  std::optional<Hold<Clock, Storage>> hold_;
  Reservation holder_;
  Duration remaining_{};
};

/// Runs the reservation protocol over a clock and a storage policy.
///
/// @tparam Clock   a clock policy (clock.hpp): `SystemClock`, or `ManualClock` in tests.
/// @tparam Storage a storage policy (storage.hpp): `InMemoryStorage`, or a shared store.
///
/// Owner ids are unique per process and per call ("host:pid:random:counter"), unless the caller
/// chooses one (`ClaimOptions::owner`: an engine's, stable across its restarts). A reservation
/// expires `heartbeat_interval x grace_multiplier` after its last extension; the manager's single
/// heartbeat thread, started on first acquisition, extends each held reservation every
/// `heartbeat_interval`. An engine uses `try_claim` (never blocks), `adopt` (hand-over) and
/// `holder`; callers that may wait use `claim`.
///
/// A handle: copies share one state (storage, clock, counters, heartbeat thread); the heartbeat
/// thread is stopped and joined when the last copy, and the last hold, are gone.
///
/// Thread safety: every member may be called concurrently.
template <class Clock = SystemClock, class Storage = InMemoryStorage>
class ReservationManager {
  static_assert(check_clock<Clock>(), "");
  static_assert(check_storage<Storage>(), "");

 public:
  /// The clock type.
  using clock_type = Clock;
  /// The storage type.
  using storage_type = Storage;
  /// A held reservation: heartbeated until its output is stored or it is released.
  using hold_type = Hold<Clock, Storage>;
  /// What `claim` returns.
  using claim_type = Claim<Clock, Storage>;
  /// What `try_claim` and `adopt` return.
  using try_claim_type = TryClaimResult<Clock, Storage>;

  /// Copies share one state. Moving copies too, so that a handle is never left empty.
  ReservationManager(const ReservationManager&) = default;
  /// Makes this a handle to another manager's state.
  ReservationManager& operator=(const ReservationManager&) = default;

  /// @param storage the store (a handle: the manager keeps a copy, so the store outlives it).
  /// @param clock   the clock (a handle too).
  /// @param options defaults for reservations, and the listener.
  /// @throws std::invalid_argument for a non-positive heartbeat interval or a grace multiplier
  ///         below 1.
  explicit ReservationManager(Storage storage = Storage(), Clock clock = Clock(),
                              ManagerOptions options = {})
      : core_(make_core(std::move(storage), std::move(clock), std::move(options))) {}

  /// @name Accessors
  /// @{

  /// @return the storage (shared by every copy of this manager).
  Storage& storage() const noexcept { return core_->storage; }
  /// @return the clock.
  const Clock& clock() const noexcept { return core_->clock; }
  /// @return the options the manager was made with.
  const ManagerOptions& options() const noexcept { return core_->options; }
  /// @return a snapshot of the counters.
  Stats stats() const {
    Stats s = core_->counters.snapshot();
    s.holds_active = core_->heartbeat.size();
    return s;
  }
  /// @}

  /// @return a new owner id, unique in this process and across processes.
  static std::string new_owner_id() { return detail::new_owner_id(); }

  /// Looks `key` up without reserving anything; counts a hit or a miss.
  std::optional<StoredOutput> lookup(const Key& key) const { return lookup(key, {}); }

  /// Stores `output` for `key` without a reservation (cache-only tasks).
  /// @throws std::invalid_argument for an output of the wrong kind, as `Hold::store`.
  void put(const Key& key, StoredOutput output) const {
    detail::check_output_kind<Storage>("cacheserialize::ReservationManager::put", output);
    core_->storage.put(key, std::move(output));
  }

  /// Returns the stored output of `key`, or takes its reservation, waiting while another owner
  /// holds a live one:
  /// - output stored (and not `options.overwrite`): a hit;
  /// - no reservation, an expired one, or one of `options.owner` (a restarted engine resuming
  ///   its own): it becomes this call's (heartbeated) hold;
  /// - a live reservation of another owner: wait until the storage signals a store or release
  ///   (or, for storages that cannot, the next poll) or the holder's expiry, then try again.
  ///   A `waiting` event names the holder, again whenever the holder or its expiry changes.
  ///
  /// @throws timeout_error   after `options.wait_timeout` of waiting (naming the holder).
  /// @throws cancelled_error when `options.cancel` is cancelled while the call waits, or before
  ///         it starts: a call whose token is already cancelled returns a stored output if there
  ///         is one, and otherwise takes no reservation.
  /// @throws std::invalid_argument for invalid options.
  /// @throws std::logic_error if this manager already holds the key for `options.owner` (a
  ///         second hold of one reservation; waiting for it would wait for oneself).
  /// @throws storage_error   (or the storage's own exceptions) when the storage fails.
  claim_type claim(const Key& key, const ClaimOptions& options = {}) const {
    detail::validate("cacheserialize::ReservationManager::claim", options);
    if (storage_traits<Storage>::probe_before_acquire && !options.overwrite) {
      if (std::optional<StoredOutput> out = lookup(key, options.tag))
        return claim_type(std::move(*out), false);
    }
    return acquire_or_wait(key, options);
  }

  /// The completion of `claim_async`: exactly one of `error` (timeout_error, cancelled_error,
  /// storage_error, std::logic_error as for `claim`) and `claim` is set.
  using claim_callback = void(std::exception_ptr error, std::optional<claim_type> claim);

  /// `claim`, without blocking the caller or taking a thread while it waits: the manager's one
  /// waiter thread re-checks a held key only when the storage notifies a change of it, a
  /// cancellation comes, or a timer falls due (the holder's expiry, `wait_timeout`, or, for a
  /// storage that cannot notify, the jittered `poll_interval`). Waiters on one key share its
  /// checks: one storage operation per check, however many wait.
  ///
  /// Where `callback` runs:
  /// - on the calling thread, before `claim_async` returns, when the claim needs no wait (a
  ///   hit, the reservation taken, or a failure on the first look);
  /// - otherwise on the manager's waiter thread. It must then be short and must not block
  ///   (post the work to your executor, as `SerializedFunction::async` does): a key's
  ///   callbacks run right after that key's check, before the next key's, so a slow callback
  ///   delays other keys' wake-ups by its own run, no more, but it delays them. A callback may call
  ///   the manager (including `claim_async`) and may drop the last handle of it. An exception
  ///   it throws is swallowed on the waiter thread.
  ///
  /// A waiting claim keeps the manager's state (storage, clock, heartbeat) alive until it
  /// completes, and no longer: the waiter thread lets go of it before the callback runs, so that
  /// a caller that drops the last handle after its claims completed destroys the manager, and
  /// joins its threads, on its own thread. A waiting claim is counted in `Stats::waits` and the
  /// gauge `Stats::waiters_active`, and fires the events `claim` does (`waiting`, `woke`, `hit`,
  /// `acquired`, `took_over`).
  ///
  /// @param callback invocable as `void(std::exception_ptr, std::optional<claim_type>)`
  ///        (`claim_callback`); move-only callables are accepted.
  /// @throws std::invalid_argument for invalid options (nothing is started, the callback is not
  ///         called). Every other failure goes to the callback.
  /// @param key the key to claim.
  /// @param options as for `claim`.
  template <class Callback>
  void claim_async(const Key& key, const ClaimOptions& options, Callback callback) const {
    static_assert(
        std::is_invocable<Callback&, std::exception_ptr, std::optional<claim_type>>::value,
        "cacheserialize::ReservationManager::claim_async: the callback must be "
        "invocable as void(std::exception_ptr, std::optional<Claim>)");
    detail::validate("cacheserialize::ReservationManager::claim_async", options);
    bool probed = false;
    if constexpr (storage_traits<Storage>::probe_before_acquire) {
      // A hit calls back straight away: no wrapped callback, no reservation terms.
      if (!options.overwrite && !options.cancel.cancelled()) {
        std::optional<StoredOutput> out;
        try {
          out = lookup(key, options.tag);
        } catch (...) {
          callback(std::current_exception(), std::nullopt);
          return;
        }
        if (out) {
          callback(nullptr, claim_type(std::move(*out), false));
          return;
        }
        probed = true;
      }
    }
    start_async(key, options, AsyncDone(std::move(callback)), probed);
  }

  /// As above, completing a future instead of calling back: `get()` returns the claim or
  /// throws what `claim` would have thrown.
  std::future<claim_type> claim_async(const Key& key, const ClaimOptions& options = {}) const {
    std::promise<claim_type> promise;
    std::future<claim_type> future = promise.get_future();
    claim_async(key, options,
                [promise = std::move(promise)](std::exception_ptr error,
                                               std::optional<claim_type> claim) mutable {
                  if (error) {
                    promise.set_exception(std::move(error));
                  } else {
                    promise.set_value(std::move(*claim));
                  }
                });
    return future;
  }

  /// C++20: `co_await manager.claim_co(key, options)` returns the claim (or throws what `claim`
  /// throws) without blocking a thread while it waits. Needs <cacheserialize/coroutine.hpp>,
  /// which defines the awaiter; the coroutine resumes where `claim_async`'s callback runs.
  template <class Awaiter = ClaimAwaiter<Clock, Storage>>
  Awaiter claim_co(const Key& key, ClaimOptions options = {}) const {
    return Awaiter(*this, key, std::move(options));
  }

  /// Looks at `key` once, without blocking or waiting, in exactly one storage operation (one
  /// round trip on a networked store): its stored output (unless `options.overwrite`), or its
  /// reservation taken for the caller, or who holds it. The way an engine evaluates tasks in
  /// rounds on a small pool: a held task is simply looked at again in a later round.
  ///
  /// Counts a hit, an execution (acquired) or a `held`; fires `hit`, `acquired` (and
  /// `took_over`) or `held`, never `waiting`. `wait_timeout` and `poll_interval` play no part.
  /// @return a result whose status is hit, acquired or held.
  /// @throws cancelled_error if `options.cancel` is cancelled (nothing is looked up).
  /// @throws std::invalid_argument for invalid options.
  /// @throws storage_error (or the storage's own exceptions) when the storage fails.
  try_claim_type try_claim(const Key& key, const ClaimOptions& options = {}) const {
    detail::validate("cacheserialize::ReservationManager::try_claim", options);
    if (options.cancel.cancelled()) {
      throw cancelled_error("cancelled before the call started: nothing looked up", key.describe());
    }
    Core& core = *core_;
    const Terms terms = terms_of("cacheserialize::ReservationManager::try_claim", options);
    const std::string owner = options.owner ? *options.owner : new_owner_id();
    const TimePoint now = core.clock.now();
    AcquireResult r =
        core.storage.acquire(key, AcquireRequest{owner, now, terms.ttl, options.overwrite});
    try_claim_type result;
    switch (r.status) {
      case AcquireStatus::hit:
        note_hit(key, options.tag);
        result.status_ = ClaimStatus::hit;
        result.output_ = std::move(r.output);
        return result;
      case AcquireStatus::acquired:
        if (std::optional<hold_type> hold =
                make_hold(key, r, terms, options, now, EventKind::acquired, false)) {
          result.status_ = ClaimStatus::acquired;
          result.hold_ = std::move(hold);
          return result;
        }
        r.remaining = terms.ttl;  // already held here, under this owner: as it was just extended
        break;
      case AcquireStatus::held:
        break;
    }
    note_held(key, owner, r.reservation, options.tag);
    result.status_ = ClaimStatus::held;
    result.holder_ = std::move(r.reservation);
    result.remaining_ = r.remaining;
    return result;
  }

  /// Continues a reservation handed on by `Hold::detach` (in this process or another): a
  /// fenced extension, so it succeeds only if the reservation is still that owner's with that
  /// token (or expired with nobody taking the key since); then a hold heartbeated here.
  ///
  /// @param reservation as `detach` returned it (owner and token decide; the expiry is not
  ///        used).
  /// @param options the hold's timing, tag and liveness; `owner`, if set, must be the
  ///        reservation's.
  /// @return acquired (`hold()`, event `adopted`, counted in `Stats::adoptions`); held, with the
  ///         key's current holder, if it was taken over meanwhile, or if this manager already
  ///         heartbeats it; or free, if the reservation ended and nobody holds the key.
  /// @throws std::invalid_argument for a reservation without an owner or a token, a mismatched
  ///         `options.owner`, or invalid options.
  /// @throws cancelled_error if `options.cancel` is cancelled (nothing is done).
  /// @throws storage_error (or the storage's own exceptions) when the storage fails.
  /// @param key the key the reservation is on.
  try_claim_type adopt(const Key& key, const Reservation& reservation,
                       const ClaimOptions& options = {}) const {
    const char* const who = "cacheserialize::ReservationManager::adopt";
    detail::validate(who, options);
    if (reservation.owner.empty() || reservation.token == 0) {
      throw std::invalid_argument(std::string(who) +
                                  ": the reservation has no owner or no token: pass the one "
                                  "that Hold::detach returned");
    }
    if (options.owner && *options.owner != reservation.owner) {
      throw std::invalid_argument(std::string(who) + ": options.owner '" + *options.owner +
                                  "' is not the reservation's owner '" + reservation.owner + "'");
    }
    if (options.cancel.cancelled()) {
      throw cancelled_error("cancelled before the call started: nothing adopted", key.describe());
    }
    Core& core = *core_;
    const Terms terms = terms_of(who, options);
    const TimePoint now = core.clock.now();
    const ExtendResult r = core.storage.extend(key, reservation, now, terms.ttl);
    try_claim_type result;
    if (r.status == ExtendStatus::extended) {
      AcquireResult mine;
      mine.reservation = r.current;
      if (std::optional<hold_type> hold =
              make_hold(key, mine, terms, options, now, EventKind::adopted, false)) {
        result.status_ = ClaimStatus::acquired;
        result.hold_ = std::move(hold);
        return result;
      }
      result.status_ = ClaimStatus::held;
      result.holder_ = r.current;
      result.remaining_ = terms.ttl;
      return result;
    }
    if (r.current.owner.empty()) return result;  // free
    result.status_ = ClaimStatus::held;
    result.holder_ = r.current;
    result.remaining_ = std::max(Duration::zero(), r.current.expires_at - now);
    return result;
  }

  /// @return who holds `key` now, as the storage sees it (owner, token, the holder's view of its
  ///         expiry; possibly expired if nobody took it since), or nothing: one read-only
  ///         storage operation. For "task X waits for Y until T" without waiting.
  /// @throws storage_error (or the storage's own exceptions) when the storage fails.
  std::optional<Reservation> holder(const Key& key) const {
    static_assert(detail::has_reservation<Storage>::value,
                  "cacheserialize: ReservationManager::holder needs the storage member "
                  "`std::optional<Reservation> reservation(const Key&) const`");
    return core_->storage.reservation(key);
  }

 private:
  using Core = detail::ManagerCore<Clock, Storage>;
  friend struct detail::ManagerAccess;

  explicit ReservationManager(std::shared_ptr<Core> core) noexcept : core_(std::move(core)) {}

  // serialize_cached's calls probe with `lookup` themselves and decode a hit in place, then
  // claim through `acquire_or_wait`: a hit then builds no Claim and re-validates no options
  // (they were validated when the function was wrapped).
  template <class Fn, class C, class S, class Signature>
  friend class SerializedFunction;

  // A reservation's timing, from the claim's options and the manager's defaults.
  struct Terms {
    Duration interval;
    Duration ttl;
    bool borrow_key = false;  // the key outlives the hold: its lease refers to it (Lease)
  };
  Terms terms_of(const char* who, const ClaimOptions& options) const {
    const Core& core = *core_;
    const Duration interval = options.heartbeat_interval.value_or(core.options.heartbeat_interval);
    return Terms{interval, detail::reservation_ttl(
                               who, interval,
                               options.grace_multiplier.value_or(core.options.grace_multiplier))};
  }

  std::optional<StoredOutput> lookup(const Key& key, std::string_view tag) const {
    Core& core = *core_;
    std::optional<StoredOutput> out = core.storage.get(key);
    if (out) {
      note_hit(key, tag);
    } else {
      core.counters.misses.add();
    }
    return out;
  }

  // A hit read in place (storages with visit_output): `f(const StoredOutput&)` copies the value
  // out. Counts a hit or a miss as `lookup` does; events are emitted after the storage's call.
  // @return whether there was an output.
  template <class F>
  bool visit(const Key& key, F&& f) const {
    Core& core = *core_;
    if (core.storage.visit_output(key, std::forward<F>(f))) {
      note_hit(key, {});
      return true;
    }
    core.counters.misses.add();
    return false;
  }

  // A stored output that the caller cannot decode: reported, then recomputed by the caller.
  void report_unreadable(const Key& key, const std::string& why) const {
    Core& core = *core_;
    detail::Counters::bump(core.counters.corrupt_outputs);
    Event e;
    e.kind = EventKind::corrupt_output;
    e.key = &key;
    e.detail = why;
    core.emit(e);
  }

  static std::shared_ptr<Core> make_core(Storage storage, Clock clock, ManagerOptions options) {
    detail::validate("cacheserialize::ReservationManager", options);
    return std::make_shared<Core>(std::move(storage), std::move(clock), std::move(options));
  }

  void note_hit(const Key& key, std::string_view tag) const {
    Core& core = *core_;
    core.counters.hits.add();
    if (core.options.listener) {
      Event e;
      e.kind = EventKind::hit;
      e.key = &key;
      e.tag = tag;
      core.emit(e);
    }
  }

  void note_held(const Key& key, std::string_view owner, const Reservation& holder,
                 std::string_view tag) const {
    Core& core = *core_;
    detail::Counters::bump(core.counters.held);
    emit_about(key, owner, holder, EventKind::held, tag);
  }

  // The gauge of blocking claims that wait now.
  struct Waiting {
    explicit Waiting(detail::Counters& c) : counters(c) {
      detail::Counters::bump(c.waiters_active);
    }
    ~Waiting() { counters.waiters_active.fetch_sub(1, std::memory_order_relaxed); }
    Waiting(const Waiting&) = delete;
    Waiting& operator=(const Waiting&) = delete;
    detail::Counters& counters;
  };

  // @param borrow_key whether `key` outlives the claim and its hold, as in a wrapper's
  //        synchronous call: the hold then refers to it rather than copying it.
  claim_type acquire_or_wait(const Key& key, const ClaimOptions& options,
                             bool borrow_key = false) const {
    Core& core = *core_;
    Terms terms = terms_of("cacheserialize::ReservationManager::claim", options);
    terms.borrow_key = borrow_key;
    std::optional<detail::OwnerIdBuffer> generated;  // on the stack: no string to allocate
    const std::string_view owner =
        options.owner ? std::string_view(*options.owner) : generated.emplace().view();
    const TimePoint start = core.clock.now();
    const TimePoint give_up = options.wait_timeout
                                  ? detail::saturating_add(start, *options.wait_timeout)
                                  : TimePoint::max();

    if (options.cancel.cancelled()) {  // a stored output costs nothing; work must not start
      if constexpr (!storage_traits<Storage>::probe_before_acquire) {
        if (!options.overwrite) {
          if (std::optional<StoredOutput> out = lookup(key, options.tag))
            return claim_type(std::move(*out), false);
        }
      }
      throw cancelled_error("cancelled before the call started: no reservation taken",
                            key.describe());
    }

    // Raised by the storage (store/release) and by cancellation; made once the call must wait
    // (a miss that takes the reservation at once needs none).
    std::optional<Signal> signal;
    Subscription subscription;
    CancellationToken::Registration cancel_registration;
    std::optional<Waiting> waiting;  // engaged once the call waits
    bool registered = false;
    Reservation waited_on;  // the holder last reported through a `waiting` event
    Duration recheck = detail::expiry_recheck;  // after a "no time left" answer

    for (bool first = true;; first = false) {
      if (signal) signal->reset();
      const TimePoint now = first ? start : core.clock.now();
      AcquireResult r =
          core.storage.acquire(key, AcquireRequest{owner, now, terms.ttl, options.overwrite});
      const bool waited = waiting.has_value();
      if (std::optional<claim_type> c = conclude(key, r, terms, options, owner, now, waited)) {
        return std::move(*c);
      }
      // Another owner holds the key. Subscribe before sleeping, then look again, so that a
      // release between the look and the subscription is not missed.
      if (!registered) {
        registered = true;
        signal.emplace();
        if constexpr (storage_traits<Storage>::notifies) {
          subscription = core.storage.subscribe(key, *signal);
        }
        cancel_registration = options.cancel.subscribe(*signal);
        if (!options.cancel.cancelled()) continue;
      }
      if (!waited) {
        waiting.emplace(core.counters);
        detail::Counters::bump(core.counters.waits);
      }
      if (r.reservation.owner != waited_on.owner || r.reservation.token != waited_on.token ||
          r.reservation.expires_at != waited_on.expires_at) {
        waited_on = r.reservation;
        emit_about(key, owner, r.reservation, EventKind::waiting, options.tag);
      }
      if (options.cancel.cancelled()) {
        throw cancelled_error("cancelled while waiting for holder " + r.reservation.owner,
                              key.describe());
      }
      if (now >= give_up) {
        throw timeout_error(timed_out(*options.wait_timeout, r.reservation), key.describe(),
                            r.reservation.owner, r.reservation.expires_at);
      }
      core.clock.wait_until(
          *signal,
          detail::wake_time(now, r.remaining, give_up,
                            detail::jittered_poll(options.poll_interval, detail::jitter_random()),
                            storage_traits<Storage>::notifies, recheck));
      recheck = detail::next_recheck(r.remaining, recheck, options.poll_interval);
    }
  }

  using AsyncDone = detail::UniqueFunction<void(std::exception_ptr, std::optional<claim_type>)>;

  // The first look of claim_async, on the caller's thread: complete at once, or wait.
  // @param probed whether the caller looked the key up already (a miss).
  void start_async(const Key& key, const ClaimOptions& options, AsyncDone done, bool probed) const {
    const char* const who = "cacheserialize::ReservationManager::claim_async";
    Core& core = *core_;
    std::optional<claim_type> claim;
    std::exception_ptr error;
    std::string owner;
    Terms terms{};
    TimePoint give_up{};
    AcquireResult r;
    try {
      terms = terms_of(who, options);
      if (options.cancel.cancelled()) {  // a stored output costs nothing; work must not start
        if (!options.overwrite) {
          if (std::optional<StoredOutput> out = lookup(key, options.tag))
            claim.emplace(claim_type(std::move(*out), false));
        }
        if (!claim) {
          throw cancelled_error("cancelled before the call started: no reservation taken",
                                key.describe());
        }
      }
      if (!claim && !probed && storage_traits<Storage>::probe_before_acquire &&
          !options.overwrite) {
        if (std::optional<StoredOutput> out = lookup(key, options.tag))
          claim.emplace(claim_type(std::move(*out), false));
      }
      if (!claim) {
        owner = options.owner ? *options.owner : new_owner_id();
        const TimePoint now = core.clock.now();
        give_up = options.wait_timeout ? detail::saturating_add(now, *options.wait_timeout)
                                       : TimePoint::max();
        r = core.storage.acquire(key, AcquireRequest{owner, now, terms.ttl, options.overwrite});
        if (std::optional<claim_type> c = conclude(key, r, terms, options, owner, now, false)) {
          claim.emplace(std::move(*c));
        } else if (now >= give_up) {
          throw timeout_error(timed_out(*options.wait_timeout, r.reservation), key.describe(),
                              r.reservation.owner, r.reservation.expires_at);
        }
      }
    } catch (...) {
      error = std::current_exception();
    }
    if (error || claim) {
      done(std::move(error), std::move(claim));
      return;
    }
    wait_async(key, options, std::move(owner), terms, give_up, r, std::move(done));
  }

  // What an acquire's answer completes: a hit or a hold (waited: the claim waited first).
  // @return nothing if another owner holds the key.
  // @throws std::logic_error if this manager already holds the key for `owner`.
  std::optional<claim_type> conclude(const Key& key, AcquireResult& r, const Terms& terms,
                                     const ClaimOptions& options, std::string_view owner,
                                     TimePoint now, bool waited) const {
    switch (r.status) {
      case AcquireStatus::hit:
        if (waited) emit_woke(key, owner, "output", options.tag);
        note_hit(key, options.tag);
        return claim_type(std::move(r.output), waited);
      case AcquireStatus::acquired:
        if (std::optional<hold_type> hold =
                make_hold(key, r, terms, options, now, EventKind::acquired, waited)) {
          return claim_type(std::move(*hold), waited);
        }
        throw std::logic_error(
            "cacheserialize::ReservationManager::claim: this manager already holds the key "
            "for owner '" +
            std::string(owner) + "' through another Hold (" + key.describe() + ")");
      case AcquireStatus::held:
        break;
    }
    return std::nullopt;
  }

  static std::string timed_out(Duration wait_timeout, const Reservation& holder) {
    return "gave up waiting after " + format_duration(wait_timeout) + ": still held by " +
           holder.owner + " until " + format_time(holder.expires_at);
  }

  class AsyncKey;

  // One claim_async that waits. Notified by its cancellation token: its key is checked then.
  struct AsyncWaiter final : Notifiable {
    AsyncWaiter(const ClaimOptions& o, std::string id, const Terms& t, TimePoint g, AsyncDone d)
        : options(o), owner(std::move(id)), terms(t), give_up(g), done(std::move(d)) {}
    void notify() noexcept override;

    const ClaimOptions options;
    const std::string owner;
    const Terms terms;
    const TimePoint give_up;
    AsyncDone done;
    AsyncKey* key = nullptr;  // set before it can be notified; outlives it
    Reservation waited_on;    // the holder last reported through a `waiting` event
    Duration recheck = detail::expiry_recheck;
    bool finished = false;  // completed by the current check (the waiter thread's only)
    CancellationToken::Registration cancel_registration;  // reset before it is destroyed
  };

  struct AsyncOutcome {
    AsyncWaiter* waiter;
    std::exception_ptr error;
    std::optional<claim_type> claim;
  };

  // A key that claims wait on asynchronously, checked by the waiter service: one storage
  // operation per check for all of them. Keeps the manager's state alive while in its map.
  class AsyncKey final : public detail::WaiterTask {
   public:
    AsyncKey(std::shared_ptr<Core> c, Key k, bool o, std::string i)
        : core(std::move(c)), key(std::move(k)), overwrite(o), id(std::move(i)) {}

    TimePoint run(TimePoint now) noexcept override {
      return ReservationManager(core).check_async(*this, now);
    }
    void deliver(std::shared_ptr<detail::WaiterTask>& self) noexcept override {
      deliver_async(*this, self);
    }

    const std::shared_ptr<Core> core;
    const Key key;
    const bool overwrite;
    const std::string id;               // in core->async_keys
    Subscription subscription;          // set once by the thread that made it; ended when destroyed
    std::atomic<bool> notified{false};  // the subscription is in place: notifications come
    std::vector<std::unique_ptr<AsyncWaiter>> waiters;  // guarded by core->async_mu
    // Out of core->async_keys and retired: its waiters all finished (guarded by async_mu).
    bool closed = false;
    // What the last check completed, for deliver (the waiter thread's only).
    std::vector<AsyncOutcome> outcomes;
    std::vector<std::unique_ptr<AsyncWaiter>> finished;
  };

  // Parks a claim that found the key held: on the key's waiter list, checked by the service.
  void wait_async(const Key& key, const ClaimOptions& options, std::string owner,
                  const Terms& terms, TimePoint give_up, const AcquireResult& r,
                  AsyncDone done) const {
    Core& core = *core_;
    auto waiter =
        std::make_unique<AsyncWaiter>(options, std::move(owner), terms, give_up, std::move(done));
    waiter->waited_on = r.reservation;
    std::shared_ptr<AsyncKey> waited;
    bool made = false;
    try {
      std::string id = key.encoded();
      id += options.overwrite ? '1' : '0';  // an overwriting claim never takes a hit
      std::lock_guard<std::mutex> lock(core.async_mu);
      const auto found = core.async_keys.find(id);
      if (found != core.async_keys.end()) {
        waited = std::static_pointer_cast<AsyncKey>(found->second);
      } else {
        waited = std::make_shared<AsyncKey>(core_, key, options.overwrite, id);
        core.waiters.attach(*waited);  // may fail to start the thread: nothing changed yet
        core.async_keys.emplace(std::move(id), waited);
        made = true;
      }
    } catch (...) {
      waiter->done(std::current_exception(), std::nullopt);
      return;
    }
    detail::Counters::bump(core.counters.waits);
    detail::Counters::bump(core.counters.waiters_active);
    emit_about(key, waiter->owner, r.reservation, EventKind::waiting, options.tag);
    waiter->key = waited.get();
    waiter->cancel_registration = options.cancel.subscribe(*waiter);
    if constexpr (storage_traits<Storage>::notifies_callbacks) {
      if (made) {
        try {
          waited->subscription = core.storage.subscribe(key, *waited);
          waited->notified.store(true);
        } catch (...) {  // no notifications: the key's waiters poll it
        }
      }
    }
    {
      std::lock_guard<std::mutex> lock(core.async_mu);
      if (waited->closed) {  // its last waiters finished since this claim found it: reopen it
        waited->closed = false;
        waited->revive();
        core.async_keys.emplace(waited->id, waited);  // unless a later claim made another
      }
      waited->waiters.push_back(std::move(waiter));
    }
    waited->notify();  // a change between this claim's look and its subscription is not missed
  }

  // One check of a key on the waiter service's thread: what it completes goes to
  // `waited.outcomes`, delivered by deliver_async right after.
  // @return when to check it again, unless notified first.
  TimePoint check_async(AsyncKey& waited, TimePoint now) const noexcept {
    Core& core = *core_;
    std::vector<AsyncOutcome>& done = waited.outcomes;
    std::vector<AsyncWaiter*> live;
    TimePoint next = TimePoint::max();
    try {
      {
        std::lock_guard<std::mutex> lock(core.async_mu);
        live.reserve(waited.waiters.size());
        for (const auto& w : waited.waiters) live.push_back(w.get());
      }
      done.reserve(live.size());
      for (auto i = live.begin(); i != live.end();) {
        AsyncWaiter& w = **i;
        if (!w.options.cancel.cancelled()) {
          ++i;
          continue;
        }
        done.push_back(
            {&w,
             std::make_exception_ptr(cancelled_error(
                 "cancelled while waiting for holder " + w.waited_on.owner, waited.key.describe())),
             std::nullopt});
        w.finished = true;
        i = live.erase(i);
      }
      if (!live.empty()) next = look_async(waited, live, now, done);
    } catch (...) {  // the storage failed: every claim still waiting hears of it
      for (AsyncWaiter* w : live) {
        if (w->finished) continue;
        w->finished = true;
        done.push_back({w, std::current_exception(), std::nullopt});
      }
      next = TimePoint::max();
    }
    // The finished leave the key's list in one pass; the key leaves the map with its last
    // waiter.
    std::shared_ptr<detail::WaiterTask> gone;
    bool empty = false;
    {
      std::lock_guard<std::mutex> lock(core.async_mu);
      auto& ws = waited.waiters;
      auto kept = ws.begin();
      for (auto& w : ws) {
        if (w->finished) {
          waited.finished.push_back(std::move(w));
        } else {
          *kept++ = std::move(w);
        }
      }
      ws.erase(kept, ws.end());
      empty = ws.empty();
      if (empty) {
        const auto found = core.async_keys.find(waited.id);
        if (found != core.async_keys.end() && found->second.get() == &waited) {
          gone = std::move(found->second);
          core.async_keys.erase(found);
        }
        // Under async_mu, so that a claim that found the key before this cannot add itself
        // to a retired key: it sees `closed` and reopens it.
        waited.closed = true;
        waited.retire();
      }
    }
    return empty ? TimePoint::max() : next;
  }

  // Runs the completions of the key's last check, on the waiter thread, after letting go of
  // the key (`self`, the service's reference to it) and so of the manager's state: a caller that
  // sees its completion and drops its last handle then destroys the manager on its own thread.
  static void deliver_async(AsyncKey& waited, std::shared_ptr<detail::WaiterTask>& self) noexcept {
    std::vector<AsyncOutcome> outcomes = std::move(waited.outcomes);
    std::vector<std::unique_ptr<AsyncWaiter>> finished = std::move(waited.finished);
    waited.outcomes.clear();
    waited.finished.clear();
    detail::Counters& counters = waited.core->counters;
    for (AsyncOutcome& d : outcomes) {
      d.waiter->cancel_registration = {};  // before the key it notifies can go
      counters.waiters_active.fetch_sub(1, std::memory_order_relaxed);
    }
    self.reset();  // may destroy the key, and with it the manager's state
    for (AsyncOutcome& d : outcomes) {
      try {
        d.waiter->done(std::move(d.error), std::move(d.claim));
      } catch (...) {  // documented: swallowed on the waiter thread
      }
    }
  }

  // The storage operation of a check, and what it concludes for each live waiter.
  TimePoint look_async(AsyncKey& waited, std::vector<AsyncWaiter*>& live, TimePoint now,
                       std::vector<AsyncOutcome>& done) const {
    Core& core = *core_;
    // The first waiter looks for all: a hit is everyone's; a reservation it takes is its own,
    // and the others then wait on it. (No waiter can be the holder: a claim whose owner holds
    // the key takes it on its first look and never waits.)
    AsyncWaiter* const lead = live.front();
    AcquireResult r = core.storage.acquire(
        waited.key, AcquireRequest{lead->owner, now, lead->terms.ttl, waited.overwrite});
    if (r.status == AcquireStatus::hit) {
      for (AsyncWaiter* w : live) {
        AcquireResult mine;
        mine.status = AcquireStatus::hit;
        mine.output = r.output;
        done.push_back(
            {w, nullptr, conclude(waited.key, mine, w->terms, w->options, w->owner, now, true)});
        w->finished = true;
      }
      return TimePoint::max();
    }
    auto rest = live.begin();
    if (r.status == AcquireStatus::acquired) {
      Reservation taken = r.reservation;  // the others wait on it; the lead's hold may take r's
      std::exception_ptr error;
      std::optional<claim_type> claim;
      try {
        claim = conclude(waited.key, r, lead->terms, lead->options, lead->owner, now, true);
      } catch (...) {
        error = std::current_exception();
      }
      done.push_back({lead, std::move(error), std::move(claim)});
      lead->finished = true;
      ++rest;
      // The others now wait on the lead's fresh reservation.
      r.reservation = std::move(taken);
      r.status = AcquireStatus::held;
      r.remaining = lead->terms.ttl;
      r.previous.reset();
    }
    TimePoint next = TimePoint::max();
    const bool notified = waited.notified.load();
    for (; rest != live.end(); ++rest) {
      AsyncWaiter& w = **rest;
      const Reservation& h = r.reservation;
      if (now >= w.give_up) {
        done.push_back(
            {&w,
             std::make_exception_ptr(timeout_error(timed_out(*w.options.wait_timeout, h),
                                                   waited.key.describe(), h.owner, h.expires_at)),
             std::nullopt});
        w.finished = true;
        continue;
      }
      if (h.owner != w.waited_on.owner || h.token != w.waited_on.token ||
          h.expires_at != w.waited_on.expires_at) {
        w.waited_on = h;
        emit_about(waited.key, w.owner, h, EventKind::waiting, w.options.tag);
      }
      next = std::min(next, detail::wake_time(now, r.remaining, w.give_up,
                                              detail::jittered_poll(w.options.poll_interval,
                                                                    detail::jitter_random()),
                                              notified, w.recheck));
      w.recheck = detail::next_recheck(r.remaining, w.recheck, w.options.poll_interval);
    }
    return next;
  }

  // Heartbeats the reservation `r` (acquired, or extended by adopt) and reports it.
  // @return the hold; nothing if this manager already holds the key for the chosen owner (the
  //         reservation is then left alone: it is that other hold's).
  // A generated owner's reservation is moved out of `r` into the hold (no second hold of it can
  // exist); otherwise `r` is left as it was.
  std::optional<hold_type> make_hold(const Key& key, AcquireResult& r, const Terms& terms,
                                     const ClaimOptions& options, TimePoint now, EventKind kind,
                                     bool waited) const {
    Core& core = *core_;
    using Owner = detail::LeaseTerms::Owner;
    const Owner owner = kind == EventKind::adopted ? Owner::adopted
                        : options.owner            ? Owner::chosen
                                                   : Owner::generated;
    std::shared_ptr<detail::Lease> lease;
    try {
      const auto make = [&](Reservation&& held) {
        return std::make_shared<detail::Lease>(key, terms.borrow_key, std::move(held),
                                               terms.interval, terms.ttl, options.tag,
                                               options.alive, owner);
      };
      lease = owner == Owner::generated ? make(std::move(r.reservation))
                                        : make(Reservation(r.reservation));
      if (!core.heartbeat.add(lease, now)) return std::nullopt;
    } catch (...) {  // no heartbeat, no hold: give the reservation back at once
      try {
        core.storage.release(key, lease ? lease->reservation : r.reservation);
      } catch (...) {
      }
      throw;
    }
    const Reservation& held = lease->reservation;
    detail::Counters::bump(kind == EventKind::adopted ? core.counters.adoptions
                                                      : core.counters.executions);
    if (r.previous) detail::Counters::bump(core.counters.takeovers);
    if (core.options.listener) {
      Event e;
      e.key = &key;
      e.owner = held.owner;
      e.token = held.token;
      e.expires_at = held.expires_at;
      e.tag = options.tag;
      if (r.previous) {
        e.kind = EventKind::took_over;
        e.holder = r.previous->owner;
        core.emit(e);
        e.holder = {};
      }
      if (waited) {
        e.kind = EventKind::woke;
        e.detail = "acquired";
        core.emit(e);
        e.detail = {};
      }
      e.kind = kind;
      core.emit(e);
    }
    return hold_type(core_, std::move(lease), r.previous.has_value());
  }

  // An event about another holder (`waiting`, `held`), from the point of view of `owner`.
  void emit_about(const Key& key, std::string_view owner, const Reservation& holder, EventKind kind,
                  std::string_view tag) const {
    Event e;
    e.kind = kind;
    e.key = &key;
    e.owner = owner;
    e.holder = holder.owner;
    e.token = holder.token;
    e.expires_at = holder.expires_at;
    e.tag = tag;
    core_->emit(e);
  }

  void emit_woke(const Key& key, std::string_view owner, const char* why,
                 std::string_view tag) const {
    Event e;
    e.kind = EventKind::woke;
    e.key = &key;
    e.owner = owner;
    e.detail = why;
    e.tag = tag;
    core_->emit(e);
  }

  std::shared_ptr<Core> core_;
};

template <class Clock, class Storage>
void ReservationManager<Clock, Storage>::AsyncWaiter::notify() noexcept {
  key->notify();
}

}  // namespace cacheserialize
