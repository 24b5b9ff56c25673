// FileSystemStorage against the file operations it cannot do without: a hit against reading a
// file of the same size (open, read, close), a miss against writing a file and renaming it into
// place (with fsync of the file and its directory when durable, as a crash-safe store must), an
// extension against rewriting a file of the reservation record's size.
//
// The storage's root is a fresh directory under TMPDIR (else /tmp), removed at exit: the
// figures are those of that file system.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cacheserialize/storage/filesystem.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>

#include "storage_bench.hpp"

namespace {

namespace cs = cacheserialize;
namespace fs = std::filesystem;
using Cached = bench::CachedPayload<cs::FileSystemStorage>;

[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw std::runtime_error(what + " " + path + ": " + std::strerror(errno));
}

/// A fresh directory, removed with everything in it at destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "cacheserialize-bench-fs-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) fail("mkdtemp", pattern);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

std::string make_dir(const std::string& path) {
  fs::create_directories(path);
  return path;
}

cs::FileSystemStorage storage_in(const std::string& root, bool durable) {
  cs::FileSystemOptions o;
  o.root = make_dir(root);
  o.durable = durable;
  return cs::FileSystemStorage(o);
}

/// The storages (durable and not) and the baselines' directory, in one temporary directory.
struct World {
  World()
      : durable(storage_in(dir.path() + "/durable", true)),
        lazy(storage_in(dir.path() + "/not_durable", false)),
        durable_fn(cs::serialize_cached(
            bench::Payload{}, cs::TaskOptions{"payload", "1"},
            cs::ReservationManager<cs::SystemClock, cs::FileSystemStorage>(durable))),
        lazy_fn(cs::serialize_cached(
            bench::Payload{}, cs::TaskOptions{"payload", "1"},
            cs::ReservationManager<cs::SystemClock, cs::FileSystemStorage>(lazy))),
        raw(make_dir(dir.path() + "/raw")) {
    // The sizes of the library's files, which the baselines read and write: an output, and a
    // reservation record.
    const std::int64_t n = bench::unique_number();
    if (durable_fn(n) != bench::Payload{}(n)) throw std::runtime_error("wrong output");
    const std::string digest = durable_fn.key(n).digest();
    const std::string sub = "/" + digest.substr(0, 2) + "/" + digest;
    output_size = fs::file_size(durable.root() + "/outputs" + sub);
    record_size = fs::file_size(durable.root() + "/reservations" + sub + ".res");
  }

  TempDir dir;  // removed last
  cs::FileSystemStorage durable;
  cs::FileSystemStorage lazy;
  Cached durable_fn;
  Cached lazy_fn;
  std::string raw;  // the baselines' directory
  std::uintmax_t output_size = 0;
  std::uintmax_t record_size = 0;
};

bench::Fixture<World> world([] { return std::make_unique<World>(); });

// ---- baselines -------------------------------------------------------------------------------

/// Writes `size` bytes to a new temporary file and renames it to `path`; when `durable`, fsyncs
/// the file before the rename and the directory after it (the directory's descriptor is kept
/// open, which is less than a store that serves any directory can do).
void write_file(const std::string& path, std::uintmax_t size, bool durable, int dir_fd = -1) {
  static const std::string bytes(4096, 'x');
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) fail("open", tmp);
  const bool written = ::write(fd, bytes.data(), size) == static_cast<ssize_t>(size);
  const bool synced = !durable || ::fsync(fd) == 0;
  ::close(fd);
  if (!written || !synced) fail("write", tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename", tmp);
  if (durable && ::fsync(dir_fd) != 0) fail("fsync", path);
}

/// Reads a file of the output's size: open, one read, close.
void read_file(benchmark::State& state) {
  World* w = world.get(state);
  if (!w) return;
  bench::guarded(state, [&] {
    const std::string path = w->raw + "/hit";
    write_file(path, w->output_size, false);
    std::array<char, 4096> buf{};
    if (w->output_size > buf.size()) throw std::runtime_error("the output is larger than 4 KiB");
    for (auto _ : state) {
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) fail("open", path);
      const ssize_t n = ::read(fd, buf.data(), buf.size());
      ::close(fd);
      if (n != static_cast<ssize_t>(w->output_size)) fail("read", path);
      benchmark::DoNotOptimize(buf);
    }
  });
}

/// A new file of the output's size per call (unique names, as misses have).
void write_rename(benchmark::State& state, bool durable) {
  World* w = world.get(state);
  if (!w) return;
  bench::guarded(state, [&] {
    const int dir_fd = ::open(w->raw.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) fail("open", w->raw);
    for (auto _ : state) {
      write_file(w->raw + "/miss-" + std::to_string(bench::unique_number()), w->output_size,
                 durable, dir_fd);
    }
    ::close(dir_fd);
  });
}

/// Rewrites one file of the reservation record's size (no fsync: records are not synced).
void rewrite_record(benchmark::State& state) {
  World* w = world.get(state);
  if (!w) return;
  bench::guarded(state, [&] {
    for (auto _ : state) write_file(w->raw + "/record", w->record_size, false);
  });
}

// ---- the library -----------------------------------------------------------------------------

void library_hit(benchmark::State& state) {
  if (World* w = world.get(state))
    bench::cached_hit<cs::FileSystemStorage>(state, w->durable_fn, {});
}

void library_miss(benchmark::State& state, bool durable) {
  if (World* w = world.get(state)) {
    bench::cached_miss<cs::FileSystemStorage>(state, durable ? w->durable_fn : w->lazy_fn, {});
  }
}

void library_extend(benchmark::State& state) {
  if (World* w = world.get(state)) bench::storage_extend(state, w->lazy, {});
}

}  // namespace

void bench::register_benchmarks() {
  // Quick (CI): a fixed handful of calls, so that fsyncs on a slow disk cannot stretch the step.
  constexpr int kQuickCalls = 20;

  bench::add("fs_hit/1_key/read_file", kQuickCalls, read_file);
  bench::add("fs_hit/1_key/cacheserialize", kQuickCalls, library_hit);
  bench::compare({"fs_hit/1_key", "read_file", "", ""});

  bench::add("fs_miss/durable/write_fsync_rename", kQuickCalls, write_rename, true);
  bench::add("fs_miss/durable/cacheserialize", kQuickCalls, library_miss, true);
  bench::compare({"fs_miss/durable", "write_fsync_rename", "", ""});

  bench::add("fs_miss/not_durable/write_rename", kQuickCalls, write_rename, false);
  bench::add("fs_miss/not_durable/cacheserialize", kQuickCalls, library_miss, false);
  bench::compare({"fs_miss/not_durable", "write_rename", "", ""});

  bench::add("fs_extend/1_key/write_rename", kQuickCalls, rewrite_record);
  bench::add("fs_extend/1_key/cacheserialize", kQuickCalls, library_extend);
  bench::compare({"fs_extend/1_key", "write_rename", "", ""});

  // try_claim (issue 11) against the storage's acquire it makes.
  bench::add_try_claim_cases<cs::FileSystemStorage>(
      "fs", world, kQuickCalls, [](World & w) -> const auto& { return w.lazy_fn.manager(); },
      [](World&) { return std::function<std::uint64_t()>(); });
}
