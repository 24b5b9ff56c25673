#include <catch2/catch.hpp>
#include <set>
#include <thread>

#include "storage_contract.hpp"

namespace cs = cacheserialize;

TEST_CASE("InMemoryStorage follows the storage contract") {
  test::check_storage_contract([] { return cs::InMemoryStorage(); });
}

TEST_CASE("InMemoryStorage keeps outputs as objects, so a hit is a copy and not a decode") {
  STATIC_REQUIRE((cs::storage_traits<cs::InMemoryStorage>::stores_objects));
  STATIC_REQUIRE((cs::storage_traits<cs::InMemoryStorage>::notifies));
  STATIC_REQUIRE((cs::storage_traits<cs::InMemoryStorage>::probe_before_acquire));
  STATIC_REQUIRE((cs::is_storage_v<cs::InMemoryStorage>));
}

TEST_CASE("InMemoryStorage copies share one store") {
  cs::InMemoryStorage a;
  cs::InMemoryStorage b = a;
  const cs::Key key("t", "1", "k");
  a.put(key, cs::StoredOutput::from_object(std::make_shared<const int>(7)));
  REQUIRE(b.get(key));
  CHECK(*static_cast<const int*>(b.get(key)->object.get()) == 7);
  CHECK(b.size() == 1);
  CHECK(b.erase(key));
  CHECK_FALSE(a.get(key));
  CHECK_FALSE(a.erase(key));
}

TEST_CASE("InMemoryStorage rejects a zero shard count") {
  REQUIRE_THROWS_WITH(cs::InMemoryStorage(0), Catch::Contains("shard count"));
}

TEST_CASE("InMemoryStorage issues distinct, growing tokens under concurrent acquisitions") {
  cs::InMemoryStorage storage(4);
  const cs::TimePoint now = cs::ManualClock::default_start();
  std::vector<std::thread> threads;
  std::mutex mu;
  std::set<std::uint64_t> tokens;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        const cs::Key key("t", "1", std::to_string(t) + ":" + std::to_string(i));
        const std::string owner = "owner-" + std::to_string(t);
        const auto r = storage.acquire(key, {owner, now, std::chrono::seconds(30), false});
        std::lock_guard<std::mutex> lock(mu);
        tokens.insert(r.reservation.token);
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(tokens.size() == 2000);
}
