#pragma once

// The engine restart scenario (issue 11), run against a shared storage by each storage's
// process tests: an engine process (engine_task.hpp, in the storage's worker program) claims
// keys as chosen owners and is SIGKILLed while "its work runs elsewhere"; restarted with the
// same owner ids, it must get every reservation back before it expires (same tokens, no
// takeover), while another engine (this test process, with a manager and storage handle of its
// own) waits on the same keys with blocking claims: it must neither take them over nor run
// them, and must end with hits carrying the resumed engine's outputs. Each body runs once.
//
// Real processes run on the wall clock: reservations live 1 s (heartbeat 200 ms x 5), and the
// test waits by bounded polling of files the processes write.

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "engine_task.hpp"
#include "support.hpp"

namespace test {

/// A running engine process: the test kills the first and waits for the second.
class EngineProcess {
 public:
  virtual ~EngineProcess() = default;
  virtual void kill9() = 0;  ///< SIGKILL, then reap
  /// @return the exit code, or -1 if it did not end within the bound.
  virtual int wait_exit() = 0;
};

/// Starts the worker's engine mode: (phase, report file, log file) -> the process.
using SpawnEngine = std::function<std::unique_ptr<EngineProcess>(
    const std::string& phase, const std::string& report, const std::string& log)>;

struct EngineRestartSettings {
  int keys = 6;
  std::chrono::milliseconds heartbeat{200};  // the workers' reservations: 200 ms x 5 = 1 s
  double grace = 5;
  std::chrono::milliseconds work{1200};  // the resumed engine keeps them longer than that
  cs::Duration poll = std::chrono::milliseconds(20);  // the waiter's, for storages that poll
};

/// A directory under /tmp for the reports and the log, removed with them.
class ScratchDir {
 public:
  ScratchDir() {
    char templ[] = "/tmp/cacheserialize-engine-XXXXXX";
    if (::mkdtemp(templ) == nullptr) throw std::runtime_error("cannot create a scratch dir");
    path_ = templ;
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    for (const auto& f : files_) std::remove(f.c_str());
    ::rmdir(path_.c_str());
  }
  std::string file(const std::string& name) {
    files_.push_back(path_ + "/" + name);
    return files_.back();
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

inline std::vector<std::string> lines_in(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

/// @return the value of "name=value" among the space-separated words of `line`, or "".
inline std::string word_value(const std::string& line, const std::string& name) {
  std::istringstream in(line);
  for (std::string w; in >> w;) {
    if (w.rfind(name + "=", 0) == 0) return w.substr(name.size() + 1);
  }
  return {};
}

/// One report line "<what> <i> <status> ...", parsed.
struct ReportLine {
  int key = -1;
  std::string status;
  std::uint64_t token = 0;
  std::string took_over;
  std::int64_t at = 0;
  std::int64_t expires = 0;
};

inline std::map<int, ReportLine> report_lines(const std::string& report, const std::string& what) {
  std::map<int, ReportLine> out;
  for (const auto& line : lines_in(report)) {
    std::istringstream in(line);
    std::string w;
    ReportLine r;
    if (!(in >> w) || w != what || !(in >> r.key >> r.status)) continue;
    const std::string token = word_value(line, "token");
    if (!token.empty()) r.token = std::stoull(token);
    r.took_over = word_value(line, "took_over");
    const std::string at = word_value(line, "at");
    if (!at.empty()) r.at = std::stoll(at);
    const std::string expires = word_value(line, "expires");
    if (!expires.empty()) r.expires = std::stoll(expires);
    out[r.key] = r;
  }
  return out;
}

inline std::int64_t field_of_line(const std::string& report, const std::string& first_word,
                                  const std::string& name) {
  for (const auto& line : lines_in(report)) {
    if (line.rfind(first_word + " ", 0) == 0) {
      const std::string v = word_value(line, name);
      return v.empty() ? -1 : std::stoll(v);
    }
  }
  return -1;
}

inline double ms_between(std::int64_t from_ns, std::int64_t to_ns) {
  return static_cast<double>(to_ns - from_ns) / 1e6;
}

/// The scenario. `storage` is the waiting engine's own handle on the store the workers use.
template <class Storage>
void check_engine_restart(const std::string& name, Storage storage, const SpawnEngine& spawn,
                          EngineRestartSettings s = {}) {
  ScratchDir dir;
  const std::string claim_report = dir.file("claim.report");
  const std::string resume_report = dir.file("resume.report");
  const std::string log = dir.file("bodies.log");
  const std::size_t n = static_cast<std::size_t>(s.keys);

  // The engine claims every key, then "its work runs elsewhere".
  std::unique_ptr<EngineProcess> first = spawn("claim", claim_report, log);
  REQUIRE(eventually([&] { return field_of_line(claim_report, "ready", "at") > 0; }));
  const auto claimed = report_lines(claim_report, "claimed");
  REQUIRE(claimed.size() == n);
  for (const auto& [i, c] : claimed) {
    INFO("key " << i);
    REQUIRE(c.status == "acquired");
    REQUIRE(c.token > 0);
  }

  // Another engine waits on the same keys, in blocking claims: it runs a body only if it
  // acquires, which it must never do.
  Recorder events;
  cs::ManagerOptions mo;
  mo.heartbeat_interval = s.heartbeat;
  mo.grace_multiplier = s.grace;
  mo.listener = events.listener();
  using Waiter = cs::ReservationManager<cs::SystemClock, Storage>;
  const Waiter waiter(storage, cs::SystemClock(), mo);
  std::mutex mu;
  std::map<int, std::string> outcome;  // per key: "hit <value>", "acquired" or "error ..."
  Threads threads;
  for (int i = 0; i < s.keys; ++i) {
    threads.spawn([&, i] {
      std::string what;
      try {
        cs::ClaimOptions o;
        o.poll_interval = s.poll;
        o.wait_timeout = std::chrono::seconds(20);
        auto claim = waiter.claim(engine_task::key(i), o);
        if (claim.is_hit()) {
          what = "hit " + claim.template value<std::string>();
        } else {
          engine_task::append_line(log, std::to_string(i));  // the body runs here: a failure
          claim.hold().store_value(std::string("the waiter's output"));
          what = "acquired";
        }
      } catch (const std::exception& e) {
        what = std::string("error ") + e.what();
      }
      std::lock_guard<std::mutex> lock(mu);
      outcome[i] = what;
    });
  }
  REQUIRE(eventually([&] { return waiter.stats().waiters_active == n; }));

  // The first engine's heartbeat carries its reservations on; then it dies without warning.
  REQUIRE(eventually([&] {
    const auto r = waiter.holder(engine_task::key(0));
    return r && cs::to_unix_nanos(r->expires_at) > claimed.at(0).expires;
  }));
  const std::int64_t killed_at = engine_task::wall_ns();
  first->kill9();
  std::map<int, std::int64_t> expiry;  // nobody extends them any more
  std::int64_t earliest = INT64_MAX;
  for (int i = 0; i < s.keys; ++i) {
    const auto r = waiter.holder(engine_task::key(i));
    INFO("key " << i);
    REQUIRE(r);
    CHECK(r->owner == engine_task::owner(i));
    CHECK(r->token == claimed.at(i).token);
    expiry[i] = cs::to_unix_nanos(r->expires_at);
    earliest = std::min(earliest, expiry[i]);
  }
  CHECK(earliest > killed_at);  // alive when the engine died

  // Restarted with the same owner ids, it resumes every reservation before it expires.
  const std::int64_t restarted_at = engine_task::wall_ns();
  std::unique_ptr<EngineProcess> second = spawn("resume", resume_report, log);
  const int status = second->wait_exit();
  INFO("resume report:\n"
       << [&] {
            std::string all;
            for (const auto& l : lines_in(resume_report)) all += l + "\n";
            return all;
          }());
  CHECK(status == 0);
  const auto resumed = report_lines(resume_report, "resumed");
  REQUIRE(resumed.size() == n);
  std::int64_t last_resumed = 0;
  std::int64_t first_resumed = INT64_MAX;
  for (const auto& [i, r] : resumed) {
    INFO("key " << i);
    CHECK(r.status == "acquired");
    CHECK(r.token == claimed.at(i).token);
    CHECK(r.took_over == "0");
    CHECK(r.at < expiry.at(i));
    last_resumed = std::max(last_resumed, r.at);
    first_resumed = std::min(first_resumed, r.at);
  }
  const auto stored = report_lines(resume_report, "stored");
  CHECK(stored.size() == n);
  for (const auto& [i, r] : stored) {
    INFO("key " << i);
    CHECK(r.status == "stored");
  }
  CHECK(field_of_line(resume_report, "stats", "takeovers") == 0);
  CHECK(field_of_line(resume_report, "stats", "lost") == 0);
  CHECK(field_of_line(resume_report, "stats", "heartbeats") > 0);  // it kept them past 1 s

  // The waiting engine took nothing over, ran nothing, and got the resumed engine's outputs.
  threads.join();
  for (int i = 0; i < s.keys; ++i) {
    INFO("key " << i);
    CHECK(outcome[i] == "hit " + engine_task::output(i));
  }
  const cs::Stats ws = waiter.stats();
  CHECK(ws.executions == 0);
  CHECK(ws.takeovers == 0);
  CHECK(ws.hits == n);
  CHECK(ws.waits == n);
  CHECK(events.count(cs::EventKind::took_over) == 0);
  CHECK(events.count(cs::EventKind::acquired) == 0);

  // Each body ran once: by the resumed engine.
  std::map<int, int> runs;
  for (const auto& line : lines_in(log)) ++runs[std::stoi(line)];
  CHECK(runs.size() == n);
  for (const auto& [i, count] : runs) {
    INFO("key " << i);
    CHECK(count == 1);
  }

  char line[512];
  std::snprintf(line, sizeof line,
                "[%s] engine restart: %d reservations of %lld ms; SIGKILL -> restarted process "
                "had the first back after %.1f ms and all after %.1f ms (same tokens, no "
                "takeover), %.1f ms before the earliest expiry; process start to all resumed "
                "%.1f ms; the waiting engine: %llu hits, 0 runs, 0 takeovers; each body ran once",
                name.c_str(), s.keys,
                static_cast<long long>(s.heartbeat.count() * static_cast<long long>(s.grace)),
                ms_between(killed_at, first_resumed), ms_between(killed_at, last_resumed),
                ms_between(last_resumed, earliest), ms_between(restarted_at, last_resumed),
                static_cast<unsigned long long>(ws.hits));
  std::printf("%s\n", line);
}

}  // namespace test
