#pragma once

/// @file storage/redis.hpp
/// `RedisStorage`: outputs and reservations in a Redis server (one primary), shared by every
/// process and machine that uses the same server, database and key prefix. Needs hiredis; link
/// the CMake target `cacheserialize::redis`. Not included by cacheserialize.hpp.
///
///     cs::RedisOptions options;
///     options.host = "redis.internal";
///     options.key_prefix = "myapp:";
///     cs::RedisStorage storage(options);
///     auto fetch = cs::serialize_cached(fetch_fn, cs::TaskOptions{"fetch", "2"}, storage);
///
/// Each operation is one server-side Lua script (EVALSHA), so a hit costs one round trip, a miss
/// two (acquire, then store-and-release) and a heartbeat one. Reservations are keys with a `PX`
/// time to live: Redis's clock decides when they expire, so hosts need not agree on the time.
/// Waiters are woken through pub/sub. docs/storage-redis.md gives
/// the guarantees and their limits (one primary; a failover can lose reservations).

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "../cache_key.hpp"
#include "../clock.hpp"
#include "../detail/counters.hpp"
#include "../detail/owner_id.hpp"
#include "../detail/redis/connection.hpp"
#include "../detail/redis/scripts.hpp"
#include "../detail/redis/subscriber.hpp"
#include "../errors.hpp"
#include "../events.hpp"
#include "../signal.hpp"
#include "../storage.hpp"
#include "redis_options.hpp"

namespace cacheserialize {

/// The Redis names one cache key uses (for operators: inspect, expire or delete them).
struct RedisKeyNames {
  std::string output;       ///< `<prefix>{<digest>}:out`: the stored output
  std::string reservation;  ///< `<prefix>{<digest>}:res`: the reservation, under a PX TTL
  std::string fence;        ///< `<prefix>{<digest>}:fence`: the key's fencing record (kept)
  std::string channel;      ///< `<prefix>{<digest>}:wake:<db>`: the pub/sub channel of waiters
  std::string stored_at;    ///< `<prefix>{<digest>}:at`: when the output was written (for prune)
};

/// A storage policy (storage.hpp) over a Redis server.
///
/// - Outputs are bytes (`serializer<T>`), stored with a 4-byte header that marks them as this
///   library's; a value without it is reported (`corrupt_output`) and treated as a miss.
/// - Reservations expire by Redis's clock. The `now` a caller passes is used only for the expiry
///   it reports (`Reservation::expires_at`, in the holder's own clock); `AcquireResult::remaining`
///   is the server's remaining time to live, which is what a waiter's wait is based on.
/// - Fencing tokens are max(the key's last token + 1, the server's clock in microseconds): the
///   last one survives releases, in the key's fence, and the clock keeps tokens growing after
///   `prune` deleted it, so they strictly increase per key for as long as the server keeps its
///   data and its clock does not step back. A store, extension or release
///   is accepted only for the current reservation (owner and token). A holder whose reservation
///   expired with nobody taking the key since may still extend or store: the fence proves that
///   no one else held the key in between.
/// - A connection found closed when reused is replaced and the operation retried once (each
///   script is idempotent for its caller); a server that is down or does not answer within the
///   configured timeouts gives `storage_error`, never a hang.
///
/// A handle: copies share one connection pool, one pub/sub connection and thread, and the
/// counters; the state lives until the last copy (and the last subscription) is gone.
///
/// Thread safety: every member may be called concurrently from any number of threads.
class RedisStorage {
 public:
  /// Copies share one store. Moving copies too, so that a handle is never left empty.
  RedisStorage(const RedisStorage&) = default;
  /// Makes this a handle to another store.
  RedisStorage& operator=(const RedisStorage&) = default;

  /// @return the same address for every copy of this handle, and another for every other store
  ///         handle alive: what `default_manager` shares one manager by.
  const void* identity() const noexcept { return state_.get(); }

  /// Outputs are kept as encoded bytes (`serializer<T>`), readable by other processes.
  static constexpr bool stores_objects = false;
  /// A hit is answered by `acquire` itself: one round trip, no separate look-up.
  static constexpr bool probe_before_acquire = false;

  /// Checks the options; connects lazily, on the first operation.
  /// @throws std::invalid_argument naming the first bad option.
  explicit RedisStorage(RedisOptions options = {}) : state_(make_state(std::move(options))) {}

  /// @return the stored output of `key`, if any (one round trip).
  /// @throws storage_error if the server cannot be reached or refuses.
  std::optional<StoredOutput> get(const Key& key) const {
    const RedisKeyNames n = names(key);
    std::optional<std::string> value = run(key, "get", [&](detail::RedisConnection& c) {
      detail::RedisReplyPtr r = c.command({"GET", n.output});
      if (r->type == REDIS_REPLY_ERROR) server_error(*r);
      if (r->type == REDIS_REPLY_NIL) return std::optional<std::string>();
      return std::optional<std::string>(text(*r));
    });
    if (!value) return std::nullopt;
    if (!has_magic(*value)) {
      report_corrupt(key, n.output);
      return std::nullopt;
    }
    value->erase(0, magic().size());
    return StoredOutput::from_bytes(std::move(*value));
  }

  /// The stored output, or get-or-extend of the reservation, in one round trip.
  /// @throws storage_error if the server cannot be reached or refuses.
  AcquireResult acquire(const Key& key, const AcquireRequest& req) {
    const Keys k(*this, key);
    const TimePoint expires = detail::saturating_add(req.now, req.ttl);
    // One argument for the script (kRedisAcquire): "<overwrite><ttl_ms> <expires_ns> <owner>".
    std::string arg(1, req.overwrite ? '1' : '0');
    arg += detail::to_px(req.ttl);
    arg += ' ';
    arg += std::to_string(to_unix_nanos(expires));
    arg += ' ';
    arg += req.owner;
    bool corrupt = false;
    AcquireResult result = run(key, "acquire", [&](detail::RedisConnection& c) {
      detail::RedisReplyPtr r = eval(c, state_->acquire, {k.output(), k.reservation(), k.fence()},
                                     {std::string_view(arg)});
      AcquireResult out;
      if (r->type == REDIS_REPLY_STRING) {  // the stored output, header and all
        out.status = AcquireStatus::hit;
        out.output = StoredOutput::from_bytes(without_magic(*r));
        return out;
      }
      switch (code(*r)) {
        case 1:
          out.status = AcquireStatus::acquired;
          out.reservation = Reservation{std::string(req.owner), token(at(*r, 1)), expires};
          corrupt = integer(at(*r, 2)) != 0;
          if (r->elements >= 5) {
            out.previous = Reservation{text(at(*r, 4)), token(at(*r, 3)), req.now};
          }
          return out;
        case 2:
          out.status = AcquireStatus::held;
          out.reservation = Reservation{text(at(*r, 3)), token(at(*r, 1)), time(at(*r, 2))};
          out.remaining = std::chrono::milliseconds(std::max(0LL, integer(at(*r, 4))));
          corrupt = integer(at(*r, 5)) != 0;
          return out;
        default:
          protocol_error("acquire");
      }
    });
    if (corrupt) report_corrupt(key, std::string(k.output()));
    return result;
  }

  /// Extends `mine` to `now + ttl` (by Redis's clock: `ttl` from now) if it is still the key's
  /// reservation, or expired with nobody taking the key since. One round trip.
  /// @throws storage_error if the server cannot be reached or refuses.
  ExtendResult extend(const Key& key, const Reservation& mine, TimePoint now, Duration ttl) {
    const RedisKeyNames n = names(key);
    const TimePoint expires = detail::saturating_add(now, ttl);
    const std::string expires_ns = std::to_string(to_unix_nanos(expires));
    const std::string tok = std::to_string(mine.token);
    const std::string px = detail::to_px(ttl);
    return run(key, "extend", [&](detail::RedisConnection& c) {
      return extended(
          *eval(c, state_->extend, {n.reservation, n.fence}, {mine.owner, tok, px, expires_ns}),
          mine, expires);
    });
  }

  /// `extend` for each item of `batch` (storage.hpp), by Redis's clock: one pipeline of the same
  /// script per kPipelined items, so one round trip for a heartbeat's batch. Each item is fenced
  /// on its own. A connection found closed is replaced and the pipeline sent again (extending
  /// twice is harmless); a flushed script cache costs one more round trip.
  /// @return result i for batch[i].
  /// @throws storage_error if the server cannot be reached or refuses any item: then nothing is
  ///         known of the batch, though some items may have been extended.
  std::vector<ExtendResult> extend_many(const std::vector<Extension>& batch, TimePoint now) {
    std::vector<ExtendResult> out;
    out.reserve(batch.size());
    for (std::size_t begin = 0; begin < batch.size(); begin += kPipelined) {
      const std::size_t end = std::min(batch.size(), begin + kPipelined);
      extend_pipelined(batch, begin, end, now, out);
    }
    return out;
  }

  /// Items of an `extend_many` sent in one pipeline: a round trip each 1,000, so that neither
  /// side buffers an unbounded reply.
  static constexpr std::size_t kPipelined = 1000;

  /// Releases `mine` if it is still the key's reservation, and wakes the key's waiters.
  /// @throws storage_error if the server cannot be reached or refuses.
  ReleaseStatus release(const Key& key, const Reservation& mine) {
    const RedisKeyNames n = names(key);
    const std::string tok = std::to_string(mine.token);
    const long long status = run(key, "release", [&](detail::RedisConnection& c) {
      return integer(*eval(c, state_->release, {n.reservation, n.fence},
                           {mine.owner, tok, n.channel, state_->origin}));
    });
    switch (status) {
      case 1:
        state_->subscriber->notify_local(n.channel);
        return ReleaseStatus::released;
      case 0:
        return ReleaseStatus::not_held;
      case 2:
        return ReleaseStatus::held_by_other;
      default:
        throw storage_error(state_->endpoint + ": release: unexpected reply from the script",
                            key.describe());
    }
  }

  /// Stores `output` and releases `mine` in one step, if `mine` is still the key's reservation
  /// (fencing), and wakes the key's waiters. `now` is not needed: Redis keeps the time. A
  /// reservation that already stored is rejected; only the retry after a broken connection of a
  /// store whose first attempt did write (the output there is this one) is answered stored.
  /// @throws storage_error if the server cannot be reached or refuses (e.g. out of memory).
  StoreResult store_and_release(const Key& key, const Reservation& mine, StoredOutput output,
                                TimePoint /*now*/) {
    const Keys k(*this, key);
    // One argument for the script (kRedisStore) but the payload:
    // "<retry><output_ttl_ms> <token> <db> <origin> <owner>", retry ('0' or '1') set per attempt.
    const State& s = *state_;
    std::string arg = "0" + s.output_ttl_px + ' ' + std::to_string(mine.token) + ' ' +
                      std::to_string(s.options.database) + ' ' + s.origin + ' ' + mine.owner;
    const std::string payload = with_magic(output.bytes);
    int attempts = 0;  // run calls the lambda a second time only to retry on a new connection
    StoreResult result = run(key, "store", [&](detail::RedisConnection& c) {
      arg[0] = attempts++ > 0 ? '1' : '0';
      detail::RedisReplyPtr r =
          eval(c, state_->store, {k.output(), k.reservation(), k.fence(), k.stored_at()},
               {std::string_view(arg), std::string_view(payload)});
      StoreResult out;
      if (code(*r) == 1) {
        out.status = StoreStatus::stored;
      } else if (r->elements >= 4) {
        out.current = Reservation{text(at(*r, 3)), token(at(*r, 1)), time(at(*r, 2))};
      }
      return out;
    });
    if (result.status == StoreStatus::stored)
      state_->subscriber->notify_local(std::string(k.channel()));
    return result;
  }

  /// Stores `output` whoever holds the key, and wakes the key's waiters.
  /// @throws storage_error if the server cannot be reached or refuses.
  void put(const Key& key, StoredOutput output) {
    const RedisKeyNames n = names(key);
    const std::string payload = with_magic(output.bytes);
    run(key, "put", [&](detail::RedisConnection& c) {
      return integer(*eval(c, state_->put, {n.output, n.stored_at},
                           {n.channel, state_->origin, state_->output_ttl_px, payload}));
    });
    state_->subscriber->notify_local(n.channel);
  }

  /// Raises `signal` after every store, put, release or erase of `key`, by any process, while
  /// the returned subscription lives. Waits until the server confirms the subscription (at most
  /// the connect plus the command timeout) so that nothing published afterwards is missed.
  /// When the pub/sub connection is lost, every subscriber is raised (at once, then every
  /// `fallback_poll_interval` while it cannot be re-established, and once more when the server
  /// confirms its subscription again).
  Subscription subscribe(const Key& key, Notifiable& signal) {
    return detail::RedisSubscriber::subscribe(state_->subscriber, names(key).channel, signal);
  }

  /// Removes the stored output of `key`, if any; a reservation on it is left alone.
  /// @return whether an output was removed.
  /// @throws storage_error if the server cannot be reached or refuses.
  bool erase(const Key& key) {
    const RedisKeyNames n = names(key);
    const long long removed = run(key, "erase", [&](detail::RedisConnection& c) {
      return integer(*eval(c, state_->erase, {n.output, n.stored_at}, {n.channel, state_->origin}));
    });
    if (removed) state_->subscriber->notify_local(n.channel);
    return removed != 0;
  }

  /// Housekeeping, safe while other processes use the server, by Redis's clock:
  /// - deletes outputs written at least `older_than` ago. Each output's write time is kept in
  ///   `names(key).stored_at` (under the output's PX); an output written by an earlier version
  ///   has none, and is given the time prune first sees it, so it goes one `older_than` later;
  /// - deletes the fence of a key with no live reservation once it is stale: released or stored
  ///   with its last token issued at least `older_than` ago, or expired untaken and seen so by
  ///   prune at least `older_than` ago (a holder whose reservation has only just expired may
  ///   still resume it); and only once the server's clock has passed its last token, so the
  ///   next token of the key, taken from the clock, is higher than every earlier one.
  /// A live reservation is never touched. Walks the prefix's keys with SCAN (never KEYS), at
  /// most kPruneScan per call, and decides each batch in one script: the server is never busy
  /// with prune for longer than one batch, and the calls of other clients run in between. Keys
  /// under the prefix that the storage does not use are left alone.
  /// @return outputs_removed, reservations_removed (fences deleted); temporaries_removed is 0.
  /// @throws std::invalid_argument for a negative `older_than`.
  /// @throws storage_error if the server cannot be reached or refuses (batches done stay done).
  PruneResult prune(Duration older_than) {
    if (older_than < Duration::zero()) {
      throw std::invalid_argument(
          "cacheserialize::RedisStorage::prune: older_than must not be negative, got " +
          format_duration(older_than));
    }
    // Microseconds, capped where a Lua number is still exact (2^52 us: 142 years).
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(older_than).count();
    const std::string older_us = std::to_string(std::min<long long>(us, 1LL << 52));
    const std::string& prefix = state_->options.key_prefix;
    const std::string pattern = glob_escaped(prefix) + "{*";
    const std::string count = std::to_string(kPruneScan);
    PruneResult result;
    std::string cursor = "0";
    do {
      std::vector<std::string> bases;
      cursor = run(nullptr, "prune", [&](detail::RedisConnection& c) {
        detail::RedisReplyPtr r = c.command({"SCAN", cursor, "MATCH", pattern, "COUNT", count});
        if (r->type == REDIS_REPLY_ERROR) server_error(*r);
        const redisReply& names = at(*r, 1);
        if (names.type != REDIS_REPLY_ARRAY) protocol_error("SCAN");
        for (std::size_t i = 0; i < names.elements; ++i) {
          if (auto base = base_of(text(at(names, i)), prefix)) bases.push_back(std::move(*base));
        }
        return text(at(*r, 0));
      });
      std::sort(bases.begin(), bases.end());
      bases.erase(std::unique(bases.begin(), bases.end()), bases.end());
      if (bases.empty()) continue;
      std::vector<std::string> keys;
      keys.reserve(4 * bases.size());
      for (const std::string& b : bases) {
        for (const char* suffix : {":out", ":res", ":fence", ":at"}) keys.push_back(b + suffix);
      }
      const auto removed = run(nullptr, "prune", [&](detail::RedisConnection& c) {
        detail::RedisReplyPtr r = eval(c, state_->prune, keys, {older_us});
        return std::pair<long long, long long>(integer(at(*r, 0)), integer(at(*r, 1)));
      });
      result.outputs_removed += static_cast<std::size_t>(removed.first);
      result.reservations_removed += static_cast<std::size_t>(removed.second);
    } while (cursor != "0");
    return result;
  }

  /// The COUNT of each SCAN call of `prune`: about this many keys per batch.
  static constexpr std::size_t kPruneScan = 500;

  /// @return the live reservation on `key`, if any; its `expires_at` is the holder's own view.
  /// @throws storage_error if the server cannot be reached or refuses.
  std::optional<Reservation> reservation(const Key& key) const {
    const RedisKeyNames n = names(key);
    return run(key, "reservation", [&](detail::RedisConnection& c) {
      detail::RedisReplyPtr r = c.command({"GET", n.reservation});
      if (r->type == REDIS_REPLY_ERROR) server_error(*r);
      if (r->type == REDIS_REPLY_NIL) return std::optional<Reservation>();
      const std::string v = text(*r);
      const std::size_t a = v.find(' ');
      const std::size_t b = a == std::string::npos ? a : v.find(' ', a + 1);
      if (b == std::string::npos) protocol_error("reservation");
      return std::optional<Reservation>(Reservation{v.substr(b + 1), parse_token(v.substr(0, a)),
                                                    parse_time(v.substr(a + 1, b - a - 1))});
    });
  }

  /// Connects (if no idle connection is pooled) and sends PING: a start-up check.
  /// @throws storage_error naming the problem (refused, timed out, authentication...).
  void ping() const {
    run(nullptr, "ping", [&](detail::RedisConnection& c) {
      detail::RedisReplyPtr r = c.command({"PING"});
      if (r->type == REDIS_REPLY_ERROR) server_error(*r);
      return 0;
    });
  }

  /// @return the Redis names `key` uses.
  RedisKeyNames names(const Key& key) const {
    const Keys k(*this, key);  // the one place that spells the names
    return RedisKeyNames{std::string(k.output()), std::string(k.reservation()),
                         std::string(k.fence()), std::string(k.channel()),
                         std::string(k.stored_at())};
  }

  /// @return a snapshot of the counters (round trips, connections, script loads...).
  RedisStats stats() const noexcept {
    const detail::RedisCounters& c = *state_->counters;
    RedisStats s;
    s.round_trips = c.round_trips.load();
    s.connects = c.connects.load();
    s.script_loads = c.script_loads.load();
    s.retries = c.retries.load();
    s.notifications = c.notifications.load();
    s.subscriber_reconnects = c.subscriber_reconnects.load();
    return s;
  }

  /// @return the options this storage was made with.
  const RedisOptions& options() const noexcept { return state_->options; }

 private:
  using Failure = detail::RedisFailure;

  // The Redis names of one cache key in one buffer: what `names` gives, without its five
  // allocations, for the operations every call makes.
  class Keys {
   public:
    Keys(const RedisStorage& s, const Key& key) {
      const std::string& prefix = s.state_->options.key_prefix;
      const std::string digest = key.digest();
      const char* const suffix[] = {":out", ":res", ":fence", ":at", s.state_->wake.c_str()};
      buf_.reserve(5 * (prefix.size() + digest.size() + 2) + 17 + s.state_->wake.size());
      for (std::size_t i = 0; i < 5; ++i) {
        start_[i] = buf_.size();
        buf_ += prefix;
        buf_ += '{';
        buf_ += digest;
        buf_ += '}';
        buf_ += suffix[i];
      }
      start_[5] = buf_.size();
    }
    std::string_view output() const { return name(0); }
    std::string_view reservation() const { return name(1); }
    std::string_view fence() const { return name(2); }
    std::string_view stored_at() const { return name(3); }
    std::string_view channel() const { return name(4); }

   private:
    std::string_view name(std::size_t i) const {
      return std::string_view(buf_).substr(start_[i], start_[i + 1] - start_[i]);
    }
    std::string buf_;
    std::size_t start_[6] = {};
  };

  // A script, run by EVALSHA once loaded; after a NOSCRIPT (a flushed script cache, a restarted
  // server) by EVAL, which both runs it and loads it again.
  struct Script {
    explicit Script(const char* b, const char* head = "")
        : body(head + std::string(detail::kRedisPrelude) + b) {}
    const std::string body;
    std::string sha;  // written once, before State::loaded is set
  };
  struct State {
    explicit State(RedisOptions o)
        : options(std::move(o)),
          endpoint(detail::redis_endpoint(options)),
          origin(make_origin()),
          output_ttl_px(options.output_ttl ? detail::to_px(*options.output_ttl) : "0"),
          wake(":wake:" + std::to_string(options.database)),
          counters(std::make_shared<detail::RedisCounters>()),
          pool(options, *counters),
          subscriber(std::make_shared<detail::RedisSubscriber>(options, origin, counters)) {}

    const RedisOptions options;
    const std::string endpoint;  // for messages: where, never the password
    const std::string origin;    // this state's id in the messages it publishes
    const std::string output_ttl_px;
    const std::string wake;  // the suffix of a key's channel
    const std::shared_ptr<detail::RedisCounters> counters;
    detail::RedisPool pool;
    const std::shared_ptr<detail::RedisSubscriber> subscriber;
    Script acquire{detail::kRedisAcquire, detail::kRedisAcquireHit};
    Script extend{detail::kRedisExtend};
    Script release{detail::kRedisRelease};
    Script store{detail::kRedisStore};
    Script put{detail::kRedisPut};
    Script erase{detail::kRedisErase};
    Script prune{detail::kRedisPrune};
    std::mutex load_mu;  // held while loading the scripts
    std::atomic<bool> loaded{false};
  };

  static std::shared_ptr<State> make_state(RedisOptions options) {
    detail::validate(options);
    return std::make_shared<State>(std::move(options));
  }

  static std::string make_origin() {
    return std::to_string(detail::current_pid()) + ":" + std::to_string(detail::random_u64());
  }

  static const std::string& magic() {
    static const std::string m(detail::kRedisOutputMagic);
    return m;
  }
  static bool has_magic(const std::string& v) { return v.compare(0, magic().size(), magic()) == 0; }
  // The output's bytes, after the header the script checked.
  static std::string without_magic(const redisReply& r) {
    if (r.type != REDIS_REPLY_STRING || r.len < magic().size()) protocol_error("acquire");
    return std::string(r.str + magic().size(), r.len - magic().size());
  }
  static std::string with_magic(const std::string& bytes) {
    std::string out;
    out.reserve(magic().size() + bytes.size());
    out += magic();
    out += bytes;
    return out;
  }

  // Runs `op` on a pooled connection. A pooled connection found closed (the server restarted
  // or dropped idle clients) is replaced and `op` retried once on a new one: every script is
  // safe to repeat for its caller (acquire re-finds its own reservation; release re-finds its
  // own fence; store, told that it is a retry, re-finds its own fence and output). Timeouts are
  // not retried: the server may be slow, not gone.
  template <class Op>
  auto run(const Key* key, const char* what, Op&& op) const
      -> std::invoke_result_t<Op&, detail::RedisConnection&> {
    State& s = *state_;
    for (int attempt = 0;; ++attempt) {
      detail::RedisPool::Lease lease;
      try {
        lease = s.pool.take(attempt > 0);
        auto result = op(*lease.conn);
        s.pool.give(std::move(lease.conn));
        return result;
      } catch (const Failure& e) {
        if (lease.conn && !lease.conn->broken()) s.pool.give(std::move(lease.conn));
        if (e.kind == Failure::Kind::io) {
          s.pool.clear();
          if (lease.reused && attempt == 0) {
            detail::Counters::bump(s.counters->retries);
            continue;
          }
        }
        std::string message = s.endpoint + ": " + what + " failed: " + e.what();
        if (e.kind == Failure::Kind::timeout) {
          message += " (" + format_duration(s.options.command_timeout) + ")";
        }
        throw storage_error(message, key ? key->describe() : std::string());
      }
    }
  }
  template <class Op>
  auto run(const Key& key, const char* what, Op&& op) const
      -> std::invoke_result_t<Op&, detail::RedisConnection&> {
    return run(&key, what, std::forward<Op>(op));
  }

  detail::RedisReplyPtr eval(detail::RedisConnection& c, Script& script,
                             std::initializer_list<std::string_view> keys,
                             std::initializer_list<std::string_view> args) const {
    return eval(c, script, keys.begin(), keys.size(), args);
  }
  detail::RedisReplyPtr eval(detail::RedisConnection& c, Script& script,
                             const std::vector<std::string>& keys,
                             std::initializer_list<std::string_view> args) const {
    const std::vector<std::string_view> views(keys.begin(), keys.end());
    return eval(c, script, views.data(), views.size(), args);
  }
  // EVALSHA sha nkeys keys... args...; on NOSCRIPT, EVAL body with the same arguments. The
  // command is built on the stack when it is short (every operation but prune).
  detail::RedisReplyPtr eval(detail::RedisConnection& c, Script& script,
                             const std::string_view* keys, std::size_t nkeys,
                             std::initializer_list<std::string_view> args) const {
    const std::string count = std::to_string(nkeys);
    const std::size_t n = 3 + nkeys + args.size();
    std::string_view small[16];
    std::vector<std::string_view> big;
    std::string_view* argv = small;
    if (n > std::size(small)) {
      big.resize(n);
      argv = big.data();
    }
    argv[0] = "EVALSHA";
    argv[1] = sha(c, script);
    argv[2] = count;
    std::copy(keys, keys + nkeys, argv + 3);
    std::copy(args.begin(), args.end(), argv + 3 + nkeys);
    detail::RedisReplyPtr r = c.command(argv, argv + n);
    if (noscript(*r)) {
      detail::Counters::bump(state_->counters->script_loads);
      argv[0] = "EVAL";
      argv[1] = script.body;
      r = c.command(argv, argv + n);
    }
    if (r->type == REDIS_REPLY_ERROR) server_error(*r);
    return r;
  }

  // The reply of the extend script, for `mine` extended to `expires`.
  static ExtendResult extended(const redisReply& r, const Reservation& mine, TimePoint expires) {
    ExtendResult out;
    if (code(r) == 1) {
      out.status = ExtendStatus::extended;
      out.current = Reservation{mine.owner, mine.token, expires};
    } else if (r.elements >= 4) {
      out.current = Reservation{text(at(r, 3)), token(at(r, 1)), time(at(r, 2))};
    }
    return out;
  }

  // batch[begin, end) as one pipeline of the extend script (EVALSHA; items whose reply is
  // NOSCRIPT once more by EVAL, in a second pipeline), appending the results to `out`.
  void extend_pipelined(const std::vector<Extension>& batch, std::size_t begin, std::size_t end,
                        TimePoint now, std::vector<ExtendResult>& out) {
    struct Item {
      RedisKeyNames n;
      std::string tok, px, expires_ns;
      TimePoint expires;
    };
    std::vector<Item> items;
    items.reserve(end - begin);
    for (std::size_t i = begin; i < end; ++i) {
      const Extension& x = batch[i];
      const TimePoint expires = detail::saturating_add(now, x.ttl);
      items.push_back(Item{names(*x.key), std::to_string(x.mine->token), detail::to_px(x.ttl),
                           std::to_string(to_unix_nanos(expires)), expires});
    }
    State& s = *state_;
    std::vector<detail::RedisReplyPtr> replies =
        run(nullptr, "extend", [&](detail::RedisConnection& c) {
          std::vector<detail::RedisReplyPtr> r(items.size());
          std::vector<std::size_t> which(items.size());
          for (std::size_t i = 0; i < which.size(); ++i) which[i] = i;
          auto send = [&](std::string_view command, std::string_view code) {
            for (const std::size_t i : which) {
              const Item& it = items[i];
              c.append({command, code, "2", it.n.reservation, it.n.fence,
                        batch[begin + i].mine->owner, it.tok, it.px, it.expires_ns});
            }
            detail::Counters::bump(s.counters->round_trips);
            for (const std::size_t i : which) r[i] = c.read_reply();  // all: the connection in step
          };
          send("EVALSHA", sha(c, s.extend));
          which.erase(std::remove_if(which.begin(), which.end(),
                                     [&](std::size_t i) { return !noscript(*r[i]); }),
                      which.end());
          if (!which.empty()) {  // the script cache was flushed: EVAL runs and loads it again
            detail::Counters::bump(s.counters->script_loads);
            send("EVAL", s.extend.body);
          }
          for (const auto& each : r) {
            if (each->type == REDIS_REPLY_ERROR) server_error(*each);
          }
          return r;
        });
    for (std::size_t i = 0; i < items.size(); ++i) {
      out.push_back(extended(*replies[i], *batch[begin + i].mine, items[i].expires));
    }
  }

  // `s` with the characters SCAN's MATCH treats as a pattern escaped.
  static std::string glob_escaped(const std::string& s) {
    std::string out;
    for (const char ch : s) {
      if (ch == '*' || ch == '?' || ch == '[' || ch == ']' || ch == '\\') out += '\\';
      out += ch;
    }
    return out;
  }

  // `<prefix>{<digest>}` if `name` is one of the storage's keys under `prefix`.
  static std::optional<std::string> base_of(const std::string& name, const std::string& prefix) {
    const std::size_t base = prefix.size() + 66;  // "{" + 64 hex digits + "}"
    if (name.size() <= base || name.compare(0, prefix.size(), prefix) != 0 ||
        name[prefix.size()] != '{' || name[base - 1] != '}') {
      return std::nullopt;
    }
    for (std::size_t i = prefix.size() + 1; i + 1 < base; ++i) {
      const char ch = name[i];
      if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return std::nullopt;
    }
    const std::string_view suffix = std::string_view(name).substr(base);
    if (suffix != ":out" && suffix != ":res" && suffix != ":fence" && suffix != ":at") {
      return std::nullopt;
    }
    return name.substr(0, base);
  }

  static bool noscript(const redisReply& r) {
    return r.type == REDIS_REPLY_ERROR && text(r).compare(0, 8, "NOSCRIPT") == 0;
  }

  // The first operation loads every script (SCRIPT LOAD, pipelined: one round trip), which
  // gives their SHA-1 digests for EVALSHA.
  const std::string& sha(detail::RedisConnection& c, Script& script) const {
    State& s = *state_;
    if (s.loaded.load(std::memory_order_acquire)) return script.sha;
    std::lock_guard<std::mutex> lock(s.load_mu);
    if (!s.loaded.load(std::memory_order_relaxed)) {
      Script* const all[] = {&s.acquire, &s.extend, &s.release, &s.store,
                             &s.put,     &s.erase,  &s.prune};
      for (Script* each : all) c.append({"SCRIPT", "LOAD", each->body});
      detail::Counters::bump(s.counters->round_trips);
      detail::RedisReplyPtr replies[std::size(all)];
      for (auto& r : replies) r = c.read_reply();  // all of them, so the connection stays in step
      for (const auto& r : replies) {
        if (r->type == REDIS_REPLY_ERROR) server_error(*r);
        if (r->type != REDIS_REPLY_STRING) protocol_error("SCRIPT LOAD");
      }
      for (std::size_t i = 0; i < std::size(all); ++i) all[i]->sha = text(*replies[i]);
      s.counters->script_loads.fetch_add(std::size(all), std::memory_order_relaxed);
      s.loaded.store(true, std::memory_order_release);
    }
    return script.sha;
  }

  void report_corrupt(const Key& key, const std::string& name) const {
    const Listener& listener = state_->options.listener;
    if (!listener) return;
    Event e;
    e.kind = EventKind::corrupt_output;
    e.key = &key;
    const std::string why = "the value of Redis key '" + name +
                            "' was not written by cacheserialize (no header): treated as a miss";
    e.detail = why;
    try {
      listener(e);
    } catch (...) {  // a listener cannot break the storage
    }
  }

  [[noreturn]] static void server_error(const redisReply& r) {
    throw Failure(Failure::Kind::server, "the server refused: " + text(r));
  }
  [[noreturn]] static void protocol_error(const char* what) {
    throw Failure(Failure::Kind::protocol, std::string("unexpected reply to ") + what);
  }

  static std::string text(const redisReply& r) { return detail::reply_text(r); }

  static const redisReply& at(const redisReply& r, std::size_t i) {
    if (r.type != REDIS_REPLY_ARRAY || i >= r.elements || !r.element[i]) {
      protocol_error("a script (a missing field)");
    }
    return *r.element[i];
  }

  static long long integer(const redisReply& r) {
    if (r.type != REDIS_REPLY_INTEGER) protocol_error("a script (an integer expected)");
    return r.integer;
  }

  static long long code(const redisReply& r) { return integer(at(r, 0)); }

  static std::uint64_t token(const redisReply& r) {
    if (r.type != REDIS_REPLY_STRING) protocol_error("a script (a token expected)");
    return parse_token(text(r));
  }

  static TimePoint time(const redisReply& r) {
    if (r.type != REDIS_REPLY_STRING) protocol_error("a script (a time expected)");
    return parse_time(text(r));
  }

  static std::uint64_t parse_token(const std::string& s) {
    std::uint64_t v = 0;
    const auto res = std::from_chars(s.data(), s.data() + s.size(), v);
    if (res.ec != std::errc() || res.ptr != s.data() + s.size()) protocol_error("a token");
    return v;
  }

  static TimePoint parse_time(const std::string& s) {
    std::int64_t v = 0;
    const auto res = std::from_chars(s.data(), s.data() + s.size(), v);
    if (res.ec != std::errc() || res.ptr != s.data() + s.size()) protocol_error("a time");
    return from_unix_nanos(v);
  }

  std::shared_ptr<State> state_;
};

}  // namespace cacheserialize
