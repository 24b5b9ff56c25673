// An engine that drives the reservation protocol itself, as docs/engine.md's "Driving the
// protocol yourself" shows (it quotes engine_square below, and a test checks the quote): the
// engine builds the key the wrapper `square` uses, claims it, and either reads the stored output
// or runs the task and stores its output. Against an InMemoryStorage (outputs kept as objects)
// and a FileSystemStorage (outputs kept as bytes), it checks that the engine and the wrapper
// share one cache both ways: each key's task runs once, whoever asks first.

#include <cacheserialize/cacheserialize.hpp>
#include <cacheserialize/storage/filesystem.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <utility>

namespace cs = cacheserialize;
using namespace std::chrono_literals;

namespace {

int engine_runs = 0;  // written under a reservation only: one run per key at a time

// Stands for work done elsewhere: another process, another machine, a cluster's job.
int run_task_somewhere(int n) {
  std::this_thread::sleep_for(50ms);
  ++engine_runs;
  return n * n;
}

}  // namespace

// One step of an engine: the output of the task `square` for n, from the cache or computed here.
template <class Storage>
int engine_square(const cs::ReservationManager<cs::SystemClock, Storage>& manager, int n) {
  static const cs::KeySchema<int(int)> schema(cs::TaskSignature{"square", ""}, "1.0");
  const cs::Key key = schema.make(n);  // the key that square(n) uses: square.key(n)
  constexpr bool objects = cs::storage_traits<Storage>::stores_objects;  // InMemoryStorage

  auto claim = manager.claim(key, cs::ClaimOptions{});  // a hit, or wait, or take the reservation
  if (claim.is_hit()) {
    const cs::StoredOutput& out = claim.output();
    if constexpr (objects) {
      return *static_cast<const int*>(out.object.get());
    } else {  // file system, Redis, PostgreSQL: bytes
      return cs::decode_value<int>(out.bytes);
    }
  }
  auto hold = std::move(claim.hold());       // moved out of the claim, so that it may outlive it
  const int result = run_task_somewhere(n);  // heartbeated meanwhile; a throw: ~Hold releases
  if constexpr (objects) {
    hold.store(cs::StoredOutput::from_object(std::make_shared<const int>(result)));
  } else {
    hold.store(cs::StoredOutput::from_bytes(cs::encode_value(result)));
  }  // fenced: StoreStatus::rejected if the key was taken over meanwhile (hold.lost())
  return result;
}

namespace {

bool expect(bool ok, const std::string& what) {
  if (!ok) std::cerr << "FAILED: " << what << "\n";
  return ok;
}

template <class Storage>
bool engine_and_wrapper_share_the_cache(Storage storage, const std::string& name) {
  cs::ReservationManager<cs::SystemClock, Storage> manager(std::move(storage));
  int wrapper_runs = 0;
  auto square = cs::serialize_cached(
      [&wrapper_runs](int n) {
        std::this_thread::sleep_for(50ms);
        ++wrapper_runs;
        return n * n;
      },
      cs::TaskOptions{"square", "1.0"}, manager);
  engine_runs = 0;
  bool ok = true;

  const cs::KeySchema<int(int)> schema(cs::TaskSignature{"square", ""}, "1.0");
  ok &= expect(schema.make(3) == square.key(3), name + ": the engine's key is the wrapper's");

  // The engine runs the task; the wrapper then hits its output.
  ok &= expect(engine_square(manager, 3) == 9 && engine_runs == 1, name + ": the engine runs");
  ok &= expect(square(3) == 9 && wrapper_runs == 0, name + ": the wrapper reuses it");

  // The wrapper runs the function; the engine then hits its output.
  ok &= expect(square(4) == 16 && wrapper_runs == 1, name + ": the wrapper runs");
  ok &= expect(engine_square(manager, 4) == 16 && engine_runs == 1, name + ": the engine reuses");

  // At once: one of the two runs, the other waits for it and reuses its output.
  int from_engine = 0;
  std::thread engine([&] { from_engine = engine_square(manager, 5); });
  const int from_wrapper = square(5);
  engine.join();
  ok &= expect(from_engine == 25 && from_wrapper == 25 && engine_runs + wrapper_runs == 3,
               name + ": concurrent calls run the task once");

  std::cout << name << ": engine ran " << engine_runs << ", wrapper ran " << wrapper_runs
            << " (3 keys); " << (ok ? "ok" : "FAILED") << "\n";
  return ok;
}

}  // namespace

int main() {
  bool ok = engine_and_wrapper_share_the_cache(cs::InMemoryStorage(), "InMemoryStorage");

  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      ("cacheserialize-engine-claim-" +
       std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::filesystem::create_directories(dir);
  cs::FileSystemOptions fs;
  fs.root = dir.string();
  fs.durable = false;  // a throwaway directory
  ok &= engine_and_wrapper_share_the_cache(cs::FileSystemStorage(fs), "FileSystemStorage");
  std::filesystem::remove_all(dir);
  return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
