#pragma once

// The tasks that the Redis tests and their worker processes share: same names, versions and
// signatures, hence the same keys in Redis.

#include <cacheserialize/cacheserialize.hpp>
#include <string>

namespace test {

/// The output the race task computes for key `k`: binary, so it checks the codec end to end.
inline std::string race_output(int k) {
  std::string out = "value-" + std::to_string(k) + ":";
  out.push_back('\0');
  out.push_back(static_cast<char>(0xff));
  return out;
}

inline cacheserialize::TaskOptions race_task() { return cacheserialize::TaskOptions{"race", "1"}; }

inline cacheserialize::TaskOptions hold_task() { return cacheserialize::TaskOptions{"hold", "1"}; }

}  // namespace test
