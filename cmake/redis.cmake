# The optional Redis storage: an INTERFACE target cacheserialize::redis (the header
# storage/redis.hpp plus hiredis), defined, installed and exported only when hiredis is found.
# CACHESERIALIZE_REDIS: AUTO (default: build it if hiredis is found), ON (hiredis is required),
# OFF. With the environment variable CACHESERIALIZE_REQUIRE_SERVERS=1 (CI), AUTO acts as ON, so
# that a missing hiredis cannot silently drop the Redis tests.

set(CACHESERIALIZE_REDIS "AUTO" CACHE STRING "Build the Redis storage (needs hiredis): AUTO, ON or OFF")
set_property(CACHE CACHESERIALIZE_REDIS PROPERTY STRINGS AUTO ON OFF)

set(_cacheserialize_redis_required OFF)
if(CACHESERIALIZE_REDIS STREQUAL "ON" OR
   (CACHESERIALIZE_REDIS STREQUAL "AUTO" AND "$ENV{CACHESERIALIZE_REQUIRE_SERVERS}" STREQUAL "1"))
  set(_cacheserialize_redis_required ON)
endif()

if(NOT CACHESERIALIZE_REDIS STREQUAL "OFF")
  include(${CMAKE_CURRENT_LIST_DIR}/cacheserializeHiredis.cmake)
  if(TARGET cacheserialize::hiredis)
    message(STATUS "cacheserialize: hiredis found (${CACHESERIALIZE_HIREDIS_LIBRARY}): building cacheserialize::redis")
    add_library(cacheserialize_redis INTERFACE)
    add_library(cacheserialize::redis ALIAS cacheserialize_redis)
    set_target_properties(cacheserialize_redis PROPERTIES EXPORT_NAME redis)
    target_link_libraries(cacheserialize_redis INTERFACE cacheserialize cacheserialize::hiredis)
    if(CACHESERIALIZE_INSTALL)
      install(TARGETS cacheserialize_redis EXPORT cacheserializeRedisTargets)
      install(EXPORT cacheserializeRedisTargets
        NAMESPACE cacheserialize::
        DESTINATION ${CACHESERIALIZE_CMAKE_DIR})
      install(FILES ${CMAKE_CURRENT_LIST_DIR}/cacheserializeHiredis.cmake
        DESTINATION ${CACHESERIALIZE_CMAKE_DIR})
    endif()
  elseif(_cacheserialize_redis_required)
    message(FATAL_ERROR "cacheserialize: hiredis was not found, and the Redis storage is required "
      "(CACHESERIALIZE_REDIS=ON or CACHESERIALIZE_REQUIRE_SERVERS=1): apt-get install libhiredis-dev")
  else()
    message(STATUS "cacheserialize: hiredis not found: cacheserialize::redis is not built")
  endif()
endif()
unset(_cacheserialize_redis_required)
