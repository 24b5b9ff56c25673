// Two processes, one directory: the same program, run twice at once against a shared cache
// directory. One process runs the expensive function; the other finds its reservation, waits,
// and reuses its output. Run it yourself in two terminals, or in one shell:
//
//     mkdir -p /tmp/cache
//     ./fs_two_processes /tmp/cache & ./fs_two_processes /tmp/cache; wait
//
// Without an argument it is a self-checking demo: it starts two copies of itself at once on a
// fresh temporary directory and checks that exactly one of them ran the function.

#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cacheserialize/cacheserialize.hpp>
#include <cacheserialize/storage/filesystem.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

// One participant: computes the report for 2026, or reuses the other process's.
int participate(const std::string& dir) {
  const std::string me = "[pid " + std::to_string(::getpid()) + "]";
  cs::ManagerOptions options;
  options.heartbeat_interval = 1s;  // the reservation lives 3 s past each heartbeat
  options.listener = [&me](const cs::Event& e) {
    if (e.kind == cs::EventKind::waiting) {
      std::printf("%s waiting: %.*s holds the reservation until %s\n", me.c_str(),
                  static_cast<int>(e.holder.size()), e.holder.data(),
                  cs::format_time(e.expires_at).c_str());
    } else if (e.kind == cs::EventKind::acquired) {
      std::printf("%s reserved the key: running the function\n", me.c_str());
    }
    std::fflush(stdout);
  };
  cs::ReservationManager<cs::SystemClock, cs::FileSystemStorage> manager(
      cs::FileSystemStorage(dir), cs::SystemClock(), options);

  cs::TaskOptions task{"yearly_report", "1"};
  task.poll_interval = 100ms;  // a waiter looks every 100 ms (+-20%): its wake-up latency
  auto report = cs::serialize_cached(
      [&](int year) {
        std::ofstream(dir + "/ran.log", std::ios::app) << me << "\n";  // for the demo's check
        std::this_thread::sleep_for(1s);                               // expensive
        return std::vector<double>{static_cast<double>(year), 1.5, 2.5};
      },
      task, manager);

  const auto start = std::chrono::steady_clock::now();
  const std::vector<double> rows = report(2026);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  const cs::Stats s = manager.stats();
  std::printf("%s got %zu rows in %lld ms: %s\n", me.c_str(), rows.size(),
              static_cast<long long>(took.count()),
              s.executions == 1 ? "ran the function"
              : s.waits == 1    ? "waited and reused the other process's output"
                                : "found the output cached");
  return rows.size() == 3 && rows[0] == 2026 ? 0 : 1;
}

pid_t start_copy(const char* self, const std::string& dir) {
  std::string arg0 = self;
  std::string arg1 = dir;
  char* argv[] = {&arg0[0], &arg1[0], nullptr};
  pid_t pid = -1;
  if (::posix_spawnp(&pid, self, nullptr, nullptr, argv, environ) != 0) return -1;
  return pid;
}

int demo(const char* self) {
  const char* base = std::getenv("TMPDIR");
  std::string dir =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/fs_two_processes-XXXXXX";
  if (::mkdtemp(&dir[0]) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  std::printf("cache directory: %s\n", dir.c_str());
  std::fflush(stdout);
  const pid_t a = start_copy(self, dir);
  const pid_t b = start_copy(self, dir);
  int ok = a > 0 && b > 0;
  for (const pid_t pid : {a, b}) {
    int status = 0;
    if (pid > 0 &&
        (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
      ok = false;
    }
  }
  int runs = 0;
  std::ifstream log(dir + "/ran.log");
  for (std::string line; std::getline(log, line);) ++runs;
  std::printf("the function ran %d time%s for two processes\n", runs, runs == 1 ? "" : "s");
  ::nftw(
      dir.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); },
      16, FTW_DEPTH | FTW_PHYS);
  return ok && runs == 1 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return argc > 1 ? participate(argv[1]) : demo(argv[0]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fs_two_processes: %s\n", e.what());
    return 1;
  }
}
