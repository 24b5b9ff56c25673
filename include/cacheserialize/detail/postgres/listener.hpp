#pragma once

// The listener: one connection and one thread per store that LISTENs on the store's channel and
// raises the signals of the waiters subscribed to each key as NOTIFYs arrive (the payload is the
// key's digest). Started by the first subscription.
//
// Missed notifications: PostgreSQL delivers every notification to a session that was listening
// when the notifying transaction committed, so notifications are lost only when the listening
// connection is. The listener therefore raises every subscriber when it has re-established
// LISTEN after losing it; while it cannot (it retries every `retry`), it raises them every
// `ping` so that waiters poll, one acquire each. It does not raise them the moment it loses the
// connection: during a brief server restart a waiter's re-check would only fail, while after it
// the re-check succeeds. A connection that stops answering is found by a ping after `ping` of
// silence.

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../../signal.hpp"
#include "connection.hpp"

namespace cacheserialize {
namespace detail {
namespace pg {

struct ListenerCounters {
  std::atomic<std::uint64_t> notifications{0};  // NOTIFYs received
  std::atomic<std::uint64_t> reconnects{0};     // LISTEN re-established after a loss
  std::atomic<std::uint64_t> connections{0};    // connections opened by the listener
};

class Listener {
 public:
  Listener(const ConnectSettings& settings, std::string channel, std::chrono::milliseconds ping,
           std::chrono::milliseconds retry, ListenerCounters& counters)
      : settings_(settings),
        listen_sql_("LISTEN \"" + channel + "\""),
        ping_(ping),
        retry_(retry),
        counters_(counters) {}

  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  ~Listener() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      cv_.notify_all();
    }
    if (wake_[1] >= 0) {
      const char b = 1;
      [[maybe_unused]] const ssize_t n = ::write(wake_[1], &b, 1);
    }
    if (thread_.joinable()) thread_.join();
    for (const int fd : wake_) {
      if (fd >= 0) ::close(fd);
    }
  }

  /// Raises `signal` on every store, put or release of the key with this digest, until
  /// `remove`. Starts the listener if needed and waits (at most the connect timeout plus a
  /// statement bound) until it listens, so that a write committed after this returns is seen.
  /// If it cannot listen by then, the signal is raised once it does.
  /// @throws std::system_error if the listener thread cannot be started.
  void add(const std::string& digest, Notifiable& signal) {
    std::unique_lock<std::mutex> lock(mu_);
    subs_[digest].push_back(Entry{&signal, false});
    if (state_ == State::listening) return;
    try {
      start_locked();
    } catch (...) {
      lock.unlock();
      remove(digest, signal);
      throw;
    }
    const std::uint64_t attempts = attempts_;
    cv_.wait_for(lock, settings_.connect_timeout + settings_.statement_bound,
                 [&] { return state_ == State::listening || attempts_ > attempts || stop_; });
    if (state_ == State::listening) return;
    for (Entry& e : subs_[digest]) {
      if (e.signal == &signal) e.pending = true;
    }
  }

  /// Stops raising `signal` for the key; once it returns, the signal is never raised again.
  void remove(const std::string& digest, Notifiable& signal) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = subs_.find(digest);
    if (it == subs_.end()) return;
    auto& v = it->second;
    const auto e =
        std::find_if(v.begin(), v.end(), [&](const Entry& x) { return x.signal == &signal; });
    if (e != v.end()) v.erase(e);
    if (v.empty()) subs_.erase(it);
  }

  /// Raises this process's subscribers of a key at once (after this process's own write; the
  /// NOTIFY of it raises them again a moment later, harmlessly).
  void raise(const std::string& digest) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    raise_locked(digest);
  }

 private:
  enum class State { stopped, down, listening };
  struct Entry {
    Notifiable* signal;
    bool pending;  // registered while not listening: raise when listening starts
  };

  void start_locked() {
    if (thread_.joinable()) return;
    if (wake_[0] < 0) {
      if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
        throw std::system_error(errno, std::generic_category(), "cacheserialize listener pipe");
      }
    }
    state_ = State::down;
    thread_ = std::thread([this] { run(); });
  }

  void raise_locked(const std::string& digest) noexcept {
    const auto it = subs_.find(digest);
    if (it == subs_.end()) return;
    for (const Entry& e : it->second) e.signal->notify();
  }

  void raise_all_locked() noexcept {
    for (auto& kv : subs_) {
      for (Entry& e : kv.second) {
        e.pending = false;
        e.signal->notify();
      }
    }
  }

  void run() {
    bool missed = false;  // a notification may have been lost: wake everyone once listening
    auto next_poll = SteadyClock::time_point::max();  // while down: when waiters poll next
    for (;;) {
      std::unique_ptr<Connection> c;
      try {
        c = Connection::open(settings_, SteadyClock::now() + settings_.connect_timeout);
        counters_.connections.fetch_add(1, std::memory_order_relaxed);
        c->simple(listen_sql_);
      } catch (const std::exception&) {
        c.reset();
      }
      std::unique_lock<std::mutex> lock(mu_);
      ++attempts_;
      if (stop_) return;
      if (!c) {
        // Down: waiters cannot be told of writes, so they poll, one wake-up per `ping`.
        state_ = State::down;
        if (!missed) next_poll = SteadyClock::now() + ping_;
        missed = true;
        if (SteadyClock::now() >= next_poll) {
          raise_all_locked();
          next_poll = SteadyClock::now() + ping_;
        }
        cv_.notify_all();
        cv_.wait_for(lock, retry_, [&] { return stop_; });
        if (stop_) return;
        continue;
      }
      state_ = State::listening;
      if (missed) {
        counters_.reconnects.fetch_add(1, std::memory_order_relaxed);
        raise_all_locked();
      } else {
        for (auto& kv : subs_) {
          for (Entry& e : kv.second) {
            if (e.pending) e.signal->notify();
            e.pending = false;
          }
        }
      }
      cv_.notify_all();
      lock.unlock();
      serve(*c);
      lock.lock();
      state_ = State::down;
      missed = true;
      next_poll = SteadyClock::now() + ping_;
      if (stop_) return;
    }
  }

  // Delivers notifications until the connection fails or the listener stops.
  void serve(Connection& c) {
    auto last_heard = SteadyClock::now();
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
      }
      const auto quiet_until = last_heard + ping_;
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(quiet_until - SteadyClock::now());
      pollfd fds[2] = {};
      fds[0].fd = PQsocket(c.raw());
      fds[0].events = POLLIN;
      fds[1].fd = wake_[0];
      fds[1].events = POLLIN;
      const int n = ::poll(fds, 2, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
      if (n < 0 && errno != EINTR) return;
      try {
        if (n > 0 && fds[0].revents != 0) {
          c.consume();
          last_heard = SteadyClock::now();
        } else if (n == 0) {
          c.simple("SELECT 1");  // silence: make sure the connection still works
          last_heard = SteadyClock::now();
        }
        deliver(c);
        if (PQstatus(c.raw()) != CONNECTION_OK) return;
      } catch (const std::exception&) {
        return;
      }
    }
  }

  void deliver(Connection& c) {
    std::vector<std::string> digests;
    while (PGnotify* n = PQnotifies(c.raw())) {
      digests.emplace_back(n->extra ? n->extra : "");
      PQfreemem(n);
    }
    if (digests.empty()) return;
    counters_.notifications.fetch_add(digests.size(), std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(mu_);
    for (const std::string& d : digests) raise_locked(d);
  }

  const ConnectSettings& settings_;
  const std::string listen_sql_;
  const std::chrono::milliseconds ping_;
  const std::chrono::milliseconds retry_;
  ListenerCounters& counters_;

  std::mutex mu_;  // guards everything below; Notifiable::notify is called under it
  std::condition_variable cv_;
  std::unordered_map<std::string, std::vector<Entry>> subs_;
  State state_ = State::stopped;
  std::uint64_t attempts_ = 0;  // connection attempts finished, successful or not
  bool stop_ = false;
  int wake_[2] = {-1, -1};
  std::thread thread_;
};

}  // namespace pg
}  // namespace detail
}  // namespace cacheserialize
