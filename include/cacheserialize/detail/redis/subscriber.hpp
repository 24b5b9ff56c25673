#pragma once

// The pub/sub side of RedisStorage: one connection and one thread per storage, started by the
// first subscription. Waiters register a Notifiable (a Signal, or a callback) for a key's channel;
// the thread SUBSCRIBEs to channels that have waiters (and UNSUBSCRIBEs from those that no longer
// do), and raises a channel's signals when a message arrives from another process. The storage
// raises its own process's waiters directly after its own stores and releases, and the messages it
// publishes carry its origin id, so the thread skips them.
//
// Messages can be lost while the connection is down; so when it is lost every waiter is raised
// (each looks again), while it cannot be re-established every waiter is raised each
// fallback_poll_interval (waiters then poll), and once it is back each waiter is raised again
// as soon as the server confirms its channel's new subscription.

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../../signal.hpp"
#include "../../storage.hpp"
#include "connection.hpp"

namespace cacheserialize {
namespace detail {

class RedisSubscriber {
 public:
  /// @throws std::system_error if the wake-up pipe cannot be made.
  RedisSubscriber(RedisOptions options, std::string origin, std::shared_ptr<RedisCounters> counters)
      : options_(std::move(options)), origin_(std::move(origin)), counters_(std::move(counters)) {
    if (::pipe(wake_pipe_) != 0) {
      throw std::system_error(errno, std::generic_category(),
                              "cacheserialize::RedisStorage: cannot create a pipe");
    }
    for (int fd : wake_pipe_) {
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
  }

  RedisSubscriber(const RedisSubscriber&) = delete;
  RedisSubscriber& operator=(const RedisSubscriber&) = delete;

  ~RedisSubscriber() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    wake();
    if (thread_.joinable()) thread_.join();
    ::close(wake_pipe_[0]);
    ::close(wake_pipe_[1]);
  }

  /// Registers `signal` for `channel` and waits (at most the connect plus the command timeout)
  /// until the server confirms the subscription, so that a store or release that follows is
  /// not missed; when the connection is down it returns at once (the fallback polls).
  /// @param self the shared pointer that owns this subscriber, kept by the returned subscription.
  static Subscription subscribe(const std::shared_ptr<RedisSubscriber>& self,
                                const std::string& channel, Notifiable& signal) {
    RedisSubscriber& s = *self;
    {
      std::unique_lock<std::mutex> lock(s.mu_);
      if (!s.thread_.joinable()) s.thread_ = std::thread([&s] { s.run(); });
      Channel& ch = s.channels_[channel];
      ch.signals.push_back(&signal);
      s.wake();            // a connected thread: send SUBSCRIBE
      s.cv_.notify_all();  // a disconnected one: try to connect now
      s.cv_.wait_for(lock, s.options_.connect_timeout + s.options_.command_timeout,
                     [&] { return ch.confirmed || s.down_ || s.stop_; });
    }
    return Subscription([self, channel, sig = &signal] { self->unsubscribe(channel, sig); });
  }

  /// Raises the waiters of `channel` in this process (after this storage's own store, put,
  /// release or erase).
  void notify_local(const std::string& channel) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = channels_.find(channel);
    if (it == channels_.end()) return;
    for (Notifiable* s : it->second.signals) s->notify();
  }

 private:
  struct Channel {
    std::vector<Notifiable*> signals;  // waiters; each unsubscribes before it is destroyed
    bool requested = false;            // the last command sent for it was SUBSCRIBE
    int pending = 0;                   // commands sent for it whose confirmation has not come
    bool confirmed = false;            // the server confirmed the SUBSCRIBE: messages will come
    bool raise_on_confirm = false;     // re-subscribed after a reconnection: look again once sure
  };

  static constexpr std::chrono::seconds kIdlePing{5};

  void unsubscribe(const std::string& channel, Notifiable* signal) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = channels_.find(channel);
    if (it == channels_.end()) return;
    auto& v = it->second.signals;
    const auto pos = std::find(v.begin(), v.end(), signal);
    if (pos != v.end()) v.erase(pos);
    if (v.empty()) wake();  // the thread sends UNSUBSCRIBE and forgets the channel
  }

  void wake() noexcept {
    const char byte = 1;
    [[maybe_unused]] const auto n = ::write(wake_pipe_[1], &byte, 1);  // full pipe: awake anyway
  }

  void drain_wake_pipe() noexcept {
    char buf[64];
    while (::read(wake_pipe_[0], buf, sizeof buf) > 0) {
    }
  }

  void raise_all_locked() {
    for (auto& kv : channels_) {
      for (Notifiable* s : kv.second.signals) s->notify();
    }
  }

  // Forgets channels nobody waits on and that the server no longer sends.
  void prune_locked() {
    for (auto it = channels_.begin(); it != channels_.end();) {
      const Channel& ch = it->second;
      if (ch.signals.empty() && !ch.requested && ch.pending == 0) {
        it = channels_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void run() {
    std::unique_ptr<RedisConnection> conn;
    bool ever_connected = false;
    auto last_read = std::chrono::steady_clock::now();
    // When the unanswered PING went out, if one is out (a flag beside a time point, where an
    // optional made gcc -O3 warn of a maybe-uninitialized read).
    bool pinging = false;
    auto ping_sent = last_read;
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (!conn) {
        prune_locked();
        if (channels_.empty() && ever_connected) {
          // Nobody waits: stay disconnected until someone does.
          cv_.wait(lock, [&] { return stop_ || !channels_.empty(); });
          continue;
        }
        lock.unlock();
        try {
          conn = RedisConnection::open(options_, "-sub", nullptr);
        } catch (const RedisFailure&) {
          conn.reset();
        }
        lock.lock();
        if (!conn) {
          down_ = true;
          cv_.notify_all();       // subscribers stop waiting for a confirmation
          raise_all_locked();     // polling fallback: everyone looks again
          ever_connected = true;  // so the next success raises everyone, and counts
          cv_.wait_for(lock, options_.fallback_poll_interval, [&] { return stop_; });
          drain_wake_pipe();
          continue;
        }
        // Messages may have been missed while it was down: each waiter looks again once its
        // channel is subscribed again (raising it earlier would leave a window before that).
        for (auto& kv : channels_) {
          kv.second.requested = false;
          kv.second.pending = 0;
          kv.second.confirmed = false;
          kv.second.raise_on_confirm = ever_connected;
        }
        if (ever_connected) Counters::bump(counters_->subscriber_reconnects);
        ever_connected = true;
        down_ = false;
        last_read = std::chrono::steady_clock::now();
        pinging = false;
      }

      // Bring the server's subscriptions in line with the waiters.
      std::vector<std::string_view> subscribe{"SUBSCRIBE"};
      std::vector<std::string_view> unsubscribe{"UNSUBSCRIBE"};
      prune_locked();
      for (auto& kv : channels_) {
        Channel& ch = kv.second;
        const bool want = !ch.signals.empty();
        if (want == ch.requested) continue;
        (want ? subscribe : unsubscribe).push_back(kv.first);  // node keys are stable
        ch.requested = want;
        ch.confirmed = false;
        ++ch.pending;
      }
      lock.unlock();

      bool ok = true;
      const auto now = std::chrono::steady_clock::now();
      try {
        if (subscribe.size() > 1) conn->append(subscribe);
        if (unsubscribe.size() > 1) conn->append(unsubscribe);
        if (!pinging && now - last_read >= kIdlePing) {
          conn->append({"PING"});
          pinging = true;
          ping_sent = now;
        }
        conn->flush();
      } catch (const RedisFailure&) {
        ok = false;
      }

      std::vector<RedisReplyPtr> replies;
      if (ok) {
        auto deadline = last_read + kIdlePing;
        if (pinging) deadline = ping_sent + options_.command_timeout;
        const auto wait = std::max(std::chrono::milliseconds(1),
                                   std::chrono::ceil<std::chrono::milliseconds>(deadline - now));
        pollfd fds[2] = {{conn->fd(), POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
        const int n = ::poll(fds, 2, static_cast<int>(std::min<long long>(wait.count(), 60000)));
        if (n > 0 && (fds[1].revents & POLLIN)) drain_wake_pipe();
        if (n > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
          ok = read_available(*conn, replies);
          last_read = std::chrono::steady_clock::now();
          pinging = false;  // any traffic shows the connection is alive
        } else if (pinging &&
                   std::chrono::steady_clock::now() - ping_sent >= options_.command_timeout) {
          ok = false;  // the server did not answer a PING in time: assume a dead peer
        }
      }

      lock.lock();
      for (const RedisReplyPtr& r : replies) handle(*r);
      if (!ok) {
        conn.reset();
        down_ = true;
        cv_.notify_all();
        raise_all_locked();  // a message may have been lost with the connection
      }
    }
  }

  static bool read_available(RedisConnection& conn, std::vector<RedisReplyPtr>& out) {
    if (redisBufferRead(conn.context()) != REDIS_OK) return false;
    for (;;) {
      void* reply = nullptr;
      if (redisGetReplyFromReader(conn.context(), &reply) != REDIS_OK) return false;
      if (!reply) return true;
      out.emplace_back(static_cast<redisReply*>(reply));
    }
  }

  // One push from the server: a message, or the confirmation of (un)subscribing.
  void handle(const redisReply& r) {
    if (r.type != REDIS_REPLY_ARRAY || r.elements < 3) return;  // PONG and the like
    const redisReply& kind = *r.element[0];
    const redisReply& name = *r.element[1];
    if (kind.type != REDIS_REPLY_STRING || name.type != REDIS_REPLY_STRING) return;
    const std::string k = reply_text(kind);
    const auto it = channels_.find(reply_text(name));
    if (it == channels_.end()) return;
    Channel& ch = it->second;
    if (k == "message") {
      const redisReply& payload = *r.element[2];
      if (payload.type == REDIS_REPLY_STRING && reply_text(payload) == origin_) return;
      if (!ch.signals.empty()) Counters::bump(counters_->notifications);
      for (Notifiable* s : ch.signals) s->notify();
    } else if (k == "subscribe" || k == "unsubscribe") {
      if (ch.pending > 0) --ch.pending;
      ch.confirmed = ch.pending == 0 && ch.requested;
      if (!ch.confirmed) return;
      cv_.notify_all();
      if (std::exchange(ch.raise_on_confirm, false)) {
        for (Notifiable* s : ch.signals) s->notify();
      }
    }
  }

  // Copies, not references: a live Subscription keeps this subscriber after the storage is gone.
  const RedisOptions options_;
  const std::string origin_;
  const std::shared_ptr<RedisCounters> counters_;
  int wake_pipe_[2] = {-1, -1};

  std::mutex mu_;  // guards what follows; taken before any waiter's signal mutex
  std::condition_variable cv_;
  std::unordered_map<std::string, Channel> channels_;
  bool down_ = false;  // the last attempt to (re)connect failed, or the connection was lost
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace detail
}  // namespace cacheserialize
