// main() of the PostgreSQL tests. It finds the server the tests use, or skips them:
//
//   cacheserialize_postgres_tests --start-server DIR   ctest fixture setup: start one server
//                                                       for the whole test run, state in DIR
//   cacheserialize_postgres_tests --stop-server DIR    ctest fixture cleanup: stop and remove it
//   cacheserialize_postgres_tests --run-with-server PROGRAM ARGS...
//                                                       run PROGRAM ARGS... CONNINFO (examples)
//   cacheserialize_postgres_tests [catch options]      run tests: on the fixture's server when
//                                                       CACHESERIALIZE_PG_FIXTURE names its DIR,
//                                                       else on a server of their own
//
// Without the server binaries the tests exit with 77 (ctest's SKIP_RETURN_CODE) and say why;
// with CACHESERIALIZE_REQUIRE_SERVERS=1 (CI) that is a failure instead.

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "pg_support.hpp"

namespace {

namespace pg = test::pg;

constexpr int kSkip = 77;

int unavailable(const std::string& why) {
  if (test::servers_required()) {
    std::cerr << "FAILED: no PostgreSQL server for the tests: " << why
              << " (CACHESERIALIZE_REQUIRE_SERVERS=1)\n";
    return 1;
  }
  std::cout << "SKIPPED: no PostgreSQL server for the tests: " << why << "\n";
  return kSkip;
}

std::string state_file(const std::string& dir) { return dir + "/state"; }

int start_fixture(const std::string& dir) {
  std::filesystem::create_directories(dir);
  const auto old = pg::read_state(state_file(dir));
  std::string why;
  const std::string bin = pg::find_bin_dir(why);
  if (old.count("dir") && !bin.empty()) pg::Server::attach(bin, old.at("dir"));  // a stale one
  if (bin.empty()) {
    pg::write_state(state_file(dir), {{"unavailable", why}});
    return test::servers_required() ? unavailable(why) : 0;  // the tests themselves then skip
  }
  try {
    std::unique_ptr<pg::Server> server = pg::Server::start(bin);
    const pg::ServerInfo& info = server->info();
    pg::write_state(state_file(dir), {{"dir", server->dir()},
                                      {"bin", bin},
                                      {"port", std::to_string(info.port)},
                                      {"user", info.user},
                                      {"password", info.password}});
    std::cout << "PostgreSQL fixture server on 127.0.0.1:" << info.port << " in " << server->dir()
              << "\n";
    server->detach();  // it keeps running for the tests; --stop-server ends it
    return 0;
  } catch (const std::exception& e) {
    pg::write_state(state_file(dir), {{"unavailable", e.what()}});
    std::cerr << "cannot start the PostgreSQL fixture server: " << e.what() << "\n";
    return 1;
  }
}

int stop_fixture(const std::string& dir) {
  const auto state = pg::read_state(state_file(dir));
  if (state.count("dir") && state.count("bin")) {
    pg::Server::attach(state.at("bin"), state.at("dir"));  // destroyed: stopped and removed
  }
  std::error_code ec;
  std::filesystem::remove(state_file(dir), ec);
  return 0;
}

// Finds the server for this process: the fixture's, or one of its own (kept in `own`).
// @return 0, or the exit code to end with.
int obtain_server(std::unique_ptr<pg::Server>& own) {
  if (const char* fixture = std::getenv("CACHESERIALIZE_PG_FIXTURE")) {
    const auto state = pg::read_state(state_file(fixture));
    if (state.count("unavailable")) return unavailable(state.at("unavailable"));
    if (state.count("port")) {
      pg::server().port = std::stoi(state.at("port"));
      pg::server().user = state.at("user");
      pg::server().password = state.at("password");
      return 0;
    }
  }
  std::string why;
  const std::string bin = pg::find_bin_dir(why);
  if (bin.empty()) return unavailable(why);
  try {
    own = pg::Server::start(bin);
  } catch (const std::exception& e) {
    std::cerr << "FAILED: cannot start a PostgreSQL server: " << e.what() << "\n";
    return 1;
  }
  pg::server() = own->info();
  return 0;
}

int run_with_server(int argc, char** argv) {
  std::unique_ptr<pg::Server> own;
  if (const int rc = obtain_server(own)) return rc;
  std::vector<std::string> args(argv + 2, argv + argc);
  args.push_back(pg::server().conninfo());
  pg::Child child(args);
  const int rc = child.wait(std::chrono::seconds(120));
  if (rc != 0) std::cerr << args[0] << " ended with " << rc << "\n";
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string first = argc > 1 ? argv[1] : "";
  if (first == "--start-server" && argc == 3) return start_fixture(argv[2]);
  if (first == "--stop-server" && argc == 3) return stop_fixture(argv[2]);
  if (first == "--run-with-server" && argc >= 3) return run_with_server(argc, argv);

  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv)) return rc;
  const Catch::ConfigData& config = session.configData();
  const bool listing = config.listTests || config.listTestNamesOnly || config.listTags ||
                       config.listReporters || config.showHelp;
  std::unique_ptr<pg::Server> own;
  if (!listing) {
    if (const int rc = obtain_server(own)) return rc;
  }
  return session.run();
}
