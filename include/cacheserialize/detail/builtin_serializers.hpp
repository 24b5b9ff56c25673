#pragma once

// The built-in serializers: the standard types the format supports (see serializer.hpp's table),
// and the helpers they share. Apart from the customisation point so that serializer.hpp reads as
// the contract (serializer<T>, Writer, Reader, dispatch) and this file as its standard-library
// cases. Not self-contained: serializer.hpp includes it after Writer and Reader are complete and
// before the dispatch that instantiates these serializers; include serializer.hpp, not this.

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace cacheserialize {
namespace detail {

/// At most this many bytes are reserved ahead for decoded elements; past it a container grows
/// as elements actually arrive, so a hostile count cannot make a large allocation up front.
inline constexpr std::size_t max_reserve_bytes = std::size_t{1} << 20;

template <class T>
std::size_t reserve_count(std::size_t count) noexcept {
  const std::size_t cap = max_reserve_bytes / (sizeof(T) == 0 ? 1 : sizeof(T));
  return count < cap ? count : cap;
}

[[noreturn]] inline void throw_out_of_range(const std::string& value, std::size_t at,
                                            const std::string& low, const std::string& high) {
  Reader::fail("integer " + value + " at byte " + std::to_string(at) +
               " does not fit in the target type (range " + low + ".." + high + ")");
}

template <class T>
inline constexpr bool is_integer =
    std::is_integral_v<T> && !std::is_same_v<T, bool> && sizeof(T) <= 8;

/// char and wchar_t change signedness between platforms; they are written with a fixed one so
/// that keys do not.
template <class T>
using integer_wire_t = std::conditional_t<
    std::is_same_v<T, char>, signed char,
    std::conditional_t<std::is_same_v<T, wchar_t>, std::make_unsigned_t<wchar_t>, T>>;

/// Shared by the list-like containers.
template <class C>
struct list_serializer : builtin {
  using element_type = typename C::value_type;
  static constexpr bool elements_encodable = is_encodable_v<element_type>;
  static constexpr bool elements_decodable = is_decodable_v<element_type>;
  static std::string type_name() {
    return "list<" + cacheserialize::type_name<element_type>() + ">";
  }
  static void encode(Writer& w, const C& c) { w.write_list(c); }
  static C decode(Reader& r) {
    const std::size_t count = r.read_list_count();
    C c;
    if constexpr (std::is_same_v<C, std::vector<element_type, typename C::allocator_type>>) {
      c.reserve(reserve_count<element_type>(count));
    }
    for (std::size_t i = 0; i < count; ++i) c.push_back(r.read<element_type>());
    return c;
  }
};

template <class M>
struct map_serializer : builtin {
  using key_type = typename M::key_type;
  using mapped_type = typename M::mapped_type;
  static constexpr bool elements_encodable =
      is_encodable_v<key_type> && is_encodable_v<mapped_type>;
  static constexpr bool elements_decodable =
      is_decodable_v<key_type> && is_decodable_v<mapped_type>;
  static std::string type_name() {
    return "map<" + cacheserialize::type_name<key_type>() + "," +
           cacheserialize::type_name<mapped_type>() + ">";
  }
  static void encode(Writer& w, const M& m) { w.write_map(m); }
  static M decode(Reader& r) {
    const std::size_t count = r.read_map_count();
    M m;
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t at = r.offset();
      key_type key = r.read<key_type>();
      mapped_type value = r.read<mapped_type>();
      if (!m.emplace(std::move(key), std::move(value)).second) {
        Reader::fail("duplicate map key at byte " + std::to_string(at));
      }
    }
    return m;
  }
};

template <class S>
struct set_serializer : builtin {
  using element_type = typename S::value_type;
  static constexpr bool elements_encodable = is_encodable_v<element_type>;
  static constexpr bool elements_decodable = is_decodable_v<element_type>;
  static std::string type_name() {
    return "set<" + cacheserialize::type_name<element_type>() + ">";
  }
  static void encode(Writer& w, const S& s) { w.write_set(s); }
  static S decode(Reader& r) {
    const std::size_t count = r.read_set_count();
    S s;
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t at = r.offset();
      if (!s.insert(r.read<element_type>()).second) {
        Reader::fail("duplicate set element at byte " + std::to_string(at));
      }
    }
    return s;
  }
};

template <class... Ts>
std::string join_type_names() {
  std::string out;
  ((out += (out.empty() ? "" : ",") + cacheserialize::type_name<Ts>()), ...);
  return out;
}

inline void check_tuple_count(std::size_t found, std::size_t expected, std::size_t at) {
  if (found != expected) {
    Reader::fail("expected a tuple of " + std::to_string(expected) + " elements at byte " +
                 std::to_string(at) + ", found " + std::to_string(found));
  }
}

}  // namespace detail

// ---- Built-in serializers ----------------------------------------------------------------------

template <>
struct serializer<bool> : detail::builtin {
  static std::string type_name() { return "bool"; }
  static void encode(Writer& w, bool value) { w.write_bool(value); }
  static bool decode(Reader& r) { return r.read_bool(); }
};

/// Every integer type of at most 64 bits, written by value: signed ones as "int", unsigned ones
/// as "uint".
template <class T>
struct serializer<T, std::enable_if_t<detail::is_integer<T>>> : detail::builtin {
  using wire = detail::integer_wire_t<T>;

  static std::string type_name() { return std::is_signed_v<wire> ? "int" : "uint"; }

  static void encode(Writer& w, T value) {
    if constexpr (std::is_signed_v<wire>) {
      w.write_int(static_cast<std::int64_t>(static_cast<wire>(value)));
    } else {
      w.write_uint(static_cast<std::uint64_t>(static_cast<wire>(value)));
    }
  }

  static T decode(Reader& r) {
    const std::size_t at = r.offset();
    if constexpr (std::is_signed_v<wire>) {
      const std::int64_t v = r.read_int();
      constexpr std::int64_t low = std::numeric_limits<wire>::min();
      constexpr std::int64_t high = std::numeric_limits<wire>::max();
      if (v < low || v > high) {
        detail::throw_out_of_range(std::to_string(v), at, std::to_string(low),
                                   std::to_string(high));
      }
      return static_cast<T>(static_cast<wire>(v));
    } else {
      const std::uint64_t v = r.read_uint();
      constexpr std::uint64_t high = std::numeric_limits<wire>::max();
      if (v > high) detail::throw_out_of_range(std::to_string(v), at, "0", std::to_string(high));
      return static_cast<T>(static_cast<wire>(v));
    }
  }
};

/// Enums are always written as an "int", whatever their underlying type: an unscoped enum
/// without a fixed type has an implementation-defined one (unsigned int with GCC and Clang, int
/// with MSVC), and keys must not depend on the compiler. An enum over a 64-bit unsigned type is
/// written as the two's complement of its value.
template <class T>
struct serializer<T, std::enable_if_t<std::is_enum_v<T>>> : detail::builtin {
  using underlying = std::underlying_type_t<T>;
  using wire = detail::integer_wire_t<underlying>;

  static std::string type_name() { return "enum"; }

  static void encode(Writer& w, T value) {
    w.write_int(static_cast<std::int64_t>(static_cast<wire>(value)));
  }

  static T decode(Reader& r) {
    const std::size_t at = r.offset();
    const std::int64_t v = r.read_int();
    if constexpr (std::is_unsigned_v<wire> && sizeof(wire) == 8) {
      return static_cast<T>(static_cast<std::uint64_t>(v));
    } else {
      constexpr auto low = static_cast<std::int64_t>(std::numeric_limits<wire>::min());
      constexpr auto high = static_cast<std::int64_t>(std::numeric_limits<wire>::max());
      if (v < low || v > high) {
        detail::throw_out_of_range(std::to_string(v), at, std::to_string(low),
                                   std::to_string(high));
      }
      return static_cast<T>(static_cast<wire>(v));
    }
  }
};

template <class T>
struct serializer<T, std::enable_if_t<std::is_same_v<T, float> || std::is_same_v<T, double>>>
    : detail::builtin {
  static std::string type_name() { return "float"; }
  static void encode(Writer& w, T value) { w.write_float(static_cast<double>(value)); }
  static T decode(Reader& r) {
    const std::size_t at = r.offset();
    const double v = r.read_float();
    if constexpr (std::is_same_v<T, float>) {
      // Converting a finite double beyond float's range is undefined behaviour.
      if (std::isfinite(v) &&
          std::fabs(v) > static_cast<double>(std::numeric_limits<float>::max())) {
        Reader::fail("float " + std::to_string(v) + " at byte " + std::to_string(at) +
                     " does not fit in a float");
      }
      return static_cast<float>(v);
    } else {
      return v;
    }
  }
};

template <>
struct serializer<std::string> : detail::builtin {
  static std::string type_name() { return "str"; }
  static void encode(Writer& w, const std::string& value) { w.write_string(value); }
  static std::string decode(Reader& r) { return r.read_string(); }
};

template <>
struct serializer<std::string_view> : detail::builtin {
  static std::string type_name() { return "str"; }
  static void encode(Writer& w, std::string_view value) { w.write_string(value); }
};

template <>
struct serializer<const char*> : detail::builtin {
  static std::string type_name() { return "str"; }
  static void encode(Writer& w, const char* value) {
    if (value == nullptr) Reader::fail("cannot encode a null const char* as a string");
    w.write_string(value);
  }
};

template <>
struct serializer<char*> : serializer<const char*> {};

/// A char array is a C string: it ends at its first NUL, or at its end if it has none.
template <std::size_t N>
struct serializer<char[N]> : detail::builtin {
  static std::string type_name() { return "str"; }
  static void encode(Writer& w, const char (&value)[N]) {
    std::size_t length = 0;
    while (length < N && value[length] != '\0') ++length;
    w.write_string(std::string_view(value, length));
  }
};

template <class A>
struct serializer<std::vector<unsigned char, A>> : detail::builtin {
  static std::string type_name() { return "bytes"; }
  static void encode(Writer& w, const std::vector<unsigned char, A>& value) {
    w.write_bytes(std::string_view(reinterpret_cast<const char*>(value.data()), value.size()));
  }
  static std::vector<unsigned char, A> decode(Reader& r) {
    const std::string_view bytes = r.read_bytes_view();
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    return std::vector<unsigned char, A>(p, p + bytes.size());
  }
};

template <class A>
struct serializer<std::vector<std::byte, A>> : detail::builtin {
  static std::string type_name() { return "bytes"; }
  static void encode(Writer& w, const std::vector<std::byte, A>& value) {
    w.write_bytes(std::string_view(reinterpret_cast<const char*>(value.data()), value.size()));
  }
  static std::vector<std::byte, A> decode(Reader& r) {
    const std::string_view bytes = r.read_bytes_view();
    const auto* p = reinterpret_cast<const std::byte*>(bytes.data());
    return std::vector<std::byte, A>(p, p + bytes.size());
  }
};

template <class T, class A>
struct serializer<std::vector<T, A>> : detail::list_serializer<std::vector<T, A>> {};
template <class T, class A>
struct serializer<std::deque<T, A>> : detail::list_serializer<std::deque<T, A>> {};
template <class T, class A>
struct serializer<std::list<T, A>> : detail::list_serializer<std::list<T, A>> {};

template <class T, std::size_t N>
struct serializer<std::array<T, N>> : detail::builtin {
  static constexpr bool elements_encodable = is_encodable_v<T>;
  static constexpr bool elements_decodable = is_decodable_v<T>;
  static std::string type_name() { return "list<" + cacheserialize::type_name<T>() + ">"; }
  static void encode(Writer& w, const std::array<T, N>& value) { w.write_list(value); }
  static std::array<T, N> decode(Reader& r) {
    const std::size_t at = r.offset();
    const std::size_t count = r.read_list_count();
    if (count != N) {
      Reader::fail("expected a list of " + std::to_string(N) + " elements at byte " +
                   std::to_string(at) + ", found " + std::to_string(count));
    }
    std::array<T, N> value{};
    for (auto& element : value) element = r.read<T>();
    return value;
  }
};

template <class K, class V, class C, class A>
struct serializer<std::map<K, V, C, A>> : detail::map_serializer<std::map<K, V, C, A>> {};
template <class K, class V, class H, class E, class A>
struct serializer<std::unordered_map<K, V, H, E, A>>
    : detail::map_serializer<std::unordered_map<K, V, H, E, A>> {};

template <class T, class C, class A>
struct serializer<std::set<T, C, A>> : detail::set_serializer<std::set<T, C, A>> {};
template <class T, class H, class E, class A>
struct serializer<std::unordered_set<T, H, E, A>>
    : detail::set_serializer<std::unordered_set<T, H, E, A>> {};

template <class A, class B>
struct serializer<std::pair<A, B>> : detail::builtin {
  static constexpr bool elements_encodable = is_encodable_v<A> && is_encodable_v<B>;
  static constexpr bool elements_decodable = is_decodable_v<A> && is_decodable_v<B>;
  static std::string type_name() { return "tuple<" + detail::join_type_names<A, B>() + ">"; }
  static void encode(Writer& w, const std::pair<A, B>& value) {
    w.begin_tuple(2);
    w.write(value.first);
    w.write(value.second);
  }
  static std::pair<A, B> decode(Reader& r) {
    const std::size_t at = r.offset();
    detail::check_tuple_count(r.read_tuple_count(), 2, at);
    // A braced list is evaluated left to right, so the elements are read in order.
    return std::pair<A, B>{r.read<A>(), r.read<B>()};
  }
};

template <class... Ts>
struct serializer<std::tuple<Ts...>> : detail::builtin {
  static constexpr bool elements_encodable = (is_encodable_v<Ts> && ...);
  static constexpr bool elements_decodable = (is_decodable_v<Ts> && ...);
  static std::string type_name() { return "tuple<" + detail::join_type_names<Ts...>() + ">"; }
  static void encode(Writer& w, const std::tuple<Ts...>& value) {
    w.begin_tuple(sizeof...(Ts));
    std::apply([&w](const auto&... element) { (w.write(element), ...); }, value);
  }
  static std::tuple<Ts...> decode(Reader& r) {
    const std::size_t at = r.offset();
    detail::check_tuple_count(r.read_tuple_count(), sizeof...(Ts), at);
    // A braced list is evaluated left to right, so the elements are read in order.
    return std::tuple<Ts...>{r.read<Ts>()...};
  }
};

template <class T>
struct serializer<std::optional<T>> : detail::builtin {
  static constexpr bool elements_encodable = is_encodable_v<T>;
  static constexpr bool elements_decodable = is_decodable_v<T>;
  static std::string type_name() { return "opt<" + cacheserialize::type_name<T>() + ">"; }
  static void encode(Writer& w, const std::optional<T>& value) {
    w.begin_optional(value.has_value());
    if (value) w.write(*value);
  }
  static std::optional<T> decode(Reader& r) {
    if (!r.read_optional_has_value()) return std::nullopt;
    return std::optional<T>(r.read<T>());
  }
};

}  // namespace cacheserialize
