#!/usr/bin/env bash
# A headless Chromium screenshot of bookinfo's product page through the ingress gateway, with
# reviews v3 (red stars): docs/bookinfo-productpage.png. Installs Debian's chromium if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
command -v chromium >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}
cargo build --locked -q -p weft
WEFT="$CARGO_TARGET_DIR/debug/weft"
STATE=$(mktemp -d)
"$WEFT" up examples/bookinfo --state-dir "$STATE" >"$STATE/up.log" 2>&1 &
UP=$!
trap 'kill -TERM $UP 2>/dev/null; wait $UP 2>/dev/null; rm -rf "$STATE"' EXIT
for f in bookinfo-gateway destination-rule-all virtual-service-reviews-v3; do
  for _ in $(seq 1 50); do
    "$WEFT" apply -f "examples/bookinfo/networking/$f.yaml" --state-dir "$STATE" >/dev/null 2>&1 && break
    sleep 0.2
  done
done
for _ in $(seq 1 100); do
  curl -s http://127.0.0.1:8080/productpage | grep -q 'reviews-v3' && break
  sleep 0.1
done
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,560 \
  --screenshot="$PWD/docs/bookinfo-productpage.png" http://127.0.0.1:8080/productpage 2>/dev/null
echo "docs/bookinfo-productpage.png"
