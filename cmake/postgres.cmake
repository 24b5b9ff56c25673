# The optional PostgreSQL storage: an INTERFACE target cacheserialize::postgres (the header
# storage/postgres.hpp plus libpq), defined, installed and exported only when libpq is found.
# CACHESERIALIZE_POSTGRES: AUTO (default: build it if libpq is found), ON (libpq is required),
# OFF. With the environment variable CACHESERIALIZE_REQUIRE_SERVERS=1 (CI), AUTO acts as ON, so
# that a missing libpq cannot silently drop the PostgreSQL tests.

set(CACHESERIALIZE_POSTGRES "AUTO" CACHE STRING
  "Build the PostgreSQL storage (needs libpq): AUTO, ON or OFF")
set_property(CACHE CACHESERIALIZE_POSTGRES PROPERTY STRINGS AUTO ON OFF)

set(_cacheserialize_postgres_required OFF)
if(CACHESERIALIZE_POSTGRES STREQUAL "ON" OR
   (CACHESERIALIZE_POSTGRES STREQUAL "AUTO" AND "$ENV{CACHESERIALIZE_REQUIRE_SERVERS}" STREQUAL "1"))
  set(_cacheserialize_postgres_required ON)
endif()

if(NOT CACHESERIALIZE_POSTGRES STREQUAL "OFF")
  find_package(PostgreSQL QUIET)
  if(PostgreSQL_FOUND)
    message(STATUS "cacheserialize: libpq found (${PostgreSQL_LIBRARIES}): building cacheserialize::postgres")
    add_library(cacheserialize_postgres INTERFACE)
    add_library(cacheserialize::postgres ALIAS cacheserialize_postgres)
    set_target_properties(cacheserialize_postgres PROPERTIES EXPORT_NAME postgres)
    target_link_libraries(cacheserialize_postgres INTERFACE cacheserialize PostgreSQL::PostgreSQL)
    if(CACHESERIALIZE_INSTALL)
      # An export set of its own: only consumers that ask for the `postgres` component load it.
      install(TARGETS cacheserialize_postgres EXPORT cacheserializePostgresTargets)
      install(EXPORT cacheserializePostgresTargets
        NAMESPACE cacheserialize::
        DESTINATION ${CACHESERIALIZE_CMAKE_DIR})
    endif()
  elseif(_cacheserialize_postgres_required)
    message(FATAL_ERROR "cacheserialize: libpq was not found, and the PostgreSQL storage is "
      "required (CACHESERIALIZE_POSTGRES=ON or CACHESERIALIZE_REQUIRE_SERVERS=1): "
      "apt-get install libpq-dev")
  else()
    message(STATUS "cacheserialize: libpq not found: cacheserialize::postgres is not built")
  endif()
endif()
unset(_cacheserialize_postgres_required)
