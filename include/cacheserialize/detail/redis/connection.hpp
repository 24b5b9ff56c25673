#pragma once

// One hiredis connection with the library's rules: bounded connect and command times, a login
// handshake pipelined into one round trip, SIGPIPE never delivered to the process, errors that
// say whether the connection is still usable, and no password in any message. Plus a small
// pool of idle connections. POSIX only (hiredis's blocking API on a socket).
//
// Commands are written by this class, not by hiredis: it formats them into a buffer it reuses
// and sends them with send(2) and MSG_NOSIGNAL, so a peer that has gone away is an error return
// (EPIPE), never a SIGPIPE, without masking signals around each command (four system calls per
// round trip). hiredis only reads and parses the replies.

#include <hiredis/hiredis.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../../storage/redis_options.hpp"
#include "../counters.hpp"

namespace cacheserialize {
namespace detail {

/// The counters behind RedisStats, shared by a storage's state and its subscriber.
struct RedisCounters {
  std::atomic<std::uint64_t> round_trips{0};
  std::atomic<std::uint64_t> connects{0};
  std::atomic<std::uint64_t> script_loads{0};
  std::atomic<std::uint64_t> retries{0};
  std::atomic<std::uint64_t> notifications{0};
  std::atomic<std::uint64_t> subscriber_reconnects{0};
};

/// A failed exchange with the server, before it is given a key and turned into storage_error.
struct RedisFailure : std::runtime_error {
  enum class Kind {
    connect,   // no connection could be made (or the login was refused)
    io,        // the connection broke (closed, reset): it is unusable
    timeout,   // no reply within the command timeout: the connection is unusable
    server,    // the server answered with an error: the connection is still fine
    protocol,  // the reply was not what the script returns: a contract break
  };
  RedisFailure(Kind k, const std::string& message) : std::runtime_error(message), kind(k) {}
  Kind kind;
};

struct RedisReplyDeleter {
  void operator()(redisReply* r) const noexcept {
    if (r) freeReplyObject(r);
  }
};
using RedisReplyPtr = std::unique_ptr<redisReply, RedisReplyDeleter>;

struct RedisContextDeleter {
  void operator()(redisContext* c) const noexcept {
    if (c) redisFree(c);
  }
};
using RedisContextPtr = std::unique_ptr<redisContext, RedisContextDeleter>;

inline timeval to_timeval(Duration d) noexcept {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(us / 1000000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>(us % 1000000);
  return tv;
}

/// @return "redis 10.0.0.5:6379 db 2" or "redis unix:/run/redis.sock db 0": where, never who.
inline std::string redis_endpoint(const RedisOptions& o) {
  std::string where =
      o.unix_socket.empty() ? o.host + ":" + std::to_string(o.port) : "unix:" + o.unix_socket;
  return "redis " + where + " db " + std::to_string(o.database);
}

/// @return `d` in whole milliseconds, rounded up and at least 1 (Redis `PX` takes positive ms).
inline std::string to_px(Duration d) {
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(d).count();
  return std::to_string(ms < 1 ? 1 : ms);
}

inline std::string reply_text(const redisReply& r) {
  return r.str ? std::string(r.str, r.len) : std::string();
}

/// One connection. Used by one thread at a time.
class RedisConnection {
 public:
  /// Connects and logs in (AUTH, SELECT, CLIENT SETNAME in one round trip).
  /// @throws RedisFailure (connect) naming the endpoint's problem, never the password.
  static std::unique_ptr<RedisConnection> open(const RedisOptions& o, const char* name_suffix,
                                               std::atomic<std::uint64_t>* round_trips) {
    const timeval connect_tv = to_timeval(o.connect_timeout);
    redisContext* raw = o.unix_socket.empty()
                            ? redisConnectWithTimeout(o.host.c_str(), o.port, connect_tv)
                            : redisConnectUnixWithTimeout(o.unix_socket.c_str(), connect_tv);
    if (!raw) throw RedisFailure(RedisFailure::Kind::connect, "cannot allocate a connection");
    RedisContextPtr ctx(raw);
    if (ctx->err) {
      throw RedisFailure(RedisFailure::Kind::connect,
                         std::string("cannot connect: ") + ctx->errstr);
    }
    const timeval command_tv = to_timeval(o.command_timeout);
    if (redisSetTimeout(ctx.get(), command_tv) != REDIS_OK ||
        (o.unix_socket.empty() && redisEnableKeepAlive(ctx.get()) != REDIS_OK)) {
      throw RedisFailure(RedisFailure::Kind::connect,
                         std::string("cannot configure the socket: ") + ctx->errstr);
    }
    auto conn = std::unique_ptr<RedisConnection>(new RedisConnection(std::move(ctx), round_trips));
    conn->login(o, name_suffix);
    return conn;
  }

  /// Sends one command and returns its reply, which may be a server error (the caller decides).
  /// @throws RedisFailure (io or timeout) if the connection broke; it is then `broken()`.
  RedisReplyPtr command(std::initializer_list<std::string_view> args) {
    return command(args.begin(), args.end());
  }
  RedisReplyPtr command(const std::string_view* begin, const std::string_view* end) {
    append(begin, end);
    if (round_trips_) round_trips_->fetch_add(1, std::memory_order_relaxed);
    return read_reply();
  }

  /// Queues a command without sending it (pipelining); `flush` or `read_reply` sends it.
  void append(std::initializer_list<std::string_view> args) { append(args.begin(), args.end()); }
  void append(const std::vector<std::string_view>& args) {
    append(args.data(), args.data() + args.size());
  }
  /// As RESP: *<argc>\r\n, then $<len>\r\n<bytes>\r\n per argument.
  void append(const std::string_view* begin, const std::string_view* end) {
    std::size_t bytes = 16;
    for (const std::string_view* a = begin; a != end; ++a) bytes += a->size() + 24;
    out_.reserve(out_.size() + bytes);
    append_header('*', static_cast<std::size_t>(end - begin));
    for (const std::string_view* a = begin; a != end; ++a) {
      append_header('$', a->size());
      out_.append(a->data(), a->size());
      out_.append("\r\n", 2);
    }
  }

  /// Sends what is queued. A send that blocks for the command timeout is a timeout.
  /// @throws RedisFailure (io or timeout); the connection is then `broken()`.
  void flush() {
    std::size_t sent = 0;
    while (sent < out_.size()) {
      const ssize_t n = ::send(ctx_->fd, out_.data() + sent, out_.size() - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      const int err = n < 0 ? errno : 0;
      broken_ = true;
      out_.clear();
      if (err == EAGAIN || err == EWOULDBLOCK) {
        throw RedisFailure(RedisFailure::Kind::timeout, "no reply within the command timeout");
      }
      throw RedisFailure(
          RedisFailure::Kind::io,
          std::string("connection lost: ") + (err ? std::strerror(err) : "closed by the server"));
    }
    out_.clear();
  }

  /// Sends what is queued and reads one reply.
  RedisReplyPtr read_reply() {
    flush();
    void* reply = nullptr;
    errno = 0;
    // Reads only: hiredis's own output buffer is always empty, so it writes nothing.
    const int rc = redisGetReply(ctx_.get(), &reply);
    const int saved_errno = errno;
    if (rc != REDIS_OK || !reply) {
      if (reply) freeReplyObject(reply);
      const bool timeout =
          ctx_->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK);
      broken_ = true;
      if (timeout) {
        throw RedisFailure(RedisFailure::Kind::timeout, "no reply within the command timeout");
      }
      fail("connection lost");
    }
    return RedisReplyPtr(static_cast<redisReply*>(reply));
  }

  /// @return whether the connection must be thrown away (a broken or timed-out exchange).
  bool broken() const noexcept { return broken_ || ctx_->err != 0; }

  /// @return the socket, for poll(2) (the subscriber's loop).
  int fd() const noexcept { return ctx_->fd; }

  redisContext* context() noexcept { return ctx_.get(); }

 private:
  RedisConnection(RedisContextPtr ctx, std::atomic<std::uint64_t>* round_trips)
      : ctx_(std::move(ctx)), round_trips_(round_trips) {}

  void append_header(char kind, std::size_t n) {
    char buf[24];
    char* p = buf + sizeof buf;
    *--p = '\n';
    *--p = '\r';
    do {
      *--p = static_cast<char>('0' + n % 10);
      n /= 10;
    } while (n != 0);
    *--p = kind;
    out_.append(p, static_cast<std::size_t>(buf + sizeof buf - p));
  }

  [[noreturn]] void fail(const char* what) {
    broken_ = true;
    std::string detail = ctx_->err ? ctx_->errstr : "";
    if (detail.empty()) detail = "closed by the server";
    throw RedisFailure(RedisFailure::Kind::io, std::string(what) + ": " + detail);
  }

  void login(const RedisOptions& o, const char* name_suffix) {
    std::vector<std::string> what;
    const std::string db = std::to_string(o.database);
    const std::string name = o.client_name + name_suffix;
    if (!o.password.empty()) {
      if (o.username.empty()) {
        append({"AUTH", o.password});
      } else {
        append({"AUTH", o.username, o.password});
      }
      what.push_back("authentication");
    }
    if (o.database != 0) {
      append({"SELECT", db});
      what.push_back("SELECT " + db);
    }
    if (!o.client_name.empty()) {
      append({"CLIENT", "SETNAME", name});
      what.push_back("CLIENT SETNAME");
    }
    if (what.empty()) return;
    if (round_trips_) round_trips_->fetch_add(1, std::memory_order_relaxed);
    std::string error;
    for (const std::string& step : what) {
      RedisReplyPtr r;
      try {
        r = read_reply();
      } catch (const RedisFailure& e) {
        throw RedisFailure(e.kind, step + " failed: " + e.what());
      }
      if (r->type == REDIS_REPLY_ERROR && error.empty()) {
        error = step + " failed: " + reply_text(*r);  // the server's words: no password in them
      }
    }
    if (!error.empty()) throw RedisFailure(RedisFailure::Kind::connect, error);
  }

  RedisContextPtr ctx_;
  std::atomic<std::uint64_t>* round_trips_;
  std::string out_;  // commands queued, not yet sent
  bool broken_ = false;
};

/// Idle connections for reuse. Never blocks for a connection: a caller that finds none idle
/// opens one; at most `pool_size` idle ones are kept.
class RedisPool {
 public:
  struct Lease {
    std::unique_ptr<RedisConnection> conn;
    bool reused = false;  // taken from the pool: it may have been closed by the server meanwhile
  };

  RedisPool(const RedisOptions& o, RedisCounters& counters) : options_(o), counters_(counters) {}

  /// @throws RedisFailure (connect) if a new connection cannot be made.
  Lease take(bool fresh = false) {
    if (!fresh) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!idle_.empty()) {
        Lease l{std::move(idle_.back()), true};
        idle_.pop_back();
        return l;
      }
    }
    Lease l{RedisConnection::open(options_, "", &counters_.round_trips), false};
    Counters::bump(counters_.connects);
    return l;
  }

  void give(std::unique_ptr<RedisConnection> conn) {
    if (!conn || conn->broken()) return;
    std::unique_lock<std::mutex> lock(mu_);
    if (idle_.size() < options_.pool_size) idle_.push_back(std::move(conn));
    // else: closed after the lock is released, when `conn` goes out of scope
    lock.unlock();
  }

  /// Closes every idle connection: after one was found broken, the others likely are too.
  void clear() {
    std::vector<std::unique_ptr<RedisConnection>> old;
    std::lock_guard<std::mutex> lock(mu_);
    old.swap(idle_);
  }

 private:
  const RedisOptions& options_;  // owned by the storage's state, which owns this pool
  RedisCounters& counters_;
  std::mutex mu_;
  std::vector<std::unique_ptr<RedisConnection>> idle_;
};

}  // namespace detail
}  // namespace cacheserialize
