#pragma once

/// @file cancellation.hpp
/// Cooperative cancellation for callers that wait on another holder (C++17 has no
/// std::stop_token). An engine keeps a `CancellationSource` per execution and passes its token
/// to the call; `cancel()` wakes the waiting caller at once, which then throws
/// `cancelled_error`. Cancellation never interrupts a running function: the holder finishes, or
/// fails, normally.

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "signal.hpp"

namespace cacheserialize {

namespace detail {

struct CancellationState {
  std::atomic<bool> cancelled{false};
  std::mutex mu;  // guards waiters; taken before a waiter's signal mutex
  std::vector<Notifiable*> waiters;
};

}  // namespace detail

class CancellationSource;

/// A view of a `CancellationSource`. A default-constructed token can never be cancelled.
/// Copies are cheap and share the source. Thread safety: all members may be called concurrently.
class CancellationToken {
 public:
  CancellationToken() = default;

  /// @return whether the source was cancelled.
  bool cancelled() const noexcept {
    return state_ && state_->cancelled.load(std::memory_order_acquire);
  }

  /// @return whether this token is tied to a source at all.
  bool can_be_cancelled() const noexcept { return state_ != nullptr; }

  /// While the returned object lives, cancelling the source raises `signal`. If the source is
  /// already cancelled the signal is raised at once.
  class Registration {
   public:
    Registration() = default;
    /// Takes over `other`'s registration; `other` is left empty.
    Registration(Registration&& other) noexcept
        : state_(std::move(other.state_)), signal_(other.signal_) {}
    /// Ends this registration, then takes over `other`'s; `other` is left empty.
    Registration& operator=(Registration&& other) noexcept {
      if (this != &other) {
        reset();
        state_ = std::move(other.state_);
        signal_ = other.signal_;
      }
      return *this;
    }
    Registration(const Registration&) = delete;
    Registration& operator=(const Registration&) = delete;
    ~Registration() { reset(); }

   private:
    friend class CancellationToken;
    Registration(std::shared_ptr<detail::CancellationState> state, Notifiable* signal)
        : state_(std::move(state)), signal_(signal) {}
    void reset() noexcept {
      if (!state_) return;
      std::lock_guard<std::mutex> lock(state_->mu);
      auto& v = state_->waiters;
      v.erase(std::find(v.begin(), v.end(), signal_));
      state_.reset();
    }
    std::shared_ptr<detail::CancellationState> state_;
    Notifiable* signal_ = nullptr;
  };

  /// @param signal notified when the source is cancelled (a `Signal`, or any `Notifiable`:
  ///        notified on the cancelling thread); must outlive the registration.
  Registration subscribe(Notifiable& signal) const {
    if (!state_) return {};
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->waiters.push_back(&signal);
    if (state_->cancelled.load(std::memory_order_acquire)) signal.notify();
    return Registration(state_, &signal);
  }

 private:
  friend class CancellationSource;
  explicit CancellationToken(std::shared_ptr<detail::CancellationState> s) : state_(std::move(s)) {}
  std::shared_ptr<detail::CancellationState> state_;
};

/// Owns a cancellation flag; hand out `token()`s and call `cancel()` once. Copies share the flag.
/// Thread safety: all members may be called concurrently.
class CancellationSource {
 public:
  CancellationSource() : state_(std::make_shared<detail::CancellationState>()) {}
  /// Copies share one flag. Moving copies too, so that a source is never left empty.
  CancellationSource(const CancellationSource&) = default;
  /// Makes this a copy of another source: it shares that flag from now on.
  CancellationSource& operator=(const CancellationSource&) = default;

  /// Cancels every token of this source and wakes their waiting callers. Idempotent.
  void cancel() noexcept {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->cancelled.store(true, std::memory_order_release);
    for (Notifiable* s : state_->waiters) s->notify();
  }

  /// @return whether `cancel()` was called.
  bool cancelled() const noexcept { return state_->cancelled.load(std::memory_order_acquire); }

  /// @return a token that observes this source.
  CancellationToken token() const { return CancellationToken(state_); }

 private:
  std::shared_ptr<detail::CancellationState> state_;
};

}  // namespace cacheserialize
