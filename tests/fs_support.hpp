#pragma once

// Support for the FileSystemStorage tests: temporary directories, files, real child processes
// (the fs_worker helper), and bounded polling of conditions that involve other processes, where
// no in-process gate can tell us when they hold.

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cacheserialize/storage/filesystem.hpp>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support.hpp"

extern char** environ;

namespace test {

/// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/cacheserialize-fs-XXXXXX";
    if (::mkdtemp(&templ[0]) == nullptr) {
      throw std::runtime_error("cannot create a temporary directory: " +
                               cs::detail::errno_text(errno));
    }
    path_ = templ;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    // Depth-first, restoring write permission on directories a test made read-only.
    ::nftw(
        path_.c_str(),
        [](const char* p, const struct stat* st, int type, struct FTW*) {
          if (type == FTW_DP) {
            ::chmod(p, st->st_mode | S_IRWXU);
            return ::rmdir(p) == 0 ? 0 : 0;
          }
          return ::unlink(p) == 0 ? 0 : 0;
        },
        16, FTW_DEPTH | FTW_PHYS);
    ::chmod(path_.c_str(), 0700);
    ::rmdir(path_.c_str());
  }
  const std::string& path() const noexcept { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out.flush()) throw std::runtime_error("cannot write " + path);
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

/// @return the value of "name=value" in a line of space-separated fields, or "".
inline std::string field(const std::string& line, const std::string& name) {
  std::istringstream in(line);
  std::string word;
  while (in >> word) {
    if (word.rfind(name + "=", 0) == 0) return word.substr(name.size() + 1);
  }
  return {};
}

inline std::int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// @return the path of the fs_worker helper, which CMake passes in.
inline std::string worker_path() { return CACHESERIALIZE_FS_WORKER; }

/// A child process running the fs_worker helper, its standard output (and error) in a file.
/// Killed with SIGKILL and reaped on destruction if it still runs.
class Child {
 public:
  /// @param args the worker's arguments (mode first).
  /// @param out  the file its standard output goes to; standard error goes to out + ".err".
  Child(const std::vector<std::string>& args, std::string out) : out_(std::move(out)) {
    std::vector<std::string> all{worker_path()};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(&a[0]);
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const std::string err = out_ + ".err";
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int rc = ::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      throw std::runtime_error("cannot start " + all[0] + ": " + cs::detail::errno_text(rc));
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (running()) {
      kill9();
    }
  }

  pid_t pid() const noexcept { return pid_; }
  bool running() const noexcept { return !reaped_; }

  /// SIGKILL, then reap.
  void kill9() {
    ::kill(pid_, SIGKILL);
    wait(kBound);
  }

  /// Waits for the child to exit.
  /// @return its exit code, 128 + the signal if a signal ended it, or -1 if `bound` passed.
  int wait(std::chrono::milliseconds bound = kBound) {
    if (reaped_) return status_;
    int status = 0;
    const bool done = eventually(
        [&] {
          const pid_t r = ::waitpid(pid_, &status, WNOHANG);
          return r == pid_ || (r < 0 && errno != EINTR);
        },
        bound);
    if (!done) return -1;
    reaped_ = true;
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return status_;
  }

  /// @return what the child printed so far.
  std::string output() const { return read_file(out_); }
  std::string errors() const { return read_file(out_ + ".err"); }

 private:
  std::string out_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = -1;
};

/// The execution log's lines per key: "exec <key> <pid> <ns>".
struct Execution {
  std::int64_t key;
  long pid;
  std::int64_t at_ns;
};

inline std::vector<Execution> executions_in(const std::string& log) {
  std::vector<Execution> out;
  for (const auto& line : lines_of(read_file(log))) {
    std::istringstream in(line);
    std::string word;
    Execution e{};
    if (in >> word && word == "exec" && in >> e.key >> e.pid >> e.at_ns) out.push_back(e);
  }
  return out;
}

inline std::size_t bad_values_in(const std::string& log) {
  std::size_t n = 0;
  for (const auto& line : lines_of(read_file(log))) n += line.rfind("bad ", 0) == 0 ? 1u : 0u;
  return n;
}

}  // namespace test
