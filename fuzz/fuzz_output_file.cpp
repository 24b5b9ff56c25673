// libFuzzer target: FileSystemStorage's readers of files found in a shared directory, which may
// be truncated, damaged, foreign or hostile. Input: one mode byte, then the file's bytes.
//
//   mode % 4 == 0  the bytes are written as a key's output file and read back with get(): a
//                  value comes back exactly when the pure parser accepts the file, and then it
//                  is the parser's payload, which is decoded as one of the codec's types
//   mode % 4 == 1  the same, with the last four bytes replaced by the right CRC-32C, so that
//                  the fuzzer gets past the checksum to the lengths, the key and the payload
//   mode % 4 == 2  the bytes are written as the key's reservation record, which is then read,
//                  acquired and released: a damaged record must read as free, never crash
//   mode % 4 == 3  the pure parsers alone, without the file system
// The type the payload is decoded as is mode / 4.

#include <ftw.h>
#include <unistd.h>

#include <cacheserialize/storage/filesystem.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>

#include "fuzz_types.hpp"

namespace cs = cacheserialize;

namespace {

char g_dir[] = "/tmp/cacheserialize-fuzz-XXXXXX";  // plain storage: still valid in atexit

struct Fixture {
  Fixture() : dir(make_dir()), storage(options(dir)), key("fuzz", "1", std::string("key\0!", 5)) {}
  static Fixture& instance();

  static std::string make_dir() {
    if (::mkdtemp(g_dir) == nullptr) std::abort();
    std::atexit([] {
      ::nftw(
          g_dir, [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); },
          16, FTW_DEPTH | FTW_PHYS);
    });
    return g_dir;
  }
  static cs::FileSystemOptions options(const std::string& root) {
    cs::FileSystemOptions o;
    o.root = root;
    o.durable = false;  // fsync would only slow the fuzzer down
    o.listener = [](const cs::Event& e) {
      if (e.kind != cs::EventKind::corrupt_output || e.detail.empty()) std::abort();
    };
    return o;
  }

  std::string dir;
  cs::FileSystemStorage storage;
  cs::Key key;
};

Fixture& Fixture::instance() {
  static Fixture f;
  return f;
}

void write(const std::string& path, std::string_view bytes) {
  // The storage makes its shard directories when it first writes; the harness writes first.
  if (!cs::detail::make_dir(path.substr(0, path.rfind('/')))) std::abort();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.flush()) std::abort();
}

void check_output(Fixture& f, std::string file, unsigned type) {
  write(f.storage.output_path(f.key), file);
  cs::detail::OutputView view;
  const bool valid = cs::detail::parse_output_file(file, f.key.encoded(), view).empty();
  const auto out = f.storage.get(f.key);
  if (out.has_value() != valid) std::abort();
  if (out) {
    if (out->bytes != view.payload) std::abort();
    fuzz::decode_one_of(type, out->bytes);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  Fixture& f = Fixture::instance();
  const unsigned mode = data[0];
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (mode % 4) {
    case 0:
      check_output(f, bytes, mode / 4);
      break;
    case 1:
      if (bytes.size() >= 4) {
        const std::uint32_t crc =
            cs::detail::crc32c(std::string_view(bytes).substr(0, bytes.size() - 4));
        for (std::size_t i = 0; i < 4; ++i) {
          bytes[bytes.size() - 4 + i] = static_cast<char>((crc >> (24 - 8 * i)) & 0xffu);
        }
      }
      check_output(f, bytes, mode / 4);
      break;
    case 2: {
      write(f.storage.record_path(f.key), bytes);
      const cs::TimePoint now = cs::ManualClock::default_start();
      const auto held = f.storage.reservation(f.key);
      const cs::AcquireResult r =
          f.storage.acquire(f.key, {"fuzzer", now, std::chrono::seconds(1), true});
      if (r.status == cs::AcquireStatus::acquired) {
        // A live reservation of another owner is never taken; a new one has a larger token.
        if (held && held->owner != "fuzzer" && now < held->expires_at) std::abort();
        if (held && held->owner == "fuzzer" ? r.reservation.token != held->token
                                            : held && r.reservation.token <= held->token) {
          std::abort();
        }
        if (f.storage.release(f.key, r.reservation) != cs::ReleaseStatus::released) std::abort();
      } else if (r.status != cs::AcquireStatus::held || !held ||
                 held->owner != r.reservation.owner) {
        std::abort();
      }
      break;
    }
    default: {
      cs::detail::OutputView view;
      cs::detail::OutputHeader header;
      cs::detail::check_output_header(bytes, header);
      cs::detail::parse_output_file(bytes, f.key.encoded(), view);
      cs::detail::ReservationRecord record;
      cs::detail::parse_reservation_record(bytes, record);
      break;
    }
  }
  return 0;
}
