#include <cacheserialize/detail/sha256.hpp>
#include <catch2/catch.hpp>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

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

}  // namespace

TEST_CASE("sha256 matches the FIPS 180-4 example vectors") {
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
  csd::Sha256 h;
  const std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i) h.update(chunk);
  CHECK(hex_of(h) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("sha256 is right for messages around the 55, 56 and 64 byte padding boundaries") {
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
