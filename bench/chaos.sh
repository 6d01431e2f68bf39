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
#   pushes         bookinfo behind the gateway, the same load for PUSH_SECONDS, while reviews'
#                  VirtualService is applied again and again (`weft apply`, which waits for
#                  every proxy to ACK), alternating v1 and v3: a routing push each time, PUSHES
#                  at most. Goal: 0 failed requests.
#
# Each scenario ends with a line
#   RESULT scenario=NAME requests=N failed=F failed_pct=P
# and the mesh's own account of the faults (replicas leaving and rejoining the endpoints).
# Knobs: CONNECTIONS (8), DURATION (20s), KILL_AT (5), KILL_EVERY (5), PUSHES (1000),
# PUSH_SECONDS (600).
# Everything runs on loopback; every load loop is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS="${CONNECTIONS:-8}"
DURATION="${DURATION:-20s}"
KILL_AT="${KILL_AT:-5}"
KILL_EVERY="${KILL_EVERY:-5}"
PUSHES="${PUSHES:-1000}"
PUSH_SECONDS="${PUSH_SECONDS:-600}"
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

# Starts bookinfo (productpage at $1 replicas) behind Istio's bookinfo gateway on a free port;
# sets URL and STATE.
start_bookinfo() {
  local dir="$WORK/bookinfo" port
  STATE="$WORK/state"
  rm -rf "$dir" "$STATE"
  mkdir -p "$dir"
  python3 - "$dir/bookinfo.yaml" "$1" <<'PY'
import sys
src = open("examples/bookinfo/bookinfo.yaml").read()
line = '  command: ["weft", "example", "productpage"]\n'
assert line in src, "examples/bookinfo/bookinfo.yaml changed"
open(sys.argv[1], "w").write(src.replace(line, line + "  replicas: %s\n" % sys.argv[2]))
PY
  port=$(free_port)
  sed "s/number: 80$/number: $port/" examples/bookinfo/networking/bookinfo-gateway.yaml \
    >"$WORK/gateway.yaml"
  URL="http://127.0.0.1:$port/productpage"
  : >"$WORK/up.log"
  NO_COLOR=1 "$WEFT" up "$dir" --state-dir "$STATE" >"$WORK/up.log" 2>&1 &
  UP_PID=$!
  wait_log "workloads started" 60
  "$WEFT" apply -f "$WORK/gateway.yaml" --state-dir "$STATE" >/dev/null
  local i
  for ((i = 0; i < 100; i++)); do
    "$WEFT" load -c 1 -n 1 "$URL" 2>/dev/null | grep -q '^Code 200 : 1 ' && break
    sleep 0.1
  done
}

stop_bookinfo() {
  kill -TERM "$UP_PID"
  wait "$UP_PID" || true
  UP_PID=""
}

# `RESULT scenario=$1 requests=N failed=F failed_pct=P` from the load report $2, then $3.
result() {
  local requests failed
  read -r requests failed < <(tally "$2")
  echo "RESULT scenario=$1 requests=$requests failed=$failed failed_pct=$(
    awk -v f="$failed" -v n="$requests" 'BEGIN { printf "%.3f", n ? 100 * f / n : 0 }')${3:-}"
}

replica_crash() {
  local url
  start_bookinfo 3
  url="$URL"
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
  stop_bookinfo
  result replica-crash "$WORK/load.out"
}

pushes() {
  start_bookinfo 1
  "$WEFT" apply -f examples/bookinfo/networking/destination-rule-all.yaml --state-dir "$STATE" >/dev/null
  echo "== pushes: $CONNS connections for ${PUSH_SECONDS}s on $URL; reviews v1/v3 applied in turn (at most $PUSHES)"
  "$WEFT" load -c "$CONNS" -t "${PUSH_SECONDS}s" "$URL" >"$WORK/load.out" 2>&1 &
  local load=$! n=0 refused=0 started=$SECONDS
  while kill -0 "$load" 2>/dev/null && [ "$n" -lt "$PUSHES" ]; do
    local version=v1
    [ $((n % 2)) = 1 ] && version=v3
    # reviews to one version, alternating: Istio's task files for v1 (all-v1 has reviews) and v3.
    local file
    if [ "$version" = v1 ]; then
      file=examples/bookinfo/networking/virtual-service-all-v1.yaml
    else
      file=examples/bookinfo/networking/virtual-service-reviews-v3.yaml
    fi
    "$WEFT" apply -f "$file" --state-dir "$STATE" >/dev/null 2>"$WORK/apply.err" || refused=$((refused + 1))
    n=$((n + 1))
  done
  local pushed_in=$((SECONDS - started))
  wait "$load"
  cat "$WORK/load.out"
  stop_bookinfo
  result pushes "$WORK/load.out" " pushes=$n push_seconds=$pushed_in refused_applies=$refused"
}

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(replica-crash pushes)
for s in "${scenarios[@]}"; do
  case "$s" in
    replica-crash) replica_crash ;;
    pushes) pushes ;;
    *) echo "unknown scenario: $s (known: replica-crash, pushes)" >&2; exit 2 ;;
  esac
done
