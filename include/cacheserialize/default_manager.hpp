#pragma once

/// @file default_manager.hpp
/// `default_manager(storage)`: the one manager that every `serialize_cached(fn, options,
/// storage)` wrapper over a copy of `storage` shares, so that wrappers made per task (or per
/// dynamic task) cost no heartbeat thread and no counters of their own.

#include <map>
#include <memory>
#include <mutex>
#include <typeindex>
#include <typeinfo>
#include <utility>

#include "clock.hpp"
#include "reservation.hpp"
#include "storage.hpp"

namespace cacheserialize {
namespace detail {

struct ManagerAccess {
  template <class C, class S>
  static std::shared_ptr<ManagerCore<C, S>> core(const ReservationManager<C, S>& m) noexcept {
    return m.core_;
  }
  template <class C, class S>
  static ReservationManager<C, S> manager(std::shared_ptr<ManagerCore<C, S>> core) noexcept {
    return ReservationManager<C, S>(std::move(core));
  }
};

/// The default managers alive, by storage type and handle identity. Entries do not keep their
/// manager alive: it lives while a wrapper or a handle uses it. Never destroyed, so that a
/// wrapper destroyed during static destruction still finds it.
struct DefaultManagers {
  std::mutex mu;
  std::map<std::pair<std::type_index, const void*>, std::weak_ptr<void>> cores;

  static DefaultManagers& instance() {
    static DefaultManagers* const registry = new DefaultManagers;
    return *registry;
  }
};

}  // namespace detail

/// @return the manager shared by every `serialize_cached(fn, options, storage)` wrapper over a
///         copy of `storage`: one heartbeat thread, one set of counters (`stats()`), the system
///         clock and default `ManagerOptions`. It is made on first use and lives while a wrapper
///         or a returned handle uses it; the next use after that makes a new one. Wrappers that
///         need other options, a listener or another clock take a `ReservationManager` of
///         their own instead.
/// @tparam Storage a storage policy with `const void* identity() const noexcept` (all four of
///         the library's have it).
/// Thread safety: may be called concurrently.
template <class Storage>
ReservationManager<SystemClock, Storage> default_manager(const Storage& storage) {
  static_assert(detail::has_identity<Storage>::value,
                "cacheserialize::default_manager needs the storage member `const void* "
                "identity() const noexcept`");
  using Core = detail::ManagerCore<SystemClock, Storage>;
  detail::DefaultManagers& registry = detail::DefaultManagers::instance();
  const std::pair<std::type_index, const void*> id(typeid(Storage), storage.identity());
  std::lock_guard<std::mutex> lock(registry.mu);
  const auto found = registry.cores.find(id);
  if (found != registry.cores.end()) {
    if (std::shared_ptr<void> core = found->second.lock()) {
      return detail::ManagerAccess::manager(std::static_pointer_cast<Core>(std::move(core)));
    }
  }
  for (auto i = registry.cores.begin(); i != registry.cores.end();) {  // forget the dead ones
    i = i->second.expired() ? registry.cores.erase(i) : std::next(i);
  }
  ReservationManager<SystemClock, Storage> manager(storage);
  registry.cores[id] = detail::ManagerAccess::core(manager);
  return manager;
}

}  // namespace cacheserialize
