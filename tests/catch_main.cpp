#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CACHESERIALIZE_TESTS_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define CACHESERIALIZE_TESTS_TSAN 1
#endif

#ifdef CACHESERIALIZE_TESTS_TSAN
// ThreadSanitizer reads this once at start-up, in every test binary, so `ctest` needs no
// TSAN_OPTIONS. libstdc++'s exception_ptr counts references inside the uninstrumented
// libstdc++.so, so TSan does not see that the last release (which destroys the exception) comes
// after another thread's reads of it; claim_async and SerializedFunction::async hand exceptions
// across threads exactly so. Only reports with exception_ptr's release on a stack are dropped.
// test_errors.cpp has a case that produces that report on every run.
extern "C" const char* __tsan_default_suppressions() {
  return "race:std::__exception_ptr::exception_ptr::_M_release\n";
}
#endif
