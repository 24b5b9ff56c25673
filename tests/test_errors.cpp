#include <cacheserialize/errors.hpp>
#include <catch2/catch.hpp>
#include <type_traits>

namespace cs = cacheserialize;

TEST_CASE("every library exception derives from cacheserialize::error and std::exception") {
  STATIC_REQUIRE(std::is_base_of<std::exception, cs::error>::value);
  STATIC_REQUIRE(std::is_base_of<cs::error, cs::storage_error>::value);
  STATIC_REQUIRE(std::is_base_of<cs::error, cs::codec_error>::value);
  STATIC_REQUIRE(std::is_base_of<cs::error, cs::timeout_error>::value);
  STATIC_REQUIRE(std::is_base_of<cs::error, cs::cancelled_error>::value);
  STATIC_REQUIRE(std::is_nothrow_copy_constructible<cs::timeout_error>::value);
}

TEST_CASE("an exception's message names the problem and the key") {
  const cs::storage_error e("disk full", "task 'square' version '1' key 0123456789ab");
  CHECK(std::string(e.what()) ==
        "cacheserialize: disk full [task 'square' version '1' key 0123456789ab]");
  CHECK(e.key() == "task 'square' version '1' key 0123456789ab");

  SECTION("without a key the brackets are left out") {
    CHECK(std::string(cs::codec_error("truncated input").what()) ==
          "cacheserialize: truncated input");
  }
  SECTION("a timeout carries the holder and its expiry") {
    const cs::timeout_error t("waited too long", "k", "host:1:ab:2", cs::from_unix_nanos(5));
    CHECK(t.holder() == "host:1:ab:2");
    CHECK(cs::to_unix_nanos(t.holder_expires_at()) == 5);
  }
}

TEST_CASE("times and durations format for messages") {
  CHECK(cs::format_time(cs::from_unix_nanos(0)) == "1970-01-01T00:00:00.000000Z");
  CHECK(cs::format_time(cs::from_unix_nanos(1'700'000'000'123'456'789)) ==
        "2023-11-14T22:13:20.123456Z");
  CHECK(cs::format_time(cs::TimePoint::max()) == "never");
  CHECK(cs::format_duration(std::chrono::seconds(30)) == "30s");
  CHECK(cs::format_duration(std::chrono::milliseconds(250)) == "250ms");
  CHECK(cs::format_duration(std::chrono::microseconds(7)) == "7us");
  CHECK(cs::format_duration(std::chrono::nanoseconds(3)) == "3ns");
}
