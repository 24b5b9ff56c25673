// Owner ids in a forked child. Each thread caches the "host:pid:random" prefix of its ids (the pid
// is a system call to look up), so a fork must still give the child a prefix of its own: a child
// that reused its parent's would be mistaken for the parent's holder.

#include <catch2/catch.hpp>
#include <string>

#include "support.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

std::string prefix_of(const std::string& owner) { return owner.substr(0, owner.rfind(':')); }

}  // namespace

TEST_CASE("a forked child makes owner ids with its own pid and random part") {
  const std::string parent = test::Manager::new_owner_id();  // the parent's prefix is cached now
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // no Catch assertions in the child: it reports through the pipe
    const std::string id = test::Manager::new_owner_id();
    const ssize_t n = ::write(fds[1], id.data(), id.size());
    ::_exit(n == static_cast<ssize_t>(id.size()) ? 0 : 1);
  }
  ::close(fds[1]);
  std::string id;
  pollfd ready{fds[0], POLLIN, 0};
  char buf[512];
  while (::poll(&ready, 1, 30000) > 0) {  // bounded: a hung child fails the test
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    id.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  if (id.empty()) ::kill(child, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);

  CHECK(id.find(":" + std::to_string(child) + ":") != std::string::npos);
  CHECK(prefix_of(id) != prefix_of(parent));
  CHECK(prefix_of(test::Manager::new_owner_id()) == prefix_of(parent));  // the parent's is kept
}
#endif
