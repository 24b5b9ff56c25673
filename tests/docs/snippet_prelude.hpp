#pragma once

// What the documentation's C++ snippets may take for granted. check_snippets.cmake compiles every
// ```cpp block of README.md (and docs/*.md) after this header: the library's umbrella header, the
// `cs` alias, std::chrono's literals, and the user's own functions and types that the snippets
// name but do not define, declared here only (the snippets are compiled, not run). A snippet that
// needs more says so in a `<!-- snippet context: ... -->` comment right before it.

#include <atomic>
#include <cacheserialize/cacheserialize.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace cs = cacheserialize;
using namespace std::chrono_literals;

// A user's type without a serializer; docs/tasks.md's "Your own types" snippet specialises one.
struct Point {
  int x = 0;
  int y = 0;
};

// The user's own work, as the snippets call it.
std::vector<std::string> download(const std::string& url);
std::vector<std::string> fetch_fn(const std::string& url);
double train_fn(const std::vector<double>& data, int epochs);
std::string make_report(const std::string& day);
int run_task_somewhere(int n);
extern const std::string secret;

// A logger taking anything printable.
template <class... Parts>
void log(const Parts&... parts);
