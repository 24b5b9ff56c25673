#pragma once

// CRC-32C (Castagnoli): the checksum of the file-system storage's files. It detects every burst
// error up to 32 bits and all odd numbers of flipped bits, and is cheap enough to run over every
// output on every read. It guards against damage (a torn write, a flipped bit, a truncated copy),
// not against an adversary: a hostile writer can forge it, which is why readers also compare the
// full key and never trust a length they have not checked against the file's size.
//
// Reflected polynomial 0x82F63B78, initial value and final XOR 0xFFFFFFFF (RFC 3720, B.4); the
// check value of "123456789" is 0xE3069283. Table-driven, eight bytes per step.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace cacheserialize {
namespace detail {

/// Eight 256-entry tables: table[0] is the classic byte table; table[k][b] is the CRC of byte b
/// followed by k zero bytes, so eight input bytes fold into the CRC with eight lookups.
struct Crc32cTables {
  std::array<std::array<std::uint32_t, 256>, 8> t{};

  constexpr Crc32cTables() {
    for (std::uint32_t b = 0; b < 256; ++b) {
      std::uint32_t c = b;
      for (int i = 0; i < 8; ++i) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[0][b] = c;
    }
    for (std::size_t k = 1; k < 8; ++k) {
      for (std::size_t b = 0; b < 256; ++b) {
        const std::uint32_t prev = t[k - 1][b];
        t[k][b] = (prev >> 8) ^ t[0][prev & 0xffu];
      }
    }
  }
};

inline constexpr Crc32cTables crc32c_tables{};

/// Continues a CRC-32C over more bytes.
/// @param crc the value returned for the bytes before `data` (0 to start).
/// @return the CRC-32C of everything so far.
inline std::uint32_t crc32c_extend(std::uint32_t crc, std::string_view data) noexcept {
  const auto& t = crc32c_tables.t;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  std::size_t n = data.size();
  std::uint32_t c = ~crc;
  while (n >= 8) {
    const std::uint32_t lo =
        c ^ (static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
             static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24);
    c = t[7][lo & 0xffu] ^ t[6][(lo >> 8) & 0xffu] ^ t[5][(lo >> 16) & 0xffu] ^ t[4][lo >> 24] ^
        t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xffu];
  return ~c;
}

/// @return the CRC-32C of `data`.
inline std::uint32_t crc32c(std::string_view data) noexcept { return crc32c_extend(0, data); }

}  // namespace detail
}  // namespace cacheserialize
