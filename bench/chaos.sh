#!/usr/bin/env bash
# Chaos runs against a real local mesh (`weft up`, release build): real processes, load through
# the ingress gateway, faults injected while it runs, and the requests that failed counted.
#
#   bench/chaos.sh                 # every scenario
#   bench/chaos.sh replica-crash   # one
#
# Scenarios:
#   replica-crash  bookinfo with productpage at `replicas: 3` behind Istio's bookinfo gateway;
#                  `weft load -c CONNECTIONS -t DURATION` on /productpage through the gateway;
#                  the app of productpage-v1-0 SIGKILLed at KILL_AT seconds, productpage-v1-1's
#                  KILL_EVERY seconds later. Goal: at most 0.1% of requests fail.
#
# Each scenario ends with a line
#   RESULT scenario=NAME requests=N failed=F failed_pct=P
# and the mesh's own account of the faults (replicas leaving and rejoining the endpoints).
# Knobs: CONNECTIONS (8), DURATION (20s), KILL_AT (5), KILL_EVERY (5).
# Everything runs on loopback; every load loop is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS="${CONNECTIONS:-8}"
DURATION="${DURATION:-20s}"
KILL_AT="${KILL_AT:-5}"
KILL_EVERY="${KILL_EVERY:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

echo "== building weft (release)"
cargo build --release --locked -q -p weft
WEFT="$CARGO_TARGET_DIR/release/weft"

WORK=$(mktemp -d /tmp/weft-chaos.XXXXXX)
UP_PID=""
cleanup() {
  if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
    kill -TERM "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to $2 seconds for $1 to appear in the mesh's log.
wait_log() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    grep -qF "$1" "$WORK/up.log" && return 0
    sleep 0.1
  done
  echo "not seen within $2 s: $1" >&2
  tail -n 40 "$WORK/up.log" >&2
  return 1
}

# The pid of replica $1's app: the child of `weft up` whose environment names it.
app_pid() {
  local p
  for p in $(pgrep -P "$UP_PID"); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "POD_NAME=$1"; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# Prints `requests failed` from a `weft load` report.
tally() {
  awk '/^Code / { total += $4; if ($2 != "200") failed += $4 } END { print total + 0, failed + 0 }' "$1"
}

replica_crash() {
  local dir="$WORK/bookinfo" state="$WORK/state" port url
  mkdir -p "$dir"
  # productpage at three replicas: the same Workload, `replicas: 3`.
  python3 - "$dir/bookinfo.yaml" <<'PY'
import sys
src = open("examples/bookinfo/bookinfo.yaml").read()
line = '  command: ["weft", "example", "productpage"]\n'
assert line in src, "examples/bookinfo/bookinfo.yaml changed"
open(sys.argv[1], "w").write(src.replace(line, line + "  replicas: 3\n"))
PY
  port=$(free_port)
  sed "s/number: 80$/number: $port/" examples/bookinfo/networking/bookinfo-gateway.yaml \
    >"$WORK/gateway.yaml"
  url="http://127.0.0.1:$port/productpage"

  NO_COLOR=1 "$WEFT" up "$dir" --state-dir "$state" >"$WORK/up.log" 2>&1 &
  UP_PID=$!
  wait_log "workloads started" 60
  "$WEFT" apply -f "$WORK/gateway.yaml" --state-dir "$state" >/dev/null
  local i
  for ((i = 0; i < 100; i++)); do
    "$WEFT" load -c 1 -n 1 "$url" 2>/dev/null | grep -q '^Code 200 : 1 ' && break
    sleep 0.1
  done

  echo "== replica-crash: $CONNS connections for $DURATION on $url; kills at ${KILL_AT}s and $((KILL_AT + KILL_EVERY))s"
  "$WEFT" load -c "$CONNS" -t "$DURATION" "$url" >"$WORK/load.out" 2>&1 &
  local load=$!
  sleep "$KILL_AT"
  for pod in productpage-v1-0 productpage-v1-1; do
    local pid
    pid=$(app_pid "$pod") || { echo "no app process for $pod" >&2; return 1; }
    echo "   $(date +%T) SIGKILL $pod (pid $pid)"
    kill -KILL "$pid"
    [ "$pod" = productpage-v1-1 ] || sleep "$KILL_EVERY"
  done
  wait "$load"
  cat "$WORK/load.out"
  wait_log "productpage-v1-1 rejoined the endpoints" 20 || true
  echo "-- the mesh's account:"
  grep -E "productpage-v1-[0-9] (left|rejoined)|\[productpage-v1-[0-9]\] exited" "$WORK/up.log" || true
  kill -TERM "$UP_PID"
  wait "$UP_PID" || true
  UP_PID=""

  local requests failed
  read -r requests failed < <(tally "$WORK/load.out")
  echo "RESULT scenario=replica-crash requests=$requests failed=$failed failed_pct=$(
    awk -v f="$failed" -v n="$requests" 'BEGIN { printf "%.3f", n ? 100 * f / n : 0 }')"
}

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(replica-crash)
for s in "${scenarios[@]}"; do
  case "$s" in
    replica-crash) replica_crash ;;
    *) echo "unknown scenario: $s (known: replica-crash)" >&2; exit 2 ;;
  esac
done
