#!/usr/bin/env bash
# What the server executes per call (issue 14), counted by valgrind's callgrind: exact and
# independent of machine load, where calls per second under load (bench_load) move by several
# points from run to run. Starts a throwaway PostgreSQL and Redis under callgrind, on loopback,
# and makes N hits and N misses through the library and through bench_load's baselines
# (bench/server_instructions.cpp), each a run of N calls less a run of N/5, so that setup
# cancels. Prints user-mode instructions per call (the kernel's share, the network, is not
# counted: it is the same per round trip on both sides).
#
#   bench/server_instructions.sh            both servers, N = 5000 (about 4 minutes)
#   bench/server_instructions.sh pg 2000    one of them, another N
#
# Needs valgrind, and the server_instructions binary (bench/run.sh builds it into build-bench;
# BUILD_DIR as there). PostgreSQL runs as the `postgres` account when this runs as root.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
client=$build/bench/server_instructions
which=${1:-all}
n=${2:-5000}
[ -x "$client" ] || { echo "no $client: run bench/run.sh --quick first" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

work=$(mktemp -d /tmp/cacheserialize-si-XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# A port nothing on loopback answers on.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

# One table row: server, call, the library's and the baseline's instructions, and their ratio.
print_row() {
  awk -v s="$1" -v k="$2" -v l="$3" -v b="$4" \
    'BEGIN { printf "| %s | %s | %.0f | %.0f | %.2fx |\n", s, k, l, b, l / b }'
}

# per_call COUNT MODE: instructions per call, from COUNT MODE CALLS (the server's instructions
# while CALLS calls ran): a run of N less a run of N/5, so that what every run does once cancels.
per_call() {
  local a b
  a=$("$1" "$2" "$n")
  b=$("$1" "$2" $((n / 5)))
  echo $(((a - b) * 5 / (4 * n)))
}

run_pg() {
  local bin
  bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -1)
  [ -x "$bin/initdb" ] || { echo "no PostgreSQL server installed" >&2; return 1; }
  local as=()
  [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
  mkdir -p "$work/pg/cg"
  [ "$(id -u)" = 0 ] && chown -R postgres "$work/pg"
  "${as[@]}" "$bin/initdb" -D "$work/pg/data" -A trust -U postgres -N >"$work/pg/initdb.log"
  local port
  port=$(free_port)
  # Every backend forks from the postmaster, so all run under callgrind, each writing its own
  # file at exit: the client's backend is the one with the most instructions.
  "${as[@]}" valgrind --tool=callgrind --trace-children=yes \
    --callgrind-out-file="$work/pg/cg/cg.%p" "$bin/postgres" -D "$work/pg/data" -p "$port" \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories="$work/pg" -c fsync=off \
    -c synchronous_commit=off -c full_page_writes=off -c autovacuum=off \
    >"$work/pg/server.log" 2>&1 &
  pids+=($!)
  local info="host=127.0.0.1 port=$port user=postgres dbname=postgres"
  for _ in $(seq 1 120); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
    sleep 1
  done
  # 10,000 rows in each table first, as bench_load stores (and ANALYZE, as autovacuum would):
  # on a table of a few rows the planner scans the table instead of its index.
  "$client" pg "$info" lib_miss 1 >/dev/null  # creates the library's tables
  "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 <<'SQL'
INSERT INTO server_instructions.entries (key_hash, key, output, stored_at)
  SELECT sha256(('filler ' || g)::bytea), ('filler ' || g)::bytea, '\x00'::bytea, now()
  FROM generate_series(1, 10000) g;
CREATE TABLE IF NOT EXISTS public.server_instructions_kv (key text PRIMARY KEY, value text, owner text);
INSERT INTO public.server_instructions_kv SELECT 'filler ' || g, 'v', NULL FROM generate_series(1, 10000) g;
ANALYZE;
SQL
  # Waits until every backend that ended has written its file (as it exits, slowly under
  # callgrind): until none has appeared for two seconds.
  settle() {
    local before=-1 now
    while :; do
      now=$(find "$work/pg/cg" -name 'cg.*' | wc -l)
      [ "$now" = "$before" ] && return
      before=$now
      sleep 2
    done
  }
  pg_calls() {  # mode calls -> instructions of the busiest backend
    settle
    rm -f "$work"/pg/cg/cg.*
    "$client" pg "$info" "$1" "$2" >/dev/null
    settle
    grep -h '^summary:' "$work"/pg/cg/cg.* | awk '{ print $2 }' | sort -n | tail -1
  }
  print_row PostgreSQL hit "$(per_call pg_calls lib_hit)" "$(per_call pg_calls base_hit)"
  print_row PostgreSQL miss "$(per_call pg_calls lib_miss)" "$(per_call pg_calls base_miss)"
}

run_redis() {
  command -v redis-server >/dev/null || { echo "no redis-server installed" >&2; return 1; }
  mkdir -p "$work/redis"
  local port
  port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$work/redis/cg.out" redis-server \
    --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work/redis" \
    >"$work/redis/server.log" 2>&1 &
  local vg=$!
  pids+=("$vg")
  for _ in $(seq 1 60); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 1
  done
  redis_calls() {  # mode calls -> instructions of the server while they ran
    callgrind_control -z "$vg" >/dev/null
    "$client" redis "$port" "$1" "$2" >/dev/null
    callgrind_control -d "$vg" >/dev/null
    sleep 0.5
    grep -h '^summary:\|^totals:' "$work"/redis/cg.out.* | head -1 | awk '{ print $2 }'
    rm -f "$work"/redis/cg.out.*
  }
  print_row Redis hit "$(per_call redis_calls lib_hit)" "$(per_call redis_calls base_hit)"
  print_row Redis miss "$(per_call redis_calls lib_miss)" "$(per_call redis_calls base_miss)"
}

echo "# server instructions per call, $(date -u '+%Y-%m-%d %H:%M UTC'), N = $n"
echo
echo "| server | call | library | baseline | x baseline |"
echo "|---|---|---:|---:|---:|"
case $which in
  pg) run_pg ;;
  redis) run_redis ;;
  all) run_pg; run_redis ;;
  *) echo "usage: $0 [pg|redis|all] [N]" >&2; exit 2 ;;
esac
