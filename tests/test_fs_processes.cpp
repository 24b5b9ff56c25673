// FileSystemStorage between real processes: the fs_worker helper, started with posix_spawn
// against one directory, killed with SIGKILL where the scenario says so. Real processes run on
// the wall clock, so these tests use short intervals (heartbeats of 100 ms) and assert on the
// order of observed events and on generous time windows, waiting by bounded polling.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine_restart.hpp"
#include "fs_support.hpp"
#include "fs_task.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;
using test::Child;
using test::TempDir;

namespace {

std::string make_root(const TempDir& dir) {
  const std::string root = dir / "root";
  REQUIRE(::mkdir(root.c_str(), 0777) == 0);
  return root;
}

std::map<std::string, long long> sum_stats(const std::vector<std::string>& outputs) {
  std::map<std::string, long long> sum;
  for (const auto& out : outputs) {
    for (const auto& line : test::lines_of(out)) {
      if (line.rfind("stats ", 0) != 0) continue;
      for (const char* name : {"calls", "errors", "corrupt", "executions", "waits", "hits",
                               "takeovers", "lost", "heartbeats"}) {
        const std::string v = test::field(line, name);
        if (!v.empty()) sum[name] += std::stoll(v);
      }
    }
  }
  return sum;
}

long long ms(std::int64_t ns) { return static_cast<long long>(ns / 1000000); }

// The files in the shard directories under `top` (root/outputs or root/reservations), as (name,
// path). Nothing but shard directories may be in `top`: a constructor killed while it probes
// the directory leaves nothing there (its probe file has no name).
std::vector<std::pair<std::string, std::string>> files_under(const std::string& top) {
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& shard : cs::detail::fs_list(top)) {
    INFO(top << "/" << shard);
    REQUIRE((shard.size() == 2 && cs::detail::fs_is_hex(shard)));
    for (const auto& name : cs::detail::fs_list(top + "/" + shard)) {
      files.emplace_back(name, top + "/" + shard + "/" + name);
    }
  }
  return files;
}

}  // namespace

TEST_CASE(
    "8 processes x 8 threads x 50 keys at once: each key's function runs exactly once and every "
    "caller gets its value") {
  constexpr int kProcesses = 8;
  constexpr int kThreads = 8;
  constexpr int kKeys = 50;
  TempDir dir;
  const std::string root = make_root(dir);
  const std::string log = dir / "exec.log";
  const std::string go = dir / "go";
  std::vector<std::unique_ptr<Child>> workers;
  for (int p = 0; p < kProcesses; ++p) {
    workers.push_back(std::make_unique<Child>(
        std::vector<std::string>{"run", "--root", root, "--log", log, "--threads",
                                 std::to_string(kThreads), "--keys", std::to_string(kKeys), "--go",
                                 go, "--body-ms", "20", "--heartbeat-ms", "200", "--grace", "10",
                                 "--poll-ms", "20"},
        dir / ("worker" + std::to_string(p) + ".out")));
  }
  // Every worker is up (its storage constructed); then they all start at once.
  REQUIRE(test::eventually([&] {
    int ready = 0;
    for (const auto& name : cs::detail::fs_list(dir.path())) {
      ready += name.rfind("go.ready.", 0) == 0 ? 1 : 0;
    }
    return ready == kProcesses;
  }));
  const auto start = std::chrono::steady_clock::now();
  test::write_file(go, "");
  std::vector<std::string> outputs;
  for (auto& w : workers) {
    const int status = w->wait();
    INFO("worker " << w->pid() << " printed: " << w->output() << w->errors());
    CHECK(status == 0);
    outputs.push_back(w->output());
  }
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);

  std::map<std::int64_t, int> runs;
  for (const auto& e : test::executions_in(log)) ++runs[e.key];
  CHECK(runs.size() == kKeys);
  for (int i = 0; i < kKeys; ++i) {
    INFO("key " << i);
    CHECK(runs[i] == 1);
  }
  CHECK(test::bad_values_in(log) == 0);
  auto stats = sum_stats(outputs);
  CHECK(stats["calls"] == kProcesses * kThreads * kKeys);
  CHECK(stats["errors"] == 0);
  CHECK(stats["corrupt"] == 0);
  CHECK(stats["executions"] == kKeys);
  CHECK(stats["takeovers"] == 0);
  CHECK(stats["hits"] + stats["executions"] == stats["calls"]);

  cs::FileSystemStorage storage(root);
  for (int i = 0; i < kKeys; ++i) {
    const auto out = storage.get(fs_task::key(i));
    REQUIRE(out);
    CHECK(cs::decode_value<std::string>(out->bytes) == fs_task::expected(i, 0));
  }
  std::printf(
      "[fs] exactly once: %d processes x %d threads x %d keys: %lld calls, %zu executions "
      "logged, %lld callers waited, %lld hits, %lld takeovers, %lld ms\n",
      kProcesses, kThreads, kKeys, stats["calls"], test::executions_in(log).size(), stats["waits"],
      stats["hits"], stats["takeovers"], static_cast<long long>(elapsed.count()));
}

TEST_CASE(
    "a holder killed with SIGKILL while its function runs is taken over after its reservation "
    "expires, and not before") {
  constexpr auto kTtl = 500ms;  // heartbeat 100 ms x grace 5
  TempDir dir;
  const std::string root = make_root(dir);
  const std::string log = dir / "exec.log";
  const std::vector<std::string> timing{"--heartbeat-ms", "100", "--grace", "5", "--poll-ms", "20"};
  auto args = [&](std::vector<std::string> a) {
    a.insert(a.end(), timing.begin(), timing.end());
    return a;
  };
  const cs::Key key = fs_task::key(7);
  cs::FileSystemStorage storage(root);

  Child holder(args({"hold", "--root", root, "--log", log, "--key", "7"}), dir / "holder.out");
  REQUIRE(test::eventually([&] { return test::executions_in(log).size() == 1; }));
  const auto first = storage.reservation(key);
  REQUIRE(first);
  CHECK_THAT(first->owner, Catch::Contains(":" + std::to_string(holder.pid()) + ":"));

  Child waiter(args({"call", "--root", root, "--log", log, "--key", "7"}), dir / "waiter.out");
  REQUIRE(test::eventually([&] { return waiter.output().find("waiting holder=") == 0; }));
  // While the holder lives, its heartbeat carries the reservation two lifetimes past its first
  // expiry, and the waiter, polling all along, does not take over.
  REQUIRE(test::eventually([&] {
    const auto r = storage.reservation(key);
    return r && r->expires_at >= first->expires_at + 2 * kTtl;
  }));
  CHECK(test::executions_in(log).size() == 1);
  CHECK(waiter.output().find("took_over") == std::string::npos);

  const std::int64_t killed_at = test::wall_ns();
  holder.kill9();
  const auto last = storage.reservation(key);
  REQUIRE(last);
  REQUIRE(last->owner == first->owner);  // nothing extends it any more
  const std::int64_t expiry = cs::to_unix_nanos(last->expires_at);
  CHECK(expiry > killed_at);  // it was alive when its holder died

  REQUIRE(waiter.wait() == 0);
  const auto lines = test::lines_of(waiter.output());
  const auto took = std::find_if(lines.begin(), lines.end(),
                                 [](const std::string& l) { return l.rfind("took_over", 0) == 0; });
  REQUIRE(took != lines.end());
  CHECK(test::field(*took, "holder") == first->owner);
  const std::int64_t taken_at = std::stoll(test::field(*took, "at"));
  CHECK(taken_at >= expiry);                 // not before the expiry...
  CHECK(taken_at - expiry < 5'000'000'000);  // ...and soon after it (one poll, generously)
  CHECK(std::find(lines.begin(), lines.end(), "result ok") != lines.end());

  const auto runs = test::executions_in(log);
  REQUIRE(runs.size() == 2);
  CHECK(runs[0].pid == holder.pid());
  CHECK(runs[1].pid == waiter.pid());
  CHECK(runs[1].at_ns >= expiry);
  const auto out = storage.get(key);
  REQUIRE(out);
  CHECK(cs::decode_value<std::string>(out->bytes) == fs_task::expected(7, 0));
  CHECK_FALSE(storage.reservation(key));
  std::printf(
      "[fs] takeover: holder killed %lld ms before its reservation expired; the waiter took over "
      "%lld ms after the expiry (%lld ms after the kill; reservation lifetime %lld ms)\n",
      ms(expiry - killed_at), ms(taken_at - expiry), ms(taken_at - killed_at),
      static_cast<long long>(kTtl.count()));
}

TEST_CASE("a key's lock dies with the process that holds it") {
  TempDir dir;
  const std::string root = make_root(dir);
  cs::FileSystemOptions o;
  o.root = root;
  o.lock_timeout = 300ms;
  cs::FileSystemStorage storage(o);
  const cs::Key key = fs_task::key(1);
  const cs::TimePoint now = cs::SystemClock().now();
  CHECK(storage.release(key, cs::Reservation{"nobody", 1, now}) == cs::ReleaseStatus::not_held);
  std::string lock = storage.record_path(key);
  lock = lock.substr(0, lock.size() - 4) + ".lock";

  Child locker({"lock", "--path", lock}, dir / "locker.out");
  REQUIRE(test::eventually([&] { return locker.output() == "locked\n"; }));
  CHECK_THROWS_WITH(storage.acquire(key, {"me", now, 30s, false}),
                    Catch::Contains("timed out after 300ms waiting to lock '" + lock));
  locker.kill9();  // mid-"critical section": the kernel drops its flock with it
  const cs::AcquireResult r = storage.acquire(key, {"me", now, 30s, false});
  CHECK(r.status == cs::AcquireStatus::acquired);
}

TEST_CASE(
    "processes killed with SIGKILL at random instants leave only valid outputs, and every key "
    "can still be computed") {
  constexpr int kWorkers = 4;
  constexpr int kKeys = 40;
  constexpr std::size_t kBig = 256 * 1024;  // some outputs are large: kills land mid-write
  constexpr auto kRun = 3s;
  TempDir dir;
  const std::string root = make_root(dir);
  const std::string log = dir / "exec.log";
  const auto seed = static_cast<std::uint64_t>(test::wall_ns());
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const std::int64_t until =
      test::wall_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(kRun).count();
  int spawned = 0;
  auto spawn = [&] {
    ++spawned;
    return std::make_unique<Child>(std::vector<std::string>{"churn",
                                                            "--root",
                                                            root,
                                                            "--log",
                                                            log,
                                                            "--threads",
                                                            "4",
                                                            "--keys",
                                                            std::to_string(kKeys),
                                                            "--seed",
                                                            std::to_string(rng() % 1000000),
                                                            "--until-ns",
                                                            std::to_string(until),
                                                            "--big",
                                                            std::to_string(kBig),
                                                            "--body-ms",
                                                            "30",
                                                            "--heartbeat-ms",
                                                            "100",
                                                            "--grace",
                                                            "5",
                                                            "--poll-ms",
                                                            "20"},
                                   dir / ("churn" + std::to_string(spawned) + ".out"));
  };
  std::vector<std::unique_ptr<Child>> workers;
  for (int i = 0; i < kWorkers; ++i) workers.push_back(spawn());
  int kills = 0;
  // The kill schedule is random on purpose: each pause is a random instant to strike at.
  while (test::wall_ns() < until - 300'000'000) {
    std::this_thread::sleep_for(std::chrono::milliseconds(30 + rng() % 170));
    auto& victim = workers[rng() % workers.size()];
    victim->kill9();
    ++kills;
    victim = spawn();
  }
  std::vector<std::string> outputs;
  for (auto& w : workers) {
    const int status = w->wait(60s);
    INFO("worker " << w->pid() << " printed: " << w->output() << w->errors());
    CHECK(status == 0);
    outputs.push_back(w->output());
  }
  CHECK(test::bad_values_in(log) == 0);
  const std::size_t executions = test::executions_in(log).size();
  const auto survivors = sum_stats(outputs);

  // Every output file is complete and valid, and holds the right value; every reservation
  // record is valid. Killed writers may have left temporary files, and nothing else.
  std::map<std::string, std::int64_t> digests;
  for (int i = 0; i < kKeys; ++i) digests[fs_task::key(i).digest()] = i;
  int valid = 0;
  int temporaries = 0;
  for (const auto& [name, path] : files_under(root + "/outputs")) {
    INFO(path);
    if (name.size() > 64 && name.compare(name.size() - 4, 4, ".tmp") == 0) {
      ++temporaries;
      continue;
    }
    REQUIRE(digests.count(name) == 1);
    const std::int64_t i = digests[name];
    cs::detail::OutputView view;
    const std::string bytes = test::read_file(path);
    REQUIRE(cs::detail::parse_output_file(bytes, fs_task::key(i).encoded(), view).empty());
    CHECK(cs::decode_value<std::string>(view.payload) == fs_task::expected(i, kBig));
    ++valid;
  }
  int records = 0;
  for (const auto& [name, path] : files_under(root + "/reservations")) {
    INFO(path);
    if (name.size() != 68 || name.compare(64, 4, ".res") != 0) continue;  // locks, temporaries
    const std::string bytes = test::read_file(path);
    if (bytes.empty()) {  // its creator was killed before its first write: free
      ++temporaries;
      continue;
    }
    cs::detail::ReservationRecord rec;
    CHECK(cs::detail::parse_reservation_record(bytes, rec).empty());
    ++records;
  }

  // Every key can still be computed: dead holders' reservations expire and are taken over.
  test::Recorder recorder;
  cs::FileSystemOptions fo;
  fo.root = root;
  fo.listener = recorder.listener();
  cs::ManagerOptions mo;
  mo.heartbeat_interval = 100ms;
  mo.grace_multiplier = 5;
  cs::ReservationManager<cs::SystemClock, cs::FileSystemStorage> manager(cs::FileSystemStorage(fo),
                                                                         cs::SystemClock(), mo);
  cs::TaskOptions to{fs_task::name, fs_task::version};
  to.poll_interval = 20ms;
  to.wait_timeout = 30s;
  auto task =
      cs::serialize_cached([&](std::int64_t i) { return fs_task::expected(i, kBig); }, to, manager);
  std::atomic<int> wrong{0};
  std::atomic<int> failed{0};
  {
    test::Threads threads;
    for (int t = 0; t < 4; ++t) {
      threads.spawn([&, t] {
        for (int j = 0; j < kKeys; ++j) {
          const int i = (t * 10 + j) % kKeys;
          try {
            if (task(i) != fs_task::expected(i, kBig)) wrong.fetch_add(1);
          } catch (...) {
            failed.fetch_add(1);
          }
        }
      });
    }
  }
  CHECK(wrong == 0);
  CHECK(failed == 0);
  CHECK(recorder.count(cs::EventKind::corrupt_output) == 0);
  const cs::Stats after = manager.stats();
  std::printf(
      "[fs] random kills: %d workers x 4 threads, %d keys, %lld ms: %d SIGKILLs, %d processes in "
      "all, %zu executions logged; survivors: %lld calls, %lld takeovers; afterwards %d valid "
      "outputs, %d records, %d temporaries of killed writers; recomputing all keys: %llu "
      "executions, %llu takeovers, %llu hits\n",
      kWorkers, kKeys, static_cast<long long>(std::chrono::milliseconds(kRun).count()), kills,
      spawned, executions, survivors.count("calls") ? survivors.at("calls") : 0LL,
      survivors.count("takeovers") ? survivors.at("takeovers") : 0LL, valid, records, temporaries,
      static_cast<unsigned long long>(after.executions),
      static_cast<unsigned long long>(after.takeovers),
      static_cast<unsigned long long>(after.hits));
  CHECK(kills > 0);
  CHECK(valid > 0);
}

TEST_CASE(
    "a root the process may not write to is a storage_error naming it, also when the tests run "
    "as root") {
  TempDir dir;
  REQUIRE(::chmod(dir.path().c_str(), 0755) == 0);  // others may enter, to see the roots
  const std::string read_only = dir / "read-only";
  const std::string writable = dir / "writable";
  REQUIRE(::mkdir(read_only.c_str(), 0555) == 0);
  REQUIRE(::mkdir(writable.c_str(), 0777) == 0);
  REQUIRE(::chmod(writable.c_str(), 0777) == 0);  // whatever the umask
  if (::geteuid() != 0) {
    CHECK_THROWS_WITH(cs::FileSystemStorage(read_only),
                      Catch::Contains("'" + read_only + "' is not writable") &&
                          Catch::Contains("Permission denied"));
    CHECK_NOTHROW(cs::FileSystemStorage(writable));
    return;
  }
  // Root ignores permission bits: a child process drops to nobody (65534) first.
  Child probe({"probe", "--root", read_only, "--uid", "65534", "--gid", "65534"},
              dir / "probe.out");
  const int status = probe.wait();
  if (status == 4) {
    WARN(
        "cannot drop privileges in this environment: the permission case is covered only by "
        "'a bad root is a storage_error that names the path and the OS error'");
    return;
  }
  CHECK(status == 3);
  CHECK_THAT(probe.output(), Catch::Contains("storage_error: cacheserialize: FileSystemStorage: "
                                             "the root '" +
                                             read_only + "' is not writable") &&
                                 Catch::Contains("Permission denied"));
  // The control: the same unprivileged process can use a root it may write to, and take a key
  // whose record root wrote and only root may write: it replaces the record by a rename (it
  // may write the directory), where it cannot rewrite it in place.
  cs::FileSystemStorage mine(writable);
  for (const char* sub : {"/outputs", "/reservations"}) {
    REQUIRE(::chmod((writable + sub).c_str(), 0777) == 0);  // made by root, whatever the umask
  }
  const cs::Key key("probe", "1", "another user's record");
  const cs::TimePoint now = cs::SystemClock().now();
  const auto held = mine.acquire(key, {"root-owner", now, 30s, false}).reservation;
  REQUIRE(mine.release(key, held) == cs::ReleaseStatus::released);
  const std::string record = mine.record_path(key);
  REQUIRE(::chmod(record.c_str(), 0644) == 0);
  REQUIRE(::chmod(record.substr(0, record.rfind('/')).c_str(), 0777) == 0);
  Child control({"probe", "--root", writable, "--uid", "65534", "--gid", "65534", "--acquire",
                 "another user's record"},
                dir / "control.out");
  CHECK(control.wait() == 0);
  CHECK(control.output() == "constructed\nacquired\n");
  const auto now_held = mine.reservation(key);
  REQUIRE(now_held);
  CHECK(now_held->owner == "probe-owner");
  CHECK(now_held->token > held.token);
}

TEST_CASE(
    "an engine process SIGKILLed while its work runs elsewhere resumes its reservations when "
    "restarted, and a waiting engine neither takes them over nor runs them") {
  TempDir dir;
  const std::string root = make_root(dir);
  struct Engine : test::EngineProcess {
    explicit Engine(std::vector<std::string> args, const std::string& out)
        : child(std::move(args), out) {}
    void kill9() override { child.kill9(); }
    int wait_exit() override { return child.wait(); }
    Child child;
  };
  const test::EngineRestartSettings settings;
  test::check_engine_restart(
      "fs", cs::FileSystemStorage(root),
      [&](const std::string& phase, const std::string& report, const std::string& log) {
        return std::make_unique<Engine>(
            std::vector<std::string>{"engine", "--phase", phase, "--root", root, "--report", report,
                                     "--log", log, "--keys", std::to_string(settings.keys),
                                     "--heartbeat-ms", std::to_string(settings.heartbeat.count()),
                                     "--grace", std::to_string(static_cast<int>(settings.grace)),
                                     "--work-ms", std::to_string(settings.work.count())},
            report + ".out");
      },
      settings);
}
