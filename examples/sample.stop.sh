#!/usr/bin/env bash
# Stops what sample.start.sh started (and nothing else).
set -u
cd "$(dirname "$0")"
PIDFILE=${PIDFILE:-sample.pids}
[ -f "$PIDFILE" ] || { echo "nothing to stop ($PIDFILE not found)"; exit 0; }
while read -r pid; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
done < "$PIDFILE"
rm -f "$PIDFILE"
echo "sample topology stopped"
