// Making cache keys (KeySchema::make: the canonical encoding of a call's arguments) and their
// digests (Key::digest: SHA-256 as hex, what shared storages name keys by), in MB/s of key bytes,
// next to memcpy of the same number of bytes into a buffer that is already allocated.

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common.hpp"

#ifdef CACHESERIALIZE_BENCH_OPENSSL
#include <openssl/evp.h>
#endif

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

// The SHA-256 of one buffer: OpenSSL's EVP_Digest (the baseline, in this binary only: the
// library has no dependency), the library's dispatched path, and its portable path.
enum class Digest { openssl, cacheserialize, portable };

void sha256(benchmark::State& state, Digest how, std::size_t size) {
  const std::string data(size, 'd');
  namespace csd = cs::detail;
  const csd::Sha256Blocks chosen = csd::sha256_blocks().load();
  if (how == Digest::portable) csd::sha256_select(csd::Sha256Path::portable);
  for (auto _ : state) {
    if (how == Digest::openssl) {
#ifdef CACHESERIALIZE_BENCH_OPENSSL
      unsigned char out[EVP_MAX_MD_SIZE];
      unsigned int n = 0;
      EVP_Digest(data.data(), data.size(), out, &n, EVP_sha256(), nullptr);
      benchmark::DoNotOptimize(out);
#endif
    } else {
      benchmark::DoNotOptimize(csd::sha256(data));
    }
  }
  csd::sha256_blocks().store(chosen);
  state.counters["MB_per_s"] =
      benchmark::Counter(static_cast<double>(size) * static_cast<double>(state.iterations()) / 1e6,
                         benchmark::Counter::kIsRate);
}

}  // namespace

void bench::register_benchmarks() {
  for (std::size_t size : {std::size_t{1024}, std::size_t{64 * 1024}}) {
    const std::string name = "sha256/" + std::to_string(size / 1024) + "KiB";
#ifdef CACHESERIALIZE_BENCH_OPENSSL
    benchmark::RegisterBenchmark((name + "/openssl").c_str(), sha256, Digest::openssl, size);
#endif
    benchmark::RegisterBenchmark((name + "/cacheserialize").c_str(), sha256, Digest::cacheserialize,
                                 size);
    benchmark::RegisterBenchmark((name + "/portable").c_str(), sha256, Digest::portable, size);
#ifdef CACHESERIALIZE_BENCH_OPENSSL
    bench::compare({name,
                    "openssl",
                    "",
                    "<= 1.25x the time (>= 0.8x OpenSSL's MB/s)",
                    1.25,
                    0,
                    false,
                    {"MB_per_s"}});
#endif
  }

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
