#pragma once

// Owner ids: "host:pid:random:counter". Unique per process (host, pid and 64 random bits, so a
// recycled pid or a cloned host still differs) and per call (the counter), so a retry, even in
// the same thread, is a new owner and never mistaken for the holder it replaces.

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <random>
#include <string>

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

/// @return a new owner id, never returned before in this process.
inline std::string new_owner_id() {
  static std::atomic<std::uint64_t> counter{0};
  // Each thread keeps the prefix: checking the pid on every call is a system call (glibc does
  // not cache getpid), which cost as much as the rest of a miss. Forks bump fork_generation().
  struct Cached {
    std::uint64_t generation = ~std::uint64_t{0};
    std::string prefix;
  };
  thread_local Cached cached;
  const std::uint64_t generation = fork_generation().load(std::memory_order_relaxed);
  if (cached.generation != generation) {
    cached.prefix = process_owner_prefix();
    cached.generation = generation;
  }
  char digits[24];
  const auto n = std::to_chars(digits, digits + sizeof digits,
                               counter.fetch_add(1, std::memory_order_relaxed) + 1)
                     .ptr;
  std::string id;
  id.reserve(cached.prefix.size() + 1 + static_cast<std::size_t>(n - digits));
  id.append(cached.prefix).append(1, ':').append(digits, n);
  return id;
}

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
