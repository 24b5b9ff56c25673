# pkg-config files for users who do not use CMake: cacheserialize.pc, and cacheserialize-redis.pc
# and cacheserialize-postgres.pc when those targets exist. The library is header-only, so the
# files are arch-independent and go to <datadir>/pkgconfig (which pkg-config searches by default,
# like <libdir>/pkgconfig), next to the arch-independent CMake package in <datadir>/cmake.
#
# Cflags carry no -std flag: the headers need C++17 or later, which GCC 11+ and Clang 16+ use
# by default; a forced -std=c++17 would silently downgrade a C++20 build (coroutine.hpp needs
# C++20) whenever it came after the user's own flag.

set(CACHESERIALIZE_PKGCONFIG_DIR "${CMAKE_INSTALL_DATADIR}/pkgconfig"
  CACHE STRING "Where to install the pkg-config files, relative to the prefix")

# ${pcfiledir}-relative paths keep an installed tree relocatable (cmake --install --prefix, a
# copied prefix); absolute install directories are used as they are.
if(IS_ABSOLUTE "${CACHESERIALIZE_PKGCONFIG_DIR}")
  set(CACHESERIALIZE_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _cacheserialize_up "/prefix/${CACHESERIALIZE_PKGCONFIG_DIR}" "/prefix")
  string(REGEX REPLACE "/$" "" _cacheserialize_up "${_cacheserialize_up}")
  set(CACHESERIALIZE_PC_PREFIX "\${pcfiledir}/${_cacheserialize_up}")
  unset(_cacheserialize_up)
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(CACHESERIALIZE_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(CACHESERIALIZE_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()

set(_cacheserialize_pcs cacheserialize)
if(TARGET cacheserialize::redis)
  list(APPEND _cacheserialize_pcs cacheserialize-redis)
endif()
if(TARGET cacheserialize::postgres)
  list(APPEND _cacheserialize_pcs cacheserialize-postgres)
endif()
foreach(_cacheserialize_pc IN LISTS _cacheserialize_pcs)
  configure_file(${CMAKE_CURRENT_LIST_DIR}/${_cacheserialize_pc}.pc.in
    ${CMAKE_CURRENT_BINARY_DIR}/${_cacheserialize_pc}.pc @ONLY)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/${_cacheserialize_pc}.pc
    DESTINATION ${CACHESERIALIZE_PKGCONFIG_DIR})
endforeach()
unset(_cacheserialize_pc)
unset(_cacheserialize_pcs)
