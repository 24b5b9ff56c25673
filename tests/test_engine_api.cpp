// The engine API, as a workflow engine drives it: non-blocking claims, owner ids that survive a
// restart, hand-over, liveness, typed stores, release reasons, who holds a key, gauges.

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

cs::Key key_of(const std::string& name) { return cs::Key("task", "1", name); }

cs::ClaimOptions as_owner(const std::string& owner, const std::string& tag = {}) {
  cs::ClaimOptions o;
  o.owner = owner;
  o.tag = tag;
  return o;
}

// An in-memory store that counts the storage operations made on it.
class CountingStorage : public cs::InMemoryStorage {
 public:
  cs::AcquireResult acquire(const cs::Key& key, const cs::AcquireRequest& req) {
    ++ops->acquire;
    return InMemoryStorage::acquire(key, req);
  }
  std::optional<cs::StoredOutput> get(const cs::Key& key) const {
    ++ops->get;
    return InMemoryStorage::get(key);
  }
  template <class F>
  bool visit_output(const cs::Key& key, F&& f) const {
    ++ops->get;
    return InMemoryStorage::visit_output(key, std::forward<F>(f));
  }
  cs::ExtendResult extend(const cs::Key& key, const cs::Reservation& mine, cs::TimePoint now,
                          cs::Duration ttl) {
    ++ops->extend;
    return InMemoryStorage::extend(key, mine, now, ttl);
  }
  std::vector<cs::ExtendResult> extend_many(const std::vector<cs::Extension>& batch,
                                            cs::TimePoint now) {  // the heartbeat's: through extend
    return cs::detail::extend_each(*this, batch, now);
  }
  cs::Subscription subscribe(const cs::Key& key, cs::Signal& signal) {
    ++ops->subscribe;
    return InMemoryStorage::subscribe(key, signal);
  }
  std::optional<cs::Reservation> reservation(const cs::Key& key) const {
    ++ops->reservation;
    return InMemoryStorage::reservation(key);
  }

  struct Ops {
    std::atomic<int> acquire{0}, get{0}, extend{0}, subscribe{0}, reservation{0};
    int total() const { return acquire + get + extend + subscribe + reservation; }
    void reset() {
      for (auto* c : {&acquire, &get, &extend, &subscribe, &reservation}) c->store(0);
    }
  };
  std::shared_ptr<Ops> ops = std::make_shared<Ops>();
};

using CountingManager = cs::ReservationManager<cs::ManualClock, CountingStorage>;

struct CountingWorld {
  CountingWorld() : manager(storage, clock, options()) {}
  cs::ManagerOptions options() {
    cs::ManagerOptions o;
    o.listener = recorder.listener();
    return o;
  }
  cs::ManualClock clock;
  CountingStorage storage;
  test::Recorder recorder;
  CountingManager manager;
};

}  // namespace

TEST_CASE("try_claim answers hit, acquired or held in one storage operation, and never waits") {
  CountingWorld w;
  const cs::Key key = key_of("k");

  SECTION("a free key is acquired, heartbeated, and then a hit") {
    auto r = w.manager.try_claim(key);
    CHECK(w.storage.ops->total() == 1);
    REQUIRE(r.is_acquired());
    CHECK(r.status() == cs::ClaimStatus::acquired);
    auto hold = std::move(r.hold());
    CHECK(w.manager.stats().executions == 1);
    CHECK(w.manager.stats().holds_active == 1);
    REQUIRE(w.clock.wait_for_sleepers(1));  // the heartbeat extends it
    w.clock.advance(10s);
    REQUIRE(w.clock.wait_for_sleepers(1));
    CHECK(w.manager.stats().heartbeats == 1);
    CHECK(hold.store_value(42) == cs::StoreStatus::stored);
    CHECK(w.manager.stats().holds_active == 0);

    w.storage.ops->reset();
    auto hit = w.manager.try_claim(key);
    CHECK(w.storage.ops->total() == 1);
    REQUIRE(hit.is_hit());
    CHECK(hit.value<int>() == 42);
    CHECK(w.manager.stats().hits == 1);
  }

  SECTION("a key held by another owner: the holder and its remaining life, counted as held") {
    REQUIRE(w.storage.acquire(key, {"elsewhere", w.clock.now(), 30s, false}).status ==
            cs::AcquireStatus::acquired);
    w.storage.ops->reset();
    w.clock.advance(5s);
    auto r = w.manager.try_claim(key, as_owner("engine:node-7:1", "node-7"));
    CHECK(w.storage.ops->total() == 1);  // no subscription, no second look
    REQUIRE(r.is_held());
    CHECK(r.holder().owner == "elsewhere");
    CHECK(r.remaining() == 25s);
    const cs::Stats s = w.manager.stats();
    CHECK(s.held == 1);
    CHECK(s.waits == 0);
    CHECK(s.waiters_active == 0);
    CHECK(w.recorder.count(cs::EventKind::waiting) == 0);
    const auto held = w.recorder.of(cs::EventKind::held);
    REQUIRE(held.size() == 1);
    CHECK(held[0].holder == "elsewhere");
    CHECK(held[0].owner == "engine:node-7:1");
    CHECK(w.clock.next_deadline() == std::nullopt);  // nobody sleeps: not even a heartbeat
  }

  SECTION("overwrite acquires over a stored output") {
    w.manager.put(key, cs::StoredOutput::from_object(std::make_shared<const int>(1)));
    cs::ClaimOptions o;
    o.overwrite = true;
    auto r = w.manager.try_claim(key, o);
    REQUIRE(r.is_acquired());
    CHECK(r.hold().store_value(2) == cs::StoreStatus::stored);
    CHECK(w.manager.try_claim(key).value<int>() == 2);
  }

  SECTION("a cancelled token looks nothing up") {
    cs::CancellationSource source;
    source.cancel();
    cs::ClaimOptions o;
    o.cancel = source.token();
    REQUIRE_THROWS_AS(w.manager.try_claim(key, o), cs::cancelled_error);
    CHECK(w.storage.ops->total() == 0);
  }

  SECTION("results refuse the accessors of another status") {
    auto r = w.manager.try_claim(key);
    REQUIRE_THROWS_WITH(r.output(), Catch::Contains("is acquired, not a hit"));
    REQUIRE_THROWS_AS(r.holder(), std::logic_error);
    REQUIRE_THROWS_AS(r.remaining(), std::logic_error);
  }
}

TEST_CASE("an engine that claims again with its own owner id resumes its reservation") {
  test::World w;
  const cs::Key key = key_of("k");
  const cs::ClaimOptions mine = as_owner("exec-1/node-a/attempt-0");

  SECTION("after a restart: the same token, no takeover, no second execution") {
    cs::Reservation before;
    {
      test::Manager crashed(w.storage, w.clock);  // the engine before its restart
      auto r = crashed.try_claim(key, mine);
      REQUIRE(r.is_acquired());
      before = std::move(r.hold()).detach();  // it dies without releasing
    }
    w.clock.advance(20s);  // restarted within the reservation's 30 s
    auto again = w.manager.try_claim(key, mine);
    REQUIRE(again.is_acquired());
    CHECK(again.hold().reservation().token == before.token);
    CHECK_FALSE(again.hold().took_over());
    CHECK(w.manager.stats().takeovers == 0);
    CHECK(w.recorder.count(cs::EventKind::took_over) == 0);

    // Another engine waiting on the key meanwhile neither takes it over nor runs it.
    auto other = w.manager.try_claim(key, as_owner("exec-2/node-a/attempt-0"));
    REQUIRE(other.is_held());
    CHECK(other.holder().owner == *mine.owner);
    CHECK(again.hold().store_value(7) == cs::StoreStatus::stored);
    CHECK(w.manager.try_claim(key, as_owner("exec-2/node-a/attempt-0")).value<int>() == 7);
  }

  SECTION("a claim by an owner this manager already holds the key for makes no second hold") {
    auto first = w.manager.try_claim(key, mine);
    REQUIRE(first.is_acquired());
    auto second = w.manager.try_claim(key, mine);
    REQUIRE(second.is_held());
    CHECK(second.holder().owner == *mine.owner);
    CHECK(second.holder().token == first.hold().reservation().token);
    CHECK(w.manager.stats().holds_active == 1);
    CHECK(w.manager.stats().executions == 1);
    REQUIRE_THROWS_WITH(w.manager.claim(key, mine), Catch::Contains("already holds the key"));
    // Once the first hold is finished the owner may claim again.
    REQUIRE(first.hold().release() == cs::ReleaseStatus::released);
    CHECK(w.manager.try_claim(key, mine).is_acquired());
  }

  SECTION("generated owner ids never collide, so they need no such bookkeeping") {
    auto a = w.manager.try_claim(key);
    auto b = w.manager.try_claim(key);
    REQUIRE(a.is_acquired());
    REQUIRE(b.is_held());
    CHECK(b.holder().owner == a.hold().reservation().owner);
  }
}

TEST_CASE("an owner id must be 1 to 1024 bytes") {
  test::World w;
  cs::ClaimOptions o;
  o.owner = "";
  REQUIRE_THROWS_AS(w.manager.try_claim(key_of("k"), o), std::invalid_argument);
  REQUIRE_THROWS_WITH(w.manager.claim(key_of("k"), o), Catch::Contains("owner must be 1 to 1024"));
  o.owner = std::string(2048, 'x');
  REQUIRE_THROWS_WITH(w.manager.try_claim(key_of("k"), o), Catch::Contains("got 2048"));
  o.owner = std::string(1024, 'x');
  CHECK(w.manager.try_claim(key_of("k"), o).is_acquired());
  CHECK_FALSE(w.storage.reservation(key_of("never claimed")));
}

TEST_CASE("a reservation handed over with detach is adopted elsewhere and stored once") {
  test::World w;  // the engine
  cs::ManualClock& clock = w.clock;
  test::Recorder worker_events;
  cs::ManagerOptions worker_options;
  worker_options.listener = worker_events.listener();
  test::Manager worker(w.storage, clock, worker_options);  // another process: the worker
  const cs::Key key = key_of("k");

  auto r = w.manager.try_claim(key, as_owner("exec-1/node-a/attempt-0", "node-a"));
  REQUIRE(r.is_acquired());
  const cs::Reservation handed = std::move(r.hold()).detach();
  CHECK_FALSE(r.hold().active());
  CHECK(w.recorder.count(cs::EventKind::detached) == 1);
  CHECK(w.manager.stats().detached == 1);
  CHECK(w.manager.stats().holds_active == 0);
  CHECK(w.storage.reservation(key)->token == handed.token);  // not released

  SECTION("the worker adopts it, heartbeats it and stores") {
    clock.advance(5s);
    auto adopted = worker.adopt(key, handed);
    REQUIRE(adopted.is_acquired());
    auto hold = std::move(adopted.hold());
    CHECK(hold.reservation().token == handed.token);
    CHECK(hold.reservation().expires_at == clock.now() + 30s);  // extended on adoption
    CHECK(worker.stats().adoptions == 1);
    CHECK(worker.stats().executions == 0);
    REQUIRE(clock.wait_for_sleepers(2));  // both heartbeat threads; the worker's keeps it
    clock.advance(10s);
    REQUIRE(clock.wait_for_sleepers(2));
    CHECK(worker.stats().heartbeats == 1);
    CHECK(hold.store_value(3) == cs::StoreStatus::stored);
    CHECK(w.manager.try_claim(key).value<int>() == 3);
    for (auto kind : {cs::EventKind::lost, cs::EventKind::failed}) {
      CHECK(w.recorder.count(kind) == 0);
      CHECK(worker_events.count(kind) == 0);
    }
    CHECK(worker_events.count(cs::EventKind::adopted) == 1);
  }

  SECTION("a reservation taken over meanwhile is not adopted: the holder is reported") {
    clock.advance(31s);  // it expired, and another engine took the key
    auto other = w.manager.try_claim(key, as_owner("exec-2/node-a/attempt-0"));
    REQUIRE(other.is_acquired());
    auto adopted = worker.adopt(key, handed);
    REQUIRE(adopted.is_held());
    CHECK(adopted.holder().owner == "exec-2/node-a/attempt-0");
    CHECK(adopted.remaining() == 30s);
    CHECK(worker.stats().adoptions == 0);
  }

  SECTION("a reservation that ended with nobody holding the key: free") {
    REQUIRE(w.storage.release(key, handed) == cs::ReleaseStatus::released);
    auto adopted = worker.adopt(key, handed);
    CHECK(adopted.status() == cs::ClaimStatus::free);
    CHECK_FALSE(adopted.is_acquired());
    CHECK_FALSE(adopted.is_held());
  }

  SECTION("adopting what this manager already heartbeats makes no second hold") {
    auto first = worker.adopt(key, handed);
    REQUIRE(first.is_acquired());
    auto second = worker.adopt(key, handed);
    CHECK(second.is_held());
    CHECK(worker.stats().holds_active == 1);
  }

  SECTION("bad input: an unknown or empty reservation, another owner") {
    REQUIRE_THROWS_WITH(worker.adopt(key, cs::Reservation{}), Catch::Contains("no owner"));
    cs::ClaimOptions o = as_owner("someone else");
    REQUIRE_THROWS_WITH(worker.adopt(key, handed, o), Catch::Contains("not the reservation's"));
    CHECK(worker.adopt(key_of("unknown key"), handed).status() == cs::ClaimStatus::free);
    CHECK(w.storage.reservation(key)->owner == handed.owner);  // untouched
  }
}

TEST_CASE("work that is no longer alive releases its reservation at once") {
  test::World w;
  const cs::Key key = key_of("k");
  std::atomic<bool> remote_job_running{true};
  cs::ClaimOptions o = as_owner("exec-1/node-a/attempt-0", "node-a");
  o.alive = [&] { return remote_job_running.load(); };
  auto r = w.manager.try_claim(key, o);
  REQUIRE(r.is_acquired());
  auto hold = std::move(r.hold());
  const cs::TimePoint old_expiry = hold.reservation().expires_at;

  remote_job_running = false;  // the remote job died; a waiter sits on the key

  test::Threads threads;
  std::atomic<bool> took{false};
  cs::TimePoint took_at{};
  threads.spawn([&] {
    auto claim = w.manager.claim(key);
    took_at = w.clock.now();
    took = !claim.is_hit();
    claim.hold().release();
  });
  REQUIRE(w.clock.wait_for_sleepers(2));  // the waiter and the heartbeat
  w.clock.advance(10s);                   // the heartbeat's turn
  threads.join();
  CHECK(took.load());
  CHECK(took_at < old_expiry);  // before the old expiry: no need to sit it out
  CHECK(hold.lost());
  CHECK(w.recorder.count(cs::EventKind::abandoned) == 1);
  CHECK(w.recorder.of(cs::EventKind::abandoned)[0].tag == "node-a");
  CHECK(w.manager.stats().abandoned == 1);
  CHECK(hold.store_value(1) == cs::StoreStatus::rejected);  // fenced off
  CHECK(w.manager.stats().lost == 0);                       // abandoned, not lost
}

TEST_CASE("an alive check that throws releases the reservation like false") {
  test::World w;
  cs::ClaimOptions o;
  o.alive = []() -> bool { throw std::runtime_error("cannot reach the cluster"); };
  auto r = w.manager.try_claim(key_of("k"), o);
  REQUIRE(r.is_acquired());
  REQUIRE(w.clock.wait_for_sleepers(1));
  w.clock.advance(10s);
  REQUIRE(w.recorder.wait_for(cs::EventKind::abandoned));
  CHECK_FALSE(w.storage.reservation(key_of("k")));
  CHECK(r.hold().lost());
}

TEST_CASE("store_value keeps a value as the storage keeps outputs") {
  SECTION("an object storage keeps the object") {
    test::World w;
    auto r = w.manager.try_claim(key_of("k"));
    CHECK(r.hold().store_value(std::string("out")) == cs::StoreStatus::stored);
    CHECK(*static_cast<const std::string*>(w.storage.get(key_of("k"))->object.get()) == "out");
  }
  SECTION("a byte storage keeps its encoding, which a wrapper of that type reads") {
    cs::ManualClock clock;
    test::ByteMemoryStorage storage;
    cs::ReservationManager<cs::ManualClock, test::ByteMemoryStorage> manager(storage, clock);
    std::atomic<int> runs{0};
    auto f = cs::serialize_cached(
        [&](int n) {
          ++runs;
          return std::to_string(n);
        },
        cs::TaskOptions{"f", "1"}, manager);
    auto r = manager.try_claim(f.key(5));
    CHECK(r.hold().store_value(std::string("five")) == cs::StoreStatus::stored);
    CHECK(storage.get(f.key(5))->bytes == cs::encode_value(std::string("five")));
    CHECK(f(5) == "five");
    CHECK(runs == 0);

    SECTION("a value of another type than the readers expect is reported, then recomputed") {
      auto s = manager.try_claim(f.key(6));
      CHECK(s.hold().store_value(6.5) == cs::StoreStatus::stored);
      CHECK(f(6) == "6");
      CHECK(runs == 1);
      CHECK(manager.stats().corrupt_outputs == 1);
      REQUIRE_THROWS_AS(manager.try_claim(f.key(5)).value<double>(), cs::codec_error);
    }
  }
  SECTION("a finished hold refuses before encoding") {
    test::World w;
    auto r = w.manager.try_claim(key_of("k"));
    REQUIRE(r.hold().store_value(1) == cs::StoreStatus::stored);
    REQUIRE_THROWS_AS(r.hold().store_value(2), std::logic_error);
  }
}

TEST_CASE("a release says why: a failure, or a cancelled workflow that is not one") {
  test::World w;
  auto failed = w.manager.try_claim(key_of("a"));
  auto aborted = w.manager.try_claim(key_of("b"));
  CHECK(failed.hold().release() == cs::ReleaseStatus::released);
  CHECK(aborted.hold().release(cs::ReleaseReason::aborted) == cs::ReleaseStatus::released);
  const cs::Stats s = w.manager.stats();
  CHECK(s.failures == 1);
  CHECK(s.aborted == 1);
  CHECK(w.recorder.count(cs::EventKind::failed) == 1);
  CHECK(w.recorder.count(cs::EventKind::aborted) == 1);
  CHECK_FALSE(w.storage.reservation(key_of("b")));
}

TEST_CASE("holder() tells who holds a key in one read-only storage operation") {
  CountingWorld w;
  CHECK_FALSE(w.manager.holder(key_of("k")));
  auto r = w.manager.try_claim(key_of("k"), as_owner("exec-1/n/0"));
  w.storage.ops->reset();
  const std::optional<cs::Reservation> h = w.manager.holder(key_of("k"));
  CHECK(w.storage.ops->total() == 1);
  REQUIRE(h);
  CHECK(h->owner == "exec-1/n/0");
  CHECK(h->token == r.hold().reservation().token);
  CHECK(w.manager.stats().hits + w.manager.stats().misses == 0);  // a look, not a call
}

TEST_CASE("a claim's tag travels in every event of the claim and of its hold") {
  test::World w;
  const cs::Key key = key_of("k");
  auto r = w.manager.try_claim(key, as_owner("o-1", "node-1"));
  w.manager.try_claim(key, as_owner("o-2", "node-2"));  // held
  REQUIRE(w.clock.wait_for_sleepers(1));
  w.clock.advance(10s);
  REQUIRE(w.clock.wait_for_sleepers(1));
  r.hold().store_value(1);
  w.manager.try_claim(key, as_owner("o-3", "node-3"));  // hit
  std::map<cs::EventKind, std::string> tags;
  for (const auto& e : w.recorder.events()) tags[e.kind] = e.tag;
  CHECK(tags[cs::EventKind::acquired] == "node-1");
  CHECK(tags[cs::EventKind::held] == "node-2");
  CHECK(tags[cs::EventKind::released] == "node-1");
  CHECK(tags[cs::EventKind::hit] == "node-3");
}

TEST_CASE("a blocking waiter says again whom it waits for when the holder or its expiry changes") {
  test::World w;
  const cs::Key key = key_of("k");
  cs::ClaimOptions holder_options = as_owner("holder");
  holder_options.heartbeat_interval = 2s;  // 6 s reservations, extended every 2 s
  auto r = w.manager.try_claim(key, holder_options);
  REQUIRE(r.is_acquired());
  test::Threads threads;
  threads.spawn([&] { w.manager.claim(key, as_owner("waiter", "node-w")); });
  REQUIRE(w.clock.wait_for_sleepers(2));
  CHECK(w.manager.stats().waiters_active == 1);
  for (int i = 0; i < 4; ++i) {  // extensions at 2, 4, 6 s; the waiter looks at each expiry
    w.clock.advance_to(*w.clock.next_deadline());
    REQUIRE(w.clock.wait_for_sleepers(2));
  }
  const auto waiting = w.recorder.of(cs::EventKind::waiting);
  REQUIRE(waiting.size() >= 2);
  for (std::size_t i = 1; i < waiting.size(); ++i) {
    CHECK(waiting[i].expires_at > waiting[i - 1].expires_at);  // each one new: never stale
  }
  CHECK(waiting.back().tag == "node-w");
  CHECK(waiting.back().holder == "holder");
  r.hold().store_value(1);
  threads.join();
  CHECK(w.manager.stats().waiters_active == 0);
}

namespace {

// A fixed pool of threads, as an engine has.
class Pool {
 public:
  explicit Pool(int n) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void submit(std::function<void()> f) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(f));
    }
    cv_.notify_one();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        f = std::move(queue_.front());
        queue_.pop_front();
      }
      f();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
  bool stop_ = false;
};

}  // namespace

TEST_CASE("an engine evaluating in rounds on a pool of 4 never blocks a thread on another holder") {
  // 200 tasks, 150 of them on one key; the holder of that key submits a child task to the same
  // pool and waits for it. With blocking claims the 150 would fill the pool and starve the child
  // forever; in rounds, held tasks are only looked at again in the next round.
  test::World w;
  Pool pool(4);
  struct Task {
    cs::Key key;
    bool done = false;
  };
  std::vector<Task> tasks;
  for (int i = 0; i < 200; ++i) tasks.push_back({key_of(i < 150 ? "shared" : std::to_string(i))});
  std::mutex mu;
  std::condition_variable cv;
  std::set<int> finished;  // tasks whose work stored its output
  std::atomic<int> bodies{0};
  std::atomic<bool> child_done{false};

  auto finish = [&](int i) {
    std::lock_guard<std::mutex> lock(mu);
    finished.insert(i);
    cv.notify_all();
  };
  int rounds = 0;
  while (std::any_of(tasks.begin(), tasks.end(), [](const Task& t) { return !t.done; })) {
    REQUIRE(++rounds < 1000);
    std::vector<int> submitted;
    for (int i = 0; i < 200; ++i) {
      Task& task = tasks[static_cast<std::size_t>(i)];
      if (task.done) continue;
      auto r = w.manager.try_claim(task.key, as_owner("exec/" + std::to_string(i) + "/0"));
      if (r.is_hit()) {
        task.done = true;
      } else if (r.is_acquired()) {
        submitted.push_back(i);
        auto hold = std::make_shared<test::Manager::hold_type>(std::move(r.hold()));
        const bool parent = i == 0;
        pool.submit([&, i, hold, parent] {
          ++bodies;
          if (parent) {  // a child task on the same pool, waited for
            std::mutex m;
            std::condition_variable c;
            bool ready = false;
            pool.submit([&] {
              std::lock_guard<std::mutex> lock(m);
              ready = true;
              child_done = true;
              c.notify_all();
            });
            std::unique_lock<std::mutex> lock(m);
            c.wait(lock, [&] { return ready; });
          }
          hold->store_value(i);
          finish(i);
        });
      }
    }
    // The round ends when the work it started has stored its outputs.
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, test::kBound, [&] {
      return std::all_of(submitted.begin(), submitted.end(),
                         [&](int i) { return finished.count(i) > 0; });
    }));
  }
  CHECK(child_done.load());
  CHECK(bodies == 51);  // the shared key once, and each of the 50 others
  const cs::Stats s = w.manager.stats();
  CHECK(s.waits == 0);  // no thread ever waited on a holder
  CHECK(s.executions == 51);
  CHECK(s.hits == 200);  // each task ends reading its output in a round
  CHECK(s.holds_active == 0);
}
