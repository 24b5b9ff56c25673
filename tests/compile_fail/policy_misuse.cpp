// Compiled by the compile_fail_policy_* tests (tests/CMakeLists.txt): each case misuses a policy
// or serialize_cached and must fail with the library's static_assert message; case 0 compiles.

#include <cacheserialize/cacheserialize.hpp>
#include <memory>

namespace cs = cacheserialize;

struct ClockWithoutNow {
  bool wait_until(cs::Signal&, cs::TimePoint) const { return false; }
};

struct StorageWithoutExtend {
  std::optional<cs::StoredOutput> get(const cs::Key&) { return std::nullopt; }
  cs::AcquireResult acquire(const cs::Key&, const cs::AcquireRequest&) { return {}; }
  cs::ReleaseStatus release(const cs::Key&, const cs::Reservation&) {
    return cs::ReleaseStatus::not_held;
  }
  cs::StoreResult store_and_release(const cs::Key&, const cs::Reservation&, cs::StoredOutput,
                                    cs::TimePoint) {
    return {};
  }
  void put(const cs::Key&, cs::StoredOutput) {}
};

// A complete storage without the optional `reservation` member.
struct StorageWithoutReservation : StorageWithoutExtend {
  cs::ExtendResult extend(const cs::Key&, const cs::Reservation&, cs::TimePoint, cs::Duration) {
    return {};
  }
};

#ifndef CASE
#define CASE 0
#endif

int main() {
  cs::InMemoryStorage storage;
#if CASE == 0  // control
  auto f = cs::serialize_cached([](int n) { return n; }, cs::TaskOptions{"t", "1"}, storage);
  return f(0);
#elif CASE == 1
  cs::ReservationManager<ClockWithoutNow, cs::InMemoryStorage> m;
#elif CASE == 2
  cs::ReservationManager<cs::SystemClock, StorageWithoutExtend> m;
#elif CASE == 3  // a generic lambda: its parameters cannot be deduced
  auto f = cs::serialize_cached([](auto n) { return n; }, cs::TaskOptions{"t", "1"}, storage);
#elif CASE == 4  // nothing to cache
  auto f = cs::serialize_cached([](int) {}, cs::TaskOptions{"t", "1"}, storage);
#elif CASE == 5  // an out-parameter
  auto f = cs::serialize_cached([](int& n) { return n; }, cs::TaskOptions{"t", "1"}, storage);
#elif CASE == 6  // a move-only result cannot be handed to every caller
  auto f = cs::serialize_cached([](int n) { return std::make_unique<int>(n); },
                                cs::TaskOptions{"t", "1"}, storage);
#elif CASE == 7  // who holds a key: a storage that cannot tell
  cs::ReservationManager<cs::SystemClock, StorageWithoutReservation> m;
  (void)m.holder(cs::Key("t", "1", "k"));
#endif
  return 0;
}
