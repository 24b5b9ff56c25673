// serialize_cached(fn, options, storage): one default manager per store, whatever the number of
// wrappers.

#include <catch2/catch.hpp>
#include <vector>

#include "support.hpp"

namespace cs = cacheserialize;

TEST_CASE("wrappers over copies of one storage share one manager: one heartbeat thread for 50") {
  const std::size_t before = test::thread_count();
  cs::InMemoryStorage storage;
  {
    std::vector<std::function<int(int)>> wrappers;
    for (int i = 0; i < 50; ++i) {
      cs::InMemoryStorage copy = storage;  // a copy of the handle: the same store
      wrappers.emplace_back(cs::serialize_cached(
          [](int n) { return n + 1; }, cs::TaskOptions{"task-" + std::to_string(i), "1"}, copy));
    }
    for (auto& w : wrappers) CHECK(w(1) == 2);  // a miss each: a reservation, a heartbeat
    CHECK(test::thread_count() <= before + 1);  // not one thread per wrapper
    const cs::Stats s = cs::default_manager(storage).stats();
    CHECK(s.executions == 50);  // one set of counters
    for (auto& w : wrappers) CHECK(w(1) == 2);
    CHECK(cs::default_manager(storage).stats().hits == 50);
  }
  // The wrappers are gone: so is their manager, and its thread.
  CHECK(test::thread_count() == before);
  CHECK(cs::default_manager(storage).stats().executions == 0);  // a new one, made on demand
}

TEST_CASE(
    "another store, or another storage type over one store, has a default manager of its "
    "own") {
  cs::InMemoryStorage a;
  cs::InMemoryStorage b;
  auto fa = cs::serialize_cached([](int n) { return n; }, cs::TaskOptions{"t", "1"}, a);
  auto fb = cs::serialize_cached([](int n) { return n; }, cs::TaskOptions{"t", "1"}, b);
  CHECK(fa(1) == 1);
  CHECK(fb(1) == 1);
  CHECK(fa.manager().stats().executions == 1);
  CHECK(fb.manager().stats().executions == 1);
  CHECK(&fa.manager().storage() != &fb.manager().storage());
  CHECK(&fa.manager().storage() == &cs::default_manager(a).storage());

  test::ByteMemoryStorage bytes;  // a derived storage type over a store of its own
  auto fc = cs::serialize_cached([](int n) { return n; }, cs::TaskOptions{"t", "1"}, bytes);
  CHECK(fc(1) == 1);
  CHECK(cs::default_manager(bytes).stats().executions == 1);
}
