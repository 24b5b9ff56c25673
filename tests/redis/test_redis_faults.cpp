// RedisStorage when things go wrong: a server that is down or silent, a flushed script cache, a
// server restarted mid-run, a holder process killed with SIGKILL.

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../reply_dropping_proxy.hpp"
#include "../support.hpp"
#include "redis_server.hpp"
#include "worker_tasks.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;
using test::eventually;

namespace {

using RedisManager = cs::ReservationManager<cs::SystemClock, cs::RedisStorage>;

cs::AcquireRequest request(const std::string& owner) {
  return cs::AcquireRequest{owner, cs::SystemClock().now(), 30s, false};
}

// A TCP listener that accepts connections (through the kernel's backlog) and never answers.
class SilentServer {
 public:
  SilentServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw std::runtime_error("test: cannot listen");
    }
    port_ = ntohs(addr.sin_port);
  }
  ~SilentServer() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

template <class F>
std::chrono::steady_clock::duration time_of(F f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::steady_clock::now() - t0;
}

}  // namespace

TEST_CASE("A server that is down gives a storage_error at once, naming it but not the password") {
  cs::RedisOptions options;
  options.port = test::free_port();  // nothing listens there
  options.password = "hunter2-secret";
  cs::RedisStorage storage(options);
  const cs::Key key("down", "1", "k");
  const cs::Reservation r{"o", 1, cs::SystemClock().now()};
  const auto out = [] { return cs::StoredOutput::from_bytes("x"); };
  const std::vector<std::pair<const char*, std::function<void()>>> calls = {
      {"get", [&] { storage.get(key); }},
      {"acquire", [&] { storage.acquire(key, request("o")); }},
      {"extend", [&] { storage.extend(key, r, r.expires_at, 1s); }},
      {"release", [&] { storage.release(key, r); }},
      {"store", [&] { storage.store_and_release(key, r, out(), r.expires_at); }},
      {"put", [&] { storage.put(key, out()); }},
      {"erase", [&] { storage.erase(key); }},
  };
  for (const auto& call : calls) {
    INFO(call.first);
    const auto t0 = std::chrono::steady_clock::now();
    try {
      call.second();
      FAIL("no error");
    } catch (const cs::storage_error& e) {
      CHECK(std::chrono::steady_clock::now() - t0 < 2s);
      const std::string what = e.what();
      CHECK_THAT(what, Catch::Contains("redis 127.0.0.1:" + std::to_string(options.port)) &&
                           Catch::Contains(std::string(call.first) + " failed: cannot connect"));
      CHECK_THAT(what, !Catch::Contains("hunter2"));
      CHECK(e.key() == key.describe());
    }
  }
  CHECK_THROWS_AS(storage.ping(), cs::storage_error);

  auto f = cs::serialize_cached([](int n) { return n; }, cs::TaskOptions{"down", "1"}, storage);
  CHECK_THROWS_AS(f(1), cs::storage_error);
}

TEST_CASE("A server that does not answer fails after the command timeout, and not later") {
  SilentServer silent;
  cs::RedisOptions options;
  options.port = silent.port();
  options.connect_timeout = 200ms;
  options.command_timeout = 200ms;
  cs::RedisStorage storage(options);
  const cs::Key key("silent", "1", "k");
  std::string what;
  const auto took = time_of([&] {
    try {
      storage.acquire(key, request("o"));
    } catch (const cs::storage_error& e) {
      what = e.what();
    }
  });
  CHECK_THAT(what, Catch::Contains("no reply within the command timeout (200ms)"));
  CHECK(took >= 150ms);
  CHECK(took < 3s);
}

TEST_CASE("Calls keep succeeding when the server's script cache is flushed mid-run") {
  cs::RedisStorage storage = test::fresh_storage();
  auto raw = test::shared_redis().raw();

  SECTION("one call after a flush reloads its script: one extra round trip") {
    const cs::Key key("flush", "1", "k");
    storage.put(cs::Key("flush", "1", "warm-up"), cs::StoredOutput::from_bytes("x"));
    const std::uint64_t loads = storage.stats().script_loads;
    REQUIRE(raw->command({"SCRIPT", "FLUSH"}) == "OK");
    const std::uint64_t before = storage.stats().round_trips;
    CHECK(storage.acquire(key, request("o")).status == cs::AcquireStatus::acquired);
    CHECK(storage.stats().round_trips - before == 2);  // NOSCRIPT, then EVAL
    CHECK(storage.stats().script_loads == loads + 1);
    const std::uint64_t again = storage.stats().round_trips;
    CHECK(storage.acquire(key, request("o")).status == cs::AcquireStatus::acquired);
    CHECK(storage.stats().round_trips - again == 1);  // EVAL loaded it: EVALSHA works again
  }

  SECTION("threads calling while the cache is flushed over and over") {
    auto square =
        cs::serialize_cached([](int n) { return n * n; }, cs::TaskOptions{"flush", "2"}, storage);
    std::atomic<int> done{0};
    std::atomic<int> wrong{0};
    std::mutex mu;
    std::string first_error;
    test::Threads threads;
    for (int t = 0; t < 4; ++t) {
      threads.spawn([&, t] {
        for (int i = 0; i < 150; ++i) {
          const int n = (i * 7 + t) % 60;
          try {
            if (square(n) != n * n) wrong.fetch_add(1);
          } catch (const std::exception& e) {
            wrong.fetch_add(1);
            std::lock_guard<std::mutex> lock(mu);
            if (first_error.empty()) first_error = e.what();
          }
        }
        done.fetch_add(1);
      });
    }
    int flushes = 0;
    while (done.load() < 4) {
      raw->command({"SCRIPT", "FLUSH"});
      ++flushes;
    }
    threads.join();
    INFO(first_error);
    CHECK(wrong.load() == 0);
    CHECK(flushes > 0);
    CHECK(square.manager().stats().executions == 60);
  }
}

TEST_CASE(
    "After a server restart, calls fail clearly while it is down, then recover by themselves") {
  test::require_redis_binary();
  test::RedisServer server(test::RedisServer::Config{"restart-secret"});
  cs::RedisOptions options = server.options(test::unique_prefix());
  options.connect_timeout = 500ms;
  options.command_timeout = 500ms;
  cs::RedisStorage storage(options);
  auto square =
      cs::serialize_cached([](int n) { return n * n; }, cs::TaskOptions{"restart", "1"}, storage);

  std::atomic<bool> stop{false};
  std::atomic<int> successes{0};
  std::atomic<int> errors{0};
  std::atomic<int> wrong{0};
  std::mutex mu;
  std::vector<std::string> messages;
  std::chrono::steady_clock::duration slowest_error{};
  test::Threads threads;
  for (int t = 0; t < 3; ++t) {
    threads.spawn([&, t] {
      for (int i = t; !stop.load(); ++i) {
        const int n = i % 40;
        const auto t0 = std::chrono::steady_clock::now();
        try {
          if (square(n) == n * n) {
            successes.fetch_add(1);
          } else {
            wrong.fetch_add(1);
          }
        } catch (const cs::storage_error& e) {
          errors.fetch_add(1);
          std::lock_guard<std::mutex> lock(mu);
          slowest_error = std::max(slowest_error, std::chrono::steady_clock::now() - t0);
          if (messages.size() < 50) messages.push_back(e.what());
        } catch (const std::exception& e) {
          wrong.fetch_add(1);
          std::lock_guard<std::mutex> lock(mu);
          messages.push_back(std::string("unexpected: ") + e.what());
        }
      }
    });
  }

  REQUIRE(eventually([&] { return successes.load() >= 50; }));
  server.stop();
  REQUIRE(eventually([&] { return errors.load() >= 20; }));
  server.start();  // same port; its data is gone
  const int after_restart = successes.load();
  REQUIRE(eventually([&] { return successes.load() >= after_restart + 100; }));
  const int errors_at_recovery = errors.load();
  const int successes_at_recovery = successes.load();
  REQUIRE(eventually([&] { return successes.load() >= successes_at_recovery + 100; }));
  stop = true;
  threads.join();

  CHECK(wrong.load() == 0);
  CHECK(errors.load() == errors_at_recovery);  // once recovered, no more errors
  CHECK(slowest_error < 2s);                   // bounded by the timeouts, never a hang
  std::lock_guard<std::mutex> lock(mu);
  REQUIRE_FALSE(messages.empty());
  for (const std::string& m : messages) {
    INFO(m);
    CHECK_THAT(m, Catch::Contains("redis 127.0.0.1:" + std::to_string(server.port())) &&
                      Catch::Contains("task 'restart' version '1'"));
    CHECK_THAT(m, Catch::Contains("cannot connect") || Catch::Contains("connection lost"));
    CHECK_THAT(m, !Catch::Contains("restart-secret"));
  }
  CHECK(storage.stats().retries >= 1);  // a pooled connection was found closed and replaced
}

TEST_CASE("A SIGKILLed holder's reservation is taken over once its TTL passes") {
  const cs::RedisOptions options = test::fresh_options();
  cs::RedisStorage storage(options);
  test::Child worker({CACHESERIALIZE_REDIS_WORKER, "hold", std::to_string(options.port),
                      options.key_prefix, "victim"});
  const std::optional<std::string> line = worker.read_line();
  REQUIRE(line);
  REQUIRE(*line == "running");

  test::Recorder recorder;
  cs::ManagerOptions mo;
  mo.listener = recorder.listener();
  mo.heartbeat_interval = 100ms;
  mo.grace_multiplier = 8;
  const RedisManager manager(storage, cs::SystemClock(), mo);
  auto hold = cs::serialize_cached([](const std::string&) { return std::string("taken over"); },
                                   test::hold_task(), manager);
  std::string result;
  std::string error;
  std::thread waiter([&] {
    try {
      result = hold("victim");
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  REQUIRE(recorder.wait_for(cs::EventKind::waiting));
  // The worker keeps heartbeating (100 ms x 8): the waiter keeps waiting, past several TTLs.
  const cs::Key key = hold.key("victim");
  const auto first = storage.reservation(key);
  REQUIRE(first);
  const cs::Duration ttl = 800ms;
  REQUIRE(eventually([&] {
    const auto now = storage.reservation(key);
    return now && now->token == first->token && now->expires_at >= first->expires_at + 2 * ttl;
  }));
  CHECK(manager.stats().executions == 0);

  worker.kill(SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  const pid_t worker_pid = worker.pid();
  REQUIRE(worker.wait());
  waiter.join();
  const auto took = std::chrono::steady_clock::now() - killed_at;
  INFO(error);
  CHECK(error.empty());
  CHECK(result == "taken over");
  CHECK(manager.stats().takeovers == 1);
  CHECK(took < 10s);  // the dead holder's reservation lived at most one TTL more
  const auto took_over = recorder.of(cs::EventKind::took_over);
  REQUIRE(took_over.size() == 1);
  CHECK(took_over[0].holder == first->owner);
  CHECK_THAT(first->owner, Catch::Contains(":" + std::to_string(worker_pid) + ":"));
}

TEST_CASE(
    "A store whose reply is lost with its connection is retried and answered stored, once only") {
  test::ReplyDroppingProxy proxy(test::shared_redis().port());
  cs::RedisOptions options = test::fresh_options();
  options.port = proxy.port();
  cs::RedisStorage storage(options);
  const cs::Key key("lost-reply", "1", "k");
  const cs::AcquireResult a = storage.acquire(key, request("a"));  // a connection, now pooled
  REQUIRE(a.status == cs::AcquireStatus::acquired);
  REQUIRE(storage.stats().connects == 1);

  proxy.drop_next_reply();
  const cs::StoreResult r = storage.store_and_release(
      key, a.reservation, cs::StoredOutput::from_bytes("A"), cs::SystemClock().now());
  CHECK(proxy.dropped() == 1);  // the server ran the store; its reply never arrived
  CHECK(storage.stats().retries == 1);
  CHECK(storage.stats().connects == 2);
  CHECK(r.status == cs::StoreStatus::stored);  // the retry found its own store done
  REQUIRE(storage.get(key));
  CHECK(storage.get(key)->bytes == "A");
  CHECK_FALSE(storage.reservation(key));

  // Not a retry: the reservation already stored, so a second store is rejected.
  CHECK(storage
            .store_and_release(key, a.reservation, cs::StoredOutput::from_bytes("A"),
                               cs::SystemClock().now())
            .status == cs::StoreStatus::rejected);
  CHECK(storage.stats().retries == 1);
  CHECK(storage.get(key)->bytes == "A");
}
