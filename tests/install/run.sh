#!/usr/bin/env bash
# Installs memo from a source tree into a temporary prefix and builds consumers against it:
# CMake's find_package(memo) (memo::memo and memo::memo_static) and pkg-config (shared and
# static). Prints TAP; exits non-zero if any test fails.
#
#   tests/install/run.sh SOURCE_DIR
#
# Environment: MEMO_INSTALL_TEST_KEEP=1 keeps the temporary directory (its path is printed).
# The bash -c '...' snippets below get their values as "$1"...; $CC may hold words (ccache gcc).
# shellcheck disable=SC2016,SC2086
set -uo pipefail

if [[ $# -lt 1 || ! -f $1/CMakeLists.txt ]]; then
    echo "usage: $0 MEMO_SOURCE_DIR" >&2
    exit 2
fi
source_dir=$(cd "$1" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/memo-install-test.XXXXXX")
if [[ ${MEMO_INSTALL_TEST_KEEP:-0} == 1 ]]; then
    echo "# keeping $work"
else
    trap 'rm -rf "$work"' EXIT
fi
build=$work/build
prefix=$work/prefix
consumer=$work/consumer
log=$work/log
jobs=$(nproc 2>/dev/null || echo 2)
cc=${CC:-cc}

number=0
failed=0
broken=0 # set when a step that later steps build on failed

# step DESCRIPTION COMMAND...: runs COMMAND with its output in $log; prints ok / not ok.
step() {
    local description=$1
    shift
    number=$((number + 1))
    if ((broken)); then
        echo "not ok $number - $description # an earlier step failed"
        failed=$((failed + 1))
        return 1
    fi
    if "$@" >"$log" 2>&1; then
        echo "ok $number - $description"
        return 0
    fi
    echo "not ok $number - $description"
    tail -n 40 "$log" | sed 's/^/#   /'
    failed=$((failed + 1))
    return 1
}

# diag_malloc: prints as a TAP comment the "malloc from ..." line of the last program run.
diag_malloc() {
    local line
    line=$(grep -m1 '^malloc from ' "$log") && echo "# $1: $line"
}

installed_files_present() {
    local f missing=0
    for f in "$prefix/include/memo.h" "$libdir/libmemo.a" "$libdir/libmemo.so" \
        "$libdir/cmake/memo/memoConfig.cmake" "$libdir/cmake/memo/memoConfigVersion.cmake" \
        "$libdir/cmake/memo/memoTargets.cmake" "$libdir/pkgconfig/memo.pc"; do
        [[ -e $f ]] || { echo "missing: $f"; missing=1; }
    done
    return $missing
}

header_version() {
    local part v=
    for part in MAJOR MINOR PATCH; do
        v+=$(sed -n "s/^#define MEMO_VERSION_$part \([0-9]*\).*/\1/p" "$source_dir/include/memo.h").
    done
    echo "${v%.}"
}
version=$(header_version)

echo "1..14"

step "configure memo" cmake -S "$source_dir" -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DMEMO_BUILD_TESTS=OFF -DMEMO_BUILD_EXAMPLES=OFF -DMEMO_BUILD_BENCH=OFF \
    -DCMAKE_INSTALL_PREFIX=/nonexistent/prefix-given-at-install || broken=1
step "build memo" cmake --build "$build" -j "$jobs" || broken=1
# The prefix is given at install time only, as the README says: the installed package must
# not depend on the prefix that was configured.
step "cmake --install into a fresh prefix" cmake --install "$build" --prefix "$prefix" || broken=1
# The library directory: lib, lib64 or lib/<multiarch>, wherever libmemo.a went.
libdir=$(dirname "$(find "$prefix" -name libmemo.a -print -quit 2>/dev/null)")
export PKG_CONFIG_PATH=$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
step "installed: header, libraries, CMake package, pkg-config file" installed_files_present

# --- CMake consumers ---------------------------------------------------------------------------
step "consumer: find_package(memo 0.1) configures" \
    cmake -S "$here" -B "$consumer" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release ||
    broken=1
step "consumer: builds against memo::memo and memo::memo_static" \
    cmake --build "$consumer" -j "$jobs" || broken=1
step "consumer_shared (memo::memo) runs" "$consumer/consumer_shared" && diag_malloc consumer_shared
step "consumer_static (memo::memo_static) runs and does not load libmemo.so" \
    bash -c '"$1" && ! readelf -d "$1" | grep "NEEDED.*\[libmemo\.so"' _ "$consumer/consumer_static" &&
    diag_malloc consumer_static

# --- pkg-config consumers ----------------------------------------------------------------------
step "pkg-config: memo $version, libdir and includedir in the prefix" \
    bash -c 'pkg-config --print-variables memo && pkg-config --cflags --libs memo &&
             test "$(pkg-config --modversion memo)" = "$1" &&
             test "$(realpath "$(pkg-config --variable=libdir memo)")" = "$(realpath "$2")" &&
             test "$(realpath "$(pkg-config --variable=includedir memo)")" = "$(realpath "$3/include")"' \
    _ "$version" "$libdir" "$prefix"

# Shared: exactly what a user types.
# shellcheck disable=SC2046 # pkg-config output is meant to split into words
step "pkg-config --cflags --libs memo: builds (shared)" \
    $cc -std=c11 -Wall -Wextra -Werror -o "$work/pc_shared" "$here/main.c" \
    $(pkg-config --cflags --libs memo 2>/dev/null)
step "pc_shared runs (LD_LIBRARY_PATH = libdir) and loads libmemo.so" \
    bash -c 'LD_LIBRARY_PATH="$2" "$1" && readelf -d "$1" | grep -q "NEEDED.*\[libmemo\.so"' \
    _ "$work/pc_shared" "$libdir" && diag_malloc pc_shared

# Static archive, dynamic executable (no -static): the archive by name, then memo's private
# dependencies from pkg-config --static.
static_libs=$(pkg-config --static --libs memo 2>/dev/null)
static_libs=${static_libs/-lmemo/-l:libmemo.a}
step "pkg-config --static --libs memo: links libmemo.a" \
    bash -c 'echo "libs: $3"; $4 -std=c11 -Wall -Wextra -Werror -DMEMO_STATIC -o "$1" "$2" \
             $(pkg-config --cflags memo) $3' \
    _ "$work/pc_static" "$here/main.c" "$static_libs" "$cc"
step "pc_static runs without libmemo.so" \
    bash -c '"$1" && ! readelf -d "$1" | grep "NEEDED.*\[libmemo\.so"' _ "$work/pc_static" &&
    diag_malloc pc_static

step "find_package(memo 1.0) is refused (SameMajorVersion)" \
    bash -c 'mkdir -p "$1" && printf "%s\n" "cmake_minimum_required(VERSION 3.25)" \
                 "project(v LANGUAGES C)" "find_package(memo 1.0 REQUIRED)" >"$1/CMakeLists.txt" &&
             ! cmake -S "$1" -B "$1/build" -DCMAKE_PREFIX_PATH="$2"' \
    _ "$work/version-check" "$prefix"

passed=$((number - failed))
echo "# $passed passed, $failed failed"
((failed == 0))
