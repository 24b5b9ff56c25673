#pragma once

// The storage contract (storage.hpp) as one reusable specification. Every storage's tests call
// check_storage_contract with a factory that returns a fresh, empty store; the sections below
// then hold for it. Storages whose clock is their own (a database server) pass
// client_time = false, which skips the sections that pick `now` by hand.

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "support.hpp"

namespace test {

using namespace std::chrono_literals;

template <class S>
cs::StoredOutput make_output(const std::string& text) {
  if constexpr (cs::storage_traits<S>::stores_objects) {
    return cs::StoredOutput::from_object(std::make_shared<const std::string>(text));
  } else {
    return cs::StoredOutput::from_bytes(text);
  }
}

template <class S>
std::string text_of(const cs::StoredOutput& out) {
  if constexpr (cs::storage_traits<S>::stores_objects) {
    REQUIRE(out.object);
    return *static_cast<const std::string*>(out.object.get());
  } else {
    return out.bytes;
  }
}

struct ContractOptions {
  bool client_time = true;  // the storage compares expiries with the `now` it is given
};

template <class MakeStorage>
void check_storage_contract(MakeStorage make, ContractOptions options = {}) {
  auto storage = make();
  using S = decltype(storage);
  const cs::Key key("task", "1", std::string("key\0with nul", 12));
  const cs::Key other_key("task", "1", "another key");
  const cs::TimePoint t0 = cs::ManualClock::default_start();
  const cs::Duration ttl = 30s;
  auto request = [&](const std::string& owner, cs::TimePoint now, bool overwrite = false) {
    return cs::AcquireRequest{owner, now, ttl, overwrite};
  };

  SECTION("an empty store has no output and a free key is acquired with a fresh token") {
    CHECK_FALSE(storage.get(key));
    const cs::AcquireResult r = storage.acquire(key, request("a", t0));
    CHECK(r.status == cs::AcquireStatus::acquired);
    CHECK(r.reservation.owner == "a");
    CHECK(r.reservation.token > 0);
    CHECK_FALSE(r.previous);
    if (options.client_time) CHECK(r.reservation.expires_at == t0 + ttl);
    CHECK_FALSE(storage.get(other_key));  // keys are independent
  }

  SECTION("a live reservation of another owner is reported unchanged, with its remaining life") {
    const auto mine = storage.acquire(key, request("a", t0)).reservation;
    const cs::AcquireResult r = storage.acquire(key, request("b", t0 + 10s));
    CHECK(r.status == cs::AcquireStatus::held);
    CHECK(r.reservation.owner == "a");
    CHECK(r.reservation.token == mine.token);
    CHECK(r.reservation.expires_at == mine.expires_at);
    if (options.client_time) CHECK(r.remaining == 20s);
    CHECK(r.remaining > 0s);
  }

  SECTION("get-or-extend: the owner's own reservation gets a new expiry and keeps its token") {
    const auto first = storage.acquire(key, request("a", t0)).reservation;
    const cs::AcquireResult again = storage.acquire(key, request("a", t0 + 5s));
    CHECK(again.status == cs::AcquireStatus::acquired);
    CHECK(again.reservation.token == first.token);
    if (options.client_time) CHECK(again.reservation.expires_at == t0 + 5s + ttl);
  }

  if (options.client_time) {
    SECTION("an expired reservation is taken over exactly at its expiry, and not before") {
      const auto dead = storage.acquire(key, request("dead", t0)).reservation;
      CHECK(storage.acquire(key, request("b", t0 + ttl - 1ns)).status == cs::AcquireStatus::held);
      const cs::AcquireResult r = storage.acquire(key, request("b", t0 + ttl));
      REQUIRE(r.status == cs::AcquireStatus::acquired);
      CHECK(r.reservation.owner == "b");
      CHECK(r.reservation.token > dead.token);
      REQUIRE(r.previous);
      CHECK(r.previous->owner == "dead");
      CHECK(r.previous->token == dead.token);
    }

    SECTION("an extension only succeeds for the current owner and token") {
      const auto a = storage.acquire(key, request("a", t0)).reservation;
      SECTION("the owner extends, even after expiry if nobody took over") {
        const cs::ExtendResult r = storage.extend(key, a, t0 + ttl + 1s, ttl);
        CHECK(r.status == cs::ExtendStatus::extended);
        CHECK(r.current.expires_at == t0 + ttl + 1s + ttl);
        CHECK(storage.acquire(key, request("b", t0 + ttl + 2s)).status == cs::AcquireStatus::held);
      }
      SECTION("a holder whose reservation was taken over learns that it is lost") {
        const auto b = storage.acquire(key, request("b", t0 + ttl)).reservation;
        const cs::ExtendResult r = storage.extend(key, a, t0 + ttl + 1s, ttl);
        CHECK(r.status == cs::ExtendStatus::lost);
        CHECK(r.current.owner == "b");
        CHECK(r.current.token == b.token);
      }
      SECTION("a stale token of the same owner does not extend") {
        cs::Reservation stale = a;
        stale.token += 1000;
        CHECK(storage.extend(key, stale, t0 + 1s, ttl).status == cs::ExtendStatus::lost);
      }
    }

    SECTION("fencing: a stale holder's store is rejected and changes nothing") {
      const auto a = storage.acquire(key, request("a", t0)).reservation;
      const auto b = storage.acquire(key, request("b", t0 + ttl)).reservation;
      const cs::StoreResult stale =
          storage.store_and_release(key, a, make_output<S>("A"), t0 + ttl);
      CHECK(stale.status == cs::StoreStatus::rejected);
      CHECK(stale.current.owner == "b");
      CHECK_FALSE(storage.get(key));
      CHECK(storage.store_and_release(key, b, make_output<S>("B"), t0 + ttl).status ==
            cs::StoreStatus::stored);
      REQUIRE(storage.get(key));
      CHECK(text_of<S>(*storage.get(key)) == "B");
      CHECK(storage.store_and_release(key, a, make_output<S>("A"), t0 + ttl).status ==
            cs::StoreStatus::rejected);
      CHECK(text_of<S>(*storage.get(key)) == "B");
    }
  }

  SECTION("a second store by a reservation already stored is rejected and changes nothing") {
    const auto a = storage.acquire(key, request("a", t0)).reservation;
    REQUIRE(storage.store_and_release(key, a, make_output<S>("A"), t0).status ==
            cs::StoreStatus::stored);
    const cs::StoreResult other = storage.store_and_release(key, a, make_output<S>("B"), t0);
    CHECK(other.status == cs::StoreStatus::rejected);
    CHECK(other.current.owner.empty());  // nobody holds the key: there is no holder to report
    const cs::StoreResult same = storage.store_and_release(key, a, make_output<S>("A"), t0);
    CHECK(same.status == cs::StoreStatus::rejected);
    REQUIRE(storage.get(key));
    CHECK(text_of<S>(*storage.get(key)) == "A");
    CHECK(storage.release(key, a) == cs::ReleaseStatus::not_held);
  }

  SECTION("extend_many answers each item exactly as extend would, each fenced on its own") {
    STATIC_REQUIRE(cs::storage_traits<S>::extends_in_batches);
    const cs::Key mine_key("task", "1", "mine");
    const cs::Key other_key_("task", "1", "held by another owner");
    const cs::Key free_key("task", "1", "never held");
    const cs::Key released_key("task", "1", "released");
    const auto mine = storage.acquire(mine_key, request("a", t0)).reservation;
    const auto others = storage.acquire(other_key_, request("b", t0)).reservation;
    const cs::Reservation not_mine{"a", others.token, t0};  // b's token, a's name: fenced off
    const cs::Reservation never{"a", 1, t0};
    const auto gone = storage.acquire(released_key, request("a", t0)).reservation;
    REQUIRE(storage.release(released_key, gone) == cs::ReleaseStatus::released);
    std::vector<cs::Extension> batch = {{&mine_key, &mine, ttl},
                                        {&other_key_, &not_mine, ttl},
                                        {&free_key, &never, ttl},
                                        {&released_key, &gone, ttl}};
    // expected: status, then the holder reported (owner, token)
    std::vector<std::tuple<cs::ExtendStatus, std::string, std::uint64_t>> expected = {
        {cs::ExtendStatus::extended, "a", mine.token},
        {cs::ExtendStatus::lost, "b", others.token},
        {cs::ExtendStatus::lost, "", 0},
        {cs::ExtendStatus::lost, "", 0}};
    cs::TimePoint now = t0 + 1s;
    cs::Key expired_key("task", "1", "expired, nobody took it");
    cs::Key retaken_key("task", "1", "expired and taken over");
    cs::Reservation expired, retaken;
    if (options.client_time) {
      expired = storage.acquire(expired_key, request("a", t0)).reservation;
      retaken = storage.acquire(retaken_key, request("a", t0)).reservation;
      now = t0 + ttl + 1s;
      const auto c = storage.acquire(retaken_key, request("c", t0 + ttl)).reservation;
      batch.push_back({&expired_key, &expired, ttl});
      batch.push_back({&retaken_key, &retaken, ttl});
      expected.emplace_back(cs::ExtendStatus::extended, "a", expired.token);
      expected.emplace_back(cs::ExtendStatus::lost, "c", c.token);
    }
    const std::vector<cs::ExtendResult> r = storage.extend_many(batch, now);
    REQUIRE(r.size() == batch.size());
    for (std::size_t i = 0; i < r.size(); ++i) {
      INFO("item " << i);
      CHECK(r[i].status == std::get<0>(expected[i]));
      CHECK(r[i].current.owner == std::get<1>(expected[i]));
      if (!r[i].current.owner.empty()) CHECK(r[i].current.token == std::get<2>(expected[i]));
      if (options.client_time && r[i].status == cs::ExtendStatus::extended) {
        CHECK(r[i].current.expires_at == now + ttl);
      }
      // extend, asked the same afterwards, answers the same
      const cs::ExtendResult one = storage.extend(*batch[i].key, *batch[i].mine, now, ttl);
      CHECK(one.status == r[i].status);
      CHECK(one.current.owner == r[i].current.owner);
    }
    CHECK(storage.acquire(mine_key, request("b", now)).status == cs::AcquireStatus::held);
    CHECK(storage.acquire(free_key, request("b", now)).status == cs::AcquireStatus::acquired);
  }

  SECTION("an empty extend_many answers nothing") { CHECK(storage.extend_many({}, t0).empty()); }

  SECTION("release is only by the owner; anything else is a harmless no-op that says so") {
    CHECK(storage.release(key, cs::Reservation{"a", 1, t0}) == cs::ReleaseStatus::not_held);
    const auto a = storage.acquire(key, request("a", t0)).reservation;
    CHECK(storage.release(key, cs::Reservation{"b", a.token, t0}) ==
          cs::ReleaseStatus::held_by_other);
    CHECK(storage.acquire(key, request("b", t0 + 1s)).status == cs::AcquireStatus::held);
    CHECK(storage.release(key, a) == cs::ReleaseStatus::released);
    CHECK(storage.release(key, a) == cs::ReleaseStatus::not_held);
    const cs::AcquireResult b = storage.acquire(key, request("b", t0 + 1s));
    CHECK(b.status == cs::AcquireStatus::acquired);
    CHECK(b.reservation.token > a.token);  // tokens grow with each new acquisition
    CHECK_FALSE(b.previous);               // a released reservation is not a takeover
    CHECK_FALSE(storage.get(key));         // releasing stores nothing
  }

  SECTION("a stored output is a hit that reserves nothing, unless the caller overwrites") {
    const auto a = storage.acquire(key, request("a", t0)).reservation;
    REQUIRE(storage.store_and_release(key, a, make_output<S>("out"), t0).status ==
            cs::StoreStatus::stored);
    REQUIRE(storage.get(key));
    CHECK(text_of<S>(*storage.get(key)) == "out");
    const cs::AcquireResult hit = storage.acquire(key, request("b", t0));
    REQUIRE(hit.status == cs::AcquireStatus::hit);
    CHECK(text_of<S>(hit.output) == "out");
    CHECK(storage.release(key, cs::Reservation{"b", 0, t0}) == cs::ReleaseStatus::not_held);

    const cs::AcquireResult over = storage.acquire(key, request("c", t0, true));
    REQUIRE(over.status == cs::AcquireStatus::acquired);
    CHECK(text_of<S>(*storage.get(key)) == "out");  // still there while c works
    REQUIRE(storage.store_and_release(key, over.reservation, make_output<S>("new"), t0).status ==
            cs::StoreStatus::stored);
    CHECK(text_of<S>(*storage.get(key)) == "new");
  }

  SECTION("put stores without a reservation and replaces what was there") {
    storage.put(key, make_output<S>("one"));
    storage.put(key, make_output<S>("two"));
    REQUIRE(storage.get(key));
    CHECK(text_of<S>(*storage.get(key)) == "two");
  }

  if constexpr (cs::storage_traits<S>::visits_outputs) {
    SECTION("visit_output lends the output get returns, and calls nothing when there is none") {
      int calls = 0;
      std::string seen;
      auto look = [&](const cs::StoredOutput& out) {
        ++calls;
        seen = text_of<S>(out);
      };
      CHECK_FALSE(std::as_const(storage).visit_output(key, look));
      CHECK(calls == 0);
      storage.put(key, make_output<S>("lent"));
      CHECK(std::as_const(storage).visit_output(key, look));
      CHECK(calls == 1);
      CHECK(seen == "lent");
      CHECK_FALSE(std::as_const(storage).visit_output(other_key, look));
      CHECK(calls == 1);
    }
  }

  if constexpr (cs::storage_traits<S>::notifies) {
    SECTION("a subscriber is woken by a store, a put and a release of its key only") {
      cs::Signal signal;
      auto subscription = storage.subscribe(key, signal);
      const auto a = storage.acquire(key, request("a", t0)).reservation;
      storage.put(other_key, make_output<S>("x"));
      CHECK_FALSE(signal.raised());
      CHECK(storage.release(key, a) == cs::ReleaseStatus::released);
      CHECK(signal.raised());
      signal.reset();
      const auto b = storage.acquire(key, request("b", t0)).reservation;
      storage.store_and_release(key, b, make_output<S>("y"), t0);
      CHECK(signal.raised());
      signal.reset();
      storage.put(key, make_output<S>("z"));
      CHECK(signal.raised());
      // A store's notification may reach the signal late, through a listener thread (spurious
      // wake-ups are allowed); none may arrive once the subscription is gone.
      subscription.reset();
      signal.reset();
      storage.put(key, make_output<S>("w"));
      CHECK_FALSE(signal.raised());
    }
  }
}

}  // namespace test
