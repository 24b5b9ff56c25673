# The API reference: `cmake --build build --target docs` runs Doxygen over the public headers
# (not detail/) into build/docs/html. Defined only when Doxygen is found. Every public entity
# must be documented: an undocumented one is a warning, and any warning fails the target (CI
# builds it), so the reference cannot silently fall behind the headers.

find_package(Doxygen)
if(DOXYGEN_FOUND)
  set(DOXYGEN_PROJECT_NAME "cacheserialize")
  set(DOXYGEN_PROJECT_NUMBER "${PROJECT_VERSION}")
  set(DOXYGEN_PROJECT_BRIEF "${PROJECT_DESCRIPTION}")
  set(DOXYGEN_OUTPUT_DIRECTORY "${CMAKE_CURRENT_BINARY_DIR}/docs")
  set(DOXYGEN_RECURSIVE YES)
  set(DOXYGEN_EXCLUDE_PATTERNS "*/detail/*")
  # detail's namespace in public headers; a helper macro #undef'd after use; and the members of
  # a private nested struct, which Doxygen 1.9.4 lists although the struct itself is private.
  set(DOXYGEN_EXCLUDE_SYMBOLS "cacheserialize::detail" "cacheserialize::detail::*"
    "CACHESERIALIZE_DETECT" "cacheserialize::InMemoryStorage::Aftermath*")
  set(DOXYGEN_FULL_PATH_NAMES YES)
  set(DOXYGEN_STRIP_FROM_PATH "${PROJECT_SOURCE_DIR}/include")
  set(DOXYGEN_STRIP_FROM_INC_PATH "${PROJECT_SOURCE_DIR}/include")
  set(DOXYGEN_EXTRACT_ALL NO)
  set(DOXYGEN_EXTRACT_PRIVATE NO)
  set(DOXYGEN_EXTRACT_STATIC YES)
  set(DOXYGEN_QUIET YES)
  set(DOXYGEN_WARNINGS YES)
  set(DOXYGEN_WARN_IF_UNDOCUMENTED YES)
  set(DOXYGEN_WARN_IF_DOC_ERROR YES)
  set(DOXYGEN_WARN_AS_ERROR FAIL_ON_WARNINGS)  # Doxygen 1.9.0 or later (Debian 12: 1.9.4)
  set(DOXYGEN_GENERATE_HTML YES)
  set(DOXYGEN_GENERATE_LATEX NO)
  set(DOXYGEN_HAVE_DOT NO)
  set(DOXYGEN_ENABLE_PREPROCESSING YES)
  set(DOXYGEN_MACRO_EXPANSION YES)
  # Document the C++20 parts (coroutine.hpp) as a C++20 compiler sees them.
  set(DOXYGEN_PREDEFINED "__cplusplus=202002L")
  doxygen_add_docs(docs "${PROJECT_SOURCE_DIR}/include/cacheserialize"
    COMMENT "API reference (Doxygen) in ${CMAKE_CURRENT_BINARY_DIR}/docs/html")
endif()
