#!/usr/bin/env bash
# One hop through transparent capture: an unmodified client in a network namespace sends to a
# service's virtual IP, iptables (the rules of `weft-proxy capture`, as `weft up --capture`
# installs them) redirects the connection to the sidecar, which routes it by its original
# destination to nginx. weft-proxy against Envoy configured as Istio configures it, and the
# direct path, in the same run.
#
#   sudo bench/capture.sh     # root: it creates network namespaces and iptables rules
#
# Layout (all made by this script, removed on exit, even on failure):
#   weftbench-cap-PID-srv  nginx on 0.0.0.0:8080 (1 KiB body), 10.249.1.1 and 10.249.2.1
#   weftbench-cap-PID-w    10.249.1.2, veth to srv; weft-proxy as uid/gid 1337; the client
#   weftbench-cap-PID-e    10.249.2.2, veth to srv; Envoy as uid/gid 1337; the client
# The host's own network is not touched. In both client namespaces `weft-proxy capture -p
# 15001 -z 15006 -u 1337 -g 1337 -m REDIRECT -x 10.249.0.0/16` installs the same rules; the
# `-x` exclusion (Istio's excludeOutboundIPRanges) leaves nginx's real address uncaptured for
# the direct path. The service is `svc` at the virtual IP 240.240.0.10:80: nothing listens
# there, only the sidecars' configs know it, so every request to it went through capture.
#   - weft: an outbound listener on 0.0.0.0:15001 whose `capture` table maps 240.240.0.10:80
#     to `svc.default.svc.cluster.local:80` (HTTP), a route configuration with that virtual
#     host, a cluster whose endpoint is nginx; as `weft control-plane` generates for a
#     captured sidecar (crates/control/tests/golden/capture-bookinfo).
#   - Envoy: Istio's virtualOutbound listener (0.0.0.0:15001, use_original_dst, BlackHole
#     default chain as under REGISTRY_ONLY) handing connections to the 0.0.0.0_80 listener
#     (bind_to_port: false) with an HTTP connection manager and the same virtual host; Istio
#     gives an HTTP port one such wildcard listener for all its services.
# The load generator runs in the client namespace as root (not uid 1337: captured), HTTP/1.1
# keep-alive with `Host: svc`, as a client of the service would send. Targets: direct (nginx's
# address from the weft client namespace); weft-plain (the same sidecar's 15001 called
# directly, not redirected: weft against it is what capture costs); weft; envoy. One worker
# per proxy. Measured as bench/pair.sh (bench/lib.sh): throughput in ROUNDS interleaved
# rounds (ratio = median of per-round ratios), latency at RATE rps (median of REPEAT runs,
# interleaved the same way), CPU per 1000 requests and peak RSS of each proxy during its
# fixed-rate runs. The proxies' request counters are checked afterwards: a run where a proxy
# counted (almost) nothing measured something else, and fails.
# Knobs: SECONDS_PER_RUN (5), CONNECTIONS (32), RATE (1000), REPEAT (3), ROUNDS (3),
# THROUGHPUT_SECONDS (5); SKIP_BUILD=1 uses the release binaries already built. The proxies
# run as uid and gid 1337 (setpriv --reuid --regid --clear-groups) from copies of their
# binaries in the work directory (the build's may be under a home directory uid 1337 cannot
# enter).
# The last line is `RESULT capture_throughput_vs_envoy=X capture_p99_added_vs_envoy=Y
# capture_cpu_per_1k_vs_envoy=Z rss_mb=W`.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${SECONDS_PER_RUN:-5}"
CONNS="${CONNECTIONS:-32}"
RATE="${RATE:-1000}"
REPEAT="${REPEAT:-3}"
ROUNDS="${ROUNDS:-3}"
TSECS="${THROUGHPUT_SECONDS:-5}"

if [ "$(id -u)" != 0 ]; then
  echo "bench/capture.sh needs root: it creates network namespaces and iptables rules" >&2
  exit 1
fi
for c in ip iptables-restore setpriv; do
  command -v "$c" >/dev/null || { echo "bench/capture.sh needs $c" >&2; exit 1; }
done

# shellcheck source=bench/lib.sh
. bench/lib.sh

PROXY_UID=1337
VIP=240.240.0.10
HOST=svc
FQDN=svc.default.svc.cluster.local
CLUSTER="outbound|80||$FQDN"
NGINX_PORT=8080
NS_PREFIX="weftbench-cap-$$"
NS_S="$NS_PREFIX-srv"; NS_W="$NS_PREFIX-w"; NS_E="$NS_PREFIX-e"
# Each client namespace and nginx's end of its veth.
declare -A CLIENT_IP=([w]=10.249.1.2 [e]=10.249.2.2) SERVER_IP=([w]=10.249.1.1 [e]=10.249.2.1)
declare -A NS_OF=([w]="$NS_W" [e]="$NS_E")
CAPTURE_FLAGS=(-p 15001 -z 15006 -u "$PROXY_UID" -g "$PROXY_UID" -m REDIRECT -x 10.249.0.0/16)

# Processes first (lib.sh's cleanup: they live in the namespaces), then the capture rules
# (weft's chains, by the command that made them), then the namespaces, which takes their
# veths and any rule left with them.
MADE_NS=()
cap_cleanup() {
  local rc=$? ns pid
  cleanup
  for ns in "${MADE_NS[@]}"; do
    # Anything of this run still in its namespaces (all started by this script).
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    case $ns in
      "$NS_W" | "$NS_E") ip netns exec "$ns" "$BIN/weft-proxy" capture --cleanup >/dev/null 2>&1 || true ;;
    esac
    ip netns del "$ns" 2>/dev/null || echo "could not remove network namespace $ns" >&2
  done
  exit "$rc"
}
trap cap_cleanup EXIT
trap 'exit 130' INT TERM

# Background processes are started with `ip netns exec` itself, never through a function (a
# subshell's pid would be the one in PIDS): `ip netns exec` and setpriv exec, so $! is the
# proxy's own pid, which the CPU figures and the cleanup need.
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# Waits until ADDR:PORT accepts connections inside namespace NS.
wait_in() {
  local ns=$1 addr=$2 port=$3
  for _ in $(seq 1 100); do
    if in_ns "$ns" python3 -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(('$addr',$port)))"; then return 0; fi
    sleep 0.1
  done
  echo "$addr:$port never opened in $ns" >&2; tail -5 "$WORK"/*.log >&2 || true; return 1
}

# --- namespaces: nginx's, and one client namespace per proxy, each with a veth to nginx's ----
ip netns add "$NS_S"; MADE_NS+=("$NS_S")
ip -n "$NS_S" link set lo up
for p in w e; do
  ns=${NS_OF[$p]}
  ip netns add "$ns"; MADE_NS+=("$ns")
  ip -n "$ns" link set lo up
  # Made inside nginx's namespace with the peer moved to the client's: no name on the host.
  ip -n "$NS_S" link add "veth-$p" type veth peer name eth0 netns "$ns"
  ip -n "$NS_S" addr add "${SERVER_IP[$p]}/24" dev "veth-$p"
  ip -n "$NS_S" link set "veth-$p" up
  ip -n "$ns" addr add "${CLIENT_IP[$p]}/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "${SERVER_IP[$p]}"
  in_ns "$ns" "$BIN/weft-proxy" capture "${CAPTURE_FLAGS[@]}"
done
echo "== namespaces $NS_S, $NS_W, $NS_E; capture rules: weft-proxy capture ${CAPTURE_FLAGS[*]}"

# --- nginx, 1 KiB body ------------------------------------------------------------------------
head -c 1024 /dev/zero | tr '\0' 'x' > "$WORK/1k"
cat > "$WORK/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
error_log $WORK/nginx.log;
pid $WORK/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 0.0.0.0:$NGINX_PORT;
    location / { root $WORK; try_files /1k =404; }
  }
}
NGINX
ip netns exec "$NS_S" "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" &
PIDS+=($!)

# --- the proxies' binaries and configs, readable by uid 1337 ----------------------------------
mkdir -p "$WORK/bin"
cp "$BIN/weft-proxy" "$WORK/bin/weft-proxy"
cp "$ENVOY" "$WORK/bin/envoy"
chmod 755 "$WORK/bin" "$WORK/bin/weft-proxy" "$WORK/bin/envoy"

cat > "$WORK/weft.yaml" <<YAML
admin: {address: "127.0.0.1:15000", healthAddress: "127.0.0.1:15021", prometheusAddress: "off"}
listeners:
- name: outbound
  address: "0.0.0.0:15001"
  http:
    routeConfig: outbound
    capture:
      services:
      - {addresses: ["$VIP"], port: 80, authority: "$FQDN:80", protocol: CAPTURED_PROTOCOL_HTTP}
routeConfigs:
- name: outbound
  virtualHosts:
  - name: "$FQDN:80"
    domains: ["$FQDN", "$FQDN:80", "$HOST", "$HOST:80", "$VIP", "$VIP:80"]
    routes: [{name: default, route: {clusters: [{cluster: "$CLUSTER"}]}}]
clusters:
- {name: "$CLUSTER", endpoints: [{address: "${SERVER_IP[w]}:$NGINX_PORT"}]}
YAML

cat > "$WORK/envoy.yaml" <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 15000}}}
static_resources:
  listeners:
  - name: virtualOutbound
    address: {socket_address: {address: 0.0.0.0, port_value: 15001}}
    use_original_dst: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: BlackHoleCluster
          cluster: BlackHoleCluster
  - name: 0.0.0.0_80
    address: {socket_address: {address: 0.0.0.0, port_value: 80}}
    bind_to_port: false
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound_0.0.0.0_80
          route_config:
            name: "80"
            virtual_hosts:
            - name: "$FQDN:80"
              domains: ["$FQDN", "$FQDN:80", "$HOST", "$HOST:80", "$VIP", "$VIP:80"]
              routes: [{match: {prefix: "/"}, route: {cluster: "$CLUSTER"}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: "$CLUSTER"
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: "$CLUSTER"
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: ${SERVER_IP[e]}, port_value: $NGINX_PORT}}}}]}]
  - name: BlackHoleCluster
    connect_timeout: 1s
    type: STATIC
YAML
chmod 644 "$WORK/weft.yaml" "$WORK/envoy.yaml"

ip netns exec "$NS_W" setpriv --reuid="$PROXY_UID" --regid="$PROXY_UID" --clear-groups \
  "$WORK/bin/weft-proxy" --config "$WORK/weft.yaml" --concurrency 1 --log-level warn 2>"$WORK/weft.log" &
WEFT_PID=$!; PIDS+=($WEFT_PID)
ip netns exec "$NS_E" setpriv --reuid="$PROXY_UID" --regid="$PROXY_UID" --clear-groups \
  "$WORK/bin/envoy" -c "$WORK/envoy.yaml" --concurrency 1 --log-level warn --disable-hot-restart \
  --base-id $((RANDOM % 1000 + 100)) 2>"$WORK/envoy.log" &
ENVOY_PID=$!; PIDS+=($ENVOY_PID)

wait_in "$NS_S" 127.0.0.1 "$NGINX_PORT"
wait_in "$NS_W" 127.0.0.1 15001
wait_in "$NS_E" 127.0.0.1 15001
for pid in "$WEFT_PID" "$ENVOY_PID"; do
  if [ "$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")" != "$PROXY_UID" ]; then
    echo "proxy $pid does not run as uid $PROXY_UID" >&2; exit 1
  fi
done

# --- targets ----------------------------------------------------------------------------------
loadgen() {
  local t=$1 mode=$2 ns addr
  shift 2
  case $t in
    direct) ns=$NS_W; addr="${SERVER_IP[w]}:$NGINX_PORT" ;;
    weft) ns=$NS_W; addr="$VIP:80" ;;
    weft-plain) ns=$NS_W; addr="127.0.0.1:15001" ;;
    envoy) ns=$NS_E; addr="$VIP:80" ;;
  esac
  in_ns "$ns" "$BIN/weft-loadgen" "$mode" --addr "$addr" --host "$HOST" "$@"
}
pids_of() { case $1 in direct) echo "" ;; weft | weft-plain) echo "$WEFT_PID" ;; envoy) echo "$ENVOY_PID" ;; esac; }

# The requests each proxy counted (its admin's stats, inside its namespace).
weft_requests() {
  in_ns "$NS_W" python3 -c "
import urllib.request
text = urllib.request.urlopen('http://127.0.0.1:15000/stats').read().decode()
print(sum(int(l.split()[-1]) for l in text.splitlines() if l.startswith('http.downstream_rq_total:')))"
}
envoy_requests() {
  in_ns "$NS_E" python3 -c "
import urllib.request
text = urllib.request.urlopen('http://127.0.0.1:15000/stats?filter=^http.outbound_0.0.0.0_80.downstream_rq_total$').read().decode()
print(sum(int(l.split()[-1]) for l in text.splitlines() if l.strip()))"
}
# The VIP is reachable only through the sidecars: one request each before measuring.
for t in weft envoy; do
  out=$(loadgen "$t" throughput --connections 1 --seconds 1)
  no_errors "$out"
done
echo "== through capture: weft counted $(weft_requests) requests, envoy $(envoy_requests)"

measure_throughput_rounds direct weft-plain weft envoy
measure_latency_rounds direct weft-plain weft envoy

w_n=$(weft_requests); e_n=$(envoy_requests)
echo "== requests counted by the proxies: weft $w_n, envoy $e_n"
if [ "${w_n:-0}" -lt 1000 ] || [ "${e_n:-0}" -lt 1000 ]; then
  echo "a proxy counted (almost) no requests: the traffic did not go through capture" >&2
  exit 1
fi

echo
print_table direct weft-plain weft envoy
python3 - "${RPS[direct]}" "${RPS[weft]}" "${P99[direct]}" "${P99[weft]}" "${P99[envoy]}" "${CPU1K[weft]}" "${CPU1K[envoy]}" "${HWM_EACH[weft]}" "${HWM_EACH[envoy]}" "$RATIO" "${RPS[weft-plain]}" "${CPU1K[weft-plain]}" <<'PY'
import sys
rd, rw, pd, pw, pe, cw, ce, hw, he, ratio, rp, cp = map(float, sys.argv[1:])
added_w, added_e = max(pw - pd, 0.001), max(pe - pd, 0.001)
print()
print(f"weft/direct throughput {rw/rd:.2f}   weft/envoy throughput {ratio:.2f} (median of rounds)")
print(f"capture's cost in weft (captured vs plain): throughput {rw/rp:.2f}, cpu per 1k {cw/cp:.2f}")
print(f"added p99: weft {added_w:.3f} ms, envoy {added_e:.3f} ms")
print(f"cpu s per 1k requests: weft {cw:.4f}, envoy {ce:.4f}")
print(f"peak RSS: weft {hw/1024:.1f} MB, envoy {he/1024:.1f} MB")
print(f"RESULT capture_throughput_vs_envoy={ratio:.2f} capture_p99_added_vs_envoy={added_w/added_e:.2f} capture_cpu_per_1k_vs_envoy={cw/ce:.2f} rss_mb={hw/1024:.1f}")
PY
