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

TEST_CASE("InMemoryStorage finds every key among thousands as entries come and go") {
  const std::size_t shards = GENERATE(std::size_t{1}, std::size_t{3});  // one table, or several
  CAPTURE(shards);
  cs::InMemoryStorage storage(shards);
  constexpr int kKeys = 5000;
  auto key_of = [](int i) { return cs::Key("t", "1", "key " + std::to_string(i)); };
  auto value_of = [&](int i) -> int {
    const auto out = storage.get(key_of(i));
    return out ? *static_cast<const int*>(out->object.get()) : -1;
  };
  for (int i = 0; i < kKeys; ++i) {
    storage.put(key_of(i), cs::StoredOutput::from_object(std::make_shared<const int>(i)));
  }
  REQUIRE(storage.size() == kKeys);
  // Erase two keys in three, in a scrambled order (heads, middles and tails of bucket chains).
  int wrong = 0;
  for (int j = 0; j < kKeys; ++j) {
    const int i = (j * 7919) % kKeys;
    if (i % 3 != 0) wrong += storage.erase(key_of(i)) ? 0 : 1;
  }
  CHECK(storage.size() == (kKeys + 2) / 3);
  for (int i = 0; i < kKeys; ++i) wrong += value_of(i) != (i % 3 == 0 ? i : -1) ? 1 : 0;
  CHECK(wrong == 0);
  // A subscription alone keeps a key's entry; ending it leaves nothing behind.
  cs::Signal signal;
  { const cs::Subscription s = storage.subscribe(key_of(1), signal); }
  for (int i = 0; i < kKeys; ++i) {
    if (i % 3 != 0) {
      storage.put(key_of(i), cs::StoredOutput::from_object(std::make_shared<const int>(-i)));
    }
  }
  CHECK(storage.size() == kKeys);
  for (int i = 0; i < kKeys; ++i) wrong += value_of(i) != (i % 3 == 0 ? i : -i) ? 1 : 0;
  CHECK(wrong == 0);
}
