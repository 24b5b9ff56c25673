#pragma once

// A move-only `std::function`: completion handlers own what they complete (a std::promise, a
// Hold, a coroutine's frame), which std::function cannot hold because it must be copyable.

#include <memory>
#include <type_traits>
#include <utility>

namespace cacheserialize {
namespace detail {

template <class Signature>
class UniqueFunction;

/// Holds any callable `F` with `void(Args...)` that is move-constructible. Empty when
/// default-constructed or moved from.
template <class R, class... Args>
class UniqueFunction<R(Args...)> {
 public:
  UniqueFunction() = default;
  template <class F,
            class = std::enable_if_t<!std::is_same<std::decay_t<F>, UniqueFunction>::value>>
  UniqueFunction(F&& f)  // NOLINT: implicit, as std::function's
      : impl_(std::make_unique<Impl<std::decay_t<F>>>(std::forward<F>(f))) {}

  explicit operator bool() const noexcept { return impl_ != nullptr; }
  R operator()(Args... args) { return impl_->call(std::forward<Args>(args)...); }

 private:
  struct Base {
    virtual ~Base() = default;
    virtual R call(Args... args) = 0;
  };
  template <class F>
  struct Impl final : Base {
    template <class G>
    explicit Impl(G&& g) : f(std::forward<G>(g)) {}
    R call(Args... args) override { return f(std::forward<Args>(args)...); }
    F f;
  };
  std::unique_ptr<Base> impl_;
};

}  // namespace detail
}  // namespace cacheserialize
