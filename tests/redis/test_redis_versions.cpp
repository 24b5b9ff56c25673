// Upgrading a fleet: processes built before commit f825417 (whose scripts took their arguments
// unpacked) and processes built now share one store. Both read and write the same keys, values
// and fence, so each sees the other's reservations, outputs and tokens, and wakes its waiters.
// The earlier process is played by its scripts, kept verbatim, run with EVAL.

#include <catch2/catch.hpp>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "../support.hpp"
#include "redis_server.hpp"
#include "scripts_before_f825417.hpp"

namespace cs = cacheserialize;
namespace before = test::redis_before_f825417;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> lines_of(const std::string& reply) {
  std::vector<std::string> out;
  std::istringstream in(reply);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// A process of the earlier build: its acquire and store, over a raw connection.
class EarlierProcess {
 public:
  explicit EarlierProcess(std::string owner)
      : raw_(test::shared_redis().raw()), owner_(std::move(owner)) {}

  // -> {0, output} hit | {1, token, ...} acquired | {2, token, expires_ns, owner, pttl, ...} held
  std::vector<std::string> acquire(const cs::RedisKeyNames& n, bool overwrite = false) {
    return lines_of(raw_->command(
        {"EVAL", std::string(before::kRedisPrelude) + before::kRedisAcquire, "3", n.output,
         n.reservation, n.fence, owner_, "60000", overwrite ? "1" : "0", expires_ns(), "CSO1"}));
  }
  // -> {1} stored | {0, ...} rejected
  std::vector<std::string> store(const cs::RedisKeyNames& n, const std::string& token,
                                 const std::string& bytes) {
    return lines_of(raw_->command({"EVAL", std::string(before::kRedisPrelude) + before::kRedisStore,
                                   "4", n.output, n.reservation, n.fence, n.stored_at, owner_,
                                   token, n.channel, "earlier-origin", "0", "CSO1" + bytes, "0"}));
  }

 private:
  // As the earlier build computed it: now + ttl, in nanoseconds since the epoch.
  static std::string expires_ns() {
    return std::to_string(cs::to_unix_nanos(cs::SystemClock().now() + 60s));
  }

  std::unique_ptr<test::RawRedis> raw_;
  std::string owner_;
};

cs::AcquireRequest request(const std::string& owner, bool overwrite = false) {
  return cs::AcquireRequest{owner, cs::SystemClock().now(), 60s, overwrite};
}

}  // namespace

TEST_CASE(
    "An earlier build's reservation holds off this build, and its store is this build's hit") {
  cs::RedisStorage storage = test::fresh_storage();
  EarlierProcess earlier("earlier:1");
  const cs::Key key("versions", "1", "earlier first");
  const cs::RedisKeyNames n = storage.names(key);
  cs::Signal woken;
  const cs::Subscription subscription = storage.subscribe(key, woken);

  const std::vector<std::string> took = earlier.acquire(n);
  REQUIRE(took.size() >= 2);
  REQUIRE(took[0] == "1");
  const cs::AcquireResult held = storage.acquire(key, request("now:1"));
  REQUIRE(held.status == cs::AcquireStatus::held);
  CHECK(held.reservation.owner == "earlier:1");
  CHECK(std::to_string(held.reservation.token) == took[1]);
  CHECK(held.remaining > 50s);

  REQUIRE(earlier.store(n, took[1], "earlier's") == std::vector<std::string>{"1"});
  CHECK(woken.wait_for(test::kBound, [] { return false; }));  // its PUBLISH reaches waiters here
  const cs::AcquireResult hit = storage.acquire(key, request("now:1"));
  REQUIRE(hit.status == cs::AcquireStatus::hit);
  CHECK(hit.output.bytes == "earlier's");

  // Tokens keep growing across builds.
  const cs::AcquireResult again = storage.acquire(key, request("now:1", true));
  REQUIRE(again.status == cs::AcquireStatus::acquired);
  CHECK(again.reservation.token > std::stoull(took[1]));
}

TEST_CASE(
    "This build's reservation holds off an earlier build, and its store is that build's hit") {
  cs::RedisStorage storage = test::fresh_storage();
  EarlierProcess earlier("earlier:2");
  const cs::Key key("versions", "1", "now first");
  const cs::RedisKeyNames n = storage.names(key);

  const cs::AcquireResult mine = storage.acquire(key, request("now:2"));
  REQUIRE(mine.status == cs::AcquireStatus::acquired);
  const std::vector<std::string> held = earlier.acquire(n);
  REQUIRE(held.size() >= 4);
  CHECK(held[0] == "2");
  CHECK(held[1] == std::to_string(mine.reservation.token));
  CHECK(held[3] == "now:2");

  REQUIRE(storage
              .store_and_release(key, mine.reservation, cs::StoredOutput::from_bytes("now's"),
                                 cs::SystemClock().now())
              .status == cs::StoreStatus::stored);
  CHECK(earlier.acquire(n) == std::vector<std::string>{"0", "CSO1now's"});

  const std::vector<std::string> overwrite = earlier.acquire(n, true);
  REQUIRE(overwrite.size() >= 2);
  CHECK(overwrite[0] == "1");
  CHECK(std::stoull(overwrite[1]) > mine.reservation.token);
}
