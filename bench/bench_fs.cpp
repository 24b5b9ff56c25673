// FileSystemStorage against the file operations it cannot do without: a hit against reading a
// file of the same size (open, read, close), on one key and on many; a miss against writing a
// file and renaming it into place (when durable, under a lock, with fsync of the file and of its
// directory, as a crash-safe store of one writer at a time must); an extension against
// rewriting a file of the reservation record's size in place.
//
// The storage's root is a fresh directory under TMPDIR (else /tmp), removed at exit: the
// figures are those of that file system.

#include <fcntl.h>
#include <sys/file.h>
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
#include <vector>

#include "storage_bench.hpp"

namespace {

namespace cs = cacheserialize;
namespace fs = std::filesystem;
using Cached = bench::CachedPayload<cs::FileSystemStorage>;

[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw std::runtime_error(what + " " + path + ": " + std::strerror(errno));
}

using bench::TempDir;

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

  TempDir dir{"cacheserialize-bench-fs"};  // removed last
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

/// Writes `size` bytes to a new temporary file and renames it to `path`; when `durable`, does so
/// under an flock of `lock` (an existing file, opened and closed per call), and fsyncs the file
/// before the rename and the directory after it (the directory's descriptor is kept open, which
/// is less than a store that serves any directory can do).
void write_file(const std::string& path, std::uintmax_t size, bool durable, int dir_fd = -1,
                const std::string& lock = "") {
  static const std::string bytes(4096, 'x');
  const std::string tmp = path + ".tmp";
  int lock_fd = -1;
  if (durable) {
    lock_fd = ::open(lock.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0666);
    if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX) != 0) fail("lock", lock);
  }
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) fail("open", tmp);
  const bool written = ::write(fd, bytes.data(), size) == static_cast<ssize_t>(size);
  const bool synced = !durable || ::fsync(fd) == 0;
  ::close(fd);
  if (!written || !synced) fail("write", tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename", tmp);
  if (durable && ::fsync(dir_fd) != 0) fail("fsync", path);
  if (lock_fd >= 0) ::close(lock_fd);
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

/// The number of keys of the many-keys hit cases.
std::int64_t many_keys() { return bench::scaled<std::int64_t>(10000, 100); }

/// Reads many_keys() files of the output's size in turn: open, one read, close.
void read_many_files(benchmark::State& state) {
  World* w = world.get(state);
  if (!w) return;
  bench::guarded(state, [&] {
    const std::int64_t n = many_keys();
    std::vector<std::string> paths;
    const std::string dir = make_dir(w->raw + "/many");
    for (std::int64_t i = 0; i < n; ++i) {
      paths.push_back(dir + "/" + std::to_string(i));
      write_file(paths.back(), w->output_size, false);
    }
    std::array<char, 4096> buf{};
    std::size_t i = 0;
    for (auto _ : state) {
      const std::string& path = paths[i++ % paths.size()];
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) fail("open", path);
      const ssize_t got = ::read(fd, buf.data(), buf.size());
      ::close(fd);
      if (got != static_cast<ssize_t>(w->output_size)) fail("read", path);
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
                 durable, dir_fd, w->raw + "/lock");
    }
    ::close(dir_fd);
  });
}

/// Rewrites one file of the reservation record's size in place: open, pwrite, close (no fsync:
/// records are not synced).
void rewrite_record(benchmark::State& state) {
  World* w = world.get(state);
  if (!w) return;
  bench::guarded(state, [&] {
    const std::string path = w->raw + "/record";
    write_file(path, w->record_size, false);
    const std::string bytes(w->record_size, 'r');
    for (auto _ : state) {
      const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) fail("open", path);
      const bool written =
          ::pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size());
      ::close(fd);
      if (!written) fail("pwrite", path);
    }
  });
}

// ---- the library -----------------------------------------------------------------------------

void library_hit(benchmark::State& state) {
  if (World* w = world.get(state))
    bench::cached_hit<cs::FileSystemStorage>(state, w->durable_fn, {});
}

/// Hits on many_keys() keys in turn (stored first, outside the measured calls).
void library_hit_many(benchmark::State& state) {
  World* w = world.get(state);
  if (!w) return;
  bench::guarded(state, [&] {
    const std::int64_t n = many_keys();
    constexpr std::int64_t kFirst = std::int64_t{1} << 40;  // apart from unique_number()'s
    for (std::int64_t k = kFirst; k < kFirst + n; ++k) benchmark::DoNotOptimize(w->lazy_fn(k));
    const auto hits = w->lazy_fn.manager().stats().hits;
    std::int64_t i = 0;
    for (auto _ : state) benchmark::DoNotOptimize(w->lazy_fn(kFirst + i++ % n));
    bench::per_call(state, "hits_per_call", w->lazy_fn.manager().stats().hits - hits, 1);
  });
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

  const std::string many = "fs_hit/" + std::to_string(many_keys()) + "_keys";
  bench::add(many + "/read_file", kQuickCalls, read_many_files);
  bench::add(many + "/cacheserialize", kQuickCalls, library_hit_many);
  bench::compare({many, "read_file", "", ""});

  bench::add("fs_miss/durable/lock_write_fsync_rename", kQuickCalls, write_rename, true);
  bench::add("fs_miss/durable/cacheserialize", kQuickCalls, library_miss, true);
  bench::compare({"fs_miss/durable", "lock_write_fsync_rename", "", ""});

  bench::add("fs_miss/not_durable/write_rename", kQuickCalls, write_rename, false);
  bench::add("fs_miss/not_durable/cacheserialize", kQuickCalls, library_miss, false);
  bench::compare({"fs_miss/not_durable", "write_rename", "", ""});

  bench::add("fs_extend/1_key/rewrite_in_place", kQuickCalls, rewrite_record);
  bench::add("fs_extend/1_key/cacheserialize", kQuickCalls, library_extend);
  bench::compare({"fs_extend/1_key", "rewrite_in_place", "", ""});

  // try_claim (issue 11) against the storage's acquire it makes.
  bench::add_try_claim_cases<cs::FileSystemStorage>(
      "fs", world, kQuickCalls, [](World & w) -> const auto& { return w.lazy_fn.manager(); },
      [](World&) { return std::function<std::uint64_t()>(); });
}
