// serialize_cached, specified through its observable behaviour. Every test runs on a fake clock:
// threads are synchronised with gates and ManualClock::wait_for_sleepers, never with sleeps.

#include <atomic>
#include <catch2/catch.hpp>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "point.hpp"
#include "support.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

/// An in-memory store whose operations can be made to fail, shared by all copies.
class FlakyStorage : public cs::InMemoryStorage {
 public:
  struct Faults {
    std::atomic<bool> extend{false};
    std::atomic<bool> acquire{false};
    std::atomic<bool> store{false};
    std::atomic<bool> zero_remaining{false};  // reports live holders with no time left
  };

  cs::AcquireResult acquire(const cs::Key& key, const cs::AcquireRequest& req) {
    if (faults->acquire) throw cs::storage_error("connection refused", key.describe());
    cs::AcquireResult r = InMemoryStorage::acquire(key, req);
    if (faults->zero_remaining && r.status == cs::AcquireStatus::held) r.remaining = 0s;
    return r;
  }
  std::optional<cs::StoredOutput> get(const cs::Key& key) const {
    if (faults->acquire) throw cs::storage_error("connection refused", key.describe());
    return InMemoryStorage::get(key);
  }
  template <class F>
  bool visit_output(const cs::Key& key, F&& f) const {  // hits use it instead of get
    if (faults->acquire) throw cs::storage_error("connection refused", key.describe());
    return InMemoryStorage::visit_output(key, std::forward<F>(f));
  }
  cs::ExtendResult extend(const cs::Key& key, const cs::Reservation& mine, cs::TimePoint now,
                          cs::Duration ttl) {
    if (faults->extend) throw cs::storage_error("network partition", key.describe());
    return InMemoryStorage::extend(key, mine, now, ttl);
  }
  std::vector<cs::ExtendResult> extend_many(const std::vector<cs::Extension>& batch,
                                            cs::TimePoint now) {  // the heartbeat's: through extend
    return cs::detail::extend_each(*this, batch, now);
  }
  cs::StoreResult store_and_release(const cs::Key& key, const cs::Reservation& mine,
                                    cs::StoredOutput out, cs::TimePoint now) {
    if (faults->store) throw cs::storage_error("disk full", key.describe());
    return InMemoryStorage::store_and_release(key, mine, std::move(out), now);
  }

  std::shared_ptr<Faults> faults = std::make_shared<Faults>();
};

using FlakyManager = cs::ReservationManager<cs::ManualClock, FlakyStorage>;

/// An in-memory store, wrapped member by member, that counts how hits read it. It has no
/// visit_output: hits must go through get.
class GetOnlyStorage {
 public:
  static constexpr bool stores_objects = true;
  struct Calls {
    std::atomic<int> get{0};
    std::atomic<int> visit{0};
  };

  std::optional<cs::StoredOutput> get(const cs::Key& key) const {
    ++calls->get;
    return inner.get(key);
  }
  cs::AcquireResult acquire(const cs::Key& key, const cs::AcquireRequest& req) {
    return inner.acquire(key, req);
  }
  cs::ExtendResult extend(const cs::Key& key, const cs::Reservation& mine, cs::TimePoint now,
                          cs::Duration ttl) {
    return inner.extend(key, mine, now, ttl);
  }
  cs::ReleaseStatus release(const cs::Key& key, const cs::Reservation& mine) {
    return inner.release(key, mine);
  }
  cs::StoreResult store_and_release(const cs::Key& key, const cs::Reservation& mine,
                                    cs::StoredOutput out, cs::TimePoint now) {
    return inner.store_and_release(key, mine, std::move(out), now);
  }
  void put(const cs::Key& key, cs::StoredOutput out) { inner.put(key, std::move(out)); }
  cs::Subscription subscribe(const cs::Key& key, cs::Signal& signal) {
    return inner.subscribe(key, signal);
  }

  cs::InMemoryStorage inner;
  std::shared_ptr<Calls> calls = std::make_shared<Calls>();
};

/// The same, with visit_output.
class VisitingStorage : public GetOnlyStorage {
 public:
  template <class F>
  bool visit_output(const cs::Key& key, F&& f) const {
    ++calls->visit;
    return inner.visit_output(key, std::forward<F>(f));
  }
};

}  // namespace

TEST_CASE("a caller runs the function once and later callers get the cached output at once") {
  test::World w;
  std::atomic<int> runs{0};
  auto square = cs::serialize_cached(
      [&](int n) {
        ++runs;
        return n * n;
      },
      cs::TaskOptions{"square", "1.0"}, w.manager);
  CHECK(square(3) == 9);
  CHECK(square(3) == 9);
  CHECK(square(4) == 16);
  CHECK(runs == 2);
  const cs::Stats s = w.manager.stats();
  CHECK(s.hits == 1);
  CHECK(s.misses == 2);
  CHECK(s.executions == 2);
  CHECK(s.waits == 0);
  CHECK(w.clock.now() == cs::ManualClock::default_start());
  CHECK_FALSE(w.storage.reservation(square.key(3)));  // released after the store
}

TEST_CASE("a second caller waits and reuses the first caller's output") {
  const int callers = GENERATE(2, 16, 100);
  CAPTURE(callers);
  test::World w;
  test::Busy busy;
  std::atomic<int> runs{0};
  auto square = cs::serialize_cached(
      [&](int n) {
        busy.enter();
        ++runs;
        return n * n;
      },
      cs::TaskOptions{"square", "1.0"}, w.manager);

  std::vector<int> results(static_cast<std::size_t>(callers), 0);
  test::Threads threads;
  threads.spawn([&] { results[0] = square(2); });
  REQUIRE(busy.started.wait_for(1));
  for (int i = 1; i < callers; ++i) {
    threads.spawn([&, i] { results[static_cast<std::size_t>(i)] = square(2); });
  }
  // Every other caller is asleep on the clock, waiting; so is the heartbeat thread.
  REQUIRE(w.clock.wait_for_sleepers(static_cast<std::size_t>(callers - 1) + 1));
  busy.gate.open();
  threads.join();

  CHECK(runs == 1);
  CHECK(busy.started.value() == 1);
  for (int r : results) CHECK(r == 4);
  const cs::Stats s = w.manager.stats();
  CHECK(s.executions == 1);
  CHECK(s.waits == static_cast<std::uint64_t>(callers - 1));
  CHECK(s.hits == static_cast<std::uint64_t>(callers - 1));

  // Each waiter was told who it waited for and until when (Flyte #5096).
  const auto acquired = w.recorder.of(cs::EventKind::acquired);
  REQUIRE(acquired.size() == 1);
  const auto waiting = w.recorder.of(cs::EventKind::waiting);
  CHECK(waiting.size() == static_cast<std::size_t>(callers - 1));
  for (const auto& e : waiting) {
    CHECK(e.holder == acquired[0].owner);
    CHECK(e.expires_at == acquired[0].expires_at);
    CHECK(e.task == "square");
  }
  CHECK(w.recorder.count(cs::EventKind::woke) == static_cast<std::size_t>(callers - 1));
  CHECK(w.clock.now() == cs::ManualClock::default_start());
}

TEST_CASE("a hundred threads calling at once run the function once and all get its value") {
  test::World w;
  std::atomic<int> runs{0};
  auto square = cs::serialize_cached(
      [&](int n) {
        ++runs;
        return n * n;
      },
      cs::TaskOptions{"square", "1.0"}, w.manager);
  std::atomic<int> wrong{0};
  test::Threads threads;
  for (int i = 0; i < 100; ++i) {
    threads.spawn([&] {
      if (square(7) != 49) ++wrong;
    });
  }
  threads.join();
  CHECK(runs == 1);
  CHECK(wrong == 0);
  CHECK(w.manager.stats().executions == 1);
}

TEST_CASE("calls with distinct keys run in parallel") {
  test::World w;
  test::Busy busy;
  auto f = cs::serialize_cached(
      [&](int n) {
        busy.enter();
        return n;
      },
      cs::TaskOptions{"identity", "1"}, w.manager);
  test::Threads threads;
  int a = 0, b = 0;
  threads.spawn([&] { a = f(1); });
  threads.spawn([&] { b = f(2); });
  // Both bodies are running at the same time: neither waits for the other.
  REQUIRE(busy.started.wait_for(2));
  CHECK(w.manager.stats().waits == 0);
  busy.gate.open();
  threads.join();
  CHECK(a == 1);
  CHECK(b == 2);
}

TEST_CASE("a function that throws releases at once, and a waiter takes over and runs it") {
  test::World w;
  test::Busy busy;
  std::atomic<int> calls{0};
  auto f = cs::serialize_cached(
      [&](int n) {
        const int call = ++calls;
        busy.started.arrive();
        if (call == 1) {
          busy.gate.wait();
          throw std::runtime_error("boom");
        }
        return n * 10;
      },
      cs::TaskOptions{"flaky", "1"}, w.manager);

  test::Threads threads;
  std::string first_error;
  int second = 0;
  threads.spawn([&] {
    try {
      f(1);
    } catch (const std::runtime_error& e) {
      first_error = e.what();
    }
  });
  REQUIRE(busy.started.wait_for(1));
  threads.spawn([&] { second = f(1); });
  REQUIRE(w.clock.wait_for_sleepers(2));  // the waiter and the heartbeat
  busy.gate.open();
  threads.join();

  CHECK(first_error == "boom");  // the exception reaches its own caller only
  CHECK(second == 10);           // the waiter ran the function itself
  CHECK(calls == 2);
  // No time passed: the waiter did not sit out the failed holder's expiry.
  CHECK(w.clock.now() == cs::ManualClock::default_start());
  const cs::Stats s = w.manager.stats();
  CHECK(s.failures == 1);
  CHECK(s.executions == 2);
  CHECK(s.takeovers == 0);
  CHECK(w.recorder.count(cs::EventKind::failed) == 1);

  SECTION("a failure is not cached: the next call runs the function again") {
    calls = 0;
    auto g = cs::serialize_cached(
        [&](int n) -> int {
          if (++calls == 1) throw std::invalid_argument("bad");
          return n;
        },
        cs::TaskOptions{"once-bad", "1"}, w.manager);
    CHECK_THROWS_AS(g(5), std::invalid_argument);
    CHECK_FALSE(w.storage.reservation(g.key(5)));
    CHECK(g(5) == 5);
    CHECK(calls == 2);
  }
}

TEST_CASE("a dead holder is taken over exactly at its expiry and not before") {
  test::World w;
  std::atomic<int> runs{0};
  auto f = cs::serialize_cached(
      [&](int n) {
        ++runs;
        return n + 1;
      },
      cs::TaskOptions{"inc", "1"}, w.manager);
  // A holder in another process that acquired and then died: its reservation is never extended.
  const cs::TimePoint t0 = w.clock.now();
  const auto dead = w.storage.acquire(f.key(1), {"deadhost:4242:00ff:1", t0, 30s, false});
  REQUIRE(dead.status == cs::AcquireStatus::acquired);

  test::Threads threads;
  int result = 0;
  threads.spawn([&] { result = f(1); });
  REQUIRE(w.clock.wait_for_sleepers(1));
  CHECK(w.clock.next_deadline() == t0 + 30s);  // it sleeps until the expiry, no polling

  w.clock.advance(30s - 1ns);
  REQUIRE(w.clock.wait_for_sleepers(1));  // still asleep: the reservation is live
  CHECK(runs == 0);

  w.clock.advance(1ns);
  threads.join();
  CHECK(result == 2);
  CHECK(runs == 1);
  CHECK(w.manager.stats().takeovers == 1);
  const auto took = w.recorder.of(cs::EventKind::took_over);
  REQUIRE(took.size() == 1);
  CHECK(took[0].holder == "deadhost:4242:00ff:1");
  CHECK(took[0].token > dead.reservation.token);
}

TEST_CASE("heartbeats keep a long run's reservation alive across many intervals") {
  test::World w;  // heartbeat every 10 s, reservations live 30 s
  test::Busy busy;
  std::atomic<int> runs{0};
  auto f = cs::serialize_cached(
      [&](int n) {
        ++runs;
        busy.enter();
        return n;
      },
      cs::TaskOptions{"long", "1"}, w.manager);
  test::Threads threads;
  int a = 0, b = 0;
  threads.spawn([&] { a = f(1); });
  REQUIRE(busy.started.wait_for(1));
  threads.spawn([&] { b = f(1); });
  REQUIRE(w.clock.wait_for_sleepers(2));
  const cs::Key key = f.key(1);
  const cs::Reservation first = *w.storage.reservation(key);

  for (int i = 1; i <= 30; ++i) {  // 300 s: ten times the reservation's lifetime
    w.clock.advance(10s);
    REQUIRE(w.clock.wait_for_sleepers(2));  // the heartbeat has extended, the waiter re-slept
    const auto now_held = w.storage.reservation(key);
    REQUIRE(now_held);
    CHECK(now_held->owner == first.owner);
    CHECK(now_held->token == first.token);
    CHECK(now_held->expires_at == w.clock.now() + 30s);
  }
  busy.gate.open();
  threads.join();
  CHECK(a == 1);
  CHECK(b == 1);
  CHECK(runs == 1);
  const cs::Stats s = w.manager.stats();
  CHECK(s.heartbeats == 30);
  CHECK(s.takeovers == 0);
  CHECK(s.lost == 0);
}

/// An in-memory store whose extensions stop at a gate, then record the key they were given.
class StalledExtendStorage : public cs::InMemoryStorage {
 public:
  struct Shared {
    test::Counter entered;
    test::Gate go;
    std::mutex mu;
    std::vector<std::string> keys;
  };

  cs::ExtendResult extend(const cs::Key& key, const cs::Reservation& mine, cs::TimePoint now,
                          cs::Duration ttl) {
    shared->entered.arrive();
    shared->go.wait();
    {
      std::lock_guard<std::mutex> lock(shared->mu);
      shared->keys.push_back(key.encoded());
    }
    return InMemoryStorage::extend(key, mine, now, ttl);
  }
  std::vector<cs::ExtendResult> extend_many(const std::vector<cs::Extension>& batch,
                                            cs::TimePoint now) {
    return cs::detail::extend_each(*this, batch, now);
  }

  std::shared_ptr<Shared> shared = std::make_shared<Shared>();
};

TEST_CASE("a call may return while the heartbeat extends its reservation: the key stays valid") {
  // A wrapper's hold refers to the call's key until the heartbeat first needs it; the heartbeat
  // then copies it, so an extension in progress when the call returns still has a key.
  cs::ManualClock clock;
  StalledExtendStorage storage;
  cs::ReservationManager<cs::ManualClock, StalledExtendStorage> manager(storage, clock);
  auto f = cs::serialize_cached(
      [&](int n) {
        clock.advance(10s);  // the first extension falls due while the body runs
        if (!storage.shared->entered.wait_for(1)) throw std::runtime_error("no extension");
        return n;  // the heartbeat is inside extend, and stays there until the gate opens
      },
      cs::TaskOptions{"stalled", "1"}, manager);
  CHECK(f(7) == 7);
  const std::string expected = f.key(7).encoded();
  storage.shared->go.open();
  REQUIRE(test::eventually([&] {
    std::lock_guard<std::mutex> lock(storage.shared->mu);
    return !storage.shared->keys.empty();
  }));
  std::lock_guard<std::mutex> lock(storage.shared->mu);
  CHECK(storage.shared->keys.front() == expected);
  CHECK(manager.stats().lost == 0);  // the hold had finished: its failed extension is moot
}

TEST_CASE("fencing: a holder that stalled past its expiry does not overwrite its successor") {
  cs::ManualClock clock;
  FlakyStorage storage;
  test::Recorder recorder;
  cs::ManagerOptions options;
  options.listener = recorder.listener();
  FlakyManager manager(storage, clock, options);

  test::Busy busy;
  std::atomic<int> calls{0};
  auto f = cs::serialize_cached(
      [&](int) -> std::string {
        if (++calls == 1) {
          busy.started.arrive();
          busy.gate.wait();
          return "stale";
        }
        return "fresh";
      },
      cs::TaskOptions{"fenced", "1"}, manager);

  storage.faults->extend = true;  // the first holder's heartbeats cannot get through
  test::Threads threads;
  std::string first, second;
  threads.spawn([&] { first = f(1); });
  REQUIRE(busy.started.wait_for(1));
  threads.spawn([&] { second = f(1); });
  REQUIRE(clock.wait_for_sleepers(2));
  clock.advance(10s);
  REQUIRE(clock.wait_for_sleepers(2));
  clock.advance(10s);
  REQUIRE(clock.wait_for_sleepers(2));
  clock.advance(10s);  // the first holder's reservation expires; the waiter takes over
  REQUIRE(recorder.wait_for(cs::EventKind::released));
  CHECK(recorder.count(cs::EventKind::took_over) == 1);
  REQUIRE(recorder.wait_for(cs::EventKind::heartbeat_failed, 3));  // at 10, 20 and 30 s

  storage.faults->extend = false;
  REQUIRE(clock.wait_for_sleepers(1));  // the heartbeat (the second caller is done)
  clock.advance(10s);                   // the stalled holder's next heartbeat finds it lost
  REQUIRE(recorder.wait_for(cs::EventKind::lost));
  const auto lost = recorder.of(cs::EventKind::lost);
  const auto acquired = recorder.of(cs::EventKind::acquired);
  REQUIRE(acquired.size() == 2);
  CHECK(lost[0].owner == acquired[0].owner);

  busy.gate.open();
  threads.join();
  CHECK(first == "stale");  // its own caller still gets the value it computed
  CHECK(second == "fresh");
  CHECK(f(1) == "fresh");  // but the store kept the successor's output
  CHECK(calls == 2);
  const cs::Stats s = manager.stats();
  CHECK(s.lost == 1);
  CHECK(s.takeovers == 1);
  CHECK(recorder.count(cs::EventKind::lost) == 1);
}

TEST_CASE("wait_timeout bounds how long a caller waits for another holder") {
  test::World w;
  test::Busy busy;
  cs::TaskOptions options{"slow", "1"};
  options.wait_timeout = 5s;
  auto f = cs::serialize_cached(
      [&](int n) {
        busy.enter();
        return n;
      },
      options, w.manager);
  test::Threads threads;
  threads.spawn([&] { f(1); });
  REQUIRE(busy.started.wait_for(1));
  const std::string holder = w.storage.reservation(f.key(1))->owner;

  SECTION("the waiter gives up when the bound passes, naming the holder") {
    std::optional<cs::timeout_error> error;
    test::Counter done;
    threads.spawn([&] {
      try {
        f(1);
      } catch (const cs::timeout_error& e) {
        error = e;
      }
      done.arrive();
    });
    REQUIRE(w.clock.wait_for_sleepers(2));
    w.clock.advance(5s - 1ns);
    REQUIRE(w.clock.wait_for_sleepers(2));
    CHECK_FALSE(error);
    w.clock.advance(1ns);
    REQUIRE(done.wait_for(1));  // gave up while the holder still works
    busy.gate.open();
    threads.join();
    REQUIRE(error);
    CHECK(error->holder() == holder);
    CHECK(std::string(error->what()).find("gave up waiting after 5s") != std::string::npos);
    CHECK(std::string(error->what()).find("task 'slow'") != std::string::npos);
  }
  SECTION("a per-call bound of zero fails at once") {
    cs::CallOptions call;
    call.wait_timeout = 0s;
    REQUIRE_THROWS_AS(f.call(call, 1), cs::timeout_error);
    busy.gate.open();
  }
  threads.join();
  CHECK(w.storage.get(f.key(1)));  // the holder was not disturbed
}

TEST_CASE("a waiting caller can be cancelled, and it leaves nothing behind") {
  test::World w;
  test::Busy busy;
  auto f = cs::serialize_cached(
      [&](int n) {
        busy.enter();
        return n;
      },
      cs::TaskOptions{"cancellable", "1"}, w.manager);
  test::Threads threads;
  threads.spawn([&] { f(1); });
  REQUIRE(busy.started.wait_for(1));

  cs::CancellationSource source;
  cs::CallOptions call;
  call.cancel = source.token();
  bool cancelled = false;
  test::Counter done;
  threads.spawn([&] {
    try {
      f.call(call, 1);
    } catch (const cs::cancelled_error& e) {
      cancelled = std::string(e.what()).find("cancelled while waiting") != std::string::npos;
    }
    done.arrive();
  });
  REQUIRE(w.clock.wait_for_sleepers(2));
  source.cancel();
  REQUIRE(done.wait_for(1));  // woken by the cancellation, with the holder still at work
  busy.gate.open();
  threads.join();
  CHECK(cancelled);
  CHECK(w.clock.now() == cs::ManualClock::default_start());

  SECTION("a call whose token is already cancelled still gets a cached output") {
    CHECK(f.call(call, 1) == 1);
  }
}

TEST_CASE("a call whose token is already cancelled neither runs the function nor reserves") {
  test::World w;
  std::atomic<int> runs{0};
  auto f = cs::serialize_cached(
      [&](int n) {
        ++runs;
        return n;
      },
      cs::TaskOptions{"cancelled early", "1"}, w.manager);
  cs::CancellationSource source;
  source.cancel();
  cs::CallOptions call;
  call.cancel = source.token();

  SECTION("a free key: cancelled_error, and the key stays free") {
    REQUIRE_THROWS_AS(f.call(call, 1), cs::cancelled_error);
    REQUIRE_THROWS_WITH(f.call(call, 1), Catch::Contains("cancelled before the call started"));
    CHECK(runs == 0);
    CHECK_FALSE(w.storage.reservation(f.key(1)));
    CHECK(w.recorder.count(cs::EventKind::acquired) == 0);
    CHECK(f(1) == 1);  // an uncancelled call runs it
  }
  SECTION("through the manager, with or without a probe before the acquisition") {
    cs::ClaimOptions options;
    options.cancel = source.token();
    REQUIRE_THROWS_AS(w.manager.claim(f.key(1), options), cs::cancelled_error);
    cs::ManualClock clock;
    test::ByteMemoryStorage storage;  // probes first, like the in-memory storage
    cs::ReservationManager<cs::ManualClock, test::ByteMemoryStorage> bytes(storage, clock);
    REQUIRE_THROWS_AS(bytes.claim(f.key(1), options), cs::cancelled_error);
    CHECK_FALSE(storage.reservation(f.key(1)));
  }
  SECTION("a stored output is still returned") {
    CHECK(f(2) == 2);
    CHECK(f.call(call, 2) == 2);
    CHECK(runs == 1);
  }
}

TEST_CASE("overwrite_cache runs the function and replaces the output, one caller at a time") {
  test::World w;
  std::atomic<int> version{0};
  std::atomic<int> running{0};
  std::atomic<int> most_running{0};
  test::Gate gate;
  auto body = [&](int) {
    const int now_running = ++running;
    int seen = most_running;
    while (now_running > seen && !most_running.compare_exchange_weak(seen, now_running)) {
    }
    gate.wait();
    --running;
    return ++version;
  };
  auto f = cs::serialize_cached(body, cs::TaskOptions{"v", "1"}, w.manager);
  cs::TaskOptions overwrite{"v", "1"};
  overwrite.overwrite_cache = true;
  auto refresh = cs::serialize_cached(body, overwrite, w.manager);
  REQUIRE(f.key(0) == refresh.key(0));

  gate.open();
  CHECK(f(0) == 1);
  CHECK(f(0) == 1);        // a hit
  CHECK(refresh(0) == 2);  // runs despite the hit
  CHECK(f(0) == 2);        // and replaced the output

  SECTION("concurrent overwrites are serialised") {
    test::Gate slow;
    test::Counter started;
    auto g = cs::serialize_cached(
        [&](int) {
          const int now_running = ++running;
          int seen = most_running;
          while (now_running > seen && !most_running.compare_exchange_weak(seen, now_running)) {
          }
          started.arrive();
          slow.wait();
          --running;
          return ++version;
        },
        overwrite, w.manager);
    test::Threads threads;
    threads.spawn([&] { g(0); });
    REQUIRE(started.wait_for(1));
    threads.spawn([&] { g(0); });
    REQUIRE(w.clock.wait_for_sleepers(2));
    slow.open();
    threads.join();
    CHECK(started.value() == 2);
    CHECK(most_running == 1);
    CHECK(f(0) == 4);
  }
}

TEST_CASE("with serialisation off, calls only cache: concurrent misses all run") {
  test::World w;
  test::Busy busy;
  cs::TaskOptions options{"unserialised", "1"};
  options.serialize = false;
  auto f = cs::serialize_cached(
      [&](int n) {
        busy.enter();
        return n * 2;
      },
      options, w.manager);
  test::Threads threads;
  threads.spawn([&] { f(1); });
  threads.spawn([&] { f(1); });
  REQUIRE(busy.started.wait_for(2));  // both ran: nothing serialised them
  busy.gate.open();
  threads.join();
  CHECK(f(1) == 2);  // the output was cached
  CHECK(busy.started.value() == 2);
  CHECK(w.manager.stats().hits == 1);
  CHECK_FALSE(w.storage.reservation(f.key(1)));
}

TEST_CASE("ignored inputs do not change the key") {
  test::World w;
  std::atomic<int> runs{0};
  cs::TaskOptions options{"train", "1"};
  options.input_names = {"epochs", "trace_id"};
  options.ignored_inputs = {"trace_id"};
  auto train = cs::serialize_cached(
      [&](int epochs, const std::string&) {
        ++runs;
        return epochs * 2;
      },
      options, w.manager);
  CHECK(train(3, "run-a") == 6);
  CHECK(train(3, "run-b") == 6);
  CHECK(train(4, "run-a") == 8);
  CHECK(runs == 2);
}

TEST_CASE("arguments reach the function intact, whatever their form") {
  test::World w;
  auto join = cs::serialize_cached(
      [](const std::vector<std::string>& parts, std::string sep, std::string&& tail) {
        std::string out;
        for (const auto& p : parts) out += p + sep;
        return out + tail;
      },
      cs::TaskOptions{"join", "1"}, w.manager);
  CHECK(join({"a", "b"}, "-", std::string("z")) == "a-b-z");
  CHECK(join({"a", "b"}, "-", std::string("z")) == "a-b-z");
  CHECK(w.manager.stats().hits == 1);
}

TEST_CASE("outputs kept as bytes go through the codec") {
  cs::ManualClock clock;
  test::ByteMemoryStorage storage;
  cs::ReservationManager<cs::ManualClock, test::ByteMemoryStorage> manager(storage, clock);
  std::atomic<int> runs{0};
  auto f = cs::serialize_cached(
      [&](int n) {
        ++runs;
        return std::vector<std::string>(static_cast<std::size_t>(n), "x");
      },
      cs::TaskOptions{"bytes", "1"}, manager);
  CHECK(f(3) == std::vector<std::string>{"x", "x", "x"});
  CHECK(f(3) == std::vector<std::string>{"x", "x", "x"});
  CHECK(runs == 1);
  const auto stored = storage.get(f.key(3));
  REQUIRE(stored);
  CHECK_FALSE(stored->object);
  CHECK(stored->bytes == cs::encode_value(std::vector<std::string>{"x", "x", "x"}));

  SECTION("undecodable bytes are reported, computed again under the reservation and replaced") {
    storage.put(f.key(4), cs::StoredOutput::from_bytes("garbage"));
    CHECK(f(4) == std::vector<std::string>(4, "x"));
    CHECK(runs == 2);
    CHECK(manager.stats().corrupt_outputs == 1);
    CHECK(storage.get(f.key(4))->bytes == cs::encode_value(std::vector<std::string>(4, "x")));
    CHECK(f(4) == std::vector<std::string>(4, "x"));  // a hit again: the key is not poisoned
    CHECK(runs == 2);
    CHECK_FALSE(storage.reservation(f.key(4)));
  }
}

TEST_CASE(
    "an output that the task cannot decode is reported and computed again, never a "
    "permanent error for its key") {
  SECTION("bytes that the serializer refuses") {
    cs::ManualClock clock;
    test::ByteMemoryStorage storage;
    test::Recorder recorder;
    cs::ManagerOptions options;
    options.listener = recorder.listener();
    cs::ReservationManager<cs::ManualClock, test::ByteMemoryStorage> manager(storage, clock,
                                                                             options);
    std::atomic<int> runs{0};
    auto f = cs::serialize_cached(
        [&](int n) {
          ++runs;
          return n * 10;
        },
        cs::TaskOptions{"changed serializer", "1"}, manager);
    storage.put(f.key(1), cs::StoredOutput::from_bytes(cs::encode_value(std::string("old"))));
    CHECK(f(1) == 10);
    CHECK(runs == 1);
    const auto corrupt = recorder.of(cs::EventKind::corrupt_output);
    REQUIRE(corrupt.size() == 1);
    CHECK(corrupt[0].task == "changed serializer");
    CHECK(corrupt[0].detail.find("cannot decode the stored output") != std::string::npos);
    CHECK(f(1) == 10);
    CHECK(runs == 1);
  }
  SECTION("an object of another type") {
    test::World w;
    cs::TaskOptions a{"same", "1"};
    a.interface = "(int)";  // the user pinned the interface, hiding the different return types
    auto ints = cs::serialize_cached([](int n) { return n; }, a, w.manager);
    auto strings = cs::serialize_cached([](int n) { return std::to_string(n); }, a, w.manager);
    CHECK(ints(1) == 1);
    CHECK(strings(1) == "1");  // never reinterpreted
    const auto corrupt = w.recorder.of(cs::EventKind::corrupt_output);
    REQUIRE(corrupt.size() == 1);
    CHECK(corrupt[0].detail.find("not of the expected type") != std::string::npos);
    CHECK(*w.storage.get(ints.key(1))->type == typeid(std::string));
  }
}

TEST_CASE("callers that meet one unreadable output wait for one recomputation and reuse it") {
  cs::ManualClock clock;
  test::ByteMemoryStorage storage;
  cs::ReservationManager<cs::ManualClock, test::ByteMemoryStorage> manager(storage, clock);
  test::Busy busy;
  std::atomic<int> runs{0};
  auto f = cs::serialize_cached(
      [&](int n) {
        ++runs;
        busy.enter();
        return n + 1;
      },
      cs::TaskOptions{"recover once", "1"}, manager);
  storage.put(f.key(1), cs::StoredOutput::from_bytes("not an int"));
  test::Threads threads;
  std::atomic<int> right{0};
  for (int i = 0; i < 8; ++i) {
    threads.spawn([&] { right += f(1) == 2 ? 1 : 0; });
  }
  REQUIRE(busy.started.wait_for(1));
  REQUIRE(clock.wait_for_sleepers(8));  // the other 7 wait for it, and the heartbeat
  busy.gate.open();
  threads.join();
  CHECK(right == 8);
  CHECK(runs == 1);
  CHECK(manager.stats().corrupt_outputs == 8);
  CHECK(manager.stats().failures == 0);
}

TEST_CASE("a storage that fails never leaves a caller hanging") {
  cs::ManualClock clock;
  FlakyStorage storage;
  FlakyManager manager(storage, clock);
  std::atomic<int> runs{0};
  auto f = cs::serialize_cached(
      [&](int n) {
        ++runs;
        return n;
      },
      cs::TaskOptions{"fragile", "1"}, manager);

  SECTION("an unreachable storage is a storage_error naming the key") {
    storage.faults->acquire = true;
    REQUIRE_THROWS_AS(f(1), cs::storage_error);
    REQUIRE_THROWS_WITH(f(1),
                        Catch::Contains("connection refused") && Catch::Contains("task 'fragile'"));
    CHECK(runs == 0);
  }
  SECTION("a failed store still returns the value, reports it, and releases") {
    test::Recorder recorder;
    cs::ManagerOptions options;
    options.listener = recorder.listener();
    FlakyManager watched(storage, clock, options);
    auto g = cs::serialize_cached([](int n) { return n * 3; }, cs::TaskOptions{"g", "1"}, watched);
    storage.faults->store = true;
    CHECK(g(2) == 6);
    CHECK(watched.stats().store_failures == 1);
    const auto failed = recorder.of(cs::EventKind::store_failed);
    REQUIRE(failed.size() == 1);
    CHECK(failed[0].detail.find("disk full") != std::string::npos);
    CHECK_FALSE(storage.reservation(g.key(2)));  // not left locked
    storage.faults->store = false;
    CHECK(g(2) == 6);
    CHECK(storage.get(g.key(2)));
  }
  SECTION("a live holder reported with no time left is looked at again at once, then less often") {
    storage.faults->zero_remaining = true;
    storage.acquire(f.key(1), {"other", clock.now(), 1h, false});
    cs::CallOptions call;
    call.wait_timeout = 10s;
    test::Threads threads;
    bool timed_out = false;
    threads.spawn([&] {
      try {
        f.call(call, 1);
      } catch (const cs::timeout_error&) {
        timed_out = true;
      }
    });
    // 1, 2, 4, ... ms: the expiry is about to pass; a storage that keeps saying so is polled.
    std::vector<cs::Duration> pauses;
    for (int i = 0; i < 14; ++i) {
      REQUIRE(clock.wait_for_sleepers(1));
      const auto next = clock.next_deadline();
      REQUIRE(next);
      pauses.push_back(*next - clock.now());
      clock.advance_to(*next);
    }
    CHECK(pauses[0] == 1ms);
    CHECK(pauses[1] == 2ms);
    CHECK(pauses[2] == 4ms);
    for (std::size_t i = 10; i < pauses.size(); ++i) {  // a jittered poll of about one second
      CHECK(pauses[i] >= 800ms);
      CHECK(pauses[i] <= 1200ms);
    }
    clock.advance(10s);  // past the bound: the next look gives up
    threads.join();
    CHECK(timed_out);
  }
}

namespace {
struct Fragile {
  int value;
};
using test::Point;
}  // namespace

template <>
struct cacheserialize::serializer<Fragile> {
  static constexpr const char* name = "Fragile";
  static void encode(Writer& w, const Fragile& f) {
    if (f.value < 0) throw cacheserialize::codec_error("negative values cannot be encoded");
    w.write(f.value);
  }
  static Fragile decode(Reader& r) { return Fragile{r.read<int>()}; }
};

TEST_CASE("an output that cannot be encoded is reported, released, and still returned") {
  cs::ManualClock clock;
  test::ByteMemoryStorage storage;
  test::Recorder recorder;
  cs::ManagerOptions options;
  options.listener = recorder.listener();
  cs::ReservationManager<cs::ManualClock, test::ByteMemoryStorage> manager(storage, clock, options);
  std::atomic<int> runs{0};
  auto f = cs::serialize_cached(
      [&](int n) {
        ++runs;
        return Fragile{n};
      },
      cs::TaskOptions{"fragile", "1"}, manager);
  CHECK(f(-1).value == -1);
  CHECK(manager.stats().store_failures == 1);
  const auto failed = recorder.of(cs::EventKind::store_failed);
  REQUIRE(failed.size() == 1);
  CHECK(failed[0].detail == "negative values cannot be encoded");
  CHECK_FALSE(storage.reservation(f.key(-1)));  // released, not left to expire
  CHECK(f(-1).value == -1);                     // nothing cached: it runs again
  CHECK(runs == 2);
  CHECK(f(2).value == 2);
  CHECK(f(2).value == 2);
  CHECK(runs == 3);
}

TEST_CASE("a user type is a key input through its serializer") {
  test::World w;
  std::atomic<int> runs{0};
  auto norm = cs::serialize_cached(
      [&](const Point& p) {
        ++runs;
        return p.x * p.x + p.y * p.y;
      },
      cs::TaskOptions{"norm", "1"}, w.manager);
  CHECK(norm(Point{3, 4}) == 25);
  CHECK(norm(Point{3, 4}) == 25);
  CHECK(norm(Point{4, 3}) == 25);
  CHECK(runs == 2);
  CHECK(norm.key(Point{3, 4}) != norm.key(Point{4, 3}));
}

TEST_CASE("keys copied from a call's events outlive the wrapped function") {
  // A call's own key borrows its task's name and version from the wrapper; every copy of it
  // must own them. (Under AddressSanitizer a copy that did not would read freed memory here.)
  std::mutex mu;
  std::vector<cs::Key> seen;
  cs::ManagerOptions options;
  options.listener = [&](const cs::Event& e) {
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(*e.key);           // copied
    seen.back() = *e.key;             // and assigned
    seen.push_back(cs::Key(*e.key));  // and moved from a copy
  };
  cs::ManualClock clock;
  test::Manager manager(cs::InMemoryStorage(), clock, options);
  {
    auto task =
        cs::serialize_cached([](int n) { return n + 1; },
                             cs::TaskOptions{std::string("lifetime.") + "task", "7"}, manager);
    CHECK(task(1) == 2);  // acquired, released
    CHECK(task(1) == 2);  // hit
  }  // the wrapper, its key schema and its copy of the name and version are gone
  std::lock_guard<std::mutex> lock(mu);
  REQUIRE(seen.size() >= 6);
  std::vector<cs::Key> moved;
  for (auto& key : seen) moved.push_back(std::move(key));
  for (const auto& key : moved) {
    CHECK(key.task() == "lifetime.task");
    CHECK(key.cache_version() == "7");
    CHECK(key.describe().find("task 'lifetime.task' version '7'") == 0);
  }
}

TEMPLATE_TEST_CASE(
    "a hit reads the output in place when the storage has visit_output, and "
    "through get otherwise",
    "", GetOnlyStorage, VisitingStorage) {
  constexpr bool visits = std::is_same<TestType, VisitingStorage>::value;
  STATIC_REQUIRE(cs::storage_traits<TestType>::visits_outputs == visits);
  TestType storage;
  cs::ManualClock clock;
  cs::ReservationManager<cs::ManualClock, TestType> manager(storage, clock);
  cs::TaskOptions options{"counted", "1"};
  SECTION("serialised calls") {}
  SECTION("cache-only calls") { options.serialize = false; }
  int runs = 0;
  auto f = cs::serialize_cached(
      [&runs](int n) {
        ++runs;
        return std::vector<std::string>(static_cast<std::size_t>(n), "v");
      },
      options, manager);
  CHECK(f(3).size() == 3);  // a miss: the function runs
  CHECK(runs == 1);
  const int gets = storage.calls->get.load();
  const int visits_before = storage.calls->visit.load();
  for (int i = 0; i < 4; ++i) CHECK(f(3) == std::vector<std::string>(3, "v"));
  CHECK(runs == 1);
  CHECK(manager.stats().hits == 4);
  CHECK(storage.calls->get.load() - gets == (visits ? 0 : 4));
  CHECK(storage.calls->visit.load() - visits_before == (visits ? 4 : 0));
}
