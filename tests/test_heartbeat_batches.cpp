// The heartbeat at network latency: the holds falling due together are extended in batches, one
// storage call (`extend_many`) per batch, with every per-hold rule of one-by-one extension kept.

#include <atomic>
#include <catch2/catch.hpp>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "support.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

cs::Key key_of(int i) { return cs::Key("task", "1", "key-" + std::to_string(i)); }

/// An in-memory store that counts the heartbeat's calls, the size of each batch, and can be made
/// to fail `extend_many`; shared by all copies.
class BatchCountingStorage : public cs::InMemoryStorage {
 public:
  struct Calls {
    std::mutex mu;
    std::vector<std::size_t> batches;  // the size of each extend_many call, in order
    int extends = 0;
    bool fail = false;
  };

  std::vector<cs::ExtendResult> extend_many(const std::vector<cs::Extension>& batch,
                                            cs::TimePoint now) {
    {
      std::lock_guard<std::mutex> lock(calls->mu);
      calls->batches.push_back(batch.size());
      if (calls->fail) throw cs::storage_error("network partition");
    }
    return InMemoryStorage::extend_many(batch, now);
  }
  cs::ExtendResult extend(const cs::Key& key, const cs::Reservation& mine, cs::TimePoint now,
                          cs::Duration ttl) {
    {
      std::lock_guard<std::mutex> lock(calls->mu);
      ++calls->extends;
    }
    return InMemoryStorage::extend(key, mine, now, ttl);
  }

  std::vector<std::size_t> batches() const {
    std::lock_guard<std::mutex> lock(calls->mu);
    return calls->batches;
  }
  int extends() const {
    std::lock_guard<std::mutex> lock(calls->mu);
    return calls->extends;
  }
  void fail(bool on) const {
    std::lock_guard<std::mutex> lock(calls->mu);
    calls->fail = on;
  }

  std::shared_ptr<Calls> calls = std::make_shared<Calls>();
};

/// The same store without `extend_many` (deleted, so the trait does not see the base's): the
/// heartbeat must extend one call per hold.
class OneByOneStorage : public BatchCountingStorage {
 public:
  std::vector<cs::ExtendResult> extend_many(const std::vector<cs::Extension>&,
                                            cs::TimePoint) = delete;
};

/// A fake clock, a store, a recorder, and a manager over them (interval 10 s, grace 3).
template <class S>
struct World {
  World() : manager(storage, clock, options()) {}
  cs::ManagerOptions options() {
    cs::ManagerOptions o;
    o.heartbeat_interval = 10s;
    o.grace_multiplier = 3;
    o.listener = recorder.listener();
    return o;
  }
  /// Claims `n` keys, from `first`; the holds stay held while the returned claims live.
  auto claim(int n, int first = 0, cs::ClaimOptions o = {}) {
    std::vector<typename cs::ReservationManager<cs::ManualClock, S>::claim_type> held;
    for (int i = first; i < first + n; ++i) held.push_back(manager.claim(key_of(i), o));
    return held;
  }
  /// Lets the heartbeat sleep, advances the clock, and waits until it sleeps again.
  void beat(cs::Duration d = 10s) {
    REQUIRE(clock.wait_for_sleepers(1));
    clock.advance(d);
    REQUIRE(clock.wait_for_sleepers(1));
  }

  cs::ManualClock clock;
  S storage;
  test::Recorder recorder;
  cs::ReservationManager<cs::ManualClock, S> manager;
};

}  // namespace

TEST_CASE("holds due together are extended in one extend_many call, batches of at most 1000") {
  STATIC_REQUIRE(cs::storage_traits<BatchCountingStorage>::extends_in_batches);
  World<BatchCountingStorage> w;
  const cs::TimePoint t0 = w.clock.now();

  SECTION("100 holds: one call, every one extended") {
    auto held = w.claim(100);
    w.beat();
    CHECK(w.storage.batches() == std::vector<std::size_t>{100});
    CHECK(w.storage.extends() == 0);
    const cs::Stats s = w.manager.stats();
    CHECK(s.heartbeats == 100);
    CHECK(s.heartbeat_batches == 1);
    for (int i = 0; i < 100; ++i) {
      CHECK(w.storage.reservation(key_of(i))->expires_at == t0 + 10s + 30s);
    }
    w.beat();
    CHECK(w.storage.batches() == std::vector<std::size_t>{100, 100});
    CHECK(w.manager.stats().heartbeat_batches == 2);
  }

  SECTION("2500 holds: batches of 1000, 1000 and 500") {
    auto held = w.claim(2500);
    w.beat();
    CHECK(w.storage.batches() == std::vector<std::size_t>{1000, 1000, 500});
    CHECK(w.manager.stats().heartbeats == 2500);
    CHECK(w.manager.stats().heartbeat_batches == 3);
  }

  SECTION("a hold due within a tenth of the interval joins the batch; a later one waits") {
    auto first = w.claim(3, 0);
    w.clock.advance(900ms);  // due 0.9 s after the others: extended 0.9 s early, with them
    auto close = w.claim(2, 3);
    w.clock.advance(1100ms);  // due 2 s after the first: on its own
    auto later = w.claim(1, 5);
    w.beat(8s);  // t0 + 10 s
    CHECK(w.storage.batches() == std::vector<std::size_t>{5});
    CHECK(w.storage.reservation(key_of(4))->expires_at == t0 + 10s + 30s);
    w.beat(2s);  // t0 + 12 s
    CHECK(w.storage.batches() == std::vector<std::size_t>{5, 1});
    CHECK(w.manager.stats().heartbeats == 6);
  }
}

TEST_CASE("a storage without extend_many is extended one call per hold, as before") {
  STATIC_REQUIRE_FALSE(cs::storage_traits<OneByOneStorage>::extends_in_batches);
  World<OneByOneStorage> w;
  auto held = w.claim(50);
  w.beat();
  CHECK(w.storage.extends() == 50);
  CHECK(w.storage.batches().empty());
  CHECK(w.manager.stats().heartbeats == 50);
  CHECK(w.manager.stats().heartbeat_batches == 50);
}

TEST_CASE("a lost reservation in a batch is reported lost and the others are still extended") {
  World<BatchCountingStorage> w;
  const cs::TimePoint t0 = w.clock.now();
  auto held = w.claim(5);
  // Another process took key 2 over (as after a stall longer than the reservation's life).
  w.storage.release(key_of(2), held[2].hold().reservation());
  REQUIRE(w.storage.acquire(key_of(2), {"elsewhere:1:ab:1", t0, 30s, false}).status ==
          cs::AcquireStatus::acquired);
  w.beat();
  CHECK(w.storage.batches() == std::vector<std::size_t>{5});
  REQUIRE(w.recorder.wait_for(cs::EventKind::lost));
  const auto lost = w.recorder.of(cs::EventKind::lost);
  REQUIRE(lost.size() == 1);
  CHECK(lost[0].owner == held[2].hold().reservation().owner);
  CHECK(lost[0].holder == "elsewhere:1:ab:1");
  CHECK(held[2].hold().lost());
  const cs::Stats s = w.manager.stats();
  CHECK(s.lost == 1);
  CHECK(s.heartbeats == 4);
  for (int i : {0, 1, 3, 4}) {
    CHECK_FALSE(held[static_cast<std::size_t>(i)].hold().lost());
    CHECK(w.storage.reservation(key_of(i))->expires_at == t0 + 10s + 30s);
  }
  w.beat();  // a lost hold is no longer extended
  CHECK(w.storage.batches() == std::vector<std::size_t>{5, 4});
  CHECK(w.manager.stats().lost == 1);
}

TEST_CASE("holds released, finished or no longer alive are left out of the batch") {
  World<BatchCountingStorage> w;
  std::atomic<bool> work_alive{true};
  cs::ClaimOptions watched;
  watched.alive = [&] { return work_alive.load(); };
  auto held = w.claim(3);
  auto dying = w.claim(1, 3, watched);
  REQUIRE(held[0].hold().release() == cs::ReleaseStatus::released);
  work_alive = false;
  w.beat();
  CHECK(w.storage.batches() == std::vector<std::size_t>{2});
  REQUIRE(w.recorder.wait_for(cs::EventKind::abandoned));
  CHECK_FALSE(w.storage.reservation(key_of(3)));  // released at once for its waiters
  const cs::Stats s = w.manager.stats();
  CHECK(s.heartbeats == 2);
  CHECK(s.abandoned == 1);
  CHECK(s.lost == 0);
}

TEST_CASE("a failing extend_many fails every hold of its batch, and the next beat retries them") {
  World<BatchCountingStorage> w;
  const cs::TimePoint t0 = w.clock.now();
  auto held = w.claim(3);
  w.storage.fail(true);
  w.beat();
  REQUIRE(w.recorder.wait_for(cs::EventKind::heartbeat_failed, 3));
  const auto failed = w.recorder.of(cs::EventKind::heartbeat_failed);
  REQUIRE(failed.size() == 3);
  for (const auto& e : failed) CHECK(e.detail.find("network partition") != std::string::npos);
  CHECK(w.manager.stats().heartbeat_failures == 3);
  CHECK(w.manager.stats().heartbeats == 0);
  CHECK(w.storage.reservation(key_of(0))->expires_at == t0 + 30s);  // not extended

  w.storage.fail(false);
  w.beat();
  CHECK(w.storage.batches() == std::vector<std::size_t>{3, 3});
  const cs::Stats s = w.manager.stats();
  CHECK(s.heartbeats == 3);
  CHECK(s.heartbeat_batches == 2);
  CHECK(s.lost == 0);
  for (int i = 0; i < 3; ++i) {
    CHECK_FALSE(held[static_cast<std::size_t>(i)].hold().lost());
    CHECK(w.storage.reservation(key_of(i))->expires_at == t0 + 20s + 30s);
  }
}
