#pragma once

/// @file options.hpp
/// Options for a manager (shared by the tasks that use it), for a task (one `serialize_cached`
/// wrapper), and for a single call. Every option is validated where it is given; a bad value is
/// a `std::invalid_argument` naming the option and the value.

#include <chrono>
#include <cmath>
#include <cstddef>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cancellation.hpp"
#include "events.hpp"
#include "time.hpp"

namespace cacheserialize {

/// Defaults for every reservation a manager takes, and its listener.
struct ManagerOptions {
  /// How often the heartbeat extends a held reservation (Flyte's datacatalog: 10 s).
  Duration heartbeat_interval = std::chrono::seconds(10);
  /// A reservation lives heartbeat_interval x grace_multiplier past its last extension, so a
  /// holder may miss grace_multiplier - 1 heartbeats before others take over (Flyte: 3).
  double grace_multiplier = 3.0;
  /// Receives every event of the manager's calls; empty for none.
  Listener listener{};
};

/// Options of one task, i.e. one `serialize_cached` wrapper. `name` and `cache_version` come
/// first, so the common case reads `TaskOptions{"square", "1.0"}`.
struct TaskOptions {
  /// The task's name: part of its signature, hence of every key.
  std::string name{};
  /// Bump it to invalidate every output cached so far (Flyte's cache_version).
  std::string cache_version{};
  /// The signature's description of the interface; derived from the argument and return types
  /// (and input names) when empty.
  std::string interface {};
  /// Names of the inputs, in order; needed only to ignore some of them.
  std::vector<std::string> input_names{};
  /// Inputs left out of the key (Flyte's cache_ignore_input_vars), by name.
  std::vector<std::string> ignored_inputs{};
  /// false: cache only. Concurrent callers on a miss all run the function.
  bool serialize = true;
  /// Run the function and replace the stored output even on a hit, still one caller at a time.
  bool overwrite_cache = false;
  /// Overrides the manager's heartbeat interval for this task.
  std::optional<Duration> heartbeat_interval{};
  /// Overrides the manager's grace multiplier for this task.
  std::optional<double> grace_multiplier{};
  /// How often a waiter re-checks a storage that cannot notify it (jittered by +-20%).
  Duration poll_interval = std::chrono::seconds(1);
  /// How long a caller waits for another holder before `timeout_error`; unset: as long as the
  /// holder keeps its reservation alive.
  std::optional<Duration> wait_timeout{};
  /// Cancels waiting callers (`cancelled_error`); a call's own token takes precedence.
  CancellationToken cancel{};
};

/// Options of a single call, overriding its task's.
struct CallOptions {
  /// Cancels this call while it waits.
  CancellationToken cancel{};
  /// This call's wait bound.
  std::optional<Duration> wait_timeout{};
};

/// What one acquisition needs: the reservation's timing and how to wait. Built from the options
/// above by the manager and `serialize_cached`; engines that drive the manager directly fill it.
struct ClaimOptions {
  std::optional<Duration> heartbeat_interval{};  ///< unset: the manager's
  std::optional<double> grace_multiplier{};      ///< unset: the manager's
  /// The time between a waiter's re-checks of a storage that cannot notify (jittered +-20%).
  Duration poll_interval = std::chrono::seconds(1);
  /// How long to wait for another holder before `timeout_error`; unset: as long as it lives.
  std::optional<Duration> wait_timeout{};
  /// Take the reservation and replace the stored output even if there is one (overwrite_cache).
  bool overwrite = false;
  /// Cancels the claim while it waits (`cancelled_error`).
  CancellationToken cancel{};
  /// The owner id to claim as; unset: a new one per call (`new_owner_id()`). An engine derives
  /// it from what identifies one attempt of one task (Flyte's propeller: execution + node +
  /// attempt), so that after a restart it claims as the same owner and resumes its own live
  /// reservations at once (same fencing token, no takeover) instead of waiting for them to
  /// expire. Two live callers must never share an owner id: each would take the other's
  /// reservation for its own, and the function could run twice at once. Non-empty, at most
  /// `max_owner_size` bytes.
  std::optional<std::string> owner{};
  /// A label of the engine's (e.g. its node id), carried by every event of this claim and of its
  /// hold (`Event::tag`), so that "task X waits for Y" can name both.
  std::string tag{};
  /// Liveness of the work the hold stands for (e.g. "is the remote job still running?"). The
  /// heartbeat calls it, on its thread, before each extension: `false`, or an exception,
  /// releases the reservation at once (waiters take over without sitting out the expiry),
  /// marks the hold lost and fires `abandoned`. Empty: the work lives as long as the hold. It
  /// must be quick and thread-safe: every hold's extension waits for it.
  std::function<bool()> alive{};
};

/// The longest owner id accepted (`ClaimOptions::owner`), in bytes.
inline constexpr std::size_t max_owner_size = 1024;

namespace detail {

/// The longest reservation lifetime accepted: far beyond any real heartbeat, far from overflow.
inline constexpr Duration max_ttl = std::chrono::hours(24 * 365 * 100);

inline void check_interval(const char* who, Duration interval) {
  if (interval.count() <= 0) {
    throw std::invalid_argument(std::string(who) + ": heartbeat_interval must be positive, got " +
                                format_duration(interval));
  }
}

inline void check_multiplier(const char* who, double m) {
  if (!std::isfinite(m) || m < 1.0) {
    throw std::invalid_argument(std::string(who) +
                                ": grace_multiplier must be a finite number >= 1, got " +
                                std::to_string(m));
  }
}

/// @return interval x multiplier, validated.
inline Duration reservation_ttl(const char* who, Duration interval, double multiplier) {
  check_interval(who, interval);
  check_multiplier(who, multiplier);
  const double ttl = static_cast<double>(interval.count()) * multiplier;
  if (ttl > static_cast<double>(max_ttl.count())) {
    throw std::invalid_argument(std::string(who) + ": heartbeat_interval x grace_multiplier (" +
                                format_duration(interval) + " x " + std::to_string(multiplier) +
                                ") is longer than 100 years");
  }
  return Duration(static_cast<Duration::rep>(ttl));
}

inline void validate(const char* who, const ManagerOptions& o) {
  reservation_ttl(who, o.heartbeat_interval, o.grace_multiplier);
}

inline void validate(const char* who, const ClaimOptions& o) {
  if (o.heartbeat_interval) check_interval(who, *o.heartbeat_interval);
  if (o.grace_multiplier) check_multiplier(who, *o.grace_multiplier);
  if (o.poll_interval.count() <= 0) {
    throw std::invalid_argument(std::string(who) + ": poll_interval must be positive, got " +
                                format_duration(o.poll_interval));
  }
  if (o.wait_timeout && o.wait_timeout->count() < 0) {
    throw std::invalid_argument(std::string(who) + ": wait_timeout must not be negative, got " +
                                format_duration(*o.wait_timeout));
  }
  if (o.owner && (o.owner->empty() || o.owner->size() > max_owner_size)) {
    throw std::invalid_argument(std::string(who) + ": owner must be 1 to " +
                                std::to_string(max_owner_size) + " bytes (unset: generated), got " +
                                std::to_string(o.owner->size()));
  }
}

inline ClaimOptions claim_options(const TaskOptions& t) {
  ClaimOptions c;
  c.heartbeat_interval = t.heartbeat_interval;
  c.grace_multiplier = t.grace_multiplier;
  c.poll_interval = t.poll_interval;
  c.wait_timeout = t.wait_timeout;
  c.overwrite = t.overwrite_cache;
  c.cancel = t.cancel;
  return c;
}

}  // namespace detail

}  // namespace cacheserialize
