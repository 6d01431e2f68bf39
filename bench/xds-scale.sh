#!/usr/bin/env bash
# The control plane at scale: `weft control-plane` serving SERVICES services to PROXIES simulated
# sidecars (delta xDS clients in one process), then one VirtualService edit.
#
#   bench/xds-scale.sh                      # 1000 services, 2000 proxies (issue 5's scale)
#   SERVICES=300 PROXIES=600 bench/xds-scale.sh
#
# Prints the initial sync, the edit-to-applied latency over all proxies (p50/p99/max), the
# control plane's CPU seconds for the push and its peak RSS; last line
# `RESULT push_p50_ms=.. push_p99_ms=.. cp_cpu_s=.. cp_peak_rss_mb=..`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked -q -p weft -p weft-xds-scale
"$CARGO_TARGET_DIR/release/weft-xds-scale" --services "${SERVICES:-1000}" --proxies "${PROXIES:-2000}" \
  --timeout "${TIMEOUT:-300}"
