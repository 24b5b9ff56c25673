#pragma once

/// @file clock.hpp
/// Clock policies. A reservation's expiry is a wall-clock instant that other processes compare
/// with their own clocks, so the production clock is `SystemClock`. `ManualClock` is a fake clock
/// for tests: time moves only when the test says so, and threads blocked on it wake exactly when
/// fake time passes their deadline, so tests need no real sleeps and are deterministic.
///
/// A clock policy is a cheap, copyable handle; copies share one time line. It must provide:
///
///     TimePoint now() const;
///     bool wait_until(Signal& signal, TimePoint deadline) const;
///         // blocks until `signal` is raised or the clock reaches `deadline` (returns at once
///         // if either already holds); returns whether `signal` is raised.
///
/// `is_clock_v<C>` checks this, and `ReservationManager` static_asserts it.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "signal.hpp"
#include "time.hpp"

namespace cacheserialize {

namespace detail {

template <class C, class = void>
struct has_now : std::false_type {};
template <class C>
struct has_now<C, std::enable_if_t<std::is_convertible<decltype(std::declval<const C&>().now()),
                                                       TimePoint>::value>> : std::true_type {};

template <class C, class = void>
struct has_wait_until : std::false_type {};
template <class C>
struct has_wait_until<
    C,
    std::enable_if_t<std::is_convertible<decltype(std::declval<const C&>().wait_until(
                                             std::declval<Signal&>(), std::declval<TimePoint>())),
                                         bool>::value>> : std::true_type {};

/// @return `t + d`, clamped to the representable range instead of overflowing.
inline TimePoint saturating_add(TimePoint t, Duration d) noexcept {
  if (d.count() > 0 && t > TimePoint::max() - d) return TimePoint::max();
  if (d.count() < 0 && t < TimePoint::min() - d) return TimePoint::min();
  return t + d;
}

}  // namespace detail

/// Whether `C` satisfies the clock policy requirements listed in this file's comment.
template <class C>
inline constexpr bool is_clock_v = detail::has_now<C>::value&& detail::has_wait_until<C>::value;

/// Checks a clock policy at compile time; the message names the missing member.
template <class C>
constexpr bool check_clock() {
  static_assert(detail::has_now<C>::value,
                "cacheserialize: the Clock policy needs `TimePoint now() const`");
  static_assert(
      detail::has_wait_until<C>::value,
      "cacheserialize: the Clock policy needs `bool wait_until(Signal&, TimePoint) const`");
  return true;
}

/// The wall clock (`std::chrono::system_clock`). Stateless; the default clock policy.
///
/// Waits are measured in steady time in slices of at most one second and re-checked against the
/// wall clock, so a wall-clock step shifts a wake-up by at most that slice.
class SystemClock {
 public:
  /// @return the current wall-clock time.
  TimePoint now() const noexcept {
    return std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
  }

  /// Blocks until `signal` is raised or the wall clock reaches `deadline`.
  /// @return whether `signal` is raised.
  bool wait_until(Signal& signal, TimePoint deadline) const {
    for (;;) {
      if (signal.raised()) return true;
      const TimePoint t = now();
      if (t >= deadline) return false;
      const Duration slice = std::min<Duration>(deadline - t, std::chrono::seconds(1));
      if (signal.wait_for(slice, [] { return false; })) return true;
    }
  }

  /// Blocks the calling thread until the wall clock reaches `deadline`.
  void sleep_until(TimePoint deadline) const {
    Signal never;
    wait_until(never, deadline);
  }

  /// Blocks the calling thread for `d` of wall-clock time.
  void sleep_for(Duration d) const { sleep_until(detail::saturating_add(now(), d)); }
};

/// A fake clock for tests. Time starts at a fixed instant and moves only through `advance`,
/// `advance_to` and `advance_to_next_deadline`; a thread blocked in `wait_until` or `sleep_until`
/// wakes exactly when fake time reaches its deadline (or when its signal is raised).
///
/// Tests synchronise with the threads under test through `wait_for_sleepers(n)`: it returns once
/// `n` threads are blocked on the clock with a deadline still in the future and their signal
/// lowered, i.e. once the system has settled and only a time step can move it. That makes
/// "advance time, then check" deterministic without real sleeps.
///
/// A `ManualClock` is a handle: copies share one time line, so a test keeps one copy and gives
/// another to the code under test.
///
/// Thread safety: every member may be called concurrently.
class ManualClock {
 public:
  /// Copies share one time line. Moving copies too, so that a handle is never left empty.
  ManualClock(const ManualClock&) = default;
  /// Makes this a handle to another clock's time line.
  ManualClock& operator=(const ManualClock&) = default;

  /// The default start, 2026-01-01T00:00:00Z: far from the epoch, so that time arithmetic in
  /// code under test is not accidentally special-cased around zero.
  static constexpr TimePoint default_start() noexcept {
    return from_unix_nanos(1'767'225'600'000'000'000);
  }

  /// @param start the clock's initial time.
  explicit ManualClock(TimePoint start = default_start())
      : state_(std::make_shared<State>(start)) {}

  /// @return the current fake time.
  TimePoint now() const noexcept {
    return from_unix_nanos(state_->now.load(std::memory_order_acquire));
  }

  /// Moves time forward by `d` and wakes every sleeper whose deadline is reached.
  /// @throws std::invalid_argument if `d` is negative: fake time never goes back.
  void advance(Duration d) {
    if (d.count() < 0) {
      throw std::invalid_argument("cacheserialize::ManualClock::advance: negative duration " +
                                  format_duration(d));
    }
    std::lock_guard<std::mutex> lock(state_->mu);
    set_locked(detail::saturating_add(now(), d));
  }

  /// Moves time forward to `t` and wakes every sleeper whose deadline is reached.
  /// @throws std::invalid_argument if `t` is before `now()`.
  void advance_to(TimePoint t) {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (t < now()) {
      throw std::invalid_argument("cacheserialize::ManualClock::advance_to: " + format_time(t) +
                                  " is before the current time " + format_time(now()));
    }
    set_locked(t);
  }

  /// Moves time to the earliest future deadline among the current sleepers, if any.
  /// @return the new time, or nothing (time unchanged) if no sleeper has a finite future deadline.
  std::optional<TimePoint> advance_to_next_deadline() {
    std::lock_guard<std::mutex> lock(state_->mu);
    const std::optional<TimePoint> next = next_deadline_locked();
    if (next) set_locked(*next);
    return next;
  }

  /// @return the earliest finite future deadline among threads blocked on this clock, if any.
  std::optional<TimePoint> next_deadline() const {
    std::lock_guard<std::mutex> lock(state_->mu);
    return next_deadline_locked();
  }

  /// Blocks until `signal` is raised or fake time reaches `deadline`.
  /// @return whether `signal` is raised.
  bool wait_until(Signal& signal, TimePoint deadline) const {
    if (signal.raised()) return true;
    if (now() >= deadline) return false;
    Sleeper me{&signal, deadline};
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->sleepers.push_back(&me);
      state_->changed.notify_all();
    }
    // `advance` updates the time before it pokes, and pokes under the signal's mutex, so the
    // check below cannot miss a time step.
    const bool raised = signal.wait([&] { return now() >= deadline; });
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      auto& v = state_->sleepers;
      v.erase(std::find(v.begin(), v.end(), &me));
      state_->changed.notify_all();
    }
    return raised;
  }

  /// Blocks the calling thread until fake time reaches `deadline`.
  void sleep_until(TimePoint deadline) const {
    Signal never;
    wait_until(never, deadline);
  }

  /// Blocks the calling thread until fake time has moved `d` past now.
  void sleep_for(Duration d) const { sleep_until(detail::saturating_add(now(), d)); }

  /// @return how many threads are blocked on this clock with a deadline in the future and their
  ///         signal lowered (threads that a time step or a notification is still to wake).
  std::size_t sleepers() const {
    std::lock_guard<std::mutex> lock(state_->mu);
    return count_locked();
  }

  /// Blocks until at least `n` threads are asleep as `sleepers()` counts them.
  /// @param real_timeout a bound in real time, so a broken test fails instead of hanging.
  /// @return false if the bound was reached first.
  /// @param n how many sleepers to wait for.
  bool wait_for_sleepers(std::size_t n,
                         std::chrono::milliseconds real_timeout = std::chrono::seconds(30)) const {
    std::unique_lock<std::mutex> lock(state_->mu);
    return state_->changed.wait_for(lock, real_timeout, [&] { return count_locked() >= n; });
  }

 private:
  struct Sleeper {
    Signal* signal;
    TimePoint deadline;
  };

  struct State {
    explicit State(TimePoint start) : now(to_unix_nanos(start)) {}
    std::atomic<std::int64_t> now;
    mutable std::mutex mu;  // guards sleepers; taken before any sleeper's signal mutex
    std::condition_variable changed;
    std::vector<Sleeper*> sleepers;
  };

  void set_locked(TimePoint t) {
    state_->now.store(to_unix_nanos(t), std::memory_order_release);
    for (Sleeper* s : state_->sleepers) {
      if (s->deadline <= t) s->signal->poke();
    }
    state_->changed.notify_all();
  }

  std::optional<TimePoint> next_deadline_locked() const {
    const TimePoint t = now();
    std::optional<TimePoint> next;
    for (const Sleeper* s : state_->sleepers) {
      if (s->deadline > t && s->deadline != TimePoint::max() && (!next || s->deadline < *next)) {
        next = s->deadline;
      }
    }
    return next;
  }

  std::size_t count_locked() const {
    const TimePoint t = now();
    return static_cast<std::size_t>(
        std::count_if(state_->sleepers.begin(), state_->sleepers.end(),
                      [&](const Sleeper* s) { return s->deadline > t && !s->signal->raised(); }));
  }

  std::shared_ptr<State> state_;
};

}  // namespace cacheserialize
