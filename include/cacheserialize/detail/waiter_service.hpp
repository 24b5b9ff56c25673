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
/// so it may be called under the notifier's locks. It never drops the last reference to the
/// task, so it never ends the subscription that calls it.
///
/// States: active (notifications queue it) and retired (nothing left to wait for:
/// notifications are ignored and the queue holds no reference to it); `retire` and `revive`
/// switch between them.
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
  ///
  /// An implementation moves the completions out of the task, resets `self`, and only then
  /// runs them, touching the task no more (resetting `self` may have destroyed it). So when a
  /// caller sees its completion, the service keeps nothing alive for it, and the caller's drop
  /// of its last handle destroys the manager, and joins the service's thread, on its own thread.
  /// @param self the service's reference to this task; null on return.
  virtual void deliver(std::shared_ptr<WaiterTask>& self) noexcept = 0;

  void notify() noexcept override;

  /// Ends the task's notifications, and drops the references to it that are queued: it has
  /// nothing left to wait for. Called with no lock of the service's held.
  void retire() noexcept;

  /// Undoes `retire`: something to wait for came back. The caller then notifies the task.
  void revive() noexcept;

  virtual ~WaiterTask() = default;

 protected:
  WaiterTask() = default;

 private:
  template <class Clock>
  friend class WaiterService;
  struct Queue;

  std::shared_ptr<Queue> queue_;  // set once, before the task can be notified
  std::atomic<bool> queued_{false};
  bool retired_ = false;  // guarded by the queue's mutex
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
  Queue& q = *queue_;
  {
    std::lock_guard<std::mutex> lock(q.mu);
    if (retired_) return;
    // Locked under the queue's mutex, so that a reference taken here goes to the queue, never
    // out of scope here (where it could be the last, and end the calling subscription).
    std::shared_ptr<WaiterTask> self = weak_from_this().lock();
    if (!self) return;  // being destroyed: nobody waits on it any more
    q.ready.push_back(std::move(self));
  }
  q.wake.notify();
}

inline void WaiterTask::retire() noexcept {
  Queue& q = *queue_;
  std::lock_guard<std::mutex> lock(q.mu);
  retired_ = true;
  // Not the last references: whoever retires the task holds one.
  q.ready.erase(
      std::remove_if(q.ready.begin(), q.ready.end(),
                     [this](const std::shared_ptr<WaiterTask>& t) { return t.get() == this; }),
      q.ready.end());
}

inline void WaiterTask::revive() noexcept {
  Queue& q = *queue_;
  std::lock_guard<std::mutex> lock(q.mu);
  retired_ = false;
  queued_.store(false);  // a notification ignored while retired must not block the next one
}

/// @tparam Clock the manager's clock policy (a handle: the service keeps a copy).
///
/// Lifetime: the destructor stops the thread, wakes it and joins it. A task's delivery lets go
/// of the task before its completions run, so a caller that saw its completion and drops the
/// last handle of the manager destroys the service on its own thread, and joins. Destroyed on
/// the service's own thread (every handle was dropped while claims waited, or a completion
/// dropped the last one), it lets the thread go instead; the thread then runs what is left of
/// that delivery, touches only the shared queue, which it co-owns, and exits. Non-copyable.
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
      // A task notified and due at once is in `work` twice: one run, and one reference, so
      // that its delivery can let go of it.
      for (std::shared_ptr<WaiterTask>& t : work) {
        if (t->round_ == round) {
          t.reset();
        } else {
          t->round_ = round;
        }
      }
      for (std::shared_ptr<WaiterTask>& t : work) {
        if (!t) continue;
        WaiterTask& task = *t;
        if (task.timed_) {
          timers.erase(task.timer_);
          task.timed_ = false;
        }
        task.queued_.store(false);  // a notification during the run queues it again
        const TimePoint next = task.run(clock.now());
        if (next != TimePoint::max()) {
          task.timer_ = timers.emplace(next, t);
          task.timed_ = true;
        }
        task.deliver(t);  // lets go of `t` first: `task` may be gone after this
      }
      work.clear();  // only empty slots: every delivery let go of its own
    }
  }

  Clock clock_;
  std::shared_ptr<WaiterTask::Queue> queue_ = std::make_shared<WaiterTask::Queue>();
  std::mutex start_mu_;  // guards thread_
  std::thread thread_;
};

}  // namespace detail
}  // namespace cacheserialize
