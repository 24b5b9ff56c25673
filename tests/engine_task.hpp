#pragma once

// The engine of the restart tests (issue 11), shared by the worker programs of every storage
// (fs_worker, redis_worker, the PostgreSQL worker) and by the tests that drive them: its keys,
// its owner ids, its outputs, and the two phases of one engine process.
//
//   claim:  try_claims every key as owner "engine-1:task-<i>", reports each outcome, then blocks
//           while "the work runs elsewhere", its heartbeat keeping the reservations alive. The
//           test SIGKILLs it there.
//   resume: the restarted process: try_claims every key again as the same owners (it must get
//           each back at once: acquired, same token, no takeover), keeps them for --work-ms
//           (longer than a reservation lives: only its heartbeat keeps them), then runs each
//           body: appends "<i>" to the log, stores the output.
//
// Reports go to a file of their own (one line per event, one write(2) each):
//   claimed <i> <status> token=<t> expires=<unix ns>
//   ready at=<unix ns>
//   resumed <i> <status> token=<t> took_over=<0|1> at=<unix ns>
//   resumed-all at=<unix ns>
//   stored <i> <stored|rejected>
//   stats executions=<n> takeovers=<n> held=<n> lost=<n> heartbeats=<n>

#include <fcntl.h>
#include <unistd.h>

#include <cacheserialize/cacheserialize.hpp>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace engine_task {

namespace cs = cacheserialize;

inline cs::Key key(int i) { return cs::Key("engine", "1", "task-" + std::to_string(i)); }
inline std::string owner(int i) { return "engine-1:task-" + std::to_string(i); }
inline std::string output(int i) { return "output of task " + std::to_string(i); }

inline std::int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Appends one line to `path` with one write(2) (O_APPEND: lines of processes never mix).
inline void append_line(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  const std::string text = line + "\n";
  const bool ok =
      fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  if (fd >= 0) ::close(fd);
  if (!ok) throw std::runtime_error("engine: cannot append to " + path);
}

inline const char* name_of(cs::ClaimStatus s) {
  switch (s) {
    case cs::ClaimStatus::hit:
      return "hit";
    case cs::ClaimStatus::acquired:
      return "acquired";
    case cs::ClaimStatus::held:
      return "held";
    case cs::ClaimStatus::free:
      return "free";
  }
  return "unknown";
}

struct Settings {
  std::string phase;   // claim or resume
  std::string report;  // the report file
  std::string log;     // the body log
  int keys = 4;
  std::chrono::milliseconds heartbeat{200};
  double grace = 5;
  std::chrono::milliseconds work{0};  // resume: how long the work takes before the stores
};

/// Runs one phase of the engine over `storage`.
/// @return the exit code: 0 if every key was acquired (and, resuming, resumed with no takeover
///         and stored); 2 otherwise. The claim phase never returns: it is killed.
template <class Storage>
int run(Storage storage, const Settings& s) {
  using Manager = cs::ReservationManager<cs::SystemClock, Storage>;
  cs::ManagerOptions mo;
  mo.heartbeat_interval = s.heartbeat;
  mo.grace_multiplier = s.grace;
  const Manager manager(std::move(storage), cs::SystemClock(), mo);
  const bool resume = s.phase == "resume";
  if (!resume && s.phase != "claim")
    throw std::invalid_argument("engine: unknown phase " + s.phase);
  std::vector<std::optional<typename Manager::hold_type>> holds(static_cast<std::size_t>(s.keys));
  bool ok = true;
  for (int i = 0; i < s.keys; ++i) {
    cs::ClaimOptions o;
    o.owner = owner(i);
    o.tag = "engine-1";
    auto r = manager.try_claim(key(i), o);
    std::string line = std::string(resume ? "resumed " : "claimed ") + std::to_string(i) + " " +
                       name_of(r.status());
    if (r.is_acquired()) {
      auto& hold = holds[static_cast<std::size_t>(i)];
      hold.emplace(std::move(r.hold()));
      line += " token=" + std::to_string(hold->reservation().token);
      if (resume) {
        line += " took_over=" + std::string(hold->took_over() ? "1" : "0");
        ok = ok && !hold->took_over();
      } else {
        line += " expires=" + std::to_string(cs::to_unix_nanos(hold->reservation().expires_at));
      }
    } else {
      ok = false;
    }
    if (resume) line += " at=" + std::to_string(wall_ns());
    append_line(s.report, line);
  }
  if (!resume) {
    append_line(s.report, "ready at=" + std::to_string(wall_ns()));
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // the work runs elsewhere
  }
  append_line(s.report, "resumed-all at=" + std::to_string(wall_ns()));
  std::this_thread::sleep_for(s.work);  // the work finishes elsewhere; the heartbeat keeps on
  for (int i = 0; i < s.keys; ++i) {
    auto& hold = holds[static_cast<std::size_t>(i)];
    if (!hold) continue;
    append_line(s.log, std::to_string(i));  // the body "runs"
    const cs::StoreStatus st = hold->store_value(output(i));
    ok = ok && st == cs::StoreStatus::stored;
    append_line(s.report, "stored " + std::to_string(i) + " " +
                              (st == cs::StoreStatus::stored ? "stored" : "rejected"));
  }
  const cs::Stats st = manager.stats();
  append_line(s.report, "stats executions=" + std::to_string(st.executions) + " takeovers=" +
                            std::to_string(st.takeovers) + " held=" + std::to_string(st.held) +
                            " lost=" + std::to_string(st.lost) +
                            " heartbeats=" + std::to_string(st.heartbeats));
  return ok && st.lost == 0 && st.takeovers == 0 ? 0 : 2;
}

}  // namespace engine_task
