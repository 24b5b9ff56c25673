// Finished, moved-from and mismatched objects: every public accessor answers or throws a
// std::logic_error (or std::invalid_argument for bad input), never crashes; a finished hold,
// and a waiting claim once it completed, keep nothing of their manager alive.

#include <atomic>
#include <catch2/catch.hpp>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "support.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

cs::Key key_of(int i) { return cs::Key("task", "1", "key-" + std::to_string(i)); }

cs::StoredOutput object(int v) {
  return cs::StoredOutput::from_object(std::make_shared<const int>(v));
}

// An in-memory store that counts its live copies: the manager, and whatever keeps it, hold some.
class CountedStorage : public cs::InMemoryStorage {
 public:
  explicit CountedStorage(std::shared_ptr<std::atomic<int>> live) : live_(std::move(live)) {
    ++*live_;
  }
  /// A counted handle on `shared`'s store.
  CountedStorage(const cs::InMemoryStorage& shared, std::shared_ptr<std::atomic<int>> live)
      : InMemoryStorage(shared), live_(std::move(live)) {
    ++*live_;
  }
  CountedStorage(const CountedStorage& other) : InMemoryStorage(other), live_(other.live_) {
    ++*live_;
  }
  CountedStorage& operator=(const CountedStorage&) = delete;
  ~CountedStorage() { --*live_; }

 private:
  std::shared_ptr<std::atomic<int>> live_;
};

}  // namespace

TEST_CASE("a finished hold still answers key() and reservation(), and refuses a second finish") {
  test::World w;
  auto claim = w.manager.claim(key_of(1));
  auto& hold = claim.hold();
  const cs::Reservation held = hold.reservation();

  SECTION("after store") { REQUIRE(hold.store(object(1)) == cs::StoreStatus::stored); }
  SECTION("after release") { REQUIRE(hold.release() == cs::ReleaseStatus::released); }
  SECTION("after try_store") {
    REQUIRE(hold.try_store([] { return object(1); }));
  }
  CHECK_FALSE(hold.active());
  CHECK(hold.key() == key_of(1));
  CHECK(hold.reservation().owner == held.owner);
  CHECK(hold.reservation().token == held.token);
  CHECK(hold.reservation().expires_at == held.expires_at);
  CHECK_FALSE(hold.lost());
  REQUIRE_THROWS_AS(hold.store(object(2)), std::logic_error);
  REQUIRE_THROWS_WITH(hold.release(), Catch::Contains("already stored or released"));
  CHECK_FALSE(hold.try_store([] { return object(3); }));
}

TEST_CASE("a moved-from hold throws std::logic_error from every accessor that needs its lease") {
  test::World w;
  auto claim = w.manager.claim(key_of(1));
  test::Manager::hold_type moved = std::move(claim.hold());
  auto& empty = claim.hold();  // the claim's hold, moved from
  CHECK_FALSE(empty.active());
  CHECK_FALSE(empty.lost());
  REQUIRE_THROWS_WITH(empty.key(), Catch::Contains("moved from"));
  REQUIRE_THROWS_AS(empty.reservation(), std::logic_error);
  REQUIRE_THROWS_WITH(empty.store(object(1)), Catch::Contains("moved from"));
  REQUIRE_THROWS_AS(empty.release(), std::logic_error);
  CHECK_FALSE(empty.try_store([] { return object(1); }));
  CHECK(moved.active());  // the reservation went with the move
  CHECK(moved.store(object(1)) == cs::StoreStatus::stored);
}

TEST_CASE("a claim's accessors refuse the other outcome instead of reading nothing") {
  test::World w;
  auto miss = w.manager.claim(key_of(1));
  REQUIRE_THROWS_WITH(miss.output(), Catch::Contains("not a hit"));
  REQUIRE(miss.hold().store(object(7)) == cs::StoreStatus::stored);
  auto hit = w.manager.claim(key_of(1));
  REQUIRE(hit.is_hit());
  REQUIRE_THROWS_WITH(hit.hold(), Catch::Contains("is a hit"));
  CHECK(*static_cast<const int*>(hit.output().object.get()) == 7);
}

TEST_CASE("finished holds pin neither the manager's heartbeat thread nor its storage") {
  const std::size_t before = test::thread_count();
  auto live = std::make_shared<std::atomic<int>>(0);
  cs::ManualClock clock;
  std::optional<cs::ReservationManager<cs::ManualClock, CountedStorage>::claim_type> stored;
  std::optional<cs::ReservationManager<cs::ManualClock, CountedStorage>::claim_type> released;
  {
    cs::ReservationManager<cs::ManualClock, CountedStorage> manager(CountedStorage(live), clock);
    stored.emplace(manager.claim(key_of(1)));
    released.emplace(manager.claim(key_of(2)));
    CHECK(test::thread_count() == before + 1);
    REQUIRE(stored->hold().store(object(1)) == cs::StoreStatus::stored);
    REQUIRE(released->hold().release() == cs::ReleaseStatus::released);
    CHECK(*live >= 1);
  }
  // The manager is gone and both holds are finished: its thread is joined, its storage freed.
  CHECK(test::thread_count() == before);
  CHECK(*live == 0);
  CHECK(stored->hold().key() == key_of(1));  // what they held can still be read
  CHECK(released->hold().reservation().token > 0);
}

TEST_CASE(
    "a claim that waited completes only once the waiter thread has let go of the manager, so "
    "that the caller's own last handle destroys it") {
  // The waiting manager's store is counted: only its state keeps a copy. Another manager, over
  // the same store, holds the key the claims wait on.
  using Waiting = cs::ReservationManager<cs::ManualClock, CountedStorage>;
  using Claim = Waiting::claim_type;
  cs::ManualClock clock;
  cs::InMemoryStorage shared;
  test::Manager holder_side(shared, clock);
  auto hold = std::move(holder_side.claim(key_of(1)).hold());
  auto live = std::make_shared<std::atomic<int>>(0);
  auto manager = std::make_unique<Waiting>(CountedStorage(shared, live), clock);
  const std::size_t before = test::thread_count();

  SECTION(
      "claims dropped by every handle while they wait: their manager is gone when the last ends") {
    std::mutex mu;
    std::vector<int> seen;  // *live as each completion ran, in order
    std::promise<void> both;
    for (int i = 0; i < 2; ++i) {
      manager->claim_async(key_of(1), {}, [&](std::exception_ptr, std::optional<Claim> c) {
        std::lock_guard<std::mutex> lock(mu);
        seen.push_back(c && c->is_hit() ? live->load() : -1);
        if (seen.size() == 2) both.set_value();
      });
    }
    manager.reset();  // the waiting claims keep its state
    CHECK(*live == 1);
    hold.store(object(9));
    REQUIRE(both.get_future().wait_for(test::kBound) == std::future_status::ready);
    // Both are hits. One check may complete both, or the first alone: its look may begin
    // before the second claim is on the key's list. The manager lives while one waits.
    CHECK(seen.front() >= 0);
    CHECK(seen.back() == 0);
  }

  SECTION("a future: the caller that drops the manager after get() joins its waiter thread") {
    std::future<Claim> waited = manager->claim_async(key_of(1));
    REQUIRE(test::eventually([&] { return manager->stats().waiters_active == 1; }));
    CHECK(test::thread_count() == before + 1);  // the waiter thread
    hold.store(object(9));
    CHECK(waited.get().is_hit());
    manager.reset();
    CHECK(*live == 0);  // destroyed here
    CHECK(test::thread_count() == before);
  }

  SECTION("SerializedFunction::async dropped while it waits: its manager is gone when it ends") {
    auto square = [](int n) { return n * n; };
    test::ManualExecutor executor;
    auto holder_fn = cs::serialize_cached(square, cs::TaskOptions{"square", "1"}, holder_side);
    std::future<int> first = holder_fn.async(executor, 3);  // takes the key, posts the work
    REQUIRE(executor.size() == 1);
    std::promise<std::pair<int, int>> completed;  // (*live, the value) as the completion ran
    {
      auto waiting_fn = cs::serialize_cached(square, cs::TaskOptions{"square", "1"}, *manager);
      waiting_fn.async_then(
          cs::CallOptions{}, executor,
          [&](std::exception_ptr, std::optional<int> v) {
            completed.set_value({live->load(), v.value_or(-1)});
          },
          3);
      CHECK(manager->stats().waiters_active == 1);
    }
    manager.reset();
    CHECK(*live == 1);
    CHECK(executor.run_all() == 1);
    CHECK(first.get() == 9);
    std::future<std::pair<int, int>> seen = completed.get_future();
    REQUIRE(seen.wait_for(test::kBound) == std::future_status::ready);
    const auto [live_then, value] = seen.get();
    CHECK(live_then == 0);
    CHECK(value == 9);
  }
}

TEST_CASE("a store of the wrong kind of output is refused, and the reservation stays held") {
  SECTION("bytes into an object storage, or an empty object") {
    test::World w;
    auto claim = w.manager.claim(key_of(1));
    auto& hold = claim.hold();
    REQUIRE_THROWS_AS(hold.store(cs::StoredOutput::from_bytes("1")), std::invalid_argument);
    REQUIRE_THROWS_WITH(hold.store(cs::StoredOutput{}), Catch::Contains("keeps C++ objects"));
    CHECK(hold.active());
    CHECK(w.storage.reservation(key_of(1))->owner == hold.reservation().owner);
    CHECK_FALSE(w.storage.get(key_of(1)));
    REQUIRE_THROWS_AS(w.manager.put(key_of(2), cs::StoredOutput{}), std::invalid_argument);
    CHECK(hold.store(object(1)) == cs::StoreStatus::stored);
  }
  SECTION("an object into a byte storage") {
    cs::ManualClock clock;
    test::ByteMemoryStorage storage;
    cs::ReservationManager<cs::ManualClock, test::ByteMemoryStorage> manager(storage, clock);
    auto claim = manager.claim(key_of(1));
    auto& hold = claim.hold();
    REQUIRE_THROWS_WITH(hold.store(object(1)), Catch::Contains("keeps bytes"));
    CHECK(hold.active());
    CHECK_FALSE(storage.get(key_of(1)));  // nothing written: the key is not poisoned
    REQUIRE_THROWS_AS(manager.put(key_of(2), object(1)), std::invalid_argument);
    CHECK_FALSE(storage.get(key_of(2)));
    CHECK(hold.store(cs::StoredOutput::from_bytes(cs::encode_value(1))) == cs::StoreStatus::stored);
  }
}

TEST_CASE(
    "handles moved from stay usable: cancellation sources, storages, clocks, managers and "
    "wrapped functions") {
  cs::ManualClock clock;
  cs::ManualClock clock2 = std::move(clock);
  CHECK(clock.now() == clock2.now());  // NOLINT(bugprone-use-after-move): the point of the test

  cs::CancellationSource source;
  cs::CancellationSource source2 = std::move(source);
  source.cancel();  // NOLINT(bugprone-use-after-move)
  CHECK(source2.token().cancelled());

  cs::InMemoryStorage storage;
  cs::InMemoryStorage storage2 = std::move(storage);
  storage.put(key_of(1), object(1));  // NOLINT(bugprone-use-after-move)
  CHECK(storage2.get(key_of(1)));     // one store behind both

  test::Manager manager(storage2, clock2);
  test::Manager manager2 = std::move(manager);
  CHECK(manager.lookup(key_of(1)));  // NOLINT(bugprone-use-after-move)
  CHECK(manager2.stats().hits == 1);

  auto f = cs::serialize_cached([](int n) { return n; }, cs::TaskOptions{"f", "1"}, manager2);
  auto g = std::move(f);
  CHECK(f(3) == 3);  // NOLINT(bugprone-use-after-move)
  CHECK(g(3) == 3);
  CHECK(manager2.stats().executions == 1);
}
