#pragma once

// The engine API (issue 11) on a storage, as one reusable specification: try_claim in each of
// its outcomes, a chosen owner resuming its reservation after a restart, the hand-over by
// detach and adopt, and holder(). Each storage's tests call check_engine_contract with a
// factory of fresh, empty stores and a way to open a second handle on the same store (another
// "process": for a shared store, its own connections). The storage is wrapped in a
// CountingStorage, so that every call is checked to cost exactly the storage operations it
// promises (try_claim and holder one each; the networked storages also check their round trips
// in their own tests).
//
// Time: a ManualClock drives the heartbeats, so that nothing extends a reservation behind a
// count's back. Storages whose clock is their own (Redis, PostgreSQL) pass client_time = false:
// they ignore the `now` they are given, reservations there live 30 s of real time, and the one
// section that needs an expiry waits for a short one (bounded polling of the real server).

#include <atomic>
#include <catch2/catch.hpp>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "support.hpp"

namespace test {

using namespace std::chrono_literals;

/// A storage that counts every call of the storage contract made through it (and its copies,
/// which share the count), then forwards it to `S`.
template <class S>
class CountingStorage : public S {
 public:
  explicit CountingStorage(S storage) : S(std::move(storage)), calls_(std::make_shared<Calls>()) {}

  std::optional<cs::StoredOutput> get(const cs::Key& key) {
    note("get");
    return S::get(key);
  }
  cs::AcquireResult acquire(const cs::Key& key, const cs::AcquireRequest& request) {
    note("acquire");
    return S::acquire(key, request);
  }
  cs::ExtendResult extend(const cs::Key& key, const cs::Reservation& mine, cs::TimePoint now,
                          cs::Duration ttl) {
    note("extend");
    return S::extend(key, mine, now, ttl);
  }
  template <class B = S>
  auto extend_many(const std::vector<cs::Extension>& batch, cs::TimePoint now)
      -> decltype(std::declval<B&>().extend_many(batch, now)) {
    note("extend_many");
    return B::extend_many(batch, now);
  }
  cs::ReleaseStatus release(const cs::Key& key, const cs::Reservation& mine) {
    note("release");
    return S::release(key, mine);
  }
  cs::StoreResult store_and_release(const cs::Key& key, const cs::Reservation& mine,
                                    cs::StoredOutput output, cs::TimePoint now) {
    note("store_and_release");
    return S::store_and_release(key, mine, std::move(output), now);
  }
  void put(const cs::Key& key, cs::StoredOutput output) {
    note("put");
    S::put(key, std::move(output));
  }
  std::optional<cs::Reservation> reservation(const cs::Key& key) const {
    note("reservation");
    return S::reservation(key);
  }
  template <class F, class B = S>
  auto visit_output(const cs::Key& key, F&& f) const
      -> decltype(std::declval<const B&>().visit_output(key, std::forward<F>(f))) {
    note("visit_output");
    return B::visit_output(key, std::forward<F>(f));
  }

  /// @return the calls made since the last `take`, by name and in order ("acquire", "extend
  ///         store_and_release"; "" for none), and forgets them.
  std::string take() const {
    std::lock_guard<std::mutex> lock(calls_->mu);
    return std::exchange(calls_->since, std::string());
  }
  /// @return how many calls of `op` were made since the storage was wrapped.
  int total(const std::string& op) const {
    std::lock_guard<std::mutex> lock(calls_->mu);
    const auto it = calls_->totals.find(op);
    return it == calls_->totals.end() ? 0 : it->second;
  }

 private:
  struct Calls {
    std::mutex mu;
    std::string since;
    std::map<std::string, int> totals;
  };
  void note(const char* op) const {
    std::lock_guard<std::mutex> lock(calls_->mu);
    if (!calls_->since.empty()) calls_->since += ' ';
    calls_->since += op;
    ++calls_->totals[op];
  }
  std::shared_ptr<Calls> calls_;
};

/// @return the storage call the heartbeat extends with: one `extend_many` for the leases due
///         together where the storage has it.
template <class S>
const char* heartbeat_call() {
  return cs::storage_traits<S>::extends_in_batches ? "extend_many" : "extend";
}

/// @return `text` as an output of the kind `S` keeps, readable with `value<std::string>()`.
template <class S>
cs::StoredOutput make_stored(const std::string& text) {
  if constexpr (cs::storage_traits<S>::stores_objects) {
    return cs::StoredOutput::from_object(std::make_shared<const std::string>(text));
  } else {
    return cs::StoredOutput::from_bytes(cs::encode_value(text));
  }
}

struct EngineContractOptions {
  bool client_time = true;  // the storage compares expiries with the `now` it is given
};

/// @param make   returns a fresh, empty store.
/// @param reopen returns a second handle on the store it is given (a copy for an in-process
///               store; a new handle with its own connections for a shared one).
template <class MakeStorage, class Reopen>
void check_engine_contract(MakeStorage make, Reopen reopen, EngineContractOptions options = {}) {
  auto base = make();
  using S = decltype(base);
  using Storage = CountingStorage<S>;
  using Engine = cs::ReservationManager<cs::ManualClock, Storage>;
  constexpr cs::Duration interval = 10s;
  constexpr cs::Duration ttl = 30s;  // interval x 3
  cs::ManualClock clock;
  const cs::TimePoint t0 = clock.now();
  auto manager_options = [&](Recorder& recorder) {
    cs::ManagerOptions o;
    o.heartbeat_interval = interval;
    o.grace_multiplier = 3;
    o.listener = recorder.listener();
    return o;
  };
  // Two engines ("processes") on one store, each through a handle of its own.
  Recorder events_a;
  Recorder events_b;
  const Storage storage_a(base);
  const Storage storage_b(reopen(base));
  const Engine a(storage_a, clock, manager_options(events_a));
  const Engine b(storage_b, clock, manager_options(events_b));
  const cs::Key key("engine", "1", std::string("task\0seven", 10));
  auto no_losses = [](Recorder& events, const cs::Stats& s) {
    CHECK(events.count(cs::EventKind::lost) == 0);
    CHECK(events.count(cs::EventKind::failed) == 0);
    CHECK(s.lost == 0);
    CHECK(s.failures == 0);
  };

  SECTION("a free key is acquired in one operation, heartbeated, and then a hit with the value") {
    auto r = a.try_claim(key);
    CHECK(storage_a.take() == "acquire");
    REQUIRE(r.status() == cs::ClaimStatus::acquired);
    CHECK(r.is_acquired());
    CHECK_FALSE(r.is_hit());
    CHECK_FALSE(r.is_held());
    CHECK_THROWS_AS(r.holder(), std::logic_error);
    auto hold = std::move(r.hold());
    CHECK(hold.active());
    CHECK_FALSE(hold.took_over());
    CHECK(hold.reservation().token > 0);
    if (options.client_time) CHECK(hold.reservation().expires_at == t0 + ttl);
    CHECK(a.stats().executions == 1);
    CHECK(a.stats().holds_active == 1);
    CHECK(events_a.count(cs::EventKind::acquired) == 1);

    // The heartbeat extends it, on the manager's clock.
    const cs::TimePoint first_expiry = hold.reservation().expires_at;
    clock.advance(interval);
    REQUIRE(eventually([&] { return a.stats().heartbeats == 1; }, kBound, 0ms));
    CHECK(storage_a.take() == heartbeat_call<S>());
    CHECK(hold.reservation().expires_at > first_expiry);
    if (options.client_time) CHECK(hold.reservation().expires_at == t0 + interval + ttl);

    CHECK(hold.store_value(std::string("forty-two")) == cs::StoreStatus::stored);
    CHECK(storage_a.take() == "store_and_release");
    CHECK(a.stats().holds_active == 0);

    auto hit = b.try_claim(key);
    CHECK(storage_b.take() == "acquire");
    REQUIRE(hit.status() == cs::ClaimStatus::hit);
    CHECK(hit.is_hit());
    CHECK(hit.template value<std::string>() == "forty-two");
    CHECK_THROWS_AS(hit.hold(), std::logic_error);
    CHECK(b.stats().hits == 1);
    CHECK(b.stats().executions == 0);
    CHECK(events_b.count(cs::EventKind::hit) == 1);
    no_losses(events_a, a.stats());
  }

  SECTION("a key held by another owner is held, with its holder and time left, and nothing waits") {
    auto mine = a.try_claim(key);
    REQUIRE(mine.is_acquired());
    const cs::Reservation holder = mine.hold().reservation();
    storage_a.take();

    auto r = b.try_claim(key);
    CHECK(storage_b.take() == "acquire");
    REQUIRE(r.status() == cs::ClaimStatus::held);
    CHECK(r.is_held());
    CHECK_THROWS_AS(r.hold(), std::logic_error);
    CHECK_THROWS_AS(r.output(), std::logic_error);
    CHECK(r.holder().owner == holder.owner);
    CHECK(r.holder().token == holder.token);
    CHECK(r.remaining() > 0s);
    CHECK(r.remaining() <= ttl);
    if (options.client_time) CHECK(r.remaining() == ttl);
    const cs::Stats s = b.stats();
    CHECK(s.held == 1);
    CHECK(s.waits == 0);
    CHECK(s.waiters_active == 0);
    CHECK(s.executions == 0);
    CHECK(s.holds_active == 0);
    REQUIRE(events_b.count(cs::EventKind::held) == 1);
    CHECK(events_b.of(cs::EventKind::held)[0].holder == holder.owner);
    CHECK(events_b.count(cs::EventKind::waiting) == 0);

    // The holder's own manager, under another (generated) owner, is told the same.
    auto again = a.try_claim(key);
    CHECK(storage_a.take() == "acquire");
    REQUIRE(again.is_held());
    CHECK(again.holder().token == holder.token);
    CHECK(a.stats().held == 1);
  }

  SECTION("overwrite acquires over a stored output, which is still a hit until replaced") {
    a.put(key, make_stored<S>("old"));
    storage_a.take();
    cs::ClaimOptions overwrite;
    overwrite.overwrite = true;
    auto r = a.try_claim(key, overwrite);
    CHECK(storage_a.take() == "acquire");
    REQUIRE(r.is_acquired());
    auto hold = std::move(r.hold());

    auto old = b.try_claim(key);
    REQUIRE(old.is_hit());
    CHECK(old.template value<std::string>() == "old");
    CHECK(hold.store_value(std::string("new")) == cs::StoreStatus::stored);
    auto fresh = b.try_claim(key);
    REQUIRE(fresh.is_hit());
    CHECK(fresh.template value<std::string>() == "new");
    CHECK(a.stats().executions == 1);
  }

  SECTION("a chosen owner resumes its reservation after a restart, with the same token") {
    cs::ClaimOptions as_task;
    as_task.owner = "engine-1:task-7";
    auto first = a.try_claim(key, as_task);
    REQUIRE(first.is_acquired());
    // The process dies: its reservation is neither released nor extended any more.
    const cs::Reservation before = std::move(first.hold()).detach();
    CHECK(before.owner == "engine-1:task-7");
    storage_a.take();
    if (options.client_time) clock.advance(ttl / 2);

    auto resumed = b.try_claim(key, as_task);  // the restarted process, on a handle of its own
    CHECK(storage_b.take() == "acquire");
    REQUIRE(resumed.status() == cs::ClaimStatus::acquired);
    auto hold = std::move(resumed.hold());
    CHECK(hold.reservation().owner == "engine-1:task-7");
    CHECK(hold.reservation().token == before.token);
    CHECK_FALSE(hold.took_over());
    if (options.client_time) CHECK(hold.reservation().expires_at == t0 + ttl / 2 + ttl);
    CHECK(b.stats().takeovers == 0);
    CHECK(b.stats().executions == 1);
    CHECK(events_b.count(cs::EventKind::took_over) == 0);
    CHECK(events_b.count(cs::EventKind::acquired) == 1);

    // Another owner still finds it held; the resumed hold stores.
    auto other = a.try_claim(key);
    REQUIRE(other.is_held());
    CHECK(other.holder().token == before.token);
    CHECK(hold.store_value(std::string("resumed")) == cs::StoreStatus::stored);
    auto hit = a.try_claim(key);
    REQUIRE(hit.is_hit());
    CHECK(hit.template value<std::string>() == "resumed");
    no_losses(events_b, b.stats());
  }

  SECTION("a chosen owner already heartbeated by this manager is held, not held twice") {
    cs::ClaimOptions as_task;
    as_task.owner = "engine-1:task-7";
    auto first = a.try_claim(key, as_task);
    REQUIRE(first.is_acquired());
    storage_a.take();
    auto second = a.try_claim(key, as_task);
    CHECK(storage_a.take() == "acquire");
    REQUIRE(second.is_held());
    CHECK(second.holder().owner == "engine-1:task-7");
    CHECK(second.holder().token == first.hold().reservation().token);
    CHECK(second.remaining() > 0s);
    CHECK(a.stats().executions == 1);
    CHECK(a.stats().holds_active == 1);
    CHECK_THROWS_AS(a.claim(key, as_task), std::logic_error);
    CHECK(first.hold().store_value(std::string("once")) == cs::StoreStatus::stored);
  }

  SECTION("adopting a reservation this manager still heartbeats is held, not held twice") {
    auto r = a.try_claim(key);  // a generated owner
    REQUIRE(r.is_acquired());
    const cs::Reservation mine = r.hold().reservation();
    storage_a.take();
    auto again = a.adopt(key, mine);
    CHECK(storage_a.take() == "extend");
    REQUIRE(again.status() == cs::ClaimStatus::held);
    CHECK(again.holder().owner == mine.owner);
    CHECK(again.holder().token == mine.token);
    CHECK(a.stats().adoptions == 0);
    CHECK(a.stats().holds_active == 1);
    // The one hold stores, and nothing reports a loss.
    CHECK(r.hold().store_value(std::string("once")) == cs::StoreStatus::stored);
    no_losses(events_a, a.stats());
  }

  SECTION("a detached reservation adopted by another engine is stored there once, losing nothing") {
    auto r = a.try_claim(key);
    REQUIRE(r.is_acquired());
    storage_a.take();
    const cs::Reservation handed = std::move(r.hold()).detach();
    CHECK(storage_a.take().empty());  // neither released nor extended
    CHECK(a.stats().detached == 1);
    CHECK(a.stats().holds_active == 0);
    CHECK(events_a.count(cs::EventKind::detached) == 1);
    auto still = b.try_claim(key);
    REQUIRE(still.is_held());
    CHECK(still.holder().token == handed.token);
    storage_b.take();

    auto adopted = b.adopt(key, handed);
    CHECK(storage_b.take() == "extend");
    REQUIRE(adopted.status() == cs::ClaimStatus::acquired);
    auto hold = std::move(adopted.hold());
    CHECK(hold.reservation().owner == handed.owner);
    CHECK(hold.reservation().token == handed.token);
    CHECK(b.stats().adoptions == 1);
    CHECK(b.stats().executions == 0);
    CHECK(b.stats().holds_active == 1);
    CHECK(events_b.count(cs::EventKind::adopted) == 1);

    clock.advance(interval);  // the adopter's heartbeat keeps it now
    REQUIRE(eventually([&] { return b.stats().heartbeats == 1; }, kBound, 0ms));
    CHECK(storage_b.take() == heartbeat_call<S>());
    CHECK(a.stats().heartbeats == 0);

    CHECK(hold.store_value(std::string("handed on")) == cs::StoreStatus::stored);
    CHECK(storage_a.total("store_and_release") + storage_b.total("store_and_release") == 1);
    auto hit = a.try_claim(key);
    REQUIRE(hit.is_hit());
    CHECK(hit.template value<std::string>() == "handed on");
    no_losses(events_a, a.stats());
    no_losses(events_b, b.stats());
    CHECK(events_b.count(cs::EventKind::released) == 1);
  }

  SECTION("adopting a reservation taken over meanwhile reports the new holder and takes nothing") {
    cs::ClaimOptions brief;  // a short reservation: it expires while nobody extends it
    brief.heartbeat_interval = 50ms;
    brief.grace_multiplier = 2;
    auto r = a.try_claim(key, brief);
    REQUIRE(r.is_acquired());
    const cs::Reservation handed = std::move(r.hold()).detach();
    std::optional<typename Engine::try_claim_type> taker;
    auto take_over = [&] {
      auto t = b.try_claim(key);
      if (t.is_acquired()) taker = std::move(t);
      return taker.has_value();
    };
    if (options.client_time) {
      clock.advance(100ms);
      REQUIRE(take_over());
    } else {
      REQUIRE(eventually(take_over, kBound, 5ms));  // the server's clock passes the expiry
    }
    auto new_hold = std::move(taker->hold());
    CHECK(new_hold.took_over());
    CHECK(b.stats().takeovers == 1);
    storage_a.take();

    auto adopted = a.adopt(key, handed);
    CHECK(storage_a.take() == "extend");
    REQUIRE(adopted.status() == cs::ClaimStatus::held);
    CHECK(adopted.holder().owner == new_hold.reservation().owner);
    CHECK(adopted.holder().token == new_hold.reservation().token);
    CHECK(adopted.remaining() > 0s);
    CHECK(a.stats().adoptions == 0);
    CHECK(a.stats().holds_active == 0);
    CHECK(events_a.count(cs::EventKind::adopted) == 0);
    CHECK(new_hold.store_value(std::string("taker's")) == cs::StoreStatus::stored);
  }

  SECTION("adopting on a free key is free and takes nothing") {
    auto ghost = a.adopt(key, cs::Reservation{"engine-0:task-7", 1, t0});
    CHECK(storage_a.take() == "extend");
    CHECK(ghost.status() == cs::ClaimStatus::free);
    CHECK_FALSE(ghost.is_acquired());
    CHECK_FALSE(ghost.is_held());
    CHECK_THROWS_AS(ghost.hold(), std::logic_error);

    // Nor after its owner released it.
    auto r = a.try_claim(key);
    REQUIRE(r.is_acquired());
    const cs::Reservation gone = r.hold().reservation();
    r.hold().release(cs::ReleaseReason::aborted);
    CHECK(a.stats().aborted == 1);
    CHECK(a.stats().failures == 0);
    storage_a.take();
    CHECK(b.adopt(key, gone).status() == cs::ClaimStatus::free);
    CHECK(storage_b.take() == "extend");
    CHECK_FALSE(a.holder(key));
    CHECK(b.stats().adoptions == 0);

    CHECK_THROWS_AS(a.adopt(key, cs::Reservation{"someone", 0, t0}), std::invalid_argument);
    CHECK_THROWS_AS(a.adopt(key, cs::Reservation{"", 3, t0}), std::invalid_argument);
    storage_a.take();
  }

  SECTION("holder names who holds a key in one read-only operation, and nothing when free") {
    CHECK_FALSE(a.holder(key));
    CHECK(storage_a.take() == "reservation");
    auto r = b.try_claim(key);
    REQUIRE(r.is_acquired());
    const cs::Reservation held = r.hold().reservation();
    const std::optional<cs::Reservation> seen = a.holder(key);
    CHECK(storage_a.take() == "reservation");
    REQUIRE(seen);
    CHECK(seen->owner == held.owner);
    CHECK(seen->token == held.token);
    CHECK(seen->expires_at == held.expires_at);
    CHECK(r.hold().store_value(std::string("done")) == cs::StoreStatus::stored);
    CHECK_FALSE(a.holder(key));  // stored: nobody holds it
    CHECK(a.stats().executions == 0);
    CHECK(a.stats().hits == 0);
  }

  if constexpr (cs::storage_traits<Storage>::notifies_callbacks) {
    SECTION("an async claim waits without a poll and is woken by the other engine's store") {
      auto r = b.try_claim(key);
      REQUIRE(r.is_acquired());
      cs::ClaimOptions o;
      o.poll_interval = std::chrono::hours(1);  // and fake time stands still: only a notification
      auto waiting = a.claim_async(key, o);
      REQUIRE(clock.wait_for_sleepers(2));  // a's waiter thread and b's heartbeat
      CHECK(waiting.wait_for(0s) == std::future_status::timeout);
      CHECK(r.hold().store_value(std::string("done")) == cs::StoreStatus::stored);
      REQUIRE(waiting.wait_for(kBound) == std::future_status::ready);
      auto c = waiting.get();
      REQUIRE(c.is_hit());
      CHECK(c.waited());
      CHECK(c.template value<std::string>() == "done");
      CHECK(a.stats().waits == 1);
      no_losses(events_b, b.stats());
    }
  }

  SECTION("a cancelled token looks nothing up") {
    cs::CancellationSource cancel;
    cancel.cancel();
    cs::ClaimOptions o;
    o.cancel = cancel.token();
    CHECK_THROWS_AS(a.try_claim(key, o), cs::cancelled_error);
    CHECK_THROWS_AS(a.adopt(key, cs::Reservation{"x", 1, t0}, o), cs::cancelled_error);
    CHECK(storage_a.take().empty());
  }
}

/// For a networked storage: each engine call is exactly one round trip (`round_trips()` reads
/// the storage's own count). The manager's clock never moves, so no heartbeat adds to it.
template <class S, class RoundTrips>
void check_engine_round_trips(S& storage, RoundTrips round_trips) {
  using RoundTripManager = cs::ReservationManager<cs::ManualClock, S>;
  const RoundTripManager manager(storage, cs::ManualClock());
  const cs::Key key("engine", "1", "task-1");
  {  // connects, and prepares what the calls below use
    const cs::Key warm("engine", "1", "warm-up");
    auto w = manager.try_claim(warm);
    REQUIRE(w.is_acquired());
    REQUIRE(manager.holder(warm));
    REQUIRE(manager.adopt(warm, w.hold().reservation()).is_held());
    REQUIRE(w.hold().store_value(0) == cs::StoreStatus::stored);
    REQUIRE(manager.try_claim(warm).is_hit());
  }
  auto one_round_trip = [&](auto&& call) {
    const std::uint64_t before = round_trips();
    call();
    return round_trips() - before == 1;
  };
  CHECK(one_round_trip([&] { CHECK_FALSE(manager.holder(key)); }));
  std::optional<typename RoundTripManager::try_claim_type> mine;
  CHECK(one_round_trip([&] { mine = manager.try_claim(key); }));
  REQUIRE(mine->is_acquired());
  CHECK(one_round_trip([&] { CHECK(manager.try_claim(key).is_held()); }));
  CHECK(one_round_trip([&] {
    const auto holder = manager.holder(key);
    REQUIRE(holder);
    CHECK(holder->token == mine->hold().reservation().token);
  }));
  CHECK(one_round_trip(
      [&] { CHECK(mine->hold().store_value(std::string(1000, 'x')) == cs::StoreStatus::stored); }));
  CHECK(one_round_trip([&] {
    auto hit = manager.try_claim(key);
    REQUIRE(hit.is_hit());
    CHECK(hit.template value<std::string>() == std::string(1000, 'x'));
  }));
  CHECK(one_round_trip([&] { CHECK_FALSE(manager.holder(key)); }));
  CHECK(one_round_trip([&] {
    CHECK(manager.adopt(key, cs::Reservation{"engine-0", 1, {}}).status() == cs::ClaimStatus::free);
  }));
  const cs::Stats s = manager.stats();
  CHECK(s.hits == 2);
  CHECK(s.executions == 2);
  CHECK(s.held == 1);        // adopt, held in the warm-up, is not a try_claim
  CHECK(s.heartbeats == 0);  // nothing extended behind the count: the clock never moved
}

}  // namespace test
