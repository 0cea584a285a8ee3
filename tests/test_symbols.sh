#!/bin/sh
# test_symbols: libmemo.so exports only memo_* (and memo__*) symbols.
# Usage: tests/test_symbols.sh path/to/libmemo.so   (prints TAP)
#
# Catches a source file compiled without hidden visibility, or an internal helper that lost its
# MEMO__HIDDEN / static, leaking into every program that links memo (symbol clashes, ABI).
set -u
lib=${1:-}
echo "1..3"
if [ -z "$lib" ] || [ ! -f "$lib" ]; then
    echo "not ok 1 - library given and present: '$lib'"
    echo "ok 2 # skip no library"
    echo "ok 3 # skip no library"
    exit 1
fi
echo "ok 1 - library present: $lib"
# defined dynamic symbols, names only; the linker's own markers are not ours
syms=$(nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' |
       grep -v -E '^(_init|_fini|__bss_start|_edata|_end|_etext|__end__|__data_start|_IO_stdin_used)$' |
       sort -u)
if [ -z "$syms" ]; then
    echo "not ok 2 - nm -D found no symbols in $lib"
    exit 1
fi
status=0
bad=$(printf '%s\n' "$syms" | grep -v '^memo_')
if [ -z "$bad" ]; then
    echo "ok 2 - every exported symbol starts with memo_ ($(printf '%s\n' "$syms" | wc -l) symbols)"
else
    echo "not ok 2 - symbols exported without the memo_ prefix"
    printf '%s\n' "$bad" | sed 's/^/#   /'
    status=1
fi
missing=""
for s in memo_create memo_destroy memo_get memo_get_timed memo_lookup memo_release \
         memo_result_set memo_result_alloc memo_get_u64 memo_get_u64_timed memo_lookup_u64 \
         memo_forget memo_forget_u64 memo_clear memo_stats memo_strerror memo_err_name \
         memo_version memo__define_memo memo__define_call memo__define_get \
         memo_set_limits memo_result_ttl memo__define_memo_config memo__define_memo_bounded; do
    printf '%s\n' "$syms" | grep -qx "$s" || missing="$missing $s"
done
if [ -z "$missing" ]; then
    echo "ok 3 - every function of memo.h is exported"
else
    echo "not ok 3 - functions of memo.h not exported:$missing"
    status=1
fi
exit $status
