#pragma once

// Test support: gates and an event recorder. Tests synchronise through these and through
// ManualClock::wait_for_sleepers, never through sleeps; every blocking helper has a real-time
// bound so that a broken test fails instead of hanging.

#include <cacheserialize/cacheserialize.hpp>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace test {

namespace cs = cacheserialize;

inline constexpr std::chrono::seconds kBound{30};

/// Polls `condition` until it holds or `bound` of real time passes: for a state that other
/// threads, processes or servers reach and that offers nothing to wait on. The bound makes a
/// broken test fail instead of hang.
/// @param poll the pause between checks; zero yields the processor instead (for threads of this
///        process, which get there in microseconds).
/// @return whether the condition held.
template <class Condition>
bool eventually(Condition condition, std::chrono::milliseconds bound = kBound,
                std::chrono::milliseconds poll = std::chrono::milliseconds(2)) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    if (poll.count() > 0) {
      std::this_thread::sleep_for(poll);
    } else {
      std::this_thread::yield();
    }
  }
  return true;
}

/// A one-way door: threads wait until a test opens it.
class Gate {
 public:
  void open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  /// Blocks until the gate is open. Catch2's assertions are not thread-safe, so code on other
  /// threads calls this rather than REQUIRE-ing a result.
  /// @throws std::runtime_error if the bound passed first.
  void wait() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, kBound, [&] { return open_; })) {
      throw std::runtime_error("test gate not opened within the bound");
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

/// Counts arrivals; waits until a number of them.
class Counter {
 public:
  void arrive() {
    std::lock_guard<std::mutex> lock(mu_);
    ++n_;
    cv_.notify_all();
  }
  bool wait_for(std::size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kBound, [&] { return n_ >= n; });
  }
  std::size_t value() {
    std::lock_guard<std::mutex> lock(mu_);
    return n_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::size_t n_ = 0;
};

/// The shape of every "the holder is busy" scenario: a function body that says it has started,
/// then blocks until the test lets it finish.
struct Busy {
  Gate gate;
  Counter started;
  void enter() {
    started.arrive();
    gate.wait();
  }
};

struct Recorded {
  cs::EventKind kind;
  std::string task;
  std::string owner;
  std::string holder;
  std::string detail;
  std::uint64_t token;
  cs::TimePoint expires_at;
  std::string tag;
};

/// A thread-safe listener that keeps every event.
class Recorder {
 public:
  cs::Listener listener() {
    return [this](const cs::Event& e) {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(Recorded{e.kind, e.key->task(), std::string(e.owner), std::string(e.holder),
                                 std::string(e.detail), e.token, e.expires_at, std::string(e.tag)});
      cv_.notify_all();
    };
  }
  std::vector<Recorded> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  std::vector<Recorded> of(cs::EventKind kind) {
    std::vector<Recorded> out;
    for (auto& e : events()) {
      if (e.kind == kind) out.push_back(e);
    }
    return out;
  }
  std::size_t count(cs::EventKind kind) { return of(kind).size(); }
  /// Waits until `n` events of `kind` were recorded.
  bool wait_for(cs::EventKind kind, std::size_t n = 1) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kBound, [&] {
      std::size_t c = 0;
      for (auto& e : events_) c += e.kind == kind ? 1 : 0;
      return c >= n;
    });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Recorded> events_;
};

/// An in-memory store that keeps outputs as bytes, so calls go through the codec as they do
/// with the file-system and database storages.
class ByteMemoryStorage : public cs::InMemoryStorage {
 public:
  static constexpr bool stores_objects = false;
};

/// @return the number of threads in this process (Linux). The first call starts and joins a
/// thread, so that a sanitizer's own helper thread (started with the first thread) is already
/// there and counted in every reading.
inline std::size_t thread_count() {
  static const bool warmed_up = [] {
    std::thread([] {}).join();
    return true;
  }();
  (void)warmed_up;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoul(line.substr(8));
  }
  return 0;
}

}  // namespace test

namespace test {

using Manager = cs::ReservationManager<cs::ManualClock, cs::InMemoryStorage>;

/// A fake clock, an in-memory store, a recorder, and a manager over them.
struct World {
  explicit World(cs::ManagerOptions options = {})
      : manager(storage, clock, with_listener(options)) {}

  cs::ManagerOptions with_listener(cs::ManagerOptions o) {
    o.listener = recorder.listener();
    return o;
  }

  cs::ManualClock clock;
  cs::InMemoryStorage storage;
  Recorder recorder;
  Manager manager;
};

/// Joins its threads on destruction, so a failed REQUIRE does not leave them running.
class Threads {
 public:
  template <class F>
  void spawn(F&& f) {
    // Room first, so that the push cannot throw and leave a joinable thread to terminate us.
    // (Built in place, gcc 12 -O3 warns of a false -Warray-bounds in std::thread's constructor.)
    if (threads_.size() == threads_.capacity()) threads_.reserve(2 * threads_.size() + 4);
    std::thread t(std::forward<F>(f));
    threads_.push_back(std::move(t));
  }
  void join() {
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  ~Threads() { join(); }

 private:
  std::vector<std::thread> threads_;
};

/// An executor that queues work until the test runs it, on the test's thread. Copies share the
/// queue.
struct ManualExecutor {
  std::shared_ptr<std::deque<std::function<void()>>> queue =
      std::make_shared<std::deque<std::function<void()>>>();
  std::shared_ptr<std::mutex> mu = std::make_shared<std::mutex>();
  void operator()(std::function<void()> f) const {
    std::lock_guard<std::mutex> lock(*mu);
    queue->push_back(std::move(f));
  }
  std::size_t run_all() const {
    std::size_t n = 0;
    for (;;) {
      std::function<void()> f;
      {
        std::lock_guard<std::mutex> lock(*mu);
        if (queue->empty()) return n;
        f = std::move(queue->front());
        queue->pop_front();
      }
      f();
      ++n;
    }
  }
  std::size_t size() const {
    std::lock_guard<std::mutex> lock(*mu);
    return queue->size();
  }
  // Runs work until `f` is ready: work may be posted later, from the waiter thread.
  template <class T>
  bool run_until(std::future<T>& f) const {
    return eventually(
        [&] {
          run_all();
          return f.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
        },
        kBound, std::chrono::milliseconds(0));
  }
};

}  // namespace test
