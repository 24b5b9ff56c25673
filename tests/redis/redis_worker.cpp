// A worker process for the Redis tests.
//
//   redis_worker race <port> <prefix> <log> <threads> <keys> <body_ms>
//     Waits for EOF on stdin (the start signal, so that every worker starts at once), then runs
//     <threads> threads that each call the race task for every key 0..<keys>-1, each thread in a
//     different order. Each execution of the body appends "<key>\n" to <log> (O_APPEND: one
//     atomic write). Exits 0 if every call returned the right output, 1 otherwise.
//
//   redis_worker hold <port> <prefix> <key>
//     Takes the hold task's reservation for <key> (heartbeat 100 ms x 8), prints "running", and
//     blocks in the body until stdin closes. The tests SIGKILL it there.
//
//   redis_worker engine <claim|resume> <port> <prefix> <report> <log> <keys> <heartbeat_ms>
//                <grace> <work_ms>
//     The restart tests' engine (../engine_task.hpp): claim try_claims <keys> keys as owners
//     "engine-1:task-<i>" and blocks (killed there); resume claims them again as the same
//     owners, keeps them <work_ms>, then runs and stores each. Reports to <report>.

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cacheserialize/cacheserialize.hpp>
#include <cacheserialize/storage/redis.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "../engine_task.hpp"
#include "worker_tasks.hpp"

namespace cs = cacheserialize;

namespace {

cs::RedisOptions options_for(const std::string& port, const std::string& prefix) {
  cs::RedisOptions o;
  o.port = std::stoi(port);
  o.key_prefix = prefix;
  o.connect_timeout = std::chrono::seconds(5);
  o.command_timeout = std::chrono::seconds(5);
  return o;
}

void wait_for_eof_on_stdin() {
  char buf[64];
  while (::read(0, buf, sizeof buf) > 0) {
  }
}

int race(char** argv) {
  const cs::RedisStorage storage(options_for(argv[2], argv[3]));
  const std::string log = argv[4];
  const int threads = std::stoi(argv[5]);
  const int keys = std::stoi(argv[6]);
  const auto body_time = std::chrono::milliseconds(std::stoi(argv[7]));
  auto task = cs::serialize_cached(
      [&](int k) {
        const int fd = ::open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        const std::string line = std::to_string(k) + "\n";
        if (fd < 0 || ::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
          std::cerr << "worker: cannot write the log\n";
          std::_Exit(3);
        }
        ::close(fd);
        std::this_thread::sleep_for(body_time);  // the body's work: widens the race window
        return test::race_output(k);
      },
      test::race_task(), storage);

  wait_for_eof_on_stdin();
  std::atomic<int> wrong{0};
  std::vector<std::thread> pool;
  const int offset = static_cast<int>(::getpid());
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < keys; ++i) {
        const int k = (i + t * 7 + offset) % keys;
        try {
          if (task(k) != test::race_output(k)) wrong.fetch_add(1);
        } catch (const std::exception& e) {
          std::cerr << "worker: " << e.what() << "\n";
          wrong.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  const cs::Stats s = task.manager().stats();
  std::cout << "executions=" << s.executions << " hits=" << s.hits << " waits=" << s.waits
            << std::endl;
  return wrong.load() == 0 ? 0 : 1;
}

int hold(char** argv) {
  const cs::RedisStorage storage(options_for(argv[2], argv[3]));
  cs::ManagerOptions mo;
  mo.heartbeat_interval = std::chrono::milliseconds(100);
  mo.grace_multiplier = 8;
  const cs::ReservationManager<cs::SystemClock, cs::RedisStorage> manager(storage,
                                                                          cs::SystemClock(), mo);
  auto task = cs::serialize_cached(
      [](const std::string&) {
        std::cout << "running" << std::endl;
        wait_for_eof_on_stdin();  // killed here
        return std::string("from the worker");
      },
      test::hold_task(), manager);
  task(argv[4]);
  return 0;
}

int engine(char** argv) {
  engine_task::Settings s;
  s.phase = argv[2];
  s.report = argv[5];
  s.log = argv[6];
  s.keys = std::stoi(argv[7]);
  s.heartbeat = std::chrono::milliseconds(std::stoi(argv[8]));
  s.grace = std::stod(argv[9]);
  s.work = std::chrono::milliseconds(std::stoi(argv[10]));
  return engine_task::run(cs::RedisStorage(options_for(argv[3], argv[4])), s);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "race" && argc == 8) return race(argv);
    if (mode == "hold" && argc == 5) return hold(argv);
    if (mode == "engine" && argc == 11) return engine(argv);
    std::cerr << "usage: redis_worker race <port> <prefix> <log> <threads> <keys> <body_ms>\n"
                 "       redis_worker hold <port> <prefix> <key>\n"
                 "       redis_worker engine <claim|resume> <port> <prefix> <report> <log> <keys> "
                 "<heartbeat_ms> <grace> <work_ms>\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "worker: " << e.what() << "\n";
    return 4;
  }
}
