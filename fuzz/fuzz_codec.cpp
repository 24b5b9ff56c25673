// libFuzzer target: the codec's decoders (decode_value<T> for sixteen types, built-in and user,
// flat and nested). Input: one byte choosing the type, then the bytes to decode. Outputs come
// from shared directories and databases, so every input must either decode or be rejected with
// a codec_error: never crash, hang, allocate without bound or read out of bounds.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_types.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  fuzz::decode_one_of(data[0], std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  return 0;
}
