#pragma once

/// @file storage/redis_options.hpp
/// `RedisOptions` and `RedisStats`, the configuration and counters of `RedisStorage`
/// (storage/redis.hpp). This header needs no hiredis; it is separate so that configuration code
/// can be compiled without the client library.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "../events.hpp"
#include "../time.hpp"

namespace cacheserialize {

/// Where the Redis server is, how to log in, and how long to wait for it. Every field is
/// checked by the `RedisStorage` constructor; a bad value is a `std::invalid_argument` naming
/// the field.
struct RedisOptions {
  /// Host name or address of the primary (TCP). Ignored when `unix_socket` is set.
  std::string host = "127.0.0.1";
  /// TCP port, 1..65535.
  int port = 6379;
  /// Path of the server's Unix socket; when set, used instead of host and port.
  std::string unix_socket{};
  /// Database index (`SELECT`), >= 0.
  int database = 0;
  /// ACL user (Redis 6+); empty: the `default` user. Needs `password`.
  std::string username{};
  /// Password for `AUTH`; empty: no authentication. Never written into messages.
  std::string password{};
  /// Prepended to every Redis key and pub/sub channel this storage uses, so that several
  /// applications (or test runs) can share a server. Any bytes.
  std::string key_prefix = "cacheserialize:";
  /// Bound on establishing a connection (TCP connect; name resolution is not bounded).
  Duration connect_timeout = std::chrono::seconds(1);
  /// Bound on one command's round trip (sending and receiving). A call that hits it fails with
  /// `storage_error`; its connection is closed, since a late reply would desynchronise it.
  Duration command_timeout = std::chrono::seconds(1);
  /// Outputs expire this long after they are stored (Redis `PX`); unset: they stay until deleted
  /// or evicted. Reservations always expire by their own TTL.
  std::optional<Duration> output_ttl{};
  /// Idle connections kept for reuse. A thread that finds none idle opens a new one, so calls
  /// never queue behind each other; set it to the number of threads that call at once.
  std::size_t pool_size = 8;
  /// `CLIENT SETNAME` of the connections (the subscriber's gets "-sub"), so that `CLIENT LIST`
  /// shows who they are; empty: not set. No spaces or newlines.
  std::string client_name = "cacheserialize";
  /// While the pub/sub connection is down, waiters are woken this often to look again (polling
  /// fallback), instead of at the holder's expiry.
  Duration fallback_poll_interval = std::chrono::seconds(1);
  /// Receives `corrupt_output` events: a value under this storage's prefix that it did not
  /// write, treated as a miss. Called on the calling thread; must be thread-safe and quick.
  Listener listener{};
};

/// Counters of one storage (all its copies), from its creation. Read with
/// `RedisStorage::stats()`.
struct RedisStats {
  /// Request/reply exchanges on command connections: one per operation, plus connection
  /// handshakes (AUTH, SELECT and CLIENT SETNAME pipelined: one), script loads and reloads.
  std::uint64_t round_trips = 0;
  /// Command connections opened.
  std::uint64_t connects = 0;
  /// Scripts sent to the server: the six loaded by the first operation (one pipelined round
  /// trip), and each one reloaded after a `NOSCRIPT` (a flushed script cache, a restarted server).
  std::uint64_t script_loads = 0;
  /// Operations retried once on a fresh connection after a pooled one was found closed.
  std::uint64_t retries = 0;
  /// Pub/sub wake-ups received from other processes (or other storages) that raised a waiter.
  std::uint64_t notifications = 0;
  /// Times the pub/sub connection was re-established after it was lost or could not connect.
  std::uint64_t subscriber_reconnects = 0;
};

namespace detail {

inline void check_redis_duration(const char* field, Duration d) {
  if (d < std::chrono::milliseconds(1) || d > std::chrono::hours(24 * 365)) {
    throw std::invalid_argument(std::string("cacheserialize::RedisStorage: ") + field +
                                " must be between 1ms and a year, got " + format_duration(d));
  }
}

/// @throws std::invalid_argument naming the first bad field.
inline void validate(const RedisOptions& o) {
  const std::string who = "cacheserialize::RedisStorage: ";
  if (o.unix_socket.empty()) {
    if (o.host.empty()) throw std::invalid_argument(who + "host is empty (and no unix_socket)");
    if (o.port < 1 || o.port > 65535) {
      throw std::invalid_argument(who + "port must be 1..65535, got " + std::to_string(o.port));
    }
  }
  if (o.database < 0) {
    throw std::invalid_argument(who + "database must be >= 0, got " + std::to_string(o.database));
  }
  if (!o.username.empty() && o.password.empty()) {
    throw std::invalid_argument(who + "username '" + o.username + "' is set without a password");
  }
  check_redis_duration("connect_timeout", o.connect_timeout);
  check_redis_duration("command_timeout", o.command_timeout);
  check_redis_duration("fallback_poll_interval", o.fallback_poll_interval);
  if (o.output_ttl) check_redis_duration("output_ttl", *o.output_ttl);
  if (o.pool_size == 0) throw std::invalid_argument(who + "pool_size must be >= 1, got 0");
  if (o.client_name.find_first_of(" \r\n\t") != std::string::npos) {
    throw std::invalid_argument(who + "client_name '" + o.client_name +
                                "' contains white space, which Redis rejects");
  }
}

}  // namespace detail
}  // namespace cacheserialize
