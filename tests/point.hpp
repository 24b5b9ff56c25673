#pragma once

// The user-defined type the tests share: a point, plugged in through one serializer
// specialisation, as a user's own type would be. Its name and encoding appear in the golden key
// vectors (tests/golden/make_key_vectors.py), so they must not change.

#include <cacheserialize/serializer.hpp>

namespace test {

struct Point {
  int x = 0;
  int y = 0;
  bool operator==(const Point& o) const { return x == o.x && y == o.y; }
  bool operator!=(const Point& o) const { return !(*this == o); }
};

}  // namespace test

template <>
struct cacheserialize::serializer<test::Point> {
  static constexpr const char* name = "Point";
  static void encode(Writer& w, const test::Point& p) {
    w.write(p.x);
    w.write(p.y);
  }
  static test::Point decode(Reader& r) {
    test::Point p;
    p.x = r.read<int>();
    p.y = r.read<int>();
    return p;
  }
};
