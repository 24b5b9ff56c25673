#pragma once

/// @file storage.hpp
/// The storage policy: where outputs and reservations live, and the atomic operations the
/// reservation protocol needs. `InMemoryStorage` (storage/memory.hpp) serves one process; the
/// file-system, PostgreSQL and Redis storages serve several processes or machines.
///
/// A storage is a cheap, copyable handle; copies refer to the same store (the manager keeps a
/// copy, so the store outlives every manager and heartbeat that uses it). Its members are called
/// concurrently from many threads and must be thread-safe. Each operation is atomic with respect
/// to every other operation on the same key, in every process that shares the store.
///
/// Required members (checked by `check_storage<S>()`, which `ReservationManager` static_asserts):
///
///     std::optional<StoredOutput> get(const Key&);
///         // the stored output, if any
///     AcquireResult acquire(const Key&, const AcquireRequest&);
///         // unless req.overwrite: the stored output if any (status hit). Otherwise get-or-extend:
///         // no reservation, an expired one, or one already owned by req.owner -> it becomes
///         // req.owner's, expiring at req.now + req.ttl (status acquired; a new fencing token
///         // unless it was already req.owner's); a live reservation of another owner -> returned
///         // unchanged with its remaining lifetime (status held).
///     ExtendResult extend(const Key&, const Reservation& mine, TimePoint now, Duration ttl);
///         // only if the reservation is still `mine` (owner and token): new expiry now + ttl
///     ReleaseStatus release(const Key&, const Reservation& mine);
///         // only if the reservation is still `mine`; otherwise a no-op that says why
///     StoreResult store_and_release(const Key&, const Reservation& mine, StoredOutput, TimePoint
///     now);
///         // only if the reservation is still `mine` (fencing): store the output and release
///     void put(const Key&, StoredOutput);
///         // store unconditionally, for callers that cache without serialising
///
/// Optional members:
///
///     static constexpr bool stores_objects = true;
///         // keeps outputs as C++ objects (no codec; in-process only). Default: false, outputs
///         // are bytes encoded with cacheserialize::serializer<T>.
///     static constexpr bool probe_before_acquire = false;
///         // default true: a call first tries get(), and acquire() only on a miss. A storage where
///         // each operation is a network round trip sets it to false, so that a hit and the
///         // first step of a miss are both one acquire() round trip.
///     Subscription subscribe(const Key&, Notifiable&);
///         // while the subscription lives, the storage calls notify() after every store, put
///         // or release of the key, on whatever thread sees it (the writer's, or the storage's
///         // own listener), possibly under its own locks (see Notifiable in signal.hpp). A
///         // storage that may miss such an event (a dropped connection) must notify all its
///         // subscribers when it recovers. The subscriber is a Signal for a blocked caller, or
///         // a callback of the manager's waiter service, which so learns which of many keys
///         // changed without a thread per waiter. A storage whose subscribe takes only a
///         // `Signal&` still wakes blocked callers; asynchronous waiters then poll it.
///         // Storages without subscribe are polled.
///     std::vector<ExtendResult> extend_many(const std::vector<Extension>& batch, TimePoint now);
///         // extends many reservations in one operation (one round trip for a networked store):
///         // result i answers batch[i] exactly as extend(*key, *mine, now, ttl) would, each item
///         // fenced on its own (one lost reservation never fails the others). An exception means
///         // the whole batch failed. The heartbeat then extends the leases falling due together
///         // in one call instead of one call each. A storage derived from one that has it and
///         // that changes extend() must change extend_many likewise.
///     PruneResult prune(Duration older_than);
///         // removes outputs stored longer ago than `older_than` and records of free or
///         // long-expired reservations, never a live reservation.
///     std::optional<Reservation> reservation(const Key&) const;
///         // the key's reservation (live, or expired with nobody taking it since), if any: one
///         // read-only operation. Needed by ReservationManager::holder.
///     const void* identity() const noexcept;
///         // the same address for every copy of one handle, another for every other handle
///         // alive (e.g. its shared state's): serialize_cached(fn, options, storage) wrappers
///         // over copies of one handle then share one manager (default_manager).
///     template <class F> bool visit_output(const Key&, F&& f) const;
///         // if an output is stored: calls f(const StoredOutput&) while that output is
///         // guaranteed to stay alive and unchanged (e.g. under the storage's read lock), then
///         // returns true; otherwise returns false without calling f. f only copies or decodes
///         // the value out; it must not call the storage, and may throw (visit_output must let
///         // the exception through, releasing what it holds). When present, hits use it instead
///         // of get(), so a hit need not copy a StoredOutput (for an object storage: no shared
///         // reference count that every thread's hits write). A storage derived from one that
///         // has it and that changes get() must change visit_output likewise.
///
/// Time: the manager passes its clock's `now`. A storage with its own authoritative clock (a
/// database server) may ignore it and use its own; `AcquireResult::remaining` is then what lets
/// a waiter know how long to wait without comparing clocks.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "cache_key.hpp"
#include "signal.hpp"
#include "time.hpp"
#include "weight.hpp"

namespace cacheserialize {

/// A reservation: who holds a key, with which fencing token, until when.
struct Reservation {
  /// The holder's owner id: unique per process and per call (see ReservationManager).
  std::string owner;
  /// Strictly greater than every token issued earlier for the same key by the same store, so a
  /// holder that lost its reservation can be told apart from the current one.
  std::uint64_t token = 0;
  /// The instant after which another caller may take the reservation over.
  TimePoint expires_at{};
};

/// An output as a storage keeps it: an object storage keeps the C++ object itself (a hit costs a
/// copy, no serialisation); a byte storage keeps its encoding.
struct StoredOutput {
  std::shared_ptr<const void> object;    ///< object storages: the value
  const std::type_info* type = nullptr;  ///< object storages: the value's type, checked on reads
  std::string bytes;                     ///< byte storages: the encoded value
  /// object storages: the value's weight (weight.hpp), recorded by `from_object` where the type
  /// is known; null for an output made by hand (it then weighs its pointer).
  std::size_t (*weigh)(const void* object) = nullptr;

  /// @param value the output, shared and not copied: it must not change once stored. It is
  ///        stored as a `T` (typeid ignores const), so a wrapper returning `T` reads it.
  template <class T>
  static StoredOutput from_object(std::shared_ptr<const T> value) {
    StoredOutput out;
    out.type = &typeid(T);
    out.weigh = &detail::weigh_object<T>;
    out.object = std::move(value);
    return out;
  }
  /// As above, for a `shared_ptr<T>` (from `std::make_shared<T>`): stored as the same `T`.
  template <class T>
  static StoredOutput from_object(std::shared_ptr<T> value) {
    return from_object<T>(std::shared_ptr<const T>(std::move(value)));
  }
  /// @return an output kept as its encoded bytes (the storages that keep bytes).
  static StoredOutput from_bytes(std::string bytes) {
    StoredOutput out;
    out.bytes = std::move(bytes);
    return out;
  }
};

/// The caller's side of `acquire`.
struct AcquireRequest {
  std::string_view owner;  ///< the calling owner id
  TimePoint now{};         ///< the manager clock's current time
  Duration ttl{};          ///< the reservation's lifetime: heartbeat interval x grace multiplier
  bool overwrite = false;  ///< acquire even if an output is stored (overwrite_cache)
};

/// What `acquire` found.
enum class AcquireStatus {
  hit,       ///< an output is stored; no reservation was taken
  acquired,  ///< the reservation is the caller's
  held,      ///< another owner holds a live reservation
};

/// What `acquire` returns; which fields are set depends on `status`.
struct AcquireResult {
  /// What `acquire` found.
  AcquireStatus status = AcquireStatus::held;
  /// hit: the stored output.
  StoredOutput output;
  /// acquired: the caller's reservation; held: the holder's, unchanged.
  Reservation reservation;
  /// held: how long the holder's reservation still lives, by the storage's clock.
  Duration remaining{};
  /// acquired: the expired reservation of another owner that this acquisition replaced.
  std::optional<Reservation> previous;
};

/// What an extension found.
enum class ExtendStatus {
  extended,  ///< the reservation is still the caller's, with the new expiry
  lost,      ///< the reservation is gone or belongs to another owner
};

/// What `extend` (and each item of `extend_many`) returns.
struct ExtendResult {
  /// What the extension found.
  ExtendStatus status = ExtendStatus::lost;
  /// extended: the caller's reservation; lost: the current holder's (owner empty if none).
  Reservation current;
};

/// One item of `extend_many`: extend `*mine` on `*key` to now + `ttl`. Pointers, so that a batch
/// is built without copying keys; they must stay valid during the call.
struct Extension {
  /// The key.
  const Key* key = nullptr;
  /// The caller's reservation (owner and fencing token) to extend.
  const Reservation* mine = nullptr;
  /// The reservation's new lifetime, from now.
  Duration ttl{};
};

/// What `release` found.
enum class ReleaseStatus {
  released,       ///< the caller's reservation was released
  not_held,       ///< there was no reservation: nothing to do
  held_by_other,  ///< the reservation belongs to another owner (or token): left alone
};

/// What `store` did.
enum class StoreStatus {
  stored,    ///< the output is stored and the reservation released
  rejected,  ///< the reservation is no longer the caller's: nothing was written (fencing)
};

/// What `store` returns.
struct StoreResult {
  /// What `store` did.
  StoreStatus status = StoreStatus::rejected;
  /// rejected: the current holder (owner empty if none).
  Reservation current;
};

/// What `FileSystemStorage::prune` removed.
struct PruneResult {
  std::size_t outputs_removed = 0;       ///< outputs older than the age
  std::size_t reservations_removed = 0;  ///< keys whose lock file and record were removed
  std::size_t temporaries_removed = 0;   ///< temporary files of writers that died
};

/// @return "released", "not held", "held by another owner".
inline const char* to_string(ReleaseStatus s) noexcept {
  switch (s) {
    case ReleaseStatus::released:
      return "released";
    case ReleaseStatus::not_held:
      return "not held";
    case ReleaseStatus::held_by_other:
      return "held by another owner";
  }
  return "unknown";
}

/// A scoped registration returned by `subscribe`: the storage stops raising the signal when it
/// is destroyed. Movable, not copyable.
class Subscription {
 public:
  Subscription() = default;
  /// @param cancel called once, when the subscription ends (by `reset()` or destruction).
  explicit Subscription(std::function<void()> cancel) : cancel_(std::move(cancel)) {}
  /// Takes over `other`'s registration; `other` is left empty.
  Subscription(Subscription&& other) noexcept : cancel_(std::exchange(other.cancel_, nullptr)) {}
  /// Ends this registration, then takes over `other`'s; `other` is left empty.
  Subscription& operator=(Subscription&& other) noexcept {
    if (this != &other) {
      reset();
      cancel_ = std::exchange(other.cancel_, nullptr);
    }
    return *this;
  }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  ~Subscription() { reset(); }

  /// Ends the registration now.
  void reset() noexcept {
    if (cancel_) std::exchange(cancel_, nullptr)();
  }

 private:
  std::function<void()> cancel_;
};

namespace detail {

#define CACHESERIALIZE_DETECT(name, expr) \
  template <class S, class = void>        \
  struct name : std::false_type {};       \
  template <class S>                      \
  struct name<S, std::void_t<decltype(expr)>> : std::true_type {}

CACHESERIALIZE_DETECT(
    has_get, std::optional<StoredOutput>(std::declval<S&>().get(std::declval<const Key&>())));
CACHESERIALIZE_DETECT(
    has_acquire, AcquireResult(std::declval<S&>().acquire(std::declval<const Key&>(),
                                                          std::declval<const AcquireRequest&>())));
CACHESERIALIZE_DETECT(has_extend,
                      ExtendResult(std::declval<S&>().extend(std::declval<const Key&>(),
                                                             std::declval<const Reservation&>(),
                                                             std::declval<TimePoint>(),
                                                             std::declval<Duration>())));
CACHESERIALIZE_DETECT(
    has_release, ReleaseStatus(std::declval<S&>().release(std::declval<const Key&>(),
                                                          std::declval<const Reservation&>())));
CACHESERIALIZE_DETECT(has_store_and_release,
                      StoreResult(std::declval<S&>().store_and_release(
                          std::declval<const Key&>(), std::declval<const Reservation&>(),
                          std::declval<StoredOutput>(), std::declval<TimePoint>())));
CACHESERIALIZE_DETECT(has_put, std::declval<S&>().put(std::declval<const Key&>(),
                                                      std::declval<StoredOutput>()));
CACHESERIALIZE_DETECT(has_subscribe,
                      Subscription(std::declval<S&>().subscribe(std::declval<const Key&>(),
                                                                std::declval<Signal&>())));
CACHESERIALIZE_DETECT(has_subscribe_callback,
                      Subscription(std::declval<S&>().subscribe(std::declval<const Key&>(),
                                                                std::declval<Notifiable&>())));
CACHESERIALIZE_DETECT(has_visit_output, bool(std::declval<const S&>().visit_output(
                                            std::declval<const Key&>(),
                                            std::declval<void (&)(const StoredOutput&)>())));
CACHESERIALIZE_DETECT(
    has_reservation,
    std::optional<Reservation>(std::declval<const S&>().reservation(std::declval<const Key&>())));
CACHESERIALIZE_DETECT(has_extend_many, std::vector<ExtendResult>(std::declval<S&>().extend_many(
                                           std::declval<const std::vector<Extension>&>(),
                                           std::declval<TimePoint>())));
CACHESERIALIZE_DETECT(has_identity, static_cast<const void*>(std::declval<const S&>().identity()));
CACHESERIALIZE_DETECT(has_stores_objects, S::stores_objects);
CACHESERIALIZE_DETECT(has_probe_before_acquire, S::probe_before_acquire);

#undef CACHESERIALIZE_DETECT

template <class S>
constexpr bool stores_objects() {
  if constexpr (has_stores_objects<S>::value) {
    return S::stores_objects;
  } else {
    return false;
  }
}

template <class S>
constexpr bool probe_before_acquire() {
  if constexpr (has_probe_before_acquire<S>::value) {
    return S::probe_before_acquire;
  } else {
    return true;
  }
}

}  // namespace detail

/// What the library reads off a storage policy, with the defaults for optional members.
template <class S>
struct storage_traits {
  /// Outputs are kept as C++ objects (no codec) rather than bytes.
  static constexpr bool stores_objects = detail::stores_objects<S>();
  /// A call tries `get` before `acquire`.
  static constexpr bool probe_before_acquire = detail::probe_before_acquire<S>();
  /// Waiters are woken by `subscribe` instead of polling.
  static constexpr bool notifies = detail::has_subscribe<S>::value;
  /// `subscribe` takes any `Notifiable` (a callback), not only a `Signal`: asynchronous waiters
  /// are woken by it instead of polling.
  static constexpr bool notifies_callbacks = detail::has_subscribe_callback<S>::value;
  /// Hits read the output in place with `visit_output` instead of copying it with `get`.
  static constexpr bool visits_outputs = detail::has_visit_output<S>::value;
  /// The heartbeat extends the leases due together with one `extend_many` call per batch.
  static constexpr bool extends_in_batches = detail::has_extend_many<S>::value;
};

namespace detail {

/// `extend_many` as a loop of `extend`, for a storage whose operations are not round trips.
template <class S>
std::vector<ExtendResult> extend_each(S& storage, const std::vector<Extension>& batch,
                                      TimePoint now) {
  std::vector<ExtendResult> results;
  results.reserve(batch.size());
  for (const Extension& x : batch) results.push_back(storage.extend(*x.key, *x.mine, now, x.ttl));
  return results;
}

/// Checks that `output` is of the kind `S` keeps, so that a wrong one is never stored.
/// @param who the API called, for the message.
/// @throws std::invalid_argument naming the kind expected.
template <class S>
void check_output_kind(const char* who, const StoredOutput& output) {
  if constexpr (storage_traits<S>::stores_objects) {
    if (!output.object || !output.type) {
      throw std::invalid_argument(std::string(who) +
                                  ": this storage keeps C++ objects: the output must be "
                                  "StoredOutput::from_object(a non-null pointer)");
    }
  } else if (output.object || output.type) {
    throw std::invalid_argument(std::string(who) +
                                ": this storage keeps bytes: the output must be "
                                "StoredOutput::from_bytes(encode_value(value)), not an object");
  }
}

}  // namespace detail

/// Whether `S` has every required storage member.
template <class S>
inline constexpr bool is_storage_v = detail::has_get<S>::value&& detail::has_acquire<S>::value&&
    detail::has_extend<S>::value&& detail::has_release<S>::value&&
        detail::has_store_and_release<S>::value&& detail::has_put<S>::value;

/// Checks a storage policy at compile time; the message names the missing member.
template <class S>
constexpr bool check_storage() {
  static_assert(detail::has_get<S>::value,
                "cacheserialize: the Storage policy needs `std::optional<StoredOutput> get(const "
                "Key&)`");
  static_assert(detail::has_acquire<S>::value,
                "cacheserialize: the Storage policy needs `AcquireResult acquire(const Key&, const "
                "AcquireRequest&)`");
  static_assert(detail::has_extend<S>::value,
                "cacheserialize: the Storage policy needs `ExtendResult extend(const Key&, const "
                "Reservation&, TimePoint, Duration)`");
  static_assert(detail::has_release<S>::value,
                "cacheserialize: the Storage policy needs `ReleaseStatus release(const Key&, const "
                "Reservation&)`");
  static_assert(detail::has_store_and_release<S>::value,
                "cacheserialize: the Storage policy needs `StoreResult store_and_release(const "
                "Key&, const Reservation&, StoredOutput, TimePoint)`");
  static_assert(detail::has_put<S>::value,
                "cacheserialize: the Storage policy needs `void put(const Key&, StoredOutput)`");
  static_assert(std::is_copy_constructible<S>::value,
                "cacheserialize: the Storage policy must be a copyable handle (copies share the "
                "store)");
  return true;
}

}  // namespace cacheserialize
