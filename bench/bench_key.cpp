// Making cache keys (KeySchema::make: the canonical encoding of a call's arguments) and their
// digests (Key::digest: SHA-256 as hex, what shared storages name keys by), in MB/s of key bytes,
// next to memcpy of the same number of bytes into a buffer that is already allocated.

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common.hpp"

namespace {

namespace cs = cacheserialize;

enum class Op { memcpy_encoded, encode, digest };

struct Input {
  std::string label;
  std::string text;                // a string argument of this size, or empty
  std::vector<std::int64_t> ints;  // or a list of this many integers
};

template <class T>
void run(benchmark::State& state, Op op, const T& argument) {
  const cs::KeySchema<void(T)> schema(cs::TaskSignature{"bench.key", ""}, "1");
  const cs::Key key = schema.make(argument);
  const std::string& bytes = key.encoded();
  std::string buffer(bytes.size(), '\0');
  for (auto _ : state) {
    switch (op) {
      case Op::memcpy_encoded:
        std::memcpy(&buffer[0], bytes.data(), bytes.size());
        benchmark::ClobberMemory();
        break;
      case Op::encode:
        benchmark::DoNotOptimize(schema.make(argument));
        break;
      case Op::digest:
        benchmark::DoNotOptimize(key.digest());
        break;
    }
  }
  state.counters["MB_per_s"] = benchmark::Counter(
      static_cast<double>(bytes.size()) * static_cast<double>(state.iterations()) / 1e6,
      benchmark::Counter::kIsRate);
  state.counters["key_bytes"] = static_cast<double>(bytes.size());
}

}  // namespace

void bench::register_benchmarks() {
  std::vector<Input> inputs;
  for (std::size_t size : {std::size_t{16}, std::size_t{1024}, std::size_t{64 * 1024}}) {
    inputs.push_back({"string_" + std::to_string(size) + "B", std::string(size, 'k'), {}});
  }
  std::vector<std::int64_t> ints(1000);
  for (std::size_t i = 0; i < ints.size(); ++i) ints[i] = static_cast<std::int64_t>(i * i);
  inputs.push_back({"vector_1000_int64", "", ints});

  for (const Input& in : inputs) {
    for (const char* what : {"encode", "digest"}) {
      const std::string name = std::string("key_") + what + "/" + in.label;
      const Op op = std::string(what) == "encode" ? Op::encode : Op::digest;
      for (Op o : {Op::memcpy_encoded, op}) {
        const std::string full = name + (o == Op::memcpy_encoded ? "/memcpy" : "/cacheserialize");
        if (in.ints.empty()) {
          benchmark::RegisterBenchmark(full.c_str(), run<std::string>, o, in.text);
        } else {
          benchmark::RegisterBenchmark(full.c_str(), run<std::vector<std::int64_t>>, o, in.ints);
        }
      }
      bench::compare({name, "memcpy", "MB_per_s", "", 0, 0, false, {"key_bytes"}});
    }
  }
}
