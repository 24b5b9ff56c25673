#pragma once

/// @file version.hpp
/// The library version, as macros for the preprocessor and constants for code.

#define CACHESERIALIZE_VERSION_MAJOR 0
#define CACHESERIALIZE_VERSION_MINOR 1
#define CACHESERIALIZE_VERSION_PATCH 0

namespace cacheserialize {

inline constexpr int version_major = CACHESERIALIZE_VERSION_MAJOR;
inline constexpr int version_minor = CACHESERIALIZE_VERSION_MINOR;
inline constexpr int version_patch = CACHESERIALIZE_VERSION_PATCH;

}  // namespace cacheserialize
