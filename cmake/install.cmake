# Install rules: headers, the exported target and a package config with a version file, so that
# find_package(cacheserialize) works from the install prefix.

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(CACHESERIALIZE_CMAKE_DIR "${CMAKE_INSTALL_DATADIR}/cmake/cacheserialize"
  CACHE STRING "Where to install cacheserializeConfig.cmake, relative to the prefix")

install(TARGETS cacheserialize EXPORT cacheserializeTargets)
install(DIRECTORY include/cacheserialize DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

install(EXPORT cacheserializeTargets
  NAMESPACE cacheserialize::
  DESTINATION ${CACHESERIALIZE_CMAKE_DIR})

configure_package_config_file(
  cmake/cacheserializeConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/cacheserializeConfig.cmake
  INSTALL_DESTINATION ${CACHESERIALIZE_CMAKE_DIR})
write_basic_package_version_file(
  ${CMAKE_CURRENT_BINARY_DIR}/cacheserializeConfigVersion.cmake
  COMPATIBILITY SameMajorVersion
  ARCH_INDEPENDENT)

install(FILES
  ${CMAKE_CURRENT_BINARY_DIR}/cacheserializeConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/cacheserializeConfigVersion.cmake
  DESTINATION ${CACHESERIALIZE_CMAKE_DIR})
