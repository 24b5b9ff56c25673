#pragma once

/// @file signal.hpp
/// A resettable wake-up flag that one thread waits on and other threads raise. Every blocking
/// wait in the library goes through one: storages raise it when a key's output is stored or its
/// reservation released, a cancellation source raises it when cancelled, and clocks poke it when
/// (real or fake) time passes the waiter's deadline.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace cacheserialize {

/// What a storage's `subscribe` (and a cancellation token's) calls when the subscribed key
/// changes: a callback with the subscriber's own state, so that one thread can be told which of
/// many keys changed (the manager's waiter service is one such subscriber per key; a `Signal`,
/// which wakes one blocked thread, is another).
///
/// `notify()` may be called on any thread, concurrently, and while the notifier holds its own
/// locks (a storage's shard lock, a connection's mutex): it must be quick, must not throw, must
/// not block, and must not call back into the notifier (no storage call, no ending of a
/// subscription). Once the registration that calls it has ended, it is not called again, and
/// no call is still running.
class Notifiable {
 public:
  /// Called by the notifier when what it watches may have changed.
  virtual void notify() noexcept = 0;

 protected:
  Notifiable() = default;
  /// Derived classes may be copyable: the interface itself has no state.
  Notifiable(const Notifiable&) = default;
  /// As the copy constructor.
  Notifiable& operator=(const Notifiable&) = default;
  ~Notifiable() = default;
};

/// A flag with two states, lowered and raised, plus a way to wake the thread that waits on it.
///
/// - `notify()` raises the flag and wakes the waiter; `reset()` lowers it.
/// - `poke()` wakes the waiter without raising the flag, so that it re-evaluates its own stop
///   condition (clocks use it when time passes a deadline).
///
/// Memory ordering: what a thread did before `notify()` happens-before the return of a wait
/// that saw the flag raised.
///
/// Lifetime: whoever may raise or poke a signal must stop doing so before it is destroyed, which
/// is why registrations with storages, clocks and cancellation sources are scoped objects. The
/// signal must outlive the whole `notify()` call, which touches it after the waiter may have
/// seen the flag: a notifier holds the lock that ending the registration takes.
/// `notify()` and `poke()` take the signal's own mutex and nothing else, so they may be called
/// while holding other locks; the waiter never holds that mutex while taking another lock.
///
/// Thread safety: all members may be called concurrently; there should be one waiter at a time.
class Signal final : public Notifiable {
 public:
  Signal() = default;
  Signal(const Signal&) = delete;
  Signal& operator=(const Signal&) = delete;

  /// Raises the flag and wakes the waiter.
  void notify() noexcept override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      raised_.store(true, std::memory_order_release);
    }
    // Outside the mutex, so that the waiter does not wake only to block on it (that cost a third
    // of a wake-up). The waiter may return before this line, but cannot destroy the signal yet:
    // its notifier holds the lock that ending its registration takes (see Lifetime).
    cv_.notify_all();
  }

  /// Wakes the waiter so it re-checks its stop condition; the flag is unchanged.
  void poke() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  }

  /// Lowers the flag. Call it before re-checking the condition waited for, then wait.
  void reset() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    raised_.store(false, std::memory_order_relaxed);
  }

  /// @return whether the flag is raised.
  bool raised() const noexcept { return raised_.load(std::memory_order_acquire); }

  /// Blocks until the flag is raised or `stop()` returns true. `stop` is evaluated with the
  /// signal's mutex held, once on entry and after every poke.
  /// @return whether the flag is raised.
  template <class Stop>
  bool wait(Stop stop) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return raised_.load(std::memory_order_relaxed) || stop(); });
    return raised_.load(std::memory_order_acquire);
  }

  /// As `wait`, but gives up after `timeout` of real (steady) time.
  /// @return whether the flag is raised.
  template <class Rep, class Period, class Stop>
  bool wait_for(std::chrono::duration<Rep, Period> timeout, Stop stop) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return raised_.load(std::memory_order_relaxed) || stop(); });
    return raised_.load(std::memory_order_acquire);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> raised_{false};
};

}  // namespace cacheserialize
