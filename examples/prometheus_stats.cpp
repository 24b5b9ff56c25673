// Exports a manager's counters and gauges, and an InMemoryStorage's, in the Prometheus text
// exposition format: what a /metrics endpoint serves, or a file for node_exporter's textfile
// collector. Run without arguments it prints the metrics and checks them; with a path it also
// writes them there (to a temporary file renamed into place, so a scrape never reads half).

#include <cacheserialize/cacheserialize.hpp>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace cs = cacheserialize;

// One metric: `# HELP`, `# TYPE` and its sample. Counters end in `_total`, as Prometheus expects.
void write_metric(std::ostream& out, const std::string& name, const char* type, const char* help,
                  std::uint64_t value) {
  out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n'
      << name << ' ' << value << '\n';
}

// A manager's Stats: its counters (since the manager was made) and its two gauges (now).
void write_prometheus(std::ostream& out, const cs::Stats& s) {
  struct Counter {
    const char* name;
    std::uint64_t cs::Stats::*field;
    const char* help;
  };
  static const Counter counters[] = {
      {"hits", &cs::Stats::hits, "Calls answered from the cache."},
      {"misses", &cs::Stats::misses, "Calls that found no output on their first look."},
      {"executions", &cs::Stats::executions, "Reservations acquired to run the function."},
      {"waits", &cs::Stats::waits, "Calls that waited for another holder at least once."},
      {"takeovers", &cs::Stats::takeovers, "Acquisitions of another owner's expired reservation."},
      {"failures", &cs::Stats::failures, "Holders that released without an output."},
      {"lost", &cs::Stats::lost, "Reservations found lost by a heartbeat or a rejected store."},
      {"heartbeats", &cs::Stats::heartbeats, "Successful reservation extensions."},
      {"heartbeat_failures", &cs::Stats::heartbeat_failures,
       "Extensions that could not reach the storage."},
      {"heartbeat_batches", &cs::Stats::heartbeat_batches,
       "Storage calls the heartbeat made to extend reservations."},
      {"store_failures", &cs::Stats::store_failures,
       "Outputs that could not be encoded or stored."},
      {"corrupt_outputs", &cs::Stats::corrupt_outputs, "Stored outputs that could not be decoded."},
      {"held", &cs::Stats::held, "try_claim calls that found the key held by another owner."},
      {"adoptions", &cs::Stats::adoptions, "Handed-on reservations taken over by adopt."},
      {"detached", &cs::Stats::detached, "Holds handed on unreleased by detach."},
      {"abandoned", &cs::Stats::abandoned, "Holds released because alive() said false."},
      {"aborted", &cs::Stats::aborted, "Holds released as aborted (cancelled, not failed)."},
  };
  for (const Counter& c : counters) {
    write_metric(out, std::string("cacheserialize_") + c.name + "_total", "counter", c.help,
                 s.*c.field);
  }
  write_metric(out, "cacheserialize_holds_active", "gauge",
               "Holds not yet stored, released or detached.", s.holds_active);
  write_metric(out, "cacheserialize_waiters_active", "gauge", "Claims waiting for a holder now.",
               s.waiters_active);
}

// An InMemoryStorage's own figures: evictions are counted by the store, never by the manager.
void write_prometheus(std::ostream& out, const cs::InMemoryStats& m) {
  write_metric(out, "cacheserialize_memory_entries", "gauge", "Outputs stored now.", m.entries);
  write_metric(out, "cacheserialize_memory_bytes", "gauge", "Charged bytes of the outputs stored.",
               m.bytes);
  write_metric(out, "cacheserialize_memory_evictions_total", "counter",
               "Outputs evicted to respect the bounds.", m.evictions);
  write_metric(out, "cacheserialize_memory_expirations_total", "counter",
               "Outputs removed by expire_after_write.", m.expirations);
  write_metric(out, "cacheserialize_memory_rejections_total", "counter",
               "Outputs refused: heavier than max_bytes, or the weigher threw.", m.rejections);
}

int main(int argc, char** argv) {
  cs::InMemoryOptions bounds;
  bounds.max_entries = 2;  // small, so that the demo evicts
  cs::InMemoryStorage storage(bounds);
  cs::ReservationManager<> manager(storage);
  auto square =
      cs::serialize_cached([](int n) { return n * n; }, cs::TaskOptions{"square", "1"}, manager);

  std::vector<std::thread> callers;  // four callers of one key: one runs, the rest reuse it
  for (int i = 0; i < 4; ++i) callers.emplace_back([&square] { square(2); });
  for (auto& t : callers) t.join();
  square(3);
  square(4);  // a third output in a store of two: one is evicted

  std::ostringstream text;
  write_prometheus(text, manager.stats());
  write_prometheus(text, storage.stats());
  std::cout << text.str();

  if (argc > 1) {
    const std::string path = argv[1];
    const std::string temporary = path + ".tmp";
    std::ofstream(temporary) << text.str();
    if (std::rename(temporary.c_str(), path.c_str()) != 0) return 1;
  }

  // Three keys: three executions, whatever the threads' timing (which splits hits and misses).
  const std::string t = "\n" + text.str();
  const auto has = [&t](const char* line) { return t.find(line) != std::string::npos; };
  const bool ok =
      has("\ncacheserialize_executions_total 3\n") &&
      has("\n# TYPE cacheserialize_executions_total counter\n") &&
      has("\n# TYPE cacheserialize_holds_active gauge\ncacheserialize_holds_active 0\n") &&
      has("\ncacheserialize_memory_entries 2\n") &&
      has("\ncacheserialize_memory_evictions_total 1\n");
  return ok ? 0 : 1;
}
