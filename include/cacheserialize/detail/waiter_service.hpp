#pragma once

// The waiter service: one thread per manager that re-checks the keys asynchronous claims wait
// on, each only when it was notified (a storage's subscription, a cancellation) or its timer is
// due (a holder's expiry, a give-up time, a jittered poll). Thousands of waiters cost no thread
// each: a key is one task, however many claims wait on it.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "../signal.hpp"
#include "../time.hpp"

namespace cacheserialize {
namespace detail {

/// Something the service checks: notified from any thread, run on the service's thread.
///
/// `notify()` (the storage's and the cancellation source's callback) only queues the task and
/// wakes the service: it takes the service's queue mutex and the wake signal's, nothing else,
/// so it may be called under the notifier's locks.
///
/// Lifetime: the service keeps a queued or timed task alive (shared_ptr); a task must be made
/// with `std::make_shared` and attached to a service before it is notified.
class WaiterTask : public Notifiable, public std::enable_shared_from_this<WaiterTask> {
 public:
  /// Looks at what the task waits for, on the service's thread, never concurrently with itself.
  /// Completions it finds are kept for `deliver`, which runs once the task is rescheduled.
  /// @param now the clock's time.
  /// @return when to run again unless notified first; `TimePoint::max()`: only when notified.
  virtual TimePoint run(TimePoint now) noexcept = 0;

  /// Runs the completions the last `run` found, right after it: the tasks due after this one
  /// wait for them, so a slow completion delays them by its own run, no more.
  virtual void deliver() noexcept = 0;

  void notify() noexcept override;

  virtual ~WaiterTask() = default;

 protected:
  WaiterTask() = default;

 private:
  template <class Clock>
  friend class WaiterService;
  struct Queue;

  std::shared_ptr<Queue> queue_;  // set once, before the task can be notified
  std::atomic<bool> queued_{false};
  // The service thread's own bookkeeping.
  bool timed_ = false;
  std::uint64_t round_ = 0;
  std::multimap<TimePoint, std::shared_ptr<WaiterTask>>::iterator timer_;
};

/// What notifiers and the service thread share; outlives the service object if its thread is
/// let go (see ~WaiterService).
struct WaiterTask::Queue {
  std::mutex mu;  // guards ready and stop
  std::vector<std::shared_ptr<WaiterTask>> ready;
  bool stop = false;
  Signal wake;
};

inline void WaiterTask::notify() noexcept {
  if (queued_.exchange(true)) return;  // queued already: one run sees every change before it
  std::shared_ptr<WaiterTask> self = weak_from_this().lock();
  if (!self) return;  // being destroyed: nobody waits on it any more
  Queue& q = *queue_;
  {
    std::lock_guard<std::mutex> lock(q.mu);
    q.ready.push_back(std::move(self));
  }
  q.wake.notify();
}

/// @tparam Clock the manager's clock policy (a handle: the service keeps a copy).
///
/// Lifetime: the destructor stops the thread, wakes it and joins it. Destroyed on its own thread
/// (a task's run dropped the last handle of the manager), it lets the thread go instead; the
/// thread then only touches the shared queue, which it co-owns, and exits. Non-copyable.
///
/// Thread safety: `attach` and `start` may be called from any thread.
template <class Clock>
class WaiterService {
 public:
  explicit WaiterService(Clock clock) : clock_(std::move(clock)) {}
  WaiterService(const WaiterService&) = delete;
  WaiterService& operator=(const WaiterService&) = delete;

  ~WaiterService() {
    {
      std::lock_guard<std::mutex> lock(queue_->mu);
      queue_->stop = true;
    }
    queue_->wake.notify();
    std::lock_guard<std::mutex> lock(start_mu_);
    if (!thread_.joinable()) return;
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
  }

  /// Ties `task` to this service (before anything can notify it) and starts the thread on
  /// first use.
  /// @throws std::system_error if the thread cannot be started.
  void attach(WaiterTask& task) {
    task.queue_ = queue_;
    std::lock_guard<std::mutex> lock(start_mu_);
    if (!thread_.joinable()) {
      thread_ = std::thread([queue = queue_, clock = clock_] { loop(*queue, clock); });
    }
  }

 private:
  static void loop(WaiterTask::Queue& q, const Clock& clock) {
    std::multimap<TimePoint, std::shared_ptr<WaiterTask>> timers;  // this thread's only
    std::vector<std::shared_ptr<WaiterTask>> work;
    std::uint64_t round = 0;
    for (;;) {
      q.wake.reset();  // before looking: a notification from here on ends the wait below
      {
        std::lock_guard<std::mutex> lock(q.mu);
        if (q.stop) return;
        work.swap(q.ready);
      }
      const TimePoint now = clock.now();
      while (!timers.empty() && timers.begin()->first <= now) {
        work.push_back(std::move(timers.begin()->second));
        work.back()->timed_ = false;
        timers.erase(timers.begin());
      }
      if (work.empty()) {
        clock.wait_until(q.wake, timers.empty() ? TimePoint::max() : timers.begin()->first);
        continue;
      }
      ++round;
      for (auto it = work.begin(); it != work.end(); ++it) {
        WaiterTask& task = **it;
        if (task.round_ == round) continue;  // notified and due at once: one run
        task.round_ = round;
        if (task.timed_) {
          timers.erase(task.timer_);
          task.timed_ = false;
        }
        task.queued_.store(false);  // a notification during the run queues it again
        const TimePoint next = task.run(clock.now());
        if (next != TimePoint::max()) {
          task.timer_ = timers.emplace(next, *it);
          task.timed_ = true;
        }
        task.deliver();
      }
      work.clear();  // may drop a task's last reference, and with it the manager's
    }
  }

  Clock clock_;
  std::shared_ptr<WaiterTask::Queue> queue_ = std::make_shared<WaiterTask::Queue>();
  std::mutex start_mu_;  // guards thread_
  std::thread thread_;
};

}  // namespace detail
}  // namespace cacheserialize
