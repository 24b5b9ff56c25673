#pragma once

/// @file version.hpp
/// The library version, as macros for the preprocessor and constants for code.

/// The major version: `find_package(cacheserialize X.Y)` accepts only major X (SameMajorVersion).
#define CACHESERIALIZE_VERSION_MAJOR 0
/// The minor version.
#define CACHESERIALIZE_VERSION_MINOR 1
/// The patch version.
#define CACHESERIALIZE_VERSION_PATCH 0

namespace cacheserialize {

/// `CACHESERIALIZE_VERSION_MAJOR`, for code.
inline constexpr int version_major = CACHESERIALIZE_VERSION_MAJOR;
/// `CACHESERIALIZE_VERSION_MINOR`, for code.
inline constexpr int version_minor = CACHESERIALIZE_VERSION_MINOR;
/// `CACHESERIALIZE_VERSION_PATCH`, for code.
inline constexpr int version_patch = CACHESERIALIZE_VERSION_PATCH;

}  // namespace cacheserialize
