#pragma once

// SHA-256 and CRC-32C each choose their fastest implementation at run time and keep it in one
// atomic function pointer; tests run each implementation ("path") in turn with OnPath.

#include <atomic>

namespace test {

/// Every use of the algorithm takes `path` while this lives; then the path chosen before.
/// @tparam Fn the function pointer type kept in `chosen`.
/// @tparam Path the algorithm's enumeration of paths.
template <class Fn, class Path>
class OnPath {
 public:
  OnPath(std::atomic<Fn>& chosen, bool (*select)(Path), Path path)
      : chosen_(chosen), previous_(chosen.load()), available_(select(path)) {}
  ~OnPath() { chosen_.store(previous_); }
  OnPath(const OnPath&) = delete;
  OnPath& operator=(const OnPath&) = delete;
  /// @return false if this build or processor has no such path (nothing was changed).
  bool available() const noexcept { return available_; }

 private:
  std::atomic<Fn>& chosen_;
  Fn previous_;
  bool available_;
};

}  // namespace test
