#pragma once

// Owner ids: "host:pid:random:counter". Unique per process (host, pid and 64 random bits, so a
// recycled pid or a cloned host still differs) and per call (the counter), so a retry, even in
// the same thread, is a new owner and never mistaken for the holder it replaces.

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <string_view>

#if defined(_WIN32)
#include <process.h>

#include <cstdlib>
#else
#include <pthread.h>
#include <unistd.h>
#endif

namespace cacheserialize {
namespace detail {

inline long current_pid() noexcept {
#if defined(_WIN32)
  return static_cast<long>(_getpid());
#else
  return static_cast<long>(::getpid());
#endif
}

inline std::string host_name() {
#if defined(_WIN32)
  const char* name = std::getenv("COMPUTERNAME");
  return name ? name : "localhost";
#else
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
#endif
}

/// @return 64 bits from the OS's entropy source, or, where it has none, from time and address.
inline std::uint64_t random_u64() noexcept {
  try {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  } catch (...) {
    const auto t = static_cast<std::uint64_t>(
        std::chrono::high_resolution_clock::now().time_since_epoch().count());
    static int anchor;
    return t ^ (reinterpret_cast<std::uintptr_t>(&anchor) * 0x9e3779b97f4a7c15ULL);
  }
}

/// Bumped in the child of every fork (pthread_atfork), so that prefixes cached per thread are
/// recomputed there.
inline std::atomic<std::uint64_t>& fork_generation() noexcept {
  static std::atomic<std::uint64_t> generation{0};
  return generation;
}

/// @return "host:pid:random", recomputed after a fork (the child gets a new pid and random part).
inline std::string process_owner_prefix() {
#if !defined(_WIN32)
  static const bool on_fork = [] {
    ::pthread_atfork(nullptr, nullptr,
                     [] { fork_generation().fetch_add(1, std::memory_order_relaxed); });
    return true;
  }();
  (void)on_fork;
#endif
  static std::mutex mu;
  static long pid = 0;
  static std::string prefix;
  std::lock_guard<std::mutex> lock(mu);
  const long now_pid = current_pid();
  if (now_pid != pid || prefix.empty()) {
    char rnd[17];
    std::snprintf(rnd, sizeof rnd, "%016llx", static_cast<unsigned long long>(random_u64()));
    prefix = host_name() + ":" + std::to_string(now_pid) + ":" + rnd;
    pid = now_pid;
  }
  return prefix;
}

/// A new owner id written into this object (no allocation when it fits, as generated ids do
/// unless the host name is long): what a claim needs only as a view for its own duration.
/// Each thread takes counter values from the process's counter in blocks, so that threads
/// making ids at once do not all write one shared cache line.
class OwnerIdBuffer {
 public:
  OwnerIdBuffer() {
    static std::atomic<std::uint64_t> counter{0};
    // Each thread keeps the prefix: checking the pid on every call is a system call (glibc does
    // not cache getpid), which cost as much as the rest of a miss. Forks bump fork_generation().
    struct Cached {
      std::uint64_t generation = ~std::uint64_t{0};
      std::string prefix;
      std::uint64_t next = 0;  // the thread's next counter value, up to `end` (excluded)
      std::uint64_t end = 0;
    };
    thread_local Cached cached;
    const std::uint64_t generation = fork_generation().load(std::memory_order_relaxed);
    if (cached.generation != generation) {
      cached.prefix = process_owner_prefix();
      cached.generation = generation;
    }
    if (cached.next == cached.end) {
      cached.next = counter.fetch_add(kBlock, std::memory_order_relaxed) + 1;
      cached.end = cached.next + kBlock;
    }
    char digits[24];
    const auto n = std::to_chars(digits, digits + sizeof digits, cached.next++).ptr;
    const std::size_t size = cached.prefix.size() + 1 + static_cast<std::size_t>(n - digits);
    char* out = buf_;
    if (size > sizeof buf_) {
      overflow_.resize(size);
      out = overflow_.data();
    }
    std::memcpy(out, cached.prefix.data(), cached.prefix.size());
    out[cached.prefix.size()] = ':';
    std::memcpy(out + cached.prefix.size() + 1, digits, static_cast<std::size_t>(n - digits));
    view_ = std::string_view(out, size);
  }
  OwnerIdBuffer(const OwnerIdBuffer&) = delete;
  OwnerIdBuffer& operator=(const OwnerIdBuffer&) = delete;

  /// @return the id; valid while this object lives.
  std::string_view view() const noexcept { return view_; }

 private:
  static constexpr std::uint64_t kBlock = 256;  // counter values a thread takes at a time
  char buf_[96];
  std::string overflow_;  // for an id longer than buf_
  std::string_view view_;
};

/// @return a new owner id, never returned before in this process.
inline std::string new_owner_id() { return std::string(OwnerIdBuffer().view()); }

/// A small, fast per-thread generator for jitter (not for anything secret).
inline std::uint64_t jitter_random() noexcept {
  thread_local std::uint64_t state = random_u64() | 1;
  // splitmix64
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace detail
}  // namespace cacheserialize
