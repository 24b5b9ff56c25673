#pragma once

// What the tests that start a real server (Redis, PostgreSQL) share: a free loopback port, and
// whether a server that cannot start is a failure (CI) or a skip.

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace test {

/// @return whether CACHESERIALIZE_REQUIRE_SERVERS=1: tests must run, not skip (CI).
inline bool servers_required() {
  const char* v = std::getenv("CACHESERIALIZE_REQUIRE_SERVERS");
  return v && std::string(v) == "1";
}

/// @return a port that was free on 127.0.0.1 a moment ago.
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace test
