// SHA-256: the FIPS vectors and the padding boundaries, on every compression path this build
// and processor have (portable C++, x86 SHA extensions, ARMv8 cryptography extensions), and each
// accelerated path against the portable one on random messages.

#include <cacheserialize/detail/sha256.hpp>
#include <catch2/catch.hpp>
#include <cstddef>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "accelerated_path.hpp"

namespace csd = cacheserialize::detail;

namespace {

std::string hex_of(csd::Sha256& h) {
  const auto d = h.finish();
  return csd::to_hex(d.data(), d.size());
}

// The test data for the padding boundaries: byte i is (7 * i + 3) mod 256.
std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>(static_cast<unsigned char>(7 * i + 3));
  return s;
}

// Every Sha256 uses `path` while this lives.
struct OnPath : test::OnPath<csd::Sha256Blocks, csd::Sha256Path> {
  explicit OnPath(csd::Sha256Path path)
      : test::OnPath<csd::Sha256Blocks, csd::Sha256Path>(csd::sha256_blocks(), csd::sha256_select,
                                                         path) {}
};

const char* name_of(csd::Sha256Path path) {
  switch (path) {
    case csd::Sha256Path::portable:
      return "portable";
    case csd::Sha256Path::x86_sha:
      return "x86 SHA extensions";
    case csd::Sha256Path::arm_sha:
      return "ARMv8 cryptography extensions";
  }
  return "?";
}

// Runs the test case once per path; on a path this machine lacks, it passes without checking.
#define ON_EVERY_PATH()                                                                        \
  const csd::Sha256Path path =                                                                 \
      GENERATE(csd::Sha256Path::portable, csd::Sha256Path::x86_sha, csd::Sha256Path::arm_sha); \
  OnPath on_path(path);                                                                        \
  INFO("compression path: " << name_of(path));                                                 \
  if (!on_path.available()) return

}  // namespace

TEST_CASE("sha256 matches the FIPS 180-4 example vectors") {
  ON_EVERY_PATH();
  CHECK(csd::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(csd::sha256_hex("abc") ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(csd::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(csd::sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjk"
                        "lmnopqklmnopqrlmnopqrsmnopqrstnopqrstu") ==
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

TEST_CASE("sha256 of one million 'a' fed in pieces matches the FIPS vector") {
  ON_EVERY_PATH();
  csd::Sha256 h;
  const std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i) h.update(chunk);
  CHECK(hex_of(h) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("sha256 is right for messages around the 55, 56 and 64 byte padding boundaries") {
  ON_EVERY_PATH();
  // Expected values computed with Python's hashlib and checked with sha256sum.
  const std::vector<std::pair<std::size_t, const char*>> vectors = {
      {55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"},
      {56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"},
      {57, "35df609437dcfea3279283ab79fd554e2bf78f8f7ae2de532d8ee300b09e8f73"},
      {63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"},
      {64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"},
      {65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"},
      {119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"},
      {120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5"},
      {127, "a8d23e75d936f303d248888d9b165ee543f4cbafcad3c9dd2a79bd84faa11d07"},
      {128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6"},
  };
  for (const auto& [size, expected] : vectors) {
    CAPTURE(size);
    const std::string data = pattern(size);
    CHECK(csd::sha256_hex(data) == expected);

    // The same message split at every position gives the same digest.
    for (std::size_t split = 0; split <= size; ++split) {
      CAPTURE(split);
      csd::Sha256 h;
      h.update(std::string_view(data).substr(0, split));
      h.update(std::string_view(data).substr(split));
      REQUIRE(hex_of(h) == expected);
    }
    // And so does feeding it one byte at a time.
    csd::Sha256 bytewise;
    for (char c : data) bytewise.update(std::string_view(&c, 1));
    CHECK(hex_of(bytewise) == expected);
  }
}

TEST_CASE("sha256 returns the raw digest bytes behind the hex form") {
  const auto d = csd::sha256("abc");
  CHECK(d[0] == 0xba);
  CHECK(d[1] == 0x78);
  CHECK(d[31] == 0xad);
  CHECK(csd::sha256_hex("abc").size() == 64);
}

TEST_CASE("every accelerated path gives the portable digest of random messages, however fed") {
  const csd::Sha256Path path = GENERATE(csd::Sha256Path::x86_sha, csd::Sha256Path::arm_sha);
  INFO("compression path: " << name_of(path));
  if (!csd::sha256_blocks_of(path)) return;  // not on this machine
  std::mt19937_64 random(20261203);
  for (int i = 0; i < 2000; ++i) {
    // Mostly short keys, some of several blocks, a few of 64 KiB and more.
    const std::size_t size =
        i % 100 == 0 ? 65536 + random() % 4096 : random() % (i % 2 ? 200 : 1500);
    std::string message(size, '\0');
    for (char& c : message) c = static_cast<char>(random());
    std::string expected;
    {
      OnPath portable(csd::Sha256Path::portable);
      expected = csd::sha256_hex(message);
    }
    OnPath accelerated(path);
    REQUIRE(accelerated.available());
    CAPTURE(size);
    REQUIRE(csd::sha256_hex(message) == expected);
    csd::Sha256 pieces;  // split at random places: the buffered and the direct blocks mix
    for (std::size_t at = 0; at < size;) {
      const std::size_t n = std::min<std::size_t>(size - at, random() % 200);
      pieces.update(std::string_view(message).substr(at, n));
      at += n;
    }
    REQUIRE(hex_of(pieces) == expected);
  }
}

TEST_CASE("the fastest path this processor has is the one chosen") {
  const csd::Sha256Blocks chosen = csd::sha256_blocks().load();
  if (const csd::Sha256Blocks x86 = csd::sha256_blocks_of(csd::Sha256Path::x86_sha)) {
    CHECK(chosen == x86);
  } else if (const csd::Sha256Blocks arm = csd::sha256_blocks_of(csd::Sha256Path::arm_sha)) {
    CHECK(chosen == arm);
  } else {
    CHECK(chosen == csd::sha256_blocks_of(csd::Sha256Path::portable));
  }
}
