#pragma once

// SHA-256 block compression with the x86 SHA extensions (SHA-NI: Intel since Goldmont and Ice
// Lake, AMD since Zen). The functions are compiled for that instruction set with a target
// attribute, so the library still builds with default flags; `sha256_x86_supported()` tells at
// run time whether the processor has it (CPUID leaf 7: SHA; leaf 1: SSSE3 and SSE4.1).

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CACHESERIALIZE_SHA256_X86 1

#include <cpuid.h>
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace cacheserialize::detail {

/// @return whether this processor has the SHA extensions and the SSE levels the code uses.
inline bool sha256_x86_supported() noexcept {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool ssse3 = (c & (1U << 9)) != 0;
  const bool sse41 = (c & (1U << 19)) != 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool sha = (b & (1U << 29)) != 0;
  return ssse3 && sse41 && sha;
}

/// Compresses `blocks` 64-byte blocks of `data` into `state` (a, b, ..., h).
/// @param k the 64 round constants.
__attribute__((target("sha,sse4.1,ssse3"))) inline void sha256_blocks_x86(
    std::uint32_t* state, const unsigned char* data, std::size_t blocks,
    const std::uint32_t* k) noexcept {
  // The instructions keep the state as two registers, ABEF and CDGH (a in the top lane).
  const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i dcba = _mm_loadu_si128(reinterpret_cast<const __m128i*>(state));
  __m128i hgfe = _mm_loadu_si128(reinterpret_cast<const __m128i*>(state + 4));
  __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
  __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
  __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
  __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);

  for (; blocks > 0; --blocks, data += 64) {
    const __m128i abef_in = abef;
    const __m128i cdgh_in = cdgh;
    __m128i w[4];  // the message schedule, four words at a time: group g is in w[g % 4]
    // Unrolled, the schedule lives in registers and the branches vanish (1.32x OpenSSL's time
    // at 64 KiB rolled up, with w spilled to memory).
#pragma GCC unroll 16
    for (int g = 0; g < 16; ++g) {
      __m128i& cur = w[g % 4];
      if (g < 4) {
        cur = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(data + 16 * g)),
                               byte_swap);
      }
      __m128i msg =
          _mm_add_epi32(cur, _mm_loadu_si128(reinterpret_cast<const __m128i*>(k + 4 * g)));
      cdgh = _mm_sha256rnds2_epu32(cdgh, abef, msg);
      if (g >= 3 && g <= 14) {  // words 4(g+1) .. 4(g+1)+3
        __m128i& next = w[(g + 1) % 4];
        next = _mm_add_epi32(next, _mm_alignr_epi8(cur, w[(g + 3) % 4], 4));
        next = _mm_sha256msg2_epu32(next, cur);
      }
      msg = _mm_shuffle_epi32(msg, 0x0E);
      abef = _mm_sha256rnds2_epu32(abef, cdgh, msg);
      if (g >= 1 && g <= 12) {
        __m128i& prev = w[(g + 3) % 4];
        prev = _mm_sha256msg1_epu32(prev, cur);
      }
    }
    abef = _mm_add_epi32(abef, abef_in);
    cdgh = _mm_add_epi32(cdgh, cdgh_in);
  }

  const __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
  const __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
  dcba = _mm_blend_epi16(feba, dchg, 0xF0);
  hgfe = _mm_alignr_epi8(dchg, feba, 8);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(state), dcba);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(state + 4), hgfe);
}

}  // namespace cacheserialize::detail

#endif
