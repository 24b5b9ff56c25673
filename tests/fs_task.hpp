#pragma once

// The task that the multi-process tests and their helper executable (fs_worker) share: its name,
// its keys, and the one right output per key, so that every caller can check what it got.

#include <cacheserialize/cacheserialize.hpp>
#include <cstdint>
#include <string>

namespace fs_task {

namespace cs = cacheserialize;

inline constexpr const char* name = "fs_task";
inline constexpr const char* version = "1";

/// @return the output of key `i`: a short string, or, when `big` > 0 and i % 4 == 0, `big`
///         bytes of deterministic noise (large outputs widen the window in which a writer can
///         be killed mid-write).
inline std::string expected(std::int64_t i, std::size_t big) {
  if (big == 0 || i % 4 != 0) return "value of " + std::to_string(i);
  std::string out = "big value of " + std::to_string(i) + ":";
  std::uint64_t x = static_cast<std::uint64_t>(i) * 0x9e3779b97f4a7c15ULL + 1;
  while (out.size() < big) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out.push_back(static_cast<char>(x & 0xff));
  }
  return out;
}

/// @return the key that a `serialize_cached` wrapper of the task gives input `i`.
inline cs::Key key(std::int64_t i) {
  static const cs::KeySchema<std::string(std::int64_t)> schema(cs::TaskSignature{name, ""},
                                                               version);
  return schema.make(i);
}

}  // namespace fs_task
