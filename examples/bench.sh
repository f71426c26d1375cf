#!/usr/bin/env bash
# Benchmark (not a test). In one run and at the same offered loads, it measures:
#   - the plaintext tunnel over three lossless mpbridge bridges,
#   - the same tunnel encrypted (XChaCha20-Poly1305, pre-shared key),
#   - one mpbridge hop straight to the echo service (no tunnel),
# and prints the ratios: encrypted / plaintext and tunnel / one hop.
#   make bench            or   RATES="5000 20000" DURATION=3 bash examples/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
BASE=${BENCH_BASE_PORT:-18000}
DURATION=${DURATION:-3}
SIZE=${SIZE:-1200}
RATES=${RATES:-"1000 5000 10000 20000 30000 40000"}
ECHO=$((BASE + 666)); DIRECT=$((BASE + 10))
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/mptunnel-bench.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$LOGS"; }
trap cleanup EXIT INT TERM
start() { "$@" 2>>"$LOGS/err.log" & PIDS+=($!); }

"$BIN/mpclient" genkey > "$LOGS/key"
chmod 600 "$LOGS/key"
start "$BIN/mpperf" echo "127.0.0.1:$ECHO"
start "$BIN/mpbridge" "127.0.0.1:$DIRECT" "127.0.0.1:$ECHO"
# topology BASEPORT [mpclient/mpserver options]: mpserver on +200, bridges +401..403, client +400
topology() {
    local b=$1; shift
    start "$BIN/mpserver" --listen "127.0.0.1:$((b + 200))" --target "127.0.0.1:$ECHO" "$@"
    : > "$LOGS/client-$b.conf"
    for i in 1 2 3; do
        start "$BIN/mpbridge" "127.0.0.1:$((b + 400 + i))" "127.0.0.1:$((b + 200))"
        echo "127.0.0.1 $((b + 400 + i))" >> "$LOGS/client-$b.conf"
    done
    start "$BIN/mpclient" --listen "127.0.0.1:$((b + 400))" "$@" "$LOGS/client-$b.conf"
}
topology $((BASE + 1000))
topology $((BASE + 2000)) --key-file "$LOGS/key"
PLAIN=$((BASE + 1400)); SEALED=$((BASE + 2400))
sleep 1

run() { "$BIN/mpperf" load --target "127.0.0.1:$1" --rate "$2" --size "$SIZE" --duration "$DURATION" --json; }
echo "datagrams of $SIZE bytes, $DURATION s per run, round trips per second received"
printf '%8s | %9s %7s %7s | %9s %7s %7s | %9s %7s | %9s %9s\n' \
    offered plain loss p50ms encrypted loss p50ms one-hop p50ms enc/plain plain/hop
: > "$LOGS/rows"
for r in $RATES; do
    p=$(run "$PLAIN" "$r"); e=$(run "$SEALED" "$r"); d=$(run "$DIRECT" "$r")
    echo "$r $p" >> "$LOGS/plain"; echo "$r $e" >> "$LOGS/sealed"; echo "$r $d" >> "$LOGS/direct"
    python3 - "$r" "$p" "$e" "$d" <<'PY'
import json, sys
r = sys.argv[1]
p, e, d = (json.loads(x) for x in sys.argv[2:])
p50 = lambda x: (x["rtt_ms"] or {}).get("p50") or float("nan")
ratio = lambda a, b: a["throughput_pps"] / b["throughput_pps"] if b["throughput_pps"] else float("nan")
print(f"{r:>8} | {p['throughput_pps']:>9.0f} {p['loss_pct']:>6.2f}% {p50(p):>7.3f} | "
      f"{e['throughput_pps']:>9.0f} {e['loss_pct']:>6.2f}% {p50(e):>7.3f} | "
      f"{d['throughput_pps']:>9.0f} {p50(d):>7.3f} | {ratio(e, p):>9.2f} {ratio(p, d):>9.2f}")
PY
done
python3 - "$LOGS/plain" "$LOGS/sealed" "$LOGS/direct" <<'PY'
import json, sys
best = []
for path in sys.argv[1:]:
    rows = [json.loads(line.split(" ", 1)[1]) for line in open(path)]
    best.append(max(r["throughput_pps"] for r in rows))
p, e, d = best
print()
print(f"saturation (best delivered rate over the sweep): plain tunnel {p:.0f}/s, "
      f"encrypted tunnel {e:.0f}/s, one hop {d:.0f}/s")
print(f"encrypted / plain = {e / p:.2f}; plain tunnel / one hop = {p / d:.2f}")
PY
echo
echo "== cost of sealing one packet (cargo bench --bench seal)"
cargo bench -q --bench seal 2>/dev/null | tail -2
