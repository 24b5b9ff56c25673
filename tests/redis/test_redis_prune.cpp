// RedisStorage::prune against a real server: old outputs and stale fences go, live reservations
// stay, tokens still grow after a fence is gone, and the walk is SCAN in batches, never KEYS.

#include <algorithm>
#include <atomic>
#include <cacheserialize/cacheserialize.hpp>
#include <catch2/catch.hpp>
#include <stdexcept>
#include <string>
#include <thread>

#include "redis_server.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

cs::AcquireRequest request(const std::string& owner, cs::Duration ttl, bool overwrite = false) {
  return cs::AcquireRequest{owner, cs::SystemClock().now(), ttl, overwrite};
}

// Waits (bounded) for `d` of real time; the server runs on this host's clock.
void wait_for(cs::Duration d) {
  const auto until = std::chrono::steady_clock::now() + d;
  REQUIRE(
      test::eventually([&] { return std::chrono::steady_clock::now() >= until; }, 5000ms, 10ms));
}

bool exists(const std::string& name) {
  return test::shared_redis().raw()->integer({"EXISTS", name}) == 1;
}

}  // namespace

TEST_CASE("RedisStorage prune deletes old outputs and stale fences, never a live reservation") {
  cs::RedisStorage storage = test::fresh_storage();
  const cs::Key old_output("prune", "1", "old output");
  const cs::Key stored("prune", "1", "stored long ago");
  const cs::Key released("prune", "1", "released long ago");
  const cs::Key long_expired("prune", "1", "expired long ago");
  const cs::Key new_output("prune", "1", "new output");
  const cs::Key live("prune", "1", "live");
  const cs::Key just_expired("prune", "1", "just expired");
  const cs::Key just_released("prune", "1", "just released");

  storage.put(old_output, cs::StoredOutput::from_bytes("old"));
  const auto s = storage.acquire(stored, request("s", 60s));
  REQUIRE(storage.store_and_release(stored, s.reservation, cs::StoredOutput::from_bytes("s"), {})
              .status == cs::StoreStatus::stored);
  const auto r = storage.acquire(released, request("r", 60s));
  REQUIRE(storage.release(released, r.reservation) == cs::ReleaseStatus::released);
  const auto e = storage.acquire(long_expired, request("e", 1ms));
  REQUIRE(e.status == cs::AcquireStatus::acquired);
  wait_for(400ms);

  storage.put(new_output, cs::StoredOutput::from_bytes("new"));
  const auto l = storage.acquire(live, request("l", 60s));
  REQUIRE(l.status == cs::AcquireStatus::acquired);
  const auto j = storage.acquire(just_expired, request("j", 1ms));
  const auto jr = storage.acquire(just_released, request("jr", 60s));
  REQUIRE(storage.release(just_released, jr.reservation) == cs::ReleaseStatus::released);

  const cs::PruneResult first = storage.prune(300ms);
  CHECK(first.outputs_removed == 2);       // old_output, stored
  CHECK(first.reservations_removed == 2);  // the fences of stored and released
  CHECK(first.temporaries_removed == 0);
  CHECK_FALSE(storage.get(old_output));
  CHECK_FALSE(storage.get(stored));
  CHECK_FALSE(exists(storage.names(old_output).stored_at));
  CHECK_FALSE(exists(storage.names(stored).fence));
  CHECK_FALSE(exists(storage.names(released).fence));
  REQUIRE(storage.get(new_output));
  CHECK(storage.get(new_output)->bytes == "new");
  // An expired reservation is only marked the first time: its holder may still resume it.
  CHECK(exists(storage.names(long_expired).fence));
  CHECK(exists(storage.names(just_expired).fence));
  CHECK(exists(storage.names(just_released).fence));
  REQUIRE(storage.reservation(live));
  CHECK(storage.reservation(live)->token == l.reservation.token);
  CHECK(storage.extend(just_expired, j.reservation, cs::SystemClock().now(), 60s).status ==
        cs::ExtendStatus::extended);

  wait_for(400ms);
  const cs::PruneResult second = storage.prune(300ms);
  CHECK(second.outputs_removed == 1);       // new_output
  CHECK(second.reservations_removed == 2);  // long_expired, just_released
  CHECK_FALSE(exists(storage.names(long_expired).fence));
  CHECK_FALSE(exists(storage.names(just_released).fence));
  // Live reservations keep their fence, and their holders still store.
  CHECK(exists(storage.names(live).fence));
  CHECK(exists(storage.names(just_expired).fence));
  CHECK(storage.store_and_release(live, l.reservation, cs::StoredOutput::from_bytes("l"), {})
            .status == cs::StoreStatus::stored);
  CHECK(
      storage.store_and_release(just_expired, j.reservation, cs::StoredOutput::from_bytes("j"), {})
          .status == cs::StoreStatus::stored);

  // A token issued after prune deleted a key's fence is above every token issued before.
  const std::uint64_t highest =
      std::max({s.reservation.token, r.reservation.token, e.reservation.token, l.reservation.token,
                j.reservation.token, jr.reservation.token});
  for (const cs::Key* k : {&stored, &released, &long_expired, &just_released}) {
    const auto again = storage.acquire(*k, request("again", 60s));
    REQUIRE(again.status == cs::AcquireStatus::acquired);
    CHECK(again.reservation.token > highest);
  }
}

TEST_CASE("RedisStorage prune never removes a reservation its manager keeps alive") {
  cs::RedisStorage storage = test::fresh_storage();
  std::atomic<bool> go{false};
  std::atomic<int> calls{0};
  cs::TaskOptions task{"held", "1"};
  task.heartbeat_interval = 200ms;  // a 600 ms reservation, extended every 200 ms
  auto slow = cs::serialize_cached(
      [&](int n) {
        calls.fetch_add(1);
        while (!go.load()) std::this_thread::sleep_for(1ms);
        return n + 1;
      },
      task, storage);
  std::thread holder([&] { CHECK(slow(1) == 2); });
  auto raw = test::shared_redis().raw();
  const std::string res_pattern = storage.options().key_prefix + "*:res";
  REQUIRE(test::eventually([&] { return !raw->command({"KEYS", res_pattern}).empty(); }));
  const std::string res = raw->command({"KEYS", res_pattern});
  const std::string fence = res.substr(0, res.size() - 4) + ":fence";
  // Pruning everything, over and over, for longer than the reservation's lifetime.
  const auto until = std::chrono::steady_clock::now() + 1000ms;
  int prunes = 0;
  while (std::chrono::steady_clock::now() < until) {
    const cs::PruneResult p = storage.prune(0s);
    CHECK(p.reservations_removed == 0);
    CHECK(exists(res));
    CHECK(exists(fence));
    ++prunes;
  }
  CHECK(prunes > 5);
  go = true;
  holder.join();
  CHECK(slow(1) == 2);  // stored by the holder: a hit
  CHECK(calls.load() == 1);
}

TEST_CASE("RedisStorage prune walks more keys than one SCAN batch, never with KEYS") {
  cs::RedisStorage storage = test::fresh_storage();
  auto raw = test::shared_redis().raw();
  const std::string prefix = storage.options().key_prefix;
  for (int i = 0; i < 2000; ++i) {
    storage.put(cs::Key("many", "1", std::to_string(i)), cs::StoredOutput::from_bytes("x"));
  }
  const cs::Key live("many", "1", "live");
  const auto l = storage.acquire(live, request("l", 60s));
  REQUIRE(l.status == cs::AcquireStatus::acquired);
  raw->command({"SET", prefix + "not ours", "v"});
  raw->command({"SET", prefix + "{" + std::string(64, 'a') + "}:other", "v"});
  raw->command({"CONFIG", "RESETSTAT"});

  const std::uint64_t before = storage.stats().round_trips;
  wait_for(1ms);
  const cs::PruneResult result = storage.prune(0s);
  const std::uint64_t round_trips = storage.stats().round_trips - before;
  CHECK(result.outputs_removed == 2000);
  CHECK(result.reservations_removed == 0);
  // 4,002 keys, about kPruneScan a call: several SCANs, each followed by its batch's script.
  const std::string stats = raw->command({"INFO", "commandstats"});
  CHECK(stats.find("cmdstat_keys:") == std::string::npos);
  const std::size_t at = stats.find("cmdstat_scan:calls=");
  REQUIRE(at != std::string::npos);
  const long long scans = std::stoll(stats.substr(at + 19));
  CAPTURE(scans, round_trips);
  CHECK(scans >= 4);
  CHECK(round_trips > static_cast<std::uint64_t>(scans));  // and a script per batch
  // Left: the live reservation and its fence, and the keys the storage does not use.
  const std::string left = raw->command({"KEYS", prefix + "*"});
  CHECK(std::count(left.begin(), left.end(), '\n') == 3);
  CHECK(storage.reservation(live));
  CHECK(raw->command({"GET", prefix + "not ours"}) == "v");
}

TEST_CASE("RedisStorage prune ages outputs and fences written before write times were kept") {
  cs::RedisStorage storage = test::fresh_storage();
  auto raw = test::shared_redis().raw();
  const cs::Key key("legacy", "1", "k");
  const cs::RedisKeyNames n = storage.names(key);
  // As an earlier version left them: an output without a write time, a fence counting from 1.
  raw->command({"SET", n.output, std::string("CSO1") + "legacy"});
  raw->command({"HSET", n.fence, "n", "7", "o", "old owner", "s", "s"});

  const cs::PruneResult first = storage.prune(200ms);
  CHECK(first.outputs_removed == 0);  // its age counts from now
  CHECK(first.reservations_removed == 1);
  REQUIRE(storage.get(key));
  CHECK(storage.get(key)->bytes == "legacy");
  CHECK(exists(n.stored_at));
  wait_for(300ms);
  CHECK(storage.prune(200ms).outputs_removed == 1);
  CHECK_FALSE(storage.get(key));
  CHECK_FALSE(exists(n.stored_at));

  const auto again = storage.acquire(key, request("new", 60s));
  REQUIRE(again.status == cs::AcquireStatus::acquired);
  CHECK(again.reservation.token > 7);
}

TEST_CASE("RedisStorage keeps an output's write time with it, under the same expiry") {
  cs::RedisOptions options = test::fresh_options();
  options.output_ttl = std::chrono::minutes(10);
  cs::RedisStorage storage(options);
  auto raw = test::shared_redis().raw();
  const cs::Key key("at", "1", "k");
  storage.put(key, cs::StoredOutput::from_bytes("x"));
  const cs::RedisKeyNames n = storage.names(key);
  const long long at = raw->integer({"GET", n.stored_at});
  const long long server_us = [&] {
    const std::string t = raw->command({"TIME"});
    const std::size_t nl = t.find('\n');
    return std::stoll(t.substr(0, nl)) * 1000000 + std::stoll(t.substr(nl + 1));
  }();
  CHECK(at <= server_us);
  CHECK(at > server_us - 60 * 1000000LL);
  CHECK(raw->integer({"PTTL", n.stored_at}) > 0);
  CHECK(storage.erase(key));
  CHECK_FALSE(exists(n.stored_at));
}

TEST_CASE("RedisStorage prune rejects a negative age, naming it") {
  cs::RedisStorage storage = test::fresh_storage();
  try {
    storage.prune(-1us);
    FAIL("a negative age was accepted");
  } catch (const std::invalid_argument& e) {
    CHECK_THAT(e.what(), Catch::Contains("older_than"));
    CHECK_THAT(e.what(), Catch::Contains("prune"));
  }
}
