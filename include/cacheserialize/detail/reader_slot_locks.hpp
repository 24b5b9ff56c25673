#pragma once

// ReaderSlotLocks: a set of reader-writer locks for read-mostly data (InMemoryStorage's shards),
// whose readers do not write a cache line that other threads' readers write.
//
// A std::shared_mutex (pthread_rwlock) keeps one reader count per lock: every reader of a hot
// lock increments and decrements the same word, so on several cores that cache line moves from
// core to core on every read, and reads on one hot lock scale no better than a mutex. Here each
// lock's reader count is split over `slots` counters, and each thread uses the counter of its own
// slot, so concurrent readers with distinct slots touch distinct cache lines. Writers pay for it:
// a writer waits until the counters of every slot are zero, so it reads `slots` cache lines.
// This is the "big-reader lock" trade: right where reads vastly outnumber writes.
//
// State, for lock `i`:
// - `count(k, i)` for each slot k: the number of readers of lock i, among the threads whose slot
//   is k, that have announced themselves and not yet left (possibly an announcement that is about
//   to be withdrawn, see below). The counters of one slot for all locks are packed together
//   (lock i and j of one slot may share a line): only threads of the same slot write them.
// - `writer(i).active`: true from the moment a writer has taken lock i's writer mutex and
//   announced itself until it releases the lock.
// - `writer(i).mu`: held by the writer of lock i for the whole write section; writers exclude
//   each other with it, and readers that meet a writer wait on it.
//
// Reader (lock_shared): increment count(slot, i); load active. If false, the read section may
// start. If true, a writer is pending or writing: decrement count(slot, i) (withdraw), lock and
// unlock writer(i).mu (which blocks until that writer is done), and start again.
// Reader (unlock_shared): decrement count(slot, i).
// Writer (lock): lock writer(i).mu; store active = true; wait until every count(k, i) is zero
// (a short spin, then yielding the processor between scans).
// Writer (unlock): store active = false; unlock writer(i).mu.
//
// Ordering. This is the store-buffering (Dekker) pattern: the reader writes its counter then
// reads the flag, the writer writes the flag then reads the counters. The increment, the flag
// store and both loads are seq_cst, so they appear in one total order S consistent with each
// thread's program order. Take a reader R and a writer W of the same lock:
// - if R's increment precedes W's flag store in S, W's later scan of R's counter (after its own
//   store in S) reads a value that includes R's increment unless R has already decremented it;
//   so W waits for R to leave. W's acquire load of the decrement's value makes R's reads happen
//   before W's writes (R's decrement is a release).
// - if W's flag store precedes R's increment in S, R's load of the flag (after its increment in
//   S) reads true, or the false W stores when it releases (a release store: W's writes then
//   happen before R's reads). R cannot read an older false: that one happened before W's store.
// Either R waits for W or W waits for R: a read and a write section never overlap. Writers
// exclude each other with the mutex. A reader that backs off and then takes the writer mutex
// synchronises with the writer that released it. A counter is never negative: a decrement
// follows its own increment on the same counter.
//
// Fairness. A pending writer turns every new reader away, so it waits only for the read
// sections in progress when it announced itself: a stream of readers cannot starve a writer.
// Readers that met a writer queue on its mutex like writers do; std::mutex makes no fairness
// promise, so a reader can in principle lose to writers again and again (not a concern where
// writes are rare and short).
//
// Reentrancy: a thread must not take a lock it already holds, in either mode. In particular a
// reader that took lock i must not take it shared again: if a writer announced itself in
// between, the inner read waits for the writer, which waits for the outer read (deadlock). Read
// sections must therefore be short and call nothing that may take the same lock.
//
// Slots are per thread: the first time a thread takes a shared lock it draws the next number from
// a process-wide counter (round robin); lock sets mask it by their slot count (a power of two).
// Threads that share a slot are still correct: the counter counts them both, they only share its
// cache line again.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace cacheserialize {
namespace detail {

class ReaderSlotLocks {
  static constexpr std::size_t kLine = 64;  // bytes; the cache line size of current x86 and ARM
  using Count = std::atomic<std::uint32_t>;
  static constexpr std::size_t kPerLine = kLine / sizeof(Count);

 public:
  /// The slot count a lock set uses by default: twice the hardware threads, so that threads
  /// that run at the same time seldom share a slot, as a power of two in [8, 64]. The writer's
  /// scan reads one cache line per slot, hence the upper bound.
  static std::size_t default_slots() noexcept {
    const std::size_t wanted = 2 * std::max<std::size_t>(1, std::thread::hardware_concurrency());
    std::size_t slots = 8;
    while (slots < wanted && slots < 64) slots *= 2;
    return slots;
  }

  /// @param locks the number of locks (> 0).
  /// @param slots the number of reader counters per lock: a power of two > 0.
  /// Memory: `slots` x ceil(locks / 16) cache lines for the counters, plus one line per lock.
  /// @throws std::invalid_argument for a zero lock count or a slot count that is not a power of 2.
  explicit ReaderSlotLocks(std::size_t locks, std::size_t slots = default_slots())
      : locks_(locks), slots_(slots), lines_per_slot_((locks + kPerLine - 1) / kPerLine) {
    if (locks == 0 || slots == 0 || (slots & (slots - 1)) != 0) {
      throw std::invalid_argument(
          "cacheserialize::detail::ReaderSlotLocks: needs locks > 0 and a power-of-two slot "
          "count");
    }
    counts_ = std::make_unique<Line[]>(slots_ * lines_per_slot_);
    writers_ = std::make_unique<Writer[]>(locks_);
  }

  ReaderSlotLocks(const ReaderSlotLocks&) = delete;
  ReaderSlotLocks& operator=(const ReaderSlotLocks&) = delete;

  std::size_t size() const noexcept { return locks_; }
  std::size_t slots() const noexcept { return slots_; }

  /// Takes lock `i` shared. Returns what `unlock_shared` needs: the counter this thread
  /// announced itself on (so a read lock may be released from another thread).
  [[nodiscard]] Count& lock_shared(std::size_t i) {
    Count& count = count_of(thread_slot() & (slots_ - 1), i);
    Writer& w = writers_[i];
    for (;;) {
      count.fetch_add(1, std::memory_order_seq_cst);
      if (!w.active.load(std::memory_order_seq_cst)) return count;
      count.fetch_sub(1, std::memory_order_release);  // withdraw: the writer may be waiting on it
      std::lock_guard<std::mutex> wait_for_writer(w.mu);
    }
  }

  /// Releases a shared lock taken with `lock_shared`.
  static void unlock_shared(Count& count) noexcept {
    count.fetch_sub(1, std::memory_order_release);
  }

  /// Takes lock `i` exclusively: waits for the other writer, then for the readers in progress.
  void lock(std::size_t i) {
    Writer& w = writers_[i];
    w.mu.lock();
    w.active.store(true, std::memory_order_seq_cst);
    for (std::size_t k = 0; k < slots_; ++k) {
      const Count& count = count_of(k, i);
      for (unsigned spins = 0; count.load(std::memory_order_seq_cst) != 0; ++spins) {
        if (spins >= kSpins) std::this_thread::yield();
      }
    }
  }

  void unlock(std::size_t i) noexcept {
    Writer& w = writers_[i];
    w.active.store(false, std::memory_order_release);
    w.mu.unlock();
  }

  /// Holds lock `i` shared for its scope.
  class SharedGuard {
   public:
    SharedGuard(ReaderSlotLocks& locks, std::size_t i) : count_(locks.lock_shared(i)) {}
    ~SharedGuard() { unlock_shared(count_); }
    SharedGuard(const SharedGuard&) = delete;
    SharedGuard& operator=(const SharedGuard&) = delete;

   private:
    Count& count_;
  };

  /// Holds lock `i` exclusively for its scope.
  class UniqueGuard {
   public:
    UniqueGuard(ReaderSlotLocks& locks, std::size_t i) : locks_(locks), i_(i) { locks_.lock(i_); }
    ~UniqueGuard() { locks_.unlock(i_); }
    UniqueGuard(const UniqueGuard&) = delete;
    UniqueGuard& operator=(const UniqueGuard&) = delete;

   private:
    ReaderSlotLocks& locks_;
    std::size_t i_;
  };

 private:
  // Readers leave within a few hundred instructions: spin that many loads before yielding.
  static constexpr unsigned kSpins = 128;

  struct alignas(kLine) Line {
    Count counts[kPerLine]{};
  };
  struct alignas(kLine) Writer {
    std::mutex mu;
    std::atomic<bool> active{false};
  };

  Count& count_of(std::size_t slot, std::size_t i) const noexcept {
    return counts_[slot * lines_per_slot_ + i / kPerLine].counts[i % kPerLine];
  }

  // This thread's slot number, drawn once per thread, shared by every lock set.
  static std::size_t thread_slot() noexcept {
    static std::atomic<std::size_t> next{0};
    thread_local const std::size_t mine = next.fetch_add(1, std::memory_order_relaxed);
    return mine;
  }

  std::size_t locks_;
  std::size_t slots_;
  std::size_t lines_per_slot_;
  std::unique_ptr<Line[]> counts_;
  std::unique_ptr<Writer[]> writers_;
};

}  // namespace detail
}  // namespace cacheserialize
