// Several worker processes, as if on several machines, share one PostgreSQL database: each
// frame is rendered once, by whichever worker reserves it first; the others wait (woken by
// LISTEN/NOTIFY the moment it is stored) and reuse it. A second run finds every frame cached.
//
//   postgres_workers [CONNINFO]
//
// CONNINFO is a libpq connection string ("host=db.internal dbname=flows user=worker"); without
// it, $CACHESERIALIZE_PG_CONNINFO, else libpq's environment (PGHOST, PGUSER, PGPASSWORD...).

#include <sys/wait.h>
#include <unistd.h>

#include <cacheserialize/cacheserialize.hpp>
#include <cacheserialize/storage/postgres.hpp>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

constexpr int kWorkers = 3;
constexpr int kFrames = 6;

// What frame `frame` looks like, to check what a worker got.
std::string picture(int frame) {
  return "frame " + std::to_string(frame) + ": " +
         std::string(static_cast<std::size_t>(frame), '#');
}

std::string render_frame(int frame) {
  std::this_thread::sleep_for(200ms);  // the expensive part
  return picture(frame);
}

cs::PostgresOptions store_options(const std::string& conninfo) {
  cs::PostgresOptions o;
  o.conninfo = conninfo;
  o.schema = "cacheserialize_example";  // created on first use
  return o;
}

// One worker: renders every frame, starting one frame after the previous worker.
// @return how many frames this worker rendered itself (its exit code), or 100 on an error.
int worker(int id, const std::string& conninfo) {
  cs::ManagerOptions mo;
  mo.listener = [id](const cs::Event& e) {
    if (e.kind == cs::EventKind::waiting) {
      std::cout << "  worker " << id << " waits for " << e.holder << "\n";
    }
  };
  cs::ReservationManager<cs::SystemClock, cs::PostgresStorage> manager(
      cs::PostgresStorage(store_options(conninfo)), cs::SystemClock(), mo);
  auto render = cs::serialize_cached(render_frame, cs::TaskOptions{"render", "1"}, manager);
  for (int i = 0; i < kFrames; ++i) {
    const int frame = (id + i) % kFrames;  // overlapping orders: workers meet on frames
    const std::string image = render(frame);
    if (image != picture(frame)) return 100;
  }
  const cs::Stats s = manager.stats();
  std::cout << "worker " << id << " (pid " << ::getpid() << "): rendered " << s.executions
            << ", reused " << s.hits << " (waited " << s.waits << " times), "
            << manager.storage().round_trips() << " round trips\n";
  return static_cast<int>(s.executions);
}

}  // namespace

int main(int argc, char** argv) {
  const char* env = std::getenv("CACHESERIALIZE_PG_CONNINFO");
  const std::string conninfo = argc > 1 ? argv[1] : env ? env : "";
  try {
    cs::PostgresStorage check(store_options(conninfo));  // fail early, with libpq's reason
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  std::vector<pid_t> children;
  for (int id = 0; id < kWorkers; ++id) {
    const pid_t pid = ::fork();  // before any thread or connection exists in this process
    if (pid == 0) {
      int rc = 100;
      try {
        rc = worker(id, conninfo);
      } catch (const std::exception& e) {
        std::cerr << "worker " << id << ": " << e.what() << "\n";
      }
      std::cout.flush();
      ::_exit(rc);
    }
    children.push_back(pid);
  }
  int rendered = 0;
  bool ok = true;
  for (const pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 100;
    ok = ok && rc <= kFrames;
    rendered += rc <= kFrames ? rc : 0;
  }
  std::cout << kFrames << " frames, rendered " << rendered
            << " times by all workers together (0 when an earlier run cached them)\n";
  return ok && rendered <= kFrames ? 0 : 1;
}
