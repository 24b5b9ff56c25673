#pragma once

/// @file cache_key.hpp
/// Cache keys: which task, which version of it, and which inputs. A key's bytes are canonical
/// (see serializer.hpp), so the same call gives the same key, and the same SHA-256 digest, in
/// every thread, process, compiler and platform; storages shared between machines rely on it.
///
/// ## Key bytes, format 1
///
///     "CSK" 0x01                       magic and key format version
///     str  task name                   Writer key mode, tag 's' + 8-byte length + bytes
///     str  interface                   e.g. "(n:int)->int"
///     str  cache_version
///     uint number of inputs            tag 'u' + 8 bytes
///     then per input, in order: its value in key mode, or the one byte '-' if it is ignored
///
/// As with Flyte's cache_ignore_input_vars, an ignored input does not change the key, but which
/// positions are ignored does (it is part of the bytes).

#include <array>
#include <cstddef>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "detail/sha256.hpp"
#include "serializer.hpp"

namespace cacheserialize {

/// What a cached task is: its name and its interface. Both are part of every key, so that two
/// tasks, or two versions of a task's interface, never share cache entries.
struct TaskSignature {
  /// The task's name, unique among the tasks sharing a storage ("square", "pkg.train_model").
  std::string name;
  /// The task's inputs and output, e.g. "(n:int)->int". Derived from the C++ types when empty.
  std::string interface;
};

/// A concrete, type-erased cache key: what storages receive. Copies share the task name and
/// version, so copying a key costs one string copy.
class Key {
 public:
  /// @param task the task's name, for messages.
  /// @param cache_version the task's cache version, for messages.
  /// @param encoded the key's canonical bytes, which alone decide equality.
  Key(std::string task, std::string cache_version, std::string encoded)
      : meta_(std::make_shared<const Meta>(Meta{std::move(task), std::move(cache_version)})),
        encoded_(std::move(encoded)) {}

  // A wrapper's call uses a key that borrows its schema's task name and version instead of
  // sharing them (detail::KeyAccess): that spares every call two atomic reference-count updates
  // on one cache line that all threads calling the task would share. Copies and moves of such a
  // key share ownership like any other key's, so they may outlive the call.
  /// Copies share the task name and version with `other`.
  Key(const Key& other) : meta_(other.shared_meta()), encoded_(other.encoded_) {}
  /// Takes `other`'s bytes; `other` is left valid but unspecified.
  Key(Key&& other) noexcept
      : meta_(other.lender_ ? *other.lender_ : std::move(other.meta_)),
        encoded_(std::move(other.encoded_)) {
    other.lender_ = nullptr;
  }
  /// Copies `other`, sharing its task name and version.
  Key& operator=(const Key& other) {
    if (this != &other) {
      meta_ = other.shared_meta();
      lender_ = nullptr;
      encoded_ = other.encoded_;
    }
    return *this;
  }
  /// Takes `other`'s bytes; `other` is left valid but unspecified.
  Key& operator=(Key&& other) noexcept {
    if (this != &other) {
      meta_ = other.lender_ ? *other.lender_ : std::move(other.meta_);
      lender_ = nullptr;
      other.lender_ = nullptr;
      encoded_ = std::move(other.encoded_);
    }
    return *this;
  }
  ~Key() = default;

  /// @return the task's name, for messages (the encoded bytes carry it too).
  const std::string& task() const noexcept {
    const Meta* m = meta();
    return m ? m->task : empty();
  }
  /// @return the task's cache version, for messages (the encoded bytes carry it too).
  const std::string& cache_version() const noexcept {
    const Meta* m = meta();
    return m ? m->cache_version : empty();
  }
  /// @return the canonical bytes (they include the task and version); in-process storages hash
  ///         and compare these.
  const std::string& encoded() const noexcept { return encoded_; }

  /// @return the lowercase hex SHA-256 of `encoded()`, the name shared storages file the key
  ///         under. It is computed on each call rather than cached, so that a const Key holds no
  ///         hidden mutable state and stays safe to share between threads.
  std::string digest() const { return detail::sha256_hex(encoded_); }

  /// @return "task 'square' version '1.0' key 3f2a9c1e5b7d" (the digest's first 12 hex digits),
  ///         the form every error message names a key in.
  std::string describe() const {
    return "task '" + task() + "' version '" + cache_version() + "' key " + digest().substr(0, 12);
  }

  /// @return whether the keys' canonical bytes are equal: task, version and inputs alike.
  friend bool operator==(const Key& a, const Key& b) noexcept { return a.encoded_ == b.encoded_; }
  /// @return `!(a == b)`.
  friend bool operator!=(const Key& a, const Key& b) noexcept { return !(a == b); }

 private:
  template <class Signature>
  friend class KeySchema;

  struct Meta {
    std::string task;
    std::string cache_version;
  };

  // The schema's keys; it writes their bytes in place.
  explicit Key(std::shared_ptr<const Meta> meta) noexcept : meta_(std::move(meta)) {}
  // A borrowed key: valid while `*lender` (a schema's) is.
  explicit Key(const std::shared_ptr<const Meta>* lender) noexcept : lender_(lender) {}

  const Meta* meta() const noexcept { return lender_ ? lender_->get() : meta_.get(); }
  std::shared_ptr<const Meta> shared_meta() const noexcept { return lender_ ? *lender_ : meta_; }

  static const std::string& empty() noexcept {
    static const std::string none;
    return none;
  }

  std::shared_ptr<const Meta> meta_;                     // null in a borrowed or a moved-from key
  const std::shared_ptr<const Meta>* lender_ = nullptr;  // set in a borrowed key only
  std::string encoded_;
};

namespace detail {

/// For SerializedFunction::call: a key for the duration of one call, which borrows its schema's
/// metadata (see Key's copy constructor).
struct KeyAccess {
  template <class Schema, class... Inputs>
  static Key borrowed(const Schema& schema, const Inputs&... inputs) {
    return schema.make_borrowed(inputs...);
  }
};

/// A guess at an input's encoded size, so that making a key allocates its string once.
template <class T>
std::size_t encoded_size_hint(const T& value) noexcept {
  if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, std::string_view>) {
    return 9 + value.size();
  } else if constexpr (std::is_arithmetic_v<T> || std::is_enum_v<T>) {
    return 9;
  } else {
    return 64;
  }
}

[[noreturn]] inline void invalid_signature(const std::string& message) {
  throw std::invalid_argument("cacheserialize: " + message);
}

}  // namespace detail

/// Makes the keys of one task. The task's name, interface, version and input count are
/// validated and encoded once, so making a key only encodes the inputs.
/// @tparam Signature the task's function type `R(Inputs...)`.
template <class Signature>
class KeySchema {
  static_assert(std::is_function_v<Signature>,
                "cacheserialize: KeySchema<Signature> needs a function type, e.g. "
                "KeySchema<int(int, std::string)>");
};

/// The schema of a task whose inputs are `Inputs...` and whose result is `R`.
/// @tparam R the task's result type (it shows in the derived interface only).
/// @tparam Inputs the task's input types, in order.
template <class R, class... Inputs>
class KeySchema<R(Inputs...)> {
 public:
  /// The number of inputs, ignored ones included.
  static constexpr std::size_t input_count = sizeof...(Inputs);

  /// @param sig the task's name and interface; an empty interface is derived from the types:
  ///        "(n:int,s:str)->int", with the name "opaque" for a result without a serializer
  ///        and no arrow part for a void result.
  /// @param cache_version the version of the task's results: change it to invalidate them.
  /// @param input_names names of the inputs, in order, or none; needed for `ignored_inputs`.
  /// @param ignored_inputs names of inputs that do not change the key (a logger, a thread
  ///        count), like Flyte's cache_ignore_input_vars.
  /// @throws std::invalid_argument for an empty name or version, a wrong number of input
  ///         names, an empty or duplicate input name, or an ignored name that names no input.
  KeySchema(TaskSignature sig, std::string cache_version, std::vector<std::string> input_names = {},
            std::vector<std::string> ignored_inputs = {})
      : sig_(std::move(sig)) {
    validate(cache_version, input_names, ignored_inputs);
    for (std::size_t i = 0; i < input_names.size(); ++i) {
      for (const auto& ignored : ignored_inputs) {
        if (ignored == input_names[i]) ignored_[i] = true;
      }
    }
    if (sig_.interface.empty()) sig_.interface = derive_interface(input_names);

    prefix_.append("CSK\x01", 4);
    Writer w(prefix_, Writer::Mode::key);
    w.write_string(sig_.name);
    w.write_string(sig_.interface);
    w.write_string(cache_version);
    w.write_uint(input_count);
    meta_ = std::make_shared<const Key::Meta>(Key::Meta{sig_.name, std::move(cache_version)});
  }

  /// The hot path: copies the pre-encoded prefix and appends the inputs, in one allocation when
  /// the size guess holds. It changes nothing, so threads may share one schema.
  /// @param inputs the call's inputs; ignored ones are not encoded (and need not be meaningful).
  /// @return the key of a call with these inputs.
  Key make(const std::decay_t<Inputs>&... inputs) const {
    Key key(meta_);
    encode(key.encoded_, inputs...);
    return key;
  }

  /// @return the signature, with the interface derived if it was empty.
  const TaskSignature& signature() const noexcept { return sig_; }
  /// @return the cache version every key of this schema carries.
  const std::string& cache_version() const noexcept {
    return meta_ ? meta_->cache_version : Key::empty();
  }

 private:
  void validate(const std::string& cache_version, const std::vector<std::string>& input_names,
                const std::vector<std::string>& ignored_inputs) const {
    if (sig_.name.empty()) {
      detail::invalid_signature("the task name is empty: TaskSignature::name must name the task");
    }
    const std::string task = "task '" + sig_.name + "'";
    if (cache_version.empty()) {
      detail::invalid_signature(task +
                                " has an empty cache_version: give it one, and change it "
                                "whenever the task's results change");
    }
    if (!input_names.empty() && input_names.size() != input_count) {
      detail::invalid_signature(task + " takes " + std::to_string(input_count) + " input" +
                                (input_count == 1 ? "" : "s") + " but " +
                                std::to_string(input_names.size()) + " input names were given");
    }
    std::string all_names;
    for (std::size_t i = 0; i < input_names.size(); ++i) {
      if (input_names[i].empty()) {
        detail::invalid_signature(task + ": input name " + std::to_string(i + 1) + " is empty");
      }
      for (std::size_t j = 0; j < i; ++j) {
        if (input_names[j] == input_names[i]) {
          detail::invalid_signature(task + ": input name '" + input_names[i] + "' is given twice");
        }
      }
      all_names += (i == 0 ? "" : ", ") + input_names[i];
    }
    if (!ignored_inputs.empty() && input_names.empty()) {
      detail::invalid_signature(task +
                                ": ignored_inputs needs input_names, to tell which inputs "
                                "they name");
    }
    for (const auto& ignored : ignored_inputs) {
      bool found = false;
      for (const auto& name : input_names) found = found || name == ignored;
      if (!found) {
        detail::invalid_signature(task + ": ignored input '" + ignored +
                                  "' is not an input name (the inputs are: " + all_names + ")");
      }
    }
  }

  static std::string derive_interface(const std::vector<std::string>& input_names) {
    std::string out = "(";
    append_input_types(out, input_names, std::index_sequence_for<Inputs...>{});
    out += ")";
    if constexpr (!std::is_void_v<R>) {
      using Result = std::remove_cv_t<std::remove_reference_t<R>>;
      out += "->";
      if constexpr (is_encodable_v<Result> || is_decodable_v<Result>) {
        out += type_name<Result>();
      } else {
        out += "opaque";  // in-process outputs need no serializer
      }
    }
    return out;
  }

  template <std::size_t... I>
  static void append_input_types(std::string& out,
                                 [[maybe_unused]] const std::vector<std::string>& input_names,
                                 std::index_sequence<I...>) {
    ((out += (I == 0 ? "" : ",") + (input_names.empty() ? std::string() : input_names[I] + ":") +
             type_name<std::decay_t<Inputs>>()),
     ...);
  }

  friend struct detail::KeyAccess;

  // A key that borrows this schema's metadata: it must not outlive the schema (its copies may).
  Key make_borrowed(const std::decay_t<Inputs>&... inputs) const {
    Key key(&meta_);
    encode(key.encoded_, inputs...);
    return key;
  }

  // Into the key's own string: returning a string to move into the key cost a call per key.
  void encode(std::string& encoded, const std::decay_t<Inputs>&... inputs) const {
    encoded.reserve(prefix_.size() + (std::size_t{0} + ... + detail::encoded_size_hint(inputs)));
    encoded.append(prefix_);
    append_inputs(encoded, std::index_sequence_for<Inputs...>{}, inputs...);
  }

  template <std::size_t... I>
  void append_inputs(std::string& encoded, std::index_sequence<I...>,
                     const std::decay_t<Inputs>&... inputs) const {
    [[maybe_unused]] Writer w(encoded, Writer::Mode::key);
    ((ignored_[I] ? w.write_ignored() : w.write(inputs)), ...);
  }

  TaskSignature sig_;
  std::shared_ptr<const Key::Meta> meta_;  // shared with every key made; null only if moved from
  std::string prefix_;
  std::array<bool, input_count> ignored_{};
};

/// A key built in one go, for one-off use; equal to
/// `KeySchema<void(Inputs...)>(sig, cache_version).make(inputs...)`. Prefer a `KeySchema` for
/// keys made repeatedly.
/// @tparam Inputs the inputs' types (char arrays are taken as strings).
template <class... Inputs>
class CacheKey : public Key {
 public:
  /// @throws std::invalid_argument as `KeySchema`'s constructor does.
  CacheKey(const TaskSignature& sig, const std::string& cache_version, const Inputs&... inputs)
      : Key(KeySchema<void(std::decay_t<const Inputs>...)>(sig, cache_version).make(inputs...)) {}
};

/// Deduces `CacheKey`'s input types from the constructor's arguments.
template <class... Inputs>
CacheKey(const TaskSignature&, const std::string&, const Inputs&...) -> CacheKey<Inputs...>;

}  // namespace cacheserialize

/// Hashes a key's canonical bytes, so keys can go into unordered containers.
namespace std {
/// Hashes `Key`s by their canonical bytes (`Key::encoded()`).
template <>
struct hash<cacheserialize::Key> {
  /// @return the hash of `key.encoded()`.
  std::size_t operator()(const cacheserialize::Key& key) const noexcept {
    return std::hash<std::string_view>{}(key.encoded());
  }
};
}  // namespace std
