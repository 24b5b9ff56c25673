#pragma once

// When a waiter looks at a held key again. Free functions of plain values, so that the jitter's
// distribution and the wake-up rules are tested with an injected random source.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>

#include "../clock.hpp"
#include "../time.hpp"

namespace cacheserialize {
namespace detail {

/// How soon a waiter first looks again at a live holder that the storage says has no time left:
/// its expiry falls within the storage's clock resolution (Redis's PTTL counts whole
/// milliseconds), so a takeover is about to become possible. While the holder keeps being
/// reported so, the pause doubles up to the poll interval: a storage that always answers zero
/// is polled, not spun on.
inline constexpr Duration expiry_recheck = std::chrono::milliseconds(1);

/// @param poll   the poll interval (positive).
/// @param random a uniformly distributed 64-bit value.
/// @return `poll` scaled uniformly over [0.8, 1.2] in 401 steps (both ends included), so that
///         waiters on one key spread their polls out. Computed without overflow for any poll;
///         a poll beyond half of `Duration`'s range is returned unjittered.
inline Duration jittered_poll(Duration poll, std::uint64_t random) noexcept {
  using Rep = Duration::rep;
  if (poll > Duration(std::numeric_limits<Rep>::max() / 2)) return poll;
  const Rep p = poll.count();
  const Rep step = static_cast<Rep>(random % 401);  // 0..400 -> 0.8..1.2 x poll
  return Duration(p - p / 5 + (p / 1000) * step + (p % 1000) * step / 1000);
}

/// When a waiter next looks at a key held by another owner: at the holder's expiry (a takeover
/// is then possible), at the give-up time, or, for a storage that cannot notify, at the next
/// jittered poll, whichever comes first. A holder reported with no time left is looked at again
/// after `recheck`, never a whole poll later.
/// @param now       the waiter's clock's time.
/// @param remaining the holder's remaining lifetime, as the storage reported it.
/// @param give_up   when the waiter stops waiting.
/// @param poll      `jittered_poll(...)`.
/// @param notifies  whether the storage wakes waiters on a store or release.
/// @param recheck   the pause after a "no time left" answer: `expiry_recheck`, doubled by
///                  `next_recheck` while such answers repeat.
inline TimePoint wake_time(TimePoint now, Duration remaining, TimePoint give_up, Duration poll,
                           bool notifies, Duration recheck = expiry_recheck) noexcept {
  const Duration until_expiry = remaining.count() > 0 ? remaining : std::min(recheck, poll);
  const Duration sleep = notifies ? until_expiry : std::min(until_expiry, poll);
  return std::min(saturating_add(now, sleep), give_up);
}

/// @return the pause after the next "no time left" answer, given this answer's `remaining` and
///         the current pause: reset by a holder with time left, else doubled up to `poll`.
inline Duration next_recheck(Duration remaining, Duration recheck, Duration poll) noexcept {
  if (remaining.count() > 0) return expiry_recheck;
  return recheck >= poll / 2 ? poll : recheck * 2;
}

}  // namespace detail
}  // namespace cacheserialize
