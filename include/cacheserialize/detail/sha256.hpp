#pragma once

/// @file detail/sha256.hpp
/// SHA-256 (FIPS 180-4), used to turn a cache key's canonical bytes into a digest that storages
/// can use as a file name, a database key or a lock name. The library must stay free of
/// dependencies, so it carries its own implementation: portable C++ that works on bytes only (a
/// digest is the same on every platform and byte order), and the processor's SHA instructions
/// where it has them (x86 SHA extensions, ARMv8 cryptography extensions), chosen at run time.

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "sha256_arm.hpp"
#include "sha256_x86.hpp"

namespace cacheserialize::detail {

/// FIPS 180-4 section 4.2.2: the first 32 bits of the fractional parts of the cube roots of the
/// first 64 primes.
alignas(64) inline constexpr std::uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

constexpr std::uint32_t sha256_rotr(std::uint32_t x, unsigned n) noexcept {
  return (x >> n) | (x << (32U - n));
}

/// Compresses `blocks` 64-byte blocks of `data` into `state` (a, b, ..., h), in portable C++:
/// bytes read one at a time (any alignment, any byte order), a 16-word rolling message schedule.
inline void sha256_blocks_portable(std::uint32_t* state, const unsigned char* data,
                                   std::size_t blocks, const std::uint32_t* k) noexcept {
  for (; blocks > 0; --blocks, data += 64) {
    std::uint32_t w[16];
    for (std::size_t t = 0; t < 16; ++t) {
      const unsigned char* q = data + 4 * t;
      w[t] = (static_cast<std::uint32_t>(q[0]) << 24) | (static_cast<std::uint32_t>(q[1]) << 16) |
             (static_cast<std::uint32_t>(q[2]) << 8) | static_cast<std::uint32_t>(q[3]);
    }
    std::uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    std::uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (std::size_t t = 0; t < 64; ++t) {
      if (t >= 16) {  // w[t mod 16] becomes word t of the schedule
        const std::uint32_t w15 = w[(t + 1) & 15];
        const std::uint32_t w2 = w[(t + 14) & 15];
        const std::uint32_t s0 = sha256_rotr(w15, 7) ^ sha256_rotr(w15, 18) ^ (w15 >> 3);
        const std::uint32_t s1 = sha256_rotr(w2, 17) ^ sha256_rotr(w2, 19) ^ (w2 >> 10);
        w[t & 15] += s0 + w[(t + 9) & 15] + s1;
      }
      const std::uint32_t t1 = h + (sha256_rotr(e, 6) ^ sha256_rotr(e, 11) ^ sha256_rotr(e, 25)) +
                               ((e & f) ^ (~e & g)) + k[t] + w[t & 15];
      const std::uint32_t t2 = (sha256_rotr(a, 2) ^ sha256_rotr(a, 13) ^ sha256_rotr(a, 22)) +
                               ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
  }
}

/// The ways this build can compress blocks. All give the same digests.
enum class Sha256Path {
  portable,  ///< portable C++
  x86_sha,   ///< the x86 SHA extensions
  arm_sha,   ///< the ARMv8 cryptography extensions
};

using Sha256Blocks = void (*)(std::uint32_t*, const unsigned char*, std::size_t,
                              const std::uint32_t*) noexcept;

/// @return the compression function of `path`, or null if this build or this processor has no
///         such path.
inline Sha256Blocks sha256_blocks_of(Sha256Path path) noexcept {
  switch (path) {
    case Sha256Path::portable:
      return &sha256_blocks_portable;
    case Sha256Path::x86_sha:
#ifdef CACHESERIALIZE_SHA256_X86
      if (sha256_x86_supported()) return &sha256_blocks_x86;
#endif
      return nullptr;
    case Sha256Path::arm_sha:
#ifdef CACHESERIALIZE_SHA256_ARM
      if (sha256_arm_supported()) return &sha256_blocks_arm;
#endif
      return nullptr;
  }
  return nullptr;
}

/// The compression function every `Sha256` uses: the fastest this processor has, chosen on
/// first use. Tests switch it with `sha256_select` to check every path against the others.
inline std::atomic<Sha256Blocks>& sha256_blocks() noexcept {
  static std::atomic<Sha256Blocks> chosen{[] {
    for (Sha256Path p : {Sha256Path::x86_sha, Sha256Path::arm_sha}) {
      if (Sha256Blocks f = sha256_blocks_of(p)) return f;
    }
    return sha256_blocks_of(Sha256Path::portable);
  }()};
  return chosen;
}

/// Makes every `Sha256` use `path` from now on (for tests and benchmarks).
/// @return false, changing nothing, if this build or processor has no such path.
inline bool sha256_select(Sha256Path path) noexcept {
  const Sha256Blocks f = sha256_blocks_of(path);
  if (f) sha256_blocks().store(f, std::memory_order_relaxed);
  return f != nullptr;
}

/// Incremental SHA-256: feed bytes with `update()` in as many pieces as convenient, then call
/// `finish()` once.
class Sha256 {
 public:
  using Digest = std::array<std::uint8_t, 32>;

  Sha256() noexcept = default;

  /// Appends `bytes` to the message.
  void update(std::string_view bytes) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    std::size_t n = bytes.size();
    total_bytes_ += n;
    if (buffered_ > 0) {
      const std::size_t take = std::min(n, block_size - buffered_);
      std::memcpy(buffer_.data() + buffered_, p, take);
      buffered_ += take;
      p += take;
      n -= take;
      if (buffered_ < block_size) return;
      compress(buffer_.data(), 1);
      buffered_ = 0;
    }
    if (n >= block_size) {
      compress(p, n / block_size);
      p += n - n % block_size;
      n %= block_size;
    }
    if (n > 0) {
      std::memcpy(buffer_.data(), p, n);
      buffered_ = n;
    }
  }

  /// Pads the message and returns its digest. The object must not be used afterwards.
  Digest finish() noexcept {
    const std::uint64_t bit_length = total_bytes_ * 8U;
    buffer_[buffered_++] = 0x80;
    if (buffered_ > block_size - 8) {  // no room for the length: pad out this block
      while (buffered_ < block_size) buffer_[buffered_++] = 0;
      compress(buffer_.data(), 1);
      buffered_ = 0;
    }
    while (buffered_ < block_size - 8) buffer_[buffered_++] = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
      buffer_[buffered_++] = static_cast<unsigned char>(bit_length >> shift);
    }
    compress(buffer_.data(), 1);
    Digest out{};
    for (std::size_t i = 0; i < 8; ++i) {
      out[4 * i + 0] = static_cast<std::uint8_t>(state_[i] >> 24);
      out[4 * i + 1] = static_cast<std::uint8_t>(state_[i] >> 16);
      out[4 * i + 2] = static_cast<std::uint8_t>(state_[i] >> 8);
      out[4 * i + 3] = static_cast<std::uint8_t>(state_[i]);
    }
    return out;
  }

 private:
  static constexpr std::size_t block_size = 64;

  void compress(const unsigned char* blocks, std::size_t count) noexcept {
    sha256_blocks().load(std::memory_order_relaxed)(state_.data(), blocks, count, sha256_k);
  }

  // FIPS 180-4 section 5.3.3: the first 32 bits of the fractional parts of the square roots of
  // the first 8 primes.
  std::array<std::uint32_t, 8> state_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<unsigned char, block_size> buffer_{};
  std::size_t buffered_ = 0;
  std::uint64_t total_bytes_ = 0;
};

/// @return the SHA-256 digest of `bytes`.
inline std::array<std::uint8_t, 32> sha256(std::string_view bytes) noexcept {
  Sha256 h;
  h.update(bytes);
  return h.finish();
}

/// @return `bytes` as lowercase hexadecimal, two characters per byte.
inline std::string to_hex(const std::uint8_t* bytes, std::size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (std::size_t i = 0; i < size; ++i) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 0x0f];
  }
  return out;
}

/// @return the SHA-256 digest of `bytes` as 64 lowercase hexadecimal characters.
inline std::string sha256_hex(std::string_view bytes) {
  const auto digest = sha256(bytes);
  return to_hex(digest.data(), digest.size());
}

}  // namespace cacheserialize::detail
