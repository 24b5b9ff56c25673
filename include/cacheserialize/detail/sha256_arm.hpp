#pragma once

// SHA-256 block compression with the ARMv8 cryptography extensions (SHA256H, SHA256H2,
// SHA256SU0, SHA256SU1). Compiled for them with a target attribute where the compiler's
// <arm_neon.h> allows it (gcc; any compiler building for a CPU that has them), so the library
// still builds with default flags; `sha256_arm_supported()` asks the kernel at run time
// (getauxval(AT_HWCAP) & HWCAP_SHA2).

#if defined(__aarch64__) && defined(__linux__) &&                    \
    (defined(__ARM_FEATURE_SHA2) || defined(__ARM_FEATURE_CRYPTO) || \
     (defined(__GNUC__) && !defined(__clang__)))
#define CACHESERIALIZE_SHA256_ARM 1

#include <arm_neon.h>
#include <sys/auxv.h>

#include <cstddef>
#include <cstdint>

#if defined(__ARM_FEATURE_SHA2) || defined(__ARM_FEATURE_CRYPTO)
#define CACHESERIALIZE_SHA256_ARM_TARGET
#else
#define CACHESERIALIZE_SHA256_ARM_TARGET __attribute__((target("+crypto")))
#endif

namespace cacheserialize::detail {

/// @return whether this processor has the SHA-256 instructions.
inline bool sha256_arm_supported() noexcept {
  constexpr unsigned long hwcap_sha2 = 1UL << 6;  // HWCAP_SHA2 in <asm/hwcap.h>
  return (getauxval(AT_HWCAP) & hwcap_sha2) != 0;
}

/// Compresses `blocks` 64-byte blocks of `data` into `state` (a, b, ..., h).
/// @param k the 64 round constants.
CACHESERIALIZE_SHA256_ARM_TARGET inline void sha256_blocks_arm(std::uint32_t* state,
                                                               const unsigned char* data,
                                                               std::size_t blocks,
                                                               const std::uint32_t* k) noexcept {
  uint32x4_t abcd = vld1q_u32(state);
  uint32x4_t efgh = vld1q_u32(state + 4);
  for (; blocks > 0; --blocks, data += 64) {
    const uint32x4_t abcd_in = abcd;
    const uint32x4_t efgh_in = efgh;
    uint32x4_t w[4];  // the message schedule, four words at a time: group g is in w[g % 4]
    for (int i = 0; i < 4; ++i) w[i] = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(data + 16 * i)));
#pragma GCC unroll 16
    for (int g = 0; g < 16; ++g) {
      uint32x4_t& cur = w[g % 4];
      const uint32x4_t msg = vaddq_u32(cur, vld1q_u32(k + 4 * g));
      if (g < 12) {  // group g + 4, in the place of group g, which is used up
        cur = vsha256su0q_u32(cur, w[(g + 1) % 4]);
        cur = vsha256su1q_u32(cur, w[(g + 2) % 4], w[(g + 3) % 4]);
      }
      const uint32x4_t abcd_before = abcd;
      abcd = vsha256hq_u32(abcd, efgh, msg);
      efgh = vsha256h2q_u32(efgh, abcd_before, msg);
    }
    abcd = vaddq_u32(abcd, abcd_in);
    efgh = vaddq_u32(efgh, efgh_in);
  }
  vst1q_u32(state, abcd);
  vst1q_u32(state + 4, efgh);
}

}  // namespace cacheserialize::detail

#endif
