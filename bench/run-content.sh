#!/usr/bin/env bash
# Content benchmark: cached 64 KiB and 1 MiB objects over TLS keep-alive, cmg-gateway against
# nginx static with the same TLS settings, and PeerDist hashing speed against SHA-256 on one
# core (see bench/README.md).
#
#   bench/run-content.sh           3 interleaved rounds of 10 s per size; results in
#                                  bench/results/YYYY-MM-DD/content.{json,md}
#   bench/run-content.sh --smoke   1 round of 2 s, a short hashing run; results in the scratch
#                                  directory; exit status 1 if a server answered wrongly
#   BENCH_SMOKE=1 bench/run-content.sh   the same as --smoke
#
# Environment (all optional): BENCH_ROUNDS, BENCH_DURATION, BENCH_WARMUP, BENCH_CONNS (16),
# BENCH_THREADS, BENCH_SIZES (64k,1m), BENCH_SERVERS (cmg,nginx), BENCH_SERVER_CPU (0),
# BENCH_CLIENT_CPU (1), BENCH_HASH_MIB, BENCH_RESULTS, BENCH_WORK, BENCH_KEEP_WORK=1,
# CMG_GATEWAY, CMGCTL.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
for a in "$@"; do
  case "$a" in
    --smoke) ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
  esac
done
if [ "${BENCH_SMOKE:-0}" = 1 ]; then
  set -- --smoke
fi
missing=()
for t in wrk nginx taskset openssl python3; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "run-content: missing ${missing[*]}; install with: CMG_BENCH_DEPS=1 $root/scripts/install-deps" >&2
  exit 2
fi
export CMG_GATEWAY="${CMG_GATEWAY:-$root/build/default/gateway/cmg-gateway}"
export CMGCTL="${CMGCTL:-$root/build/default/deploy/cmgctl}"
export BENCH_PEERDIST_SPEED="$root/build/default/content/peerdist-speed"
if [ ! -f "$root/build/default/CMakeCache.txt" ]; then
  echo "run-content: not built; run 'make build' first" >&2
  exit 2
fi
cmake --build "$root/build/default" -j2 --target cmg-gateway cmgctl peerdist-speed >&2

. "$here/benchlib.sh"
bench_scratch content
rc=0
bench_python "$here/content.py" "$@" || rc=$?
exit $rc
