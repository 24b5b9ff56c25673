#pragma once

/// @file errors.hpp
/// The library's exceptions: one small hierarchy rooted in `std::exception`. Bad arguments and
/// options are reported with `std::invalid_argument` instead, as the standard library does.
///
///     std::exception
///      └─ cacheserialize::error          every runtime failure of the library
///          ├─ storage_error              the storage could not do an operation
///          ├─ codec_error                bytes could not be encoded or decoded
///          ├─ timeout_error              a caller waited longer than its wait_timeout
///          └─ cancelled_error            a waiting caller was cancelled
///
/// Every exception names the key it concerns (`key()`, and inside `what()`), so a log line says
/// which task and which inputs failed. Copying an exception never throws.

#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "time.hpp"

namespace cacheserialize {

/// Base class of the library's exceptions.
class error : public std::exception {
 public:
  /// @return "cacheserialize: <what happened> [<key>]".
  const char* what() const noexcept override { return message_.what(); }

  /// @return the key the failure concerns, as `Key::describe()` writes it ("task 'square'
  ///         version '1.0' key 3f2a9c1e5b7d"), or an empty string when it concerns no key.
  const std::string& key() const noexcept { return *key_; }

 protected:
  /// @param message what happened, without the "cacheserialize: " prefix (added here).
  /// @param key the key concerned, as `Key::describe()` writes it, or empty.
  error(const std::string& message, std::string key)
      : message_(compose(message, key)),
        key_(std::make_shared<const std::string>(std::move(key))) {}

 private:
  static std::string compose(const std::string& message, const std::string& key) {
    std::string out = "cacheserialize: " + message;
    if (!key.empty()) out += " [" + key + "]";
    return out;
  }

  std::runtime_error message_;  // reference-counted, so copies cannot throw
  std::shared_ptr<const std::string> key_;
};

/// A storage operation failed: the store is unreachable, refused the operation, or answered
/// something that breaks the storage contract. The message carries the storage's own reason
/// (an OS error, a server message) but never credentials.
class storage_error : public error {
 public:
  /// @param message what failed and the storage's reason. @param key as for `error`.
  explicit storage_error(const std::string& message, std::string key = {})
      : error(message, std::move(key)) {}
};

/// A value could not be encoded to bytes, or bytes could not be decoded to the expected type
/// (truncated, corrupt, hostile, or of another type).
class codec_error : public error {
 public:
  /// @param message what could not be encoded or decoded. @param key as for `error`.
  explicit codec_error(const std::string& message, std::string key = {})
      : error(message, std::move(key)) {}
};

/// A caller waited for another holder longer than its `wait_timeout`. It carries who held the
/// reservation and until when, so an engine can report what the task was waiting for.
class timeout_error : public error {
 public:
  /// @param message how long the caller waited. @param key as for `error`.
  /// @param holder the owner id of the reservation waited on.
  /// @param holder_expires_at when that reservation was due to expire, as last seen.
  timeout_error(const std::string& message, std::string key, std::string holder,
                TimePoint holder_expires_at)
      : error(message, std::move(key)),
        holder_(std::make_shared<const std::string>(std::move(holder))),
        holder_expires_at_(holder_expires_at) {}

  /// @return the owner id of the reservation the caller was waiting on.
  const std::string& holder() const noexcept { return *holder_; }
  /// @return when that reservation was due to expire, as last seen by the caller.
  TimePoint holder_expires_at() const noexcept { return holder_expires_at_; }

 private:
  std::shared_ptr<const std::string> holder_;
  TimePoint holder_expires_at_;
};

/// A waiting caller's cancellation token was triggered. The caller held nothing, so nothing
/// needs cleaning up.
class cancelled_error : public error {
 public:
  /// @param message what was cancelled. @param key as for `error`.
  explicit cancelled_error(const std::string& message, std::string key = {})
      : error(message, std::move(key)) {}
};

namespace detail {

/// "cacheserialize: reason [key]" -> "reason [key]", to nest one error's message in another's.
inline std::string reason_of(const std::exception& e) {
  std::string s = e.what();
  const std::string prefix = "cacheserialize: ";
  if (s.compare(0, prefix.size(), prefix) == 0) s.erase(0, prefix.size());
  return s;
}

}  // namespace detail

}  // namespace cacheserialize
