#pragma once

// The byte formats of FileSystemStorage's two kinds of files, as pure functions over bytes so that
// they can be tested and fuzzed without a file system. The bytes come from a shared directory:
// they may be truncated, damaged, hostile or written by someone else, so every parser checks
// every length against the bytes it has before using it, and reports a reason instead of
// throwing. Integers are big-endian, as in the codec.
//
// Output file, format 1 (one per key: outputs/<2 hex>/<digest>):
//
//     offset  size  field
//     0       8     magic "CSFSOUT\n"
//     8       4     format version (1)
//     12      8     K: length of the key bytes
//     20      8     P: length of the payload
//     28      K     the key's canonical bytes (Key::encoded()), in full: a file whose key is not
//                   the reader's (a digest collision, a copied or foreign file) is a miss
//     28+K    P     the payload: the output as serializer<T> encoded it
//     28+K+P  4     CRC-32C of every byte before it
//
// A file is valid only if its size is exactly 32 + K + P, so a truncated file or one with
// trailing bytes is rejected before its checksum is computed.
//
// Reservation record, format 1 (one per key: reservations/<2 hex>/<digest>.res):
//
//     0       8     magic "CSFSRES\n"
//     8       4     format version (1)
//     12      8     token: the holder's fencing token, or the last one issued if free (< 2^63)
//     20      1     state: 0 free, 1 held
//     21      8     expiry, signed nanoseconds since the Unix epoch (held only; 0 if free)
//     29      8     N: length of the owner id (0 if free)
//     37      N     owner id
//     37+N    4     CRC-32C of every byte before it
//
// The record is kept after a release (free, with its token), so that the next token is larger.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "../../storage.hpp"
#include "../../time.hpp"
#include "../crc32c.hpp"

namespace cacheserialize {
namespace detail {

inline constexpr std::string_view fs_output_magic{"CSFSOUT\n", 8};
inline constexpr std::string_view fs_record_magic{"CSFSRES\n", 8};
inline constexpr std::uint32_t fs_format_version = 1;
inline constexpr std::size_t fs_output_header_size = 28;  // magic, version, K, P
inline constexpr std::size_t fs_output_overhead = fs_output_header_size + 4;
inline constexpr std::size_t fs_record_fixed_size = 37 + 4;
/// Tokens are at most the wall clock in nanoseconds plus the number of acquisitions, far below
/// this until the year 2262; a record claiming more is damaged (and `token + 1` cannot wrap).
inline constexpr std::uint64_t fs_max_token = std::uint64_t{1} << 63;
/// Owner ids longer than this are refused on writing and rejected on reading, which bounds a
/// record's size (the manager's ids are well under 100 bytes).
inline constexpr std::size_t fs_max_owner_size = 4096;

inline void fs_put_u32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>(static_cast<unsigned char>(v >> shift)));
  }
}

inline void fs_put_u64(std::string& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>(static_cast<unsigned char>(v >> shift)));
  }
}

/// @return the big-endian integer of `size` bytes at `at`. Precondition: they exist.
inline std::uint64_t fs_get_uint(std::string_view bytes, std::size_t at, std::size_t size) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < size; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[at + i]);
  return v;
}

/// @return the complete output file for `key_bytes` and `payload`.
inline std::string encode_output_file(std::string_view key_bytes, std::string_view payload) {
  std::string out;
  out.reserve(fs_output_overhead + key_bytes.size() + payload.size());
  out.append(fs_output_magic);
  fs_put_u32(out, fs_format_version);
  fs_put_u64(out, key_bytes.size());
  fs_put_u64(out, payload.size());
  out.append(key_bytes);
  out.append(payload);
  fs_put_u32(out, crc32c(out));
  return out;
}

/// What an output file's header says.
struct OutputHeader {
  std::uint64_t key_size = 0;
  std::uint64_t payload_size = 0;
  /// The size the whole file must have.
  std::uint64_t file_size = 0;
};

/// Checks an output file's header (its first `fs_output_header_size` bytes or more).
/// @param[out] header the sizes, when the header is valid.
/// @return an empty string if it is valid, or why not ("bad magic: not a cacheserialize output").
inline std::string check_output_header(std::string_view bytes, OutputHeader& header) {
  if (bytes.size() < fs_output_header_size) {
    return "truncated: " + std::to_string(bytes.size()) + " bytes, shorter than the " +
           std::to_string(fs_output_header_size) + "-byte header";
  }
  if (bytes.substr(0, fs_output_magic.size()) != fs_output_magic) {
    return "bad magic: not a cacheserialize output file";
  }
  const std::uint64_t version = fs_get_uint(bytes, 8, 4);
  if (version != fs_format_version) {
    return "unsupported output format version " + std::to_string(version) + " (this reader has " +
           std::to_string(fs_format_version) + ")";
  }
  header.key_size = fs_get_uint(bytes, 12, 8);
  header.payload_size = fs_get_uint(bytes, 20, 8);
  // Each length is checked on its own first, so that the sum cannot wrap around.
  constexpr std::uint64_t limit = std::uint64_t{1} << 62;
  if (header.key_size >= limit || header.payload_size >= limit) {
    return "corrupt header: impossible lengths (key " + std::to_string(header.key_size) +
           ", payload " + std::to_string(header.payload_size) + ")";
  }
  header.file_size = fs_output_overhead + header.key_size + header.payload_size;
  return {};
}

/// The parts of a valid output file, as views into its bytes.
struct OutputView {
  std::string_view key;
  std::string_view payload;
};

/// Checks a whole output file: header, exact size, checksum, and then that it is `expected_key`'s.
/// @param[out] view the key and payload, when the file is valid (they are set, for messages,
///             also when only the key differs).
/// @return an empty string if the file is a valid output of `expected_key`, or why not.
inline std::string parse_output_file(std::string_view bytes, std::string_view expected_key,
                                     OutputView& view) {
  OutputHeader header;
  std::string problem = check_output_header(bytes, header);
  if (!problem.empty()) return problem;
  if (bytes.size() != header.file_size) {
    return (bytes.size() < header.file_size ? "truncated: " : "trailing bytes: ") +
           std::to_string(bytes.size()) + " bytes where the header says " +
           std::to_string(header.file_size);
  }
  const std::size_t body = bytes.size() - 4;
  const auto stored = static_cast<std::uint32_t>(fs_get_uint(bytes, body, 4));
  const std::uint32_t computed = crc32c(bytes.substr(0, body));
  if (stored != computed) return "checksum mismatch: the file is damaged";
  const auto key_size = static_cast<std::size_t>(header.key_size);
  view.key = bytes.substr(fs_output_header_size, key_size);
  view.payload =
      bytes.substr(fs_output_header_size + key_size, static_cast<std::size_t>(header.payload_size));
  if (view.key != expected_key) {
    return "foreign file: it holds the output of another key (a copied file or a digest "
           "collision)";
  }
  return {};
}

/// A reservation record as stored: a reservation that is held or free, with its token.
struct ReservationRecord {
  bool held = false;
  /// held: the holder; free: the last token issued, with an empty owner and no expiry.
  Reservation reservation;
};

/// @return the record's bytes. Precondition: the owner is at most `fs_max_owner_size` bytes.
inline std::string encode_reservation_record(const ReservationRecord& record) {
  std::string out;
  const std::string& owner = record.reservation.owner;
  out.reserve(fs_record_fixed_size + owner.size());
  out.append(fs_record_magic);
  fs_put_u32(out, fs_format_version);
  fs_put_u64(out, record.reservation.token);
  out.push_back(record.held ? '\1' : '\0');
  fs_put_u64(out, record.held
                      ? static_cast<std::uint64_t>(to_unix_nanos(record.reservation.expires_at))
                      : 0);
  fs_put_u64(out, record.held ? owner.size() : 0);
  if (record.held) out.append(owner);
  fs_put_u32(out, crc32c(out));
  return out;
}

/// Parses a reservation record. Bytes past the record's own size are ignored: a record is
/// rewritten in place (pwrite, then ftruncate when it shrank), and a writer killed between the
/// two leaves the new record followed by the old one's tail. The checksum vouches for the
/// record; the tail goes at the next write.
/// @param[out] record the record, when valid.
/// @return an empty string if the bytes begin with a valid record, or why not.
inline std::string parse_reservation_record(std::string_view bytes, ReservationRecord& record) {
  if (bytes.size() < fs_record_fixed_size) {
    return "truncated: " + std::to_string(bytes.size()) + " bytes, shorter than a record";
  }
  if (bytes.substr(0, fs_record_magic.size()) != fs_record_magic) {
    return "bad magic: not a cacheserialize reservation record";
  }
  const std::uint64_t version = fs_get_uint(bytes, 8, 4);
  if (version != fs_format_version) {
    return "unsupported reservation format version " + std::to_string(version);
  }
  const std::uint64_t owner_size = fs_get_uint(bytes, 29, 8);
  if (owner_size > fs_max_owner_size || bytes.size() < fs_record_fixed_size + owner_size) {
    return "corrupt record: its owner length does not match its size";
  }
  bytes = bytes.substr(0, fs_record_fixed_size + static_cast<std::size_t>(owner_size));
  const std::size_t body = bytes.size() - 4;
  if (static_cast<std::uint32_t>(fs_get_uint(bytes, body, 4)) != crc32c(bytes.substr(0, body))) {
    return "checksum mismatch: the record is damaged";
  }
  const auto state = static_cast<unsigned char>(bytes[20]);
  if (state > 1) return "corrupt record: unknown state " + std::to_string(state);
  record.held = state == 1;
  if (!record.held && owner_size != 0) return "corrupt record: a free record names an owner";
  record.reservation.token = fs_get_uint(bytes, 12, 8);
  if (record.reservation.token >= fs_max_token) {
    return "corrupt record: impossible token " + std::to_string(record.reservation.token);
  }
  record.reservation.expires_at =
      from_unix_nanos(static_cast<std::int64_t>(fs_get_uint(bytes, 21, 8)));
  record.reservation.owner.assign(bytes.substr(37, static_cast<std::size_t>(owner_size)));
  return {};
}

}  // namespace detail
}  // namespace cacheserialize
