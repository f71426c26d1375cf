#!/usr/bin/env bash
# The whole topology on loopback: an echo service, mpserver, three lossy bridges, mpclient,
# then the same traffic through the tunnel and through one lossy bridge alone, side by side.
#
#   make demo                  (builds, then runs this)
#   DURATION=10 RATE=2000 bash examples/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release}
BASE=${DEMO_BASE_PORT:-17000}
DURATION=${DURATION:-5}
RATE=${RATE:-1000}
SIZE=${SIZE:-1000}
ECHO=$((BASE + 666)); SERVER=$((BASE + 200)); CLIENT=$((BASE + 400)); DIRECT=$((BASE + 410))
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/mptunnel-demo.XXXXXX")

for b in mpclient mpserver mpbridge mpperf; do
    [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run 'cargo build --release --workspace' (or 'make demo')" >&2; exit 1; }
done

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$LOGS"
}
trap cleanup EXIT INT TERM

start() { "$@" 2>>"$LOGS/$(basename "$1").log" & PIDS+=($!); }

echo "== starting on 127.0.0.1 (logs in $LOGS)"
start "$BIN/mpperf" echo "127.0.0.1:$ECHO"
start "$BIN/mpserver" --listen "127.0.0.1:$SERVER" --target "127.0.0.1:$ECHO"
# Three bridges: 20 %, 30 %, 40 % loss each way; 10, 30, 60 ms one-way delay.
LOSS=(20 30 40); DELAY=(10 30 60)
: > "$LOGS/client.conf"
for i in 0 1 2; do
    port=$((BASE + 401 + i))
    start "$BIN/mpbridge" --loss "${LOSS[$i]}" --delay "${DELAY[$i]}" --jitter 2 --seed $((i + 1)) \
        "127.0.0.1:$port" "127.0.0.1:$SERVER"
    echo "127.0.0.1 $port name=bridge$((i + 1))-${LOSS[$i]}%-${DELAY[$i]}ms" >> "$LOGS/client.conf"
    echo "   bridge $((i + 1)): 127.0.0.1:$port -> mpserver, ${LOSS[$i]} % loss, ${DELAY[$i]} ms delay each way"
done
# The same impairment as bridge 2, straight to the echo service: what the app gets without us.
start "$BIN/mpbridge" --loss 30 --delay 30 --jitter 2 --seed 9 "127.0.0.1:$DIRECT" "127.0.0.1:$ECHO"
start "$BIN/mpclient" --listen "127.0.0.1:$CLIENT" --stats-interval 1 "$LOGS/client.conf"
sleep 1.5

echo "== sending $RATE datagrams/s of $SIZE bytes for $DURATION s, both ways at once"
"$BIN/mpperf" load --target "127.0.0.1:$CLIENT" --rate "$RATE" --size "$SIZE" --duration "$DURATION" \
    --label "through mptunnel (3 bridges)" --json > "$LOGS/tunnel.json" &
T=$!
"$BIN/mpperf" load --target "127.0.0.1:$DIRECT" --rate "$RATE" --size "$SIZE" --duration "$DURATION" \
    --label "one bridge, 30 % loss, no tunnel" --json > "$LOGS/direct.json"
wait "$T"

python3 - "$LOGS/tunnel.json" "$LOGS/direct.json" <<'PY'
import json, sys
rows = [json.load(open(p)) for p in sys.argv[1:]]
print()
print(f"{'':34} {'sent':>7} {'received':>9} {'loss':>8} {'dup':>5} {'rtt p50':>9} {'rtt p99':>9}")
for r in rows:
    rtt = r.get("rtt_ms") or {}
    f = lambda k: f"{rtt[k]:.1f} ms" if rtt.get(k) is not None else "-"
    print(f"{r['label']:34} {r['sent']:>7} {r['received']:>9} {r['loss_pct']:>7.2f}% {r['duplicates']:>5} {f('p50'):>9} {f('p99'):>9}")
t, d = rows
print()
print(f"theory: tunnel round-trip loss 1-(1-0.2*0.3*0.4)^2 = {100*(1-(1-0.2*0.3*0.4)**2):.1f} %, "
      f"one 30 % bridge 1-0.7^2 = {100*(1-0.7**2):.1f} %")
PY
echo
echo "== mpclient's view of its paths (its last stats report)"
awk '/^client epoch/{block=$0; next} /^  path/{block=block "\n" $0} END{print block}' "$LOGS/mpclient.log"
echo
echo "== done; stopping everything"
