#pragma once

/// @file serializer.hpp
/// The library's one customisation point, `serializer<T>`, and the binary format that cache keys
/// and byte-kept outputs are written in.
///
/// A user type plugs in with one specialisation:
///
///     template <> struct cacheserialize::serializer<Point> {
///       static constexpr const char* name = "Point";        // optional, default "record"
///       static void encode(cacheserialize::Writer& w, const Point& p) {
///         w.write(p.x);
///         w.write(p.y);
///       }
///       static Point decode(cacheserialize::Reader& r) {    // optional: for outputs kept as bytes
///         Point p;
///         p.x = r.read<int>();
///         p.y = r.read<int>();
///         return p;
///       }
///     };
///
/// ## Format, version 1
///
/// This format is a compatibility promise: cache keys are SHA-256 digests of it, so changing a
/// single byte of it changes every key and empties every cache. Any change needs a new version.
///
/// Every value is a one-byte tag followed by a payload. Integers are big-endian; lengths and
/// counts are 8-byte unsigned integers. Every value is self-delimiting, so a sequence of values
/// needs no separators and two different sequences never encode to the same bytes.
///
/// | tag | kind     | payload after the tag                     | C++ types                     |
/// |-----|----------|-------------------------------------------|-------------------------------|
/// | 'b' | bool     | 1 byte: 0 or 1                            | bool                          |
/// | 'i' | int      | 8 bytes, two's complement                 | signed integers, char, enums  |
/// | 'u' | uint     | 8 bytes                                   | unsigned integers, wchar_t    |
/// | 'f' | float    | 8 bytes: the IEEE-754 binary64 bits       | float (widened), double       |
/// | 's' | str      | length, then that many bytes              | std::string, std::string_view,|
/// |     |          |                                           | const char*, char arrays      |
/// | 'x' | bytes    | length, then that many bytes              | std::vector<unsigned char>,   |
/// |     |          |                                           | std::vector<std::byte>        |
/// | 'l' | list     | count, then that many values              | vector, array, deque, list    |
/// | 'm' | map      | count, then that many key, value pairs    | map, unordered_map            |
/// | 'e' | set      | count, then that many values              | set, unordered_set            |
/// | 't' | tuple    | count, then that many values              | pair, tuple                   |
/// | 'o' | optional | 1 byte: 0 (empty), or 1 then the value    | std::optional                 |
/// | 'r' | record   | length, then the user serializer's values | types with a user serializer  |
/// | '-' | ignored  | nothing; only in cache keys               | an ignored input of a key     |
///
/// - `char` is written as a `signed char` and `wchar_t` as its unsigned counterpart, and every
///   enum as an int (an enum over a 64-bit unsigned type as the two's complement of its value),
///   so that keys do not depend on the platform's or compiler's choice of signedness or of an
///   unscoped enum's underlying type.
/// - Integers are written by value, not by C++ type: `int 5` and `long 5` are the same bytes on
///   every platform. Decoding into a narrower type checks the range.
/// - Key mode (`Writer::Mode::key`) is canonical: -0.0 is written as +0.0, every NaN as
///   0x7ff8000000000000, and the elements of maps and sets are sorted by their encoded bytes
///   (for maps, by the encoded key), so equal contents give equal bytes whatever the container
///   or its insertion order. Value mode (`Writer::Mode::value`) keeps exact bits and iteration
///   order, so a decoded output is the value that was encoded.
/// - A record's length lets a reader check that a user decoder consumed exactly the bytes its
///   encoder wrote, and keeps a faulty user encoding from running into the next value.
/// - Records nest at most `max_nesting_depth` deep, on writing and on reading alike.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
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

#include "errors.hpp"

namespace cacheserialize {

/// The version of the binary format documented above.
inline constexpr int format_version = 1;

/// How deeply records (values of user types) may nest. Recursive user types are the only way to
/// nest values without bound, and a hostile input must not be able to exhaust the stack.
inline constexpr std::size_t max_nesting_depth = 256;

class Writer;
class Reader;

/// The customisation point: specialise it for a user type with
/// `static void encode(Writer&, const T&)`, optionally `static T decode(Reader&)` (needed only
/// for outputs kept as bytes) and optionally `static constexpr const char* name` (the type's
/// name in task signatures, "record" by default). The primary template is empty on purpose:
/// an empty `serializer<T>` means "T is not supported".
/// @tparam T the type to encode and decode.
/// @tparam Enable a slot for `std::enable_if_t` conditions in partial specialisations.
template <class T, class Enable = void>
struct serializer {};

template <class T>
std::string type_name();

namespace detail {

/// The one-byte tags of the format.
enum class Tag : unsigned char {
  boolean = 'b',
  integer = 'i',
  unsigned_integer = 'u',
  floating = 'f',
  string = 's',
  bytes = 'x',
  list = 'l',
  map = 'm',
  set = 'e',
  tuple = 't',
  optional = 'o',
  record = 'r',
  ignored = '-',
};

inline const char* tag_kind(Tag tag) noexcept {
  switch (tag) {
    case Tag::boolean:
      return "a bool";
    case Tag::integer:
      return "an int";
    case Tag::unsigned_integer:
      return "a uint";
    case Tag::floating:
      return "a float";
    case Tag::string:
      return "a string";
    case Tag::bytes:
      return "bytes";
    case Tag::list:
      return "a list";
    case Tag::map:
      return "a map";
    case Tag::set:
      return "a set";
    case Tag::tuple:
      return "a tuple";
    case Tag::optional:
      return "an optional";
    case Tag::record:
      return "a record";
    case Tag::ignored:
      return "an ignored input";
  }
  return "a value";
}

/// @return a byte for a message: 'i' when printable, 0x07 otherwise.
inline std::string quote_byte(unsigned char byte) {
  if (byte > 0x20 && byte < 0x7f) return std::string("'") + static_cast<char>(byte) + "'";
  static constexpr char digits[] = "0123456789abcdef";
  return std::string("0x") + digits[byte >> 4] + digits[byte & 0x0f];
}

/// Base of the library's own serializers: their values carry their own tags, while a user
/// serializer's values are framed as a record.
struct builtin {};

template <class T>
inline constexpr bool dependent_false = false;

// The static_asserts below sit in class templates named after the problem, so that the
// compiler's "in instantiation of ... unsupported_type<YourType>" line names the type.

template <class T>
struct unsupported_type {
  static_assert(dependent_false<T>,
                "cacheserialize: this type has no serializer: specialise "
                "cacheserialize::serializer<T> with encode(Writer&, const T&) (and decode(Reader&) "
                "for outputs kept as bytes)");
};

template <class T>
struct missing_decode {
  static_assert(dependent_false<T>,
                "cacheserialize: this type's serializer has no decode: add static T "
                "decode(cacheserialize::Reader&) to cacheserialize::serializer<T> (needed for "
                "outputs kept as bytes)");
};

template <class T>
struct unsupported_long_double {
  static_assert(dependent_false<T>,
                "cacheserialize: long double is not supported because its size and format differ "
                "between platforms: convert it to double");
};

template <class T>
struct decode_strings_into_std_string {
  static_assert(dependent_false<T>,
                "cacheserialize: strings decode only into std::string (a std::string_view, "
                "const char* or char array cannot own the decoded bytes)");
};

template <class T, class = void>
struct has_encode_impl : std::false_type {};
template <class T>
struct has_encode_impl<T, std::void_t<decltype(serializer<T>::encode(std::declval<Writer&>(),
                                                                     std::declval<const T&>()))>>
    : std::true_type {};

template <class T, class = void>
struct has_decode_impl : std::false_type {};
template <class T>
struct has_decode_impl<T, std::void_t<decltype(serializer<T>::decode(std::declval<Reader&>()))>>
    : std::is_convertible<decltype(serializer<T>::decode(std::declval<Reader&>())), T> {};

template <class T, class = void>
struct has_name_impl : std::false_type {};
template <class T>
struct has_name_impl<T, std::void_t<decltype(std::string_view(serializer<T>::name))>>
    : std::true_type {};

/// Whether `serializer<T>` has an `encode(Writer&, const T&)`.
template <class T>
inline constexpr bool has_encode = has_encode_impl<T>::value;
/// Whether `serializer<T>` has a `decode(Reader&)` returning something convertible to T.
template <class T>
inline constexpr bool has_decode = has_decode_impl<T>::value;
/// Whether `serializer<T>` has a `name` convertible to `std::string_view`.
template <class T>
inline constexpr bool has_name = has_name_impl<T>::value;

template <class T>
inline constexpr bool is_builtin = std::is_base_of_v<builtin, serializer<T>>;

// A container's serializer exists for every element type; these look through it at the
// elements, so that is_encodable_v<std::vector<Unsupported>> is false.
template <class T, class = void>
struct elements_encodable : std::true_type {};
template <class T>
struct elements_encodable<T, std::void_t<decltype(serializer<T>::elements_encodable)>>
    : std::bool_constant<serializer<T>::elements_encodable> {};

template <class T, class = void>
struct elements_decodable : std::true_type {};
template <class T>
struct elements_decodable<T, std::void_t<decltype(serializer<T>::elements_decodable)>>
    : std::bool_constant<serializer<T>::elements_decodable> {};

template <class T>
inline constexpr bool is_non_owning_string = std::is_same_v<T, std::string_view> ||
                                             std::is_same_v<T, const char*> ||
                                             std::is_same_v<T, char*> ||
                                             (std::is_array_v<T> &&
                                              std::is_same_v<std::remove_extent_t<T>, char>);

/// Restores a depth counter when a record ends, also by exception.
class DepthGuard {
 public:
  explicit DepthGuard(std::size_t& depth) noexcept : depth_(depth) { ++depth_; }
  ~DepthGuard() { --depth_; }
  DepthGuard(const DepthGuard&) = delete;
  DepthGuard& operator=(const DepthGuard&) = delete;

 private:
  std::size_t& depth_;
};

}  // namespace detail

/// Whether values of T can be written (as an input of a cache key or an output kept as bytes).
template <class T>
inline constexpr bool is_encodable_v =
    std::conjunction_v<std::negation<std::is_same<std::remove_cv_t<T>, long double>>,
                       detail::has_encode_impl<std::remove_cv_t<T>>,
                       detail::elements_encodable<std::remove_cv_t<T>>>;

/// Whether values of T can be read back (needed for outputs kept as bytes).
template <class T>
inline constexpr bool is_decodable_v =
    std::conjunction_v<std::negation<std::is_same<std::remove_cv_t<T>, long double>>,
                       detail::has_decode_impl<std::remove_cv_t<T>>,
                       detail::elements_decodable<std::remove_cv_t<T>>>;

/// Appends values in the library's format to a string. A user's `serializer<T>::encode`
/// receives one and calls `write()` for each field.
class Writer {
 public:
  /// `key` writes the canonical form used for cache keys (equal values give equal bytes);
  /// `value` writes the exact form used for outputs (decoding gives back the same value).
  enum class Mode { key, value };

  /// @param out the string to append to; it must outlive the writer.
  /// @param mode canonical key bytes or exact value bytes.
  Writer(std::string& out, Mode mode) noexcept : out_(&out), mode_(mode) {}

  /// @return the mode this writer was made with.
  Mode mode() const noexcept { return mode_; }
  /// @return whether this writer writes cache-key bytes, which a user serializer may want to
  ///         canonicalise too (for example by sorting an unordered member).
  bool canonical() const noexcept { return mode_ == Mode::key; }

  /// Writes any supported value: a built-in type or one with a `serializer<T>` specialisation.
  /// A user type's bytes are framed as a record.
  /// @throws codec_error when records nest deeper than `max_nesting_depth`, or a value cannot be
  ///         encoded (a null `const char*`). The output is then left incomplete.
  template <class T>
  void write(const T& value);

  // Primitives for user serializers. Each writes its own tag, so each value is self-delimiting
  // and the reader can tell a wrong field from a right one.

  /// Writes a bool ('b').
  void write_bool(bool value) {
    put_tag(detail::Tag::boolean);
    out_->push_back(value ? '\1' : '\0');
  }
  /// Writes a signed integer ('i').
  void write_int(std::int64_t value) {
    put_tag(detail::Tag::integer);
    put_u64(static_cast<std::uint64_t>(value));
  }
  /// Writes an unsigned integer ('u').
  void write_uint(std::uint64_t value) {
    put_tag(detail::Tag::unsigned_integer);
    put_u64(value);
  }
  /// In key mode -0.0 becomes +0.0 and every NaN the one quiet NaN, so that values that compare
  /// or behave the same give the same key.
  void write_float(double value) {
    std::uint64_t bits = 0;
    static_assert(sizeof bits == sizeof value && std::numeric_limits<double>::is_iec559,
                  "cacheserialize needs IEEE-754 binary64 doubles");
    std::memcpy(&bits, &value, sizeof bits);
    if (canonical()) {
      if (std::isnan(value)) {
        bits = 0x7ff8000000000000ULL;
      } else if (value == 0.0) {
        bits = 0;
      }
    }
    put_tag(detail::Tag::floating);
    put_u64(bits);
  }
  /// Writes text ('s').
  void write_string(std::string_view text) { put_blob(detail::Tag::string, text); }
  /// Writes raw bytes ('x'), a different kind from text.
  void write_bytes(std::string_view bytes) { put_blob(detail::Tag::bytes, bytes); }

  /// Framing for a user's own containers: write the header, then exactly `count` values (pairs
  /// of values for a map). Prefer `write_list`/`write_set`/`write_map`, which count for you and
  /// canonicalise in key mode.
  void begin_list(std::size_t count) { put_header(detail::Tag::list, count); }
  /// Starts a map of `count` key, value pairs ('m').
  void begin_map(std::size_t count) { put_header(detail::Tag::map, count); }
  /// Starts a set of `count` values ('e').
  void begin_set(std::size_t count) { put_header(detail::Tag::set, count); }
  /// Starts a tuple of `count` values ('t').
  void begin_tuple(std::size_t count) { put_header(detail::Tag::tuple, count); }
  /// Write the value right after when `has_value` is true.
  void begin_optional(bool has_value) {
    put_tag(detail::Tag::optional);
    out_->push_back(has_value ? '\1' : '\0');
  }

  /// Writes any iterable range as a list, in its order.
  template <class Range>
  void write_list(const Range& range) {
    const std::size_t at = put_header(detail::Tag::list, 0);
    std::size_t count = 0;
    for (const auto& element : range) {
      write(element);
      ++count;
    }
    patch_u64(at, count);
  }

  /// Writes any iterable range as a set; in key mode sorted by encoded bytes, so that the bytes
  /// do not depend on the container's order.
  template <class Range>
  void write_set(const Range& range) {
    write_collection(detail::Tag::set, range,
                     [](Writer& w, const auto& element) { w.write(element); });
  }

  /// Writes an iterable range of pairs (`.first` key, `.second` value) as a map; in key mode
  /// sorted by encoded key bytes.
  template <class Range>
  void write_map(const Range& range) {
    write_collection(detail::Tag::map, range, [](Writer& w, const auto& entry) {
      w.write(entry.first);
      w.write(entry.second);
    });
  }

  /// Appends the "ignored input" marker of cache keys. Only `KeySchema` needs it.
  void write_ignored() { put_tag(detail::Tag::ignored); }

 private:
  Writer(std::string& out, Mode mode, std::size_t depth) noexcept
      : out_(&out), mode_(mode), depth_(depth) {}

  template <class T>
  void write_record(const T& value);

  template <class Range, class EncodeOne>
  void write_collection(detail::Tag tag, const Range& range, EncodeOne encode_one);

  void put_tag(detail::Tag tag) { out_->push_back(static_cast<char>(tag)); }

  void put_u64(std::uint64_t value) {
    char buf[8];
    for (std::size_t i = 0; i < 8; ++i) {
      buf[i] = static_cast<char>(static_cast<unsigned char>(value >> (56 - 8 * i)));
    }
    out_->append(buf, sizeof buf);
  }

  void patch_u64(std::size_t at, std::uint64_t value) {
    for (std::size_t i = 0; i < 8; ++i) {
      (*out_)[at + i] = static_cast<char>(static_cast<unsigned char>(value >> (56 - 8 * i)));
    }
  }

  /// @return where the count is, for `patch_u64`.
  std::size_t put_header(detail::Tag tag, std::size_t count) {
    put_tag(tag);
    const std::size_t at = out_->size();
    put_u64(count);
    return at;
  }

  void put_blob(detail::Tag tag, std::string_view bytes) {
    put_header(tag, bytes.size());
    out_->append(bytes.data(), bytes.size());
  }

  std::string* out_;
  Mode mode_;
  std::size_t depth_ = 0;  // records being written, outermost first
};

/// Reads values in the library's format. It never trusts its input: the bytes may come from a
/// damaged or hostile shared directory or database. Every read is bounds-checked, counts are
/// checked against the bytes left before anything is allocated, records nest at most
/// `max_nesting_depth` deep, and every problem is a `codec_error` naming the byte offset.
class Reader {
 public:
  /// @param input the bytes to read; they must outlive the reader.
  explicit Reader(std::string_view input) noexcept : input_(input), end_(input.size()) {}

  /// Reads any supported value, the counterpart of `Writer::write<T>`.
  /// @throws codec_error when the bytes are not a T.
  template <class T>
  T read();

  // Counterparts of the Writer's primitives. Each checks the tag and the bytes left, and throws
  // codec_error on a mismatch or truncation.

  /// @return a bool ('b').
  bool read_bool() { return read_flag(detail::Tag::boolean); }
  /// @return a signed integer ('i').
  std::int64_t read_int() {
    expect_tag(detail::Tag::integer);
    return static_cast<std::int64_t>(take_u64("an int"));
  }
  /// @return an unsigned integer ('u').
  std::uint64_t read_uint() {
    expect_tag(detail::Tag::unsigned_integer);
    return take_u64("a uint");
  }
  /// @return the exact double that was written (in value mode, -0.0 and NaN payloads too).
  double read_float() {
    expect_tag(detail::Tag::floating);
    const std::uint64_t bits = take_u64("a float");
    double value = 0;
    std::memcpy(&value, &bits, sizeof value);
    return value;
  }
  /// @return text ('s').
  std::string read_string() { return std::string(take_blob(detail::Tag::string)); }
  /// @return raw bytes ('x').
  std::string read_bytes() { return std::string(take_blob(detail::Tag::bytes)); }
  /// Like `read_bytes` without the copy.
  /// @return a view into the input, valid as long as the input is.
  std::string_view read_bytes_view() { return take_blob(detail::Tag::bytes); }

  /// Counterparts of `Writer::begin_*`. Each count is checked against the bytes left (every
  /// value takes at least one byte), so a corrupt count fails here rather than in an allocation.
  std::size_t read_list_count() { return take_count(detail::Tag::list, 1); }
  /// @return the number of key, value pairs of a map ('m').
  std::size_t read_map_count() { return take_count(detail::Tag::map, 2); }
  /// @return the number of values of a set ('e').
  std::size_t read_set_count() { return take_count(detail::Tag::set, 1); }
  /// @return the number of values of a tuple ('t').
  std::size_t read_tuple_count() { return take_count(detail::Tag::tuple, 1); }
  /// @return whether a value follows, the counterpart of `Writer::begin_optional`.
  bool read_optional_has_value() { return read_flag(detail::Tag::optional); }

  /// @return whether every byte has been read.
  bool at_end() const noexcept { return pos_ == end_; }
  /// @return how many bytes are left.
  std::size_t remaining() const noexcept { return end_ - pos_; }
  /// @return the offset of the next byte from the start of the whole input, for messages.
  std::size_t offset() const noexcept { return pos_; }
  /// @throws codec_error if bytes are left: a value followed by garbage is not that value.
  void expect_end() const {
    if (!at_end()) {
      fail(std::to_string(remaining()) + " unexpected trailing byte" +
           (remaining() == 1 ? "" : "s") + " at byte " + std::to_string(pos_));
    }
  }

  /// @throws codec_error with `message`, for decoders that find a value they reject.
  [[noreturn]] static void fail(const std::string& message) { throw codec_error(message); }

 private:
  Reader(std::string_view input, std::size_t begin, std::size_t end, std::size_t depth) noexcept
      : input_(input), pos_(begin), end_(end), depth_(depth) {}

  template <class T>
  T read_record();

  void expect_tag(detail::Tag tag) {
    const auto expected = static_cast<unsigned char>(tag);
    if (at_end()) {
      fail(std::string("expected ") + detail::tag_kind(tag) + " (tag " +
           detail::quote_byte(expected) + ") at byte " + std::to_string(pos_) +
           ", found the end of the input");
    }
    const auto found = static_cast<unsigned char>(input_[pos_]);
    if (found != expected) {
      fail(std::string("expected ") + detail::tag_kind(tag) + " (tag " +
           detail::quote_byte(expected) + ") at byte " + std::to_string(pos_) + ", found tag " +
           detail::quote_byte(found));
    }
    ++pos_;
  }

  /// @return `size` bytes from the input.
  const char* take(std::size_t size, const char* what) {
    if (size > remaining()) {
      fail("truncated input: " + std::string(what) + " at byte " + std::to_string(pos_) +
           " needs " + std::to_string(size) + " byte" + (size == 1 ? "" : "s") + ", " +
           std::to_string(remaining()) + " left");
    }
    const char* p = input_.data() + pos_;
    pos_ += size;
    return p;
  }

  std::uint64_t take_u64(const char* what) {
    const auto* p = reinterpret_cast<const unsigned char*>(take(8, what));
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < 8; ++i) value = (value << 8) | p[i];
    return value;
  }

  bool read_flag(detail::Tag tag) {
    expect_tag(tag);
    const std::size_t at = pos_;
    const auto byte = static_cast<unsigned char>(*take(1, detail::tag_kind(tag)));
    if (byte > 1) {
      fail(std::string("invalid byte ") + detail::quote_byte(byte) + " in " +
           detail::tag_kind(tag) + " at byte " + std::to_string(at) + ": must be 0 or 1");
    }
    return byte == 1;
  }

  /// @return the length checked against the bytes left, before the caller allocates.
  std::size_t take_length(detail::Tag tag) {
    const std::size_t at = pos_;
    const std::uint64_t length = take_u64(detail::tag_kind(tag));
    if (length > remaining()) {
      fail(std::string("truncated input: ") + detail::tag_kind(tag) + " of " +
           std::to_string(length) + " bytes at byte " + std::to_string(at - 1) +
           " runs past the end (" + std::to_string(remaining()) + " bytes left)");
    }
    return static_cast<std::size_t>(length);
  }

  std::string_view take_blob(detail::Tag tag) {
    expect_tag(tag);
    const std::size_t length = take_length(tag);
    return std::string_view(take(length, detail::tag_kind(tag)), length);
  }

  std::size_t take_count(detail::Tag tag, std::size_t min_bytes_per_element) {
    expect_tag(tag);
    const std::size_t at = pos_ - 1;
    const std::uint64_t count = take_u64(detail::tag_kind(tag));
    if (count > remaining() / min_bytes_per_element) {
      fail(std::string("corrupt input: ") + detail::tag_kind(tag) + " at byte " +
           std::to_string(at) + " claims " + std::to_string(count) + " elements but only " +
           std::to_string(remaining()) + " bytes are left");
    }
    return static_cast<std::size_t>(count);
  }

  std::string_view input_;
  std::size_t pos_ = 0;
  std::size_t end_;
  std::size_t depth_ = 0;  // records being read, outermost first
};

}  // namespace cacheserialize

#include "detail/builtin_serializers.hpp"

namespace cacheserialize {

// ---- Dispatch ----------------------------------------------------------------------------------

template <class T>
void Writer::write(const T& value) {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, long double>) {
    static_cast<void>(sizeof(detail::unsupported_long_double<U>));
  } else if constexpr (!detail::has_encode<U>) {
    static_cast<void>(sizeof(detail::unsupported_type<U>));
  } else if constexpr (detail::is_builtin<U>) {
    serializer<U>::encode(*this, value);
  } else {
    write_record(value);
  }
}

template <class T>
void Writer::write_record(const T& value) {
  if (depth_ >= max_nesting_depth) {
    Reader::fail("cannot encode records nested more than " + std::to_string(max_nesting_depth) +
                 " deep (is the value cyclic?)");
  }
  const std::size_t at = put_header(detail::Tag::record, 0);
  {
    const detail::DepthGuard guard(depth_);
    serializer<T>::encode(*this, value);
  }
  patch_u64(at, out_->size() - at - 8);
}

template <class Range, class EncodeOne>
void Writer::write_collection(detail::Tag tag, const Range& range, EncodeOne encode_one) {
  const std::size_t at = put_header(tag, 0);
  std::size_t count = 0;
  if (!canonical()) {
    for (const auto& element : range) {
      encode_one(*this, element);
      ++count;
    }
    patch_u64(at, count);
    return;
  }
  // Key mode: encode every element on its own, then append them sorted by their bytes. Each
  // encoding is self-delimiting (so no encoding is a prefix of another), which makes this order
  // total and, for maps, the same as ordering by the encoded key alone.
  std::string scratch;
  std::vector<std::pair<std::size_t, std::size_t>> spans;  // offset, size in scratch
  Writer sub(scratch, mode_, depth_);
  for (const auto& element : range) {
    const std::size_t start = scratch.size();
    encode_one(sub, element);
    spans.emplace_back(start, scratch.size() - start);
    ++count;
  }
  const std::string_view all(scratch);
  std::sort(spans.begin(), spans.end(), [all](const auto& a, const auto& b) {
    return all.substr(a.first, a.second) < all.substr(b.first, b.second);
  });
  out_->reserve(out_->size() + scratch.size());
  for (const auto& span : spans) out_->append(all.substr(span.first, span.second));
  patch_u64(at, count);
}

template <class T>
T Reader::read() {
  static_assert(!std::is_reference_v<T> && !std::is_const_v<T>,
                "cacheserialize: read<T>() needs a plain value type");
  if constexpr (std::is_same_v<T, long double>) {
    static_cast<void>(sizeof(detail::unsupported_long_double<T>));
  } else if constexpr (detail::is_non_owning_string<T>) {
    static_cast<void>(sizeof(detail::decode_strings_into_std_string<T>));
  } else if constexpr (!detail::has_encode<T> && !detail::has_decode<T>) {
    static_cast<void>(sizeof(detail::unsupported_type<T>));
  } else if constexpr (!detail::has_decode<T>) {
    static_cast<void>(sizeof(detail::missing_decode<T>));
  } else if constexpr (detail::is_builtin<T>) {
    return serializer<T>::decode(*this);
  } else {
    return read_record<T>();
  }
}

template <class T>
T Reader::read_record() {
  const std::size_t at = pos_;
  expect_tag(detail::Tag::record);
  const std::size_t length = take_length(detail::Tag::record);
  if (depth_ >= max_nesting_depth) {
    fail("records nested more than " + std::to_string(max_nesting_depth) + " deep at byte " +
         std::to_string(at));
  }
  Reader sub(input_, pos_, pos_ + length, depth_ + 1);
  T value = serializer<T>::decode(sub);
  if (!sub.at_end()) {
    fail("the decoder of the record at byte " + std::to_string(at) + " left " +
         std::to_string(sub.remaining()) + " of its " + std::to_string(length) + " bytes unread");
  }
  pos_ += length;
  return value;
}

/// @return the name of T in task signatures: "int", "str", "list<int>", "map<str,float>",
///         a user serializer's `name`, or "record".
template <class T>
std::string type_name() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, long double>) {
    static_cast<void>(sizeof(detail::unsupported_long_double<U>));
    return {};
  } else if constexpr (!detail::has_encode<U> && !detail::has_decode<U>) {
    static_cast<void>(sizeof(detail::unsupported_type<U>));
    return {};
  } else if constexpr (detail::is_builtin<U>) {
    return serializer<U>::type_name();
  } else if constexpr (detail::has_name<U>) {
    return std::string(std::string_view(serializer<U>::name));
  } else {
    return "record";
  }
}

/// @return `value` in value mode: the exact bytes that `decode_value<T>` turns back into it.
template <class T>
std::string encode_value(const T& value) {
  std::string out;
  Writer w(out, Writer::Mode::value);
  w.write(value);
  return out;
}

/// @return the T that `bytes` holds.
/// @throws codec_error when `bytes` are not exactly one T.
template <class T>
T decode_value(std::string_view bytes) {
  Reader r(bytes);
  T value = r.read<T>();
  r.expect_end();
  return value;
}

}  // namespace cacheserialize
