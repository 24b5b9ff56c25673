#pragma once

// A small pool of connections, opened on demand up to a limit. A thread borrows a connection for
// one statement; a connection that failed is dropped instead of returned, so the next borrower
// opens a fresh one (that is how a storage reconnects after a server restart).

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "connection.hpp"

namespace cacheserialize {
namespace detail {
namespace pg {

class Pool {
 public:
  /// @param setup run on each new connection after the session settings (PREPAREs), one round
  ///        trip.
  Pool(const ConnectSettings& settings, std::size_t size, std::string setup,
       std::atomic<std::uint64_t>& opened)
      : settings_(settings), size_(size), setup_(std::move(setup)), opened_(opened) {}

  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  /// A borrowed connection, returned to the pool on destruction unless dropped.
  class Lease {
   public:
    Lease(Pool& pool, std::unique_ptr<Connection> c) : pool_(&pool), c_(std::move(c)) {}
    Lease(Lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)), c_(std::move(other.c_)) {}
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() {
      if (pool_) pool_->give_back(std::move(c_));
    }

    Connection& operator*() const noexcept { return *c_; }
    Connection* operator->() const noexcept { return c_.get(); }
    /// Closes the connection instead of returning it.
    void drop() noexcept { c_.reset(); }

   private:
    Pool* pool_;
    std::unique_ptr<Connection> c_;
  };

  /// Borrows an idle connection, or opens one if fewer than `size` exist, or waits for one to be
  /// returned (at most the connect timeout plus a statement bound, the longest a borrower keeps
  /// one).
  /// @throws Failure if no connection could be had.
  Lease take() {
    std::unique_lock<std::mutex> lock(mu_);
    const auto bound = settings_.connect_timeout + settings_.statement_bound;
    if (!cv_.wait_for(lock, bound, [&] { return !idle_.empty() || open_ < size_; })) {
      throw Failure(FailureKind::timeout,
                    "all " + std::to_string(size_) + " connections stayed busy for " +
                        seconds_text(std::chrono::duration_cast<std::chrono::milliseconds>(bound)) +
                        " (raise PostgresOptions::pool_size)");
    }
    while (!idle_.empty()) {
      std::unique_ptr<Connection> c = std::move(idle_.back());
      idle_.pop_back();
      lock.unlock();
      if (c->usable()) return Lease(*this, std::move(c));
      c.reset();  // closed while idle (a server restart): open a fresh one instead
      lock.lock();
      --open_;
    }
    ++open_;
    lock.unlock();
    try {
      return Lease(*this, open());
    } catch (...) {
      lock.lock();
      --open_;
      cv_.notify_one();
      throw;
    }
  }

  /// Puts an already open connection in the pool (the storage's first one).
  void adopt(std::unique_ptr<Connection> c) {
    std::lock_guard<std::mutex> lock(mu_);
    ++open_;
    idle_.push_back(std::move(c));
    cv_.notify_one();
  }

  /// Opens a connection as the pool does, without counting it in the pool.
  std::unique_ptr<Connection> open() {
    const Deadline deadline = SteadyClock::now() + settings_.connect_timeout;
    std::unique_ptr<Connection> c = Connection::open(settings_, deadline);
    if (!setup_.empty()) c->simple(setup_, deadline);
    opened_.fetch_add(1, std::memory_order_relaxed);
    return c;
  }

 private:
  void give_back(std::unique_ptr<Connection> c) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (c) {
      idle_.push_back(std::move(c));
    } else {
      --open_;
    }
    cv_.notify_one();
  }

  const ConnectSettings& settings_;
  const std::size_t size_;
  const std::string setup_;
  std::atomic<std::uint64_t>& opened_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_;
  std::size_t open_ = 0;  // idle plus borrowed
};

}  // namespace pg
}  // namespace detail
}  // namespace cacheserialize
