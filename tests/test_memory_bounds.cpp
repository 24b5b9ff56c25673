// InMemoryStorage with bounds (issue 13): max_entries, max_bytes and its weights,
// expire_after_write on the store's clock, S3-FIFO eviction that never takes what is in use,
// evictions counted and announced, bad limits refused, prune(older_than).

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "storage_contract.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

// Keys of one length (a key's bytes are part of its charge), so that outputs of one weight
// are charged alike.
cs::Key key_of(int i) {
  std::string digits = std::to_string(i);
  return cs::Key("bounds", "1",
                 "key " + std::string(6 - std::min<std::size_t>(6, digits.size()), '0') + digits);
}

template <class T>
cs::StoredOutput object(T value) {
  return cs::StoredOutput::from_object(std::make_shared<const T>(std::move(value)));
}

std::string text_at(const cs::InMemoryStorage& s, const cs::Key& key) {
  const auto out = s.get(key);
  return out ? *static_cast<const std::string*>(out->object.get()) : std::string("<none>");
}

cs::InMemoryOptions on_clock(const cs::ManualClock& clock) {
  cs::InMemoryOptions o;
  o.clock = [clock] { return clock.now(); };
  return o;
}

// The charge of an output: its weight, the entry's bookkeeping and its key's bytes.
std::size_t charge_of(std::size_t weight, const cs::Key& key) {
  return weight + cs::InMemoryStorage::entry_overhead() + key.encoded().size();
}

// A type that says its weight with a member.
struct Image {
  std::vector<std::uint8_t> pixels;
  std::size_t cache_weight() const { return 10000; }
};

// A type that cannot change, weighed by a specialisation.
struct Foreign {
  int id = 0;
};

}  // namespace

template <>
struct cacheserialize::weigher<Foreign> {
  static std::size_t weigh(const Foreign&) { return 20000; }
};

TEST_CASE("a bounded InMemoryStorage follows the storage contract") {
  test::check_storage_contract([] {
    cs::InMemoryOptions o;
    o.max_entries = 1000;
    o.max_bytes = std::size_t{1} << 20;
    o.expire_after_write = 1h;
    return cs::InMemoryStorage(o);
  });
}

TEST_CASE("max_entries bounds the number of outputs, and each eviction is counted") {
  cs::InMemoryOptions o;
  o.max_entries = 100;
  cs::InMemoryStorage storage(o);
  std::size_t largest = 0;
  for (int i = 0; i < 1000; ++i) {
    storage.put(key_of(i), object(i));
    largest = std::max(largest, storage.size());
  }
  CHECK(largest == 100);
  CHECK(storage.size() == 100);
  const cs::InMemoryStats stats = storage.stats();
  CHECK(stats.entries == 100);
  CHECK(stats.evictions == 900);
  CHECK(stats.expirations == 0);
  int kept = 0;
  for (int i = 0; i < 1000; ++i) kept += storage.get(key_of(i)) ? 1 : 0;
  CHECK(kept == 100);
}

TEST_CASE("the default weight of strings and containers counts the heap they own") {
  const std::string small = "abc";  // inside the object
  CHECK(cs::weight_of(small) == sizeof(std::string));
  std::string big(1000, 'x');
  CHECK(cs::weight_of(big) == sizeof(std::string) + big.capacity() + 1);
  const std::vector<std::int32_t> ints(100);
  CHECK(cs::weight_of(ints) == sizeof(ints) + 400);
  const std::vector<std::string> texts(2, big);
  CHECK(cs::weight_of(texts) ==
        sizeof(texts) + 2 * sizeof(std::string) + 2 * (texts[0].capacity() + 1));
  const std::map<int, std::string> m{{1, big}};
  CHECK(cs::weight_of(m) > sizeof(m) + big.size());
  CHECK(cs::weight_of(7.5) == sizeof(double));
}

TEST_CASE("max_bytes bounds the charged bytes with the default weight of strings and vectors") {
  cs::InMemoryOptions o;
  o.max_bytes = 64 * 1024;
  cs::InMemoryStorage storage(o);
  const std::string text(1000, 't');
  storage.put(key_of(0), object(text));
  CHECK(storage.bytes() == charge_of(cs::weight_of(text), key_of(0)));
  storage.put(key_of(1), object(std::vector<double>(500)));
  CHECK(storage.bytes() == charge_of(cs::weight_of(text), key_of(0)) +
                               charge_of(cs::weight_of(std::vector<double>(500)), key_of(1)));
  std::size_t largest = 0;
  for (int i = 2; i < 500; ++i) {
    if (i % 2) {
      storage.put(key_of(i), object(std::string(1000, 'x')));
    } else {
      storage.put(key_of(i), object(std::vector<double>(125)));
    }
    largest = std::max(largest, storage.bytes());
  }
  CHECK(largest <= 64 * 1024);
  CHECK(storage.bytes() > 48 * 1024);  // the bound is used, not avoided
  CHECK(storage.stats().evictions > 0);
  // Erasing gives the bytes back.
  std::size_t before = storage.bytes();
  for (int i = 0; i < 500; ++i) storage.erase(key_of(i));
  CHECK(before > 0);
  CHECK(storage.bytes() == 0);
  CHECK(storage.size() == 0);
}

TEST_CASE("a user type says its weight with cache_weight() or a weigher specialisation") {
  CHECK(cs::weight_of(Image{}) == 10000);
  CHECK(cs::weight_of(Foreign{}) == 20000);
  cs::InMemoryOptions o;
  o.max_bytes = 3 * charge_of(10000, key_of(0)) + 100;
  cs::InMemoryStorage storage(o);
  for (int i = 0; i < 10; ++i) storage.put(key_of(i), object(Image{}));
  CHECK(storage.size() == 3);
  for (int i = 10; i < 20; ++i) storage.put(key_of(i), object(Foreign{i}));
  CHECK(storage.size() == 1);  // one Foreign weighs as two Images
  CHECK(storage.bytes() == charge_of(20000, key_of(19)));
}

TEST_CASE("InMemoryOptions::weigher weighs every output of the store") {
  cs::InMemoryOptions o;
  o.weigher = [](const cs::StoredOutput&) { return std::size_t{5000}; };
  o.max_bytes = 10 * charge_of(5000, key_of(0));
  cs::InMemoryStorage storage(o);
  for (int i = 0; i < 50; ++i) storage.put(key_of(i), object(i));
  CHECK(storage.size() == 10);
  CHECK(storage.bytes() == 10 * charge_of(5000, key_of(0)));
}

TEST_CASE("expire_after_write is measured on the store's clock: a ManualClock drives it") {
  cs::ManualClock clock;
  cs::InMemoryOptions o = on_clock(clock);
  o.expire_after_write = 10s;
  std::vector<std::pair<std::string, cs::RemovalCause>> removed;
  o.on_evict = [&](const cs::Eviction& e) { removed.emplace_back(e.key, e.cause); };
  cs::InMemoryStorage storage(o);
  const cs::Key key = key_of(1);
  storage.put(key, object(std::string("fresh")));
  clock.advance(9s);
  CHECK(text_at(storage, key) == "fresh");
  CHECK(storage.visit_output(key, [](const cs::StoredOutput&) {}));
  clock.advance(1s);
  CHECK_FALSE(storage.get(key));
  CHECK_FALSE(storage.visit_output(key, [](const cs::StoredOutput&) {}));
  const cs::AcquireResult r = storage.acquire(key, {"me", clock.now(), 30s, false});
  CHECK(r.status == cs::AcquireStatus::acquired);
  CHECK(storage.stats().expirations == 1);
  CHECK(storage.size() == 0);
  REQUIRE(removed.size() == 1);
  CHECK(removed[0].first == key.encoded());
  CHECK(removed[0].second == cs::RemovalCause::expired);
  // A rewrite starts the time again.
  storage.store_and_release(key, r.reservation, object(std::string("again")), clock.now());
  clock.advance(9s);
  CHECK(text_at(storage, key) == "again");
}

TEST_CASE("a wrapped function runs again once its output expired on the store's clock") {
  cs::ManualClock clock;
  cs::InMemoryOptions o = on_clock(clock);
  o.expire_after_write = 1min;
  test::Manager manager(cs::InMemoryStorage(o), clock);
  int runs = 0;
  auto square = cs::serialize_cached(
      [&](int n) {
        ++runs;
        return n * n;
      },
      cs::TaskOptions{"bounds.square", "1"}, manager);
  CHECK(square(3) == 9);
  CHECK(square(3) == 9);
  CHECK(runs == 1);
  clock.advance(1min);
  CHECK(square(3) == 9);
  CHECK(runs == 2);
}

TEST_CASE("S3-FIFO keeps a hot set through a scan that would flush an LRU") {
  cs::InMemoryOptions o;
  o.max_entries = 100;
  o.shards = 1;
  cs::InMemoryStorage storage(o);
  for (int i = 0; i < 20; ++i) storage.put(key_of(i), object(i));
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 20; ++i) REQUIRE(storage.get(key_of(i)));
  }
  for (int i = 1000; i < 1500; ++i) {  // one-off keys, 5x the capacity
    storage.put(key_of(i), object(i));
    if (i % 50 == 0) {
      for (int h = 0; h < 20; ++h) storage.get(key_of(h));  // the hot set stays in use
    }
  }
  int hot = 0;
  for (int i = 0; i < 20; ++i) hot += storage.get(key_of(i)) ? 1 : 0;
  CHECK(hot == 20);
  CHECK(storage.size() == 100);
}

TEST_CASE("an output whose key has a live reservation or waiters is never evicted") {
  cs::ManualClock clock;
  cs::InMemoryOptions o = on_clock(clock);
  o.max_entries = 4;
  cs::InMemoryStorage storage(o);
  const cs::Key reserved = key_of(-1);
  const cs::Key watched = key_of(-2);
  storage.put(reserved, object(std::string("being rewritten")));
  const cs::AcquireResult r = storage.acquire(reserved, {"holder", clock.now(), 30s, true});
  REQUIRE(r.status == cs::AcquireStatus::acquired);
  storage.put(watched, object(std::string("watched")));
  cs::Signal signal;
  cs::Subscription subscription = storage.subscribe(watched, signal);
  for (int i = 0; i < 100; ++i) storage.put(key_of(i), object(std::string("filler")));
  CHECK(text_at(storage, reserved) == "being rewritten");
  CHECK(text_at(storage, watched) == "watched");
  CHECK(storage.reservation(reserved));
  CHECK(storage.size() == 4);  // the bound holds with the others
  // Once no longer in use, they are evicted like any other: by keys hit more recently (one-off
  // keys pass through probation without touching them, in use or not).
  subscription.reset();
  REQUIRE(storage.release(reserved, r.reservation) == cs::ReleaseStatus::released);
  for (int i = 100; i < 120; ++i) {
    storage.put(key_of(i), object(std::string("filler")));
    storage.get(key_of(i));
  }
  CHECK_FALSE(storage.get(reserved));
  CHECK_FALSE(storage.get(watched));
}

TEST_CASE("an output being read by visit_output stays valid while stores would evict it") {
  cs::InMemoryOptions o;
  o.max_entries = 2;
  cs::InMemoryStorage storage(o);
  REQUIRE(storage.shard_count() == 1);
  const std::string original(4096, 'v');
  storage.put(key_of(0), object(original));
  test::Gate inside;
  test::Gate finish;
  test::Counter writer_started;
  std::string copied;
  std::atomic<bool> writer_done{false};
  test::Threads threads;
  threads.spawn([&] {
    storage.visit_output(key_of(0), [&](const cs::StoredOutput& out) {
      inside.open();
      finish.wait();
      copied = *static_cast<const std::string*>(out.object.get());
    });
  });
  inside.wait();
  threads.spawn([&] {
    writer_started.arrive();
    for (int i = 1; i < 50; ++i) storage.put(key_of(i), object(std::string(4096, 'w')));
    writer_done = true;
  });
  REQUIRE(writer_started.wait_for(1));
  CHECK_FALSE(writer_done.load());  // the writer waits for the reader to let go
  CHECK(storage.stats().evictions == 0);
  finish.open();
  threads.join();
  CHECK(copied == original);
  CHECK(storage.size() == 2);
  CHECK(storage.stats().evictions == 48);
}

TEST_CASE("evictions are announced to on_evict outside the lock, with the key and the cause") {
  std::mutex mu;
  std::vector<std::pair<std::string, cs::RemovalCause>> seen;
  cs::InMemoryOptions o;
  o.max_entries = 2;
  cs::InMemoryStorage* self = nullptr;
  o.on_evict = [&](const cs::Eviction& e) {
    std::lock_guard<std::mutex> lock(mu);
    seen.emplace_back(e.key, e.cause);
    CHECK(e.weight > cs::InMemoryStorage::entry_overhead());
    CHECK(self->size() <= 2);
    self->get(key_of(0));  // the store may be called: no lock is held
  };
  cs::InMemoryStorage storage(o);
  self = &storage;
  storage.put(key_of(1), object(1));
  storage.put(key_of(2), object(2));
  storage.put(key_of(3), object(3));
  std::lock_guard<std::mutex> lock(mu);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].first == key_of(1).encoded());  // never hit: the first out of probation
  CHECK(seen[0].second == cs::RemovalCause::size);
  CHECK(storage.stats().evictions == 1);
}

TEST_CASE("zero or absurd limits are refused, naming the option") {
  auto make = [](auto set) {
    cs::InMemoryOptions o;
    set(o);
    return cs::InMemoryStorage(o);
  };
  using IA = std::invalid_argument;
  CHECK_THROWS_MATCHES(make([](auto& o) { o.max_entries = 0; }), IA,
                       Catch::Message("cacheserialize::InMemoryOptions: max_entries must be > 0"));
  CHECK_THROWS_WITH(make([](auto& o) { o.max_entries = std::size_t{1} << 41; }),
                    Catch::Contains("max_entries") && Catch::Contains("absurd"));
  CHECK_THROWS_WITH(make([](auto& o) { o.max_bytes = 0; }), Catch::Contains("max_bytes"));
  CHECK_THROWS_WITH(make([](auto& o) { o.max_bytes = 100; }), Catch::Contains("max_bytes"));
  CHECK_THROWS_WITH(make([](auto& o) { o.max_bytes = std::size_t{1} << 61; }),
                    Catch::Contains("max_bytes") && Catch::Contains("absurd"));
  CHECK_THROWS_WITH(make([](auto& o) { o.expire_after_write = 0s; }),
                    Catch::Contains("expire_after_write"));
  CHECK_THROWS_WITH(make([](auto& o) { o.expire_after_write = -1s; }),
                    Catch::Contains("expire_after_write"));
  CHECK_THROWS_WITH(make([](auto& o) { o.shards = 0; }), Catch::Contains("shards"));
  CHECK_NOTHROW(make([](auto& o) {
    o.max_entries = 1;
    o.max_bytes = 4096;
    o.expire_after_write = 1ns;
  }));
}

TEST_CASE("an output the store refuses is still returned to the caller, reported as store_failed") {
  cs::ManualClock clock;
  test::Recorder recorder;
  cs::ManagerOptions mo;
  mo.listener = recorder.listener();
  const bool throwing_weigher = GENERATE(true, false);
  CAPTURE(throwing_weigher);
  cs::InMemoryOptions o = on_clock(clock);
  o.max_bytes = 8192;
  if (throwing_weigher) {
    o.weigher = [](const cs::StoredOutput&) -> std::size_t {
      throw std::runtime_error("cannot weigh this");
    };
  }
  cs::InMemoryStorage storage(o);
  test::Manager manager(storage, clock, mo);
  const std::string huge(throwing_weigher ? 10 : 100000, 'h');
  test::Busy busy;
  std::atomic<int> runs{0};
  auto make = cs::serialize_cached(
      [&](int n) {
        if (runs++ == 0) busy.enter();
        return huge + std::to_string(n);
      },
      cs::TaskOptions{"bounds.refused", "1"}, manager);
  test::Threads threads;
  std::string first;
  std::string second;
  threads.spawn([&] { first = make(1); });
  REQUIRE(busy.started.wait_for(1));
  threads.spawn([&] { second = make(1); });  // waits for the holder
  REQUIRE(clock.wait_for_sleepers(2));       // the waiter and the heartbeat
  busy.gate.open();                          // the holder's store is refused
  threads.join();
  CHECK(first == huge + "1");
  CHECK(second == huge + "1");  // the waiter proceeded and ran it itself
  CHECK(runs == 2);
  CHECK(storage.size() == 0);
  CHECK(storage.bytes() == 0);
  CHECK_FALSE(storage.reservation(make.key(1)));  // released, nothing left locked
  CHECK(storage.stats().rejections == 2);
  CHECK(manager.stats().store_failures == 2);
  const auto failed = recorder.of(cs::EventKind::store_failed);
  REQUIRE(failed.size() == 2);
  CHECK_THAT(failed[0].detail,
             Catch::Contains(throwing_weigher ? "cannot weigh this" : "max_bytes"));
  // put refuses alike, without a reservation to release.
  if (throwing_weigher) {
    CHECK_THROWS_WITH(storage.put(key_of(1), object(1)), Catch::Contains("cannot weigh"));
  } else {
    CHECK_THROWS_AS(storage.put(key_of(1), object(huge)), std::length_error);
  }
  CHECK(storage.size() == 0);
}

TEST_CASE("prune(older_than) removes old outputs and expired reservations, never a live one") {
  cs::ManualClock clock;
  const bool bounded = GENERATE(false, true);
  CAPTURE(bounded);
  cs::InMemoryOptions o = on_clock(clock);
  if (bounded) o.max_entries = 1000;
  cs::InMemoryStorage storage(o);
  const cs::Key old_output = key_of(1);
  const cs::Key new_output = key_of(2);
  const cs::Key live = key_of(3);
  const cs::Key dead = key_of(4);
  const cs::TimePoint t0 = clock.now();
  storage.put(old_output, object(std::string("old")));
  storage.put(live, object(std::string("old, rewritten by a live holder")));
  REQUIRE(storage.acquire(live, {"live", t0, 1h, true}).status == cs::AcquireStatus::acquired);
  REQUIRE(storage.acquire(dead, {"dead", t0, 1s, false}).status == cs::AcquireStatus::acquired);
  clock.advance(10s);
  storage.put(new_output, object(std::string("new")));
  clock.advance(10s);  // now t0 + 20 s: old_output is 20 s old, new_output 10 s

  CHECK_THROWS_AS(storage.prune(-1s), std::invalid_argument);
  const cs::PruneResult none = storage.prune(1h);
  CHECK(none.outputs_removed == 0);
  CHECK(none.reservations_removed == 0);
  const cs::PruneResult r = storage.prune(15s);
  CHECK(r.outputs_removed == 1);
  CHECK(r.reservations_removed == 1);
  CHECK(r.temporaries_removed == 0);
  CHECK_FALSE(storage.get(old_output));
  CHECK(text_at(storage, new_output) == "new");
  CHECK(text_at(storage, live) == "old, rewritten by a live holder");
  CHECK(storage.reservation(live));
  CHECK_FALSE(storage.reservation(dead));
  CHECK(storage.size() == 2);
  CHECK(storage.stats().evictions == 0);  // a prune is not an eviction
  const cs::PruneResult all = storage.prune(0s);
  CHECK(all.outputs_removed == 1);  // new_output; the live key's output stays
  CHECK(storage.size() == 1);
}

TEST_CASE("20,000 outputs of 1 KiB keep a 2 MiB store within its bytes") {
  cs::InMemoryOptions o;
  o.max_bytes = 2 << 20;
  cs::InMemoryStorage storage(o);
  const std::size_t per_output = charge_of(cs::weight_of(std::string(1024, 'x')), key_of(19999));
  std::size_t largest_bytes = 0;
  std::size_t largest_entries = 0;
  for (int i = 0; i < 20000; ++i) {
    storage.put(key_of(i), object(std::string(1024, static_cast<char>('a' + i % 26))));
    largest_bytes = std::max(largest_bytes, storage.bytes());
    largest_entries = std::max(largest_entries, storage.size());
  }
  CHECK(largest_bytes <= (2u << 20));
  CHECK(largest_entries <= (2u << 20) / per_output + 1);
  CHECK(storage.size() >= (2u << 20) / per_output - 1);  // and it is full, not empty
  CHECK(storage.stats().evictions == 20000 - storage.size());
  STATIC_REQUIRE(noexcept(storage.size()));
  STATIC_REQUIRE(noexcept(storage.bytes()));
}

TEST_CASE("a bounded store shared by threads keeps its bound and its counts consistent") {
  cs::InMemoryOptions o;
  o.max_entries = 64;  // two shards: evictions cross shards
  cs::InMemoryStorage storage(o);
  REQUIRE(storage.shard_count() == 2);
  constexpr int kKeys = 500;
  std::atomic<int> wrong{0};
  test::Threads threads;
  for (int t = 0; t < 4; ++t) {
    threads.spawn([&, t] {
      const cs::TimePoint now = cs::ManualClock::default_start();
      for (int i = 0; i < 4000; ++i) {
        const int k = (i * 7919 + t * 131) % kKeys;
        const cs::Key key = key_of(k);
        const bool seen = storage.visit_output(key, [&](const cs::StoredOutput& out) {
          if (*static_cast<const int*>(out.object.get()) != k) ++wrong;
        });
        if (seen) continue;
        if (i % 3 == 0) {
          const std::string owner = "t" + std::to_string(t);
          const cs::AcquireResult r = storage.acquire(key, {owner, now, 30s, false});
          if (r.status == cs::AcquireStatus::acquired) {
            storage.store_and_release(key, r.reservation, object(k), now);
          }
        } else {
          storage.put(key, object(k));
        }
      }
    });
  }
  threads.join();
  CHECK(wrong == 0);
  CHECK(storage.size() <= 64);
  int found = 0;
  for (int k = 0; k < kKeys; ++k) found += storage.get(key_of(k)) ? 1 : 0;
  CHECK(static_cast<std::size_t>(found) == storage.size());
  const cs::InMemoryStats stats = storage.stats();
  CHECK(stats.evictions > 0);
  for (int k = 0; k < kKeys; ++k) storage.erase(key_of(k));
  CHECK(storage.size() == 0);
  CHECK(storage.bytes() == 0);
}
