#pragma once

/// @file coroutine.hpp
/// C++20 coroutines over the asynchronous claims: `co_await manager.claim_co(key, options)` and
/// `co_await fn.async_co(executor, args...)`. The rest of the library is C++17; this header
/// alone needs C++20 and is not included by cacheserialize.hpp.
///
///     Task run(cs::ReservationManager<> manager, cs::Key key) {   // your coroutine type
///       auto claim = co_await manager.claim_co(key);               // no thread blocked
///       if (claim.is_hit()) co_return claim.value<int>();
///       auto hold = std::move(claim.hold());
///       ...
///     }
///
/// Where the coroutine resumes: where the completion runs (see `claim_async` and
/// `SerializedFunction::async_then`): on the awaiting thread, without suspending, when the
/// claim needs no wait; otherwise on the manager's waiter thread (claims) or the executor's
/// (function calls). A coroutine resumed on the waiter thread must hand long work on, e.g. by
/// `co_await`ing a scheduler of its own, as any callback there must.

#if !(__cplusplus >= 202002L || (defined(_MSVC_LANG) && _MSVC_LANG >= 202002L))
#error "<cacheserialize/coroutine.hpp> needs C++20 (-std=c++20); the rest of the library is C++17"
#endif

#include <atomic>
#include <coroutine>
#include <exception>
#include <optional>
#include <utility>

#include "cacheserialize.hpp"

namespace cacheserialize {
namespace detail {

/// The hand-off between an awaiting coroutine and a completion that may run before the
/// coroutine has suspended (on the same thread, within `await_suspend`), or after, on another
/// thread. Whichever comes second resumes: never both, never neither.
///
/// Memory ordering: the completion's writes of the result happen-before `await_resume` reads
/// them (acquire-release exchanges on one atomic).
class Rendezvous {
 public:
  /// In `await_suspend`, after starting the operation. @return whether to stay suspended.
  bool suspend() noexcept { return state_.exchange(suspended, std::memory_order_acq_rel) != done; }
  /// In the completion, after storing the result.
  void complete(std::coroutine_handle<> h) noexcept {
    if (state_.exchange(done, std::memory_order_acq_rel) == suspended) h.resume();
  }

 private:
  enum State { starting, suspended, done };
  std::atomic<State> state_{starting};
};

}  // namespace detail

/// `co_await manager.claim_co(key, options)`: the `Claim`, or what `claim` throws.
/// Not copyable or movable: it lives in the awaiting coroutine's frame while it waits.
template <class Clock, class Storage>
class ClaimAwaiter {
 public:
  /// The manager claimed through.
  using manager_type = ReservationManager<Clock, Storage>;
  /// What `co_await` gives.
  using claim_type = typename manager_type::claim_type;

  /// Made by `claim_co`; the claim starts when the coroutine awaits.
  /// @param manager the manager to claim through (a handle, kept while the claim waits).
  /// @param key the key to claim.
  /// @param options as for `ReservationManager::claim`.
  ClaimAwaiter(manager_type manager, Key key, ClaimOptions options)
      : manager_(std::move(manager)), key_(std::move(key)), options_(std::move(options)) {}
  ClaimAwaiter(const ClaimAwaiter&) = delete;
  ClaimAwaiter& operator=(const ClaimAwaiter&) = delete;

  /// @return false: the claim always starts in `await_suspend`.
  bool await_ready() const noexcept { return false; }

  /// @throws std::invalid_argument for invalid options (rethrown in the coroutine).
  bool await_suspend(std::coroutine_handle<> h) {
    manager_.claim_async(key_, options_,
                         [this, h](std::exception_ptr error, std::optional<claim_type> claim) {
                           error_ = std::move(error);
                           claim_ = std::move(claim);
                           rendezvous_.complete(h);
                         });
    return rendezvous_.suspend();
  }

  /// @return the claim. @throws what `ReservationManager::claim` throws.
  claim_type await_resume() {
    if (error_) std::rethrow_exception(error_);
    return std::move(*claim_);
  }

 private:
  manager_type manager_;
  Key key_;
  ClaimOptions options_;
  std::exception_ptr error_;
  std::optional<claim_type> claim_;
  detail::Rendezvous rendezvous_;
};

/// `co_await fn.async_co(executor, args...)`: the function's value, or what `fn(args...)`
/// throws. Not copyable or movable.
template <class Function, class Executor>
class CallAwaiter {
 public:
  /// What `co_await` gives: the wrapped function's result.
  using result_type = typename Function::result_type;

  /// Made by `async_co`; the call starts when the coroutine awaits.
  /// @param fn the wrapper to call (copied: it is a handle).
  /// @param options this call's options.
  /// @param executor where the function runs on a miss, as for `SerializedFunction::async`.
  /// @param args the call's arguments, decay-copied into the awaiter.
  template <class... A>
  CallAwaiter(const Function& fn, CallOptions options, Executor executor, A&&... args)
      : start_([fn, options = std::move(options), executor = std::move(executor),
                ... args = std::decay_t<A>(std::forward<A>(args))](Done done) mutable {
          fn.async_then(options, std::move(executor), std::move(done), std::move(args)...);
        }) {}
  CallAwaiter(const CallAwaiter&) = delete;
  CallAwaiter& operator=(const CallAwaiter&) = delete;

  /// @return false: the call always starts in `await_suspend`.
  bool await_ready() const noexcept { return false; }

  /// Starts the call. @return whether to stay suspended (false when it completed at once).
  bool await_suspend(std::coroutine_handle<> h) {
    start_([this, h](std::exception_ptr error, std::optional<result_type> value) {
      error_ = std::move(error);
      value_ = std::move(value);
      rendezvous_.complete(h);
    });
    return rendezvous_.suspend();
  }

  /// @return the function's value. @throws what `fn(args...)` throws.
  result_type await_resume() {
    if (error_) std::rethrow_exception(error_);
    return std::move(*value_);
  }

 private:
  using Done = detail::UniqueFunction<void(std::exception_ptr, std::optional<result_type>)>;
  detail::UniqueFunction<void(Done)> start_;
  std::exception_ptr error_;
  std::optional<result_type> value_;
  detail::Rendezvous rendezvous_;
};

}  // namespace cacheserialize
