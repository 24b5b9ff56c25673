#pragma once

// A value as a storage keeps it, and back: the C++ object itself for an object storage
// (`stores_objects`), its `serializer<T>` encoding for the others. One place for the rule, shared
// by serialize_cached and the engine API (`Hold::store_value`, `Claim::value`).

#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <typeinfo>

#include "../errors.hpp"
#include "../serializer.hpp"
#include "../storage.hpp"

namespace cacheserialize {
namespace detail {

/// @return `value` as storage `S` keeps outputs.
template <class S, class T>
StoredOutput encode_output(const T& value) {
  if constexpr (storage_traits<S>::stores_objects) {
    static_assert(std::is_copy_constructible<T>::value,
                  "cacheserialize: an object storage keeps a copy of the output: T must be "
                  "copy-constructible");
    return StoredOutput::from_object(std::make_shared<const T>(value));
  } else {
    static_assert(is_encodable_v<T>,
                  "cacheserialize: this storage keeps outputs as bytes: T needs "
                  "cacheserialize::serializer<T> with encode");
    return StoredOutput::from_bytes(encode_value(value));
  }
}

/// Decodes `out`, as storage `S` keeps outputs, into `value`. On a hit's path: no string is
/// made unless the output cannot be decoded.
/// @param why if not null, set to why the output cannot be decoded.
/// @return whether it was decoded (`value` is set only then).
template <class S, class T>
bool decode_output(const StoredOutput& out, std::optional<T>& value, std::string* why) {
  if constexpr (storage_traits<S>::stores_objects) {
    if (!out.object || !out.type || *out.type != typeid(T)) {
      if (why) {
        *why =
            "the stored output is not of the expected type (two tasks with one name, "
            "version and interface but different return types?)";
      }
      return false;
    }
    value.emplace(*static_cast<const T*>(out.object.get()));
  } else {
    static_assert(is_decodable_v<T>,
                  "cacheserialize: this storage keeps outputs as bytes: T needs "
                  "cacheserialize::serializer<T> with decode");
    try {
      value.emplace(decode_value<T>(out.bytes));
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {  // the serializer's own, or a user decode's
      if (why) *why = "cannot decode the stored output: " + reason_of(e);
      return false;
    }
  }
  return true;
}

/// @return `out` decoded as a `T`.
/// @throws codec_error if it cannot be.
template <class S, class T>
T decode_output_or_throw(const StoredOutput& out) {
  std::optional<T> value;
  std::string why;
  if (!decode_output<S>(out, value, &why)) throw codec_error(why);
  return std::move(*value);
}

}  // namespace detail
}  // namespace cacheserialize
