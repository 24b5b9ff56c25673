// detail::ReaderSlotLocks, the shard locks of InMemoryStorage: readers share, writers exclude
// readers and each other, and a stream of readers does not starve a writer. Threads only count
// what they saw; the main thread checks the counts after joining them.

#include <atomic>
#include <cacheserialize/detail/reader_slot_locks.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

#include "support.hpp"

namespace cs = cacheserialize;
using Locks = cs::detail::ReaderSlotLocks;

namespace {

/// Two plain (non-atomic) counters that writers keep equal; a reader that sees them differ saw
/// a write in progress. Each is on its own cache line, so a torn view is not unlikely.
struct Pair {
  alignas(64) std::uint64_t a = 0;
  alignas(64) std::uint64_t b = 0;
};

/// Until `done` holds (false if it never does): the other threads are this process's, so yield.
template <class Done>
bool eventually(Done done) {
  return test::eventually(done, test::kBound, std::chrono::milliseconds(0));
}

}  // namespace

TEST_CASE("reader-slot locks pick a power-of-two slot count and reject bad sizes") {
  const std::size_t slots = Locks::default_slots();
  CHECK(slots >= 8);
  CHECK(slots <= 64);
  CHECK((slots & (slots - 1)) == 0);
  CHECK(Locks(3).slots() == slots);
  CHECK(Locks(3).size() == 3);
  CHECK_THROWS_AS(Locks(0), std::invalid_argument);
  CHECK_THROWS_AS(Locks(1, 0), std::invalid_argument);
  CHECK_THROWS_AS(Locks(1, 6), std::invalid_argument);
}

TEST_CASE("reader-slot locks keep writers away from readers and from each other") {
  // One slot makes every thread share each counter; many slots give most threads their own.
  const std::size_t slots = GENERATE(std::size_t{1}, std::size_t{64});
  // Lock 17 is in the second line of counters of a slot: the packing is exercised too.
  const std::size_t lock = GENERATE(std::size_t{0}, std::size_t{17});
  CAPTURE(slots, lock);
  Locks locks(20, slots);
  Pair pair;
  constexpr int kWriters = 2;
  constexpr int kReaders = 4;
  constexpr int kWrites = 1000;
  std::atomic<int> writers_left{kWriters};
  std::atomic<int> readers_started{0};
  std::atomic<std::uint64_t> torn{0};
  std::atomic<std::uint64_t> reads{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kWriters; ++t) {
    threads.emplace_back([&] {
      // Writes start once every reader is reading, so that they overlap throughout.
      eventually([&] { return readers_started.load() == kReaders; });
      for (int i = 0; i < kWrites; ++i) {
        Locks::UniqueGuard g(locks, lock);
        const std::uint64_t a = pair.a;
        pair.a = a + 1;  // a lost update would show as a + b != 2 x kWriters x kWrites
        for (volatile int k = 0; k < 200; k = k + 1) {  // widens the window in which a reader
        }                                               // would see a != b
        pair.b = pair.b + 1;
      }
      writers_left.fetch_sub(1);
    });
  }
  for (int t = 0; t < kReaders; ++t) {
    threads.emplace_back([&] {
      // Readers read on until the writers are done.
      bool started = false;
      do {
        Locks::SharedGuard g(locks, lock);
        if (pair.a != pair.b) torn.fetch_add(1);
        reads.fetch_add(1);
        if (!started) {
          started = true;
          readers_started.fetch_add(1);
        }
      } while (writers_left.load() > 0);
    });
  }
  for (auto& th : threads) th.join();
  CHECK(torn.load() == 0);
  CHECK(pair.a == std::uint64_t{kWriters} * kWrites);
  CHECK(pair.b == std::uint64_t{kWriters} * kWrites);
  CHECK(reads.load() >= kReaders);
}

TEST_CASE("reader-slot locks let readers share a lock while a writer waits for them") {
  Locks locks(2);
  std::atomic<int> inside{0};
  std::atomic<bool> writer_in{false};
  test::Gate release_readers;
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      Locks::SharedGuard g(locks, 0);
      inside.fetch_add(1);
      release_readers.wait();
    });
  }
  // Both readers hold lock 0 at once: each waits at the gate while holding it.
  REQUIRE(eventually([&] { return inside.load() == 2; }));
  std::thread writer([&] {
    Locks::UniqueGuard g(locks, 0);
    writer_in.store(true);
  });
  {
    // Another lock of the set is independent: it is free for writing while lock 0 is read.
    Locks::UniqueGuard other(locks, 1);
  }
  CHECK_FALSE(writer_in.load());  // the readers still hold lock 0
  release_readers.open();
  for (auto& th : readers) th.join();
  writer.join();
  CHECK(writer_in.load());
}

TEST_CASE("a writer is not starved by a continuous stream of readers") {
  Locks locks(1);
  constexpr int kReaders = 4;
  std::atomic<bool> writer_done{false};
  std::atomic<bool> give_up{false};  // set only if the writer never gets in: ends the test
  std::atomic<int> readers_reading{0};
  std::atomic<int> reads_after{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < kReaders; ++t) {
    readers.emplace_back([&] {
      bool counted = false;
      // Read sections overlap: at every moment some reader holds or is taking the lock, until
      // the writer has had its turn.
      while (!writer_done.load() && !give_up.load()) {
        Locks::SharedGuard g(locks, 0);
        if (!counted) {
          counted = true;
          readers_reading.fetch_add(1);
        }
      }
      // And readers get the lock again afterwards.
      Locks::SharedGuard g(locks, 0);
      reads_after.fetch_add(1);
    });
  }
  const bool all_reading = eventually([&] { return readers_reading.load() == kReaders; });
  std::thread writer([&] {
    Locks::UniqueGuard g(locks, 0);
    writer_done.store(true);
  });
  // The readers stop only once the writer has had the lock: a starved writer fails here.
  const bool writer_got_in = eventually([&] { return writer_done.load(); });
  give_up.store(true);
  for (auto& th : readers) th.join();
  writer.join();
  CHECK(all_reading);
  CHECK(writer_got_in);
  CHECK(reads_after.load() == kReaders);
}
