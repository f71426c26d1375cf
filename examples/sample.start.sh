#!/usr/bin/env bash
# Brings up the sample topology of the original README on this host:
#   udp service :6666 <- mpserver :2000 <- 3 bridges :4001-4003 <- mpclient :4000 <- your app
# The service is `mpperf echo` (replace it with your own udpserver if you have one).
# Bridges are socat when installed (BRIDGE=socat) or mpbridge (BRIDGE=mpbridge, the default
# when socat is missing). PIDs go to sample.pids so sample.stop.sh stops only these.
set -euo pipefail
cd "$(dirname "$0")"
BIN=${BIN:-../target/release}
BRIDGE=${BRIDGE:-$(command -v socat >/dev/null && echo socat || echo mpbridge)}
PIDFILE=${PIDFILE:-sample.pids}
: > "$PIDFILE"
run() { "$@" & echo $! >> "$PIDFILE"; }

run "$BIN/mpperf" echo 6666
run "$BIN/mpserver" 2000 localhost 6666
for port in 4001 4002 4003; do
    if [ "$BRIDGE" = socat ]; then
        # -b 65535: socat's default 8192-byte buffer would truncate larger datagrams.
        run socat -b 65535 udp-listen:$port udp4:localhost:2000
    else
        run "$BIN/mpbridge" $port localhost:2000
    fi
done
run "$BIN/mpclient" 4000 client.conf
echo "sample topology up ($BRIDGE bridges); send UDP to 127.0.0.1:4000, e.g.:"
echo "  $BIN/mpperf load --target 127.0.0.1:4000 --rate 1000 --duration 5"
echo "stop it with ./sample.stop.sh"
