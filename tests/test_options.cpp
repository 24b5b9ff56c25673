// Bad input: every invalid option is a std::invalid_argument that names the option and the
// value, raised before anything is reserved.

#include <catch2/catch.hpp>
#include <limits>

#include "support.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {
auto identity = [](int n) { return n; };
}

TEST_CASE("manager options are validated at construction") {
  cs::ManagerOptions o;
  SECTION("a zero heartbeat interval") {
    o.heartbeat_interval = 0s;
    REQUIRE_THROWS_WITH(test::Manager(cs::InMemoryStorage(), cs::ManualClock(), o),
                        Catch::Contains("heartbeat_interval must be positive, got 0s"));
  }
  SECTION("a negative heartbeat interval") {
    o.heartbeat_interval = -5s;
    REQUIRE_THROWS_WITH(test::Manager(cs::InMemoryStorage(), cs::ManualClock(), o),
                        Catch::Contains("heartbeat_interval must be positive, got -5s"));
  }
  SECTION("a grace multiplier below 1") {
    o.grace_multiplier = 0.5;
    REQUIRE_THROWS_WITH(test::Manager(cs::InMemoryStorage(), cs::ManualClock(), o),
                        Catch::Contains("grace_multiplier must be a finite number >= 1"));
  }
  SECTION("a grace multiplier that is not a number") {
    o.grace_multiplier = std::numeric_limits<double>::quiet_NaN();
    REQUIRE_THROWS_AS(test::Manager(cs::InMemoryStorage(), cs::ManualClock(), o),
                      std::invalid_argument);
    o.grace_multiplier = std::numeric_limits<double>::infinity();
    REQUIRE_THROWS_AS(test::Manager(cs::InMemoryStorage(), cs::ManualClock(), o),
                      std::invalid_argument);
  }
  SECTION("a reservation lifetime that would overflow") {
    o.heartbeat_interval = std::chrono::hours(24 * 365 * 200);
    REQUIRE_THROWS_WITH(test::Manager(cs::InMemoryStorage(), cs::ManualClock(), o),
                        Catch::Contains("longer than 100 years"));
  }
  SECTION("the defaults are Flyte's: 10 s heartbeats, 3 x grace") {
    const test::Manager m;
    CHECK(m.options().heartbeat_interval == 10s);
    CHECK(m.options().grace_multiplier == 3.0);
  }
}

TEST_CASE("task options are validated when the function is wrapped") {
  test::World w;
  cs::TaskOptions o{"task", "1"};
  SECTION("an empty task name") {
    o.name = "";
    REQUIRE_THROWS_AS(cs::serialize_cached(identity, o, w.manager), std::invalid_argument);
  }
  SECTION("an empty cache_version") {
    o.cache_version = "";
    REQUIRE_THROWS_AS(cs::serialize_cached(identity, o, w.manager), std::invalid_argument);
  }
  SECTION("a zero heartbeat interval") {
    o.heartbeat_interval = 0s;
    REQUIRE_THROWS_WITH(cs::serialize_cached(identity, o, w.manager),
                        Catch::Contains("heartbeat_interval"));
  }
  SECTION("a grace multiplier below 1") {
    o.grace_multiplier = 0.99;
    REQUIRE_THROWS_WITH(cs::serialize_cached(identity, o, w.manager),
                        Catch::Contains("grace_multiplier"));
  }
  SECTION("a zero poll interval") {
    o.poll_interval = 0s;
    REQUIRE_THROWS_WITH(cs::serialize_cached(identity, o, w.manager),
                        Catch::Contains("poll_interval must be positive"));
  }
  SECTION("a negative wait_timeout") {
    o.wait_timeout = -1s;
    REQUIRE_THROWS_WITH(cs::serialize_cached(identity, o, w.manager),
                        Catch::Contains("wait_timeout must not be negative, got -1s"));
  }
  SECTION("an ignored input that the function does not have") {
    o.input_names = {"n"};
    o.ignored_inputs = {"m"};
    REQUIRE_THROWS_WITH(cs::serialize_cached(identity, o, w.manager), Catch::Contains("m"));
  }
  SECTION("input names that do not match the parameters") {
    o.input_names = {"a", "b"};
    REQUIRE_THROWS_AS(cs::serialize_cached(identity, o, w.manager), std::invalid_argument);
  }
  CHECK(w.manager.stats().executions == 0);
}

TEST_CASE("claim options are validated before anything is reserved") {
  test::World w;
  const cs::Key key("t", "1", "k");
  cs::ClaimOptions o;
  o.poll_interval = -1ms;
  REQUIRE_THROWS_AS(w.manager.claim(key, o), std::invalid_argument);
  CHECK_FALSE(w.storage.reservation(key));
}
