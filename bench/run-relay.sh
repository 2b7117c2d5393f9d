#!/usr/bin/env bash
# Relay benchmark: cmg-gateway -> cmg-connector -> cmg-mpsim against the same two-hop shape
# built from HAProxy (edge -> HTTP/2 over TLS -> relay) and nginx (edge -> TLS keep-alive pool
# -> relay), all ending at the same cmg-mpsim (see bench/README.md).
#
#   bench/run-relay.sh           full run: 3 interleaved rounds of 2 s warm-up + 12 s measured;
#                                results in bench/results/YYYY-MM-DD/relay.{json,md,png}
#   bench/run-relay.sh --smoke   1 round of 1 s warm-up + 3 s, no host index (about 30 s);
#                                results in the scratch directory; exit status 1 if any shape
#                                failed to answer correctly
#   BENCH_SMOKE=1 bench/run-relay.sh   the same as --smoke
#
# Environment (all optional): BENCH_ROUNDS, BENCH_DURATION, BENCH_WARMUP, BENCH_CONNS,
# BENCH_THREADS, BENCH_SERVERS (cmg,haproxy,nginx), BENCH_SERVER_CPU (0: edge and relay),
# BENCH_BACKEND_CPU (cmg-mpsim; default the server CPU), BENCH_CLIENT_CPU (1),
# BENCH_POLICY_SIZE (4096), BENCH_POOL (128 idle upstream connections; "default" leaves the
# connector's own default), BENCH_HOST_INDEX=0, BENCH_RESULTS (output directory), BENCH_WORK
# (scratch directory, default a new one in $TMPDIR), BENCH_KEEP_WORK=1 (keep the scratch
# directory: configs, server logs), CMG_GATEWAY, CMG_CONNECTOR, CMG_MPSIM, CMGCTL (binaries;
# default build/default/...).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

args=()
[ "${BENCH_SMOKE:-0}" = 1 ] && args+=(--smoke)
for a in "$@"; do
  case "$a" in
    --smoke) args+=(--smoke) ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
  esac
done

# wrk's 100 connections and the servers' pools need a few hundred descriptors; take what the
# hard limit allows up to 20,000 (the same as run-frontend.sh).
hard="$(ulimit -Hn)"
if [ "$hard" = unlimited ] || [ "$hard" -ge 20000 ]; then
  ulimit -Sn 20000
else
  ulimit -Sn "$hard"
fi

missing=()
for t in wrk nginx haproxy taskset openssl python3; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "run-relay: missing ${missing[*]}; install with: CMG_BENCH_DEPS=1 $root/scripts/install-deps" >&2
  # nginx and haproxy may be left out on purpose (BENCH_SERVERS); the rest is required
  for t in "${missing[@]}"; do
    case "$t" in nginx|haproxy) ;; *) exit 2 ;; esac
  done
fi

export CMG_GATEWAY="${CMG_GATEWAY:-$root/build/default/gateway/cmg-gateway}"
export CMG_CONNECTOR="${CMG_CONNECTOR:-$root/build/default/connector/cmg-connector}"
export CMG_MPSIM="${CMG_MPSIM:-$root/build/default/mpsim/cmg-mpsim}"
export CMGCTL="${CMGCTL:-$root/build/default/deploy/cmgctl}"
for b in "$CMG_GATEWAY" "$CMG_CONNECTOR" "$CMG_MPSIM" "$CMGCTL"; do
  if [ ! -x "$b" ]; then
    if [ -f "$root/build/default/CMakeCache.txt" ]; then
      echo "run-relay: building $root/build/default" >&2
      cmake --build "$root/build/default" -j2 >&2
      break
    else
      echo "run-relay: $b not built; run 'make build' first" >&2
      exit 2
    fi
  fi
done

. "$here/benchlib.sh"
bench_scratch relay

rc=0
bench_python "$here/relay.py" ${args[@]+"${args[@]}"} || rc=$?
exit $rc
