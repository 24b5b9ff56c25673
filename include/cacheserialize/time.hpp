#pragma once

/// @file time.hpp
/// The library's time types. Reservations are compared across processes and machines, so time
/// points are wall-clock (`std::chrono::system_clock`) instants with a fixed nanosecond unit on
/// every platform; storages persist them as signed 64-bit nanoseconds since the Unix epoch.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>

namespace cacheserialize {

/// A span of time, in nanoseconds.
using Duration = std::chrono::nanoseconds;
/// A wall-clock instant, in nanoseconds since the Unix epoch.
using TimePoint = std::chrono::time_point<std::chrono::system_clock, Duration>;

/// @return `t` as nanoseconds since the Unix epoch, the form storages persist.
constexpr std::int64_t to_unix_nanos(TimePoint t) noexcept { return t.time_since_epoch().count(); }

/// @return the instant `nanos` nanoseconds after the Unix epoch.
constexpr TimePoint from_unix_nanos(std::int64_t nanos) noexcept {
  return TimePoint(Duration(nanos));
}

/// @return `t` as ISO-8601 UTC with microseconds ("2026-11-25T15:09:25.123456Z"), for messages.
inline std::string format_time(TimePoint t) {
  if (t == TimePoint::max()) return "never";
  const auto secs = std::chrono::floor<std::chrono::seconds>(t);
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(t - secs).count();
  const std::time_t tt = static_cast<std::time_t>(secs.time_since_epoch().count());
  std::tm tm{};
#if defined(_WIN32)
  gmtime_s(&tm, &tt);
#else
  gmtime_r(&tt, &tm);
#endif
  char buf[48];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out(buf, n);
  char frac[32];  // micros is 0..999999, but gcc -O2 -Wformat-truncation cannot tell
  std::snprintf(frac, sizeof frac, ".%06lldZ", static_cast<long long>(micros));
  return out + frac;
}

/// @return `d` in a short human form ("250ms", "30s", "1.5s"), for messages.
inline std::string format_duration(Duration d) {
  const auto ns = d.count();
  char buf[48];
  if (ns % 1000000000 == 0) {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(ns / 1000000000));
  } else if (ns % 1000000 == 0) {
    std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(ns / 1000000));
  } else if (ns % 1000 == 0) {
    std::snprintf(buf, sizeof buf, "%lldus", static_cast<long long>(ns / 1000));
  } else {
    std::snprintf(buf, sizeof buf, "%lldns", static_cast<long long>(ns));
  }
  return buf;
}

}  // namespace cacheserialize
