// The byte formats of FileSystemStorage's files and their checksum, as pure functions: every
// damaged form of a file must be rejected with a reason, never accepted and never crash.

#include <algorithm>
#include <cacheserialize/detail/crc32c.hpp>
#include <cacheserialize/detail/filesystem/format.hpp>
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <string>

#include "accelerated_path.hpp"

namespace cs = cacheserialize;
namespace d = cacheserialize::detail;

namespace {

// The textbook bit-at-a-time CRC-32C, to check the table-driven one against.
std::uint32_t crc32c_bitwise(const std::string& data) {
  std::uint32_t c = 0xffffffffu;
  for (const char ch : data) {
    c ^= static_cast<unsigned char>(ch);
    for (int i = 0; i < 8; ++i) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

// Every CRC-32C uses `path` while this lives.
struct OnCrcPath : test::OnPath<d::Crc32cExtend, d::Crc32cPath> {
  explicit OnCrcPath(d::Crc32cPath path) : OnPath(d::crc32c_impl(), d::crc32c_select, path) {}
};

const char* name_of(d::Crc32cPath path) {
  switch (path) {
    case d::Crc32cPath::portable:
      return "portable";
    case d::Crc32cPath::x86_sse42:
      return "x86 SSE4.2";
    case d::Crc32cPath::arm_crc:
      return "ARMv8 CRC32";
  }
  return "?";
}

// Runs the test case once per path; on a path this machine lacks, it passes without checking.
#define ON_EVERY_CRC_PATH()                                                                \
  const d::Crc32cPath path =                                                               \
      GENERATE(d::Crc32cPath::portable, d::Crc32cPath::x86_sse42, d::Crc32cPath::arm_crc); \
  INFO("CRC-32C path: " << name_of(path));                                                 \
  OnCrcPath on_path(path);                                                                 \
  if (!on_path.available()) return

std::string pattern(std::size_t n) {
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s.push_back(static_cast<char>((i * 131 + 7) & 0xff));
  return s;
}

}  // namespace

TEST_CASE("CRC-32C gives the published check values") {
  ON_EVERY_CRC_PATH();
  CHECK(d::crc32c("") == 0u);
  CHECK(d::crc32c("123456789") == 0xE3069283u);
  // RFC 3720 (iSCSI), appendix B.4.
  CHECK(d::crc32c(std::string(32, '\0')) == 0x8A9136AAu);
  CHECK(d::crc32c(std::string(32, '\xff')) == 0x62A8AB43u);
  std::string up;
  for (int i = 0; i < 32; ++i) up.push_back(static_cast<char>(i));
  CHECK(d::crc32c(up) == 0x46DD794Eu);
}

TEST_CASE("CRC-32C eight bytes at a time equals the bitwise definition, in one piece or many") {
  ON_EVERY_CRC_PATH();
  for (std::size_t n = 0; n <= 100; ++n) {
    const std::string data = pattern(n);
    const std::uint32_t expected = crc32c_bitwise(data);
    REQUIRE(d::crc32c(data) == expected);
    for (std::size_t cut = 0; cut <= n; cut += 7) {
      const std::uint32_t first = d::crc32c(std::string_view(data).substr(0, cut));
      REQUIRE(d::crc32c_extend(first, std::string_view(data).substr(cut)) == expected);
    }
  }
}

TEST_CASE("every accelerated CRC-32C path gives the portable value of random data, however fed") {
  const d::Crc32cPath path = GENERATE(d::Crc32cPath::x86_sse42, d::Crc32cPath::arm_crc);
  INFO("CRC-32C path: " << name_of(path));
  if (!d::crc32c_extend_of(path)) return;  // not on this machine
  std::mt19937_64 random(20261204);
  for (int i = 0; i < 2000; ++i) {
    const std::size_t size = i % 100 == 0 ? 65536 + random() % 4096 : random() % 1500;
    std::string data(size, '\0');
    for (char& c : data) c = static_cast<char>(random());
    std::uint32_t expected = 0;
    {
      OnCrcPath portable(d::Crc32cPath::portable);
      expected = d::crc32c(data);
    }
    OnCrcPath accelerated(path);
    REQUIRE(accelerated.available());
    CAPTURE(size);
    REQUIRE(d::crc32c(data) == expected);
    std::uint32_t pieces = 0;  // split at random, unaligned places
    for (std::size_t at = 0; at < size;) {
      const std::size_t n = std::min<std::size_t>(size - at, random() % 20);
      pieces = d::crc32c_extend(pieces, std::string_view(data).substr(at, n));
      at += n;
    }
    REQUIRE(pieces == expected);
  }
}

TEST_CASE("the fastest CRC-32C path this processor has is the one chosen") {
  const d::Crc32cExtend chosen = d::crc32c_impl().load();
  if (const d::Crc32cExtend x86 = d::crc32c_extend_of(d::Crc32cPath::x86_sse42)) {
    CHECK(chosen == x86);
  } else if (const d::Crc32cExtend arm = d::crc32c_extend_of(d::Crc32cPath::arm_crc)) {
    CHECK(chosen == arm);
  } else {
    CHECK(chosen == d::crc32c_extend_of(d::Crc32cPath::portable));
  }
}

TEST_CASE("an output file holds its key and payload and reads back exactly") {
  const std::string key("CSK\x01key\0bytes", 13);
  const std::string payload("payload\0\xff", 9);
  const std::string file = d::encode_output_file(key, payload);
  CHECK(file.size() == d::fs_output_overhead + key.size() + payload.size());
  CHECK(file.compare(0, 8, "CSFSOUT\n") == 0);
  d::OutputView view;
  REQUIRE(d::parse_output_file(file, key, view).empty());
  CHECK(view.key == key);
  CHECK(view.payload == payload);

  SECTION("an empty payload is an output too") {
    const std::string empty = d::encode_output_file(key, "");
    REQUIRE(d::parse_output_file(empty, key, view).empty());
    CHECK(view.payload.empty());
  }
}

TEST_CASE("every truncation, flipped bit and extra byte of an output file is rejected") {
  const std::string key = "CSK\x01some key";
  const std::string file = d::encode_output_file(key, pattern(40));
  d::OutputView view;
  for (std::size_t n = 0; n < file.size(); ++n) {
    const std::string why = d::parse_output_file(file.substr(0, n), key, view);
    REQUIRE_FALSE(why.empty());
    REQUIRE(why.find("truncated") != std::string::npos);
  }
  for (std::size_t byte = 0; byte < file.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string damaged = file;
      damaged[byte] = static_cast<char>(damaged[byte] ^ (1 << bit));
      REQUIRE_FALSE(d::parse_output_file(damaged, key, view).empty());
    }
  }
  CHECK(d::parse_output_file(file + "x", key, view).find("trailing bytes") != std::string::npos);
  std::string damaged = file;
  damaged[file.size() - 10] = static_cast<char>(damaged[file.size() - 10] ^ 1);
  CHECK(d::parse_output_file(damaged, key, view).find("checksum") != std::string::npos);
  damaged = file;
  damaged[0] = 'X';
  CHECK(d::parse_output_file(damaged, key, view).find("bad magic") != std::string::npos);
}

TEST_CASE("an output file of another key, or of another format version, is rejected") {
  const std::string file = d::encode_output_file("CSK\x01key A", "A's output");
  d::OutputView view;
  SECTION("another key: a digest collision or a copied file reads as foreign") {
    const std::string why = d::parse_output_file(file, "CSK\x01key B", view);
    CHECK(why.find("foreign") != std::string::npos);
    CHECK(view.key == "CSK\x01key A");
  }
  SECTION("a key that is a prefix of the stored one is another key") {
    CHECK_FALSE(d::parse_output_file(file, "CSK\x01key", view).empty());
  }
  SECTION("a version this reader does not know") {
    std::string future = file;
    future[11] = '\x02';
    CHECK(d::parse_output_file(future, "CSK\x01key A", view).find("version 2") !=
          std::string::npos);
  }
  SECTION("lengths that would overflow when added are refused before any arithmetic") {
    std::string huge = file;
    for (std::size_t i = 12; i < 28; ++i) huge[i] = '\xff';
    CHECK(d::parse_output_file(huge, "CSK\x01key A", view).find("impossible lengths") !=
          std::string::npos);
  }
}

TEST_CASE("a reservation record round-trips, held or free") {
  d::ReservationRecord held;
  held.held = true;
  held.reservation =
      cs::Reservation{"host:1:ab:2", 42, cs::from_unix_nanos(1'767'225'600'000'000'005)};
  d::ReservationRecord back;
  REQUIRE(d::parse_reservation_record(d::encode_reservation_record(held), back).empty());
  CHECK(back.held);
  CHECK(back.reservation.owner == "host:1:ab:2");
  CHECK(back.reservation.token == 42);
  CHECK(back.reservation.expires_at == held.reservation.expires_at);

  d::ReservationRecord free;
  free.reservation.token = 43;
  REQUIRE(d::parse_reservation_record(d::encode_reservation_record(free), back).empty());
  CHECK_FALSE(back.held);
  CHECK(back.reservation.owner.empty());
  CHECK(back.reservation.token == 43);

  SECTION("a negative expiry (before 1970) survives too") {
    held.reservation.expires_at = cs::from_unix_nanos(-5);
    REQUIRE(d::parse_reservation_record(d::encode_reservation_record(held), back).empty());
    CHECK(back.reservation.expires_at == cs::from_unix_nanos(-5));
  }
}

TEST_CASE(
    "every truncation and flipped bit of a reservation record is rejected, and bytes after it "
    "are a longer record's tail") {
  d::ReservationRecord rec;
  rec.held = true;
  rec.reservation = cs::Reservation{"owner", 7, cs::from_unix_nanos(99)};
  const std::string bytes = d::encode_reservation_record(rec);
  d::ReservationRecord out;
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    REQUIRE_FALSE(d::parse_reservation_record(bytes.substr(0, n), out).empty());
  }
  for (std::size_t byte = 0; byte < bytes.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string damaged = bytes;
      damaged[byte] = static_cast<char>(damaged[byte] ^ (1 << bit));
      REQUIRE_FALSE(d::parse_reservation_record(damaged, out).empty());
    }
  }
  // A shorter record written over a longer one, not yet truncated: the record is the shorter.
  d::ReservationRecord longer = rec;
  longer.reservation.owner = std::string(300, 'o');
  longer.reservation.token = 6;
  const std::string old_bytes = d::encode_reservation_record(longer);
  REQUIRE(d::parse_reservation_record(bytes + old_bytes.substr(bytes.size()), out).empty());
  CHECK(out.held);
  CHECK(out.reservation.owner == "owner");
  CHECK(out.reservation.token == 7);
  CHECK(d::parse_reservation_record(bytes + "x", out).empty());

  SECTION("a token at or above 2^63, which no clock would give, is damage (and cannot wrap)") {
    rec.reservation.token = d::fs_max_token;
    CHECK_THAT(d::parse_reservation_record(d::encode_reservation_record(rec), out),
               Catch::Contains("impossible token"));
    rec.reservation.token = d::fs_max_token - 1;
    CHECK(d::parse_reservation_record(d::encode_reservation_record(rec), out).empty());
  }
}
