#!/usr/bin/env bash
# Capacity benchmark: clients per VM size with cmg-bench, several instances together, and
# handshakes and idle memory side by side with nginx (see bench/README.md, "Capacity"); then
# the relay benchmark (bench/run-relay.sh) into the same results folder, which the capacity
# report quotes for the two-hop comparison.
#
#   bench/run-capacity.sh           full run (about 25 minutes); results in
#                                   bench/results/YYYY-MM-DD/capacity.{json,md} + PNG plots
#   bench/run-capacity.sh --smoke   a few hundred clients for a few seconds through one gateway,
#                                   connector and mpsim (under a minute); exit status 1 unless
#                                   every client was held with no error
#   BENCH_SMOKE=1 bench/run-capacity.sh   the same as --smoke
#
# Environment (all optional): BENCH_PARTS (capacity,aggregate,handshake,idle), BENCH_PROFILES
# (lab,standard,large), BENCH_STEPS (2000,10000,18500), BENCH_P99_MS (100), BENCH_RATE (500
# connections/s), BENCH_HOLD (30 s), BENCH_NOTIFY_HOLD (20s), BENCH_CONTENT_EVERY (20),
# BENCH_AGG_INSTANCES (4), BENCH_AGG_CLIENTS (60000), BENCH_HS_ROUNDS (3), BENCH_IDLE_SIZES
# (10000,50000), BENCH_SERVER_CPU (0), BENCH_CLIENT_CPU (1), BENCH_SKIP_RELAY=1, BENCH_RESULTS,
# BENCH_WORK, BENCH_KEEP_WORK=1, CMG_GATEWAY, CMG_CONNECTOR, CMG_MPSIM, CMG_BENCH, CMGCTL.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

smoke=0
[ "${BENCH_SMOKE:-0}" = 1 ] && smoke=1
for a in "$@"; do
  case "$a" in
    --smoke) smoke=1 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
  esac
done
args=()
[ "$smoke" = 1 ] && args+=(--smoke)

# Every process here holds one descriptor per connection: take the hard limit.
ulimit -Sn "$(ulimit -Hn)"

missing=()
tools=(taskset prlimit openssl python3 cc)
[ "$smoke" = 1 ] || tools+=(nginx haproxy wrk gnuplot)
for t in "${tools[@]}"; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "run-capacity: missing ${missing[*]}; install with: CMG_BENCH_DEPS=1 $root/scripts/install-deps" >&2
  exit 2
fi

bd="$root/build/default"
export CMG_GATEWAY="${CMG_GATEWAY:-$bd/gateway/cmg-gateway}"
export CMG_CONNECTOR="${CMG_CONNECTOR:-$bd/connector/cmg-connector}"
export CMG_MPSIM="${CMG_MPSIM:-$bd/mpsim/cmg-mpsim}"
export CMG_BENCH="${CMG_BENCH:-$bd/bench/cmg-bench}"
export CMGCTL="${CMGCTL:-$bd/deploy/cmgctl}"
for b in "$CMG_GATEWAY" "$CMG_CONNECTOR" "$CMG_MPSIM" "$CMG_BENCH" "$CMGCTL"; do
  if [ ! -x "$b" ]; then
    echo "run-capacity: $b not built; run 'make build' first" >&2
    exit 2
  fi
done

. "$here/benchlib.sh"
bench_scratch capacity

if [ "$smoke" = 0 ]; then
  export IDLE_CLIENT="$BENCH_WORK/idle-clients"
  cc -O2 -Wall -o "$IDLE_CLIENT" "$here/idle-clients.c" -lssl -lcrypto
fi

rc=0
if [ "$smoke" = 0 ] && [ "${BENCH_SKIP_RELAY:-0}" != 1 ]; then
  # the relay first: the capacity report quotes its results from the same folder
  BENCH_WORK= "$here/run-relay.sh" || rc=1
fi
crc=0
bench_python "$here/capacity.py" ${args[@]+"${args[@]}"} || crc=$?
[ "$crc" -ne 0 ] && rc=$crc
exit $rc
