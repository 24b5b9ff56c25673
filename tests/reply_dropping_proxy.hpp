#pragma once

// A TCP proxy on loopback in front of a server (Redis, PostgreSQL), with one fault on demand: once
// armed, the next reply the server sends is swallowed and that client's connection closed. The
// server has then run the command; the client only sees its connection lost, as when a network
// drops a connection between a commit and its answer.

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

namespace test {

/// Forwards every connection to `upstream_port` from a thread of its own, until destroyed.
class ReplyDroppingProxy {
 public:
  explicit ReplyDroppingProxy(int upstream_port) : upstream_port_(upstream_port) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr = loopback(0);
    socklen_t len = sizeof addr;
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listener_, 16) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw std::runtime_error("test: the proxy cannot listen");
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~ReplyDroppingProxy() {
    stop_ = true;
    thread_.join();
    for (const Pair& p : pairs_) close_pair(p);
    ::close(listener_);
  }
  ReplyDroppingProxy(const ReplyDroppingProxy&) = delete;
  ReplyDroppingProxy& operator=(const ReplyDroppingProxy&) = delete;

  int port() const { return port_; }
  /// The next reply from the server is dropped, and its client's connection closed.
  void drop_next_reply() { armed_ = true; }
  /// @return how many replies were dropped.
  int dropped() const { return dropped_.load(); }

 private:
  struct Pair {
    int client;
    int server;
  };

  static sockaddr_in loopback(int port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    return addr;
  }
  static void close_pair(const Pair& p) {
    ::close(p.client);
    ::close(p.server);
  }
  static bool forward(int from, int to) {
    char buf[16384];
    const ssize_t n = ::read(from, buf, sizeof buf);
    if (n <= 0) return false;
    for (ssize_t sent = 0; sent < n;) {
      const ssize_t w = ::send(to, buf + sent, static_cast<std::size_t>(n - sent), MSG_NOSIGNAL);
      if (w <= 0) return false;
      sent += w;
    }
    return true;
  }

  void loop() {
    while (!stop_.load()) {
      std::vector<pollfd> fds{{listener_, POLLIN, 0}};
      for (const Pair& p : pairs_) {
        fds.push_back({p.client, POLLIN, 0});
        fds.push_back({p.server, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;  // 20 ms: to see stop_
      std::vector<Pair> kept;
      for (std::size_t i = 0; i < pairs_.size(); ++i) {  // the pairs polled, and only those
        const Pair p = pairs_[i];
        bool open = true;
        if (fds[1 + 2 * i].revents) open = forward(p.client, p.server);
        if (open && fds[2 + 2 * i].revents) {
          if (armed_.exchange(false)) {
            char buf[16384];
            (void)!::read(p.server, buf, sizeof buf);  // the reply, swallowed
            dropped_.fetch_add(1);
            open = false;
          } else {
            open = forward(p.server, p.client);
          }
        }
        if (open) {
          kept.push_back(p);
        } else {
          close_pair(p);
        }
      }
      pairs_.swap(kept);
      if (fds[0].revents & POLLIN) accept_one();  // after: a new pair has no poll entry yet
    }
  }

  void accept_one() {
    const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) return;
    const int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const sockaddr_in addr = loopback(upstream_port_);
    if (server < 0 ||
        ::connect(server, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(client);
      if (server >= 0) ::close(server);
      return;
    }
    pairs_.push_back({client, server});
  }

  const int upstream_port_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> armed_{false};
  std::atomic<int> dropped_{0};
  std::vector<Pair> pairs_;  // the loop thread's own
  std::thread thread_;
};

}  // namespace test
