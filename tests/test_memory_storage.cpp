#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <typeinfo>
#include <utility>
#include <vector>

#include "engine_contract.hpp"
#include "storage_contract.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

TEST_CASE("InMemoryStorage follows the storage contract") {
  test::check_storage_contract([] { return cs::InMemoryStorage(); });
}

TEST_CASE("InMemoryStorage follows the engine contract: try_claim, resume, adopt and holder") {
  test::check_engine_contract([] { return cs::InMemoryStorage(); },
                              [](const cs::InMemoryStorage& s) { return s; });
}

TEST_CASE("InMemoryStorage keeps outputs as objects, so a hit is a copy and not a decode") {
  STATIC_REQUIRE((cs::storage_traits<cs::InMemoryStorage>::stores_objects));
  STATIC_REQUIRE((cs::storage_traits<cs::InMemoryStorage>::notifies));
  STATIC_REQUIRE((cs::storage_traits<cs::InMemoryStorage>::probe_before_acquire));
  STATIC_REQUIRE((cs::is_storage_v<cs::InMemoryStorage>));
  STATIC_REQUIRE((cs::storage_traits<cs::InMemoryStorage>::visits_outputs));
}

TEST_CASE("an output stored from a shared_ptr<T> is read back by a wrapper returning T") {
  cs::ReservationManager<> manager;
  int runs = 0;
  auto ones = cs::serialize_cached(
      [&runs](const std::string& s) {
        ++runs;
        return std::vector<int>(s.size(), 1);
      },
      cs::TaskOptions{"ones", "1"}, manager);

  // Mutable and const pointees are stored alike, as the type T (no const).
  const auto mutable_value = std::make_shared<std::vector<int>>(std::vector<int>{7, 8});
  const cs::StoredOutput from_mutable = cs::StoredOutput::from_object(mutable_value);
  REQUIRE(from_mutable.type != nullptr);
  CHECK(*from_mutable.type == typeid(std::vector<int>));
  CHECK(from_mutable.object.get() == mutable_value.get());  // shared, not copied
  const cs::StoredOutput from_const =
      cs::StoredOutput::from_object(std::make_shared<const std::vector<int>>());
  REQUIRE(from_const.type != nullptr);
  CHECK(*from_const.type == typeid(std::vector<int>));

  // An engine's store through a hold, then a put: the wrapper hits both and never runs.
  {
    auto claim = manager.claim(ones.key("abc"));
    REQUIRE_FALSE(claim.is_hit());
    auto hold = std::move(claim.hold());
    CHECK(hold.store(from_mutable) == cs::StoreStatus::stored);
  }
  manager.put(ones.key("xy"),
              cs::StoredOutput::from_object(std::make_shared<std::vector<int>>(1, 9)));
  CHECK(ones("abc") == std::vector<int>{7, 8});
  CHECK(ones("xy") == std::vector<int>{9});
  CHECK(runs == 0);
  CHECK(manager.stats().hits == 2);
}

TEST_CASE("InMemoryStorage lets an exception out of visit_output and releases the shard") {
  cs::InMemoryStorage storage(1);  // one shard: the put below needs the lock visit_output took
  const cs::Key key("t", "1", "k");
  storage.put(key, cs::StoredOutput::from_object(std::make_shared<const int>(1)));
  REQUIRE_THROWS_WITH(
      storage.visit_output(key, [](const cs::StoredOutput&) { throw std::runtime_error("copy"); }),
      "copy");
  // A read lock left behind would keep this writer waiting: it runs on a thread, within a bound.
  std::atomic<bool> stored{false};
  std::thread writer([&] {
    storage.put(key, cs::StoredOutput::from_object(std::make_shared<const int>(2)));
    stored.store(true);
  });
  // Otherwise the writer is stuck: fail instead of joining it.
  REQUIRE(test::eventually([&] { return stored.load(); }, test::kBound, 0ms));
  writer.join();
  int value = 0;
  CHECK(storage.visit_output(key, [&](const cs::StoredOutput& out) {
    value = *static_cast<const int*>(out.object.get());
  }));
  CHECK(value == 2);
}

TEST_CASE("InMemoryStorage serves hits on one key from many threads while it is rewritten") {
  cs::InMemoryStorage storage(2);
  const cs::Key key("t", "1", "hot");
  // Every stored value is a pair of equal numbers: a reader that sees them differ, or an output
  // that vanished under it, read a store in progress.
  using Pair = std::pair<std::int64_t, std::int64_t>;
  auto output = [](std::int64_t n) {
    return cs::StoredOutput::from_object(std::make_shared<const Pair>(n, n));
  };
  storage.put(key, output(0));
  constexpr int kWrites = 2000;
  std::atomic<bool> writing{true};
  std::atomic<int> torn{0};
  std::atomic<int> misses{0};
  std::atomic<std::int64_t> hits{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&, t] {
      while (writing.load()) {
        Pair seen;
        auto copy = [&](const cs::StoredOutput& out) {
          seen = *static_cast<const Pair*>(out.object.get());
        };
        bool found = false;
        if (t == 0) {  // one reader through get, the others in place
          if (const auto out = storage.get(key)) {
            copy(*out);
            found = true;
          }
        } else {
          found = storage.visit_output(key, copy);
        }
        if (!found) misses.fetch_add(1);
        if (found && seen.first != seen.second) torn.fetch_add(1);
        if (found) hits.fetch_add(1);
      }
    });
  }
  // The writes must overlap the reads (on two cores the readers may not even have started before
  // an unpaced writer is done): every 100 writes, wait until the readers have made progress,
  // bounded so that a stuck reader fails the test instead of hanging it.
  bool overlapped = true;
  for (std::int64_t n = 1; n <= kWrites; ++n) {
    if (n % 100 == 1) {
      const auto before = hits.load();
      overlapped = overlapped &&
                   test::eventually([&] { return hits.load() > before + 3; }, test::kBound, 0ms);
    }
    storage.put(key, output(n));
  }
  writing.store(false);
  for (auto& th : readers) th.join();
  CHECK(torn.load() == 0);
  CHECK(misses.load() == 0);
  CHECK(overlapped);
  std::int64_t last = 0;
  REQUIRE(storage.visit_output(key, [&](const cs::StoredOutput& out) {
    last = static_cast<const Pair*>(out.object.get())->first;
  }));
  CHECK(last == kWrites);
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

TEST_CASE("InMemoryStorage tells apart keys of every length that differ in one byte") {
  // Every path of the key hash: short keys, one word, two overlapping words, 16-byte rounds.
  cs::InMemoryStorage storage(4);
  std::vector<std::string> keys;
  for (std::size_t length = 0; length <= 80; ++length) {
    const std::string base(length, 'k');
    keys.push_back(base);
    for (std::size_t at = 0; at < length; ++at) {
      std::string other = base;
      other[at] = static_cast<char>(0x80 | at);  // a byte with its high bit set, too
      keys.push_back(other);
    }
  }
  // Each look-up builds its key afresh: bytes past a key's end, read by mistake, would differ.
  auto key_of = [&](std::size_t i) { return cs::Key("t", "1", std::string(keys[i])); };
  for (std::size_t i = 0; i < keys.size(); ++i) {
    storage.put(key_of(i), cs::StoredOutput::from_object(std::make_shared<const std::size_t>(i)));
  }
  CHECK(storage.size() == keys.size());
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const auto out = storage.get(key_of(i));
    if (!out || *static_cast<const std::size_t*>(out->object.get()) != i) ++wrong;
  }
  CHECK(wrong == 0);
}
