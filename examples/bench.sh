#!/usr/bin/env bash
# Benchmark (not a test): the tunnel over three lossless mpbridge bridges against the same
# traffic through one bridge straight to the echo service, measured in one run, as ratios.
#   make bench            or   RATES="5000 20000" DURATION=3 bash examples/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
BASE=${BENCH_BASE_PORT:-18000}
DURATION=${DURATION:-3}
SIZE=${SIZE:-1200}
RATES=${RATES:-"1000 5000 10000 20000 40000"}
ECHO=$((BASE + 666)); SERVER=$((BASE + 200)); CLIENT=$((BASE + 400)); DIRECT=$((BASE + 410))
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/mptunnel-bench.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$LOGS"; }
trap cleanup EXIT INT TERM
start() { "$@" 2>>"$LOGS/err.log" & PIDS+=($!); }

start "$BIN/mpperf" echo "127.0.0.1:$ECHO"
start "$BIN/mpserver" --listen "127.0.0.1:$SERVER" --target "127.0.0.1:$ECHO"
: > "$LOGS/client.conf"
for i in 1 2 3; do
    start "$BIN/mpbridge" "127.0.0.1:$((BASE + 400 + i))" "127.0.0.1:$SERVER"
    echo "127.0.0.1 $((BASE + 400 + i))" >> "$LOGS/client.conf"
done
start "$BIN/mpbridge" "127.0.0.1:$DIRECT" "127.0.0.1:$ECHO"
start "$BIN/mpclient" --listen "127.0.0.1:$CLIENT" "$LOGS/client.conf"
sleep 1

run() { "$BIN/mpperf" load --target "$1" --rate "$2" --size "$SIZE" --duration "$DURATION" --json; }
echo "datagrams of $SIZE bytes, $DURATION s per run; 'direct' = one mpbridge hop to the echo service"
printf '%8s | %10s %7s %8s %8s | %10s %7s %8s %8s | %6s %8s\n' rate tunnel/s loss p50ms p99ms direct/s loss p50ms p99ms ratio +p50us
for r in $RATES; do
    t=$(run "127.0.0.1:$CLIENT" "$r"); d=$(run "127.0.0.1:$DIRECT" "$r")
    python3 - "$r" "$t" "$d" <<'PY'
import json, sys
r, t, d = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
g = lambda x, k: (x["rtt_ms"] or {}).get(k) or float("nan")
ratio = t["throughput_pps"] / d["throughput_pps"] if d["throughput_pps"] else float("nan")
print(f"{r:>8} | {t['throughput_pps']:>10.0f} {t['loss_pct']:>6.2f}% {g(t,'p50'):>8.3f} {g(t,'p99'):>8.3f} | "
      f"{d['throughput_pps']:>10.0f} {d['loss_pct']:>6.2f}% {g(d,'p50'):>8.3f} {g(d,'p99'):>8.3f} | "
      f"{ratio:>6.2f} {1000*(g(t,'p50')-g(d,'p50')):>8.0f}")
PY
done
