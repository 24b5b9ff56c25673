#include <cacheserialize/cache_key.hpp>
#include <cacheserialize/cacheserialize.hpp>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "point.hpp"

namespace cs = cacheserialize;

namespace {

using test::Point;

enum class Color : unsigned char { red = 1, green = 2 };

// A result type without a serializer: in-process outputs need none.
struct Opaque {
  int handle = 0;
};

double nan_with_payload(std::uint64_t payload, bool negative) {
  std::uint64_t bits = 0x7ff0000000000000ULL | payload | (negative ? 0x8000000000000000ULL : 0);
  double d = 0;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

}  // namespace

// Each digest below is printed by tests/golden/make_key_vectors.py, which builds the same key
// bytes independently with Python's struct.pack. Equal digests prove that keys are the same
// bytes in every process, on every compiler and platform.
TEST_CASE("keys match the golden digests built independently from the format description") {
  const std::int64_t min64 = std::numeric_limits<std::int64_t>::min();
  const std::int64_t max64 = std::numeric_limits<std::int64_t>::max();
  const std::uint64_t umax64 = std::numeric_limits<std::uint64_t>::max();

  CHECK(cs::KeySchema<int(int)>({"square", ""}, "1.0", {"n"}).make(5).digest() ==
        "6536fec2358a77a4c43d4279b038e6ac19f678a79131fb3999d1ea6bfef4f21c");
  CHECK(cs::CacheKey({"ints", ""}, "1", -1, min64, max64, umax64).digest() ==
        "abda98451c127f9516f783a23588fc4a80fed9c02118675001b4d66609e792e2");
  CHECK(cs::CacheKey({"floats", ""}, "1", -0.0, std::nan(""), 1.5).digest() ==
        "aef716ab4bd6a9ef93bf9e1b48804db3c0ae1794e582326037b4df0ecd884c62");
  CHECK(cs::CacheKey({"concat", ""}, "1", "ab", "c").digest() ==
        "98c5c3044ce7a920dc39fb400f2ba898e0b9ead2c64e026df4d9413d2eb0c962");
  CHECK(cs::CacheKey({"concat", ""}, "1", "a", "bc").digest() ==
        "b3ce4fd76f98421bd363b53df3146a0171706603bd81e2d34ff572f5357c59f7");
  CHECK(cs::CacheKey({"nested", ""}, "1",
                     std::map<std::string, std::vector<int>>{{"b", {1, -2}}, {"a", {}}, {"", {7}}})
            .digest() == "2488236a4c543b17d8e5089864a05be246c14e2c698e7ca1610f0f1f09716c8e");
  CHECK(cs::CacheKey({"umap", ""}, "1",
                     std::unordered_map<std::string, int>{{"x", 1}, {"y", 2}, {"z", 3}})
            .digest() == "42631707d3bf4ff5a3f3f1288b3867c383f9c164bcd846dd925fe78ea264175d");
  CHECK(cs::CacheKey({"set", ""}, "1", std::set<int>{3, -1, 1}).digest() ==
        "c6f1fe6c45ee953988e0816ef1a1d6fa4caab7b0cbfd639c1946dfcadca78913");
  CHECK(
      cs::CacheKey({"optional", ""}, "1", std::optional<int>{}, std::optional<int>{42}).digest() ==
      "ef7fc7a82bf59a7224d71a0e49f832de3885d250128f7e60eef931978666e957");
  CHECK(cs::CacheKey({"tuple", ""}, "1", std::tuple<int, std::string, bool>{7, "q", true},
                     std::pair<unsigned, double>{2U, 0.5})
            .digest() == "eb717ae4c4a910500b811ecfcc4e9cd2bd81707c55ee2c0109bb272d05854538");
  CHECK(cs::CacheKey({"user", ""}, "1", Point{1, -2}).digest() ==
        "de192efed501fd31a67cd5898b835dcd66b4a1f0caa14f63bd0854ddd87eaabd");
  CHECK(cs::KeySchema<double(int, std::string, bool)>({"train", ""}, "2024-01",
                                                      {"n", "log", "verbose"}, {"log", "verbose"})
            .make(3, "/tmp/a", true)
            .digest() == "1cfceb1ce0b487df801666922b5b742b25037d3c295276316470ae087bad11f0");
  CHECK(cs::KeySchema<int(int)>({"explicit", "custom interface v2"}, "v").make(0).digest() ==
        "7475e30dd38b78a6d25ebc96a2a9fda6867dc653bbdc3f372bf5a60f17cbb5df");
  CHECK(cs::KeySchema<void()>({"noargs", ""}, "1").make().digest() ==
        "45f0adddeeff6c7bcf0f92465ebf7064c5bf63870417607fd439f769d0669bff");
  CHECK(cs::CacheKey({"blob", ""}, "1", std::vector<unsigned char>{0, 1, 255}, true, Color::green)
            .digest() == "63a2883c6008ba234f8c20b0c0bcce76dd5ceb9004036913443c7df5776c1f50");
}

TEST_CASE("a key's bytes start with the magic, the task, the interface and the version") {
  const cs::Key k = cs::KeySchema<int(int)>({"sq", ""}, "1", {"n"}).make(5);
  const std::string expected = std::string("CSK\x01", 4) +                           //
                               std::string("s\0\0\0\0\0\0\0\x02sq", 11) +            //
                               std::string("s\0\0\0\0\0\0\0\x0c(n:int)->int", 21) +  //
                               std::string(
                                   "s\0\0\0\0\0\0\0\x01"
                                   "1",
                                   10) +                                //
                               std::string("u\0\0\0\0\0\0\0\x01", 9) +  //
                               std::string("i\0\0\0\0\0\0\0\x05", 9);
  CHECK(k.encoded() == expected);
}

TEST_CASE("two inputs whose concatenations are equal give different keys") {
  const cs::TaskSignature sig{"concat", ""};
  CHECK(cs::CacheKey(sig, "1", "ab", "c") != cs::CacheKey(sig, "1", "a", "bc"));
  CHECK(cs::CacheKey(sig, "1", std::vector<std::string>{"ab", "c"}) !=
        cs::CacheKey(sig, "1", std::vector<std::string>{"a", "bc"}));
  CHECK(cs::CacheKey(sig, "1", "", "x") != cs::CacheKey(sig, "1", "x", ""));
}

TEST_CASE("integers of different C++ types but equal value give the same key") {
  const cs::TaskSignature sig{"square", ""};
  CHECK(cs::KeySchema<int(int)>(sig, "1").make(5) == cs::KeySchema<int(long)>(sig, "1").make(5L));
  CHECK(cs::KeySchema<int(int)>(sig, "1").make(5) ==
        cs::KeySchema<int(std::int8_t)>(sig, "1").make(5));
  CHECK(cs::KeySchema<int(unsigned)>(sig, "1").make(5U) ==
        cs::KeySchema<int(std::uint64_t)>(sig, "1").make(5U));
  // Signed and unsigned integers are different kinds, with different keys.
  CHECK(cs::CacheKey(sig, "1", 5) != cs::CacheKey(sig, "1", 5U));
}

TEST_CASE("a map and an unordered_map with the same entries give the same key") {
  const cs::TaskSignature sig{"m", "(m:map<str,int>)"};
  std::unordered_map<std::string, int> forward;
  std::unordered_map<std::string, int> backward;
  std::map<std::string, int> ordered;
  for (int i = 0; i < 100; ++i) {
    forward.emplace("k" + std::to_string(i), i);
    backward.emplace("k" + std::to_string(99 - i), 99 - i);
    ordered.emplace("k" + std::to_string(i), i);
  }
  CHECK(cs::CacheKey(sig, "1", forward) == cs::CacheKey(sig, "1", backward));
  CHECK(cs::CacheKey(sig, "1", forward) == cs::CacheKey(sig, "1", ordered));
  CHECK(cs::CacheKey(sig, "1", std::set<int>{1, 2, 3}) ==
        cs::CacheKey(sig, "1", std::unordered_set<int>{3, 1, 2}));
}

TEST_CASE("negative and positive zero give the same key, and so does every NaN") {
  const cs::TaskSignature sig{"f", ""};
  CHECK(cs::CacheKey(sig, "1", -0.0) == cs::CacheKey(sig, "1", 0.0));
  CHECK(cs::CacheKey(sig, "1", -0.0f) == cs::CacheKey(sig, "1", 0.0));
  CHECK(cs::CacheKey(sig, "1", nan_with_payload(1, true)) ==
        cs::CacheKey(sig, "1", nan_with_payload(0x8000000000000ULL, false)));
  CHECK(cs::CacheKey(sig, "1", 1.0) != cs::CacheKey(sig, "1", 0.0));
}

TEST_CASE("a different task name, interface or cache_version gives a different key") {
  const cs::Key base = cs::KeySchema<int(int)>({"square", ""}, "1.0").make(5);
  CHECK(cs::KeySchema<int(int)>({"cube", ""}, "1.0").make(5) != base);
  CHECK(cs::KeySchema<int(int)>({"square", ""}, "1.1").make(5) != base);
  CHECK(cs::KeySchema<int(int)>({"square", "(int)->int v2"}, "1.0").make(5) != base);
  CHECK(cs::KeySchema<double(int)>({"square", ""}, "1.0").make(5) != base);
  CHECK(cs::KeySchema<int(int)>({"square", ""}, "1.0", {"n"}).make(5) != base);
  CHECK(cs::KeySchema<int(int)>({"square", ""}, "1.0").make(6) != base);
  CHECK(cs::KeySchema<int(int)>({"square", ""}, "1.0").make(5) == base);
}

TEST_CASE("an ignored input does not change the key, but ignoring it does") {
  const cs::KeySchema<int(int, std::string)> schema({"t", ""}, "1", {"n", "log"}, {"log"});
  CHECK(schema.make(1, "a") == schema.make(1, "b"));
  CHECK(schema.make(1, "a") != schema.make(2, "a"));

  const cs::KeySchema<int(int, std::string)> not_ignored({"t", ""}, "1", {"n", "log"});
  CHECK(not_ignored.make(1, "a") != not_ignored.make(1, "b"));
  CHECK(not_ignored.make(1, "a") != schema.make(1, "a"));
}

TEST_CASE("the interface is derived from the input names and types when it is empty") {
  CHECK(cs::KeySchema<int(int)>({"sq", ""}, "1", {"n"}).signature().interface == "(n:int)->int");
  CHECK(cs::KeySchema<int(int)>({"sq", ""}, "1").signature().interface == "(int)->int");
  CHECK(cs::KeySchema<void(const std::string&, double)>({"p", ""}, "1", {"path", "x"})
            .signature()
            .interface == "(path:str,x:float)");
  CHECK(cs::KeySchema<Opaque(std::vector<int>)>({"o", ""}, "1").signature().interface ==
        "(list<int>)->opaque");
  CHECK(cs::KeySchema<std::map<std::string, Point>(std::optional<Point>, Color)>({"u", ""}, "1")
            .signature()
            .interface == "(opt<Point>,enum)->map<str,Point>");
  CHECK(cs::KeySchema<int()>({"z", ""}, "1").signature().interface == "()->int");
  CHECK(cs::KeySchema<int(int)>({"sq", "mine"}, "1").signature().interface == "mine");
}

TEST_CASE("a CacheKey equals the key its KeySchema makes") {
  const cs::TaskSignature sig{"mixed", ""};
  const cs::CacheKey one_go(sig, "1", 3, "text", std::vector<double>{1.5}, Point{1, 2});
  const cs::Key from_schema =
      cs::KeySchema<void(int, std::string, std::vector<double>, Point)>(sig, "1").make(
          3, "text", {1.5}, Point{1, 2});
  CHECK(one_go == from_schema);
  CHECK(one_go.digest() == from_schema.digest());
  CHECK(cs::CacheKey(sig, "1", std::string_view("text")) ==
        cs::CacheKey(sig, "1", std::string("text")));
}

TEST_CASE("a key built by an engine from the task's signature equals the wrapper's key") {
  cs::InMemoryStorage storage;
  const auto square =
      cs::serialize_cached([](int n) { return n * n; }, cs::TaskOptions{"square", "1.0"}, storage);

  // docs/tasks.md, "Cache keys": a KeySchema of the function's type, with the task's name and
  // version.
  const cs::KeySchema<int(int)> schema(cs::TaskSignature{"square", ""}, "1.0");
  const cs::Key key = schema.make(2);
  CHECK(key == square.key(2));
  CHECK(key.digest() == square.key(2).digest());
  CHECK(schema.signature().interface == "(int)->int");

  // With the wrapper's input names and ignored inputs, too.
  cs::TaskOptions options{"train", "4"};
  options.input_names = {"rows", "run_id"};
  options.ignored_inputs = {"run_id"};
  const auto train =
      cs::serialize_cached([](const std::vector<double>& rows,
                              const std::string&) { return static_cast<int>(rows.size()); },
                           options, storage);
  const cs::KeySchema<int(std::vector<double>, std::string)> train_schema(
      cs::TaskSignature{"train", ""}, "4", options.input_names, options.ignored_inputs);
  CHECK(train_schema.make({1.5}, "run 1") == train.key({1.5}, "run 2"));

  // A CacheKey derives the interface from the inputs alone, as for a void result: "(int)", not
  // the wrapper's "(int)->int", so it is not the wrapper's key...
  const cs::CacheKey one_off(cs::TaskSignature{"square", ""}, "1.0", 2);
  CHECK(one_off != square.key(2));
  CHECK(one_off == cs::KeySchema<void(int)>(cs::TaskSignature{"square", ""}, "1.0").make(2));
  // ...unless its signature spells the wrapper's interface out.
  CHECK(cs::CacheKey(cs::TaskSignature{"square", "(int)->int"}, "1.0", 2) == square.key(2));
}

TEST_CASE("a key describes itself by task, version and the start of its digest") {
  const cs::Key k = cs::KeySchema<int(int)>({"square", ""}, "1.0", {"n"}).make(5);
  CHECK(k.task() == "square");
  CHECK(k.cache_version() == "1.0");
  CHECK(k.digest().size() == 64);
  CHECK(k.digest() == cs::detail::sha256_hex(k.encoded()));
  CHECK(k.describe() == "task 'square' version '1.0' key 6536fec2358a");
}

TEST_CASE("keys are values: copies are equal, and equal keys hash alike") {
  const cs::KeySchema<int(int)> schema({"square", ""}, "1.0");
  const cs::Key a = schema.make(5);
  cs::Key b = a;
  CHECK(a == b);
  CHECK(b.task() == "square");
  CHECK(std::hash<cs::Key>{}(a) == std::hash<cs::Key>{}(schema.make(5)));
  std::unordered_set<cs::Key> keys{a, b, schema.make(6)};
  CHECK(keys.size() == 2);

  const cs::Key moved = std::move(b);
  CHECK(moved == a);

  const cs::Key manual("square", "1.0", a.encoded());
  CHECK(manual == a);
  CHECK(manual.describe() == a.describe());
}

TEST_CASE("a schema's task, version or names that cannot make sound keys are rejected") {
  using Schema = cs::KeySchema<int(int, std::string)>;

  SECTION("an empty task name") {
    REQUIRE_THROWS_AS(Schema({"", ""}, "1"), std::invalid_argument);
    REQUIRE_THROWS_WITH(Schema({"", ""}, "1"), Catch::Contains("the task name is empty"));
  }
  SECTION("an empty cache_version") {
    REQUIRE_THROWS_AS(Schema({"t", ""}, ""), std::invalid_argument);
    REQUIRE_THROWS_WITH(Schema({"t", ""}, ""),
                        Catch::Contains("task 't' has an empty cache_version"));
  }
  SECTION("input names that do not match the inputs in number") {
    REQUIRE_THROWS_AS(Schema({"t", ""}, "1", {"n"}), std::invalid_argument);
    REQUIRE_THROWS_WITH(Schema({"t", ""}, "1", {"n"}),
                        Catch::Contains("task 't' takes 2 inputs but 1 input names were given"));
    REQUIRE_THROWS_WITH(Schema({"t", ""}, "1", {"a", "b", "c"}),
                        Catch::Contains("takes 2 inputs but 3 input names"));
  }
  SECTION("an empty input name") {
    REQUIRE_THROWS_AS(Schema({"t", ""}, "1", {"n", ""}), std::invalid_argument);
    REQUIRE_THROWS_WITH(Schema({"t", ""}, "1", {"n", ""}),
                        Catch::Contains("input name 2 is empty"));
  }
  SECTION("a duplicate input name") {
    REQUIRE_THROWS_AS(Schema({"t", ""}, "1", {"n", "n"}), std::invalid_argument);
    REQUIRE_THROWS_WITH(Schema({"t", ""}, "1", {"n", "n"}),
                        Catch::Contains("input name 'n' is given twice"));
  }
  SECTION("an ignored name that is not an input name") {
    REQUIRE_THROWS_AS(Schema({"t", ""}, "1", {"n", "s"}, {"m"}), std::invalid_argument);
    REQUIRE_THROWS_WITH(Schema({"t", ""}, "1", {"n", "s"}, {"m"}),
                        Catch::Contains("ignored input 'm' is not an input name") &&
                            Catch::Contains("the inputs are: n, s"));
  }
  SECTION("ignored names without input names") {
    REQUIRE_THROWS_AS(Schema({"t", ""}, "1", {}, {"n"}), std::invalid_argument);
    REQUIRE_THROWS_WITH(Schema({"t", ""}, "1", {}, {"n"}),
                        Catch::Contains("ignored_inputs needs input_names"));
  }
  SECTION("a CacheKey validates like a schema") {
    REQUIRE_THROWS_AS(cs::CacheKey({"", ""}, "1", 5), std::invalid_argument);
    REQUIRE_THROWS_AS(cs::CacheKey({"t", ""}, "", 5), std::invalid_argument);
  }
}

TEST_CASE("making a key reserves its bytes up front") {
  const cs::KeySchema<int(std::string, int)> schema({"alloc", ""}, "1");
  const std::string long_input(1000, 'z');
  const cs::Key k = schema.make(long_input, 7);
  CHECK(k.encoded().size() <= k.encoded().capacity());
  CHECK(k.encoded().capacity() < k.encoded().size() + 128);
}
