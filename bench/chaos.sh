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
#   control-plane  A mesh run from its parts (`weft control-plane`, `weft proxy` for the gateway
#                  and three httpbin sidecars, `weft example httpbin` apps), so that the control
#                  plane is a process of its own. `weft load -q RATE` through the gateway for
#                  CP_SECONDS; the control plane is SIGKILLed at 10 s and started again 5 s
#                  later, SIGKILLed again 10 s after that and restarted at once; then a routing
#                  change is written and must reach the gateway (resync). Goal: 0 failed
#                  requests, every proxy SYNCED again.
#   endpoint-kill  The same mesh, with a DestinationRule's outlierDetection and Istio's default
#                  retry policy; the app of one of the three httpbin replicas SIGKILLed under
#                  load (a crashed container: its sidecar lives on and answers 503 for it). Its
#                  endpoint stays in the registry, as a crashed pod's does until its readiness
#                  probe fails. Goal: 0 failed requests; the gateway ejects the endpoint
#                  (`/clusters` health_flags) and stops trying it (its rq_total stays flat).
#                  (Killing the sidecar too would fail the requests in flight on it with
#                  503 UC, as in Istio: `reset` is not in Istio's default retryOn.)
#   soak           bookinfo behind the gateway at SOAK_RATE req/s for SOAK_SECONDS, reviews' route
#                  pushed every 30 s; RSS and open file descriptors of `weft up` (where the
#                  control plane runs) and of every proxy sampled every 10 s. Goal: after
#                  SOAK_WARMUP seconds every RSS stays within 10% of its value then, no process
#                  has more fds open in the second half than at most in the first (pools grow
#                  and shrink with the routing; a leak only grows), and 0 failed requests.
#   hostile        The mesh run from its parts; `weft-loadgen hostile` attacks the gateway
#                  (slowloris, oversized headers, HTTP/2 rapid reset, a burst of new
#                  connections, CL+TE and double Content-Length smuggling) while HOSTILE_RATE
#                  req/s of ordinary load run beside it. Goal: each attack gets Envoy's answer
#                  (closed, 431, connection ended, all served, 400), the ordinary load loses
#                  nothing, and the gateway's memory stays bounded.
#
# Each scenario ends with a line
#   RESULT scenario=NAME requests=N failed=F failed_pct=P
# and the mesh's own account of the faults (replicas leaving and rejoining the endpoints).
# Knobs: CONNECTIONS (8), DURATION (20s), KILL_AT (5), KILL_EVERY (5), PUSHES (1000),
# PUSH_SECONDS (600), RATE (500), CP_SECONDS (45), EJECT_SECONDS (40), SOAK_RATE (200),
# HOSTILE_RATE (200), HOSTILE_SECONDS (120), HOSTILE_CONNECTIONS (500),
# SOAK_SECONDS (600), SOAK_WARMUP (60), SOAK_SAMPLES (a file to keep the samples in: seconds,
# process, RSS kB, fds).
# Everything runs on loopback; every load loop is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS="${CONNECTIONS:-8}"
DURATION="${DURATION:-20s}"
KILL_AT="${KILL_AT:-5}"
KILL_EVERY="${KILL_EVERY:-5}"
PUSHES="${PUSHES:-1000}"
PUSH_SECONDS="${PUSH_SECONDS:-600}"
RATE="${RATE:-500}"
CP_SECONDS="${CP_SECONDS:-45}"
EJECT_SECONDS="${EJECT_SECONDS:-40}"
SOAK_RATE="${SOAK_RATE:-200}"
HOSTILE_RATE="${HOSTILE_RATE:-200}"
HOSTILE_SECONDS="${HOSTILE_SECONDS:-120}"
HOSTILE_CONNECTIONS="${HOSTILE_CONNECTIONS:-500}"
SOAK_SECONDS="${SOAK_SECONDS:-600}"
SOAK_WARMUP="${SOAK_WARMUP:-60}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

echo "== building weft (release)"
cargo build --release --locked -q -p weft -p weft-loadgen
WEFT="$CARGO_TARGET_DIR/release/weft"

WORK=$(mktemp -d /tmp/weft-chaos.XXXXXX)
UP_PID=""
PARTS=() # the processes of a mesh run from its parts
stop_parts() {
  local p
  for p in "${PARTS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PARTS[@]}"; do wait "$p" 2>/dev/null || true; done
  PARTS=()
}
cleanup() {
  if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
    kill -TERM "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
  fi
  stop_parts
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

# RSS (kB) and open file descriptors of process $1: `rss fds`.
usage_of() {
  local rss fds
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || return 1
  fds=$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  echo "$rss $fds"
}

soak() {
  start_bookinfo 1
  "$WEFT" apply -f examples/bookinfo/networking/destination-rule-all.yaml --state-dir "$STATE" >/dev/null
  # The processes watched: `weft up` (the control plane runs in it) and every proxy.
  local watched=("$UP_PID") names=(weft-up) p
  for p in $(pgrep -P "$UP_PID"); do
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q ' proxy --config '; then
      watched+=("$p")
      names+=("$(basename "$(tr '\0' '\n' <"/proc/$p/cmdline" | sed -n 's/\.yaml$//p' | tail -n 1)")")
    fi
  done
  echo "== soak: $SOAK_RATE req/s over $CONNS connections for ${SOAK_SECONDS}s on $URL, reviews' route pushed every 30 s;"
  echo "   watching ${names[*]}; warm-up ${SOAK_WARMUP}s, a sample every 10 s"
  "$WEFT" load -q "$SOAK_RATE" -c "$CONNS" -t "${SOAK_SECONDS}s" "$URL" >"$WORK/load.out" 2>&1 &
  local load=$! started=$SECONDS next_push=30 i
  : >"$WORK/soak.samples"
  while kill -0 "$load" 2>/dev/null; do
    local t=$((SECONDS - started))
    for i in "${!watched[@]}"; do
      echo "$t ${names[$i]} $(usage_of "${watched[$i]}")" >>"$WORK/soak.samples"
    done
    if [ "$t" -ge "$next_push" ]; then
      local file=examples/bookinfo/networking/virtual-service-all-v1.yaml
      [ $(((next_push / 30) % 2)) = 1 ] && file=examples/bookinfo/networking/virtual-service-reviews-v3.yaml
      "$WEFT" apply -f "$file" --state-dir "$STATE" >/dev/null 2>&1 || echo "   apply of $file refused" >&2
      next_push=$((next_push + 30))
    fi
    sleep 10
  done
  wait "$load" || true
  cat "$WORK/load.out"
  echo "-- after warm-up (${SOAK_WARMUP}s): RSS (MB) at its end, min, max, last; most open fds in the first and the second half"
  local verdict
  verdict=$(awk -v warm="$SOAK_WARMUP" '
    NF == 4 && $1 >= warm {
      n = $2
      if (!(n in rss0)) { rss0[n] = $3; lo[n] = $3; hi[n] = $3; order[++k] = n }
      if ($3 < lo[n]) lo[n] = $3
      if ($3 > hi[n]) hi[n] = $3
      last[n] = $3
      c[n]++; t[n, c[n]] = $1; fd[n, c[n]] = $4
      if ($1 > end) end = $1
    }
    END {
      flat = 1; fds = 1; mid = (warm + end) / 2
      for (i = 1; i <= k; i++) {
        n = order[i]; early = 0; late = 0
        for (j = 1; j <= c[n]; j++) {
          if (t[n, j] < mid) { if (fd[n, j] > early) early = fd[n, j] }
          else if (fd[n, j] > late) late = fd[n, j]
        }
        dev = 100 * ((hi[n] - rss0[n] > rss0[n] - lo[n]) ? hi[n] - rss0[n] : rss0[n] - lo[n]) / rss0[n]
        printf "   %-28s RSS %.1f min %.1f max %.1f last %.1f (%.1f%%)  fds at most %d, then %d\n", n, rss0[n] / 1024, lo[n] / 1024, hi[n] / 1024, last[n] / 1024, dev, early, late > "/dev/stderr"
        if (dev > 10) flat = 0
        if (late > early) fds = 0
      }
      printf "rss_flat=%s fds_flat=%s", flat ? "yes" : "no", fds ? "yes" : "no"
    }' "$WORK/soak.samples" 2>&1 >"$WORK/verdict")
  echo "$verdict"
  [ -z "${SOAK_SAMPLES:-}" ] || cp "$WORK/soak.samples" "$SOAK_SAMPLES"
  stop_bookinfo
  result soak "$WORK/load.out" " $(cat "$WORK/verdict")"
}

# --- A mesh run from its parts --------------------------------------------------------------
# Addresses: the gateway at 127.250.0.100, httpbin-i's sidecar at 127.250.0.i and its app at
# 127.251.0.i:8000 (loopback ranges `weft up` does not use).
GW_IP=127.250.0.100
CP_PID=""

# The control plane on fixed ports (the proxies reconnect to the same address after a restart).
start_cp() {
  "$WEFT" control-plane --config "$PARTS_DIR/config" --instances "$PARTS_DIR/instances.yaml" \
    --xds-address "127.0.0.1:$XDS_PORT" --monitoring-address "127.0.0.1:$MON_PORT" \
    --log-level warn >>"$WORK/cp.log" 2>&1 &
  CP_PID=$!
  PARTS+=("$CP_PID")
  local i
  for ((i = 0; i < 100; i++)); do
    curl -fsS "http://127.0.0.1:$MON_PORT/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "control plane not ready" >&2
  tail -n 20 "$WORK/cp.log" >&2
  return 1
}

# `weft proxy` for node $1 with admin and health on $2, probing its app at $3 (or nothing);
# bootstrap and log named $4. Sets PID_<name>.
start_proxy() {
  local node="$1" ip="$2" probe="$3" name="$4" probes=""
  [ -n "$probe" ] && probes="\"$probe\""
  printf 'node: {id: "%s"}\nxds: {address: "http://127.0.0.1:%s"}\nadmin: {address: "%s:15000", healthAddress: "%s:15021", drainTimeout: 1s, appProbes: [%s]}\n' \
    "$node" "$XDS_PORT" "$ip" "$ip" "$probes" >"$PARTS_DIR/$name.yaml"
  "$WEFT" proxy --config "$PARTS_DIR/$name.yaml" --concurrency 1 --log-level info \
    >>"$WORK/$name.log" 2>&1 &
  PARTS+=("$!")
  printf -v "PID_${name//-/_}" '%s' "$!"
}

# Starts the control plane, three httpbin replicas with sidecars, and the gateway; sets URL
# (through the gateway). $1: more resources (YAML documents) for the config.
start_parts() {
  PARTS_DIR="$WORK/parts"
  rm -rf "$PARTS_DIR" && mkdir -p "$PARTS_DIR/config"
  XDS_PORT=$(free_port)
  MON_PORT=$(free_port)
  GW_PORT=$(free_port)
  : >"$WORK/cp.log"
  {
    echo "- {name: istio-ingressgateway-0, namespace: istio-system, labels: {istio: ingressgateway, app: istio-ingressgateway}, ip: $GW_IP, ports: []}"
    for i in 1 2 3; do
      echo "- {name: httpbin-$i, labels: {app: httpbin, version: v1}, serviceAccount: httpbin, ip: 127.250.0.$i, appHost: 127.251.0.$i, ports: [{name: http, port: 8000, protocol: HTTP}]}"
    done
  } >"$PARTS_DIR/instances.yaml"
  cat >"$PARTS_DIR/config/httpbin.yaml" <<YAML
apiVersion: v1
kind: Service
metadata: {name: httpbin, labels: {app: httpbin}}
spec:
  ports: [{name: http, port: 8000}]
  selector: {app: httpbin}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: httpbin-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: $GW_PORT, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - route:
    - destination: {host: httpbin, port: {number: 8000}}
$1
YAML
  start_cp
  local i
  for i in 1 2 3; do
    WEFT_LISTEN_ADDR=127.251.0.$i:8000 POD_NAME=httpbin-$i HOSTNAME=httpbin-$i \
      "$WEFT" example httpbin >>"$WORK/app-$i.log" 2>&1 &
    PARTS+=("$!")
    printf -v "PID_app_$i" '%s' "$!"
    start_proxy "sidecar~127.250.0.$i~httpbin-$i.default~default.svc.cluster.local" \
      "127.250.0.$i" "127.251.0.$i:8000" "sidecar-$i"
  done
  start_proxy "router~$GW_IP~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local" \
    "$GW_IP" "" gateway
  URL="http://$GW_IP:$GW_PORT/get"
  for ((i = 0; i < 100; i++)); do
    "$WEFT" load -c 1 -n 1 "$URL" 2>/dev/null | grep -q '^Code 200 : 1 ' && return 0
    sleep 0.1
  done
  echo "the gateway does not serve $URL" >&2
  tail -n 20 "$WORK/cp.log" "$WORK/gateway.log" >&2
  return 1
}

# How many proxies `weft proxy-status` lists as SYNCED for every type.
synced_proxies() {
  "$WEFT" proxy-status --control-plane "http://127.0.0.1:$MON_PORT" 2>/dev/null |
    awk 'NR > 1 { n++; for (i = 2; i <= NF; i++) if ($i ~ /^(STALE|NOT|ERROR)/) { n--; break } } END { print n + 0 }'
}

control_plane() {
  start_parts ""
  echo "== control-plane: $RATE req/s over $CONNS connections for ${CP_SECONDS}s on $URL"
  "$WEFT" load -q "$RATE" -c "$CONNS" -t "${CP_SECONDS}s" "$URL" >"$WORK/load.out" 2>&1 &
  local load=$!
  sleep 10
  echo "   $(date +%T) SIGKILL control plane (pid $CP_PID)"
  kill -KILL "$CP_PID"
  { wait "$CP_PID"; } 2>/dev/null || true
  sleep 5
  start_cp
  echo "   $(date +%T) control plane started again (pid $CP_PID)"
  sleep 10
  echo "   $(date +%T) SIGKILL control plane (pid $CP_PID), started again at once"
  kill -KILL "$CP_PID"
  { wait "$CP_PID"; } 2>/dev/null || true
  start_cp
  # Resync: a routing change made after the restarts reaches the gateway.
  sleep 2
  sed -i 's|^    - destination: {host: httpbin, port: {number: 8000}}$|&\n    headers: {response: {set: {x-chaos: resynced}}}|' \
    "$PARTS_DIR/config/httpbin.yaml"
  local i resynced=no
  for ((i = 0; i < 50; i++)); do
    if curl -sS -o /dev/null -D - "$URL" 2>/dev/null | grep -qi '^x-chaos: resynced'; then
      resynced=yes
      break
    fi
    sleep 0.1
  done
  echo "   $(date +%T) routing change written after the restarts, served by the gateway: $resynced"
  wait "$load"
  cat "$WORK/load.out"
  local synced
  synced=$(synced_proxies)
  echo "-- proxy-status after the restarts:"
  "$WEFT" proxy-status --control-plane "http://127.0.0.1:$MON_PORT" || true
  echo "-- the gateway's log of its xDS stream:"
  grep -iE "xds|control plane|reconnect" "$WORK/gateway.log" | tail -n 8 || true
  stop_parts
  result control-plane "$WORK/load.out" " synced_proxies=$synced/4 resynced=$resynced"
}

# Stat $2 of endpoint $1 in httpbin's cluster, from the gateway's /clusters.
host_stat() {
  curl -fsS "http://$GW_IP:15000/clusters" |
    awk -F'::' -v h="$1" -v s="$2" '$1 ~ /^outbound\|8000\|\|httpbin/ && $2 == h && $3 == s { print $4 }'
}

endpoint_kill() {
  start_parts "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin}
spec:
  host: httpbin
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 30s, maxEjectionPercent: 50}"
  local dead=127.250.0.3:8000
  echo "== endpoint-kill: $CONNS connections for ${EJECT_SECONDS}s on $URL; httpbin-3's app ($dead) SIGKILLed at 10 s"
  "$WEFT" load -c "$CONNS" -t "${EJECT_SECONDS}s" "$URL" >"$WORK/load.out" 2>&1 &
  local load=$!
  sleep 10
  echo "   $(date +%T) SIGKILL httpbin-3's app (pid $PID_app_3)"
  kill -KILL "$PID_app_3"
  { wait "$PID_app_3"; } 2>/dev/null || true
  sleep 3
  local flags1 total1 flags2 total2
  flags1=$(host_stat "$dead" health_flags)
  total1=$(host_stat "$dead" rq_total)
  echo "   $(date +%T) $dead: $flags1, rq_total $total1, rq_error $(host_stat "$dead" rq_error)"
  sleep 15
  flags2=$(host_stat "$dead" health_flags)
  total2=$(host_stat "$dead" rq_total)
  echo "   $(date +%T) $dead: $flags2, rq_total $total2: tried $((total2 - total1)) times in 15 s"
  wait "$load"
  cat "$WORK/load.out"
  echo "-- the gateway's /clusters for httpbin:"
  curl -fsS "http://$GW_IP:15000/clusters" |
    grep -E '^outbound\|8000\|\|httpbin.*::(health_flags|rq_total|rq_error)::' || true
  stop_parts
  result endpoint-kill "$WORK/load.out" " ejected=$flags1 tried_while_ejected=$((total2 - total1))"
}

hostile() {
  start_parts ""
  local loadgen="$CARGO_TARGET_DIR/release/weft-loadgen" gw_pid="$PID_gateway"
  echo "== hostile: attacks on the gateway ($GW_IP:$GW_PORT) while $HOSTILE_RATE req/s of ordinary load run beside them"
  "$WEFT" load -q "$HOSTILE_RATE" -c 4 -t "${HOSTILE_SECONDS}s" "$URL" >"$WORK/load.out" 2>&1 &
  local load=$!
  local peak=0 rss0
  rss0=$(awk '/^VmRSS:/ { print $2 }' "/proc/$gw_pid/status")
  (
    while kill -0 "$load" 2>/dev/null; do
      awk '/^VmRSS:/ { print $2 }' "/proc/$gw_pid/status" 2>/dev/null
      sleep 0.5
    done
  ) >"$WORK/gw.rss" &
  local sampler=$!
  local attacks=0
  "$loadgen" hostile --addr "$GW_IP:$GW_PORT" --host httpbin --connections "$HOSTILE_CONNECTIONS" \
    >"$WORK/hostile.out" 2>&1 || attacks=$?
  cat "$WORK/hostile.out"
  wait "$load" || true
  wait "$sampler" || true
  cat "$WORK/load.out"
  peak=$(sort -n "$WORK/gw.rss" | tail -n 1)
  local after
  after=$(awk '/^VmRSS:/ { print $2 }' "/proc/$gw_pid/status")
  echo "-- the gateway's RSS: $((rss0 / 1024)) MB before, $((peak / 1024)) MB at most, $((after / 1024)) MB after"
  stop_parts
  result hostile "$WORK/load.out" " attacks_answered_as_expected=$(grep -c 'ok=yes' "$WORK/hostile.out")/$(grep -c '^HOSTILE' "$WORK/hostile.out") gateway_rss_mb=$((rss0 / 1024))/$((peak / 1024))/$((after / 1024))"
}

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(replica-crash pushes control-plane endpoint-kill hostile soak)
for s in "${scenarios[@]}"; do
  case "$s" in
    replica-crash) replica_crash ;;
    pushes) pushes ;;
    control-plane) control_plane ;;
    endpoint-kill) endpoint_kill ;;
    soak) soak ;;
    hostile) hostile ;;
    *) echo "unknown scenario: $s (known: replica-crash, pushes, control-plane, endpoint-kill, hostile, soak)" >&2; exit 2 ;;
  esac
done
