# Runs the compiler on one case of unsupported_type.cpp and checks the outcome.
# Variables: COMPILER, SOURCE, INCLUDE, CASE, EXPECT ("ok" or a regular expression that the
# diagnostics must match), and optionally EXPECT_TYPE (a regular expression naming the type).

execute_process(
  COMMAND "${COMPILER}" -std=c++17 -fsyntax-only "-I${INCLUDE}" "-DCASE=${CASE}" "${SOURCE}"
  RESULT_VARIABLE result
  OUTPUT_VARIABLE output
  ERROR_VARIABLE output)

if(EXPECT STREQUAL "ok")
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "case ${CASE} should compile but failed:\n${output}")
  endif()
  return()
endif()

if(result EQUAL 0)
  message(FATAL_ERROR "case ${CASE} should fail to compile but compiled")
endif()
if(NOT output MATCHES "${EXPECT}")
  message(FATAL_ERROR "case ${CASE} failed without the expected message '${EXPECT}':\n${output}")
endif()
if(DEFINED EXPECT_TYPE AND NOT output MATCHES "${EXPECT_TYPE}")
  message(FATAL_ERROR "case ${CASE} failed without naming the type '${EXPECT_TYPE}':\n${output}")
endif()
message(STATUS "case ${CASE} failed to compile as expected")
