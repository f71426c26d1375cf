#!/usr/bin/env bash
# Measures what each scheduling mode delivers and what it costs (not a test): three bridges
# losing 10, 20 and 30 % each way (and 10/15/20 ms one way), one mpperf echo flow per mode,
# the modes alternated and repeated; prints the median of the runs per mode.
#   bash examples/modes.sh            or   RUNS=5 RATE=1000 DURATION=8 bash examples/modes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
BASE=${MODES_BASE_PORT:-19000}
RUNS=${RUNS:-3}
RATE=${RATE:-1000}
DURATION=${DURATION:-6}
MODES=${MODES:-"redundant failover k-best=2 balance"}
ECHO=$((BASE + 666))
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/mptunnel-modes.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$LOGS"; }
trap cleanup EXIT INT TERM
start() { "$@" 2>>"$LOGS/err.log" & PIDS+=($!); }

start "$BIN/mpperf" echo "127.0.0.1:$ECHO"
start "$BIN/mpserver" --listen "127.0.0.1:$((BASE + 1))" --target "127.0.0.1:$ECHO"
: > "$LOGS/client.conf"
i=0
for spec in "10 10" "20 15" "30 20"; do
    set -- $spec
    i=$((i + 1))
    start "$BIN/mpbridge" --loss "$1" --delay "$2" --seed "$i" "127.0.0.1:$((BASE + 10 + i))" "127.0.0.1:$((BASE + 1))"
    echo "127.0.0.1 $((BASE + 10 + i)) name=loss$1" >> "$LOGS/client.conf"
done
sleep 0.5
port=$((BASE + 100))
for run in $(seq "$RUNS"); do
    for mode in $MODES; do
        port=$((port + 1))
        "$BIN/mpclient" --listen "127.0.0.1:$port" --mode "$mode" --stats-json "$LOGS/client.conf" \
            > "$LOGS/client.json" 2>>"$LOGS/err.log" &
        cpid=$!
        sleep 1.5
        "$BIN/mpperf" load --target "127.0.0.1:$port" --rate "$RATE" --size 200 --duration "$DURATION" --json > "$LOGS/load.json"
        kill -TERM "$cpid"; wait "$cpid" || true
        python3 - "$mode" "$LOGS/load.json" "$LOGS/client.json" >> "$LOGS/rows" <<'PY'
import json, sys
mode, load, client = sys.argv[1], json.load(open(sys.argv[2])), json.loads(open(sys.argv[3]).read().strip().splitlines()[-1])
t = client["totals"]
data_copies = sum(p["tx_packets"] - p["probes_sent"] for p in client["paths"])
print(mode, 100 - load["loss_pct"], data_copies / max(1, t["local_rx_datagrams"]), load["rtt_ms"]["p50"], load["rtt_ms"]["p99"])
PY
    done
done
python3 - "$LOGS/rows" "$RUNS" "$RATE" "$DURATION" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print(f"three bridges at 10/20/30 % loss each way; {sys.argv[3]} datagrams/s echo, {sys.argv[4]} s, median of {sys.argv[2]} runs")
print(f"| mode | round trips delivered | copies sent per datagram (client) | RTT p50 ms | RTT p99 ms |")
print(f"|---|---|---|---|---|")
seen = []
for r in rows:
    if r[0] not in seen:
        seen.append(r[0])
for m in seen:
    rs = [r for r in rows if r[0] == m]
    med = lambda i: statistics.median(float(r[i]) for r in rs)
    print(f"| `{m}` | {med(1):.2f} % | {med(2):.2f} | {med(3):.1f} | {med(4):.1f} |")
PY
