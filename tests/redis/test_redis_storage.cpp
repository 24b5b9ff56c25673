// RedisStorage against a real server: the storage contract, round trips, fencing by Redis's
// clock, hostile keys and outputs, options.

#include <catch2/catch.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../engine_contract.hpp"
#include "../storage_contract.hpp"
#include "redis_server.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;
using test::eventually;

namespace {

cs::AcquireRequest request(const std::string& owner, cs::Duration ttl = 30s) {
  return cs::AcquireRequest{owner, cs::SystemClock().now(), ttl, false};
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen() & 0xff);
  return s;
}

}  // namespace

TEST_CASE("RedisStorage follows the storage contract, with Redis's clock as the authority") {
  STATIC_REQUIRE(cs::is_storage_v<cs::RedisStorage>);
  STATIC_REQUIRE_FALSE(cs::storage_traits<cs::RedisStorage>::stores_objects);
  STATIC_REQUIRE_FALSE(cs::storage_traits<cs::RedisStorage>::probe_before_acquire);
  STATIC_REQUIRE(cs::storage_traits<cs::RedisStorage>::notifies);
  test::check_storage_contract([] { return test::fresh_storage(); }, {/*client_time=*/false});
}

TEST_CASE("RedisStorage follows the engine contract, with Redis's clock as the authority") {
  test::check_engine_contract(
      [] { return test::fresh_storage(); },
      // Another process's storage: its own connections, same prefix.
      [](const cs::RedisStorage& s) { return cs::RedisStorage(s.options()); },
      {/*client_time=*/false});
}

TEST_CASE("RedisStorage: a hit is one round trip, a miss two and an extension one") {
  cs::RedisStorage storage = test::fresh_storage();
  auto round_trips = [&] { return storage.stats().round_trips; };

  SECTION("through serialize_cached") {
    auto twice =
        cs::serialize_cached([](int n) { return 2 * n; }, cs::TaskOptions{"rt", "1"}, storage);
    REQUIRE(twice(0) == 0);  // connects and loads the scripts
    REQUIRE(twice(0) == 0);
    std::uint64_t before = round_trips();
    CHECK(twice(21) == 42);
    CHECK(round_trips() - before == 2);  // acquire, then store-and-release
    before = round_trips();
    CHECK(twice(21) == 42);
    CHECK(round_trips() - before == 1);  // acquire answers the hit
    CHECK(twice.manager().stats().hits == 2);
  }

  SECTION("heartbeats: one round trip each") {
    cs::ManualClock clock;  // drives the heartbeat; Redis keeps the reservation's real TTL
    const cs::ReservationManager<cs::ManualClock, cs::RedisStorage> manager(storage, clock);
    const cs::Key key("hb", "1", "k");
    storage.put(cs::Key("hb", "1", "warm-up"), cs::StoredOutput::from_bytes("x"));
    auto claim = manager.claim(key);
    REQUIRE_FALSE(claim.is_hit());
    const std::uint64_t before = round_trips();
    for (std::uint64_t i = 1; i <= 3; ++i) {
      clock.advance(manager.options().heartbeat_interval);
      REQUIRE(eventually([&] { return manager.stats().heartbeats == i; }));
    }
    CHECK(round_trips() - before == 3);
    CHECK(claim.hold().store(cs::StoredOutput::from_bytes("out")) == cs::StoreStatus::stored);
    CHECK(round_trips() - before == 4);
  }

  SECTION("direct calls") {
    const cs::Key key("rt", "1", "direct");
    const auto mine = storage.acquire(key, request("a")).reservation;
    std::uint64_t before = round_trips();
    CHECK(storage.extend(key, mine, cs::SystemClock().now(), 30s).status ==
          cs::ExtendStatus::extended);
    CHECK(round_trips() - before == 1);
    before = round_trips();
    CHECK(storage.release(key, mine) == cs::ReleaseStatus::released);
    CHECK(round_trips() - before == 1);
    CHECK(storage.stats().connects == 1);  // one thread, one pooled connection, reused
  }
}

TEST_CASE("RedisStorage: extend_many of 100 reservations is one round trip and keeps them all") {
  cs::RedisStorage storage = test::fresh_storage();
  storage.ping();
  std::vector<cs::Key> keys;
  std::vector<cs::Reservation> held;
  for (int i = 0; i < 100; ++i) {
    keys.emplace_back("batch", "1", "key-" + std::to_string(i));
    held.push_back(storage.acquire(keys.back(), request("a", 2s)).reservation);
  }
  // One of them was lost to another owner meanwhile: fenced off alone.
  const cs::Reservation stolen = held[7];
  REQUIRE(storage.release(keys[7], stolen) == cs::ReleaseStatus::released);
  const auto b = storage.acquire(keys[7], request("b")).reservation;
  std::vector<cs::Extension> batch;
  for (std::size_t i = 0; i < keys.size(); ++i) batch.push_back({&keys[i], &held[i], 60s});

  SECTION("one pipeline") {
    const std::uint64_t before = storage.stats().round_trips;
    const std::vector<cs::ExtendResult> r = storage.extend_many(batch, cs::SystemClock().now());
    CHECK(storage.stats().round_trips - before == 1);
    REQUIRE(r.size() == 100);
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (i == 7) continue;
      CHECK(r[i].status == cs::ExtendStatus::extended);
      CHECK(r[i].current.token == held[i].token);
    }
    CHECK(r[7].status == cs::ExtendStatus::lost);
    CHECK(r[7].current.owner == "b");
    CHECK(r[7].current.token == b.token);
    // Redis's TTL was set to the new 60 s, where the 2 s of the acquisition would have expired.
    test::RawRedis raw(test::shared_redis().port());
    const std::string res = storage.names(keys[0]).reservation;
    CHECK(std::stoll(raw.command({"PTTL", res})) > 30000);
  }

  SECTION("a flushed script cache costs one more round trip, and nothing else") {
    test::RawRedis raw(test::shared_redis().port());
    REQUIRE(raw.command({"SCRIPT", "FLUSH"}) == "OK");
    const std::uint64_t before = storage.stats().round_trips;
    const std::vector<cs::ExtendResult> r = storage.extend_many(batch, cs::SystemClock().now());
    CHECK(storage.stats().round_trips - before == 2);
    REQUIRE(r.size() == 100);
    CHECK(r[0].status == cs::ExtendStatus::extended);
    CHECK(r[7].status == cs::ExtendStatus::lost);
    CHECK(r[99].status == cs::ExtendStatus::extended);
  }
}

TEST_CASE("RedisStorage: try_claim (hit, acquired or held), holder and adopt are one round trip") {
  cs::RedisStorage storage = test::fresh_storage();
  test::check_engine_round_trips(storage, [&] { return storage.stats().round_trips; });
}

TEST_CASE("RedisStorage: Redis expires a reservation by its own clock, and the fence decides") {
  cs::RedisStorage storage = test::fresh_storage();
  const cs::Key key("fence", "1", "k");
  const cs::Reservation a = storage.acquire(key, request("a", 20ms)).reservation;
  const auto now = [] { return cs::SystemClock().now(); };
  REQUIRE(eventually([&] { return !storage.reservation(key); }));  // gone by Redis's clock

  SECTION("the holder may extend it again while nobody took the key") {
    const cs::ExtendResult r = storage.extend(key, a, now(), 30s);
    CHECK(r.status == cs::ExtendStatus::extended);
    CHECK(r.current.token == a.token);
    CHECK(storage.acquire(key, request("b")).status == cs::AcquireStatus::held);
  }

  SECTION("the holder may store while nobody took the key, since no one else can have stored") {
    CHECK(storage.store_and_release(key, a, cs::StoredOutput::from_bytes("A"), now()).status ==
          cs::StoreStatus::stored);
    REQUIRE(storage.get(key));
    CHECK(storage.get(key)->bytes == "A");
  }

  SECTION("after a takeover the old holder can neither extend nor store (fencing token)") {
    const cs::AcquireResult b = storage.acquire(key, request("b"));
    REQUIRE(b.status == cs::AcquireStatus::acquired);
    CHECK(b.reservation.token > a.token);
    REQUIRE(b.previous);  // a took over an expired reservation: reported
    CHECK(b.previous->owner == "a");
    CHECK(b.previous->token == a.token);

    const cs::ExtendResult e = storage.extend(key, a, now(), 30s);
    CHECK(e.status == cs::ExtendStatus::lost);
    CHECK(e.current.owner == "b");
    const cs::StoreResult s =
        storage.store_and_release(key, a, cs::StoredOutput::from_bytes("stale"), now());
    CHECK(s.status == cs::StoreStatus::rejected);
    CHECK(s.current.token == b.reservation.token);
    CHECK_FALSE(storage.get(key));
    CHECK(storage.release(key, a) == cs::ReleaseStatus::held_by_other);
  }

  SECTION("after a takeover that was itself released, the old holder still cannot store") {
    const auto b = storage.acquire(key, request("b")).reservation;
    REQUIRE(storage.release(key, b) == cs::ReleaseStatus::released);
    CHECK(storage.store_and_release(key, a, cs::StoredOutput::from_bytes("stale"), now()).status ==
          cs::StoreStatus::rejected);
    CHECK(storage.extend(key, a, now(), 30s).status == cs::ExtendStatus::lost);
    CHECK_FALSE(storage.get(key));
  }

  SECTION("a late release marks it released, so the next holder is not a takeover") {
    CHECK(storage.release(key, a) == cs::ReleaseStatus::not_held);
    const cs::AcquireResult b = storage.acquire(key, request("b"));
    CHECK(b.status == cs::AcquireStatus::acquired);
    CHECK_FALSE(b.previous);
    CHECK(storage.store_and_release(key, a, cs::StoredOutput::from_bytes("A"), now()).status ==
          cs::StoreStatus::rejected);
  }
}

TEST_CASE("RedisStorage: a holder's remaining time comes from Redis, not from the caller's clock") {
  cs::RedisStorage storage = test::fresh_storage();
  const cs::Key key("ttl", "1", "k");
  const cs::TimePoint far_past = cs::from_unix_nanos(0);
  const auto a = storage.acquire(key, {"a", far_past, 10s, false});
  REQUIRE(a.status == cs::AcquireStatus::acquired);
  CHECK(a.reservation.expires_at == far_past + 10s);  // the holder's own view, reported as is
  const cs::TimePoint far_future = cs::SystemClock().now() + std::chrono::hours(24 * 365);
  const cs::AcquireResult b = storage.acquire(key, {"b", far_future, 10s, false});
  REQUIRE(b.status == cs::AcquireStatus::held);  // not taken over, whatever b's clock says
  CHECK(b.remaining > 0s);
  CHECK(b.remaining <= 10s);
  CHECK(b.reservation.expires_at == far_past + 10s);
}

TEST_CASE("RedisStorage stores hostile keys and binary outputs exactly") {
  cs::RedisStorage storage = test::fresh_storage();
  std::string all_bytes;
  for (int i = 0; i < 4 * 256; ++i) all_bytes.push_back(static_cast<char>(i & 0xff));
  const std::vector<std::string> raw_keys = {
      std::string("a\0b", 3),
      std::string("a\0c", 3),
      std::string("a", 1),
      std::string("a\0", 2),
      std::string("\xff\xfe\xc0\x80 not utf-8 \xed\xa0\x80"),
      std::string(),
      random_bytes(1 << 20, 1),  // 1 MB
  };
  const std::vector<std::string> outputs = {all_bytes, std::string("\0", 1), std::string(),
                                            random_bytes(1 << 20, 2)};

  for (std::size_t i = 0; i < raw_keys.size(); ++i) {
    const cs::Key key("hostile", "1", raw_keys[i]);
    const std::string out = outputs[i % outputs.size()] + std::to_string(i);
    const auto r = storage.acquire(key, request("w"));
    REQUIRE(r.status == cs::AcquireStatus::acquired);
    REQUIRE(storage
                .store_and_release(key, r.reservation, cs::StoredOutput::from_bytes(out),
                                   cs::SystemClock().now())
                .status == cs::StoreStatus::stored);
  }
  for (std::size_t i = 0; i < raw_keys.size(); ++i) {
    INFO("key " << i);
    const cs::Key key("hostile", "1", raw_keys[i]);
    const std::string out = outputs[i % outputs.size()] + std::to_string(i);
    const auto got = storage.get(key);
    REQUIRE(got);
    CHECK(got->bytes == out);
    const cs::AcquireResult hit = storage.acquire(key, request("r"));
    REQUIRE(hit.status == cs::AcquireStatus::hit);
    CHECK(hit.output.bytes == out);
  }

  SECTION("through serialize_cached, inputs and outputs with NUL and non-UTF-8 bytes") {
    int runs = 0;
    auto echo = cs::serialize_cached(
        [&](const std::string& s) {
          ++runs;
          return s + std::string("\0\xff", 2);
        },
        cs::TaskOptions{"echo", "1"}, storage);
    const std::string input("x\0y\xfe", 4);
    CHECK(echo(input) == input + std::string("\0\xff", 2));
    CHECK(echo(input) == input + std::string("\0\xff", 2));
    CHECK(echo(std::string("x\0z\xfe", 4)) == std::string("x\0z\xfe\0\xff", 6));
    CHECK(runs == 2);
  }
}

TEST_CASE("RedisStorage treats a value it did not write as a miss, and reports it") {
  test::Recorder recorder;
  cs::RedisOptions options = test::fresh_options();
  options.listener = recorder.listener();
  cs::RedisStorage storage(options);
  const cs::Key key("foreign", "1", "k");
  test::shared_redis().raw()->command({"SET", storage.names(key).output, "not ours"});

  CHECK_FALSE(storage.get(key));
  CHECK(recorder.count(cs::EventKind::corrupt_output) == 1);
  const cs::AcquireResult r = storage.acquire(key, request("a"));
  CHECK(r.status == cs::AcquireStatus::acquired);
  REQUIRE(recorder.count(cs::EventKind::corrupt_output) == 2);
  CHECK_THAT(recorder.of(cs::EventKind::corrupt_output)[0].detail,
             Catch::Contains(storage.names(key).output) && Catch::Contains("treated as a miss"));
  REQUIRE(storage
              .store_and_release(key, r.reservation, cs::StoredOutput::from_bytes("ours"),
                                 cs::SystemClock().now())
              .status == cs::StoreStatus::stored);
  REQUIRE(storage.get(key));
  CHECK(storage.get(key)->bytes == "ours");
  CHECK(recorder.count(cs::EventKind::corrupt_output) == 2);

  SECTION("a malformed reservation is a storage_error naming the key") {
    test::shared_redis().raw()->command({"SET", storage.names(key).reservation, "garbage"});
    try {
      storage.acquire(key, {"b", cs::SystemClock().now(), 30s, true});
      FAIL("a malformed reservation was accepted");
    } catch (const cs::storage_error& e) {
      CHECK_THAT(e.what(), Catch::Contains("malformed reservation"));
      CHECK(e.key() == key.describe());
    }
  }
}

TEST_CASE("RedisStorage names every key of a cache key under the prefix, with a hash tag") {
  cs::RedisOptions options = test::fresh_options();
  options.database = 2;
  const cs::RedisStorage storage(options);
  const cs::Key key("names", "1", "k");
  const cs::RedisKeyNames n = storage.names(key);
  const std::string base = options.key_prefix + "{" + key.digest() + "}";
  CHECK(n.output == base + ":out");
  CHECK(n.reservation == base + ":res");
  CHECK(n.fence == base + ":fence");
  CHECK(n.channel == base + ":wake:2");
}

TEST_CASE("RedisStorage expires outputs after output_ttl, and keeps them without it") {
  cs::RedisOptions options = test::fresh_options();
  auto raw = test::shared_redis().raw();
  const cs::Key key("ttl", "1", "out");
  SECTION("with output_ttl") {
    options.output_ttl = std::chrono::minutes(10);
    cs::RedisStorage storage(options);
    storage.put(key, cs::StoredOutput::from_bytes("x"));
    const long long pttl = raw->integer({"PTTL", storage.names(key).output});
    CHECK(pttl > 0);
    CHECK(pttl <= 600000);
    const auto r = storage.acquire(cs::Key("ttl", "1", "stored"), request("a"));
    storage.store_and_release(cs::Key("ttl", "1", "stored"), r.reservation,
                              cs::StoredOutput::from_bytes("y"), cs::SystemClock().now());
    CHECK(raw->integer({"PTTL", storage.names(cs::Key("ttl", "1", "stored")).output}) > 0);
  }
  SECTION("without") {
    cs::RedisStorage storage(options);
    storage.put(key, cs::StoredOutput::from_bytes("x"));
    CHECK(raw->integer({"PTTL", storage.names(key).output}) == -1);
    const auto r = storage.acquire(cs::Key("ttl", "1", "res"), request("a", 5s));
    const long long res_pttl =
        raw->integer({"PTTL", storage.names(cs::Key("ttl", "1", "res")).reservation});
    CHECK(res_pttl > 0);
    CHECK(res_pttl <= 5000);
    (void)r;
  }
}

TEST_CASE("RedisStorage connects over a Unix socket, to a chosen database, and as an ACL user") {
  test::RedisServer& server = test::shared_redis();
  const cs::Key key("conn", "1", "k");

  SECTION("a Unix socket") {
    cs::RedisOptions options = test::fresh_options();
    options.unix_socket = server.unix_socket();
    options.port = 1;  // unused
    cs::RedisStorage storage(options);
    storage.put(key, cs::StoredOutput::from_bytes("via socket"));
    cs::RedisOptions tcp = options;
    tcp.unix_socket.clear();
    tcp.port = server.port();
    REQUIRE(cs::RedisStorage(tcp).get(key));
    CHECK(cs::RedisStorage(tcp).get(key)->bytes == "via socket");
  }

  SECTION("databases are separate stores") {
    cs::RedisOptions zero = test::fresh_options();
    cs::RedisOptions three = zero;
    three.database = 3;
    cs::RedisStorage(zero).put(key, cs::StoredOutput::from_bytes("db0"));
    CHECK_FALSE(cs::RedisStorage(three).get(key));
    cs::RedisStorage(three).put(key, cs::StoredOutput::from_bytes("db3"));
    CHECK(cs::RedisStorage(zero).get(key)->bytes == "db0");
    CHECK(cs::RedisStorage(three).get(key)->bytes == "db3");
  }

  SECTION("an ACL user; a wrong password is a clear error that does not contain it") {
    server.raw()->command(
        {"ACL", "SETUSER", "cs-user", "on", ">right-password", "~*", "&*", "+@all"});
    cs::RedisOptions options = test::fresh_options();
    options.username = "cs-user";
    options.password = "right-password";
    cs::RedisStorage storage(options);
    storage.put(key, cs::StoredOutput::from_bytes("as user"));
    CHECK(storage.get(key)->bytes == "as user");

    options.password = "wrong-secret-xyz";
    cs::RedisStorage wrong(options);
    try {
      wrong.get(key);
      FAIL("a wrong password was accepted");
    } catch (const cs::storage_error& e) {
      const std::string what = e.what();
      CHECK_THAT(what, Catch::Contains("authentication failed") &&
                           Catch::Contains("127.0.0.1:" + std::to_string(server.port())));
      CHECK_THAT(what, !Catch::Contains("wrong-secret-xyz"));
      CHECK(e.key() == key.describe());
    }
  }
}

TEST_CASE("RedisStorage rejects bad options with a message naming the option") {
  const auto rejects = [](auto tweak, const std::string& expected) {
    cs::RedisOptions o;
    tweak(o);
    CHECK_THROWS_AS(cs::RedisStorage(o), std::invalid_argument);
    CHECK_THROWS_WITH(cs::RedisStorage(o), Catch::Contains(expected));
  };
  rejects([](cs::RedisOptions& o) { o.port = 0; }, "port must be 1..65535, got 0");
  rejects([](cs::RedisOptions& o) { o.port = 70000; }, "port must be 1..65535, got 70000");
  rejects([](cs::RedisOptions& o) { o.host.clear(); }, "host is empty");
  rejects([](cs::RedisOptions& o) { o.database = -1; }, "database must be >= 0, got -1");
  rejects([](cs::RedisOptions& o) { o.username = "bob"; }, "username 'bob' is set without");
  rejects([](cs::RedisOptions& o) { o.connect_timeout = 0s; }, "connect_timeout must be");
  rejects([](cs::RedisOptions& o) { o.command_timeout = -1s; }, "command_timeout must be");
  rejects([](cs::RedisOptions& o) { o.fallback_poll_interval = 0s; }, "fallback_poll_interval");
  rejects([](cs::RedisOptions& o) { o.output_ttl = 0s; }, "output_ttl must be");
  rejects([](cs::RedisOptions& o) { o.pool_size = 0; }, "pool_size must be >= 1");
  rejects([](cs::RedisOptions& o) { o.client_name = "my app"; }, "client_name 'my app'");

  cs::RedisOptions socket_only;
  socket_only.host.clear();
  socket_only.port = 0;
  socket_only.unix_socket = "/nonexistent/redis.sock";
  CHECK_NOTHROW(cs::RedisStorage(socket_only));  // checked, not connected: lazily
}

TEST_CASE("RedisStorage copies share one connection pool, its counters and the fencing order") {
  cs::RedisOptions options = test::fresh_options();
  options.pool_size = 1;
  cs::RedisStorage a(options);
  cs::RedisStorage b = a;
  const cs::Key key("copies", "1", "k");
  std::uint64_t last = 0;
  for (int i = 0; i < 5; ++i) {
    cs::RedisStorage& s = i % 2 ? a : b;
    const auto r = s.acquire(key, request("o" + std::to_string(i)));
    REQUIRE(r.status == cs::AcquireStatus::acquired);
    CHECK(r.reservation.token > last);
    last = r.reservation.token;
    REQUIRE(s.release(key, r.reservation) == cs::ReleaseStatus::released);
  }
  CHECK(a.stats().connects == 1);
  CHECK(b.stats().round_trips == a.stats().round_trips);
  CHECK(a.erase(key) == false);
  b.put(key, cs::StoredOutput::from_bytes("x"));
  CHECK(a.erase(key));
  CHECK_FALSE(b.get(key));
}
