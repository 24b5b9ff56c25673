#include <array>
#include <cacheserialize/serializer.hpp>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <list>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "point.hpp"

namespace cs = cacheserialize;

namespace {

using test::Point;

// A recursive user type: the only way values nest without bound.
struct Tree {
  int value = 0;
  std::vector<Tree> children;
};

// Keeps its name default ("record") and has no decode.
struct EncodeOnly {
  std::string text;
};

// Decoders that consume too little or too much of their record.
struct ReadsTooLittle {};
struct ReadsTooMuch {};

// A user container that canonicalises itself with the framing helpers.
struct Bag {
  std::unordered_multiset<std::string> items;
};

enum class Small : std::int8_t { minus = -3, plus = 4 };
enum Plain { plain_a = 7 };
enum class Wide : std::uint64_t { top = std::numeric_limits<std::uint64_t>::max() };

template <class T>
std::string key_bytes(const T& value) {
  std::string out;
  cs::Writer w(out, cs::Writer::Mode::key);
  w.write(value);
  return out;
}

template <class T>
T round_trip(const T& value) {
  return cs::decode_value<T>(cs::encode_value(value));
}

std::uint64_t bits_of(double d) {
  std::uint64_t bits = 0;
  std::memcpy(&bits, &d, sizeof bits);
  return bits;
}

double double_from_bits(std::uint64_t bits) {
  double d = 0;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

std::string u64_bytes(std::uint64_t v) {
  std::string out;
  for (int shift = 56; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>(static_cast<unsigned char>(v >> shift)));
  }
  return out;
}

int tree_depth(const Tree& t) {
  int deepest = 0;
  for (const auto& c : t.children) deepest = std::max(deepest, tree_depth(c));
  return deepest + 1;
}

Tree chain(int depth) {
  Tree root;
  Tree* at = &root;
  for (int i = 1; i < depth; ++i) {
    at->children.emplace_back();
    at = &at->children.back();
    at->value = i;
  }
  return root;
}

}  // namespace

template <>
struct cacheserialize::serializer<Tree> {
  static constexpr const char* name = "Tree";
  static void encode(Writer& w, const Tree& t) {
    w.write(t.value);
    w.write(t.children);
  }
  static Tree decode(Reader& r) {
    Tree t;
    t.value = r.read<int>();
    t.children = r.read<std::vector<Tree>>();
    return t;
  }
};

template <>
struct cacheserialize::serializer<EncodeOnly> {
  static void encode(Writer& w, const EncodeOnly& e) { w.write(e.text); }
};

template <>
struct cacheserialize::serializer<ReadsTooLittle> {
  static void encode(Writer& w, const ReadsTooLittle&) {
    w.write(1);
    w.write(2);
  }
  static ReadsTooLittle decode(Reader& r) {
    r.read<int>();
    return {};
  }
};

template <>
struct cacheserialize::serializer<ReadsTooMuch> {
  static void encode(Writer& w, const ReadsTooMuch&) { w.write(1); }
  static ReadsTooMuch decode(Reader& r) {
    r.read<int>();
    r.read<int>();
    return {};
  }
};

template <>
struct cacheserialize::serializer<Bag> {
  static constexpr const char* name = "Bag";
  static void encode(Writer& w, const Bag& b) { w.write_set(b.items); }
  static Bag decode(Reader& r) {
    Bag b;
    const std::size_t n = r.read_set_count();
    for (std::size_t i = 0; i < n; ++i) b.items.insert(r.read<std::string>());
    return b;
  }
};

// ---- traits -------------------------------------------------------------------------------------

TEST_CASE("the traits tell which types can be encoded and decoded") {
  STATIC_REQUIRE(cs::is_encodable_v<int>);
  STATIC_REQUIRE(cs::is_decodable_v<int>);
  STATIC_REQUIRE(cs::is_encodable_v<const std::string>);
  STATIC_REQUIRE(cs::is_encodable_v<std::string_view>);
  STATIC_REQUIRE_FALSE(cs::is_decodable_v<std::string_view>);
  STATIC_REQUIRE(cs::is_encodable_v<const char*>);
  STATIC_REQUIRE(cs::is_encodable_v<char[4]>);
  STATIC_REQUIRE_FALSE(cs::is_decodable_v<const char*>);
  STATIC_REQUIRE(cs::is_encodable_v<Point>);
  STATIC_REQUIRE(cs::is_decodable_v<Point>);
  STATIC_REQUIRE(cs::is_encodable_v<EncodeOnly>);
  STATIC_REQUIRE_FALSE(cs::is_decodable_v<EncodeOnly>);
  STATIC_REQUIRE(cs::is_encodable_v<std::map<std::string, std::vector<Point>>>);
  STATIC_REQUIRE(cs::is_decodable_v<std::map<std::string, std::vector<Point>>>);
  STATIC_REQUIRE_FALSE(cs::is_decodable_v<std::vector<EncodeOnly>>);
  STATIC_REQUIRE(cs::is_encodable_v<std::vector<EncodeOnly>>);
  STATIC_REQUIRE_FALSE(cs::is_encodable_v<long double>);
  STATIC_REQUIRE_FALSE(cs::is_encodable_v<std::vector<long double>>);
  STATIC_REQUIRE_FALSE(cs::is_encodable_v<int*>);
  STATIC_REQUIRE_FALSE(cs::is_encodable_v<std::tuple<int, void*>>);
  STATIC_REQUIRE_FALSE(cs::is_encodable_v<std::optional<std::vector<int*>>>);
  STATIC_REQUIRE(cs::detail::has_name<Point>);
  STATIC_REQUIRE_FALSE(cs::detail::has_name<EncodeOnly>);
  STATIC_REQUIRE(cs::detail::has_encode<Point>);
  STATIC_REQUIRE_FALSE(cs::detail::has_decode<EncodeOnly>);
}

TEST_CASE("type names describe types the same way on every platform") {
  CHECK(cs::type_name<bool>() == "bool");
  CHECK(cs::type_name<int>() == "int");
  CHECK(cs::type_name<long>() == "int");
  CHECK(cs::type_name<char>() == "int");
  CHECK(cs::type_name<signed char>() == "int");
  CHECK(cs::type_name<unsigned short>() == "uint");
  CHECK(cs::type_name<std::uint64_t>() == "uint");
  CHECK(cs::type_name<wchar_t>() == "uint");
  CHECK(cs::type_name<Small>() == "enum");
  CHECK(cs::type_name<float>() == "float");
  CHECK(cs::type_name<double>() == "float");
  CHECK(cs::type_name<std::string>() == "str");
  CHECK(cs::type_name<std::string_view>() == "str");
  CHECK(cs::type_name<const char*>() == "str");
  CHECK(cs::type_name<char[6]>() == "str");
  CHECK(cs::type_name<std::vector<unsigned char>>() == "bytes");
  CHECK(cs::type_name<std::vector<std::byte>>() == "bytes");
  CHECK(cs::type_name<std::vector<int>>() == "list<int>");
  CHECK(cs::type_name<std::array<double, 3>>() == "list<float>");
  CHECK(cs::type_name<std::deque<bool>>() == "list<bool>");
  CHECK(cs::type_name<std::list<std::string>>() == "list<str>");
  CHECK(cs::type_name<std::map<std::string, std::vector<int>>>() == "map<str,list<int>>");
  CHECK(cs::type_name<std::unordered_map<int, Point>>() == "map<int,Point>");
  CHECK(cs::type_name<std::set<long>>() == "set<int>");
  CHECK(cs::type_name<std::unordered_set<unsigned>>() == "set<uint>");
  CHECK(cs::type_name<std::pair<int, std::string>>() == "tuple<int,str>");
  CHECK(cs::type_name<std::tuple<int, double, bool>>() == "tuple<int,float,bool>");
  CHECK(cs::type_name<std::tuple<>>() == "tuple<>");
  CHECK(cs::type_name<std::optional<Point>>() == "opt<Point>");
  CHECK(cs::type_name<EncodeOnly>() == "record");
  CHECK(cs::type_name<Tree>() == "Tree");
  CHECK(cs::type_name<std::vector<Bag>>() == "list<Bag>");
  CHECK(cs::type_name<const int>() == "int");
}

// ---- exact bytes
// ---------------------------------------------------------------------------------

TEST_CASE("scalars encode as a tag and a fixed-size big-endian payload") {
  using namespace std::string_literals;
  CHECK(cs::encode_value(true) == "b\x01"s);
  CHECK(cs::encode_value(false) == "b\x00"s);
  CHECK(cs::encode_value(5) == "i\0\0\0\0\0\0\0\x05"s);
  CHECK(cs::encode_value(-2L) == "i\xff\xff\xff\xff\xff\xff\xff\xfe"s);
  CHECK(cs::encode_value(std::uint16_t{0x1234}) == "u\0\0\0\0\0\0\x12\x34"s);
  CHECK(cs::encode_value(1.0) == "f\x3f\xf0\0\0\0\0\0\0"s);
  CHECK(cs::encode_value(1.0f) == cs::encode_value(1.0));
  CHECK(cs::encode_value(Small::minus) == cs::encode_value(-3));
  // Every enum is an int, whatever its (possibly compiler-chosen) underlying type.
  CHECK(cs::encode_value(Plain::plain_a) == cs::encode_value(7));
  CHECK(cs::encode_value(Wide::top) == cs::encode_value(-1));
}

TEST_CASE("char is written as a signed char on every platform") {
  const char c = static_cast<char>(static_cast<unsigned char>(200));
  CHECK(cs::encode_value(c) == cs::encode_value(-56));
  CHECK(cs::encode_value('A') == cs::encode_value(65));
  CHECK(round_trip(c) == c);
}

TEST_CASE("strings encode as a tag, an 8-byte length and the bytes") {
  using namespace std::string_literals;
  CHECK(cs::encode_value(std::string("ab")) ==
        "s\0\0\0\0\0\0\0\x02"
        "ab"s);
  CHECK(cs::encode_value(std::string_view("ab")) == cs::encode_value(std::string("ab")));
  CHECK(cs::encode_value("ab") == cs::encode_value(std::string("ab")));
  const char* p = "ab";
  CHECK(cs::encode_value(p) == cs::encode_value(std::string("ab")));
  char buffer[8] = {'a', 'b', '\0', 'z'};  // a char array ends at its first NUL
  CHECK(cs::encode_value(buffer) == cs::encode_value(std::string("ab")));
  const char full[3] = {'x', 'y', 'z'};  // or at its end
  CHECK(cs::encode_value(full) == cs::encode_value(std::string("xyz")));
  CHECK(cs::encode_value(std::string("a\0b"s)) ==
        "s\0\0\0\0\0\0\0\x03"
        "a\0b"s);
}

TEST_CASE("byte vectors encode as one blob, not one value per byte") {
  using namespace std::string_literals;
  const std::vector<unsigned char> bytes{0x00, 0x7f, 0xff};
  CHECK(cs::encode_value(bytes) == "x\0\0\0\0\0\0\0\x03\x00\x7f\xff"s);
  const std::vector<std::byte> bytes2{std::byte{0x00}, std::byte{0x7f}, std::byte{0xff}};
  CHECK(cs::encode_value(bytes2) == cs::encode_value(bytes));
  CHECK(cs::encode_value(std::vector<signed char>{1}).size() == 18);  // a list of ints
}

TEST_CASE("containers encode as a tag, an 8-byte count and their elements") {
  using namespace std::string_literals;
  CHECK(cs::encode_value(std::vector<int>{1}) ==
        "l\0\0\0\0\0\0\0\x01"
        "i\0\0\0\0\0\0\0\x01"s);
  CHECK(cs::encode_value(std::array<int, 1>{1}) == cs::encode_value(std::vector<int>{1}));
  CHECK(cs::encode_value(std::deque<int>{1}) == cs::encode_value(std::vector<int>{1}));
  CHECK(cs::encode_value(std::list<int>{1}) == cs::encode_value(std::vector<int>{1}));
  CHECK(cs::encode_value(std::vector<bool>{true}) ==
        "l\0\0\0\0\0\0\0\x01"
        "b\x01"s);
  CHECK(cs::encode_value(std::map<int, bool>{{1, true}}) ==
        "m\0\0\0\0\0\0\0\x01"
        "i\0\0\0\0\0\0\0\x01"
        "b\x01"s);
  CHECK(cs::encode_value(std::set<bool>{true}) ==
        "e\0\0\0\0\0\0\0\x01"
        "b\x01"s);
  CHECK(cs::encode_value(std::pair<bool, bool>{true, false}) ==
        "t\0\0\0\0\0\0\0\x02"
        "b\x01"
        "b\x00"s);
  CHECK(cs::encode_value(std::make_tuple(true, false)) ==
        cs::encode_value(std::pair<bool, bool>{true, false}));
  CHECK(cs::encode_value(std::optional<bool>{}) == "o\x00"s);
  CHECK(cs::encode_value(std::optional<bool>{true}) ==
        "o\x01"
        "b\x01"s);
}

TEST_CASE("a user type is framed as a record with its length") {
  using namespace std::string_literals;
  CHECK(cs::encode_value(Point{1, 2}) ==
        "r\0\0\0\0\0\0\0\x12"
        "i\0\0\0\0\0\0\0\x01"
        "i\0\0\0\0\0\0\0\x02"s);
  CHECK(cs::encode_value(EncodeOnly{"hi"}) ==
        "r\0\0\0\0\0\0\0\x0b"
        "s\0\0\0\0\0\0\0\x02"
        "hi"s);
}

// ---- round trips
// ---------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("every integer type round-trips its extremes", "", char, signed char,
                   unsigned char, short, unsigned short, int, unsigned, long, unsigned long,
                   long long, unsigned long long, wchar_t, char16_t, char32_t) {
  const TestType low = std::numeric_limits<TestType>::min();
  const TestType high = std::numeric_limits<TestType>::max();
  CHECK(round_trip(low) == low);
  CHECK(round_trip(high) == high);
  CHECK(round_trip(TestType{0}) == TestType{0});
  CHECK(round_trip(static_cast<TestType>(42)) == static_cast<TestType>(42));
}

TEST_CASE("bools and enums round-trip") {
  CHECK(round_trip(true));
  CHECK_FALSE(round_trip(false));
  CHECK(round_trip(Small::minus) == Small::minus);
  CHECK(round_trip(Small::plus) == Small::plus);
  CHECK(round_trip(plain_a) == plain_a);
  CHECK(round_trip(Wide::top) == Wide::top);
}

TEST_CASE("floating-point values round-trip bit for bit in value mode") {
  for (const double d :
       {0.0, -0.0, 1.5, -1e300, std::numeric_limits<double>::denorm_min(),
        std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
        std::numeric_limits<double>::max()}) {
    CAPTURE(d);
    CHECK(bits_of(round_trip(d)) == bits_of(d));
  }
  SECTION("-0.0 keeps its sign") {
    CHECK(std::signbit(round_trip(-0.0)));
    CHECK(std::signbit(round_trip(-0.0f)));
  }
  SECTION("a NaN keeps its payload and sign") {
    const double nan = double_from_bits(0xfff0000000000123ULL);
    REQUIRE(std::isnan(nan));
    CHECK(bits_of(round_trip(nan)) == 0xfff0000000000123ULL);
  }
  SECTION("floats round-trip through their double form") {
    CHECK(round_trip(3.25f) == 3.25f);
    CHECK(round_trip(std::numeric_limits<float>::max()) == std::numeric_limits<float>::max());
    CHECK(std::isnan(round_trip(std::numeric_limits<float>::quiet_NaN())));
    CHECK(std::isinf(round_trip(std::numeric_limits<float>::infinity())));
  }
}

TEST_CASE("strings and byte vectors round-trip, empty ones and embedded NULs too") {
  using namespace std::string_literals;
  CHECK(round_trip(std::string()).empty());
  CHECK(round_trip("a\0b\xff"s) == "a\0b\xff"s);
  CHECK(round_trip(std::string(100000, 'q')) == std::string(100000, 'q'));
  CHECK(cs::decode_value<std::string>(cs::encode_value("lit")) == "lit");
  const std::vector<unsigned char> bytes{0, 1, 2, 255};
  CHECK(round_trip(bytes) == bytes);
  CHECK(round_trip(std::vector<unsigned char>{}).empty());
  const std::vector<std::byte> bytes2{std::byte{9}, std::byte{0}};
  CHECK(round_trip(bytes2) == bytes2);
}

TEST_CASE("containers round-trip, empty and nested ones too") {
  CHECK(round_trip(std::vector<int>{}).empty());
  CHECK(round_trip(std::vector<int>{1, -2, 3}) == std::vector<int>{1, -2, 3});
  CHECK(round_trip(std::vector<bool>{true, false, true}) == std::vector<bool>{true, false, true});
  CHECK(round_trip(std::array<int, 3>{4, 5, 6}) == std::array<int, 3>{4, 5, 6});
  CHECK(round_trip(std::array<int, 0>{}) == std::array<int, 0>{});
  CHECK(round_trip(std::deque<std::string>{"a", ""}) == std::deque<std::string>{"a", ""});
  CHECK(round_trip(std::list<double>{0.5}) == std::list<double>{0.5});
  CHECK(round_trip(std::map<std::string, int>{}).empty());
  CHECK(round_trip(std::map<std::string, int>{{"a", 1}, {"b", 2}}) ==
        std::map<std::string, int>{{"a", 1}, {"b", 2}});
  CHECK(round_trip(std::unordered_map<int, std::string>{{1, "x"}, {-1, "y"}}) ==
        std::unordered_map<int, std::string>{{1, "x"}, {-1, "y"}});
  CHECK(round_trip(std::set<std::string>{"b", "a"}) == std::set<std::string>{"a", "b"});
  CHECK(round_trip(std::unordered_set<long>{5, 6}) == std::unordered_set<long>{5, 6});
  CHECK(round_trip(std::pair<int, std::string>{1, "x"}) == std::pair<int, std::string>{1, "x"});
  CHECK(round_trip(std::tuple<>{}) == std::tuple<>{});
  CHECK(round_trip(std::make_tuple(1, std::string("two"), 3.0, false)) ==
        std::make_tuple(1, std::string("two"), 3.0, false));
  CHECK(round_trip(std::optional<int>{}) == std::nullopt);
  CHECK(round_trip(std::optional<int>{0}) == std::optional<int>{0});

  using Nested = std::map<std::string, std::vector<std::optional<std::tuple<int, double, Point>>>>;
  const Nested nested{{"k", {std::nullopt, std::make_tuple(1, 2.5, Point{3, 4})}}, {"e", {}}};
  CHECK(round_trip(nested) == nested);
}

TEST_CASE("user types round-trip, recursive ones too") {
  CHECK(round_trip(Point{-7, 9}) == Point{-7, 9});
  CHECK(round_trip(std::vector<Point>{{1, 2}, {3, 4}}) == std::vector<Point>{{1, 2}, {3, 4}});

  Tree t;
  t.value = 1;
  t.children.resize(2);
  t.children[0].value = 2;
  t.children[1].value = 3;
  t.children[1].children.resize(1);
  t.children[1].children[0].value = 4;
  const Tree back = round_trip(t);
  CHECK(back.value == 1);
  REQUIRE(back.children.size() == 2);
  CHECK(back.children[1].children.at(0).value == 4);

  const Bag bag{{"x", "y", "x"}};
  CHECK(round_trip(bag).items == bag.items);
}

// ---- key mode
// ------------------------------------------------------------------------------------

TEST_CASE("key mode writes -0.0 as 0.0 and every NaN as one quiet NaN") {
  CHECK(key_bytes(-0.0) == key_bytes(0.0));
  CHECK(key_bytes(-0.0f) == key_bytes(0.0));
  CHECK(key_bytes(double_from_bits(0xfff0000000000123ULL)) == key_bytes(std::nan("")));
  CHECK(key_bytes(std::nan("")).substr(1) == u64_bytes(0x7ff8000000000000ULL));
  CHECK(key_bytes(std::vector<double>{-0.0}) == key_bytes(std::vector<double>{0.0}));
  CHECK(cs::encode_value(-0.0) != cs::encode_value(0.0));  // value mode keeps the sign
}

TEST_CASE("key mode sorts map and set elements by their encoded bytes") {
  std::unordered_map<std::string, int> a;
  std::unordered_map<std::string, int> b;
  for (int i = 0; i < 50; ++i) a.emplace(std::to_string(i), i);
  for (int i = 49; i >= 0; --i) b.emplace(std::to_string(i), i);
  std::map<std::string, int> c(a.begin(), a.end());
  CHECK(key_bytes(a) == key_bytes(b));
  CHECK(key_bytes(a) == key_bytes(c));

  // -1 is 0xff... in two's complement, so it sorts after 1 by bytes.
  using namespace std::string_literals;
  CHECK(key_bytes(std::set<int>{-1, 1}) ==
        "e\0\0\0\0\0\0\0\x02"
        "i\0\0\0\0\0\0\0\x01"
        "i\xff\xff\xff\xff\xff\xff\xff\xff"s);
  CHECK(key_bytes(std::unordered_set<int>{1, -1}) == key_bytes(std::set<int>{-1, 1}));
  CHECK(key_bytes(std::set<std::string>{"b", "a"}) ==
        key_bytes(std::unordered_set<std::string>{"a", "b"}));

  // Nested unordered containers are canonical too.
  std::vector<std::unordered_set<int>> nested_a{{1, 2, 3}};
  std::vector<std::unordered_set<int>> nested_b{{3, 2, 1}};
  CHECK(key_bytes(nested_a) == key_bytes(nested_b));

  // A user container written with write_set is canonical in key mode.
  Bag x;
  Bag y;
  for (const char* s : {"p", "q", "r", "p"}) x.items.insert(s);
  for (const char* s : {"r", "p", "q", "p"}) y.items.insert(s);
  CHECK(key_bytes(x) == key_bytes(y));
}

TEST_CASE("a writer reports its mode to user serializers") {
  std::string out;
  const cs::Writer k(out, cs::Writer::Mode::key);
  const cs::Writer v(out, cs::Writer::Mode::value);
  CHECK(k.canonical());
  CHECK(k.mode() == cs::Writer::Mode::key);
  CHECK_FALSE(v.canonical());
  CHECK(v.mode() == cs::Writer::Mode::value);
}

TEST_CASE("a reader reads a sequence of values written with the primitives") {
  std::string out;
  cs::Writer w(out, cs::Writer::Mode::value);
  w.write_bool(true);
  w.write_int(-5);
  w.write_uint(5);
  w.write_float(0.25);
  w.write_string("s");
  w.write_bytes(std::string("\0\1", 2));
  w.begin_list(2);
  w.write(1);
  w.write(2);
  w.begin_map(0);
  w.begin_set(0);
  w.begin_tuple(0);
  w.begin_optional(false);

  cs::Reader r(out);
  CHECK(r.remaining() == out.size());
  CHECK(r.read_bool());
  CHECK(r.read_int() == -5);
  CHECK(r.read_uint() == 5);
  CHECK(r.read_float() == 0.25);
  CHECK(r.read_string() == "s");
  CHECK(r.read_bytes() == std::string("\0\1", 2));
  CHECK(r.read_list_count() == 2);
  CHECK(r.read<int>() == 1);
  CHECK(r.read<long>() == 2);
  CHECK(r.read_map_count() == 0);
  CHECK(r.read_set_count() == 0);
  CHECK(r.read_tuple_count() == 0);
  CHECK_FALSE(r.read_optional_has_value());
  CHECK(r.at_end());
  CHECK_NOTHROW(r.expect_end());
}

// ---- malformed input
// -----------------------------------------------------------------------------

namespace {

using Composite =
    std::tuple<std::map<std::string, std::vector<std::optional<Point>>>, std::set<double>,
               std::vector<unsigned char>, std::unordered_map<int, std::string>, Tree, bool,
               std::array<std::uint8_t, 2>>;

Composite sample_composite() {
  Tree t;
  t.value = 5;
  t.children.resize(2);
  t.children[0].value = -1;
  return Composite{{{"a", {Point{1, 2}, std::nullopt}}, {"", {}}},
                   {0.5, -1.0},
                   {1, 2, 3},
                   {{7, "seven"}},
                   t,
                   true,
                   {9, 8}};
}

template <class T>
void require_codec_error(std::string_view bytes) {
  try {
    static_cast<void>(cs::decode_value<T>(bytes));
    FAIL("decoding succeeded");
  } catch (const cs::codec_error&) {
    SUCCEED();
  }
}

}  // namespace

TEST_CASE("an encoding truncated at any byte is rejected with a codec_error") {
  const std::string full = cs::encode_value(sample_composite());
  REQUIRE_NOTHROW(cs::decode_value<Composite>(full));
  for (std::size_t size = 0; size < full.size(); ++size) {
    CAPTURE(size);
    require_codec_error<Composite>(std::string_view(full).substr(0, size));
  }
}

TEST_CASE("a wrong tag is reported with the expected tag, the found tag and the offset") {
  REQUIRE_THROWS_WITH(
      cs::decode_value<std::vector<std::string>>(cs::encode_value(std::vector<int>{1})),
      Catch::Contains("expected a string (tag 's') at byte 9, found tag 'i'"));
  REQUIRE_THROWS_WITH(cs::decode_value<int>(std::string("\x07", 1)),
                      Catch::Contains("expected an int (tag 'i') at byte 0, found tag 0x07"));
  REQUIRE_THROWS_WITH(cs::decode_value<int>(""),
                      Catch::Contains("expected an int (tag 'i') at byte 0, found the end"));
  REQUIRE_THROWS_AS(cs::decode_value<unsigned>(cs::encode_value(5)), cs::codec_error);
  REQUIRE_THROWS_AS(cs::decode_value<int>(cs::encode_value(5U)), cs::codec_error);
  REQUIRE_THROWS_AS(cs::decode_value<Point>(cs::encode_value(std::make_tuple(1, 2))),
                    cs::codec_error);
  REQUIRE_THROWS_AS(cs::decode_value<std::vector<unsigned char>>(cs::encode_value("ab")),
                    cs::codec_error);
}

TEST_CASE("a bool or optional byte other than 0 or 1 is rejected") {
  using namespace std::string_literals;
  REQUIRE_THROWS_WITH(cs::decode_value<bool>("b\x02"s),
                      Catch::Contains("invalid byte 0x02 in a bool at byte 1: must be 0 or 1"));
  REQUIRE_THROWS_AS(cs::decode_value<bool>("b\xff"s), cs::codec_error);
  REQUIRE_THROWS_AS(cs::decode_value<std::optional<int>>("o\x02"s), cs::codec_error);
}

TEST_CASE("a count or length larger than the bytes left is rejected before allocating") {
  const std::string huge = u64_bytes(0xffffffffffffffffULL);
  REQUIRE_THROWS_WITH(cs::decode_value<std::vector<int>>("l" + huge),
                      Catch::Contains("claims 18446744073709551615 elements"));
  REQUIRE_THROWS_AS(cs::decode_value<std::vector<std::string>>("l" + u64_bytes(1ULL << 40)),
                    cs::codec_error);
  REQUIRE_THROWS_AS(
      (cs::decode_value<std::map<int, int>>("m" + u64_bytes(3) + std::string(5, 'i'))),
      cs::codec_error);
  REQUIRE_THROWS_AS(cs::decode_value<std::set<int>>("e" + huge), cs::codec_error);
  REQUIRE_THROWS_AS((cs::decode_value<std::tuple<int, int>>("t" + huge)), cs::codec_error);
  REQUIRE_THROWS_WITH(cs::decode_value<std::string>("s" + huge + "abc"),
                      Catch::Contains("runs past the end"));
  REQUIRE_THROWS_AS(cs::decode_value<std::vector<unsigned char>>("x" + u64_bytes(4) + "abc"),
                    cs::codec_error);
  REQUIRE_THROWS_AS(cs::decode_value<Point>("r" + huge), cs::codec_error);
}

TEST_CASE("decoding an integer into a type too narrow for it is rejected") {
  REQUIRE_THROWS_WITH(cs::decode_value<std::int8_t>(cs::encode_value(128)),
                      Catch::Contains("integer 128 at byte 0 does not fit in the target type "
                                      "(range -128..127)"));
  REQUIRE_THROWS_AS(cs::decode_value<std::int8_t>(cs::encode_value(-129)), cs::codec_error);
  REQUIRE_THROWS_AS(cs::decode_value<char>(cs::encode_value(200)), cs::codec_error);
  REQUIRE_THROWS_AS(cs::decode_value<int>(cs::encode_value(std::int64_t{1} << 31)),
                    cs::codec_error);
  REQUIRE_THROWS_AS(cs::decode_value<std::uint8_t>(cs::encode_value(256U)), cs::codec_error);
  REQUIRE_THROWS_AS(cs::decode_value<std::uint32_t>(cs::encode_value(std::uint64_t{1} << 32)),
                    cs::codec_error);
  REQUIRE_THROWS_AS(cs::decode_value<Small>(cs::encode_value(1000)), cs::codec_error);
  REQUIRE_THROWS_AS(cs::decode_value<std::vector<short>>(cs::encode_value(std::vector<int>{70000})),
                    cs::codec_error);
  REQUIRE_THROWS_WITH(cs::decode_value<float>(cs::encode_value(1e300)),
                      Catch::Contains("does not fit in a float"));
  CHECK(cs::decode_value<std::int8_t>(cs::encode_value(-128)) == -128);
}

TEST_CASE("duplicate map keys and set elements are rejected") {
  std::string map_bytes = "m" + u64_bytes(2);
  map_bytes += cs::encode_value(1) + cs::encode_value(std::string("a"));
  map_bytes += cs::encode_value(1) + cs::encode_value(std::string("b"));
  REQUIRE_THROWS_WITH((cs::decode_value<std::map<int, std::string>>(map_bytes)),
                      Catch::Contains("duplicate map key at byte 28"));
  REQUIRE_THROWS_AS((cs::decode_value<std::unordered_map<int, std::string>>(map_bytes)),
                    cs::codec_error);

  const std::string set_bytes = "e" + u64_bytes(2) + cs::encode_value(3) + cs::encode_value(3);
  REQUIRE_THROWS_WITH(cs::decode_value<std::set<int>>(set_bytes),
                      Catch::Contains("duplicate set element"));
  REQUIRE_THROWS_AS(cs::decode_value<std::unordered_set<int>>(set_bytes), cs::codec_error);
}

TEST_CASE("fixed-size arrays and tuples reject another element count") {
  REQUIRE_THROWS_WITH(
      (cs::decode_value<std::array<int, 3>>(cs::encode_value(std::vector<int>{1, 2}))),
      Catch::Contains("expected a list of 3 elements at byte 0, found 2"));
  REQUIRE_THROWS_WITH(
      (cs::decode_value<std::tuple<int, int, int>>(cs::encode_value(std::make_tuple(1, 2)))),
      Catch::Contains("expected a tuple of 3 elements at byte 0, found 2"));
  REQUIRE_THROWS_AS((cs::decode_value<std::pair<int, int>>(cs::encode_value(std::make_tuple(1)))),
                    cs::codec_error);
}

TEST_CASE("bytes left after a value are rejected") {
  REQUIRE_THROWS_WITH(cs::decode_value<int>(cs::encode_value(1) + "xyz"),
                      Catch::Contains("3 unexpected trailing bytes at byte 9"));
  const std::string bytes = cs::encode_value(1) + "z";  // a reader only views its input
  cs::Reader r(bytes);
  CHECK(r.read<int>() == 1);
  CHECK_FALSE(r.at_end());
  CHECK(r.remaining() == 1);
  CHECK(r.offset() == 9);
  REQUIRE_THROWS_AS(r.expect_end(), cs::codec_error);
}

TEST_CASE("a user decoder must consume exactly its record, and cannot read past it") {
  REQUIRE_THROWS_WITH(cs::decode_value<ReadsTooLittle>(cs::encode_value(ReadsTooLittle{})),
                      Catch::Contains("left 9 of its 18 bytes unread"));
  // Reading too much runs into the end of the record, not into the next value.
  const std::string two = cs::encode_value(std::make_tuple(ReadsTooMuch{}, 5));
  REQUIRE_THROWS_WITH((cs::decode_value<std::tuple<ReadsTooMuch, int>>(two)),
                      Catch::Contains("found the end of the input"));
}

TEST_CASE("records nest at most max_nesting_depth deep, when writing and when reading") {
  REQUIRE(cs::max_nesting_depth == 256);
  const Tree deepest = chain(256);
  REQUIRE(tree_depth(deepest) == 256);
  CHECK(tree_depth(round_trip(deepest)) == 256);

  const Tree too_deep = chain(257);
  REQUIRE_THROWS_WITH(cs::encode_value(too_deep), Catch::Contains("nested more than 256 deep"));

  // A hostile input nesting 100000 records deep is rejected without exhausting the stack. Each
  // level is a Tree record: int value, then a list of one child (none at the bottom).
  const std::size_t levels = 100000;
  const std::size_t level_size = 1 + 8 + 9 + 1 + 8;  // record header, int, list header
  std::string hostile;
  hostile.reserve(levels * level_size);
  for (std::size_t i = 0; i < levels; ++i) {
    hostile += "r" + u64_bytes((levels - i) * level_size - 9);
    hostile += cs::encode_value(0);
    hostile += "l" + u64_bytes(i + 1 == levels ? 0 : 1);
  }
  REQUIRE_THROWS_WITH(cs::decode_value<Tree>(hostile), Catch::Contains("nested more than 256"));
}

TEST_CASE("a null const char* cannot be encoded") {
  const char* null = nullptr;
  REQUIRE_THROWS_AS(cs::encode_value(null), cs::codec_error);
}

TEST_CASE("random and mutated inputs give a value or a codec_error, never a crash") {
  std::mt19937_64 rng(20240601);  // fixed seed: the test is reproducible
  const std::string valid = cs::encode_value(sample_composite());
  auto decode_all = [](std::string_view bytes) {
    const auto attempt = [bytes](auto tag) {
      using T = typename decltype(tag)::type;
      try {
        static_cast<void>(cs::decode_value<T>(bytes));
      } catch (const cs::codec_error&) {
      }
    };
    attempt(std::common_type<Composite>{});
    attempt(std::common_type<Tree>{});
    attempt(std::common_type<std::vector<std::string>>{});
    attempt(std::common_type<std::map<std::string, std::set<int>>>{});
    attempt(std::common_type<std::optional<std::tuple<bool, double, Point>>>{});
  };

  for (int round = 0; round < 3000; ++round) {
    std::string mutated = valid;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = static_cast<std::size_t>(rng() % mutated.size());
      switch (rng() % 4) {
        case 0:
          mutated[at] = static_cast<char>(rng());
          break;
        case 1:
          mutated[at] = static_cast<char>(mutated[at] ^ (1 << (rng() % 8)));
          break;
        case 2:
          mutated.erase(at, 1 + rng() % 8);
          break;
        default:
          mutated.insert(at, 1, static_cast<char>(rng()));
          break;
      }
      if (mutated.empty()) mutated = "r";
    }
    REQUIRE_NOTHROW(decode_all(mutated));
  }
  for (int round = 0; round < 3000; ++round) {
    std::string noise(static_cast<std::size_t>(rng() % 64), '\0');
    for (auto& c : noise) c = "blmetorsxiuf-\0\xff"[rng() % 16];
    REQUIRE_NOTHROW(decode_all(noise));
  }
}
