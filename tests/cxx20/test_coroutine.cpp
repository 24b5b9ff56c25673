// C++20: co_await on claims and on wrapped functions (<cacheserialize/coroutine.hpp>). Built
// with -std=c++20 by gcc and clang; the library itself stays C++17.

#include <cacheserialize/coroutine.hpp>
#include <catch2/catch.hpp>
#include <coroutine>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "../support.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

using Manager = cs::ReservationManager<cs::ManualClock, cs::InMemoryStorage>;

// The smallest coroutine type: starts at once, reports its result through a promise.
template <class T>
struct Reported {
  struct promise_type {
    std::promise<T> result;
    Reported get_return_object() { return Reported{result.get_future()}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_value(T v) { result.set_value(std::move(v)); }
    void unhandled_exception() { result.set_exception(std::current_exception()); }
  };
  std::future<T> future;
};

cs::Key key_of(const char* name) { return cs::Key("task", "1", name); }

cs::StoredOutput output_of(int v) {
  return cs::StoredOutput::from_object(std::make_shared<const int>(v));
}

// What a claim found, and on which thread the coroutine went on.
struct Seen {
  int value = -1;  // the hit's value; -1: a hold, stored with 100
  bool waited = false;
  std::thread::id resumed_on;
};

Reported<Seen> claim_then_run(Manager manager, cs::Key key, cs::ClaimOptions options = {}) {
  auto claim = co_await manager.claim_co(key, options);
  Seen seen;
  seen.resumed_on = std::this_thread::get_id();
  seen.waited = claim.waited();
  if (claim.is_hit()) {
    seen.value = claim.value<int>();
  } else {
    claim.hold().store(output_of(100));
  }
  co_return seen;
}

}  // namespace

TEST_CASE("co_await claim_co returns a hit or a hold without suspending when it need not wait") {
  cs::ManualClock clock;
  cs::InMemoryStorage storage;
  Manager manager(storage, clock);

  SECTION("a hit") {
    storage.put(key_of("k"), output_of(7));
    auto r = claim_then_run(manager, key_of("k"));
    REQUIRE(r.future.wait_for(0s) == std::future_status::ready);
    const Seen seen = r.future.get();
    CHECK(seen.value == 7);
    CHECK(seen.resumed_on == std::this_thread::get_id());
  }
  SECTION("a free key") {
    auto r = claim_then_run(manager, key_of("k"));
    REQUIRE(r.future.wait_for(0s) == std::future_status::ready);
    CHECK(r.future.get().value == -1);
    CHECK(manager.lookup(key_of("k")));
  }
}

TEST_CASE("a coroutine that waits is resumed on the waiter thread with the holder's output") {
  cs::ManualClock clock;
  cs::InMemoryStorage storage;
  Manager manager(storage, clock);
  auto hold = std::move(manager.claim(key_of("k")).hold());
  auto r = claim_then_run(manager, key_of("k"));
  REQUIRE(clock.wait_for_sleepers(2));
  CHECK(r.future.wait_for(0s) == std::future_status::timeout);
  hold.store(output_of(5));
  const Seen seen = r.future.get();
  CHECK(seen.value == 5);
  CHECK(seen.waited);
  CHECK(seen.resumed_on != std::this_thread::get_id());
}

TEST_CASE("co_await claim_co throws what claim throws") {
  cs::ManualClock clock;
  cs::InMemoryStorage storage;
  Manager manager(storage, clock);
  auto hold = std::move(manager.claim(key_of("k")).hold());
  cs::ClaimOptions options;

  SECTION("timeout_error after wait_timeout") {
    options.wait_timeout = 2s;
    auto r = claim_then_run(manager, key_of("k"), options);
    REQUIRE(clock.wait_for_sleepers(2));
    clock.advance(2s);
    CHECK_THROWS_AS(r.future.get(), cs::timeout_error);
  }
  SECTION("cancelled_error when cancelled") {
    cs::CancellationSource source;
    options.cancel = source.token();
    auto r = claim_then_run(manager, key_of("k"), options);
    REQUIRE(clock.wait_for_sleepers(2));
    source.cancel();
    CHECK_THROWS_AS(r.future.get(), cs::cancelled_error);
  }
  SECTION("std::invalid_argument for invalid options, before anything starts") {
    options.poll_interval = 0s;
    auto r = claim_then_run(manager, key_of("k"), options);
    CHECK_THROWS_AS(r.future.get(), std::invalid_argument);
  }
}

namespace {

using QueueExecutor = test::ManualExecutor;

template <class Fn>
Reported<int> call_co(Fn fn, QueueExecutor executor, int n) {
  co_return co_await fn.async_co(executor, n);
}

}  // namespace

TEST_CASE("co_await async_co runs a miss on the executor and completes a hit at once") {
  cs::ManualClock clock;
  Manager manager(cs::InMemoryStorage{}, clock);
  int runs = 0;
  auto twice = cs::serialize_cached(
      [&](int n) {
        ++runs;
        if (n < 0) throw std::domain_error("negative");
        return 2 * n;
      },
      cs::TaskOptions{"twice", "1"}, manager);
  QueueExecutor executor;

  auto miss = call_co(twice, executor, 21);
  CHECK(miss.future.wait_for(0s) == std::future_status::timeout);  // queued on the executor
  executor.run_all();
  CHECK(miss.future.get() == 42);

  auto hit = call_co(twice, executor, 21);
  REQUIRE(hit.future.wait_for(0s) == std::future_status::ready);
  CHECK(hit.future.get() == 42);
  CHECK(runs == 1);

  auto failing = call_co(twice, executor, -1);
  executor.run_all();
  CHECK_THROWS_AS(failing.future.get(), std::domain_error);
}
