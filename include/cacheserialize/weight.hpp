#pragma once

/// @file weight.hpp
/// The weight of a cached object: roughly the bytes it occupies, its own size plus the heap
/// storage it owns. A bounded `InMemoryStorage` (`InMemoryOptions::max_bytes`) adds up weights.
///
/// Built in: arithmetic types, enums and other trivially copyable types (their size),
/// `std::basic_string` (size + capacity), `std::vector`, `std::pair`, `std::optional`,
/// `std::map`/`std::set` and `std::unordered_map`/`std::unordered_set` (estimated node sizes),
/// with the heap of their elements. Any other type weighs its `sizeof`, unless it says its
/// weight in one of two ways:
///
///     struct Image {
///       std::vector<std::uint8_t> pixels;
///       std::size_t cache_weight() const { return sizeof(*this) + pixels.capacity(); }
///     };
///
/// or, for a type you cannot change, a specialisation:
///
///     template <> struct cacheserialize::weigher<Image> {
///       static std::size_t weigh(const Image& i) { return sizeof(i) + i.pixels.capacity(); }
///     };
///
/// (`InMemoryOptions::weigher` overrides both for a whole store.)

#include <cstddef>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace cacheserialize {

template <class T, class = void>
struct weigher;

/// @return the weight of `value` (see the file comment).
template <class T>
std::size_t weight_of(const T& value) {
  return weigher<T>::weigh(value);
}

namespace detail {

template <class T, class = void>
struct has_cache_weight : std::false_type {};
template <class T>
struct has_cache_weight<
    T, std::enable_if_t<std::is_convertible<decltype(std::declval<const T&>().cache_weight()),
                                            std::size_t>::value>> : std::true_type {};

// The heap an element owns beyond its own sizeof.
template <class T>
std::size_t heap_of(const T& value) {
  const std::size_t w = weight_of(value);
  return w > sizeof(T) ? w - sizeof(T) : 0;
}

// A node of a node-based container: the value, two or three pointers, the allocator's header.
template <class V>
constexpr std::size_t node_size(std::size_t pointers) {
  return sizeof(V) + pointers * sizeof(void*) + 16;
}

template <class Container>
std::size_t heap_of_elements(const Container& c) {
  std::size_t n = 0;
  using V = typename Container::value_type;
  if constexpr (!std::is_trivially_copyable<V>::value) {
    for (const auto& v : c) n += heap_of(v);
  }
  return n;
}

}  // namespace detail

/// The default: `value.cache_weight()` if the type has it, else `sizeof(T)`.
template <class T, class>
struct weigher {
  /// @return the bytes `value` takes.
  static std::size_t weigh(const T& value) {
    if constexpr (detail::has_cache_weight<T>::value) {
      return static_cast<std::size_t>(value.cache_weight());
    } else {
      (void)value;
      return sizeof(T);
    }
  }
};

/// Strings: the object, plus the heap buffer of one too long for the small-string optimisation.
template <class C, class Traits, class A>
struct weigher<std::basic_string<C, Traits, A>> {
  /// @return the bytes `s` takes.
  static std::size_t weigh(const std::basic_string<C, Traits, A>& s) {
    // Short strings live inside the object; longer ones own capacity + 1 characters.
    const std::size_t heap = s.capacity() > 15 / sizeof(C) ? (s.capacity() + 1) * sizeof(C) : 0;
    return sizeof(s) + heap;
  }
};

/// Vectors: the object, the capacity's elements, and what the elements own.
template <class T, class A>
struct weigher<std::vector<T, A>> {
  /// @return the bytes `v` takes.
  static std::size_t weigh(const std::vector<T, A>& v) {
    return sizeof(v) + v.capacity() * sizeof(T) + detail::heap_of_elements(v);
  }
};

/// `std::vector<bool>`: the object and one bit per element of capacity.
template <class A>
struct weigher<std::vector<bool, A>> {
  /// @return the bytes `v` takes.
  static std::size_t weigh(const std::vector<bool, A>& v) { return sizeof(v) + v.capacity() / 8; }
};

/// Pairs: the object and what its two members own.
template <class A, class B>
struct weigher<std::pair<A, B>> {
  /// @return the bytes `p` takes.
  static std::size_t weigh(const std::pair<A, B>& p) {
    return sizeof(p) + detail::heap_of(p.first) + detail::heap_of(p.second);
  }
};

/// Optionals: the object and what its value, if any, owns.
template <class T>
struct weigher<std::optional<T>> {
  /// @return the bytes `o` takes.
  static std::size_t weigh(const std::optional<T>& o) {
    return sizeof(o) + (o ? detail::heap_of(*o) : 0);
  }
};

/// Maps: the object, one tree node (four pointers' overhead) per entry, and what entries own.
template <class K, class V, class C, class A>
struct weigher<std::map<K, V, C, A>> {
  /// @return the bytes `m` takes.
  static std::size_t weigh(const std::map<K, V, C, A>& m) {
    using Node = typename std::map<K, V, C, A>::value_type;
    return sizeof(m) + m.size() * detail::node_size<Node>(4) + detail::heap_of_elements(m);
  }
};

/// Sets: the object, one tree node (four pointers' overhead) per element, and what they own.
template <class K, class C, class A>
struct weigher<std::set<K, C, A>> {
  /// @return the bytes `s` takes.
  static std::size_t weigh(const std::set<K, C, A>& s) {
    return sizeof(s) + s.size() * detail::node_size<K>(4) + detail::heap_of_elements(s);
  }
};

/// Hash maps: the object, the bucket array, one node per entry, and what entries own.
template <class K, class V, class H, class E, class A>
struct weigher<std::unordered_map<K, V, H, E, A>> {
  /// @return the bytes `m` takes.
  static std::size_t weigh(const std::unordered_map<K, V, H, E, A>& m) {
    using Node = typename std::unordered_map<K, V, H, E, A>::value_type;
    return sizeof(m) + m.bucket_count() * sizeof(void*) + m.size() * detail::node_size<Node>(2) +
           detail::heap_of_elements(m);
  }
};

/// Hash sets: the object, the bucket array, one node per element, and what they own.
template <class K, class H, class E, class A>
struct weigher<std::unordered_set<K, H, E, A>> {
  /// @return the bytes `s` takes.
  static std::size_t weigh(const std::unordered_set<K, H, E, A>& s) {
    return sizeof(s) + s.bucket_count() * sizeof(void*) + s.size() * detail::node_size<K>(2) +
           detail::heap_of_elements(s);
  }
};

namespace detail {

/// The type-erased weigher `StoredOutput::from_object<T>` records.
template <class T>
std::size_t weigh_object(const void* object) {
  return weight_of(*static_cast<const T*>(object));
}

}  // namespace detail

}  // namespace cacheserialize
