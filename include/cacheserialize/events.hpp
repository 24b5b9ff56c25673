#pragma once

/// @file events.hpp
/// Observability: what happened to a call (events, delivered to a listener as it happens) and
/// how often (counters, read as a snapshot). An engine uses the `waiting` event to show *who* a
/// task is waiting for and until when.

#include <cstdint>
#include <functional>
#include <string_view>

#include "cache_key.hpp"
#include "time.hpp"

namespace cacheserialize {

/// What happened in one call; see `Event` for the fields each kind fills.
enum class EventKind {
  hit,               ///< a stored output was returned
  acquired,          ///< the call took the reservation and will run the function
  waiting,           ///< another owner holds the reservation: the call waits (again, when the
                     ///< holder changed)
  woke,              ///< the call stopped waiting: it found an output or took the reservation
  took_over,         ///< the call took over an expired reservation of another owner
  released,          ///< the holder stored the output and released the reservation
  failed,            ///< the holder released the reservation without an output (it threw)
  lost,              ///< the holder's reservation was found taken by another owner, or its store
                     ///< was rejected by fencing
  heartbeat_failed,  ///< an extension could not reach the storage; it is retried
  store_failed,      ///< the output could not be encoded or stored; the caller still gets it
  corrupt_output,    ///< a storage found a damaged or foreign output and treated it as a miss,
                     ///< or a call could not decode a stored output and computes it again
  held,              ///< try_claim found the key held by another owner (or by this manager
                     ///< under the same owner): nothing was reserved, nothing waits
  detached,          ///< the holder stopped heartbeating and handed the reservation on, unreleased
  adopted,           ///< `adopt` took over the heartbeat of a handed-on reservation
  abandoned,         ///< `ClaimOptions::alive` said the work is gone: the reservation was released
  aborted,           ///< the holder released without an output because the work was cancelled
};

/// @return the event kind's name, e.g. "took_over".
inline const char* to_string(EventKind k) noexcept {
  switch (k) {
    case EventKind::hit:
      return "hit";
    case EventKind::acquired:
      return "acquired";
    case EventKind::waiting:
      return "waiting";
    case EventKind::woke:
      return "woke";
    case EventKind::took_over:
      return "took_over";
    case EventKind::released:
      return "released";
    case EventKind::failed:
      return "failed";
    case EventKind::lost:
      return "lost";
    case EventKind::heartbeat_failed:
      return "heartbeat_failed";
    case EventKind::store_failed:
      return "store_failed";
    case EventKind::corrupt_output:
      return "corrupt_output";
    case EventKind::held:
      return "held";
    case EventKind::detached:
      return "detached";
    case EventKind::adopted:
      return "adopted";
    case EventKind::abandoned:
      return "abandoned";
    case EventKind::aborted:
      return "aborted";
  }
  return "unknown";
}

/// One event. The views and the key are valid only during the listener call: copy what you keep.
struct Event {
  /// What happened.
  EventKind kind = EventKind::hit;
  const Key* key = nullptr;  ///< the key concerned; never null
  std::string_view owner;    ///< this call's owner id; empty for hits
  /// waiting: the holder waited on; took_over: the expired holder replaced; lost: the new holder
  /// when known.
  std::string_view holder;
  std::uint64_t token = 0;  ///< the fencing token of `owner`'s reservation, or of `holder`'s
  TimePoint expires_at{};   ///< acquired: ours; waiting: the holder's
  std::string_view detail;  ///< failures: the reason; woke: "output" or "acquired"
  std::string_view tag;     ///< the claim's `ClaimOptions::tag` (e.g. the engine's node id)
};

/// Receives events synchronously, on the thread where they happen (a calling thread, or the
/// heartbeat thread for `lost` and `heartbeat_failed`), so it must be thread-safe and quick.
/// Exceptions it throws are swallowed: a listener cannot break the protocol.
using Listener = std::function<void(const Event&)>;

/// A snapshot of a manager's counters. Each counts calls or operations since the manager was
/// created, but for the gauges, which say how many there are now.
struct Stats {
  std::uint64_t hits = 0;        ///< calls answered from the cache
  std::uint64_t misses = 0;      ///< calls that found no output on their first look
  std::uint64_t executions = 0;  ///< reservations acquired to run the function
  std::uint64_t waits = 0;       ///< calls that waited for another holder at least once
  std::uint64_t takeovers = 0;   ///< acquisitions over another owner's expired reservation
  std::uint64_t failures = 0;    ///< holders that released without an output
  std::uint64_t lost = 0;        ///< reservations found lost by a heartbeat or a rejected store
  std::uint64_t heartbeats = 0;  ///< successful extensions
  std::uint64_t heartbeat_failures = 0;  ///< extensions that could not reach the storage
  /// Storage calls the heartbeat made to extend (each one round trip for a networked store): one
  /// per batch of leases due together with `extend_many`, one per lease without it.
  std::uint64_t heartbeat_batches = 0;
  std::uint64_t store_failures = 0;   ///< outputs that could not be encoded or stored
  std::uint64_t corrupt_outputs = 0;  ///< stored outputs a call could not decode (recomputed)
  std::uint64_t held = 0;             ///< try_claim calls that found the key held (nothing waited)
  std::uint64_t adoptions = 0;        ///< reservations taken over by `adopt` after a hand-over
  std::uint64_t detached = 0;         ///< holds handed on unreleased by `Hold::detach`
  std::uint64_t abandoned = 0;        ///< holds released because `ClaimOptions::alive` said false
  std::uint64_t aborted = 0;       ///< holds released with `ReleaseReason::aborted` (not failures)
  std::uint64_t holds_active = 0;  ///< gauge: holds not yet stored, released or detached
  std::uint64_t waiters_active = 0;  ///< gauge: claims (blocking or async) waiting for a holder now
};

}  // namespace cacheserialize
