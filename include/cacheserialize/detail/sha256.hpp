#pragma once

/// @file detail/sha256.hpp
/// SHA-256 (FIPS 180-4), used to turn a cache key's canonical bytes into a digest that storages
/// can use as a file name, a database key or a lock name. The library must stay free of
/// dependencies, so it carries its own implementation. It works on bytes only (never reinterprets
/// memory), so a digest is the same on every platform and byte order.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace cacheserialize::detail {

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
      while (n > 0 && buffered_ < block_size) {
        buffer_[buffered_++] = *p++;
        --n;
      }
      if (buffered_ < block_size) return;
      compress(buffer_.data());
      buffered_ = 0;
    }
    while (n >= block_size) {
      compress(p);
      p += block_size;
      n -= block_size;
    }
    while (n > 0) {
      buffer_[buffered_++] = *p++;
      --n;
    }
  }

  /// Pads the message and returns its digest. The object must not be used afterwards.
  Digest finish() noexcept {
    const std::uint64_t bit_length = total_bytes_ * 8U;
    buffer_[buffered_++] = 0x80;
    if (buffered_ > block_size - 8) {  // no room for the length: pad out this block
      while (buffered_ < block_size) buffer_[buffered_++] = 0;
      compress(buffer_.data());
      buffered_ = 0;
    }
    while (buffered_ < block_size - 8) buffer_[buffered_++] = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
      buffer_[buffered_++] = static_cast<unsigned char>(bit_length >> shift);
    }
    compress(buffer_.data());

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

  static constexpr std::uint32_t rotr(std::uint32_t x, unsigned n) noexcept {
    return (x >> n) | (x << (32U - n));
  }

  void compress(const unsigned char* block) noexcept {
    // FIPS 180-4 section 4.2.2: the first 32 bits of the fractional parts of the cube roots of
    // the first 64 primes.
    static constexpr std::array<std::uint32_t, 64> k = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};

    std::array<std::uint32_t, 64> w{};
    for (std::size_t t = 0; t < 16; ++t) {
      w[t] = (static_cast<std::uint32_t>(block[4 * t]) << 24) |
             (static_cast<std::uint32_t>(block[4 * t + 1]) << 16) |
             (static_cast<std::uint32_t>(block[4 * t + 2]) << 8) |
             static_cast<std::uint32_t>(block[4 * t + 3]);
    }
    for (std::size_t t = 16; t < 64; ++t) {
      const std::uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
      const std::uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }

    std::uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
    std::uint32_t e = state_[4], f = state_[5], g = state_[6], h = state_[7];
    for (std::size_t t = 0; t < 64; ++t) {
      const std::uint32_t big_s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      const std::uint32_t ch = (e & f) ^ (~e & g);
      const std::uint32_t t1 = h + big_s1 + ch + k[t] + w[t];
      const std::uint32_t big_s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      const std::uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
      const std::uint32_t t2 = big_s0 + maj;
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    state_[0] += a;
    state_[1] += b;
    state_[2] += c;
    state_[3] += d;
    state_[4] += e;
    state_[5] += f;
    state_[6] += g;
    state_[7] += h;
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
