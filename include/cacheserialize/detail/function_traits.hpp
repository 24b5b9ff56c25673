#pragma once

// The parameter and return types of a callable with one, non-template call operator: a function,
// a function pointer, a lambda, a std::function or any functor.

#include <type_traits>

namespace cacheserialize {
namespace detail {

template <class... Ts>
struct type_list {};

template <class R, class... Args>
struct signature_of {
  using result = R;
  using args = type_list<Args...>;
};

template <class T, class = void>
struct call_signature {};  // no single call operator: `has_call_signature` is false

template <class R, class... A>
struct call_signature<R(A...)> : signature_of<R, A...> {};
template <class R, class... A>
struct call_signature<R(A...) noexcept> : signature_of<R, A...> {};
template <class R, class... A>
struct call_signature<R (*)(A...)> : signature_of<R, A...> {};
template <class R, class... A>
struct call_signature<R (*)(A...) noexcept> : signature_of<R, A...> {};

#define CACHESERIALIZE_MEMBER_SIGNATURE(quals)                            \
  template <class C, class R, class... A>                                 \
  struct call_signature<R (C::*)(A...) quals> : signature_of<R, A...> {}; \
  template <class C, class R, class... A>                                 \
  struct call_signature<R (C::*)(A...) quals noexcept> : signature_of<R, A...> {}

CACHESERIALIZE_MEMBER_SIGNATURE();
CACHESERIALIZE_MEMBER_SIGNATURE(const);
CACHESERIALIZE_MEMBER_SIGNATURE(&);
CACHESERIALIZE_MEMBER_SIGNATURE(const&);
#undef CACHESERIALIZE_MEMBER_SIGNATURE

template <class F>
struct call_signature<F, std::void_t<decltype(&F::operator())>>
    : call_signature<decltype(&F::operator())> {};

template <class F, class = void>
struct has_call_signature : std::false_type {};
template <class F>
struct has_call_signature<F, std::void_t<typename call_signature<F>::args>> : std::true_type {};

}  // namespace detail
}  // namespace cacheserialize
