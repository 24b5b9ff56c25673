// main() of every benchmark binary, the closing table of ratios, and the helpers of common.hpp.

#include "common.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "../tests/server_support.hpp"
#if defined(__linux__)
#include <sys/syscall.h>
#endif
#if defined(__linux__) && defined(__GLIBC__)
#include <dlfcn.h>
#endif

#ifndef CACHESERIALIZE_BENCH_BUILD_TYPE
#define CACHESERIALIZE_BENCH_BUILD_TYPE "unknown"
#endif

namespace bench {
namespace {

bool g_quick = false;
std::atomic<long> g_threads_created{0};

std::vector<Comparison>& comparisons() {
  static std::vector<Comparison> all;
  return all;
}

std::vector<std::pair<std::string, std::function<void(std::int64_t)>>>& probes() {
  static std::vector<std::pair<std::string, std::function<void(std::int64_t)>>> all;
  return all;
}

}  // namespace

bool quick() { return g_quick; }

void compare(Comparison c) { comparisons().push_back(std::move(c)); }

namespace {
constexpr char kSkipped[] = "skipped: ";
}  // namespace

void skip(benchmark::State& state, const std::string& why) {
  state.SkipWithError((kSkipped + why).c_str());
}

void probe(std::string name, std::function<void(std::int64_t)> calls) {
  probes().emplace_back(std::move(name), std::move(calls));
}

}  // namespace bench

// ---- counting thread creations -------------------------------------------------------------
//
// The binary exports pthread_create (CMake ENABLE_EXPORTS), so that the dynamic linker binds
// libstdc++'s std::thread to this definition, which counts and forwards to the C library's.

#if defined(__linux__) && defined(__GLIBC__)
extern "C" int pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*),
                              void* arg) noexcept {
  using Create = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
  static const Create real = [] {
    void* symbol = dlsym(RTLD_NEXT, "pthread_create");
    Create f = nullptr;
    static_assert(sizeof f == sizeof symbol, "function and object pointers differ in size");
    std::memcpy(&f, &symbol, sizeof f);
    return f;
  }();
  if (real == nullptr) return EAGAIN;
  bench::g_threads_created.fetch_add(1, std::memory_order_relaxed);
  return real(thread, attr, start, arg);
}
#endif

namespace bench {

long threads_created() {
  // Proves once that the hook sees std::thread; otherwise the count means nothing.
  static const bool hooked = [] {
    const long before = g_threads_created.load();
    std::thread([] {}).join();
    return g_threads_created.load() > before;
  }();
  return hooked ? g_threads_created.load() : -1;
}

std::size_t thread_count() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoul(line.substr(8));
  }
  return 0;
}

double rss_mib() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size = 0;
  std::uint64_t resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

long current_tid() {
#if defined(__linux__)
  return static_cast<long>(::syscall(SYS_gettid));
#else
  return -1;
#endif
}

char thread_state(long tid) {
  std::ifstream stat("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string text;
  std::getline(stat, text);
  const std::size_t paren = text.rfind(')');  // the command name may hold spaces and parens
  if (paren == std::string::npos || paren + 2 >= text.size()) return '?';
  return text[paren + 2];
}

std::chrono::nanoseconds thread_cpu_time() { return thread_cpu_time(pthread_self()); }

std::chrono::nanoseconds thread_cpu_time(pthread_t thread) {
  clockid_t id;
  timespec ts{};
  if (pthread_getcpuclockid(thread, &id) != 0 || clock_gettime(id, &ts) != 0) {
    return std::chrono::nanoseconds(-1);
  }
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

double percentile(std::vector<double>& samples, double p) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  const double rank = std::ceil(p / 100.0 * static_cast<double>(samples.size()));
  const std::size_t i = rank < 1 ? 0 : static_cast<std::size_t>(rank) - 1;
  return samples[std::min(i, samples.size() - 1)];
}

KeyBytes::KeyBytes(const std::string& name, const std::string& interface,
                   const std::string& version, std::size_t inputs) {
  prefix_.append("CSK\x01", 4);  // cache_key.hpp, key format 1
  cs::Writer w(prefix_, cs::Writer::Mode::key);
  w.write_string(name);
  w.write_string(interface);
  w.write_string(version);
  w.write_uint(inputs);
}

namespace {

// ---- the closing table -----------------------------------------------------------------------

struct Cell {
  double median = 0;
  double cv = 0;  // stddev / mean over the repetitions
  std::size_t n = 0;
};

Cell summarise(std::vector<double> v) {
  Cell c;
  c.n = v.size();
  if (v.empty()) return c;
  double mean = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  double var = 0;
  for (double x : v) var += (x - mean) * (x - mean);
  c.cv = v.size() > 1 && mean != 0
             ? std::sqrt(var / static_cast<double>(v.size() - 1)) / std::abs(mean)
             : 0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  c.median = v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
  return c;
}

std::string format_number(double x) {
  std::ostringstream out;
  const double a = std::abs(x);
  if (a >= 100) {
    out << std::fixed << std::setprecision(0) << x;
  } else if (a >= 10) {
    out << std::fixed << std::setprecision(1) << x;
  } else if (a >= 0.1) {
    out << std::fixed << std::setprecision(2) << x;
  } else {
    out << std::setprecision(2) << x;
  }
  return out.str();
}

std::string format_time_ns(double ns) {
  if (ns >= 1e9) return format_number(ns / 1e9) + " s";
  if (ns >= 1e6) return format_number(ns / 1e6) + " ms";
  if (ns >= 1e3) return format_number(ns / 1e3) + " us";
  return format_number(ns) + " ns";
}

/// Displays Google Benchmark's usual console output (aggregates only, when repeated), keeps
/// every repetition's figures, and prints the comparison tables at the end.
class TableReporter : public benchmark::ConsoleReporter {
 public:
  TableReporter(std::string binary, bool color)
      : ConsoleReporter(color ? OO_ColorTabular : OO_Tabular), binary_(std::move(binary)) {}

  bool ReportContext(const Context& context) override {
    cpus_ = context.cpu_info.num_cpus;
    return ConsoleReporter::ReportContext(context);
  }

  void ReportRuns(const std::vector<Run>& runs) override {
    std::vector<Run> shown;
    for (const Run& run : runs) {
      if (run.run_type == Run::RT_Aggregate || run.repetitions <= 1) shown.push_back(run);
      const std::string& name = run.run_name.function_name;
      const std::size_t slash = name.rfind('/');
      if (slash == std::string::npos) continue;
      Key key{name.substr(0, slash), run.threads, name.substr(slash + 1)};
      if (!order_.count(key)) {
        order_.insert(key);
        sequence_.push_back(key);
        family_[key] = run.family_index;  // registration order, whatever order they ran in
      }
      if (run.run_type == Run::RT_Aggregate) {  // all we get with display_aggregates_only
        if (run.aggregate_name == "median" || run.aggregate_name == "cv") {
          aggregates_[key].emplace(run.aggregate_name, run);
        }
        continue;
      }
      if (run.error_occurred) {
        errors_[key] = run.error_message;
        const bool skipped = run.error_message.rfind(kSkipped, 0) == 0;
        if (!skipped || test::servers_required()) failed_ = true;  // CI: servers must run
        continue;
      }
      runs_[key].push_back(run);
    }
    if (!shown.empty()) ConsoleReporter::ReportRuns(shown);
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    std::ostream& out = GetOutputStream();
    out << "\n## " << binary_ << " (build type " << CACHESERIALIZE_BENCH_BUILD_TYPE << ", " << cpus_
        << " CPUs" << (quick() ? ", --quick: figures are not meaningful" : "") << ")\n";
    for (const Comparison& c : comparisons()) print(out, c);
  }

  bool failed() const noexcept { return failed_; }

 private:
  struct Key {
    std::string name;
    std::int64_t threads;
    std::string variant;
    bool operator<(const Key& o) const {
      return std::tie(name, threads, variant) < std::tie(o.name, o.threads, o.variant);
    }
  };

  // The CPU time per iteration, for `metric` kCpu: time the benchmark's threads spent running,
  // which load from other processes does not stretch as it stretches wall time.
  static constexpr const char* kCpu = "@cpu";

  static double metric_of(const Run& run, const std::string& metric, bool* found) {
    *found = true;
    if (metric.empty() || metric == kCpu) {
      const double seconds = metric.empty() ? run.real_accumulated_time : run.cpu_accumulated_time;
      return run.iterations > 0 ? seconds * 1e9 / static_cast<double>(run.iterations) : 0;
    }
    const auto it = run.counters.find(metric);
    if (it == run.counters.end()) {
      *found = false;
      return 0;
    }
    return it->second.value;
  }

  void print(std::ostream& out, const Comparison& c) {
    std::vector<Key> rows;
    std::set<std::int64_t> threads;
    for (const Key& k : sequence_) {
      if (k.name != c.name) continue;
      rows.push_back(k);
      threads.insert(k.threads);
    }
    if (rows.empty()) return;
    std::sort(rows.begin(), rows.end(), [&](const Key& a, const Key& b) {
      return std::tie(a.threads, family_[a]) < std::tie(b.threads, family_[b]);
    });
    const bool timed = c.metric.empty();  // wall and CPU time per call, else one counter
    const std::string x = "x " + c.baseline;
    out << "\n### " << c.name << " vs " << c.baseline;
    if (!c.target.empty()) out << "; target: " << c.target;
    out << "\n\n| threads | variant | " << (timed ? "wall/op" : c.metric) << " | cv | " << x << " |"
        << (timed ? " cpu/op | cv | " + x + " (cpu) |" : "");
    for (const std::string& a : c.also) out << " " << a << " |";
    out << (c.target.empty() ? "" : " target met |") << "\n|---:|---|---:|---:|---:|"
        << (timed ? "---:|---:|---:|" : "");
    for (std::size_t i = 0; i < c.also.size(); ++i) out << "---:|";
    out << (c.target.empty() ? "" : "---|") << "\n";
    std::map<Key, Cell> wall;
    std::map<Key, Cell> cpu;
    for (const Key& k : rows) {
      wall[k] = cell(k, c.metric);
      if (timed) cpu[k] = cell(k, kCpu);
    }
    for (std::int64_t t : threads) {
      const Key base{c.name, t, c.baseline};
      for (const Key& k : rows) {
        if (k.threads != t) continue;
        out << "| " << t << " | " << k.variant << " |";
        if (errors_.count(k)) {
          out << " " << errors_[k] << " |\n";
          continue;
        }
        double ratio = 0;
        print_cell(out, wall, k, base, timed, &ratio);
        if (timed) print_cell(out, cpu, k, base, timed, &ratio);  // the verdict uses CPU time
        for (const std::string& a : c.also) {
          const Cell extra = cell(k, a);
          out << " " << (extra.n > 0 ? format_number(extra.median) : "-") << " |";
        }
        if (!c.target.empty()) {
          std::string verdict;
          if (k.variant == "cacheserialize" && t == 1 && c.max_ratio > 0 && ratio > 0) {
            verdict = ratio <= c.max_ratio ? "yes" : "**no**";
          }
          if (k.variant == "cacheserialize" && c.max_value > 0) {
            verdict = wall[k].median <= c.max_value ? "yes" : "**no**";
          }
          out << " " << verdict << " |";
        }
        out << "\n";
      }
    }
    if (c.scaling && threads.size() > 1) print_scaling(out, c, rows, wall, threads);
  }

  // "| median | cv | ratio |", and the ratio to the baseline's median (0 if there is none).
  static void print_cell(std::ostream& out, std::map<Key, Cell>& cells, const Key& k,
                         const Key& base, bool timed, double* ratio) {
    const Cell& v = cells[k];
    const bool have_base = cells.count(base) && cells[base].n > 0 && cells[base].median != 0;
    *ratio = have_base ? v.median / cells[base].median : 0;
    out << " " << (timed ? format_time_ns(v.median) : format_number(v.median)) << " | "
        << format_number(v.cv * 100) << "% | " << (have_base ? format_number(*ratio) + "x" : "-")
        << " |";
  }

  void print_scaling(std::ostream& out, const Comparison& c, const std::vector<Key>& rows,
                     std::map<Key, Cell>& cells, const std::set<std::int64_t>& threads) {
    out << "\nThroughput of " << c.name
        << " (calls per second of wall time, all threads together), relative to the same variant "
           "at 1 thread ("
        << cpus_ << " CPUs: at most " << cpus_ << "x is possible):\n\n| variant |";
    for (std::int64_t t : threads) out << " " << t << " thr |";
    out << "\n|---|";
    for (std::size_t i = 0; i < threads.size(); ++i) out << "---:|";
    out << "\n";
    std::vector<std::string> variants;
    for (const Key& k : rows) {
      if (std::find(variants.begin(), variants.end(), k.variant) == variants.end()) {
        variants.push_back(k.variant);
      }
    }
    for (const std::string& v : variants) {
      const Key one{c.name, 1, v};
      out << "| " << v << " |";
      for (std::int64_t t : threads) {
        const Key k{c.name, t, v};
        const bool ok = cells.count(one) && cells.count(k) && cells[k].median > 0;
        out << " " << (ok ? format_number(cells[one].median / cells[k].median) + "x" : "-") << " |";
      }
      out << "\n";
    }
  }

  Cell cell(const Key& k, const std::string& metric) {
    std::vector<double> values;
    for (const Run& run : runs_[k]) {
      bool found = false;
      const double v = metric_of(run, metric, &found);
      if (found) values.push_back(v);
    }
    if (!values.empty() || !aggregates_[k].count("median")) return summarise(values);
    // Only Google Benchmark's aggregates were reported: use its median and cv.
    Cell c;
    const Run& median = aggregates_[k].at("median");
    bool found = false;
    c.median = metric_of(median, metric, &found);
    c.n = found ? static_cast<std::size_t>(median.repetitions) : 0;
    if (aggregates_[k].count("cv")) {
      const Run& cv = aggregates_[k].at("cv");
      if (metric.empty()) {
        c.cv = cv.real_accumulated_time;
      } else if (cv.counters.count(metric)) {
        c.cv = cv.counters.at(metric).value;
      }
    }
    return c;
  }

  std::string binary_;
  int cpus_ = 0;
  bool failed_ = false;
  std::set<Key> order_;
  std::vector<Key> sequence_;
  std::map<Key, std::string> errors_;
  std::map<Key, std::vector<Run>> runs_;
  std::map<Key, std::map<std::string, Run>> aggregates_;
  std::map<Key, std::int64_t> family_;
};

}  // namespace
}  // namespace bench

// What callgrind counts: only the calls made in here (--toggle-collect).
extern "C" __attribute__((noinline)) void cacheserialize_bench_probe(
    const std::function<void(std::int64_t)>& calls, std::int64_t n) {
  calls(n);
}

namespace {

constexpr std::int64_t kProbeCalls = 100000;

// --list_probes, or --probe=NAME: n calls of that probe after a warm-up, for callgrind.
int run_probe(const std::string& arg) {
  for (const auto& p : bench::probes()) {
    if (arg == "--list_probes") {
      std::printf("%s\n", p.first.c_str());
    } else if (arg == "--probe=" + p.first) {
      p.second(1000);  // warm-up: first-use allocations, lazily built worlds
      cacheserialize_bench_probe(p.second, kProbeCalls);
      std::printf("probe %s: %lld calls\n", p.first.c_str(), static_cast<long long>(kProbeCalls));
      return 0;
    }
  }
  if (arg == "--list_probes") return 0;
  std::fprintf(stderr, "no such probe: %s (see --list_probes)\n", arg.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // --quick (CI): each benchmark once, briefly. It is ours, so it is taken out before Google
  // Benchmark parses the rest; libbenchmark 1.7 takes the minimum time as plain seconds.
  std::vector<char*> args;
  static char min_time[] = "--benchmark_min_time=0.01";
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      bench::g_quick = true;
      args.push_back(min_time);
    } else {
      args.push_back(argv[i]);
    }
  }
  bench::register_benchmarks();
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--list_probes" || arg.rfind("--probe=", 0) == 0) return run_probe(arg);
  }
  args.push_back(nullptr);
  int n = static_cast<int>(args.size()) - 1;
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  std::string binary = argv[0];
  binary = binary.substr(binary.rfind('/') == std::string::npos ? 0 : binary.rfind('/') + 1);
  bool color = isatty(STDOUT_FILENO) != 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--benchmark_color=false" || arg == "--benchmark_color=no") color = false;
  }
  bench::TableReporter reporter(binary, color);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  if (reporter.failed()) {
    std::fprintf(stderr, "%s: a benchmark reported an error (see the table)\n", binary.c_str());
    return 1;
  }
  return 0;
}
