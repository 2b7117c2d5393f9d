# Shell helpers the bench/run-*.sh scripts share (sourced, not run).

# bench_scratch NAME: BENCH_WORK is the scratch directory (a new one in $TMPDIR unless set);
# at exit a directory made here is removed, except smoke results (BENCH_WORK/results) when no
# BENCH_RESULTS was given, and unless BENCH_KEEP_WORK=1.
bench_scratch() {
  BENCH_NAME=$1
  BENCH_MADE_WORK=0
  if [ -z "${BENCH_WORK:-}" ]; then
    BENCH_WORK="$(mktemp -d "${TMPDIR:-/tmp}/cmg-bench-$BENCH_NAME.XXXXXX")"
    BENCH_MADE_WORK=1
  fi
  mkdir -p "$BENCH_WORK"
  export BENCH_WORK
  trap bench_cleanup EXIT
}

bench_cleanup() {
  if [ "$BENCH_MADE_WORK" = 1 ] && [ "${BENCH_KEEP_WORK:-0}" != 1 ]; then
    if [ -n "${BENCH_RESULTS:-}" ] || [ ! -d "$BENCH_WORK/results" ]; then
      rm -rf "$BENCH_WORK"
    else
      find "$BENCH_WORK" -mindepth 1 -maxdepth 1 ! -name results -exec rm -rf {} +
      echo "run-$BENCH_NAME: smoke results kept in $BENCH_WORK/results" >&2
    fi
  fi
}

# bench_python SCRIPT ARGS...: runs a harness with the system Python; returns its status.
bench_python() {
  local py=python3 rc
  [ -x /usr/bin/python3 ] && py=/usr/bin/python3
  set +e
  "$py" "$@"
  rc=$?
  set -e
  return $rc
}
