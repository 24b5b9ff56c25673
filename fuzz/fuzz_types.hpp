#pragma once

// The value types the fuzz targets decode, chosen by one input byte, and a recursive user type
// whose records nest as deeply as the input says (the codec must stop at its depth limit).

#include <cacheserialize/serializer.hpp>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fuzz {

namespace cs = cacheserialize;

struct Tree {
  std::int32_t value = 0;
  std::vector<Tree> children;
};

enum class Colour : std::uint8_t { red, green, blue };

}  // namespace fuzz

template <>
struct cacheserialize::serializer<fuzz::Tree> {
  static constexpr const char* name = "Tree";
  static void encode(Writer& w, const fuzz::Tree& t) {
    w.write(t.value);
    w.write_list(t.children);
  }
  static fuzz::Tree decode(Reader& r) {
    fuzz::Tree t;
    t.value = r.read<std::int32_t>();
    t.children = r.read<std::vector<fuzz::Tree>>();
    return t;
  }
};

namespace fuzz {

template <class T>
struct is_unordered : std::false_type {};
template <class K, class V, class H, class E, class A>
struct is_unordered<std::unordered_map<K, V, H, E, A>> : std::true_type {};

/// Decodes `bytes` as T; if that succeeds, the value must survive encoding and decoding again.
/// Compared as bytes (decoding normalises at most once: map order, float narrowing), except for
/// unordered containers, whose value bytes follow their iteration order, which a container
/// rebuilt from them need not repeat: those are compared as values.
template <class T>
void decode_as(std::string_view bytes) {
  T value;
  try {
    value = cs::decode_value<T>(bytes);
  } catch (const cs::codec_error&) {
    return;  // rejected with a reason: fine
  }
  const std::string once = cs::encode_value(value);
  const T again = cs::decode_value<T>(once);
  if constexpr (is_unordered<T>::value) {
    if (!(again == value)) std::abort();
  } else {
    if (cs::encode_value(again) != once) std::abort();
  }
}

inline constexpr int type_count = 16;

/// Decodes `bytes` as the type numbered `which` (mod type_count).
inline void decode_one_of(unsigned which, std::string_view bytes) {
  switch (which % type_count) {
    case 0:
      return decode_as<std::int64_t>(bytes);
    case 1:
      return decode_as<std::uint32_t>(bytes);
    case 2:
      return decode_as<std::int8_t>(bytes);
    case 3:
      return decode_as<double>(bytes);
    case 4:
      return decode_as<float>(bytes);
    case 5:
      return decode_as<bool>(bytes);
    case 6:
      return decode_as<std::string>(bytes);
    case 7:
      return decode_as<std::vector<std::int32_t>>(bytes);
    case 8:
      return decode_as<std::map<std::string, std::vector<double>>>(bytes);
    case 9:
      return decode_as<std::optional<std::tuple<int, std::string, bool>>>(bytes);
    case 10:
      return decode_as<std::set<std::string>>(bytes);
    case 11:
      return decode_as<std::pair<std::int16_t, std::uint16_t>>(bytes);
    case 12:
      return decode_as<std::array<std::int32_t, 3>>(bytes);
    case 13:
      return decode_as<Tree>(bytes);
    case 14:
      return decode_as<std::vector<unsigned char>>(bytes);
    default:
      return decode_as<std::unordered_map<std::int64_t, Colour>>(bytes);
  }
}

}  // namespace fuzz
