// The client side of bench/server_instructions.sh: makes N calls, each a hit or a miss, through
// the library (`serialize_cached` over PostgresStorage or RedisStorage, one connection) or
// through the baseline that bench_load measures against (the same operation written by hand
// with libpq or hiredis), so that the script can count what the server executes per call.
//
//   server_instructions pg    CONNINFO MODE N [KEY]
//   server_instructions redis PORT     MODE N [KEY]
//
// MODE: lib_hit, lib_miss, base_hit, base_miss. A hit reads KEY (a number, default 1) each time,
// after storing it if needed; a miss uses keys never used before (drawn at random). Setup (the
// connection, prepared statements, the first store of a hit's key) costs the same whatever N,
// so the script subtracts a run of N/5 calls from one of N.

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <random>
#include <stdexcept>
#include <string>

#include "cacheserialize/cacheserialize.hpp"
#include "storage_bench.hpp"

#if defined(CACHESERIALIZE_BENCH_POSTGRES)
#include <libpq-fe.h>

#include "cacheserialize/storage/postgres.hpp"
#endif
#if defined(CACHESERIALIZE_BENCH_REDIS)
#include <hiredis/hiredis.h>

#include "cacheserialize/storage/redis.hpp"
#endif

namespace cs = cacheserialize;

namespace {

struct Mode {
  bool library;
  bool miss;
};

Mode parse_mode(const std::string& m) {
  if (m == "lib_hit") return {true, false};
  if (m == "lib_miss") return {true, true};
  if (m == "base_hit") return {false, false};
  if (m == "base_miss") return {false, true};
  throw std::invalid_argument("unknown mode '" + m + "' (lib_hit, lib_miss, base_hit, base_miss)");
}

/// Calls `fn(key)` n times: the hit key, or a new key each time.
template <class F>
void calls(Mode mode, long n, std::int64_t hit_key, F fn) {
  const std::int64_t base = static_cast<std::int64_t>(std::random_device{}() >> 1) << 24;
  for (long i = 0; i < n; ++i) fn(mode.miss ? base + i : hit_key);
}

template <class Storage>
void library(Storage storage, Mode mode, long n, std::int64_t key) {
  auto fn = cs::serialize_cached(bench::Payload{}, cs::TaskOptions{"payload", "1"},
                                 cs::ReservationManager<cs::SystemClock, Storage>(storage));
  if (!mode.miss) fn(key);  // stored, if it was not
  calls(mode, n, key, [&](std::int64_t k) {
    if (fn(k).size() != bench::kPayloadBytes) throw std::runtime_error("a wrong answer");
  });
}

#if defined(CACHESERIALIZE_BENCH_POSTGRES)
void postgres(const std::string& conninfo, Mode mode, long n, std::int64_t key) {
  if (mode.library) {
    cs::PostgresOptions o;
    o.conninfo = conninfo;
    o.schema = "server_instructions";
    o.pool_size = 1;
    library(cs::PostgresStorage(o), mode, n, key);
    return;
  }
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(c));
  auto ok = [&](PGresult* r) {
    const ExecStatusType s = PQresultStatus(r);
    PQclear(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) throw std::runtime_error(PQerrorMessage(c));
  };
  ok(PQexec(c,
            "SET client_min_messages = warning; CREATE TABLE IF NOT EXISTS"
            " public.server_instructions_kv (key text PRIMARY KEY, value text, owner text)"));
  ok(PQprepare(c, "get", "SELECT value FROM public.server_instructions_kv WHERE key = $1", 0,
               nullptr));
  ok(PQprepare(c, "reserve",
               "INSERT INTO public.server_instructions_kv (key, owner) VALUES ($1, $2)"
               " ON CONFLICT DO NOTHING RETURNING 1",
               0, nullptr));
  ok(PQprepare(c, "store",
               "UPDATE public.server_instructions_kv SET value = $2, owner = NULL WHERE key = $1",
               0, nullptr));
  auto miss = [&](std::int64_t k) {
    const std::string name = std::to_string(k);
    const std::string owner = "owner";
    const std::string value = bench::Payload{}(k);
    const char* p[2] = {name.c_str(), owner.c_str()};
    ok(PQexecPrepared(c, "reserve", 2, p, nullptr, nullptr, 0));
    p[1] = value.c_str();
    ok(PQexecPrepared(c, "store", 2, p, nullptr, nullptr, 0));
  };
  if (!mode.miss) miss(key);  // stored (a second time, harmlessly)
  calls(mode, n, key, [&](std::int64_t k) {
    if (mode.miss) return miss(k);
    const std::string name = std::to_string(k);
    const char* p[1] = {name.c_str()};
    ok(PQexecPrepared(c, "get", 1, p, nullptr, nullptr, 0));
  });
  PQfinish(c);
}
#endif

#if defined(CACHESERIALIZE_BENCH_REDIS)
void redis(int port, Mode mode, long n, std::int64_t key) {
  if (mode.library) {
    cs::RedisOptions o;
    o.port = port;
    o.key_prefix = "si:";
    o.pool_size = 1;
    library(cs::RedisStorage(o), mode, n, key);
    return;
  }
  redisContext* c = redisConnect("127.0.0.1", port);
  if (!c || c->err) throw std::runtime_error("cannot connect to redis");
  auto run = [&](std::initializer_list<std::string> args) {
    const char* argv[6];
    std::size_t lens[6];
    int i = 0;
    for (const std::string& a : args) {
      argv[i] = a.data();
      lens[i++] = a.size();
    }
    auto* r = static_cast<redisReply*>(redisCommandArgv(c, i, argv, lens));
    if (!r || r->type == REDIS_REPLY_ERROR) throw std::runtime_error("a redis command failed");
    freeReplyObject(r);
  };
  auto miss = [&](std::int64_t k) {
    const std::string reservation = "res:" + std::to_string(k);
    run({"SET", reservation, "owner", "NX", "PX", "30000"});
    run({"SET", "raw:" + std::to_string(k), bench::Payload{}(k)});
    run({"DEL", reservation});
  };
  if (!mode.miss) miss(key);
  calls(mode, n, key, [&](std::int64_t k) {
    if (mode.miss) return miss(k);
    run({"GET", "raw:" + std::to_string(k)});
  });
  redisFree(c);
}
#endif

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 5) {
      throw std::invalid_argument(
          "usage: server_instructions pg|redis CONNINFO|PORT MODE N [KEY] (see the file's top)");
    }
    const std::string store = argv[1];
    const Mode mode = parse_mode(argv[3]);
    const long n = std::stol(argv[4]);
    const std::int64_t key = argc > 5 ? std::stoll(argv[5]) : 1;
#if defined(CACHESERIALIZE_BENCH_POSTGRES)
    if (store == "pg") {
      postgres(argv[2], mode, n, key);
      return 0;
    }
#endif
#if defined(CACHESERIALIZE_BENCH_REDIS)
    if (store == "redis") {
      redis(std::stoi(argv[2]), mode, n, key);
      return 0;
    }
#endif
    throw std::invalid_argument("'" + store + "': not a storage this binary was built with");
  } catch (const std::exception& e) {
    std::cerr << "server_instructions: " << e.what() << "\n";
    return 1;
  }
}
