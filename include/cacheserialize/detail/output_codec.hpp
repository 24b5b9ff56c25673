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

/// Decodes `out`, as storage `S` keeps outputs, into `value`.
/// @return why it cannot be decoded (`value` then stays empty); empty when it was decoded.
template <class S, class T>
std::string decode_output(const StoredOutput& out, std::optional<T>& value) {
  if constexpr (storage_traits<S>::stores_objects) {
    if (!out.object || !out.type || *out.type != typeid(T)) {
      return "the stored output is not of the expected type (two tasks with one name, version "
             "and interface but different return types?)";
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
      return "cannot decode the stored output: " + reason_of(e);
    }
  }
  return {};
}

/// @return `out` decoded as a `T`.
/// @throws codec_error if it cannot be.
template <class S, class T>
T decode_output_or_throw(const StoredOutput& out) {
  std::optional<T> value;
  const std::string why = decode_output<S>(out, value);
  if (!value) throw codec_error(why);
  return std::move(*value);
}

}  // namespace detail
}  // namespace cacheserialize
