// Writes the fuzz targets' seed corpus: a few valid inputs of every kind, from which the fuzzer
// mutates. Usage: make_fuzz_corpus <fuzz/corpus directory>. Its output is committed.

#include <sys/stat.h>

#include <cacheserialize/cache_key.hpp>
#include <cacheserialize/detail/filesystem/format.hpp>
#include <cstdio>
#include <fstream>
#include <string>

#include "fuzz_types.hpp"

namespace cs = cacheserialize;

namespace {

std::string g_root;
int g_written = 0;

void seed(const std::string& target, const std::string& name, unsigned char first,
          const std::string& bytes) {
  const std::string dir = g_root + "/" + target;
  ::mkdir(dir.c_str(), 0777);
  std::ofstream out(dir + "/" + name, std::ios::binary | std::ios::trunc);
  out.put(static_cast<char>(first));
  out << bytes;
  ++g_written;
}

/// Encoded samples of each of the types fuzz::decode_one_of knows, by type number.
std::string sample(int type) {
  using fuzz::Tree;
  switch (type) {
    case 0:
      return cs::encode_value(std::int64_t{-42});
    case 1:
      return cs::encode_value(std::uint32_t{4000000000u});
    case 2:
      return cs::encode_value(std::int8_t{-7});
    case 3:
      return cs::encode_value(-0.0);
    case 4:
      return cs::encode_value(1.5f);
    case 5:
      return cs::encode_value(true);
    case 6:
      return cs::encode_value(std::string("a string\0with a NUL", 19));
    case 7:
      return cs::encode_value(std::vector<std::int32_t>{1, -2, 3});
    case 8:
      return cs::encode_value(
          std::map<std::string, std::vector<double>>{{"a", {1.0, 2.0}}, {"b", {}}});
    case 9:
      return cs::encode_value(
          std::optional<std::tuple<int, std::string, bool>>(std::make_tuple(7, "x", false)));
    case 10:
      return cs::encode_value(std::set<std::string>{"one", "two"});
    case 11:
      return cs::encode_value(std::pair<std::int16_t, std::uint16_t>{-3, 65535});
    case 12:
      return cs::encode_value(std::array<std::int32_t, 3>{4, 5, 6});
    case 13:
      return cs::encode_value(Tree{1, {Tree{2, {}}, Tree{3, {Tree{4, {}}}}}});
    case 14:
      return cs::encode_value(std::vector<unsigned char>{0, 255, 7});
    default:
      return cs::encode_value(
          std::unordered_map<std::int64_t, fuzz::Colour>{{1, fuzz::Colour::blue}});
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_corpus <fuzz/corpus directory>\n");
    return 64;
  }
  g_root = argv[1];
  ::mkdir(g_root.c_str(), 0777);
  for (int type = 0; type < fuzz::type_count; ++type) {
    seed("fuzz_codec", "type" + std::to_string(type), static_cast<unsigned char>(type),
         sample(type));
  }
  // The key fuzz_output_file reads: task "fuzz", version "1", encoded bytes "key\0!".
  const std::string key("key\0!", 5);
  for (int type = 0; type < fuzz::type_count; type += 3) {
    const std::string file = cs::detail::encode_output_file(key, sample(type));
    const auto t = static_cast<unsigned char>(type * 4);
    seed("fuzz_output_file", "output_type" + std::to_string(type), t, file);
    seed("fuzz_output_file", "output_fixed_crc_type" + std::to_string(type),
         static_cast<unsigned char>(t + 1), file);
  }
  seed("fuzz_output_file", "output_truncated", 0,
       cs::detail::encode_output_file(key, sample(6)).substr(0, 30));
  seed("fuzz_output_file", "output_foreign", 0, cs::detail::encode_output_file("other", "x"));
  cs::detail::ReservationRecord rec;
  rec.held = true;
  rec.reservation = cs::Reservation{"host:1:0123456789abcdef:1", 1767225600000000000ULL,
                                    cs::from_unix_nanos(1767225601000000000LL)};
  seed("fuzz_output_file", "record_held_live", 2, cs::detail::encode_reservation_record(rec));
  rec.reservation.expires_at = cs::from_unix_nanos(1);
  seed("fuzz_output_file", "record_held_expired", 2, cs::detail::encode_reservation_record(rec));
  rec.held = false;
  seed("fuzz_output_file", "record_free", 2, cs::detail::encode_reservation_record(rec));
  seed("fuzz_output_file", "parsers_only", 3, cs::detail::encode_output_file(key, sample(0)));
  std::printf("wrote %d seeds under %s\n", g_written, g_root.c_str());
  return 0;
}
