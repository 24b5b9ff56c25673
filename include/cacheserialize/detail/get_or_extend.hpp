#pragma once

// The get-or-extend step of the storage contract's `acquire` (storage.hpp), for storages that
// take the decision in this process while they hold the key's lock (in memory, on a file
// system). Storages that decide it elsewhere (a database's SQL, a Redis script) encode the same
// table themselves.

#include <optional>
#include <string>
#include <utility>

#include "../clock.hpp"
#include "../storage.hpp"

namespace cacheserialize {
namespace detail {

/// Decides an acquisition from the key's current reservation:
/// - none, or an expired one of another owner: a new reservation for `req.owner` with a new
///   token (`previous` names the expired one), acquired;
/// - one of `req.owner`: the same token, a new expiry, acquired;
/// - a live one of another owner: unchanged, held, with its remaining lifetime.
/// @param current the key's reservation, if any; updated to what the storage must keep, which
///        changed exactly when the status is acquired.
/// @param new_token returns a token larger than any issued for the key; called only when the
///        reservation changes hands.
/// @return the result, without an output (hits are the caller's business).
template <class NewToken>
AcquireResult get_or_extend(std::optional<Reservation>& current, const AcquireRequest& req,
                            NewToken&& new_token) {
  AcquireResult result;
  const TimePoint expires = saturating_add(req.now, req.ttl);
  if (current) {
    Reservation& r = *current;
    if (r.owner == req.owner) {
      r.expires_at = expires;
      result.status = AcquireStatus::acquired;
      result.reservation = r;
      return result;
    }
    if (req.now < r.expires_at) {
      result.status = AcquireStatus::held;
      result.reservation = r;
      result.remaining = r.expires_at - req.now;
      return result;
    }
    result.previous = std::move(r);
  }
  current = Reservation{std::string(req.owner), std::forward<NewToken>(new_token)(), expires};
  result.status = AcquireStatus::acquired;
  result.reservation = *current;
  return result;
}

}  // namespace detail
}  // namespace cacheserialize
