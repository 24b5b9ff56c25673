// ReservationManager: owner ids, the heartbeat thread, holds, as an engine drives them directly.

#include <catch2/catch.hpp>
#include <regex>
#include <set>
#include <vector>

#include "support.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {
cs::Key key_of(int i) { return cs::Key("task", "1", "key-" + std::to_string(i)); }
}  // namespace

TEST_CASE("owner ids are unique per call and name the host and the process") {
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) ids.insert(test::Manager::new_owner_id());
  CHECK(ids.size() == 1000);
  const std::string id = *ids.begin();
  CHECK(std::regex_match(id, std::regex("[^:]+:[0-9]+:[0-9a-f]{16}:[0-9]+")));
  CHECK(id.find(":" + std::to_string(cs::detail::current_pid()) + ":") != std::string::npos);
}

TEST_CASE("owner ids made on several threads at once are all distinct") {
  // Each thread takes counter values in blocks: blocks must never overlap.
  constexpr std::size_t kThreads = 4;
  constexpr std::size_t kIds = 2000;  // several blocks per thread
  std::vector<std::vector<std::string>> made(kThreads);
  {
    test::Threads threads;
    for (std::size_t t = 0; t < kThreads; ++t) {
      threads.spawn([&made, t] {
        for (std::size_t i = 0; i < kIds; ++i) made[t].push_back(test::Manager::new_owner_id());
      });
    }
  }
  std::set<std::string> ids;
  for (const auto& m : made) ids.insert(m.begin(), m.end());
  CHECK(ids.size() == kThreads * kIds);
}

TEST_CASE("one heartbeat thread per manager, started lazily, however many reservations it holds") {
  const std::size_t before = test::thread_count();
  REQUIRE(before > 0);
  {
    test::World w;
    CHECK(test::thread_count() == before);  // nothing held yet: no thread
    std::vector<test::Manager::hold_type> holds;
    for (int i = 0; i < 1000; ++i) {
      auto claim = w.manager.claim(key_of(i));
      REQUIRE_FALSE(claim.is_hit());
      holds.push_back(std::move(claim.hold()));
    }
    CHECK(test::thread_count() == before + 1);
    REQUIRE(w.clock.wait_for_sleepers(1));
    w.clock.advance(10s);  // every reservation is extended by that one thread
    REQUIRE(w.clock.wait_for_sleepers(1));
    CHECK(w.manager.stats().heartbeats == 1000);
    CHECK(test::thread_count() == before + 1);
  }
  CHECK(test::thread_count() == before);  // stopped and joined with the manager
}

TEST_CASE("the heartbeat extends each reservation at its own interval") {
  test::World w;
  cs::ClaimOptions fast;
  fast.heartbeat_interval = 2s;
  cs::ClaimOptions slow;
  slow.heartbeat_interval = 5s;
  auto a = w.manager.claim(key_of(1), fast);
  auto b = w.manager.claim(key_of(2), slow);
  const cs::TimePoint t0 = w.clock.now();
  CHECK(a.hold().reservation().expires_at == t0 + 6s);
  CHECK(b.hold().reservation().expires_at == t0 + 15s);
  for (int i = 0; i < 10; ++i) {
    REQUIRE(w.clock.wait_for_sleepers(1));
    w.clock.advance(1s);
  }
  REQUIRE(w.clock.wait_for_sleepers(1));
  // 10 s: a was extended at 2, 4, 6, 8, 10 s; b at 5 and 10 s.
  CHECK(w.manager.stats().heartbeats == 7);
  CHECK(a.hold().reservation().expires_at == t0 + 10s + 6s);
  CHECK(b.hold().reservation().expires_at == t0 + 10s + 15s);
  CHECK(w.storage.reservation(key_of(1))->expires_at == t0 + 16s);
}

TEST_CASE("a hold is finished by a store, a release or its destruction") {
  test::World w;
  SECTION("store") {
    auto claim = w.manager.claim(key_of(1));
    auto& hold = claim.hold();
    CHECK(hold.active());
    CHECK(hold.store(cs::StoredOutput::from_object(std::make_shared<const int>(5))) ==
          cs::StoreStatus::stored);
    CHECK_FALSE(hold.active());
    REQUIRE_THROWS_AS(hold.release(), std::logic_error);
    CHECK(w.manager.claim(key_of(1)).is_hit());
  }
  SECTION("release") {
    auto claim = w.manager.claim(key_of(1));
    CHECK(claim.hold().release() == cs::ReleaseStatus::released);
    CHECK_FALSE(w.storage.reservation(key_of(1)));
    CHECK(w.manager.stats().failures == 1);
  }
  SECTION("destruction gives the reservation back") {
    { auto claim = w.manager.claim(key_of(1)); }
    CHECK_FALSE(w.storage.reservation(key_of(1)));
    CHECK(w.recorder.count(cs::EventKind::failed) == 1);
  }
  SECTION("a stored or released hold is no longer extended, and no loss is reported") {
    { auto claim = w.manager.claim(key_of(1)); }
    REQUIRE(w.clock.wait_for_sleepers(1));
    w.clock.advance(30s);
    REQUIRE(w.clock.wait_for_sleepers(1));
    CHECK(w.manager.stats().heartbeats == 0);
    CHECK(w.manager.stats().lost == 0);
  }
}

TEST_CASE("a holder whose reservation was taken over is told, and its store is fenced off") {
  test::World w;
  auto first = w.manager.claim(key_of(1));
  auto& stale = first.hold();
  // Another process took the key over (as after a stall longer than the reservation's life).
  w.storage.release(key_of(1), stale.reservation());
  const auto other = w.storage.acquire(key_of(1), {"elsewhere:1:ab:1", w.clock.now(), 30s, false});
  REQUIRE(other.status == cs::AcquireStatus::acquired);

  REQUIRE(w.clock.wait_for_sleepers(1));
  w.clock.advance(10s);
  REQUIRE(w.recorder.wait_for(cs::EventKind::lost));
  CHECK(stale.lost());
  const auto lost = w.recorder.of(cs::EventKind::lost);
  CHECK(lost[0].holder == "elsewhere:1:ab:1");
  CHECK(lost[0].owner == stale.reservation().owner);

  CHECK(stale.store(cs::StoredOutput::from_object(std::make_shared<const int>(1))) ==
        cs::StoreStatus::rejected);
  CHECK_FALSE(w.storage.get(key_of(1)));
  CHECK(w.storage.reservation(key_of(1))->owner == "elsewhere:1:ab:1");
  CHECK(w.manager.stats().lost == 1);
  CHECK(w.recorder.count(cs::EventKind::lost) == 1);  // one loss, one event
}

TEST_CASE("releasing a reservation that is not the holder's is a harmless no-op") {
  test::World w;
  auto claim = w.manager.claim(key_of(1));
  const cs::Reservation mine = claim.hold().reservation();
  cs::Reservation impostor = mine;
  impostor.owner = "impostor:1:00:1";
  CHECK(w.storage.release(key_of(1), impostor) == cs::ReleaseStatus::held_by_other);
  CHECK(w.storage.reservation(key_of(1))->owner == mine.owner);
  CHECK(claim.hold().release() == cs::ReleaseStatus::released);
}

TEST_CASE("holds keep the manager's state alive after the last manager handle is gone") {
  const std::size_t before = test::thread_count();
  cs::ManualClock clock;
  cs::InMemoryStorage storage;
  std::optional<test::Manager::claim_type> claim;
  {
    test::Manager manager(storage, clock);
    claim.emplace(manager.claim(key_of(1)));
  }
  CHECK(test::thread_count() == before + 1);
  REQUIRE(clock.wait_for_sleepers(1));
  clock.advance(10s);
  REQUIRE(clock.wait_for_sleepers(1));
  CHECK(storage.reservation(key_of(1))->expires_at == clock.now() + 30s);
  claim.reset();
  CHECK(test::thread_count() == before);
  CHECK_FALSE(storage.reservation(key_of(1)));
}

TEST_CASE("a listener that throws cannot break the protocol") {
  cs::ManualClock clock;
  cs::InMemoryStorage storage;
  cs::ManagerOptions options;
  options.listener = [](const cs::Event&) { throw std::runtime_error("listener bug"); };
  test::Manager manager(storage, clock, options);
  auto f = cs::serialize_cached([](int n) { return n; }, cs::TaskOptions{"t", "1"}, manager);
  CHECK(f(1) == 1);
  CHECK(f(1) == 1);
  CHECK(manager.stats().hits == 1);
}
