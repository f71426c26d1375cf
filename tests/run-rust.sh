#!/usr/bin/env bash
# Runs the workspace's Rust tests, then the ones that need something of the machine.
#
# Such a test is `#[ignore = "needs ..."]` and its name starts with what it needs: socat_*
# (socat on PATH), ipv6_* (a bindable ::1), netns_* (root and ip). A plain `cargo test` lists
# them as ignored; here they run when their need is met and are named as skipped when it is
# not. Under CI=true they all run, and a test whose need is missing fails, naming it.
# Prints one summary line; exits 1 if anything failed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CARGO=${CARGO:-cargo}
STRICT=false
[ "${CI:-}" = true ] && STRICT=true
log=$(mktemp "${TMPDIR:-/tmp}/mpt-rust-tests.XXXXXX")
trap 'rm -f "$log"' EXIT

"$CARGO" test --release --workspace --no-fail-fast 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

# need:why-not, for each need that is not met here.
unmet=()
command -v socat >/dev/null 2>&1 || unmet+=("socat:socat is not on PATH")
python3 - <<'EOF' 2>/dev/null || unmet+=("ipv6:cannot bind [::1]")
import socket
socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("::1", 0))
EOF
if [ "$(id -u)" != 0 ]; then
    unmet+=("netns:not root")
elif ! command -v ip >/dev/null 2>&1; then
    unmet+=("netns:ip (iproute2) is not on PATH")
fi

skip=()
skipped=()
if ! $STRICT; then
    ignored=$("$CARGO" test -q --release --workspace -- --ignored --list 2>/dev/null |
        sed -n 's/: test$//p')
    for u in "${unmet[@]}"; do
        need=${u%%:*}
        skip+=(--skip "${need}_")
        for t in $ignored; do
            case "$t" in "${need}_"*) skipped+=("$t (${u#*:})") ;; esac
        done
    done
fi

echo "running the tests that need something of the machine (#[ignore = \"needs ...\"])"
"$CARGO" test --release --workspace --no-fail-fast -- --ignored "${skip[@]}" 2>&1 |
    tee -a "$log"
rc2=${PIPESTATUS[0]}
[ "$rc2" -ne 0 ] && rc=$rc2

passed=$(awk '/^test result:/ { n += $4 } END { print n + 0 }' "$log")
failed=$(awk '/^test result:/ { n += $6 } END { print n + 0 }' "$log")
for s in "${skipped[@]}"; do
    echo "SKIPPED: $s"
done
echo "Rust tests: $passed passed, $failed failed, ${#skipped[@]} skipped"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
