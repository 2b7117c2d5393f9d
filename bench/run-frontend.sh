#!/usr/bin/env bash
# Front-end benchmark: cmg-gateway vs nginx vs HAProxy on this machine (see bench/README.md).
#
#   bench/run-frontend.sh           full run: 3 interleaved rounds of 12 s, 10,000 idle
#                                   connections, TLS 1.3 and 1.2; results in
#                                   bench/results/YYYY-MM-DD/frontend.{json,md,png}
#   bench/run-frontend.sh --smoke   1 round of 2 s, 200 idle connections (TLS 1.3), under a
#                                   minute; results in the scratch directory; exit status 1
#                                   if any server failed to answer correctly
#   BENCH_SMOKE=1 bench/run-frontend.sh   the same as --smoke
#
# Environment (all optional): BENCH_ROUNDS, BENCH_DURATION, BENCH_WARMUP, BENCH_CONNS,
# BENCH_THREADS, BENCH_SERVERS (cmg,nginx,haproxy), BENCH_SERVER_CPU (0), BENCH_CLIENT_CPU (1),
# IDLE_CONNS, IDLE_TLS (1.3,1.2), IDLE_SERVERS, IDLE_ROUNDS, IDLE_RATE, IDLE_INFLIGHT,
# IDLE_SETTLE, IDLE_WAVES, BENCH_SKIP_THROUGHPUT=1, BENCH_SKIP_IDLE=1, BENCH_HOST_INDEX=0,
# BENCH_RESULTS (output directory), BENCH_WORK (scratch directory, default a new one in
# $TMPDIR), BENCH_KEEP_WORK=1 (keep the scratch directory: configs, server logs),
# CMG_GATEWAY, CMGCTL (binaries; default build/default/...).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

for a in "$@"; do
  case "$a" in
    --smoke) ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
  esac
done
if [ "${BENCH_SMOKE:-0}" = 1 ]; then
  set -- --smoke
fi

# One descriptor per connection: the idle test holds 10,000 in the server and 10,000 in the
# client (separate processes). The hard limit of this machine is 20,000.
hard="$(ulimit -Hn)"
if [ "$hard" = unlimited ] || [ "$hard" -ge 20000 ]; then
  ulimit -Sn 20000
else
  ulimit -Sn "$hard"
fi

missing=()
for t in wrk nginx haproxy taskset openssl cc python3; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "run-frontend: missing ${missing[*]}; install with: CMG_BENCH_DEPS=1 $root/scripts/install-deps" >&2
  # nginx and haproxy may be left out on purpose (BENCH_SERVERS); the rest is required
  for t in "${missing[@]}"; do
    case "$t" in nginx|haproxy) ;; *) exit 2 ;; esac
  done
fi

export CMG_GATEWAY="${CMG_GATEWAY:-$root/build/default/gateway/cmg-gateway}"
export CMGCTL="${CMGCTL:-$root/build/default/deploy/cmgctl}"
if [ ! -x "$CMG_GATEWAY" ] || [ ! -x "$CMGCTL" ]; then
  if [ -f "$root/build/default/CMakeCache.txt" ]; then
    echo "run-frontend: building $root/build/default" >&2
    cmake --build "$root/build/default" -j2 >&2
  else
    echo "run-frontend: $CMG_GATEWAY not built; run 'make build' first" >&2
    exit 2
  fi
fi

. "$here/benchlib.sh"
bench_scratch frontend

# The lean idle-connection client, built outside the source tree.
mkdir -p "$BENCH_WORK/bin"
export BENCH_IDLE_CLIENT="$BENCH_WORK/bin/idle-clients"
export BENCH_IDLE_BUILD_CMD="cc -O2 -Wall bench/idle-clients.c -lssl -lcrypto -o $BENCH_IDLE_CLIENT"
cc -O2 -Wall "$here/idle-clients.c" -lssl -lcrypto -o "$BENCH_IDLE_CLIENT"

rc=0
bench_python "$here/frontend.py" "$@" || rc=$?
exit $rc
