#!/usr/bin/env bash
# Installs the C library with `make install PREFIX=<temp dir>` and uses it as a consumer
# would: pkg-config (shared, with no LD_LIBRARY_PATH, and static), a CMake project
# (find_package(mptunnel 0.1)), the C++17 wrapper, DESTDIR staging, and `make uninstall`.
# Loopback only. Prints `ok - <step>` per step; stops at the first `not ok` (exit 1).
#
# Usage: bash tests/c/install_test.sh      (CC, CXX, CMAKE, MAKE may be overridden)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
CC=${CC:-cc}
CXX=${CXX:-g++}
CMAKE=${CMAKE:-cmake}
MAKE=${MAKE:-make}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mptunnel-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
log=$tmp/step.log
passed=0

# step <what> <command...>: runs the command with its output in $log.
step() {
    local what=$1
    shift
    local rc
    # A subshell outside any `if`/`||` (where bash would ignore `set -e`), so the step stops
    # at its first failing command.
    set +e
    ( set -e; "$@" ) >"$log" 2>&1
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        echo "ok - $what"
        passed=$((passed + 1))
    else
        echo "not ok - $what"
        tail -n 40 "$log" | sed 's/^/#   /'
        echo "install test: $passed passed, 1 failed"
        exit 1
    fi
}

# Runs a program as a user would: no LD_LIBRARY_PATH.
run() { env -u LD_LIBRARY_PATH "$@"; }
pc() { PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config "$@"; }

files=(lib/libmptunnel.so lib/libmptunnel.a include/mptunnel.h include/mptunnel.hpp
       lib/pkgconfig/mptunnel.pc lib/cmake/mptunnel/mptunnelConfig.cmake
       lib/cmake/mptunnel/mptunnelConfigVersion.cmake)
version=$(sed -n 's/^#define MPT_VERSION_STRING "\(.*\)"$/\1/p' "$root/include/mptunnel.h")

check_layout() {
    local dir=$1 f
    for f in "${files[@]}"; do
        test -f "$dir/$f" || { echo "missing $dir/$f"; return 1; }
    done
    test -x "$dir/lib/libmptunnel.so"
    if grep -n '@[A-Z]*@' "$dir/lib/pkgconfig/mptunnel.pc" "$dir/lib/cmake/mptunnel/"*.cmake; then
        echo "placeholder left"
        return 1
    fi
    # exactly these files, nothing else
    test "$(cd "$dir" && find . -type f | sort)" = "$(printf './%s\n' "${files[@]}" | sort)"
}

check_pkgconfig() {
    test "$(pc --modversion mptunnel)" = "$version"
    pc --exists --print-errors "mptunnel = $version"
    grep -x -- "-I$prefix/include *" <<<"$(pc --cflags mptunnel)"
    grep -- "-Wl,-rpath,$prefix/lib" <<<"$(pc --libs mptunnel)"
}

build_shared() {
    cd "$tmp"
    # shellcheck disable=SC2046
    "$CC" -std=c99 -Wall -Wextra -Werror -pedantic -o app_shared "$here/pkgconfig_app.c" \
        $(pc --cflags --libs mptunnel)
    grep 'NEEDED.*\[libmptunnel.so\]' <<<"$(readelf -d app_shared)"
}

build_static() {
    cd "$tmp"
    local libs=() f
    # The system libraries of Libs.private; -lmptunnel would pick the .so, so the archive
    # is named instead.
    for f in $(pc --static --libs-only-l mptunnel); do
        [ "$f" = -lmptunnel ] || libs+=("$f")
    done
    # shellcheck disable=SC2046
    "$CC" -std=c99 -Wall -Wextra -Werror -pedantic -o app_static "$here/pkgconfig_app.c" \
        $(pc --cflags mptunnel) "$(pc --variable=libdir mptunnel)/libmptunnel.a" "${libs[@]}"
    if grep 'NEEDED.*mptunnel' <<<"$(readelf -d app_static)"; then
        return 1
    fi
}

# The library's examples, built as a user would from the installed files only.
build_examples() {
    local ex
    for ex in embedded_client embedded_server tunnel_stats; do
        "$CC" -std=c99 -Wall -Wextra -Werror -pedantic "$root/examples/c/$ex.c" \
            $(pc --cflags --libs mptunnel) -o "$tmp/$ex"
    done
}

# CLIENT -> embedded_server, both built against the installed library.
run_examples() {
    local client=$1
    local addr i
    env -u LD_LIBRARY_PATH "$tmp/embedded_server" 127.0.0.1:0 >"$tmp/es.out" 2>&1 &
    local pid=$!
    for i in $(seq 50); do
        addr=$(sed -n 's/^embedded_server: listening on //p' "$tmp/es.out")
        [ -n "$addr" ] && break
        sleep 0.1
    done
    run "$client" -n 50 "$addr" "$addr"
    kill -TERM "$pid"
    wait "$pid"
}

cmake_configure() {
    local out
    out=$("$CMAKE" -S "$here/cmake_consumer" -B "$tmp/cmake-build" \
        -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Debug)
    echo "$out"
    # the package found is the one just installed
    grep -F -- "mptunnel $version from $prefix/lib/cmake/mptunnel" <<<"$out"
}

# The version file's answers, asked as find_package() would.
cmake_versions() {
    local want ok expected
    for want in 0.1:TRUE 0.1.0:TRUE "$version":TRUE 0.0:FALSE 0.2:FALSE 1.0:FALSE 0:FALSE \
                0.1.9999:FALSE; do
        expected=${want#*:}
        want=${want%%:*}
        cat >"$tmp/version_check.cmake" <<CMAKE
set(PACKAGE_FIND_VERSION "$want")
string(REPLACE "." ";" parts "$want.0.0")
list(GET parts 0 PACKAGE_FIND_VERSION_MAJOR)
list(GET parts 1 PACKAGE_FIND_VERSION_MINOR)
include("$prefix/lib/cmake/mptunnel/mptunnelConfigVersion.cmake")
message("\${PACKAGE_VERSION_COMPATIBLE}")
CMAKE
        ok=$("$CMAKE" -P "$tmp/version_check.cmake" 2>&1)
        echo "$want -> $ok (want $expected)"
        [ "$ok" = "$expected" ] || return 1
    done
    # and through find_package itself
    cat >"$tmp/find.cmake" <<CMAKE
cmake_minimum_required(VERSION 3.13)
set(CMAKE_PREFIX_PATH "$prefix")
find_package(mptunnel 0.2 QUIET)
if(mptunnel_FOUND)
  message(FATAL_ERROR "0.2 accepted")
endif()
CMAKE
    "$CMAKE" -P "$tmp/find.cmake"
}

build_cpp_direct() {
    cd "$tmp"
    # shellcheck disable=SC2046
    "$1" -std=c++17 -Wall -Wextra -Werror -pedantic -I"$prefix/include" -o "cpp_$(basename "$1")" \
        "$here/cpp_wrapper_test.cpp" $(pc --libs mptunnel)
}

destdir_install() {
    cd "$root"
    "$MAKE" install PREFIX=/opt/mptunnel DESTDIR="$tmp/stage"
    check_layout "$tmp/stage/opt/mptunnel"
    grep -qx 'prefix=/opt/mptunnel' "$tmp/stage/opt/mptunnel/lib/pkgconfig/mptunnel.pc"
    "$MAKE" uninstall PREFIX=/opt/mptunnel DESTDIR="$tmp/stage"
    test -z "$(find "$tmp/stage" -type f)"
}

uninstall() {
    cd "$root"
    "$MAKE" uninstall PREFIX="$prefix"
    local left
    left=$(find "$prefix" -type f)
    [ -z "$left" ] || { echo "left behind: $left"; return 1; }
}

step "make install PREFIX=<temp>" bash -c "cd '$root' && '$MAKE' install PREFIX='$prefix'"
step "installed layout" check_layout "$prefix"
step "pkg-config --modversion = $version" check_pkgconfig
step "C app built with pkg-config (shared)" build_shared
step "C app runs without LD_LIBRARY_PATH" run "$tmp/app_shared"
step "C app built against libmptunnel.a (pkg-config --static)" build_static
step "static C app runs" run "$tmp/app_static"
step "examples/c built with pkg-config from the installed files" build_examples
step "installed examples: embedded_client -> embedded_server" run_examples "$tmp/embedded_client"
step "cmake configure: find_package(mptunnel 0.1)" cmake_configure
step "cmake build (mptunnel::mptunnel, mptunnel::mptunnel_static, C++17)" \
    "$CMAKE" --build "$tmp/cmake-build"
step "CMake C app runs" run "$tmp/cmake-build/pkgconfig_app"
step "CMake static C app runs" run "$tmp/cmake-build/static_app"
step "CMake C++ wrapper test runs" run "$tmp/cmake-build/cpp_wrapper_test"
step "CMake-built example embedded_client -> embedded_server" \
    run_examples "$tmp/cmake-build/embedded_client"
step "CMake version compatibility (0.x: same minor)" cmake_versions
step "mptunnel.hpp: $CXX -std=c++17 -Wall -Wextra -Werror -pedantic" build_cpp_direct "$CXX"
step "C++ wrapper test ($CXX) runs" run "$tmp/cpp_$(basename "$CXX")"
if command -v clang++ >/dev/null 2>&1; then
    step "mptunnel.hpp: clang++ -std=c++17 -Wall -Wextra -Werror -pedantic" \
        build_cpp_direct clang++
    step "C++ wrapper test (clang++) runs" run "$tmp/cpp_clang++"
fi
step "make install/uninstall with DESTDIR" destdir_install
step "make uninstall PREFIX=<temp> removes every file" uninstall

echo "install test: $passed passed, 0 failed"
