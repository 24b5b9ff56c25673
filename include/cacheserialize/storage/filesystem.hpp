#pragma once

/// @file storage/filesystem.hpp
/// `FileSystemStorage`: outputs and reservations in a directory shared by the processes of one
/// host, or of hosts that mount the same directory. Standard library and POSIX only. Not part of
/// the umbrella header: include it yourself.
///
/// ## Layout of the root directory
///
///     outputs/<2 hex>/<digest>                     an output (detail/filesystem/format.hpp)
///     outputs/<2 hex>/<digest>.<pid>.<n>.<rnd>.tmp an output being written
///     reservations/<2 hex>/<digest>.lock           the key's lock file (empty; flock target)
///     reservations/<2 hex>/<digest>.res            the key's reservation record
///     reservations/<2 hex>/<digest>.res.tmp        a record being replaced by a rename (under
///                                                  the lock, when the record is not writable)
///     outputs/.probe.*, reservations/.probe.*      a writability probe (without O_TMPFILE)
///
/// `<digest>` is `Key::digest()`; the first two hex digits spread keys over 256 directories.
/// Files are created with mode 0666 and directories 0777, less the process's umask: set a
/// umask of 002 (and a shared group) for a directory shared by several users.
///
/// ## Why each operation is atomic
///
/// - **Mutual exclusion per key.** acquire, extend, release, store_and_release and put run under
///   an exclusive `flock(2)` on the key's lock file (after a per-process mutex stripe, so that
///   threads queue in memory rather than on the file). A flock belongs to an open file
///   description, which the kernel closes when its process dies, however it dies: a SIGKILL in
///   the middle of a critical section releases the lock at once, so no lock can outlive its
///   holder, let alone the reservation's expiry. Descriptors are close-on-exec, so a child
///   started with exec cannot inherit a lock (a child that forks *without* exec shares the
///   parent's open locks until it closes them, as with any flock).
/// - **Lock files can be deleted safely** (by prune): prune deletes a lock file only while
///   holding its flock, after writing a byte into it; after taking the flock, a locker checks
///   (fstat) that its file is still linked and empty, else that the path still names the inode
///   it locked, and starts again if not.
/// - **Outputs change by rename(2).** An output is written to a unique temporary file (fsynced
///   when `durable`) and renamed over its final name. rename is atomic: every reader sees the
///   old file or the new one, never a mix, whatever instant a writer is killed at. A killed
///   writer leaves at most a temporary file, which no reader looks at and prune deletes.
/// - **Records change in place, under the lock.** A reservation record is rewritten with
///   pwrite (and ftruncate if it shrank), or, if this process may not write the file, renamed
///   over from `<digest>.res.tmp`. Records are read only under the lock, so no reader sees a
///   write in progress. A writer killed between its calls leaves an empty record (created, not
///   yet written), which reads as free, or the new record before the old one's tail (written,
///   not yet truncated), which reads as the new record; neither is reported. Any other damage
///   (its CRC fails) also reads as free: right, because whoever writes a record holds that
///   reservation or is taking it, and it died with its writer.
/// - **Fencing.** store_and_release writes the output's temporary file first, then, under the
///   lock, checks that the reservation is still the caller's (owner and token), renames the
///   output into place and marks the record free: a holder that lost its reservation never
///   replaces its successor's output.
/// - **Tokens** are `max(previous token + 1, wall clock in nanoseconds)`. The record keeps its
///   token after a release, so tokens grow per key; the clock floor keeps them growing when prune
///   has deleted a key's record (it does so only after the record was idle for its max_age) or
///   a damaged record was reset, provided the system clock does not step back by that much.
/// - **Expiries** are the caller's `now + ttl` (the manager's clock), stored as Unix nanoseconds
///   and compared with the caller's `now`: hosts sharing a directory need clocks that agree to
///   well within the grace period.
/// - **Reads need no lock.** get() opens the output file, which is complete once it has a name.
///   Every file carries a magic, a format version, its full key, its payload length and a
///   CRC-32C: a truncated, damaged or foreign file (another key's, a digest collision, anything
///   else) is a miss, reported as a `corrupt_output` event, and replaced by the next store.
///
/// ## Assumptions, and NFS
///
/// A local POSIX file system (ext4, xfs, btrfs, tmpfs, APFS) meets all of the above. On NFS:
/// - rename and O_EXCL are atomic on the server, and close-to-open consistency makes a renamed
///   output visible to the next open on every client; NFSv3 or later is needed.
/// - Linux clients emulate flock with NFS byte-range locks, which are per process, not per
///   descriptor: the per-process mutex stripe keeps threads of one process from sharing a lock,
///   and every lock file is opened and closed under it, so closing one descriptor cannot drop a
///   lock another thread holds.
/// - A lock held by a *host* that crashes (not just a process) is released only when the server's
///   lease expires (NFSv4: 90 s by default): make `lock_timeout` longer than the lease, or expect
///   `storage_error`s from that key until then. A holder's reservation still expires on time.
/// - Attribute caching can delay the modification times that prune reads; clocks of all hosts
///   and of the server must agree.
///
/// ## Waiting
///
/// A file system cannot notify waiters, so this storage has no `subscribe`: a waiter re-checks
/// every `TaskOptions::poll_interval` (+-20% jitter, 1 s by default) and at the holder's expiry.
/// After a holder stores its output, waiters wake within 1.2 x poll_interval (plus the time of
/// one acquire, tens of microseconds on a local disk); a poll is an open, a flock and a read of
/// a small file. After a holder dies, a waiter takes over at the reservation's expiry, which it
/// sleeps until when that comes before its next poll (the tests measure 0-5 ms after it).

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../cache_key.hpp"
#include "../clock.hpp"
#include "../detail/filesystem/format.hpp"
#include "../detail/filesystem/posix_file.hpp"
#include "../detail/get_or_extend.hpp"
#include "../errors.hpp"
#include "../events.hpp"
#include "../storage.hpp"
#include "../time.hpp"

namespace cacheserialize {

/// Configuration of a `FileSystemStorage`.
struct FileSystemOptions {
  /// The shared directory. It must exist and be writable; the storage creates its
  /// subdirectories in it. A relative path is resolved against the working directory once, at
  /// construction.
  std::string root{};
  /// Receives a `corrupt_output` event (detail: the path and the problem) for every damaged or
  /// foreign output or reservation record the storage reads; called on the reading thread,
  /// outside any lock. Empty for none.
  Listener listener{};
  /// How long an operation waits for a key's lock before it fails with `storage_error`. Locks
  /// are held for microseconds and die with their process, so this only bounds the wait behind
  /// a process that is *alive but stuck* inside a critical section (stopped with SIGSTOP, a hung
  /// disk, a crashed NFS client until its lease ends).
  Duration lock_timeout = std::chrono::seconds(10);
  /// fsync each output before it is renamed into place, and its directory after, so that a
  /// stored output survives a power loss or OS crash. Reservation records are never fsynced:
  /// they matter only while their holders live, and a process crash does not lose them.
  bool durable = true;
};

namespace detail {

/// The in-process half of a key lock: threads of one process queue on one of these before they
/// touch a lock file. A mutex and a condition variable rather than std::timed_mutex, whose
/// steady-clock wait maps to pthread_mutex_clocklock, which ThreadSanitizer 14 does not know.
class FsStripe {
 public:
  /// @return whether the stripe was taken before `deadline`.
  bool lock_until(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_until(lock, deadline, [this] { return !locked_; })) return false;
    locked_ = true;
    return true;
  }
  void unlock() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      locked_ = false;
    }
    cv_.notify_one();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool locked_ = false;
};

/// @return the stripe of a key. Stripes are shared by every FileSystemStorage of the process, so
///         that two storages over one directory exclude each other's threads too (needed where
///         flock is per process, as on NFS).
inline FsStripe& fs_stripe(std::string_view digest) {
  static std::array<FsStripe, 64> stripes;
  return stripes[std::hash<std::string_view>{}(digest) % stripes.size()];
}

inline TimePoint fs_mtime(const struct stat& st) {
#if defined(__APPLE__)
  const struct timespec& ts = st.st_mtimespec;
#else
  const struct timespec& ts = st.st_mtim;
#endif
  return from_unix_nanos(static_cast<std::int64_t>(ts.tv_sec) * 1000000000 +
                         static_cast<std::int64_t>(ts.tv_nsec));
}

inline bool fs_is_hex(std::string_view s) {
  for (const char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return !s.empty();
}

/// The name prefix of the files that probe a directory's writability.
inline constexpr std::string_view fs_probe_prefix = ".probe.";

/// Checks that a file can be created in `dir`. Where the system has O_TMPFILE the file never has
/// a name, so a process killed meanwhile leaves nothing behind; elsewhere it is a named file,
/// unlinked at once, which prune deletes if its creator died before that.
/// @return whether it could (errno set if not).
inline bool probe_writable(const std::string& dir) {
#if defined(O_TMPFILE)
  {
    const Fd fd = open_file(dir, O_TMPFILE | O_WRONLY, 0600);
    if (fd) return true;
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) return false;
  }  // the file system does not support it: use a name
#endif
  const std::string probe = dir + "/" + std::string(fs_probe_prefix) + unique_suffix().substr(1);
  Fd fd = open_file(probe, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW);
  if (!fd) return false;
  fd.reset();
  ::unlink(probe.c_str());
  return true;
}

/// @return the entries of a directory except "." and ".."; empty if it does not exist or is not
///         a directory.
inline std::vector<std::string> fs_list(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT || errno == ENOTDIR) return names;
    throw storage_error("FileSystemStorage: cannot list '" + dir + "': " + errno_text(errno));
  }
  while (const dirent* e = ::readdir(d)) {
    const std::string_view name(e->d_name);
    if (name != "." && name != "..") names.emplace_back(name);
  }
  ::closedir(d);
  return names;
}

}  // namespace detail

/// A storage policy over a directory shared by processes (and hosts that mount it): every
/// operation of the storage contract is atomic between all of them. See the file comment for
/// the layout, why each operation is atomic, what it assumes of the file system, and the
/// wake-up latency of waiters.
///
/// Outputs are kept as bytes (the codec's `serializer<T>`); waiters poll (no `subscribe`).
///
/// A handle: copies share the configuration. Several storages, in one process or many, may
/// use one directory at once.
///
/// Thread safety: every member may be called concurrently from any number of threads.
class FileSystemStorage {
 public:
  /// Copies share one store. Moving copies too, so that a handle is never left empty.
  FileSystemStorage(const FileSystemStorage&) = default;
  /// Makes this a handle to another store.
  FileSystemStorage& operator=(const FileSystemStorage&) = default;

  /// @return the same address for every copy of this handle, and another for every other store
  ///         handle alive: what `default_manager` shares one manager by.
  const void* identity() const noexcept { return state_.get(); }

  /// Outputs are kept as encoded bytes (`serializer<T>`), readable by other processes.
  static constexpr bool stores_objects = false;

  /// @param root the shared directory, which must exist and be writable.
  /// @throws storage_error naming the path and the OS error if `root` does not exist, is not a
  ///         directory, or is not writable.
  /// @throws std::invalid_argument for an empty path.
  explicit FileSystemStorage(std::string root) : FileSystemStorage(options_for(std::move(root))) {}

  /// @param options the root and the rest of the configuration.
  /// @throws storage_error naming the path and the OS error if the root does not exist, is not
  ///         a directory, or is not writable.
  /// @throws std::invalid_argument for an empty root or a non-positive lock_timeout.
  explicit FileSystemStorage(FileSystemOptions options)
      : state_(std::make_shared<const State>(std::move(options))) {}

  /// @return the stored output of `key`, or nothing if there is none or the file is damaged or
  ///         foreign (reported to the listener).
  /// @throws storage_error if the file exists but cannot be read.
  std::optional<StoredOutput> get(const Key& key) const {
    const std::string digest = key.digest();
    // "ab/<digest>" under the outputs directory held open, else the whole path.
    char name[2 + 1 + 64 + 1];
    std::string path;
    OutputAt at{state_->outputs_dir_fd(), name, state_.get()};
    if (at.dir_fd >= 0 && digest.size() == 64) {
      std::memcpy(name, digest.data(), 2);
      name[2] = '/';
      std::memcpy(name + 3, digest.data(), 64);
      name[67] = '\0';
    } else {
      path = output_path_of(*state_, digest);
      at = OutputAt{AT_FDCWD, path.c_str(), state_.get()};
    }
    std::string payload;
    std::string problem;
    const Found found = read_output(at, key, payload, problem);
    if (found == Found::valid) return StoredOutput::from_bytes(std::move(payload));
    if (found == Found::invalid) report(key, problem);
    return std::nullopt;
  }

  /// Get-or-extend, as the storage contract in storage.hpp describes, under the key's lock.
  /// @throws std::invalid_argument for an empty owner or one longer than 4096 bytes.
  /// @throws storage_error if the directory cannot be read or written, or the key's lock is not
  ///         obtained within `lock_timeout`.
  AcquireResult acquire(const Key& key, const AcquireRequest& req) {
    if (req.owner.empty() || req.owner.size() > detail::fs_max_owner_size) {
      throw std::invalid_argument(
          "cacheserialize::FileSystemStorage::acquire: the owner id must be 1 to 4096 bytes, "
          "got " +
          std::to_string(req.owner.size()));
    }
    const Paths p = paths(key);
    std::vector<std::string> problems;
    AcquireResult result;
    {
      const KeyLock lock(*state_, p, key.describe());
      result = acquire_locked(p, key, req, problems);
    }
    for (const auto& problem : problems) report(key, problem);
    return result;
  }

  /// Extends `mine` to `now + ttl` if it is still the key's reservation (owner and token), even
  /// past its expiry if nobody took it over.
  ExtendResult extend(const Key& key, const Reservation& mine, TimePoint now, Duration ttl) {
    const Paths p = paths(key);
    std::string problem;
    ExtendResult result;
    {
      const KeyLock lock(*state_, p, key.describe());
      RecordFile file = open_record(p, key.describe(), Access::update, problem);
      detail::ReservationRecord& rec = file.record;
      if (rec.held && same(rec.reservation, mine)) {
        rec.reservation.expires_at = detail::saturating_add(now, ttl);
        write_record(file, p, key, rec);
        result.status = ExtendStatus::extended;
      }
      if (rec.held) result.current = rec.reservation;
    }
    if (!problem.empty()) report(key, problem);
    return result;
  }

  /// `extend` for each item of `batch` (storage.hpp), one after another: each key under its own
  /// lock, as `extend` takes it, so a batch never holds two keys' locks at once.
  /// @return result i for batch[i].
  std::vector<ExtendResult> extend_many(const std::vector<Extension>& batch, TimePoint now) {
    return detail::extend_each(*this, batch, now);
  }

  /// Releases `mine` if it is still the key's reservation; the record keeps its token.
  ReleaseStatus release(const Key& key, const Reservation& mine) {
    const Paths p = paths(key);
    std::string problem;
    ReleaseStatus status = ReleaseStatus::not_held;
    {
      const KeyLock lock(*state_, p, key.describe());
      RecordFile file = open_record(p, key.describe(), Access::update, problem);
      const detail::ReservationRecord& rec = file.record;
      if (rec.held) {
        status = ReleaseStatus::held_by_other;
        if (same(rec.reservation, mine)) {
          write_record(file, p, key, free_record(rec.reservation.token));
          status = ReleaseStatus::released;
        }
      }
    }
    if (!problem.empty()) report(key, problem);
    return status;
  }

  /// Stores `output` and releases `mine`, if `mine` is still the key's reservation: the output
  /// is written to a temporary file first (outside the lock), then renamed into place under it.
  /// @throws storage_error if the output cannot be written (nothing is then stored), or, when
  ///         `durable`, if its directory cannot be synced after the rename (it is then stored,
  ///         perhaps not durably).
  StoreResult store_and_release(const Key& key, const Reservation& mine, StoredOutput output,
                                TimePoint /*now*/) {
    const Paths p = paths(key);
    TempFile temp = write_temp(p, key, output.bytes);
    std::string problem;
    StoreResult result;
    {
      const KeyLock lock(*state_, p, key.describe());
      RecordFile file = open_record(p, key.describe(), Access::update, problem);
      const detail::ReservationRecord& rec = file.record;
      if (!rec.held || !same(rec.reservation, mine)) {
        if (rec.held) result.current = rec.reservation;
      } else {
        temp.commit_as(p.output, key);
        write_record(file, p, key, free_record(rec.reservation.token));
        result.status = StoreStatus::stored;
      }
    }
    if (result.status == StoreStatus::stored) sync_dir(p.output_dir, key);
    if (!problem.empty()) report(key, problem);
    return result;
  }

  /// Stores `output` whoever holds the key (cache-only callers).
  /// @throws storage_error if the output cannot be written.
  void put(const Key& key, StoredOutput output) {
    const Paths p = paths(key);
    TempFile temp = write_temp(p, key, output.bytes);
    {
      const KeyLock lock(*state_, p, key.describe());
      temp.commit_as(p.output, key);
    }
    sync_dir(p.output_dir, key);
  }

  /// @return the reservation on `key`, live or expired, if one is held (for tools and tests).
  std::optional<Reservation> reservation(const Key& key) const {
    const Paths p = paths(key);
    std::string problem;
    std::optional<Reservation> out;
    {
      const KeyLock lock(*state_, p, key.describe());
      RecordFile file = open_record(p, key.describe(), Access::read, problem);
      if (file.record.held) out = std::move(file.record.reservation);
    }
    if (!problem.empty()) report(key, problem);
    return out;
  }

  /// Deletes what is old, safely while other processes use the directory:
  /// - outputs whose file was written more than `max_age` ago (by the system clock);
  /// - reservation records (and lock files) of keys that are free or expired and were last
  ///   touched more than `max_age` ago; a live reservation is never removed;
  /// - temporary files left by writers that died (and the probe files of a constructor killed
  ///   on a system without O_TMPFILE), once older than both `max_age` and one minute, so that
  ///   a write in progress is not pulled from under its writer.
  /// An output or a reservation is deleted under its key's lock, after looking again, so that
  /// the deletion never races with a store or an acquisition. Files whose names the storage does
  /// not use are left alone. A key whose lock is busy for `lock_timeout` is skipped.
  /// @throws std::invalid_argument for a negative age.
  /// @throws storage_error if a directory cannot be listed.
  PruneResult prune(Duration max_age) const {
    if (max_age.count() < 0) {
      throw std::invalid_argument(
          "cacheserialize::FileSystemStorage::prune: max_age must not be negative, got " +
          format_duration(max_age));
    }
    const TimePoint now = std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
    const TimePoint cutoff = detail::saturating_add(now, -max_age);
    const TimePoint temp_cutoff =
        detail::saturating_add(now, -std::max<Duration>(max_age, std::chrono::minutes(1)));
    PruneResult result;
    for (const std::string* top : {&state_->outputs, &state_->reservations}) {
      for (const std::string& name : detail::fs_list(*top)) {
        const std::string path = *top + "/" + name;
        if (name.size() == 2 && detail::fs_is_hex(name)) {
          if (top == &state_->outputs) {
            prune_outputs(path, cutoff, temp_cutoff, result);
          } else {
            prune_reservations(path, now, cutoff, result);
          }
        } else if (name.rfind(detail::fs_probe_prefix, 0) == 0) {
          remove_if_older(path, temp_cutoff, result.temporaries_removed);
        }
      }
    }
    return result;
  }

  /// @name Accessors
  /// @{

  /// @return the options the store was opened with.
  const FileSystemOptions& options() const noexcept { return state_->options; }
  /// @return the shared directory.
  const std::string& root() const noexcept { return state_->options.root; }
  /// @return where `key`'s output file is (for tools and tests).
  std::string output_path(const Key& key) const { return output_path_of(*state_, key.digest()); }
  /// @return where `key`'s reservation record is (for tools and tests).
  std::string record_path(const Key& key) const { return paths(key).record; }
  /// @}

 private:
  static FileSystemOptions options_for(std::string root) {
    FileSystemOptions o;
    o.root = std::move(root);
    return o;
  }

  struct State {
    explicit State(FileSystemOptions o) : options(std::move(o)) {
      if (options.root.empty()) {
        throw std::invalid_argument("cacheserialize::FileSystemStorage: the root path is empty");
      }
      if (options.lock_timeout.count() <= 0) {
        throw std::invalid_argument(
            "cacheserialize::FileSystemStorage: lock_timeout must be positive, got " +
            format_duration(options.lock_timeout));
      }
      while (options.root.size() > 1 && options.root.back() == '/') options.root.pop_back();
      if (options.root.front() != '/') {  // so that a later chdir() does not move the store
        std::string cwd(4096, '\0');
        if (::getcwd(&cwd[0], cwd.size()) == nullptr) {
          throw storage_error("FileSystemStorage: cannot resolve the relative root '" +
                              options.root + "': " + detail::errno_text(errno));
        }
        cwd.resize(cwd.find('\0'));
        options.root = (cwd == "/" ? "" : cwd) + "/" + options.root;
      }
      const std::string& root = options.root;
      const std::string what = "FileSystemStorage: the root '" + root + "'";
      struct stat st {};
      if (::stat(root.c_str(), &st) != 0) {
        const int err = errno;
        throw storage_error(what + (err == ENOENT ? " does not exist: " : " cannot be examined: ") +
                            detail::errno_text(err));
      }
      if (!S_ISDIR(st.st_mode)) {
        throw storage_error(what + " is not a directory: " + detail::errno_text(ENOTDIR));
      }
      outputs = root + "/outputs";
      reservations = root + "/reservations";
      for (const std::string* dir : {&outputs, &reservations}) {
        if (!detail::make_dir(*dir)) {
          throw storage_error(what + " is not writable: cannot create '" + *dir +
                              "': " + detail::errno_text(errno));
        }
        // Creating a file proves writability where mode bits do not tell (root, read-only
        // mounts, ACLs), and checks the subdirectories that another user may have created.
        if (!detail::probe_writable(*dir)) {
          throw storage_error(what + " is not writable: cannot create a file in '" + *dir +
                              "': " + detail::errno_text(errno));
        }
      }
      // Optional: without it (e.g. out of descriptors), reads go by path.
      detail::Fd dir = detail::open_file(outputs, O_RDONLY | O_DIRECTORY);
      struct stat dir_st {};
      if (dir && ::fstat(dir.get(), &dir_st) == 0) {
        outputs_dev = dir_st.st_dev;
        outputs_ino = dir_st.st_ino;
        outputs_fd = dir.release();
      }
    }

    ~State() {
      // A lost descriptor's number may belong to another file of the program by now.
      if (outputs_fd >= 0 && !outputs_lost.load(std::memory_order_relaxed)) ::close(outputs_fd);
    }
    State(const State&) = delete;
    State& operator=(const State&) = delete;

    /// @return the outputs directory held open, or -1: reads go by path instead. A hit then
    ///         resolves two path components instead of the root's whole path, a tenth of its
    ///         kernel time. At most once a second, one caller compares the directory now at
    ///         `outputs` with the one held open; once they differ (the root was moved away or
    ///         replaced), this returns -1 for good, so a replaced root is read at most a second
    ///         late. The descriptor is never closed before the storage, so a caller can never
    ///         use a number that meanwhile names another file.
    int outputs_dir_fd() const noexcept {
      if (outputs_fd < 0 || outputs_moved.load(std::memory_order_relaxed)) return -1;
      const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count();
      std::int64_t last = outputs_checked_at.load(std::memory_order_relaxed);
      if (now - last >= 1'000'000'000 &&
          outputs_checked_at.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
        struct stat st {};
        if (drop_outputs_fd_if_lost() || ::stat(outputs.c_str(), &st) != 0 ||
            st.st_dev != outputs_dev || st.st_ino != outputs_ino) {
          outputs_moved.store(true, std::memory_order_relaxed);
          return -1;
        }
      }
      return outputs_fd;
    }

    /// Checks that the descriptor still names the outputs directory: a program may close every
    /// descriptor (and reuse the number) under the storage. If it does not, reads go by path
    /// and the storage never closes that number. Leaves errno as it was.
    /// @return whether the descriptor was lost.
    bool drop_outputs_fd_if_lost() const noexcept {
      const int saved = errno;
      struct stat st {};
      const bool lost = ::fstat(outputs_fd, &st) != 0 || st.st_dev != outputs_dev ||
                        st.st_ino != outputs_ino || !S_ISDIR(st.st_mode);
      if (lost) {
        outputs_lost.store(true, std::memory_order_relaxed);
        outputs_moved.store(true, std::memory_order_relaxed);
      }
      errno = saved;
      return lost;
    }

    FileSystemOptions options;
    std::string outputs;       // root + "/outputs"
    std::string reservations;  // root + "/reservations"
    int outputs_fd = -1;       // `outputs`, opened by the constructor; see outputs_dir_fd()
    dev_t outputs_dev{};
    ino_t outputs_ino{};
    mutable std::atomic<std::int64_t> outputs_checked_at{0};  // steady_clock, nanoseconds
    mutable std::atomic<bool> outputs_moved{false};           // read by path from now on
    mutable std::atomic<bool> outputs_lost{false};            // and outputs_fd is no longer ours
  };

  /// Where an output file is: `name` relative to the directory `dir_fd` (the outputs directory
  /// held open), or a whole path with AT_FDCWD.
  struct OutputAt {
    int dir_fd;
    const char* name;
    const State* state;
    /// @return the whole path, for messages.
    std::string path() const {
      return dir_fd == AT_FDCWD ? std::string(name) : state->outputs + "/" + name;
    }
  };

  struct Paths {
    std::string digest;
    std::string output_dir;
    std::string output;
    std::string reservation_dir;
    std::string lock;
    std::string record;
  };

  Paths paths(const Key& key) const { return paths_of(*state_, key.digest()); }

  static Paths paths_of(const State& s, std::string digest) {
    Paths p;
    const std::string_view shard = std::string_view(digest).substr(0, 2);
    p.output_dir.reserve(s.outputs.size() + 4);
    p.output_dir.append(s.outputs).append("/").append(shard);
    p.output.reserve(p.output_dir.size() + 1 + digest.size());
    p.output.append(p.output_dir).append("/").append(digest);
    p.reservation_dir.reserve(s.reservations.size() + 4);
    p.reservation_dir.append(s.reservations).append("/").append(shard);
    p.lock.reserve(p.reservation_dir.size() + 1 + digest.size() + 5);
    p.lock.append(p.reservation_dir).append("/").append(digest);
    p.record = p.lock;
    p.lock += ".lock";
    p.record += ".res";
    p.digest = std::move(digest);
    return p;
  }

  /// @return `paths_of(s, digest).output`, without the other paths (for get()).
  static std::string output_path_of(const State& s, std::string_view digest) {
    std::string path;
    path.reserve(s.outputs.size() + 4 + digest.size());
    path.append(s.outputs).append("/").append(digest.substr(0, 2)).append("/").append(digest);
    return path;
  }

  /// A key's lock: its process-wide stripe, then an exclusive flock on its lock file, which is
  /// created (with its directory) if needed. Released, flock first, on destruction.
  class KeyLock {
   public:
    /// @param for_prune open the lock file for writing too, if permitted, so that
    ///        `mark_orphaned` can mark it.
    /// @throws storage_error if the lock is not taken within lock_timeout, or the lock file
    ///         cannot be created.
    KeyLock(const State& s, const Paths& p, const std::string& key, bool for_prune = false)
        : stripe_(detail::fs_stripe(p.digest)), for_prune_(for_prune) {
      const auto deadline = std::chrono::steady_clock::now() + s.options.lock_timeout;
      if (!stripe_.lock_until(deadline)) {
        throw storage_error(
            "FileSystemStorage: timed out after " + format_duration(s.options.lock_timeout) +
                " waiting for another thread of this process to unlock '" + p.lock + "'",
            key);
      }
      try {
        lock_file(s, p, key, deadline);
      } catch (...) {
        stripe_.unlock();
        throw;
      }
    }
    KeyLock(const KeyLock&) = delete;
    KeyLock& operator=(const KeyLock&) = delete;
    ~KeyLock() {
      fd_.reset();  // releases the flock
      stripe_.unlock();
    }

    /// Writes a byte into the lock file before prune unlinks it, so that a locker that opened
    /// it earlier knows from fstat alone that it is orphaned. Written through the locked
    /// descriptor: on NFS, closing any other descriptor of the file would drop the lock. Best
    /// effort: without write permission (another user's file) lockers fall back on the link
    /// count and the path.
    void mark_orphaned() noexcept {
      if (writable_) (void)detail::write_all(fd_.get(), "x");
    }

   private:
    void lock_file(const State& s, const Paths& p, const std::string& key,
                   std::chrono::steady_clock::time_point deadline) {
      for (;;) {
        constexpr int flags = O_CREAT | O_NOFOLLOW;
        writable_ = false;
        if (for_prune_) {
          fd_ = detail::open_file(p.lock, O_RDWR | flags);
          writable_ = static_cast<bool>(fd_);
        }
        if (!fd_) fd_ = detail::open_file(p.lock, O_RDONLY | flags);
        if (!fd_ && errno == ENOENT) {
          if (!detail::make_dir(p.reservation_dir)) fail(p.reservation_dir, "create", key);
          continue;
        }
        if (!fd_) fail(p.lock, "open", key);
        if (!detail::lock_until(fd_.get(), deadline)) {
          if (errno != EWOULDBLOCK) fail(p.lock, "lock", key);
          throw storage_error("FileSystemStorage: timed out after " +
                                  format_duration(s.options.lock_timeout) + " waiting to lock '" +
                                  p.lock +
                                  "': another process holds it and is stuck in a critical "
                                  "section (stopped, or on a hung disk)",
                              key);
        }
        // prune may have deleted the lock file between our open and our flock: we would then
        // hold a lock on an orphaned inode, which excludes nobody. Start again on the new file.
        // prune marks a lock file (one byte) before it unlinks it, so one fstat tells: a lock
        // file that is linked and empty is current. Only a marked file that is still linked (a
        // prune killed in between, or NFS, whose clients keep an open file deleted by its
        // holder under a ".nfs" name) needs the path looked up to compare inodes.
        struct stat mine {};
        if (::fstat(fd_.get(), &mine) != 0) {
          if (errno != ESTALE) fail(p.lock, "examine", key);
        } else if (mine.st_nlink > 0) {
          if (mine.st_size == 0) return;
          struct stat current {};
          const int rc = ::lstat(p.lock.c_str(), &current);
          if (rc == 0 && current.st_ino == mine.st_ino && current.st_dev == mine.st_dev) return;
          if (rc != 0 && errno != ENOENT) fail(p.lock, "examine", key);
        }
        fd_.reset();
      }
    }

    [[noreturn]] static void fail(const std::string& path, const char* what,
                                  const std::string& key) {
      throw storage_error("FileSystemStorage: cannot " + std::string(what) + " '" + path +
                              "': " + detail::errno_text(errno),
                          key);
    }

    detail::FsStripe& stripe_;
    bool for_prune_;
    bool writable_ = false;
    detail::Fd fd_;  // closing it releases the flock
  };

  /// A temporary output file, unlinked on destruction unless renamed into place.
  class TempFile {
   public:
    explicit TempFile(std::string path) : path_(std::move(path)) {}
    TempFile(TempFile&& other) noexcept : path_(std::exchange(other.path_, std::string())) {}
    TempFile& operator=(TempFile&&) = delete;
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    ~TempFile() {
      if (!path_.empty()) ::unlink(path_.c_str());
    }

    /// Renames the file to `target`, atomically replacing what was there.
    /// @throws storage_error if rename fails (the file is then unlinked on destruction).
    void commit_as(const std::string& target, const Key& key) {
      if (::rename(path_.c_str(), target.c_str()) != 0) {
        throw storage_error("FileSystemStorage: cannot rename '" + path_ + "' to '" + target +
                                "': " + detail::errno_text(errno),
                            key.describe());
      }
      path_.clear();
    }

   private:
    std::string path_;
  };

  enum class Found { missing, valid, invalid };

  /// Outputs of up to this many bytes (nearly all) are read with one read(2) and no fstat.
  static constexpr std::size_t first_read_size = 4096;

  /// Reads `key`'s output file at `at`.
  /// @param[out] payload the output's bytes, when valid.
  /// @param[out] problem why the file is not a valid output of `key`, when invalid.
  Found read_output(const OutputAt& at, const Key& key, std::string& payload,
                    std::string& problem) const {
    detail::Fd fd = detail::open_file_at(at.dir_fd, at.name, O_RDONLY | O_NOFOLLOW);
    if (!fd && at.dir_fd != AT_FDCWD && (errno == EBADF || errno == ENOTDIR) &&
        at.state->drop_outputs_fd_if_lost()) {
      const std::string path = at.path();
      return read_output(OutputAt{AT_FDCWD, path.c_str(), at.state}, key, payload, problem);
    }
    if (!fd) {
      if (errno == ENOENT || errno == ENOTDIR) return Found::missing;
      if (errno == ELOOP) {
        problem = "foreign output file '" + at.path() + "': a symbolic link; treated as a miss";
        return Found::invalid;
      }
      fail_io("open", at.path(), key);
    }
    thread_local std::string buffer;
    buffer.resize(first_read_size);
    const ssize_t n = detail::read_once(fd.get(), &buffer[0], first_read_size);
    std::string why;
    if (n < 0) {
      if (errno != EISDIR) fail_io("read", at.path(), key);
      why = "not a regular file";
    } else if (static_cast<std::size_t>(n) < first_read_size) {
      // A read of a regular file returns less than asked for only at its end: this is all of it.
      detail::OutputView view;
      why = detail::parse_output_file(std::string_view(buffer.data(), static_cast<std::size_t>(n)),
                                      key.encoded(), view);
      if (why.empty()) {
        payload.assign(view.payload.data(), view.payload.size());
        return Found::valid;
      }
    } else if (read_large_output(fd.get(), at.path(), key, buffer, payload, why)) {
      return Found::valid;
    }
    problem = "damaged or foreign output file '" + at.path() + "': " + why +
              "; treated as a miss (the next store replaces it)";
    return Found::invalid;
  }

  /// The rest of read_output for a file of `first_read_size` bytes or more, whose start is in
  /// `start`: its header is checked against its size before the rest is read, so that a foreign
  /// or damaged file is rejected without reading it whole (or allocating what it claims).
  /// @return whether it is valid (`payload` set), else why not in `why`.
  static bool read_large_output(int fd, const std::string& path, const Key& key,
                                const std::string& start, std::string& payload, std::string& why) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) fail_io("examine", path, key);
    if (!S_ISREG(st.st_mode)) {
      why = "not a regular file";
      return false;
    }
    const auto size = static_cast<std::uint64_t>(st.st_size);
    detail::OutputHeader header;
    why = detail::check_output_header(start, header);
    if (why.empty() && header.file_size != size) {
      why = (size < header.file_size ? "truncated: " : "trailing bytes: ") + std::to_string(size) +
            " bytes where the header says " + std::to_string(header.file_size);
    }
    if (!why.empty()) return false;
    std::string bytes = start;
    std::string rest;
    if (size < bytes.size()) {
      why = "truncated while being read";
      return false;
    }
    if (!detail::read_up_to(fd, static_cast<std::size_t>(size) - bytes.size(), rest)) {
      fail_io("read", path, key);
    }
    bytes += rest;
    detail::OutputView view;
    why = detail::parse_output_file(bytes, key.encoded(), view);
    if (!why.empty()) return false;
    const std::size_t offset = detail::fs_output_header_size + view.key.size();
    const std::size_t length = view.payload.size();
    bytes.resize(offset + length);
    bytes.erase(0, offset);
    payload = std::move(bytes);
    return true;
  }

  [[noreturn]] static void fail_io(const char* what, const std::string& path, const Key& key) {
    throw storage_error("FileSystemStorage: cannot " + std::string(what) + " '" + path +
                            "': " + detail::errno_text(errno),
                        key.describe());
  }

  /// Writes a complete output file under a unique temporary name next to its final name.
  TempFile write_temp(const Paths& p, const Key& key, std::string_view payload) const {
    const std::string file = detail::encode_output_file(key.encoded(), payload);
    const std::string path = p.output + detail::unique_suffix() + ".tmp";
    detail::Fd fd = detail::open_file(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW);
    if (!fd && errno == ENOENT) {
      if (!detail::make_dir(p.output_dir)) {
        throw storage_error(
            "FileSystemStorage: cannot create '" + p.output_dir + "': " + detail::errno_text(errno),
            key.describe());
      }
      fd = detail::open_file(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW);
    }
    if (!fd) {
      throw storage_error(
          "FileSystemStorage: cannot create '" + path + "': " + detail::errno_text(errno),
          key.describe());
    }
    TempFile temp(path);
    if (!detail::write_all(fd.get(), file) ||
        (state_->options.durable && !detail::sync_fd(fd.get())) || !fd.close_checked()) {
      throw storage_error(
          "FileSystemStorage: cannot write '" + path + "': " + detail::errno_text(errno),
          key.describe());
    }
    return temp;
  }

  /// Makes a rename in `dir` durable, when configured to.
  void sync_dir(const std::string& dir, const Key& key) const {
    if (!state_->options.durable) return;
    detail::Fd fd = detail::open_file(dir, O_RDONLY | O_DIRECTORY);
    if (!fd || !detail::sync_fd(fd.get())) {
      throw storage_error(
          "FileSystemStorage: cannot sync directory '" + dir + "': " + detail::errno_text(errno),
          key.describe());
    }
  }

  /// How a key's reservation record is opened (always under the key's lock).
  enum class Access {
    read,    ///< to read it only
    update,  ///< to read it and perhaps rewrite it
    create,  ///< to read it, or create it if it is missing, and then write it (acquire)
  };

  /// A key's reservation record, read, and open for rewriting in place when `writable`.
  struct RecordFile {
    detail::Fd fd;
    bool writable = false;
    std::size_t size = 0;  ///< the bytes read: the file's size unless it is oversized
    detail::ReservationRecord record;
  };

  /// Opens and reads the key's reservation record; a missing or empty one is free with token 0,
  /// and so is a damaged one (then described in `problem`); the next token comes from the clock
  /// floor.
  /// A record this process may not write (another user's, without group write permission) is
  /// opened read-only and replaced by a rename (see write_record).
  static RecordFile open_record(const Paths& p, const std::string& key, Access access,
                                std::string& problem) {
    RecordFile file;
    constexpr int flags = O_NOFOLLOW;
    if (access == Access::create) {
      // A key's first acquisition creates its record: one open that also says it is new.
      file.fd = detail::open_file(p.record, O_RDWR | O_CREAT | O_EXCL | flags);
      if (file.fd) {
        file.writable = true;
        return file;
      }
    }
    if (access != Access::read) {
      file.fd = detail::open_file(p.record, O_RDWR | flags);
      file.writable = static_cast<bool>(file.fd);
    }
    if (!file.fd &&
        (access == Access::read || errno == EACCES || errno == EPERM || errno == EROFS)) {
      file.fd = detail::open_file(p.record, O_RDONLY | flags);
    }
    if (!file.fd) {
      if (errno == ENOENT) return file;
      if (errno != ELOOP) {
        throw storage_error(
            "FileSystemStorage: cannot open '" + p.record + "': " + detail::errno_text(errno), key);
      }
    }
    std::string why = "a symbolic link";
    if (file.fd) {
      // One read of more than a record's largest size: a short read ends at the file's end.
      thread_local std::string buffer;
      const std::size_t most = detail::fs_record_fixed_size + detail::fs_max_owner_size;
      buffer.resize(most + 1);
      const ssize_t n = detail::read_once(file.fd.get(), &buffer[0], buffer.size());
      if (n < 0) {
        throw storage_error(
            "FileSystemStorage: cannot read '" + p.record + "': " + detail::errno_text(errno), key);
      }
      file.size = static_cast<std::size_t>(n);
      // Empty: created by an O_EXCL open whose process died before its first write (the key's
      // lock kept everyone out meanwhile), a crash's leftover like a temporary file. Free, as
      // the missing record it replaced, and not worth a corrupt_output event.
      if (file.size == 0) return file;
      why =
          detail::parse_reservation_record(std::string_view(buffer.data(), file.size), file.record);
    }
    if (!why.empty()) {
      problem = "damaged reservation record '" + p.record + "': " + why + "; treated as free";
      file.record = detail::ReservationRecord{};
    }
    return file;
  }

  /// Replaces the key's record, under the key's lock: in place when the file is open for
  /// writing (pwrite, then ftruncate if the record shrank), else by writing a temporary file and
  /// renaming it over the record. Readers hold the lock, so they never see a write in progress;
  /// what a writer killed in the middle leaves reads as free or as the new record (see the
  /// class comment): right, because whoever writes a record is its holder (or becomes it), and
  /// that reservation died with it.
  static void write_record(RecordFile& file, const Paths& p, const Key& key,
                           const detail::ReservationRecord& rec) {
    const std::string bytes = detail::encode_reservation_record(rec);
    if (!file.writable) {
      write_record_by_rename(p, key, bytes);
      return;
    }
    if (!detail::write_all_at(file.fd.get(), bytes, 0) ||
        (file.size > bytes.size() &&
         !detail::truncate_fd(file.fd.get(), static_cast<off_t>(bytes.size())))) {
      throw storage_error(
          "FileSystemStorage: cannot write '" + p.record + "': " + detail::errno_text(errno),
          key.describe());
    }
    file.size = bytes.size();
  }

  /// Replaces the key's record by a rename, which needs write permission on the directory only.
  /// Called under the key's lock, so one temporary name per key suffices. A temporary left by a
  /// killed writer, perhaps another user's, is unlinked rather than truncated.
  static void write_record_by_rename(const Paths& p, const Key& key, std::string_view bytes) {
    const std::string temp = p.record + ".tmp";
    ::unlink(temp.c_str());
    detail::Fd fd = detail::open_file(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW);
    if (!fd || !detail::write_all(fd.get(), bytes) || !fd.close_checked() ||
        ::rename(temp.c_str(), p.record.c_str()) != 0) {
      throw storage_error(
          "FileSystemStorage: cannot write '" + p.record + "': " + detail::errno_text(errno),
          key.describe());
    }
  }

  static detail::ReservationRecord free_record(std::uint64_t token) {
    detail::ReservationRecord rec;
    rec.reservation.token = token;
    return rec;
  }

  /// @return a token above `previous` and at least the wall clock in nanoseconds.
  static std::uint64_t next_token(std::uint64_t previous) {
    const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
    const std::uint64_t floor = nanos > 0 ? static_cast<std::uint64_t>(nanos) : 1;
    return std::max(previous + 1, floor);
  }

  static bool same(const Reservation& a, const Reservation& b) noexcept {
    return a.token == b.token && a.owner == b.owner;
  }

  AcquireResult acquire_locked(const Paths& p, const Key& key, const AcquireRequest& req,
                               std::vector<std::string>& problems) {
    AcquireResult result;
    if (!req.overwrite) {
      std::string payload;
      std::string problem;
      const Found found =
          read_output(OutputAt{AT_FDCWD, p.output.c_str(), state_.get()}, key, payload, problem);
      if (found == Found::valid) {
        result.status = AcquireStatus::hit;
        result.output = StoredOutput::from_bytes(std::move(payload));
        return result;
      }
      if (found == Found::invalid) problems.push_back(std::move(problem));
    }
    std::string problem;
    RecordFile file = open_record(p, key.describe(), Access::create, problem);
    detail::ReservationRecord& rec = file.record;
    if (!problem.empty()) problems.push_back(std::move(problem));
    const std::uint64_t last_token = rec.reservation.token;  // kept by a free record too
    std::optional<Reservation> current;
    if (rec.held) current = std::move(rec.reservation);
    result = detail::get_or_extend(current, req, [last_token] { return next_token(last_token); });
    if (result.status == AcquireStatus::acquired) {
      detail::ReservationRecord mine;
      mine.held = true;
      mine.reservation = std::move(*current);
      write_record(file, p, key, mine);
    }
    return result;
  }

  void prune_outputs(const std::string& dir, TimePoint cutoff, TimePoint temp_cutoff,
                     PruneResult& result) const {
    for (const std::string& name : detail::fs_list(dir)) {
      if (name.size() < 64 || !detail::fs_is_hex(std::string_view(name).substr(0, 64))) continue;
      const std::string path = dir + "/" + name;
      struct stat st {};
      if (::lstat(path.c_str(), &st) != 0) continue;  // gone meanwhile
      if (name.size() == 64) {
        if (detail::fs_mtime(st) > cutoff) continue;
        // Under the key's lock no store can rename a fresh output in between our look and
        // the unlink; look again.
        const Paths p = paths_of(*state_, name);
        try {
          const KeyLock lock(*state_, p, "key " + name.substr(0, 12));
          if (::lstat(path.c_str(), &st) == 0 && detail::fs_mtime(st) <= cutoff &&
              ::unlink(path.c_str()) == 0) {
            ++result.outputs_removed;
          }
        } catch (const storage_error&) {  // busy: skip it this time
        }
      } else if (name.size() > 68 && name[64] == '.' &&
                 name.compare(name.size() - 4, 4, ".tmp") == 0) {
        remove_if_older(path, temp_cutoff, result.temporaries_removed);
      }
    }
  }

  void prune_reservations(const std::string& dir, TimePoint now, TimePoint cutoff,
                          PruneResult& result) const {
    std::set<std::string> digests;
    for (const std::string& name : detail::fs_list(dir)) {
      if (name.size() > 64 && name[64] == '.' &&
          detail::fs_is_hex(std::string_view(name).substr(0, 64))) {
        const std::string_view suffix = std::string_view(name).substr(64);
        if (suffix == ".lock" || suffix == ".res" || suffix == ".res.tmp") {
          digests.insert(name.substr(0, 64));
        }
      }
    }
    for (const std::string& digest : digests) {
      const Paths p = paths_of(*state_, digest);
      const std::string key = "key " + digest.substr(0, 12);
      try {
        KeyLock lock(*state_, p, key, true);
        std::string problem;
        const detail::ReservationRecord rec = open_record(p, key, Access::read, problem).record;
        if (rec.held && rec.reservation.expires_at > now) continue;  // live
        if (last_touched(p) > cutoff) continue;
        remove_record(p);
        // Last, while still holding its flock: whoever opens the path from now on gets a new
        // lock file, and whoever had the old one open sees it is orphaned (unlinked, or marked
        // where an unlinked file may keep a name: see KeyLock) and starts again.
        lock.mark_orphaned();
        ::unlink(p.lock.c_str());
        ++result.reservations_removed;
      } catch (const storage_error&) {  // busy or unreadable: skip it this time
      }
    }
  }

  /// Deletes a file that no lock protects (a temporary or probe of one writer) if it is old.
  static void remove_if_older(const std::string& path, TimePoint cutoff, std::size_t& count) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && detail::fs_mtime(st) <= cutoff &&
        ::unlink(path.c_str()) == 0) {
      ++count;
    }
  }

  /// @return the latest modification time of a key's lock file, record and temporary record.
  static TimePoint last_touched(const Paths& p) {
    TimePoint latest = TimePoint::min();
    for (const std::string& path : {p.lock, p.record, p.record + ".tmp"}) {
      struct stat st {};
      if (::lstat(path.c_str(), &st) == 0) latest = std::max(latest, detail::fs_mtime(st));
    }
    return latest;
  }

  static void remove_record(const Paths& p) {
    ::unlink((p.record + ".tmp").c_str());  // left by a writer that could not write in place
    ::unlink(p.record.c_str());
  }

  void report(const Key& key, const std::string& problem) const {
    const Listener& listener = state_->options.listener;
    if (!listener) return;
    Event e;
    e.kind = EventKind::corrupt_output;
    e.key = &key;
    e.detail = problem;
    try {
      listener(e);
    } catch (...) {  // a listener cannot break the storage
    }
  }

  std::shared_ptr<const State> state_;
};

}  // namespace cacheserialize
