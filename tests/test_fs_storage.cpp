// FileSystemStorage within one process: the storage contract, damaged and foreign files, bad
// roots, locks, tokens and prune. The multi-process behaviour is in test_fs_processes.cpp.

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "engine_contract.hpp"
#include "fs_support.hpp"
#include "storage_contract.hpp"

namespace cs = cacheserialize;
using namespace std::chrono_literals;
using test::TempDir;

namespace {

cs::FileSystemStorage storage_at(const TempDir& dir, test::Recorder* recorder = nullptr,
                                 cs::Duration lock_timeout = 10s) {
  cs::FileSystemOptions o;
  o.root = dir.path();
  o.lock_timeout = lock_timeout;
  if (recorder != nullptr) o.listener = recorder->listener();
  return cs::FileSystemStorage(o);
}

cs::Key key_of(int i) { return cs::Key("t", "1", "key " + std::to_string(i)); }

cs::StoredOutput bytes(const std::string& s) { return cs::StoredOutput::from_bytes(s); }

std::string lock_path_of(const cs::FileSystemStorage& storage, const cs::Key& key) {
  std::string p = storage.record_path(key);
  return p.substr(0, p.size() - 4) + ".lock";
}

/// Sets a file's modification time `age` into the past.
void age_file(const std::string& path, cs::Duration age) {
  const auto t = std::chrono::system_clock::now() - age;
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch());
  struct timespec times[2];
  for (auto& ts : times) {
    ts.tv_sec = static_cast<time_t>(ns.count() / 1000000000);
    ts.tv_nsec = static_cast<long>(ns.count() % 1000000000);
  }
  REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW) == 0);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

cs::AcquireRequest request(const std::string& owner, cs::TimePoint now, cs::Duration ttl = 30s) {
  return cs::AcquireRequest{owner, now, ttl, false};
}

}  // namespace

TEST_CASE("FileSystemStorage follows the storage contract") {
  std::vector<std::unique_ptr<TempDir>> dirs;
  test::check_storage_contract(
      [&] {
        dirs.push_back(std::make_unique<TempDir>());
        return cs::FileSystemStorage(dirs.back()->path());
      },
      {true});
}

TEST_CASE("FileSystemStorage follows the engine contract: try_claim, resume, adopt and holder") {
  std::vector<std::unique_ptr<TempDir>> dirs;
  test::check_engine_contract(
      [&] {
        dirs.push_back(std::make_unique<TempDir>());
        return cs::FileSystemStorage(dirs.back()->path());
      },
      // Another process's storage: a new handle on the same directory.
      [](const cs::FileSystemStorage& s) { return cs::FileSystemStorage(s.root()); });
}

TEST_CASE(
    "FileSystemStorage keeps outputs as bytes, lets waiters poll and probes before acquiring") {
  STATIC_REQUIRE(cs::is_storage_v<cs::FileSystemStorage>);
  STATIC_REQUIRE_FALSE(cs::storage_traits<cs::FileSystemStorage>::stores_objects);
  STATIC_REQUIRE_FALSE(cs::storage_traits<cs::FileSystemStorage>::notifies);
  STATIC_REQUIRE(cs::storage_traits<cs::FileSystemStorage>::probe_before_acquire);
}

TEST_CASE("two storages on one directory share its outputs and reservations, as copies do") {
  TempDir dir;
  cs::FileSystemStorage a(dir.path());
  cs::FileSystemStorage b(dir.path() + "/");  // the same root, spelt differently
  cs::FileSystemStorage copy = a;
  CHECK(copy.root() == b.root());
  const cs::TimePoint t0 = cs::ManualClock::default_start();

  a.put(key_of(1), bytes("one"));
  REQUIRE(b.get(key_of(1)));
  CHECK(b.get(key_of(1))->bytes == "one");

  const auto x = a.acquire(key_of(2), request("x", t0));
  REQUIRE(x.status == cs::AcquireStatus::acquired);
  const auto y = b.acquire(key_of(2), request("y", t0 + 1s));
  CHECK(y.status == cs::AcquireStatus::held);
  CHECK(y.reservation.owner == "x");
  CHECK(y.reservation.token == x.reservation.token);
  CHECK(y.remaining == 29s);
  REQUIRE(b.reservation(key_of(2)));
  CHECK(b.reservation(key_of(2))->owner == "x");
  CHECK(copy.store_and_release(key_of(2), x.reservation, bytes("two"), t0).status ==
        cs::StoreStatus::stored);
  CHECK(b.get(key_of(2))->bytes == "two");
  CHECK_FALSE(b.reservation(key_of(2)));
}

TEST_CASE("a relative root is resolved once, at construction") {
  TempDir dir;
  REQUIRE(::mkdir((dir / "cache").c_str(), 0777) == 0);
  std::string cwd(4096, '\0');
  REQUIRE(::getcwd(&cwd[0], cwd.size()) != nullptr);
  cwd.resize(cwd.find('\0'));
  REQUIRE(::chdir(dir.path().c_str()) == 0);
  std::optional<cs::FileSystemStorage> storage;
  try {
    storage.emplace("cache");
  } catch (...) {
  }
  REQUIRE(::chdir(cwd.c_str()) == 0);  // a later chdir does not move the store
  REQUIRE(storage);
  CHECK(storage->root() == dir / "cache");
  storage->put(key_of(1), bytes("here"));
  CHECK(cs::FileSystemStorage(dir / "cache").get(key_of(1))->bytes == "here");
}

TEST_CASE("a root moved away or replaced under a running storage is followed within a second") {
  TempDir dir;
  const std::string root = dir / "cache";
  REQUIRE(::mkdir(root.c_str(), 0777) == 0);
  cs::FileSystemStorage running(root);
  running.put(key_of(1), bytes("old"));
  REQUIRE(running.get(key_of(1))->bytes == "old");  // read through the outputs directory it holds

  SECTION("moved away") { REQUIRE(::rename(root.c_str(), (dir / "cache.old").c_str()) == 0); }
  SECTION("deleted") { std::filesystem::remove_all(root); }
  REQUIRE(::mkdir(root.c_str(), 0777) == 0);
  cs::FileSystemStorage(root).put(key_of(1), bytes("new"));

  // The storage compares the directories at most once a second: poll for the new output.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  std::optional<cs::StoredOutput> got = running.get(key_of(1));
  while ((!got || got->bytes != "new") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
    got = running.get(key_of(1));
  }
  REQUIRE(got);
  CHECK(got->bytes == "new");
  running.put(key_of(2), bytes("two"));  // writes went by path all along
  CHECK(cs::FileSystemStorage(root).get(key_of(2))->bytes == "two");
}

TEST_CASE("a program that closes the storage's descriptor still reads its outputs, by path") {
  TempDir dir;
  std::optional<cs::FileSystemStorage> storage(std::in_place, dir.path());
  storage->put(key_of(1), bytes("one"));
  REQUIRE(storage->get(key_of(1))->bytes == "one");  // read through the directory it holds
  // The descriptor of its outputs directory, found as a program closing all of them would.
  const std::string outputs = std::filesystem::canonical(storage->root() + "/outputs").string();
  int held = -1;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(entry.path(), ec).string() == outputs) {
      held = std::stoi(entry.path().filename().string());
    }
  }
  REQUIRE(held >= 0);
  REQUIRE(::close(held) == 0);

  auto read_one = [&] {
    const std::optional<cs::StoredOutput> got = storage->get(key_of(1));
    return got ? got->bytes : "(a miss)";
  };
  SECTION("the number left closed") { CHECK(read_one() == "one"); }
  SECTION("the number reused by another file of the program") {
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    REQUIRE(null >= 0);
    if (null != held) {
      REQUIRE(::dup2(null, held) == held);
      ::close(null);
    }
    CHECK(read_one() == "one");
    storage.reset();
    CHECK(::fcntl(held, F_GETFD) != -1);  // the storage left the program's file open
    ::close(held);
  }
}

TEST_CASE("serialize_cached over the file system runs each key once for many threads") {
  TempDir dir;
  cs::FileSystemStorage storage(dir.path());
  constexpr int kKeys = 20;
  std::array<std::atomic<int>, kKeys> runs{};
  cs::TaskOptions options{"square", "1"};
  options.poll_interval = 5ms;
  auto square = cs::serialize_cached(
      [&](int n) {
        runs[static_cast<std::size_t>(n)].fetch_add(1);
        std::this_thread::sleep_for(2ms);
        return std::to_string(n * n);
      },
      options, storage);
  std::atomic<int> wrong{0};
  {
    test::Threads threads;
    for (int t = 0; t < 16; ++t) {
      threads.spawn([&, t] {
        for (int j = 0; j < kKeys; ++j) {
          const int n = (t + j) % kKeys;
          if (square(n) != std::to_string(n * n)) wrong.fetch_add(1);
        }
      });
    }
  }
  CHECK(wrong == 0);
  for (int n = 0; n < kKeys; ++n) CHECK(runs[static_cast<std::size_t>(n)] == 1);
  CHECK(square.manager().stats().executions == kKeys);
}

TEST_CASE(
    "with a fake clock, a waiter takes a dead holder's reservation over at its expiry and not "
    "before") {
  TempDir dir;
  cs::ManualClock clock;
  cs::FileSystemStorage storage(dir.path());
  test::Recorder recorder;
  cs::ManagerOptions mo;
  mo.listener = recorder.listener();
  cs::ReservationManager<cs::ManualClock, cs::FileSystemStorage> manager(storage, clock, mo);
  cs::TaskOptions options{"report", "1"};
  options.poll_interval = 1s;
  std::atomic<int> runs{0};
  auto report = cs::serialize_cached(
      [&](int day) {
        runs.fetch_add(1);
        return day * 2;
      },
      options, manager);

  // A worker took the key and died: nothing will extend or release its reservation.
  const cs::TimePoint expiry = clock.now() + 30s;
  REQUIRE(storage.acquire(report.key(7), request("crashed-worker", clock.now())).status ==
          cs::AcquireStatus::acquired);
  int result = 0;
  test::Threads threads;
  threads.spawn([&] { result = report(7); });
  int polls = 0;
  while (clock.now() < expiry) {
    REQUIRE(clock.wait_for_sleepers(1));  // the caller sleeps until its next poll or the expiry
    REQUIRE(runs == 0);                   // ...and has not run before the expiry
    REQUIRE(clock.advance_to_next_deadline());
    ++polls;
  }
  threads.join();
  CHECK(clock.now() == expiry);  // time never went past the expiry: the takeover was at it
  CHECK(result == 14);
  CHECK(runs == 1);
  CHECK(polls >= 25);  // a poll about every second (+-20%) over 30 s
  REQUIRE(recorder.count(cs::EventKind::took_over) == 1);
  CHECK(recorder.of(cs::EventKind::took_over)[0].holder == "crashed-worker");
  CHECK(recorder.count(cs::EventKind::waiting) == 1);
}

TEST_CASE("a damaged, truncated or foreign output file is a miss, is reported, and is replaced") {
  TempDir dir;
  test::Recorder recorder;
  cs::FileSystemStorage storage = storage_at(dir, &recorder);
  std::atomic<int> runs{0};
  auto square = cs::serialize_cached(
      [&](int n) {
        runs.fetch_add(1);
        return std::to_string(n * n);
      },
      cs::TaskOptions{"square", "1"}, storage);
  REQUIRE(square(3) == "9");
  const cs::Key key = square.key(3);
  const std::string path = storage.output_path(key);
  const std::string good = test::read_file(path);
  REQUIRE(storage.get(key));

  std::string expect_reason;
  SECTION("truncated inside the header") {
    test::write_file(path, good.substr(0, 10));
    expect_reason = "truncated";
  }
  SECTION("truncated inside the payload") {
    test::write_file(path, good.substr(0, good.size() - 3));
    expect_reason = "truncated";
  }
  SECTION("empty") {
    test::write_file(path, "");
    expect_reason = "truncated";
  }
  SECTION("a flipped bit in the payload") {
    std::string bad = good;
    bad[bad.size() - 6] = static_cast<char>(bad[bad.size() - 6] ^ 0x10);
    test::write_file(path, bad);
    expect_reason = "checksum mismatch";
  }
  SECTION("a flipped bit in the stored key") {
    std::string bad = good;
    bad[30] = static_cast<char>(bad[30] ^ 0x01);
    test::write_file(path, bad);
    expect_reason = "checksum mismatch";
  }
  SECTION("trailing bytes") {
    test::write_file(path, good + "garbage");
    expect_reason = "trailing bytes";
  }
  SECTION("a foreign file that is not an output at all") {
    test::write_file(path, "hello, I am someone else's notes\n");
    expect_reason = "bad magic";
  }
  SECTION("another key's valid output (a copied file, or a digest collision)") {
    REQUIRE(square(4) == "16");
    test::write_file(path, test::read_file(storage.output_path(square.key(4))));
    expect_reason = "foreign file";
  }
  SECTION("an output of a newer format version") {
    std::string future = good;
    future[11] = '\x02';
    test::write_file(path, future);
    expect_reason = "unsupported output format version 2";
  }
  SECTION("a symbolic link") {
    test::write_file(dir / "elsewhere", good);
    REQUIRE(::unlink(path.c_str()) == 0);
    REQUIRE(::symlink((dir / "elsewhere").c_str(), path.c_str()) == 0);
    expect_reason = "symbolic link";
  }

  CHECK_FALSE(storage.get(key));
  REQUIRE(recorder.count(cs::EventKind::corrupt_output) == 1);
  const std::string detail = recorder.of(cs::EventKind::corrupt_output)[0].detail;
  CHECK_THAT(detail, Catch::Contains(path) && Catch::Contains(expect_reason) &&
                         Catch::Contains("treated as a miss"));
  CHECK(recorder.of(cs::EventKind::corrupt_output)[0].task == square.key(3).task());

  const int before = runs;
  CHECK(square(3) == "9");  // a miss: the function runs again...
  CHECK(runs == before + 1);
  CHECK(test::read_file(path) == good);  // ...and its output replaces the bad file
  REQUIRE(storage.get(key));
  CHECK(storage.get(key)->bytes == cs::encode_value(std::string("9")));
}

TEST_CASE(
    "a directory where an output belongs reads as a miss, and the failed store still gives the "
    "caller its value") {
  TempDir dir;
  test::Recorder recorder;
  cs::FileSystemStorage storage = storage_at(dir, &recorder);
  cs::ManagerOptions mo;
  mo.listener = recorder.listener();
  cs::ReservationManager<cs::SystemClock, cs::FileSystemStorage> manager(storage, cs::SystemClock(),
                                                                         mo);
  auto square =
      cs::serialize_cached([](int n) { return n * n; }, cs::TaskOptions{"square", "1"}, manager);
  const std::string path = storage.output_path(square.key(5));
  REQUIRE(cs::detail::make_dir(path.substr(0, path.rfind('/'))));
  REQUIRE(::mkdir(path.c_str(), 0755) == 0);

  CHECK(square(5) == 25);
  CHECK(recorder.count(cs::EventKind::corrupt_output) >= 1);
  CHECK_THAT(recorder.of(cs::EventKind::corrupt_output)[0].detail,
             Catch::Contains("not a regular file"));
  REQUIRE(recorder.count(cs::EventKind::store_failed) == 1);
  CHECK_THAT(recorder.of(cs::EventKind::store_failed)[0].detail,
             Catch::Contains("cannot rename") && Catch::Contains(path));
  CHECK(manager.stats().store_failures == 1);
  CHECK_FALSE(storage.reservation(square.key(5)));  // released, so nobody waits for it
  // The failed write left no temporary file behind.
  for (const auto& name : cs::detail::fs_list(path.substr(0, path.rfind('/')))) {
    CHECK(name.find(".tmp") == std::string::npos);
  }
}

TEST_CASE("outputs of every size read back exactly, on both sides of the first read's size") {
  TempDir dir;
  test::Recorder recorder;
  cs::FileSystemStorage storage = storage_at(dir, &recorder);
  const cs::Key key = key_of(1);
  // get() reads files of up to 4096 bytes in one read, and larger ones in two steps.
  const std::size_t fixed = cs::detail::fs_output_overhead + key.encoded().size();
  for (const std::size_t file_size : {fixed, fixed + 1, std::size_t{4095}, std::size_t{4096},
                                      std::size_t{4097}, std::size_t{8193}, std::size_t{1} << 20}) {
    std::string payload(file_size - fixed, '\0');
    for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 7 + 3);
    storage.put(key, bytes(payload));
    REQUIRE(test::read_file(storage.output_path(key)).size() == file_size);
    const auto out = storage.get(key);
    REQUIRE(out);
    CHECK(out->bytes == payload);
  }
  CHECK(recorder.count(cs::EventKind::corrupt_output) == 0);

  // A large file damaged either way is rejected with the reason, like a small one.
  const std::string good = test::read_file(storage.output_path(key));
  test::write_file(storage.output_path(key), good.substr(0, 5000));
  CHECK_FALSE(storage.get(key));
  test::write_file(storage.output_path(key), good + "x");
  CHECK_FALSE(storage.get(key));
  REQUIRE(recorder.count(cs::EventKind::corrupt_output) == 2);
  CHECK_THAT(recorder.of(cs::EventKind::corrupt_output)[0].detail, Catch::Contains("truncated"));
  CHECK_THAT(recorder.of(cs::EventKind::corrupt_output)[1].detail,
             Catch::Contains("trailing bytes"));
}

TEST_CASE("a reservation record is rewritten in place, always to its exact size") {
  TempDir dir;
  test::Recorder recorder;
  cs::FileSystemStorage storage = storage_at(dir, &recorder);
  const cs::TimePoint t0 = cs::ManualClock::default_start();
  const std::string record = storage.record_path(key_of(1));
  const auto inode = [&] {
    struct stat st {};
    REQUIRE(::lstat(record.c_str(), &st) == 0);
    return st.st_ino;
  };
  const std::string owner(300, 'o');
  const auto held = storage.acquire(key_of(1), request(owner, t0)).reservation;
  const auto first = inode();
  CHECK(test::read_file(record).size() == cs::detail::fs_record_fixed_size + owner.size());
  REQUIRE(storage.extend(key_of(1), held, t0 + 1s, 30s).status == cs::ExtendStatus::extended);
  REQUIRE(storage.release(key_of(1), held) == cs::ReleaseStatus::released);
  CHECK(inode() == first);  // no temporary file renamed over it
  CHECK(test::read_file(record).size() == cs::detail::fs_record_fixed_size);  // shrunk
  CHECK_FALSE(exists(record + ".tmp"));

  // Junk longer than any record (a damaged file) is cut to the record written over it.
  test::write_file(record, std::string(10000, 'j'));
  const auto again = storage.acquire(key_of(1), request("b", t0 + 2s));
  REQUIRE(again.status == cs::AcquireStatus::acquired);
  CHECK(test::read_file(record).size() == cs::detail::fs_record_fixed_size + 1);
  CHECK(storage.reservation(key_of(1))->token == again.reservation.token);
  CHECK(recorder.count(cs::EventKind::corrupt_output) == 1);  // the junk, once
}

TEST_CASE("a lock file marked by a prune that died before unlinking it still locks its key") {
  TempDir dir;
  cs::FileSystemStorage storage = storage_at(dir, nullptr, 2s);
  const cs::TimePoint t0 = cs::ManualClock::default_start();
  const auto held = storage.acquire(key_of(1), request("a", t0)).reservation;
  // prune writes a byte into a lock file just before unlinking it; killed in between, it leaves
  // the byte in a lock file that is still the key's.
  test::write_file(lock_path_of(storage, key_of(1)), "x");
  CHECK(storage.acquire(key_of(1), request("b", t0 + 1s)).status == cs::AcquireStatus::held);
  CHECK(storage.release(key_of(1), held) == cs::ReleaseStatus::released);
  CHECK(storage.acquire(key_of(1), request("b", t0 + 1s)).status == cs::AcquireStatus::acquired);
}

TEST_CASE("a damaged reservation record reads as free, is reported, and tokens still grow") {
  TempDir dir;
  test::Recorder recorder;
  cs::FileSystemStorage storage = storage_at(dir, &recorder);
  const cs::TimePoint t0 = cs::ManualClock::default_start();
  const auto a = storage.acquire(key_of(1), request("a", t0)).reservation;
  test::write_file(storage.record_path(key_of(1)), "not a record");

  const cs::AcquireResult b = storage.acquire(key_of(1), request("b", t0 + 1s));
  CHECK(b.status == cs::AcquireStatus::acquired);
  CHECK(b.reservation.token > a.token);
  CHECK_FALSE(b.previous);  // nothing readable was replaced
  REQUIRE(recorder.count(cs::EventKind::corrupt_output) == 1);
  CHECK_THAT(recorder.of(cs::EventKind::corrupt_output)[0].detail,
             Catch::Contains("damaged reservation record") && Catch::Contains("treated as free"));
  // The stale holder is fenced off by owner and token.
  CHECK(storage.extend(key_of(1), a, t0 + 2s, 30s).status == cs::ExtendStatus::lost);
  CHECK(storage.store_and_release(key_of(1), a, bytes("A"), t0 + 2s).status ==
        cs::StoreStatus::rejected);
  CHECK(storage.store_and_release(key_of(1), b.reservation, bytes("B"), t0 + 2s).status ==
        cs::StoreStatus::stored);
  CHECK(storage.get(key_of(1))->bytes == "B");
}

TEST_CASE(
    "an empty reservation record, left by a process killed between creating and writing it, is "
    "free and not reported") {
  TempDir dir;
  test::Recorder recorder;
  cs::FileSystemStorage storage = storage_at(dir, &recorder);
  const cs::TimePoint t0 = cs::ManualClock::default_start();
  const auto a = storage.acquire(key_of(1), request("a", t0)).reservation;
  test::write_file(storage.record_path(key_of(1)), "");

  const cs::AcquireResult b = storage.acquire(key_of(1), request("b", t0 + 1s));
  CHECK(b.status == cs::AcquireStatus::acquired);
  CHECK(b.reservation.token > a.token);
  CHECK_FALSE(b.previous);
  CHECK(recorder.count(cs::EventKind::corrupt_output) == 0);
  CHECK(storage.extend(key_of(1), a, t0 + 2s, 30s).status == cs::ExtendStatus::lost);
  CHECK(storage.store_and_release(key_of(1), b.reservation, bytes("B"), t0 + 2s).status ==
        cs::StoreStatus::stored);
  CHECK(recorder.count(cs::EventKind::corrupt_output) == 0);
}

TEST_CASE(
    "a record rewritten shorter by a process killed before its truncation reads as the new "
    "record, and is not reported") {
  TempDir dir;
  test::Recorder recorder;
  cs::FileSystemStorage storage = storage_at(dir, &recorder);
  const cs::TimePoint t0 = cs::ManualClock::default_start();
  const std::string path = storage.record_path(key_of(1));
  const auto a = storage.acquire(key_of(1), request(std::string(200, 'a'), t0)).reservation;
  const std::string held = test::read_file(path);
  REQUIRE(storage.store_and_release(key_of(1), a, bytes("A"), t0).status ==
          cs::StoreStatus::stored);
  const std::string free = test::read_file(path);
  REQUIRE(free.size() < held.size());
  // The store's pwrite landed; its ftruncate did not.
  test::write_file(path, free + held.substr(free.size()));

  CHECK(storage.get(key_of(1))->bytes == "A");
  const cs::AcquireResult b =
      storage.acquire(key_of(1), cs::AcquireRequest{"b", t0 + 1s, 30s, /*overwrite=*/true});
  CHECK(b.status == cs::AcquireStatus::acquired);
  CHECK(b.reservation.token > a.token);
  CHECK_FALSE(b.previous);
  CHECK(recorder.count(cs::EventKind::corrupt_output) == 0);
  CHECK(test::read_file(path).size() < held.size());  // the tail went with the write
}

TEST_CASE("tokens grow across releases, and after prune has deleted the key's record") {
  TempDir dir;
  cs::FileSystemStorage storage(dir.path());
  const cs::TimePoint t0 = cs::ManualClock::default_start();
  std::uint64_t last = 0;
  for (int i = 0; i < 20; ++i) {
    const auto r = storage.acquire(key_of(1), request("owner " + std::to_string(i), t0));
    REQUIRE(r.status == cs::AcquireStatus::acquired);
    REQUIRE(r.reservation.token > last);
    last = r.reservation.token;
    REQUIRE(storage.release(key_of(1), r.reservation) == cs::ReleaseStatus::released);
  }
  const std::string record = storage.record_path(key_of(1));
  REQUIRE(exists(record));
  CHECK(storage.prune(0s).reservations_removed == 1);
  CHECK_FALSE(exists(record));
  const auto again = storage.acquire(key_of(1), request("after prune", t0));
  CHECK(again.reservation.token > last);
}

TEST_CASE("a bad root is a storage_error that names the path and the OS error") {
  TempDir dir;
  SECTION("a root that does not exist") {
    const std::string root = dir / "missing";
    REQUIRE_THROWS_MATCHES(
        cs::FileSystemStorage(root), cs::storage_error,
        Catch::Matchers::Message("cacheserialize: FileSystemStorage: the root '" + root +
                                 "' does not exist: No such file or directory (errno 2)"));
  }
  SECTION("a root that is a regular file") {
    const std::string root = dir / "file";
    test::write_file(root, "x");
    REQUIRE_THROWS_WITH(
        cs::FileSystemStorage(root),
        Catch::Contains("'" + root + "' is not a directory") && Catch::Contains("Not a directory"));
  }
  SECTION("a root in which the storage's directories cannot be made") {
    // Holds as root too, which ignores permission bits: a file where a directory must be.
    test::write_file(dir / "outputs", "x");
    REQUIRE_THROWS_WITH(cs::FileSystemStorage(dir.path()),
                        Catch::Contains("'" + dir.path() + "' is not writable") &&
                            Catch::Contains(dir / "outputs") && Catch::Contains("Not a directory"));
  }
  SECTION("a root without write permission") {
    if (::geteuid() == 0) {
      WARN(
          "running as root, which ignores permission bits: this case is covered by the "
          "multi-process test that drops privileges in a child process");
      return;
    }
    const std::string root = dir / "read-only";
    REQUIRE(::mkdir(root.c_str(), 0555) == 0);
    REQUIRE_THROWS_WITH(cs::FileSystemStorage(root),
                        Catch::Contains("is not writable") && Catch::Contains("Permission denied"));
  }
}

TEST_CASE("invalid options and arguments are refused with a message that names them") {
  TempDir dir;
  CHECK_THROWS_MATCHES(
      cs::FileSystemStorage(""), std::invalid_argument,
      Catch::Matchers::Message("cacheserialize::FileSystemStorage: the root path is empty"));
  cs::FileSystemOptions o;
  o.root = dir.path();
  o.lock_timeout = 0s;
  CHECK_THROWS_WITH(cs::FileSystemStorage(o), Catch::Contains("lock_timeout must be positive"));
  cs::FileSystemStorage storage(dir.path());
  CHECK_THROWS_WITH(storage.prune(-1s), Catch::Contains("max_age must not be negative"));
  const cs::TimePoint t0 = cs::ManualClock::default_start();
  CHECK_THROWS_WITH(storage.acquire(key_of(1), request("", t0)),
                    Catch::Contains("owner id must be 1 to 4096 bytes, got 0"));
  CHECK_THROWS_WITH(storage.acquire(key_of(1), request(std::string(4097, 'o'), t0)),
                    Catch::Contains("got 4097"));
}

TEST_CASE("a key lock held by a stuck process fails operations after lock_timeout, naming it") {
  TempDir dir;
  cs::FileSystemStorage storage = storage_at(dir, nullptr, 200ms);
  const cs::TimePoint t0 = cs::ManualClock::default_start();
  const auto r = storage.acquire(key_of(1), request("a", t0)).reservation;  // makes the lock file
  const std::string lock = lock_path_of(storage, key_of(1));
  {
    // Another open file description stands for another process: a flock excludes it.
    const cs::detail::Fd fd = cs::detail::open_file(lock, O_RDONLY);
    REQUIRE(fd);
    REQUIRE(::flock(fd.get(), LOCK_EX) == 0);
    const auto start = std::chrono::steady_clock::now();
    CHECK_THROWS_MATCHES(
        storage.extend(key_of(1), r, t0, 30s), cs::storage_error,
        Catch::Matchers::Predicate<cs::storage_error>([&](const auto& e) {
          const std::string what = e.what();
          return what.find("timed out after 200ms waiting to lock '" + lock) != std::string::npos &&
                 what.find("stuck") != std::string::npos && e.key() == key_of(1).describe();
        }));
    const auto waited = std::chrono::steady_clock::now() - start;
    CHECK(waited >= 200ms);
    CHECK(waited < 10s);
    CHECK(storage.get(key_of(1)) == std::nullopt);  // reads take no lock
  }
  CHECK(storage.extend(key_of(1), r, t0, 30s).status == cs::ExtendStatus::extended);
}

TEST_CASE(
    "prune removes old outputs, stale reservations and dead writers' files, and nothing else") {
  TempDir dir;
  cs::FileSystemStorage storage(dir.path());
  const cs::TimePoint now = cs::SystemClock().now();
  storage.put(key_of(1), bytes("old"));
  storage.put(key_of(2), bytes("new"));
  const auto live = storage.acquire(key_of(3), request("live", now, 1h)).reservation;
  const auto freed = storage.acquire(key_of(4), request("freed", now)).reservation;
  REQUIRE(storage.release(key_of(4), freed) == cs::ReleaseStatus::released);
  storage.acquire(key_of(5), request("dead", now - 2h, 1h));  // expired an hour ago
  const auto dead_later = storage.acquire(key_of(6), request("dead too", now - 2h, 1h));

  const std::string old_temp = storage.output_path(key_of(1)) + ".1.2.0123456789abcdef.tmp";
  const std::string new_temp = storage.output_path(key_of(2)) + ".1.3.0123456789abcdef.tmp";
  const std::string old_probe = dir / "outputs/.probe.1.2.0123456789abcdef";  // constructor died
  test::write_file(old_probe, "");
  age_file(old_probe, 2h);
  test::write_file(old_temp, "half an output");
  test::write_file(new_temp, "an output being written");
  const std::string shard = storage.output_path(key_of(1)).substr(0, dir.path().size() + 11);
  const std::vector<std::string> foreign{dir / "notes.txt", dir / "outputs/README",
                                         shard + "/notes.txt", dir / "reservations/zz"};
  for (const auto& f : foreign) test::write_file(f, "not ours");

  age_file(storage.output_path(key_of(1)), 2h);
  age_file(old_temp, 2h);
  for (int i : {3, 4, 5}) {
    age_file(storage.record_path(key_of(i)), 2h);
    age_file(lock_path_of(storage, key_of(i)), 2h);
  }  // key 6's files are fresh: it expired, but was touched recently

  const cs::PruneResult none = storage.prune(cs::Duration::max());  // nothing is that old
  CHECK(none.outputs_removed + none.reservations_removed + none.temporaries_removed == 0);
  const cs::PruneResult pruned = storage.prune(1h);
  CHECK(pruned.outputs_removed == 1);
  CHECK(pruned.reservations_removed == 2);
  CHECK(pruned.temporaries_removed == 2);
  CHECK_FALSE(storage.get(key_of(1)));
  CHECK(storage.get(key_of(2))->bytes == "new");
  CHECK_FALSE(exists(old_temp));
  CHECK_FALSE(exists(old_probe));
  CHECK(exists(new_temp));
  for (const auto& f : foreign) CHECK(exists(f));
  CHECK(storage.reservation(key_of(3))->token == live.token);  // live: kept although old
  for (int i : {4, 5}) {
    CHECK_FALSE(exists(storage.record_path(key_of(i))));
    CHECK_FALSE(exists(lock_path_of(storage, key_of(i))));
  }
  CHECK(storage.reservation(key_of(6))->token == dead_later.reservation.token);
  // A key whose record was pruned is reserved again with a larger token.
  CHECK(storage.acquire(key_of(4), request("again", now)).reservation.token > freed.token);
}

TEST_CASE("prune is safe while other threads use the directory") {
  TempDir dir;
  test::Recorder recorder;
  cs::FileSystemStorage storage = storage_at(dir, &recorder);
  cs::TaskOptions options{"square", "1"};
  options.poll_interval = 2ms;
  auto square = cs::serialize_cached([](int n) { return std::to_string(n * n); }, options, storage);
  std::atomic<int> wrong{0};
  std::atomic<int> errors{0};
  std::atomic<bool> done{false};
  cs::PruneResult total;
  int prunes = 0;
  {
    test::Threads threads;
    std::atomic<int> finished{0};
    for (int t = 0; t < 4; ++t) {
      threads.spawn([&, t] {
        try {
          for (int j = 0; j < 300; ++j) {
            const int n = (t * 3 + j) % 10;
            if (square(n) != std::to_string(n * n)) wrong.fetch_add(1);
          }
        } catch (...) {
          errors.fetch_add(1);
        }
        if (finished.fetch_add(1) == 3) done = true;
      });
    }
    while (!done) {  // bounded by the callers, which do a fixed amount of work
      const cs::PruneResult r = storage.prune(0s);  // everything not live is "old"
      total.outputs_removed += r.outputs_removed;
      total.reservations_removed += r.reservations_removed;
      ++prunes;
    }
  }
  CHECK(wrong == 0);
  CHECK(errors == 0);
  CHECK(recorder.count(cs::EventKind::corrupt_output) == 0);
  CHECK(prunes > 0);
  CHECK(total.outputs_removed > 0);  // it really raced with the callers
  CHECK(total.reservations_removed > 0);
}
