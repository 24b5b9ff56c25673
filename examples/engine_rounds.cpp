// An engine that evaluates a DAG of tasks in rounds on a small thread pool, with
// `ReservationManager::try_claim` (docs/engine.md quotes it, and a test checks the quotes are
// verbatim). Each round it looks once at every task whose inputs are ready:
//   - hit:      the output is stored (by this engine earlier, by a restarted run, by anyone): done;
//   - acquired: the reservation is this task's: the work goes to the pool with the hold;
//   - held:     another owner runs it now: say who and until when, and look again next round.
// No pool thread ever blocks waiting for another task's reservation.
//
// Owner ids are derived from (execution id, node, attempt), so the engine survives its own
// restart: a second run with the same execution id claims as the same owners and resumes the
// reservations that the dead run left (same fencing token, no takeover, no waiting for expiry),
// and finds every finished task's output stored.
//
//   engine_rounds                          both phases, checked: a run that dies after 4 claims
//                                          (std::_Exit, no clean-up), then its restart
//   engine_rounds --dir D --execution E [--crash-after N]
//                                          one run on the FileSystemStorage in D

#include <sys/wait.h>
#include <unistd.h>

#include <cacheserialize/cacheserialize.hpp>
#include <cacheserialize/storage/filesystem.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace cs = cacheserialize;
using namespace std::chrono_literals;
using Manager = cs::ReservationManager<cs::SystemClock, cs::FileSystemStorage>;

namespace {

// ---- a small fixed thread pool ---------------------------------------------------------------

class Pool {
 public:
  explicit Pool(int threads) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : workers_) t.join();
  }
  void submit(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// ---- the DAG ---------------------------------------------------------------------------------

struct Node {
  std::string id;                 // the node's id in the workflow: the claim's tag
  std::string task;               // the task it runs, e.g. "load"
  std::vector<std::string> deps;  // nodes whose outputs are its inputs
  std::int64_t param = 0;
};

// load(i) = 10 i; square(x) = x * x; sum(xs...) = the sum. Two nodes load the same input: they
// share one cache key, so one of them finds the other holding it.
std::vector<Node> workflow() {
  return {{"load-1", "load", {}, 1},          {"load-2", "load", {}, 2},
          {"load-2-again", "load", {}, 2},    {"load-3", "load", {}, 3},
          {"square-1", "square", {"load-1"}}, {"square-2", "square", {"load-2"}},
          {"square-3", "square", {"load-3"}}, {"sum", "sum", {"square-1", "square-2", "square-3"}}};
}

// The cache key of a node, from its task and its inputs' values.
cs::Key key_of(const Node& node, const std::vector<std::int64_t>& inputs) {
  std::string encoded = std::to_string(node.param);
  for (std::int64_t v : inputs) encoded += "," + std::to_string(v);
  return cs::Key(node.task, "1", encoded);
}

// The work itself; it stands for a job run elsewhere, hence the sleep.
std::int64_t run(const Node& node, const std::vector<std::int64_t>& inputs) {
  std::this_thread::sleep_for(100ms);
  if (node.task == "load") return 10 * node.param;
  if (node.task == "square") return inputs.at(0) * inputs.at(0);
  std::int64_t sum = 0;
  for (std::int64_t v : inputs) sum += v;
  return sum;
}

// ---- one look at one task ----------------------------------------------------------------------

// The claim options of one attempt of one node of an execution.
cs::ClaimOptions claim_options(const std::string& execution, const std::string& node, int attempt) {
  cs::ClaimOptions options;
  options.owner = execution + "/" + node + "/" + std::to_string(attempt);  // same after a restart
  options.tag = node;               // in every event of the claim and of its hold
  options.heartbeat_interval = 1s;  // a dead run's reservations expire 3 s after its last beat
  return options;
}

// One look at one task in one round, never blocking. `run` is the work; `done` gets the output.
template <class Manager, class Pool>
cs::ClaimStatus look_once(const Manager& manager, const cs::Key& key,
                          const cs::ClaimOptions& options, Pool& pool,
                          std::function<std::int64_t()> run,
                          std::function<void(std::int64_t)> done) {
  auto r = manager.try_claim(key, options);  // one storage operation
  if (r.is_hit()) {
    done(r.template value<std::int64_t>());  // stored by anyone: by our dead run, too
  } else if (r.is_acquired()) {  // ours; after a restart: resumed, same token, no takeover
    auto hold = std::make_shared<typename Manager::hold_type>(std::move(r.hold()));
    pool.submit([hold, run, done] {  // heartbeated until stored
      const std::int64_t output = run();
      hold->store_value(output);  // fenced: rejected if the key was taken over meanwhile
      done(output);
    });
  } else {  // held by another owner: look again next round
    std::printf("task %s waits for %s until %s\n", options.tag.c_str(), r.holder().owner.c_str(),
                cs::format_time(r.holder().expires_at).c_str());
  }
  return r.status();
}

// ---- the engine --------------------------------------------------------------------------------

struct Report {
  std::map<std::string, std::int64_t> values;  // every node's output
  std::set<std::string> ran;                   // nodes whose work this run submitted
  std::set<std::string> resumed;               // ... of which: a dead run's reservation resumed
  cs::Stats stats;
};

// The fencing token of each node's latest reservation, from the manager's `acquired` events,
// which carry the claim's tag (the node id).
struct Tokens {
  void note(const cs::Event& e) {
    if (e.kind != cs::EventKind::acquired) return;
    std::lock_guard<std::mutex> lock(mu);
    by_node[std::string(e.tag)] = e.token;
  }
  std::uint64_t at(const std::string& node) {
    std::lock_guard<std::mutex> lock(mu);
    return by_node.at(node);
  }
  std::mutex mu;
  std::map<std::string, std::uint64_t> by_node;
};

class Engine {
 public:
  Engine(const std::string& dir, std::string execution, int crash_after)
      : manager_(manager_in(dir, tokens_)),
        execution_(std::move(execution)),
        crash_after_(crash_after) {}

  Report evaluate(const std::vector<Node>& nodes) {
    {
      Pool pool(2);
      while (done_count() < nodes.size()) {
        for (const Node& node : nodes) round_step(node, pool);
        std::unique_lock<std::mutex> lock(mu_);  // until a task finishes, or the next round
        finished_.wait_for(lock, 50ms);
      }
    }  // joins the pool
    report_.stats = manager_.stats();
    return report_;
  }

 private:
  // The owner id of one attempt of one node of this execution: the same after a restart.
  std::string owner_of(const std::string& node, int attempt) const {
    return execution_ + "/" + node + "/" + std::to_string(attempt);
  }

  // One look at one node, in one round: never blocks.
  void round_step(const Node& node, Pool& pool) {
    std::vector<std::int64_t> inputs;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (report_.values.count(node.id) || running_.count(node.id)) return;
      for (const std::string& dep : node.deps) {
        if (!report_.values.count(dep)) return;  // not ready yet
        inputs.push_back(report_.values[dep]);
      }
    }
    const cs::Key key = key_of(node, inputs);
    const cs::ClaimOptions options = claim_options(execution_, node.id, 1);
    const std::optional<cs::Reservation> before = manager_.holder(key);  // for the report only
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_.insert(node.id);  // unless the look below finds it held
    }
    const cs::ClaimStatus status = look_once(
        manager_, key, options, pool, [node, inputs] { return run(node, inputs); },
        [this, id = node.id](std::int64_t output) { finish(id, output); });

    std::lock_guard<std::mutex> lock(mu_);
    if (status == cs::ClaimStatus::held) running_.erase(node.id);
    if (status != cs::ClaimStatus::acquired) return;
    report_.ran.insert(node.id);
    const std::uint64_t token = tokens_->at(node.id);  // from the `acquired` event
    const bool resumed = before && before->owner == *options.owner && before->token == token;
    if (resumed) report_.resumed.insert(node.id);
    std::cout << "task " << node.id << (resumed ? " resumes its reservation" : " runs")
              << " (token " << token << ")" << std::endl;
    if (++claims_ == crash_after_) {
      std::cout << "crash after " << claims_ << " claims" << std::endl;
      std::_Exit(3);  // no destructors, no release: the reservations stay, heartbeats stop
    }
  }

  void finish(const std::string& node, std::int64_t value) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      report_.values[node] = value;
      running_.erase(node);
    }
    finished_.notify_all();
  }

  std::size_t done_count() {
    std::lock_guard<std::mutex> lock(mu_);
    return report_.values.size();
  }

  static Manager manager_in(const std::string& dir, const std::shared_ptr<Tokens>& tokens) {
    cs::FileSystemOptions fs;
    fs.root = dir;
    fs.durable = false;  // a throwaway directory
    cs::ManagerOptions options;
    options.listener = [tokens](const cs::Event& e) { tokens->note(e); };
    return Manager(cs::FileSystemStorage(fs), cs::SystemClock(), options);
  }

  std::shared_ptr<Tokens> tokens_ = std::make_shared<Tokens>();
  Manager manager_;
  const std::string execution_;
  const int crash_after_;
  int claims_ = 0;  // the round loop's thread only
  std::mutex mu_;
  std::condition_variable finished_;
  std::set<std::string> running_;
  Report report_;
};

Report run_engine(const std::string& dir, const std::string& execution, int crash_after) {
  Engine engine(dir, execution, crash_after);
  return engine.evaluate(workflow());
}

bool expect(bool ok, const std::string& what) {
  if (!ok) std::cerr << "FAILED: " << what << "\n";
  return ok;
}

// Without arguments: a run that dies after 4 claims, then its restart, both checked.
int both_phases() {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      ("cacheserialize-engine-rounds-" +
       std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::filesystem::create_directories(dir);
  const std::string execution = "exec-" + std::to_string(::getpid());

  std::cout << "== run 1 (" << execution << "): dies after 4 claims\n" << std::flush;
  const pid_t child = ::fork();  // before any thread of ours exists
  if (child == 0) {
    run_engine(dir.string(), execution, 4);
    std::_Exit(0);  // it should have crashed
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  bool ok = expect(WIFEXITED(status) && WEXITSTATUS(status) == 3, "the first run crashed");

  // Which nodes the first run finished: their outputs are stored (a look without the engine).
  std::cout << "== run 2 (" << execution << "): the restart\n";
  const Report report = run_engine(dir.string(), execution, 0);
  std::filesystem::remove_all(dir);

  ok &= expect(report.values.at("sum") == 100 + 400 + 900, "sum = 10^2 + 20^2 + 30^2");
  ok &= expect(report.ran.size() < 7, "finished tasks are not run again");
  ok &= expect(!report.resumed.empty(), "the dead run's reservations are resumed");
  ok &= expect(report.stats.takeovers == 0, "nothing waited for an expiry: no takeover");
  ok &= expect(report.stats.hits >= 1, "the first run's outputs are hits");
  std::cout << "run 2: ran " << report.ran.size() << " of 8 nodes (resumed "
            << report.resumed.size() << "), hits " << report.stats.hits << ", held "
            << report.stats.held << ", takeovers " << report.stats.takeovers << "; sum "
            << report.values.at("sum") << "; " << (ok ? "ok" : "FAILED") << "\n";
  return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 1) return both_phases();
  std::string dir;
  std::string execution;
  int crash_after = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string arg = argv[i];
    if (arg == "--dir") dir = argv[i + 1];
    if (arg == "--execution") execution = argv[i + 1];
    if (arg == "--crash-after") crash_after = std::atoi(argv[i + 1]);
  }
  if (dir.empty() || execution.empty()) {
    std::cerr << "usage: engine_rounds [--dir DIR --execution ID [--crash-after N]]\n";
    return 2;
  }
  const Report report = run_engine(dir, execution, crash_after);
  std::cout << "sum " << report.values.at("sum") << "; ran " << report.ran.size() << " nodes\n";
  return EXIT_SUCCESS;
}
