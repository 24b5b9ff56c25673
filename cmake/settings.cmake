# Compiler settings for the project's own tests, examples and benchmarks. They live in an
# INTERFACE target that only those link, so consumers of cacheserialize never inherit them.

add_library(cacheserialize_settings INTERFACE)
add_library(cacheserialize::settings ALIAS cacheserialize_settings)

if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(cacheserialize_settings INTERFACE
    -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wold-style-cast
    -Wnon-virtual-dtor -Woverloaded-virtual -Wnull-dereference)
  if(CACHESERIALIZE_WERROR)
    target_compile_options(cacheserialize_settings INTERFACE -Werror)
  endif()
  if(CACHESERIALIZE_SANITIZE)
    target_compile_options(cacheserialize_settings INTERFACE
      -fsanitize=${CACHESERIALIZE_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all -g)
    target_link_options(cacheserialize_settings INTERFACE -fsanitize=${CACHESERIALIZE_SANITIZE})
  endif()
elseif(MSVC)
  target_compile_options(cacheserialize_settings INTERFACE /W4 /permissive-)
  if(CACHESERIALIZE_WERROR)
    target_compile_options(cacheserialize_settings INTERFACE /WX)
  endif()
endif()
