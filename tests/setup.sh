#!/usr/bin/env bash
# Gets what `make test` needs on a fresh machine, and says what it got:
#  - a virtualenv (.venv) with pytest, mypy, maturin and cmake (PyPI's `cmake` package ships
#    the binary, so no system cmake is needed);
#  - the pinned cbindgen (the header drift check), built into .venv/bin by cargo;
#  - socat (the seed's bridges), ip (iproute2: the network-namespace test), pkg-config and a
#    C++ compiler (the C library's consumers): installed with apt-get when run as root where
#    apt-get exists, and otherwise named, one line each.
# Everything it installs itself lives in .venv; delete that directory to undo it.
#
# Under CI=true anything it cannot get is an error (exit 1). Elsewhere it is a note: the tests
# that need it are reported as skipped.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
CARGO=${CARGO:-cargo}
STRICT=false
[ "${CI:-}" = true ] && STRICT=true

problems=()
say() { echo "setup: $*"; }
missing() {
    problems+=("$1")
    say "MISSING: $1"
}
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_updated=false
apt_install() {
    if ! $apt_updated; then
        apt-get update -qq >/dev/null 2>&1 || true
        apt_updated=true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

# --- Python: a virtualenv with the test tools and cmake ----------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
        # Debian's python3 keeps venv in a package of its own.
        if can_apt && apt_install python3-venv && "$PYTHON" -m venv "$VENV"; then
            say "installed python3-venv with apt-get"
        fi
    fi
fi
if [ -x "$VENV/bin/python" ]; then
    if "$VENV/bin/pip" install -q pytest mypy maturin cmake selenium prometheus-client >/dev/null; then
        say "$("$VENV/bin/cmake" --version | head -n1) (PyPI), pytest, mypy, maturin, selenium, prometheus-client in $VENV"
    else
        missing "pytest, mypy, maturin, cmake, selenium or prometheus-client: pip install into $VENV failed (is PyPI reachable?)"
    fi
else
    missing "a Python virtualenv: '$PYTHON -m venv $VENV' failed (apt-get install python3-venv)"
fi

# --- the pinned cbindgen, for the header drift check ---------------------------------------
want=$(sed -n 's/^CBINDGEN_VERSION := //p' Makefile)
has_cbindgen() { "$1" --version 2>/dev/null | grep -qx "cbindgen $want"; }
if has_cbindgen cbindgen; then
    say "cbindgen $want: $(command -v cbindgen)"
elif has_cbindgen "$VENV/bin/cbindgen"; then
    say "cbindgen $want: $VENV/bin/cbindgen"
else
    say "building cbindgen $want into $VENV/bin (once; about a minute)"
    if "$CARGO" install -q cbindgen --version "$want" --locked --root "$VENV" >/dev/null 2>&1 \
        && has_cbindgen "$VENV/bin/cbindgen"; then
        say "cbindgen $want: $VENV/bin/cbindgen"
    else
        missing "cbindgen $want: 'cargo install cbindgen --version $want --locked' failed; the header drift check is skipped"
    fi
fi

# --- system tools ---------------------------------------------------------------------------
# tool:package:what needs it
for entry in "socat:socat:the socat bridge test" \
    "ip:iproute2:the network-namespace test" \
    "pkg-config:pkg-config:the C install test" \
    "c++:g++:the C++ header and wrapper tests" \
    "chromium:chromium:the live page test (a real browser)" \
    "chromedriver:chromium-driver:the live page test (Selenium drives chromium)"; do
    IFS=: read -r tool pkg what <<<"$entry"
    if command -v "$tool" >/dev/null 2>&1; then
        continue
    fi
    if can_apt && apt_install "$pkg" && command -v "$tool" >/dev/null 2>&1; then
        say "installed $pkg with apt-get ($what)"
    else
        missing "$tool (apt-get install $pkg, as root): $what"
    fi
done
if [ "$(id -u)" != 0 ]; then
    # Not something to install: network namespaces need root.
    say "not root: the network-namespace test is skipped (under CI=true it fails)"
    $STRICT && problems+=("root, for the network-namespace test")
fi

if [ "${#problems[@]}" -gt 0 ]; then
    if $STRICT; then
        say "CI=true: cannot run every test; missing: ${problems[*]}"
        exit 1
    fi
    say "the tests that need what is missing are reported as skipped"
fi
exit 0
