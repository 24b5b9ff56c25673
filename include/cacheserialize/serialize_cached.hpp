#pragma once

/// @file serialize_cached.hpp
/// `serialize_cached(fn, options, storage_or_manager)`: wraps a function so that, per cache key,
/// it runs once at a time and its output is reused.
///
///     cs::InMemoryStorage storage;
///     auto square = cs::serialize_cached([](int n) { return n * n; },
///                                        cs::TaskOptions{"square", "1.0"}, storage);
///     int r = square(2);  // 100 threads at once: the lambda runs once, all get 4
///
/// Per call: a stored output is returned at once. On a miss the call takes the key's
/// reservation, runs the function while the manager's heartbeat keeps the reservation alive,
/// stores the output and releases, in one step. Concurrent callers with the same key wait and
/// reuse that output; if the holder's function throws, the reservation is released at once, the
/// exception goes to that caller only, and one of the waiters runs the function itself. If a
/// holder dies, its reservation expires and a waiter takes over.

#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "cache_key.hpp"
#include "clock.hpp"
#include "default_manager.hpp"
#include "detail/function_traits.hpp"
#include "detail/output_codec.hpp"
#include "detail/unique_function.hpp"
#include "errors.hpp"
#include "options.hpp"
#include "reservation.hpp"
#include "serializer.hpp"
#include "storage.hpp"

namespace cacheserialize {

template <class Fn, class Clock, class Storage, class Signature>
class SerializedFunction;

/// The awaiter of `SerializedFunction::async_co`, defined by <cacheserialize/coroutine.hpp>
/// (C++20).
template <class Function, class Executor>
class CallAwaiter;

/// The callable `serialize_cached` returns: same parameters as the wrapped function, returning
/// its (decayed) result.
///
/// Copies share the function, the options and the manager. Thread safety: calls may run
/// concurrently from any number of threads; the wrapped function must allow that for different
/// keys (for one key it runs once at a time).
template <class Fn, class Clock, class Storage, class R, class... Args>
class SerializedFunction<Fn, Clock, Storage, R(Args...)> {
 public:
  /// The wrapped function's result type.
  using result_type = R;
  /// The manager the wrapper claims through.
  using manager_type = ReservationManager<Clock, Storage>;
  /// The key schema built from the task's options.
  using schema_type = KeySchema<R(std::decay_t<Args>...)>;

  /// Copies share one state. Moving copies too, so that a wrapper is never left empty.
  SerializedFunction(const SerializedFunction&) = default;
  /// Makes this a handle to another wrapper's state.
  SerializedFunction& operator=(const SerializedFunction&) = default;

  /// Use `serialize_cached`, which checks the function's types and the options.
  /// @param fn the function to wrap. @param options the task's options.
  /// @param manager the manager to claim through.
  SerializedFunction(Fn fn, TaskOptions options, manager_type manager)
      : state_(
            std::make_shared<const State>(std::move(fn), std::move(options), std::move(manager))) {}

  /// Calls the function through the cache; see the file comment.
  /// @throws whatever the function throws (this caller only), `timeout_error`,
  ///         `cancelled_error`, `storage_error`. A stored output that cannot be decoded (of
  ///         another type, or bytes that the serializer refuses) is reported as a
  ///         `corrupt_output` event and computed again under the reservation, replacing it.
  R operator()(Args... args) const { return call(CallOptions{}, std::forward<Args>(args)...); }

  /// As `operator()`, with per-call options (cancellation, wait bound).
  R call(const CallOptions& call_options, Args... args) const {
    const State& s = *state_;
    const Key key = detail::KeyAccess::borrowed(s.schema, args...);  // lives within the call
    if (!s.options.serialize) return call_cache_only(s, key, std::forward<Args>(args)...);

    if (!call_options.cancel.can_be_cancelled() && !call_options.wait_timeout) {
      return call_serialized(s, key, s.claim_options, std::forward<Args>(args)...);
    }
    // Built only for calls with options of their own: a std::optional<ClaimOptions> on every
    // call's stack was zero-filled on every call, a tenth of the cost of a hit.
    ClaimOptions merged = s.claim_options;
    if (call_options.cancel.can_be_cancelled()) merged.cancel = call_options.cancel;
    if (call_options.wait_timeout) merged.wait_timeout = call_options.wait_timeout;
    detail::validate("cacheserialize::SerializedFunction::call", merged);
    return call_serialized(s, key, merged, std::forward<Args>(args)...);
  }

  /// Calls the function through the cache without blocking the caller or taking a thread
  /// while it waits for another holder (`ReservationManager::claim_async`). A hit completes
  /// the future at once, on the calling thread; on a miss the function runs on `executor`,
  /// under a heartbeated reservation, and its value is stored as `operator()` stores it.
  ///
  /// @param executor where the function runs: any callable taking a `std::function<void()>`
  ///        (a thread pool's `post`, `asio::post` bound to an executor, an engine's queue). It is
  ///        called on the calling thread or the manager's waiter thread and should only queue
  ///        the work; if it throws, the reservation is released and the future holds the
  ///        exception.
  /// @param args copied (decayed) into the call, which may outlive the caller's arguments.
  /// @return the function's value, or what `operator()` would throw.
  template <class Executor>
  std::future<R> async(Executor executor, Args... args) const {
    return async(CallOptions{}, std::move(executor), std::forward<Args>(args)...);
  }

  /// As above, with per-call options (cancellation, wait bound).
  template <class Executor>
  std::future<R> async(const CallOptions& call_options, Executor executor, Args... args) const {
    std::promise<R> promise;
    std::future<R> future = promise.get_future();
    async_then(
        call_options, std::move(executor),
        [promise = std::move(promise)](std::exception_ptr error, std::optional<R> value) mutable {
          if (error) {
            promise.set_exception(std::move(error));
          } else {
            promise.set_value(std::move(*value));
          }
        },
        std::forward<Args>(args)...);
    return future;
  }

  /// C++20: `co_await fn.async_co(executor, args...)`, as `async` without a future. Needs
  /// <cacheserialize/coroutine.hpp>, which defines the awaiter; the coroutine resumes where the
  /// call completes (the calling thread on a hit, else the executor's thread or the manager's
  /// waiter thread).
  template <class Executor, class Awaiter = CallAwaiter<SerializedFunction, Executor>>
  Awaiter async_co(Executor executor, Args... args) const {
    return Awaiter(*this, CallOptions{}, std::move(executor), std::forward<Args>(args)...);
  }

  /// The completion form of `async`: `done(std::exception_ptr error, std::optional<R> value)`
  /// is called once, with exactly one of them set, on the thread that completes the call (the
  /// calling thread on a hit; the executor's after running the function; the manager's waiter
  /// thread for an error found while waiting). The call keeps the function's state (and its
  /// manager) alive until then, and lets go of it just before `done` runs, so that a caller
  /// that drops the last handle after the call completed destroys them on its own thread.
  template <class Executor, class Done>
  void async_then(const CallOptions& call_options, Executor executor, Done done,
                  Args... args) const {
    static_assert(std::is_invocable<Executor&, std::function<void()>>::value,
                  "cacheserialize::SerializedFunction::async: the executor must be callable "
                  "with a std::function<void()>");
    static_assert(std::is_invocable<Done&, std::exception_ptr, std::optional<R>>::value,
                  "cacheserialize::SerializedFunction::async_then: the completion must be "
                  "invocable as void(std::exception_ptr, std::optional<R>)");
    const std::shared_ptr<const State>& s = state_;
    ClaimOptions merged = s->claim_options;
    if (call_options.cancel.can_be_cancelled()) merged.cancel = call_options.cancel;
    if (call_options.wait_timeout) merged.wait_timeout = call_options.wait_timeout;
    detail::validate("cacheserialize::SerializedFunction::async", merged);
    auto call = std::make_shared<AsyncCall>(
        s, std::move(merged), std::function<void(std::function<void()>)>(std::move(executor)),
        AsyncDone(std::move(done)), std::decay_t<Args>(std::forward<Args>(args))...);
    AsyncCall::start(std::move(call));
  }

  /// @return the key a call with these arguments uses.
  Key key(const std::decay_t<Args>&... args) const { return state_->schema.make(args...); }

  /// @return the task's options.
  const TaskOptions& options() const noexcept { return state_->options; }

  /// @return the manager (storage, clock, counters) the calls go through.
  const manager_type& manager() const noexcept { return state_->manager; }

 private:
  struct State {
    State(Fn f, TaskOptions o, manager_type m)
        : fn(std::move(f)),
          options(std::move(o)),
          claim_options(detail::claim_options(options)),
          schema(TaskSignature{options.name, options.interface}, options.cache_version,
                 options.input_names, options.ignored_inputs),
          manager(std::move(m)) {
      detail::validate("cacheserialize::serialize_cached", claim_options);
      detail::reservation_ttl(
          "cacheserialize::serialize_cached",
          claim_options.heartbeat_interval.value_or(manager.options().heartbeat_interval),
          claim_options.grace_multiplier.value_or(manager.options().grace_multiplier));
    }
    Fn fn;
    TaskOptions options;
    ClaimOptions claim_options;
    schema_type schema;
    manager_type manager;
  };

  using AsyncDone = detail::UniqueFunction<void(std::exception_ptr, std::optional<R>)>;

  // One asynchronous call: its arguments, its key, where it runs and how it completes. Shared
  // by the steps of the call (the claim's callback, the task posted to the executor).
  struct AsyncCall {
    template <class... A>
    AsyncCall(std::shared_ptr<const State> st, ClaimOptions o,
              std::function<void(std::function<void()>)> e, AsyncDone d, A&&... a)
        : s(std::move(st)),
          options(std::move(o)),
          executor(std::move(e)),
          done(std::move(d)),
          args(std::forward<A>(a)...),
          key(std::apply([&](const auto&... v) { return s->schema.make(v...); }, args)) {}

    std::shared_ptr<const State> s;  // let go of by `finish`
    ClaimOptions options;
    const std::function<void(std::function<void()>)> executor;
    AsyncDone done;
    std::tuple<std::decay_t<Args>...> args;
    const Key key;

    // Completes the call, having let go of the task's state (and so of its manager) first: a
    // caller that sees the completion and drops its last handle then destroys the manager on
    // its own thread, not on the waiter thread this may run on.
    void finish(std::exception_ptr error, std::optional<R> value) noexcept {
      s.reset();
      try {
        done(std::move(error), std::move(value));
      } catch (...) {  // the completion's own failure has nowhere to go
      }
    }

    static void start(std::shared_ptr<AsyncCall> call) {
      const State& s = *call->s;
      std::optional<R> hit;
      Found found = Found::none;
      try {
        if (!s.options.serialize) {
          if (!s.options.overwrite_cache) found = probe(s, call->key, hit);
          if (found == Found::value) return call->finish(nullptr, std::move(hit));
          return post(std::move(call), nullptr);
        }
        if (storage_traits<Storage>::probe_before_acquire && !call->options.overwrite)
          found = probe(s, call->key, hit);
      } catch (...) {
        return call->finish(std::current_exception(), std::nullopt);
      }
      if (found == Found::value) return call->finish(nullptr, std::move(hit));
      if (found == Found::unreadable) call->options.overwrite = true;  // recompute it
      claim(std::move(call));
    }

    static void claim(std::shared_ptr<AsyncCall> call) {
      // The claim may complete, and `finish` let go of the state, before claim_async returns.
      const std::shared_ptr<const State> state = call->s;
      const manager_type& manager = state->manager;
      const Key& key = call->key;
      const ClaimOptions& options = call->options;
      manager.claim_async(
          key, options,
          [call = std::move(call)](std::exception_ptr error,
                                   std::optional<typename manager_type::claim_type> c) mutable {
            if (error) return call->finish(std::move(error), std::nullopt);
            if (c->is_hit()) {
              std::optional<R> value;
              if (read(*call->s, call->key, c->output(), value) == Found::value)
                return call->finish(nullptr, std::move(value));
              call->options.overwrite = true;  // unreadable: compute it again, under a hold
              return claim(std::move(call));
            }
            post(std::move(call), std::make_shared<Hold<Clock, Storage>>(std::move(c->hold())));
          });
    }

    // Runs the function on the executor: under `hold` (serialised), or without (cache only).
    static void post(std::shared_ptr<AsyncCall> call, std::shared_ptr<Hold<Clock, Storage>> hold) {
      AsyncCall& c = *call;
      try {
        c.executor([call, hold] { call->run(hold.get()); });
      } catch (...) {
        if (hold) hold->discard();  // nothing ran: give the reservation back at once
        c.finish(std::current_exception(), std::nullopt);
      }
    }

    void run(Hold<Clock, Storage>* hold) noexcept {
      std::optional<R> value;
      try {
        if (!hold) {
          value.emplace(std::apply(s->fn, std::move(args)));
          try {
            s->manager.put(key, encode(*value));
          } catch (...) {  // best effort, as for serialised calls
          }
        } else if (!options.overwrite || !replaced(*hold, value)) {
          value.emplace(std::apply(
              [&](auto&&... a) { return SerializedFunction::run(*s, *hold, std::move(a)...); },
              std::move(args)));
        }
      } catch (...) {
        return finish(std::current_exception(), std::nullopt);
      }
      finish(nullptr, std::move(value));
    }

    // After an unreadable output: another caller's recomputation may have replaced it while
    // this one waited (as `recompute`).
    bool replaced(Hold<Clock, Storage>& hold, std::optional<R>& value) {
      if (std::optional<StoredOutput> out = s->manager.core_->storage.get(key)) {
        if (decode(*out, value, nullptr)) {
          hold.discard();
          return true;
        }
      }
      return false;
    }
  };

  // As manager.claim(key, claim_options), with the options already validated and a hit decoded
  // straight from the storage's answer.
  static R call_serialized(const State& s, const Key& key, const ClaimOptions& claim_options,
                           Args&&... args) {
    if (storage_traits<Storage>::probe_before_acquire && !claim_options.overwrite) {
      std::optional<R> hit;
      switch (probe(s, key, hit)) {
        case Found::value:
          return std::move(*hit);
        case Found::unreadable:
          return recompute(s, key, claim_options, std::forward<Args>(args)...);
        case Found::none:
          break;
      }
    }
    auto claim = s.manager.acquire_or_wait(key, claim_options, true);  // `key` outlives it
    if (claim.is_hit()) {
      std::optional<R> hit;
      if (read(s, key, claim.output(), hit) == Found::value) return std::move(*hit);
      return recompute(s, key, claim_options, std::forward<Args>(args)...);
    }
    return run(s, claim.hold(), std::forward<Args>(args)...);
  }

  // Runs the function under `hold` and stores its value, best effort.
  static R run(const State& s, Hold<Clock, Storage>& hold, Args&&... args) {
    std::optional<R> value;
    try {
      value.emplace(std::invoke(s.fn, std::forward<Args>(args)...));
    } catch (...) {
      try {
        hold.release();  // at once: waiters must not sit out the expiry
      } catch (...) {    // the function's exception is the one the caller needs
      }
      throw;
    }
    hold.try_store([&] { return encode(*value); });
    return std::move(*value);
  }

  // The stored output cannot be read (a changed serializer, a bad write; reported): compute it
  // again under the reservation and replace it, so that the key is never stuck. Callers that
  // met the same output wait for the first one's recomputation and take its output, rather
  // than running the function once each in turn.
  static R recompute(const State& s, const Key& key, ClaimOptions claim_options, Args&&... args) {
    claim_options.overwrite = true;  // acquire over the unreadable output: never a hit
    auto claim = s.manager.acquire_or_wait(key, claim_options, true);  // `key` outlives it
    auto& hold = claim.hold();
    if (std::optional<StoredOutput> out = s.manager.core_->storage.get(key)) {
      std::optional<R> value;
      if (decode(*out, value, nullptr)) {  // the unreadable one is not reported twice
        hold.discard();                    // replaced meanwhile by another caller's recomputation
        return std::move(*value);
      }
    }
    return run(s, hold, std::forward<Args>(args)...);
  }

  static R call_cache_only(const State& s, const Key& key, Args&&... args) {
    if (!s.options.overwrite_cache) {
      std::optional<R> hit;
      if (probe(s, key, hit) == Found::value) return std::move(*hit);
    }
    R value = std::invoke(s.fn, std::forward<Args>(args)...);
    try {
      s.manager.put(key, encode(value));
    } catch (...) {  // best effort, as for serialised calls
    }
    return value;
  }

  enum class Found { none, value, unreadable };

  // Looks up the stored output of `key` and decodes it into `value`. A storage with
  // visit_output lends the output for the copy; others return a copy of it (for an object
  // storage: of its shared_ptr). An output that cannot be decoded is reported.
  static Found probe(const State& s, const Key& key, std::optional<R>& value) {
    if constexpr (storage_traits<Storage>::visits_outputs) {
      const bool found =
          s.manager.visit(key, [&](const StoredOutput& out) { decode(out, value, nullptr); });
      if (!found) return Found::none;
      if (value) return Found::value;
      // Unreadable. Read it again, outside the storage's lock, to say why (or to find it
      // replaced meanwhile): the visitor must not call out, and a hit makes no string.
      std::string why = "the stored output is gone";
      if (const std::optional<StoredOutput> out = s.manager.core_->storage.get(key)) {
        if (decode(*out, value, &why)) return Found::value;
      }
      s.manager.report_unreadable(key, why);
      return Found::unreadable;
    } else {
      const std::optional<StoredOutput> out = s.manager.lookup(key);
      return out ? read(s, key, *out, value) : Found::none;
    }
  }

  // Decodes `out` into `value`, reporting an output that cannot be decoded.
  static Found read(const State& s, const Key& key, const StoredOutput& out,
                    std::optional<R>& value) {
    std::string why;
    if (decode(out, value, &why)) return Found::value;
    s.manager.report_unreadable(key, why);
    return Found::unreadable;
  }

  static StoredOutput encode(const R& value) { return detail::encode_output<Storage>(value); }
  static bool decode(const StoredOutput& out, std::optional<R>& value, std::string* why) {
    return detail::decode_output<Storage>(out, value, why);
  }

  std::shared_ptr<const State> state_;
};

namespace detail {

template <class T>
struct is_reservation_manager : std::false_type {};
template <class C, class S>
struct is_reservation_manager<ReservationManager<C, S>> : std::true_type {};

template <class Fn, class Clock, class Storage, class R, class... Args>
auto make_serialized(Fn fn, TaskOptions options, ReservationManager<Clock, Storage> manager,
                     type_list<Args...>) {
  using Result = std::decay_t<std::invoke_result_t<const Fn&, Args...>>;
  static_assert(!std::is_void<Result>::value,
                "cacheserialize::serialize_cached: the function must return its output (it "
                "returns void: there is nothing to cache)");
  static_assert(
      ((!std::is_lvalue_reference<Args>::value ||
        std::is_const<std::remove_reference_t<Args>>::value) &&
       ...),
      "cacheserialize::serialize_cached: the function takes a non-const lvalue reference; a "
      "cached call cannot reproduce its effect on the argument on a hit");
  if constexpr (storage_traits<Storage>::stores_objects) {
    static_assert(std::is_copy_constructible<Result>::value,
                  "cacheserialize::serialize_cached: in-process caching returns copies of the "
                  "output, so the return type must be copy-constructible (return a shared_ptr "
                  "for move-only results)");
  } else {
    static_assert(is_encodable_v<Result> && is_decodable_v<Result>,
                  "cacheserialize::serialize_cached: this storage keeps outputs as bytes: the "
                  "return type needs cacheserialize::serializer<T> with encode and decode");
  }
  return SerializedFunction<Fn, Clock, Storage, Result(Args...)>(std::move(fn), std::move(options),
                                                                 std::move(manager));
}

}  // namespace detail

/// Wraps `fn` so that it runs once per cache key at a time, through a shared manager.
///
/// @tparam Fn a callable with one non-template call operator, callable as const; its parameter
///            types (decayed) must have a `serializer` (they make the key).
/// @param options the task's name, cache_version and options; validated here.
/// @param manager shares its heartbeat thread, storage, clock and counters with other tasks.
/// @throws std::invalid_argument for invalid options (empty name or cache_version, bad
///         intervals, unknown ignored inputs...).
/// @param fn the function to wrap; its result is cached per key.
template <class Fn, class Clock, class Storage>
auto serialize_cached(Fn fn, TaskOptions options, ReservationManager<Clock, Storage> manager) {
  static_assert(detail::has_call_signature<Fn>::value,
                "cacheserialize::serialize_cached: cannot deduce the function's parameters (a "
                "generic lambda or an overloaded call operator?): give its parameters concrete "
                "types");
  static_assert(std::is_copy_constructible<Fn>::value || std::is_move_constructible<Fn>::value,
                "cacheserialize::serialize_cached: the function object must be movable");
  return detail::make_serialized<Fn, Clock, Storage, void>(
      std::move(fn), std::move(options), std::move(manager),
      typename detail::call_signature<Fn>::args{});
}

/// Wraps `fn` over `storage` with the system clock and default manager options. Every wrapper
/// over a copy of `storage` shares one manager, `default_manager(storage)`: one heartbeat
/// thread (started on first use) and one set of counters, however many wrappers there are.
/// (A storage without `identity()` gets a manager per wrapper.) Tasks that need a listener,
/// other options or another clock take a `ReservationManager` instead.
template <class Fn, class Storage,
          class = std::enable_if_t<!detail::is_reservation_manager<Storage>::value>>
auto serialize_cached(Fn fn, TaskOptions options, Storage storage) {
  if constexpr (detail::has_identity<Storage>::value) {
    return serialize_cached(std::move(fn), std::move(options), default_manager(storage));
  } else {
    return serialize_cached(std::move(fn), std::move(options),
                            ReservationManager<SystemClock, Storage>(std::move(storage)));
  }
}

}  // namespace cacheserialize
