// serialize_cached(fn, options, storage): one default manager per store, whatever the number of
// wrappers.

#include <catch2/catch.hpp>
#include <future>
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

TEST_CASE("async calls through 50 wrappers over one store wait on one waiter thread") {
  const std::size_t before = test::thread_count();
  cs::InMemoryStorage storage;
  {
    auto make = [&](int i) {
      return cs::serialize_cached([](int n) { return n + 1; },
                                  cs::TaskOptions{"task-" + std::to_string(i), "1"}, storage);
    };
    std::vector<decltype(make(0))> wrappers;
    for (int i = 0; i < 50; ++i) wrappers.push_back(make(i));
    auto manager = cs::default_manager(storage);
    std::vector<cs::Hold<cs::SystemClock, cs::InMemoryStorage>> holds;
    for (auto& w : wrappers) holds.push_back(std::move(manager.claim(w.key(1)).hold()));
    auto inline_executor = [](std::function<void()> f) { f(); };
    std::vector<std::future<int>> calls;
    for (auto& w : wrappers) calls.push_back(w.async(inline_executor, 1));
    CHECK(manager.stats().waiters_active == 50);
    CHECK(test::thread_count() <= before + 2);  // the heartbeat and the waiter thread
    for (auto& h : holds) h.store_value(7);
    for (auto& c : calls) CHECK(c.get() == 7);
  }
  // The manager is gone, and both its threads; the last completion may still be finishing on
  // the waiter thread, which then lets the manager go.
  CHECK(test::eventually([&] { return test::thread_count() == before; }));
}
