#pragma once

// CRC-32C (Castagnoli): the checksum of the file-system storage's files. It detects every burst
// error up to 32 bits and all odd numbers of flipped bits, and is cheap enough to run over every
// output on every read. It guards against damage (a torn write, a flipped bit, a truncated copy),
// not against an adversary: a hostile writer can forge it, which is why readers also compare the
// full key and never trust a length they have not checked against the file's size.
//
// Reflected polynomial 0x82F63B78, initial value and final XOR 0xFFFFFFFF (RFC 3720, B.4); the
// check value of "123456789" is 0xE3069283. Three paths, chosen at run time like SHA-256's: the
// SSE4.2 `crc32` instruction (x86-64), the ARMv8 CRC32 instructions (AArch64 Linux), and a
// portable table-driven one, eight bytes per step. The accelerated functions are compiled for
// their instruction set with a target attribute, so the library still builds with default flags.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CACHESERIALIZE_CRC32C_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

#if defined(__aarch64__) && defined(__linux__) && \
    (defined(__ARM_FEATURE_CRC32) || (defined(__GNUC__) && !defined(__clang__)))
#define CACHESERIALIZE_CRC32C_ARM 1
#include <arm_acle.h>
#include <sys/auxv.h>
#if defined(__ARM_FEATURE_CRC32)
#define CACHESERIALIZE_CRC32C_ARM_TARGET
#else
#define CACHESERIALIZE_CRC32C_ARM_TARGET __attribute__((target("+crc")))
#endif
#endif

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

/// The portable path of `crc32c_extend`.
inline std::uint32_t crc32c_extend_portable(std::uint32_t crc, const unsigned char* p,
                                            std::size_t n) noexcept {
  const auto& t = crc32c_tables.t;
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

#ifdef CACHESERIALIZE_CRC32C_X86
/// @return whether this processor has SSE4.2 (CPUID leaf 1, ECX bit 20), whose `crc32`
///         instruction computes exactly CRC-32C.
inline bool crc32c_x86_supported() noexcept {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1U << 20)) != 0;
}

/// The SSE4.2 path of `crc32c_extend`: eight bytes per instruction. Keys and outputs are short,
/// so the instruction's latency, not the three-way interleaving of long-buffer code, is what
/// counts here.
__attribute__((target("sse4.2"))) inline std::uint32_t crc32c_extend_x86(std::uint32_t crc,
                                                                         const unsigned char* p,
                                                                         std::size_t n) noexcept {
  std::uint64_t c = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t word;
    std::memcpy(&word, p, 8);  // little-endian, as the reflected CRC consumes it
    c = _mm_crc32_u64(c, word);
  }
  auto c32 = static_cast<std::uint32_t>(c);
  for (; n > 0; ++p, --n) c32 = _mm_crc32_u8(c32, *p);
  return ~c32;
}
#endif

#ifdef CACHESERIALIZE_CRC32C_ARM
/// @return whether this processor has the CRC32 instructions (getauxval: HWCAP_CRC32).
inline bool crc32c_arm_supported() noexcept {
  constexpr unsigned long hwcap_crc32 = 1UL << 7;  // HWCAP_CRC32 in <asm/hwcap.h>
  return (getauxval(AT_HWCAP) & hwcap_crc32) != 0;
}

/// The ARMv8 path of `crc32c_extend`: eight bytes per instruction.
CACHESERIALIZE_CRC32C_ARM_TARGET inline std::uint32_t crc32c_extend_arm(std::uint32_t crc,
                                                                        const unsigned char* p,
                                                                        std::size_t n) noexcept {
  std::uint32_t c = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t word;
    std::memcpy(&word, p, 8);  // AArch64 Linux is little-endian
    c = __crc32cd(c, word);
  }
  for (; n > 0; ++p, --n) c = __crc32cb(c, *p);
  return ~c;
}
#endif

/// The implementations of `crc32c_extend`; tests select each in turn.
enum class Crc32cPath { portable, x86_sse42, arm_crc };

using Crc32cExtend = std::uint32_t (*)(std::uint32_t, const unsigned char*, std::size_t) noexcept;

/// @return the function of `path`, or null if this build or this processor has no such path.
inline Crc32cExtend crc32c_extend_of(Crc32cPath path) noexcept {
  switch (path) {
    case Crc32cPath::portable:
      return &crc32c_extend_portable;
    case Crc32cPath::x86_sse42:
#ifdef CACHESERIALIZE_CRC32C_X86
      if (crc32c_x86_supported()) return &crc32c_extend_x86;
#endif
      return nullptr;
    case Crc32cPath::arm_crc:
#ifdef CACHESERIALIZE_CRC32C_ARM
      if (crc32c_arm_supported()) return &crc32c_extend_arm;
#endif
      return nullptr;
  }
  return nullptr;
}

/// The function every CRC-32C uses: the fastest this processor has, chosen on first use.
/// Relaxed loads suffice: every candidate computes the same function.
inline std::atomic<Crc32cExtend>& crc32c_impl() noexcept {
  static std::atomic<Crc32cExtend> chosen{[] {
    for (Crc32cPath p : {Crc32cPath::x86_sse42, Crc32cPath::arm_crc}) {
      if (Crc32cExtend f = crc32c_extend_of(p)) return f;
    }
    return crc32c_extend_of(Crc32cPath::portable);
  }()};
  return chosen;
}

/// Makes every CRC-32C use `path` from now on (for tests and benchmarks).
/// @return false, changing nothing, if this build or processor has no such path.
inline bool crc32c_select(Crc32cPath path) noexcept {
  const Crc32cExtend f = crc32c_extend_of(path);
  if (f) crc32c_impl().store(f, std::memory_order_relaxed);
  return f != nullptr;
}

/// Continues a CRC-32C over more bytes.
/// @param crc the value returned for the bytes before `data` (0 to start).
/// @return the CRC-32C of everything so far.
inline std::uint32_t crc32c_extend(std::uint32_t crc, std::string_view data) noexcept {
  return crc32c_impl().load(std::memory_order_relaxed)(
      crc, reinterpret_cast<const unsigned char*>(data.data()), data.size());
}

/// @return the CRC-32C of `data`.
inline std::uint32_t crc32c(std::string_view data) noexcept { return crc32c_extend(0, data); }

}  // namespace detail
}  // namespace cacheserialize
