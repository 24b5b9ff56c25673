// RedisStorage's wake-ups: pub/sub between storages (as between processes: each storage has its
// own origin id and its own pub/sub connection), and the fallbacks when pub/sub is down.

#include <catch2/catch.hpp>
#include <exception>
#include <future>
#include <optional>
#include <string>

#include "../support.hpp"
#include "redis_server.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;
using test::eventually;

namespace {

using RedisManager = cs::ReservationManager<cs::SystemClock, cs::RedisStorage>;

cs::AcquireRequest request(const std::string& owner, cs::Duration ttl = 60s) {
  return cs::AcquireRequest{owner, cs::SystemClock().now(), ttl, false};
}

// A claim on another thread, waiting on a holder; its outcome is read after join().
struct Waiter {
  explicit Waiter(const RedisManager& manager, const cs::Key& key) {
    cs::ClaimOptions options;
    options.wait_timeout = 20s;  // far below the holder's 60 s: only a wake-up ends it sooner
    thread = std::thread([this, manager, key, options] {
      try {
        auto claim = manager.claim(key, options);
        hit = claim.is_hit();
        if (hit) {
          output = claim.output().bytes;
        } else {
          claim.hold().store(cs::StoredOutput::from_bytes("waiter's"));
        }
      } catch (const std::exception& e) {
        error = e.what();
      }
      done = std::chrono::steady_clock::now();
    });
  }
  ~Waiter() {
    if (thread.joinable()) thread.join();
  }
  void join() { thread.join(); }

  std::thread thread;
  bool hit = false;
  std::string output;
  std::string error;
  std::chrono::steady_clock::time_point done;
};

// Puts `key` through `other` until `storage`'s subscriber receives a message (bounded): proves
// that `storage` is subscribed (again).
bool message_arrives(const cs::RedisStorage& storage, cs::RedisStorage& other, const cs::Key& key) {
  const std::uint64_t before = storage.stats().notifications;
  return eventually(
      [&] {
        other.put(key, cs::StoredOutput::from_bytes("again"));
        return storage.stats().notifications > before;
      },
      20s);
}

}  // namespace

TEST_CASE("A waiter is woken through pub/sub as soon as another process's holder finishes") {
  const cs::RedisOptions options = test::fresh_options();
  cs::RedisStorage holder_storage(options);  // "another process": its own state and origin
  cs::RedisStorage waiter_storage(options);
  test::Recorder recorder;
  cs::ManagerOptions mo;
  mo.listener = recorder.listener();
  const RedisManager manager(waiter_storage, cs::SystemClock(), mo);
  const cs::Key key("wake", "1", "k");
  const cs::Reservation holder = holder_storage.acquire(key, request("holder")).reservation;

  SECTION("a store: the waiter gets the output") {
    Waiter waiter(manager, key);
    REQUIRE(recorder.wait_for(cs::EventKind::waiting));
    const auto stored_at = std::chrono::steady_clock::now();
    REQUIRE(holder_storage
                .store_and_release(key, holder, cs::StoredOutput::from_bytes("holder's"),
                                   cs::SystemClock().now())
                .status == cs::StoreStatus::stored);
    waiter.join();
    CHECK(waiter.error.empty());
    CHECK(waiter.hit);
    CHECK(waiter.output == "holder's");
    CHECK(waiter.done - stored_at < 10s);  // the holder's reservation had 60 s left
    CHECK(waiter_storage.stats().notifications >= 1);
  }

  SECTION("a release: the waiter takes the reservation") {
    Waiter waiter(manager, key);
    REQUIRE(recorder.wait_for(cs::EventKind::waiting));
    REQUIRE(holder_storage.release(key, holder) == cs::ReleaseStatus::released);
    waiter.join();
    CHECK(waiter.error.empty());
    CHECK_FALSE(waiter.hit);
    CHECK(manager.stats().executions == 1);
    CHECK(holder_storage.get(key)->bytes == "waiter's");
  }
}

TEST_CASE("Subscribing waits for the server's confirmation, so a store right after is not missed") {
  const cs::RedisOptions options = test::fresh_options();
  cs::RedisStorage publisher(options);
  cs::RedisStorage subscriber(options);
  for (int i = 0; i < 20; ++i) {
    const cs::Key key("confirm", "1", std::to_string(i));
    cs::Signal signal;
    const cs::Subscription subscription = subscriber.subscribe(key, signal);
    publisher.put(key, cs::StoredOutput::from_bytes("x"));
    REQUIRE(eventually([&] { return signal.raised(); }));
  }
  CHECK(subscriber.stats().notifications == 20);
}

TEST_CASE("A storage wakes its own process's waiters directly, and skips its own messages") {
  cs::RedisStorage storage = test::fresh_storage();
  const cs::Key key("own", "1", "k");
  cs::Signal signal;
  const cs::Subscription subscription = storage.subscribe(key, signal);
  storage.put(key, cs::StoredOutput::from_bytes("x"));
  CHECK(signal.raised());  // at once, before put returns
  cs::RedisStorage other(storage.options());
  signal.reset();
  other.put(key, cs::StoredOutput::from_bytes("y"));  // a message from another origin
  REQUIRE(eventually([&] { return signal.raised(); }));
  CHECK(storage.stats().notifications == 1);  // the other's; its own was skipped
}

TEST_CASE("Waiters are raised when the pub/sub connection is lost, and subscribed again after") {
  cs::RedisStorage storage = test::fresh_storage();
  cs::RedisStorage other(storage.options());
  const cs::Key key("lost", "1", "k");
  cs::Signal signal;
  const cs::Subscription subscription = storage.subscribe(key, signal);
  CHECK_FALSE(signal.raised());

  test::shared_redis().raw()->command({"CLIENT", "KILL", "TYPE", "pubsub"});
  REQUIRE(eventually([&] { return signal.raised(); }));  // a message may have been missed
  REQUIRE(eventually([&] { return storage.stats().subscriber_reconnects == 1; }));

  CHECK(message_arrives(storage, other, key));  // subscribed again
}

TEST_CASE("An async waiter outlives a lost pub/sub connection and is woken by the holder's store") {
  cs::RedisStorage storage = test::fresh_storage();
  cs::RedisStorage other(storage.options());  // the holder: another "process"
  const cs::Key key("lost-async", "1", "k");
  const cs::AcquireResult held = other.acquire(key, request("holder"));  // 60 s
  REQUIRE(held.status == cs::AcquireStatus::acquired);
  RedisManager manager(storage);
  cs::ClaimOptions options;
  options.wait_timeout = 20s;  // far below the holder's 60 s: only a wake-up ends it sooner
  std::future<RedisManager::claim_type> waiter = manager.claim_async(key, options);
  REQUIRE(eventually([&] { return manager.stats().waiters_active == 1; }));

  const std::uint64_t reconnects = storage.stats().subscriber_reconnects;
  test::shared_redis().raw()->command({"CLIENT", "KILL", "TYPE", "pubsub"});
  REQUIRE(eventually([&] { return storage.stats().subscriber_reconnects > reconnects; }));
  CHECK(waiter.wait_for(0s) == std::future_status::timeout);  // it looked again; still held

  REQUIRE(other
              .store_and_release(key, held.reservation, cs::StoredOutput::from_bytes("holder's"),
                                 cs::SystemClock().now())
              .status == cs::StoreStatus::stored);
  REQUIRE(waiter.wait_for(10s) == std::future_status::ready);
  auto claim = waiter.get();
  REQUIRE(claim.is_hit());
  CHECK(claim.output().bytes == "holder's");
  CHECK(manager.stats().waiters_active == 0);
}

TEST_CASE(
    "While pub/sub cannot reconnect waiters poll, and once the server is back they are woken") {
  test::require_redis_binary();
  test::RedisServer server;
  cs::RedisOptions options = server.options(test::unique_prefix());
  options.fallback_poll_interval = 20ms;
  cs::RedisStorage storage(options);
  cs::RedisStorage other(options);
  const cs::Key key("down", "1", "k");
  cs::Signal signal;
  const cs::Subscription subscription = storage.subscribe(key, signal);

  server.stop();
  REQUIRE(eventually([&] { return signal.raised(); }));
  for (int i = 0; i < 3; ++i) {  // raised again and again: the fallback polls
    signal.reset();
    REQUIRE(eventually([&] { return signal.raised(); }));
  }

  SECTION("subscribing while it is down returns at once") {
    cs::Signal late;
    const auto t0 = std::chrono::steady_clock::now();
    const cs::Subscription s2 = storage.subscribe(cs::Key("down", "1", "late"), late);
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    REQUIRE(eventually([&] { return late.raised(); }));  // polled too
  }

  server.start();
  REQUIRE(eventually([&] { return storage.stats().subscriber_reconnects >= 1; }));
  CHECK(message_arrives(storage, other, key));
}
