#pragma once

// Thin, EINTR-safe wrappers over the POSIX file calls FileSystemStorage uses, each reporting
// failure through errno so that the caller can name the path and the OS error in its message.

#if defined(_WIN32)
#error "cacheserialize's FileSystemStorage needs a POSIX system (open, rename, flock, fsync)"
#endif

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "../owner_id.hpp"

namespace cacheserialize {
namespace detail {

/// @return "No such file or directory (errno 2)".
inline std::string errno_text(int err) {
  return std::generic_category().message(err) + " (errno " + std::to_string(err) + ")";
}

/// An owned file descriptor, closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }

  /// Closes the descriptor. close() is not retried on EINTR: on Linux the descriptor is gone
  /// whatever it returns, and retrying could close a descriptor another thread just opened.
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  /// @return the descriptor, which the caller now owns; this is left empty.
  int release() noexcept { return std::exchange(fd_, -1); }

  /// Closes the descriptor and reports close's own error, which some file systems (NFS) use to
  /// report a write that failed late.
  /// @return whether close succeeded (errno set if not).
  bool close_checked() noexcept {
    const int fd = std::exchange(fd_, -1);
    return fd < 0 || ::close(fd) == 0 || errno == EINTR;
  }

 private:
  int fd_ = -1;
};

/// open(2), retried on EINTR. Every descriptor is close-on-exec, so that a child process started
/// by the program cannot keep a lock alive after the program dies.
/// @return the descriptor, or an invalid Fd with errno set.
inline Fd open_file(const std::string& path, int flags, mode_t mode = 0666) {
  for (;;) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    if (fd >= 0) return Fd(fd);
    if (errno != EINTR) return Fd();
  }
}

/// openat(2), as `open_file`: `name` is relative to the directory `dir_fd` (or to the working
/// directory for AT_FDCWD, or absolute).
inline Fd open_file_at(int dir_fd, const char* name, int flags) {
  for (;;) {
    const int fd = ::openat(dir_fd, name, flags | O_CLOEXEC);
    if (fd >= 0) return Fd(fd);
    if (errno != EINTR) return Fd();
  }
}

/// Reads up to `size` bytes at the current offset, stopping early only at the end of the file.
/// @return whether it succeeded (errno set if not); `out` holds what was read.
inline bool read_up_to(int fd, std::size_t size, std::string& out) {
  out.resize(size);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, &out[done], size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  out.resize(done);
  return true;
}

/// One read(2) of up to `size` bytes into `buf`, retried on EINTR.
/// @return the bytes read (0 at the end of the file), or -1 with errno set.
inline ssize_t read_once(int fd, char* buf, std::size_t size) {
  for (;;) {
    const ssize_t n = ::read(fd, buf, size);
    if (n >= 0 || errno != EINTR) return n;
  }
}

/// Writes all of `data` at `offset` (pwrite(2)), resuming after partial writes and EINTR.
/// @return whether it succeeded (errno set if not).
inline bool write_all_at(int fd, std::string_view data, off_t offset) {
  while (!data.empty()) {
    const ssize_t n = ::pwrite(fd, data.data(), data.size(), offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
    offset += static_cast<off_t>(n);
  }
  return true;
}

/// ftruncate(2), retried on EINTR. @return whether it succeeded (errno set if not).
inline bool truncate_fd(int fd, off_t size) {
  for (;;) {
    if (::ftruncate(fd, size) == 0) return true;
    if (errno != EINTR) return false;
  }
}

/// Writes all of `data`, resuming after partial writes and EINTR.
/// @return whether it succeeded (errno set if not).
inline bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

/// fsync(2), retried on EINTR. @return whether it succeeded (errno set if not).
inline bool sync_fd(int fd) {
  for (;;) {
    if (::fsync(fd) == 0) return true;
    if (errno != EINTR) return false;
  }
}

/// mkdir(2) that treats an existing directory as success.
/// @return whether the directory exists now (errno set if not).
inline bool make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0777) == 0) return true;
  if (errno != EEXIST) return false;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  if (!S_ISDIR(st.st_mode)) {
    errno = ENOTDIR;
    return false;
  }
  return true;
}

/// @return ".<pid>.<counter>.<16 hex random>": unique among the temporary files of every process
///         and thread, so that concurrent writers never share one (they are created O_EXCL too).
inline std::string unique_suffix() {
  static std::atomic<std::uint64_t> counter{0};
  char rnd[17];
  std::snprintf(rnd, sizeof rnd, "%016llx", static_cast<unsigned long long>(jitter_random()));
  return "." + std::to_string(current_pid()) + "." +
         std::to_string(counter.fetch_add(1, std::memory_order_relaxed)) + "." + rnd;
}

/// Takes an exclusive flock on `fd`, polling with exponential backoff until `deadline`.
/// flock(2) has no timed form, and a blocking one would hang on a process that is stopped (or on
/// a hung disk) inside its critical section; polling bounds the wait instead.
/// @return whether the lock was taken (false with errno EWOULDBLOCK at the deadline, or another
///         errno on failure).
inline bool lock_until(int fd, std::chrono::steady_clock::time_point deadline) {
  std::chrono::microseconds pause(20);
  for (;;) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return true;
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) return false;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      errno = EWOULDBLOCK;
      return false;
    }
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(pause, deadline - now));
    pause = std::min(pause * 2, std::chrono::microseconds(2000));
  }
}

}  // namespace detail
}  // namespace cacheserialize
