#!/usr/bin/env bash
# Builds the benchmarks (Release) and runs every bench_* binary. Each prints Google Benchmark's
# own output, then its tables: every figure with its ratio to the baseline measured in the same
# run. See bench/README.md.
#
#   bench/run.sh                 the full run (medians of REPETITIONS runs, interleaved at random)
#   bench/run.sh --quick         each benchmark once, briefly: only proves that they run (CI)
#   bench/run.sh --callgrind     instructions per call of each probe under callgrind, a
#                                cross-check that machine load cannot disturb
#   bench/run.sh ARGS...         extra Google Benchmark flags, e.g. --benchmark_filter=hit
#
# bench_load (processes, not threads) has a driver of its own that takes the same flags
# (--quick, --benchmark_repetitions, --benchmark_filter as a regex of its case names) and
# ignores the other --benchmark_* ones; under --callgrind it lists no probe, so it is skipped.
#
# Environment: BUILD_DIR (default: build-bench in the repository), REPETITIONS (default 5).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
repetitions=${REPETITIONS:-5}
mode=full
extra=()
for arg in "$@"; do
  case $arg in
    --quick) mode=quick ;;
    --callgrind) mode=callgrind ;;
    *) extra+=("$arg") ;;
  esac
done

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCACHESERIALIZE_BUILD_TESTS=OFF \
  -DCACHESERIALIZE_BUILD_EXAMPLES=OFF -DCACHESERIALIZE_INSTALL=OFF >/dev/null
cmake --build "$build" -j 2 --target cacheserialize_benchmarks >/dev/null

binaries=()
for b in "$build"/bench/bench_*; do
  [ -x "$b" ] && [ -f "$b" ] && binaries+=("$b")
done
if [ ${#binaries[@]} -eq 0 ]; then
  echo "no benchmark binaries in $build/bench (is Google Benchmark installed?)" >&2
  exit 1
fi

# The machine, for the record.
compiler=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")
flags=$(sed -n 's/^CMAKE_CXX_FLAGS_RELEASE:[A-Z]*=//p' "$build/CMakeCache.txt")
echo "# cacheserialize benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)," \
  "$(nproc) cores; $(uname -sr)"
echo "- compiler: $("$compiler" --version | head -1); flags: $flags; build type Release"
echo "- load average before: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
echo "- mode: $mode${extra[*]:+ ${extra[*]}}"

case $mode in
  quick)
    for b in "${binaries[@]}"; do "$b" --quick "${extra[@]}"; done
    ;;
  full)
    for b in "${binaries[@]}"; do
      "$b" --benchmark_repetitions="$repetitions" --benchmark_enable_random_interleaving=true \
        "${extra[@]}"
    done
    ;;
  callgrind)
    command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
    echo
    echo "| probe | instructions per call | x the case's first probe |"
    echo "|---|---:|---:|"
    for b in "${binaries[@]}"; do
      case_name=""
      base=0
      for probe in $("$b" --list_probes); do
        calls=$("$b" --probe="$probe" | sed -n 's/.*: \([0-9]*\) calls$/\1/p')
        ir=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null \
          --toggle-collect=cacheserialize_bench_probe "$b" --probe="$probe" 2>&1 >/dev/null |
          sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
        per_call=$((ir / calls))
        if [ "${probe%/*}" != "$case_name" ]; then
          case_name=${probe%/*}
          base=$per_call
        fi
        ratio=$(awk -v a="$per_call" -v b="$base" 'BEGIN { printf "%.2fx", a / b }')
        echo "| $probe | $per_call | $ratio |"
      done
    done
    ;;
esac
echo
echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
