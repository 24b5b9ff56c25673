// Compiled by the compile_fail_* tests (tests/CMakeLists.txt), which expect each case to fail
// with the library's static_assert message, and case 0 to compile.

#include <cacheserialize/cache_key.hpp>
#include <string>
#include <string_view>
#include <vector>

struct NotSerializable {
  int x = 0;
};

struct EncodeOnly {
  int x = 0;
};

template <>
struct cacheserialize::serializer<EncodeOnly> {
  static void encode(Writer& w, const EncodeOnly& e) { w.write(e.x); }
};

#ifndef CASE
#define CASE 0
#endif

int main() {
#if CASE == 0  // control: the same file compiles when nothing is wrong
  return static_cast<int>(cacheserialize::encode_value(EncodeOnly{}).size() == 0);
#elif CASE == 1  // an input type without a serializer
  return static_cast<int>(cacheserialize::encode_value(NotSerializable{}).size());
#elif CASE == 2  // an element type without a serializer, deep in a container
  return static_cast<int>(cacheserialize::encode_value(std::vector<NotSerializable>{}).size());
#elif CASE == 3  // decoding a type whose serializer has no decode
  return cacheserialize::decode_value<EncodeOnly>("").x;
#elif CASE == 4  // long double
  return static_cast<int>(cacheserialize::encode_value(1.0L).size());
#elif CASE == 5  // decoding into a non-owning string
  return static_cast<int>(cacheserialize::decode_value<std::string_view>("").size());
#elif CASE == 6  // a cache key over an input without a serializer
  const cacheserialize::CacheKey key({"t", ""}, "1", NotSerializable{});
  return static_cast<int>(key.encoded().size());
#endif
}
