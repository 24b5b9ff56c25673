#pragma once

// Hit-ratio simulation for bench_bounded (issue 13: 2): generated traces of key ids, and the
// exact LRU of a given capacity that a bounded InMemoryStorage is compared with.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <list>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

namespace bench {

/// An exact LRU over key ids: a list in recency order and a map into it.
class ExactLru {
 public:
  explicit ExactLru(std::size_t capacity) : capacity_(capacity) { where_.reserve(2 * capacity); }

  /// One access: @return whether it was a hit; a miss inserts the key, evicting the least
  /// recently used one when full.
  bool access(std::uint64_t id) {
    const auto it = where_.find(id);
    if (it != where_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      return true;
    }
    if (order_.size() == capacity_) {
      where_.erase(order_.back());
      order_.pop_back();
    }
    order_.push_front(id);
    where_.emplace(id, order_.begin());
    return false;
  }

 private:
  std::size_t capacity_;
  std::list<std::uint64_t> order_;
  std::unordered_map<std::uint64_t, std::list<std::uint64_t>::iterator> where_;
};

/// Draws ranks 0..n-1 with P(rank k) proportional to 1 / (k+1)^skew, by inverting the CDF.
/// Ranks are scattered over ids with a fixed permutation, so that popular keys are not the
/// adjacent ids.
class Zipf {
 public:
  Zipf(std::size_t n, double skew, std::uint64_t seed) : cdf_(n), rng_(seed) {
    double sum = 0;
    for (std::size_t k = 0; k < n; ++k) {
      sum += 1.0 / std::pow(static_cast<double>(k + 1), skew);
      cdf_[k] = sum;
    }
    for (double& c : cdf_) c /= sum;
  }
  std::uint64_t next() {
    const double u = std::uniform_real_distribution<double>(0, 1)(rng_);
    const auto it = std::lower_bound(cdf_.begin(), cdf_.end(), u);
    const auto rank = static_cast<std::uint64_t>(it - cdf_.begin());
    return (rank * 0x9E3779B97F4A7C15ull) % cdf_.size();  // scattered, a bijection for n odd
  }

 private:
  std::vector<double> cdf_;
  std::mt19937_64 rng_;
};

/// A named trace of key ids.
struct Trace {
  std::string name;
  std::vector<std::uint64_t> ids;
};

/// The traces of the issue, for a cache of `capacity` entries and `length` accesses each:
/// Zipf over 20 x capacity keys with skew 0.6, 0.8, 1.0, 1.2; a loop over 1.5 x capacity keys;
/// Zipf 1.0 interrupted, every 2 x capacity accesses, by a scan of capacity one-off keys.
inline std::vector<Trace> issue_traces(std::size_t capacity, std::size_t length) {
  std::vector<Trace> traces;
  const std::size_t universe = 20 * capacity + 1;  // odd: the scattering is a bijection
  for (double skew : {0.6, 0.8, 1.0, 1.2}) {
    Zipf zipf(universe, skew, 42);
    Trace t;
    char name[32];
    std::snprintf(name, sizeof name, "zipf_%.1f", skew);
    t.name = name;
    t.ids.reserve(length);
    for (std::size_t i = 0; i < length; ++i) t.ids.push_back(zipf.next());
    traces.push_back(std::move(t));
  }
  {
    Trace t{"loop_1.5x", {}};
    const std::size_t period = capacity * 3 / 2;
    for (std::size_t i = 0; i < length; ++i) t.ids.push_back(i % period);
    traces.push_back(std::move(t));
  }
  {
    Trace t{"zipf_1.0_with_scans", {}};
    Zipf zipf(universe, 1.0, 7);
    std::uint64_t one_off = universe;  // never seen before, never again
    while (t.ids.size() < length) {
      for (std::size_t i = 0; i < 2 * capacity && t.ids.size() < length; ++i) {
        t.ids.push_back(zipf.next());
      }
      for (std::size_t i = 0; i < capacity && t.ids.size() < length; ++i) {
        t.ids.push_back(one_off++);
      }
    }
    traces.push_back(std::move(t));
  }
  return traces;
}

}  // namespace bench
