// Several processes share one Redis: N worker processes x M threads x K keys, each body runs
// exactly once; and the redis_workers example, run three times at once.

#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "../engine_restart.hpp"
#include "redis_server.hpp"
#include "worker_tasks.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

// @return the sum of "executions=<n>" over `outputs`, or -1 if one lacks it.
long executions_in(const std::vector<std::string>& outputs) {
  const std::regex pattern("executions=([0-9]+)");
  long total = 0;
  for (const std::string& out : outputs) {
    std::smatch m;
    if (!std::regex_search(out, m, pattern)) return -1;
    total += std::stol(m[1]);
  }
  return total;
}

// Reads each child's output until it exits; checks that each exited with status 0.
std::vector<std::string> finish(const std::vector<std::unique_ptr<test::Child>>& children) {
  std::vector<std::string> outputs;
  for (const auto& child : children) {
    outputs.push_back(child->read_all());
    const std::optional<int> status = child->wait();
    REQUIRE(status);
    INFO(outputs.back());
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 0);
  }
  return outputs;
}

}  // namespace

TEST_CASE("N processes x M threads x K keys: each body runs exactly once") {
  constexpr int kProcesses = 3;
  constexpr int kThreads = 4;
  constexpr int kKeys = 12;
  const cs::RedisOptions options = test::fresh_options();
  char dir_template[] = "/tmp/csredis-log-XXXXXX";
  REQUIRE(::mkdtemp(dir_template));
  const std::string log = std::string(dir_template) + "/bodies.log";

  std::vector<std::unique_ptr<test::Child>> workers;
  for (int p = 0; p < kProcesses; ++p) {
    workers.push_back(std::make_unique<test::Child>(std::vector<std::string>{
        CACHESERIALIZE_REDIS_WORKER, "race", std::to_string(options.port), options.key_prefix, log,
        std::to_string(kThreads), std::to_string(kKeys), "20"}));
  }
  for (auto& w : workers) w->close_stdin();                  // start: all at once
  const std::vector<std::string> outputs = finish(workers);  // each checked its outputs

  std::map<int, int> runs;
  std::ifstream in(log);
  for (std::string line; std::getline(in, line);) ++runs[std::stoi(line)];
  std::remove(log.c_str());
  ::rmdir(dir_template);
  CHECK(runs.size() == static_cast<std::size_t>(kKeys));
  for (const auto& kv : runs) {
    INFO("key " << kv.first);
    CHECK(kv.second == 1);
  }
  CHECK(executions_in(outputs) == kKeys);

  cs::RedisStorage storage(options);
  auto task = cs::serialize_cached([](int) -> std::string { throw std::logic_error("ran"); },
                                   test::race_task(), storage);
  for (int k = 0; k < kKeys; ++k) CHECK(task(k) == test::race_output(k));  // all stored
}

TEST_CASE(
    "an engine process SIGKILLed while its work runs elsewhere resumes its reservations when "
    "restarted, and a waiting engine neither takes them over nor runs them") {
  const cs::RedisOptions options = test::fresh_options();
  struct Engine : test::EngineProcess {
    explicit Engine(const std::vector<std::string>& args) : child(args) {}
    void kill9() override {
      child.kill(SIGKILL);
      child.wait();
    }
    int wait_exit() override {
      const std::optional<int> status = child.wait();
      if (!status) return -1;
      return WIFEXITED(*status) ? WEXITSTATUS(*status) : 128 + WTERMSIG(*status);
    }
    test::Child child;
  };
  const test::EngineRestartSettings settings;
  test::check_engine_restart(
      "redis", cs::RedisStorage(options),
      [&](const std::string& phase, const std::string& report, const std::string& log) {
        return std::make_unique<Engine>(std::vector<std::string>{
            CACHESERIALIZE_REDIS_WORKER, "engine", phase, std::to_string(options.port),
            options.key_prefix, report, log, std::to_string(settings.keys),
            std::to_string(settings.heartbeat.count()),
            std::to_string(static_cast<int>(settings.grace)),
            std::to_string(settings.work.count())});
      },
      settings);
}

#ifdef CACHESERIALIZE_REDIS_EXAMPLE
TEST_CASE("The redis_workers example, run three times at once, computes each report once") {
  const cs::RedisOptions options = test::fresh_options();
  std::vector<std::unique_ptr<test::Child>> runs;
  for (int i = 0; i < 3; ++i) {
    runs.push_back(std::make_unique<test::Child>(std::vector<std::string>{
        CACHESERIALIZE_REDIS_EXAMPLE, "--port", std::to_string(options.port), "--prefix",
        options.key_prefix, "--days", "6", "--threads", "3"}));
  }
  const std::vector<std::string> outputs = finish(runs);
  CHECK(executions_in(outputs) == 6);
}
#endif
