// Asynchronous claims: claim_async's every path, the one waiter thread that serves all of them,
// and SerializedFunction::async over an executor. Time is the fake clock's wherever it matters.

#include <atomic>
#include <catch2/catch.hpp>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

using Manager = cs::ReservationManager<cs::ManualClock, cs::InMemoryStorage>;
using Claim = Manager::claim_type;

cs::Key key_of(const std::string& name) { return cs::Key("task", "1", name); }

cs::StoredOutput output_of(int v) {
  return cs::StoredOutput::from_object(std::make_shared<const int>(v));
}

// An in-memory store that counts acquires and can be made to fail them.
class FlakyStorage : public cs::InMemoryStorage {
 public:
  cs::AcquireResult acquire(const cs::Key& key, const cs::AcquireRequest& req) {
    ++state->acquires;
    if (state->fail) throw cs::storage_error("the store is down", key.describe());
    return InMemoryStorage::acquire(key, req);
  }
  struct State {
    std::atomic<int> acquires{0};
    std::atomic<bool> fail{false};
  };
  std::shared_ptr<State> state = std::make_shared<State>();
};

// A store that cannot notify: waiters must poll it.
class PolledStorage {
 public:
  std::optional<cs::StoredOutput> get(const cs::Key& k) { return s_.get(k); }
  cs::AcquireResult acquire(const cs::Key& k, const cs::AcquireRequest& r) {
    return s_.acquire(k, r);
  }
  cs::ExtendResult extend(const cs::Key& k, const cs::Reservation& m, cs::TimePoint n,
                          cs::Duration t) {
    return s_.extend(k, m, n, t);
  }
  cs::ReleaseStatus release(const cs::Key& k, const cs::Reservation& m) { return s_.release(k, m); }
  cs::StoreResult store_and_release(const cs::Key& k, const cs::Reservation& m, cs::StoredOutput o,
                                    cs::TimePoint n) {
    return s_.store_and_release(k, m, std::move(o), n);
  }
  void put(const cs::Key& k, cs::StoredOutput o) { s_.put(k, std::move(o)); }
  static constexpr bool stores_objects = true;

 private:
  cs::InMemoryStorage s_;
};

// A holder with no heartbeat (a process that died): its reservation, planted in the store.
cs::Reservation plant_holder(cs::InMemoryStorage& storage, const cs::Key& key, cs::TimePoint now,
                             cs::Duration ttl, const std::string& owner = "dead-owner") {
  const cs::AcquireResult r = storage.acquire(key, cs::AcquireRequest{owner, now, ttl, false});
  REQUIRE(r.status == cs::AcquireStatus::acquired);
  return r.reservation;
}

bool ready(std::future<Claim>& f) { return f.wait_for(0s) == std::future_status::ready; }

}  // namespace

TEST_CASE("claim_async completes at once, on the calling thread, when it need not wait") {
  cs::ManualClock clock;
  cs::InMemoryStorage storage;
  Manager manager(storage, clock);
  const cs::Key key = key_of("k");
  std::thread::id ran_on;
  std::optional<Claim> got;

  SECTION("a hit") {
    storage.put(key, output_of(7));
    manager.claim_async(key, {}, [&](std::exception_ptr e, std::optional<Claim> c) {
      REQUIRE_FALSE(e);
      ran_on = std::this_thread::get_id();
      got = std::move(c);
    });
    REQUIRE(got);
    CHECK(got->is_hit());
    CHECK_FALSE(got->waited());
    CHECK(got->value<int>() == 7);
    CHECK(manager.stats().hits == 1);
  }
  SECTION("a free key: its reservation, heartbeated") {
    manager.claim_async(key, {}, [&](std::exception_ptr e, std::optional<Claim> c) {
      REQUIRE_FALSE(e);
      ran_on = std::this_thread::get_id();
      got = std::move(c);
    });
    REQUIRE(got);
    REQUIRE_FALSE(got->is_hit());
    CHECK(got->hold().active());
    CHECK(manager.stats().holds_active == 1);
    got->hold().store(output_of(1));
  }
  CHECK(ran_on == std::this_thread::get_id());
  CHECK(manager.stats().waits == 0);
}

TEST_CASE("async waiters cost no thread each and all reuse the holder's output") {
  cs::ManualClock clock;
  FlakyStorage storage;
  Manager base(storage, clock);
  cs::ReservationManager<cs::ManualClock, FlakyStorage> manager(storage, clock);
  const cs::Key key = key_of("k");
  auto holder = manager.claim(key);
  auto hold = std::move(holder.hold());  // starts the heartbeat thread
  const std::size_t threads_before = test::thread_count();

  const int n = 300;
  std::vector<std::future<cs::Claim<cs::ManualClock, FlakyStorage>>> waiters;
  for (int i = 0; i < n; ++i) waiters.push_back(manager.claim_async(key));
  CHECK(test::thread_count() <= threads_before + 1);  // the waiter thread, once
  CHECK(manager.stats().waiters_active == n);
  CHECK(manager.stats().waits == n);
  // Settled: the heartbeat and the waiter thread both sleep until a deadline.
  REQUIRE(clock.wait_for_sleepers(2));
  storage.state->acquires = 0;

  hold.store(output_of(42));
  for (auto& w : waiters) {
    auto c = w.get();
    REQUIRE(c.is_hit());
    CHECK(c.waited());
    CHECK(c.value<int>() == 42);
  }
  CHECK(storage.state->acquires == 1);  // one look at the key, for all of its waiters
  CHECK(manager.stats().waiters_active == 0);
  CHECK(manager.stats().hits == n);
}

TEST_CASE("a claim that joins a key's waiters as the last of them completes is still checked") {
  // The second claim's `waiting` event comes after it found the key's waiters and before it
  // is on their list: there, the holder stores and the first claim completes, which leaves
  // the key with no waiter.
  cs::ManualClock clock;
  cs::InMemoryStorage storage;
  Manager holder_side(storage, clock);
  const cs::Key key = key_of("k");
  auto hold = std::move(holder_side.claim(key).hold());
  std::promise<Claim> first;
  std::future<Claim> first_done = first.get_future();
  bool first_completed_meanwhile = false;
  int waiting_events = 0;
  cs::ManagerOptions mo;
  mo.listener = [&](const cs::Event& e) {
    if (e.kind != cs::EventKind::waiting || ++waiting_events != 2) return;
    hold.store(output_of(5));
    first_completed_meanwhile = first_done.wait_for(test::kBound) == std::future_status::ready;
  };
  Manager manager(storage, clock, mo);
  manager.claim_async(
      key, {}, [&](std::exception_ptr, std::optional<Claim> c) { first.set_value(std::move(*c)); });
  std::future<Claim> second = manager.claim_async(key);
  REQUIRE(first_completed_meanwhile);
  CHECK(first_done.get().value<int>() == 5);
  REQUIRE(second.wait_for(test::kBound) == std::future_status::ready);
  Claim c = second.get();
  REQUIRE(c.is_hit());
  CHECK(c.value<int>() == 5);
  CHECK(manager.stats().waiters_active == 0);
}

TEST_CASE("an async waiter takes over a holder that died, at its expiry") {
  test::World w;
  const cs::Key key = key_of("k");
  const cs::Reservation dead = plant_holder(w.storage, key, w.clock.now(), 30s);

  std::future<Claim> waiter = w.manager.claim_async(key);
  REQUIRE(w.clock.wait_for_sleepers(1));
  CHECK_FALSE(ready(waiter));
  REQUIRE(w.recorder.count(cs::EventKind::waiting) == 1);
  CHECK(w.recorder.of(cs::EventKind::waiting)[0].holder == dead.owner);

  w.clock.advance(29s);
  REQUIRE(w.clock.wait_for_sleepers(1));
  CHECK_FALSE(ready(waiter));  // not a moment before the expiry
  w.clock.advance(1s);
  Claim c = waiter.get();
  REQUIRE_FALSE(c.is_hit());
  CHECK(c.waited());
  CHECK(c.hold().took_over());
  CHECK(w.recorder.count(cs::EventKind::took_over) == 1);
  CHECK(w.manager.stats().takeovers == 1);
}

TEST_CASE("async waiters left behind by a takeover wait on the new holder, named") {
  test::World w;
  const cs::Key key = key_of("k");
  plant_holder(w.storage, key, w.clock.now(), 30s);

  std::future<Claim> first = w.manager.claim_async(key);  // looks for both
  std::future<Claim> second = w.manager.claim_async(key);
  REQUIRE(w.clock.wait_for_sleepers(1));
  REQUIRE(w.recorder.count(cs::EventKind::waiting) == 2);
  w.clock.advance(30s);
  Claim c = first.get();
  REQUIRE_FALSE(c.is_hit());
  REQUIRE(w.recorder.wait_for(cs::EventKind::waiting, 3));
  const std::string lead = c.hold().reservation().owner;
  CHECK(w.recorder.of(cs::EventKind::waiting).back().holder == lead);
  CHECK(w.storage.reservation(key)->owner == lead);
  c.hold().store(output_of(2));
  CHECK(second.get().value<int>() == 2);
}

TEST_CASE("an async claim gives up after wait_timeout, naming the holder") {
  cs::ManualClock clock;
  cs::InMemoryStorage storage;
  Manager manager(storage, clock);
  const cs::Key key = key_of("k");
  const cs::Reservation holder = plant_holder(storage, key, clock.now(), 60s);
  cs::ClaimOptions options;
  options.wait_timeout = 5s;

  SECTION("after waiting") {
    std::future<Claim> waiter = manager.claim_async(key, options);
    REQUIRE(clock.wait_for_sleepers(1));
    clock.advance(4s);
    REQUIRE(clock.wait_for_sleepers(1));
    CHECK_FALSE(ready(waiter));
    clock.advance(1s);
    try {
      waiter.get();
      FAIL("no timeout");
    } catch (const cs::timeout_error& e) {
      CHECK(e.holder() == holder.owner);
      CHECK(e.holder_expires_at() == holder.expires_at);
    }
  }
  SECTION("at once, for a zero wait") {
    options.wait_timeout = 0s;
    std::future<Claim> waiter = manager.claim_async(key, options);
    REQUIRE(ready(waiter));
    CHECK_THROWS_AS(waiter.get(), cs::timeout_error);
  }
  CHECK(manager.stats().waiters_active == 0);
  CHECK(storage.reservation(key)->owner == holder.owner);  // nothing taken
}

TEST_CASE("cancelling an async claim completes it with cancelled_error at once") {
  cs::ManualClock clock;
  cs::InMemoryStorage storage;
  Manager manager(storage, clock);
  const cs::Key key = key_of("k");
  plant_holder(storage, key, clock.now(), 60s);
  cs::CancellationSource source;
  cs::ClaimOptions options;
  options.cancel = source.token();

  SECTION("while it waits") {
    std::future<Claim> waiter = manager.claim_async(key, options);
    std::future<Claim> other = manager.claim_async(key);  // same key, not cancelled
    REQUIRE(clock.wait_for_sleepers(1));
    source.cancel();
    CHECK_THROWS_AS(waiter.get(), cs::cancelled_error);  // no time step needed
    REQUIRE(clock.wait_for_sleepers(1));
    CHECK_FALSE(ready(other));
    CHECK(manager.stats().waiters_active == 1);
    clock.advance(60s);  // the holder's expiry: the other one takes over
    CHECK_FALSE(other.get().is_hit());
  }
  SECTION("before it starts: a stored output is still returned, nothing is reserved") {
    source.cancel();
    std::future<Claim> waiter = manager.claim_async(key, options);
    CHECK_THROWS_AS(waiter.get(), cs::cancelled_error);
    const cs::Key stored = key_of("stored");
    storage.put(stored, output_of(3));
    CHECK(manager.claim_async(stored, options).get().value<int>() == 3);
    CHECK_FALSE(storage.reservation(key_of("free")));
    CHECK_THROWS_AS(manager.claim_async(key_of("free"), options).get(), cs::cancelled_error);
    CHECK_FALSE(storage.reservation(key_of("free")));
  }
}

TEST_CASE("a storage failure while waiting completes every waiter of the key with it") {
  cs::ManualClock clock;
  FlakyStorage storage;
  cs::ReservationManager<cs::ManualClock, FlakyStorage> manager(storage, clock);
  const cs::Key key = key_of("k");
  auto holder = manager.claim(key);
  auto hold = std::move(holder.hold());
  std::vector<std::future<cs::Claim<cs::ManualClock, FlakyStorage>>> waiters;
  for (int i = 0; i < 3; ++i) waiters.push_back(manager.claim_async(key));
  REQUIRE(clock.wait_for_sleepers(2));

  storage.state->fail = true;
  hold.release();  // wakes the waiters, whose look fails
  for (auto& w : waiters) CHECK_THROWS_AS(w.get(), cs::storage_error);
  CHECK(manager.stats().waiters_active == 0);

  SECTION("and a failure on the first look goes to the callback too") {
    CHECK_THROWS_AS(manager.claim_async(key_of("other")).get(), cs::storage_error);
  }
}

TEST_CASE("a storage that cannot notify is polled by the waiter thread") {
  cs::ManualClock clock;
  PolledStorage storage;
  cs::ReservationManager<cs::ManualClock, PolledStorage> manager(storage, clock);
  const cs::Key key = key_of("k");
  auto holder = manager.claim(key);
  auto hold = std::move(holder.hold());
  cs::ClaimOptions options;
  options.poll_interval = 1s;
  auto waiter = manager.claim_async(key, options);
  REQUIRE(clock.wait_for_sleepers(2));
  hold.store(output_of(5));  // nobody is told
  REQUIRE(clock.wait_for_sleepers(1));
  CHECK(waiter.wait_for(0s) == std::future_status::timeout);
  clock.advance(1200ms);  // the poll, jittered up to 1.2 x
  CHECK(waiter.get().value<int>() == 5);
}

TEST_CASE("waiting callbacks run on one waiter thread for every key, never on the callers'") {
  cs::ManualClock clock;
  cs::InMemoryStorage storage;
  Manager manager(storage, clock);
  std::vector<Manager::hold_type> holds;
  for (int k = 0; k < 10; ++k)
    holds.push_back(std::move(manager.claim(key_of(std::to_string(k))).hold()));
  std::mutex mu;
  std::set<std::thread::id> threads;
  test::Counter completed;
  for (int k = 0; k < 10; ++k) {
    for (int i = 0; i < 20; ++i) {
      manager.claim_async(key_of(std::to_string(k)), {},
                          [&](std::exception_ptr e, std::optional<Claim> c) {
                            std::lock_guard<std::mutex> lock(mu);
                            if (!e && c && c->is_hit()) threads.insert(std::this_thread::get_id());
                            completed.arrive();
                          });
    }
  }
  for (std::size_t k = 0; k < holds.size(); ++k) holds[k].store(output_of(static_cast<int>(k)));
  REQUIRE(completed.wait_for(200));
  std::lock_guard<std::mutex> lock(mu);
  CHECK(threads.size() == 1);
  CHECK(threads.count(std::this_thread::get_id()) == 0);
}

TEST_CASE("a slow callback delays the other keys' wake-ups by its own run, no more") {
  cs::ManualClock clock;  // stands still: nothing but notifications wakes anyone
  cs::InMemoryStorage storage;
  Manager manager(storage, clock);
  auto hold_a = std::move(manager.claim(key_of("a")).hold());
  auto hold_b = std::move(manager.claim(key_of("b")).hold());
  auto hold_c = std::move(manager.claim(key_of("c")).hold());
  test::Gate c_may_return;
  test::Counter c_called;
  manager.claim_async(key_of("c"), {}, [&](std::exception_ptr, auto) {
    c_called.arrive();
    c_may_return.wait();  // the waiter thread is busy: a and b queue up meanwhile
  });
  auto a = manager.claim_async(key_of("a"));
  auto b = manager.claim_async(key_of("b"));
  REQUIRE(clock.wait_for_sleepers(2));

  hold_c.store(output_of(3));
  REQUIRE(c_called.wait_for(1));
  hold_a.store(output_of(1));
  hold_b.store(output_of(2));
  CHECK(a.wait_for(50ms) == std::future_status::timeout);  // behind the slow callback
  c_may_return.open();
  CHECK(a.get().value<int>() == 1);  // at once after it: no time passes on the clock
  CHECK(b.get().value<int>() == 2);
}

TEST_CASE("a waiting async claim keeps the manager alive, and its callback may drop it") {
  cs::ManualClock clock;
  cs::InMemoryStorage storage;
  const cs::Key key = key_of("k");
  Manager holder_side(storage, clock);
  auto hold = std::move(holder_side.claim(key).hold());
  std::promise<int> result;
  {
    auto manager = std::make_shared<Manager>(storage, clock);
    manager->claim_async(key, {},
                         [&result, manager](std::exception_ptr, std::optional<Claim> c) mutable {
                           manager.reset();  // the handle captured here is the last
                           result.set_value(c->value<int>());
                         });
  }
  hold.store(output_of(9));
  CHECK(result.get_future().get() == 9);
}

TEST_CASE("claim_async refuses invalid options before anything starts") {
  cs::InMemoryStorage storage;
  cs::ReservationManager<> manager(storage);
  cs::ClaimOptions options;
  options.poll_interval = 0s;
  bool called = false;
  CHECK_THROWS_AS(manager.claim_async(
                      key_of("k"), options,
                      [&](std::exception_ptr, std::optional<cs::ReservationManager<>::claim_type>) {
                        called = true;
                      }),
                  std::invalid_argument);
  CHECK_FALSE(called);
  CHECK_FALSE(storage.reservation(key_of("k")));
}

namespace {

using test::ManualExecutor;

}  // namespace

TEST_CASE("async completes a hit at once, without the executor") {
  cs::ManualClock clock;
  Manager manager(cs::InMemoryStorage{}, clock);
  int runs = 0;
  auto square = cs::serialize_cached(
      [&](int n) {
        ++runs;
        return n * n;
      },
      cs::TaskOptions{"square", "1"}, manager);
  CHECK(square(3) == 9);
  ManualExecutor executor;
  std::future<int> f = square.async(executor, 3);
  REQUIRE(f.wait_for(0s) == std::future_status::ready);
  CHECK(f.get() == 9);
  CHECK(executor.size() == 0);
  CHECK(runs == 1);
}

TEST_CASE("async runs a miss once on the executor, and its waiters reuse the value") {
  cs::ManualClock clock;
  Manager manager(cs::InMemoryStorage{}, clock);
  std::atomic<int> runs{0};
  auto square = cs::serialize_cached(
      [&](int n) {
        ++runs;
        return n * n;
      },
      cs::TaskOptions{"square", "1"}, manager);
  ManualExecutor executor;
  std::vector<std::future<int>> calls;
  for (int i = 0; i < 20; ++i) calls.push_back(square.async(executor, 4));
  CHECK(runs == 0);  // nothing ran on the callers' thread
  CHECK(executor.size() == 1);
  CHECK(manager.stats().waiters_active == 19);
  CHECK(executor.run_all() == 1);
  for (auto& c : calls) CHECK(c.get() == 16);
  CHECK(runs == 1);
  CHECK(executor.size() == 0);
}

TEST_CASE("async gives the function's exception to its own caller only") {
  cs::ManualClock clock;
  Manager manager(cs::InMemoryStorage{}, clock);
  std::atomic<int> runs{0};
  auto task = cs::serialize_cached(
      [&](int n) -> int {
        if (++runs == 1) throw std::runtime_error("first run fails");
        return n;
      },
      cs::TaskOptions{"task", "1"}, manager);
  ManualExecutor executor;
  std::future<int> first = task.async(executor, 1);
  std::future<int> second = task.async(executor, 1);
  // The first fails and releases; the second takes over and runs.
  REQUIRE(executor.run_until(second));
  CHECK_THROWS_AS(first.get(), std::runtime_error);
  CHECK(second.get() == 1);
  CHECK(runs == 2);
}

TEST_CASE("an executor that refuses work fails the call and gives the reservation back") {
  cs::ManualClock clock;
  cs::InMemoryStorage storage;
  Manager manager(storage, clock);
  auto task = cs::serialize_cached([](int n) { return n; }, cs::TaskOptions{"task", "1"}, manager);
  auto refuse = [](std::function<void()>) { throw std::runtime_error("pool is shutting down"); };
  CHECK_THROWS_WITH(task.async(refuse, 1).get(), "pool is shutting down");
  CHECK(manager.stats().failures == 0);  // nothing ran, nothing failed
  auto again = manager.try_claim(task.key(1));
  CHECK(again.is_acquired());  // free at once, no expiry to sit out
}

TEST_CASE("async computes again an output that it cannot read") {
  cs::ManualClock clock;
  test::ByteMemoryStorage storage;
  cs::ReservationManager<cs::ManualClock, test::ByteMemoryStorage> manager(storage, clock);
  auto task = cs::serialize_cached([](int n) { return std::to_string(n); },
                                   cs::TaskOptions{"task", "1"}, manager);
  storage.put(task.key(5), cs::StoredOutput::from_bytes("not an encoded string"));
  ManualExecutor executor;
  std::future<std::string> f = task.async(executor, 5);
  CHECK(executor.run_all() == 1);
  CHECK(f.get() == "5");
  CHECK(manager.stats().corrupt_outputs == 1);
  CHECK(task(5) == "5");  // replaced
}

TEST_CASE("async of a cache-only task runs the function on the executor and stores it") {
  cs::ManualClock clock;
  Manager manager(cs::InMemoryStorage{}, clock);
  int runs = 0;
  cs::TaskOptions options{"task", "1"};
  options.serialize = false;
  auto task = cs::serialize_cached(
      [&](int n) {
        ++runs;
        return n + 1;
      },
      options, manager);
  ManualExecutor executor;
  std::future<int> f = task.async(executor, 1);
  CHECK(executor.run_all() == 1);
  CHECK(f.get() == 2);
  CHECK(task.async(executor, 1).get() == 2);  // a hit now
  CHECK(runs == 1);
}
