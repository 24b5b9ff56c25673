# Defines the imported target cacheserialize::hiredis if hiredis is found, and nothing otherwise.
# Used by the build and, installed next to cacheserializeConfig.cmake, by consumers who ask for
# the `redis` component. It asks pkg-config for hints only: Debian 12's hiredis.pc names a libdir
# (/usr/lib) that does not hold the library, so the library itself is searched for by name.
if(NOT TARGET cacheserialize::hiredis)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(CACHESERIALIZE_HIREDIS_PC QUIET hiredis)
  endif()
  set(_cacheserialize_hiredis_include_hints)
  foreach(dir IN LISTS CACHESERIALIZE_HIREDIS_PC_INCLUDE_DIRS)
    list(APPEND _cacheserialize_hiredis_include_hints "${dir}" "${dir}/..")
  endforeach()
  find_path(CACHESERIALIZE_HIREDIS_INCLUDE_DIR hiredis/hiredis.h
    HINTS ${_cacheserialize_hiredis_include_hints})
  find_library(CACHESERIALIZE_HIREDIS_LIBRARY NAMES hiredis
    HINTS ${CACHESERIALIZE_HIREDIS_PC_LIBRARY_DIRS})
  mark_as_advanced(CACHESERIALIZE_HIREDIS_INCLUDE_DIR CACHESERIALIZE_HIREDIS_LIBRARY)
  if(CACHESERIALIZE_HIREDIS_INCLUDE_DIR AND CACHESERIALIZE_HIREDIS_LIBRARY)
    add_library(cacheserialize::hiredis UNKNOWN IMPORTED GLOBAL)
    set_target_properties(cacheserialize::hiredis PROPERTIES
      IMPORTED_LOCATION "${CACHESERIALIZE_HIREDIS_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${CACHESERIALIZE_HIREDIS_INCLUDE_DIR}")
  endif()
  unset(_cacheserialize_hiredis_include_hints)
endif()
